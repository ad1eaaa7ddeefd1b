"""``thrifty prune --example``: its numbers against an independent recomputation
(scikit-learn's brute-force cosine kNN), its explanation of the SemDeDup removals, its
honesty when pruning loses, and its outputs (``--report``, ``--plot``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

sklearn_datasets = pytest.importorskip("sklearn.datasets")
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402

from thrifty import prune  # noqa: E402
from thrifty.cli import example, main  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    d = sklearn_datasets.load_digits()
    return d.data.astype(np.float32), d.target


def _sk_acc(xs, ys, s):
    knn = KNeighborsClassifier(example.N_NEIGHBORS, metric="cosine", algorithm="brute")
    return knn.fit(xs, ys).score(s.x_test, s.y_test)


def test_split_plants_near_copies(digits):
    x, y = digits
    s = example.make_split(x, y, 3)
    n = example.N_TRAIN + example.N_COPIES
    assert s.x_train.shape == (n, 64) and s.y_train.shape == (n,)
    assert len(s.y_test) == len(y) - example.N_TRAIN == 597
    orig, copy = s.pairs[:, 0], s.pairs[:, 1]
    assert np.unique(orig).size == example.N_COPIES and (orig < example.N_TRAIN).all()
    np.testing.assert_array_equal(copy, example.N_TRAIN + np.arange(example.N_COPIES))
    np.testing.assert_array_equal(s.y_train[orig], s.y_train[copy])
    noise = s.x_train[copy] - s.x_train[orig]
    assert 0.03 < noise.std() < 0.07 and np.abs(noise).max() < 0.5
    # same seed, same split
    np.testing.assert_array_equal(example.make_split(x, y, 3).x_test, s.x_test)


def test_count_dedup_by_hand():
    pairs = np.array([[0, 5], [1, 6], [2, 7], [8, 9]])
    dup = np.full(12, -1)
    dup[5] = 0      # the copy of pair 0
    dup[1] = 6      # the original of pair 1
    dup[2], dup[7] = 7, 11  # both members of pair 2
    dup[3] = 10     # outside every pair
    c = example.count_dedup(dup, pairs)
    assert (c.n_input, c.removed, c.planted, c.planted_extra, c.natural, c.missed) == \
        (12, 5, 3, 1, 1, 1)
    assert c.removed == c.planted + c.planted_extra + c.natural


def test_semdedup_removes_one_of_each_planted_pair_and_real_near_copies(digits):
    """The "153 = 150 planted pairs + 3 already in the set" line, checked with numpy."""
    x, y = digits
    s = example.make_split(x, y, 0)
    r = prune.semdedup(s.x_train, eps=0.01, seed=0)
    c = example.count_dedup(r.duplicate_of, s.pairs)
    assert c.planted == example.N_COPIES and c.missed == 0 and c.planted_extra == 0
    assert c.removed == c.planted + c.natural == int((~r.keep).sum())
    in_pair = np.zeros(len(r.keep), bool)
    in_pair[s.pairs.ravel()] = True
    xn = s.x_train / np.linalg.norm(s.x_train, axis=1, keepdims=True)
    natural = np.flatnonzero(~r.keep & ~in_pair)
    assert natural.size == c.natural
    for i in natural:  # every other removal really is a near-identical digit
        j = r.duplicate_of[i]
        assert float(xn[i] @ xn[j]) > 0.99 and s.y_train[i] == s.y_train[j]


def test_run_example_matches_an_independent_recomputation(digits):
    x, y = digits
    res = example.run_example(x, y, seeds=[0], fractions=(0.5, 0.1))
    s = example.make_split(x, y, 0)
    sd = prune.semdedup(s.x_train, eps=0.01, seed=0)
    xd, yd = s.x_train[sd.keep], s.y_train[sd.keep]
    assert res.n_dedup == [len(yd)]
    tol = 2 / len(s.y_test)  # exact-distance ties may order neighbours differently
    assert res.acc_all[0] == pytest.approx(_sk_acc(s.x_train, s.y_train, s), abs=tol)
    assert res.acc_dedup[0] == pytest.approx(_sk_acc(xd, yd, s), abs=tol)
    for row, want in zip(res.rows, ("hard", "easy")):
        kept = int(np.floor(row.fraction * len(yd) + 0.5))
        assert row.kept == [kept]
        assert want == ("hard" if kept // 10 >= 32 else "easy")  # the documented rule
        assert row.prefer == [want]
        subsets = {
            "dbp": prune.dbp(xd, keep_fraction=row.fraction, prefer=want, seed=0).keep,
            "ssp": prune.ssp(xd, keep_fraction=row.fraction, prefer=want, seed=0).keep,
            "random": prune.random_subset(len(yd), keep_fraction=row.fraction, seed=0).keep,
        }
        for m, keep in subsets.items():
            assert keep.sum() == kept
            assert row.acc[m][0] == pytest.approx(_sk_acc(xd[keep], yd[keep], s), abs=tol), m
        other = "easy" if want == "hard" else "hard"
        k = prune.dbp(xd, keep_fraction=row.fraction, prefer=other, seed=0).keep
        assert row.other["dbp"][0] == pytest.approx(_sk_acc(xd[k], yd[k], s), abs=tol)


def test_paired_readings():
    b = np.array([0.90, 0.92, 0.95, 0.91, 0.93])
    assert example.paired(b + 0.01, b)[2] == "pays"
    assert example.paired(b - 0.01, b)[2] == "loses"
    assert example.paired(b, b)[2] == "tie"
    noisy = b + np.array([0.02, -0.02, 0.01, -0.015, 0.01])
    mean, se, verdict = example.paired(noisy, b)
    d = noisy - b
    assert mean == pytest.approx(d.mean())
    assert se == pytest.approx(d.std(ddof=1) / np.sqrt(5))
    assert verdict == "tie"


def _result(dbp, ssp, rnd, prefer=("hard",)):
    row = example.Row(0.3, kept=[350] * len(dbp), prefer=list(prefer) * len(dbp))
    row.acc = {"dbp": dbp, "ssp": ssp, "random": rnd}
    d = example.DedupCount(1350, 152, 150, 0, 2, 0)
    return example.ExampleResult(
        seeds=list(range(len(dbp))), eps=0.01, clusters=None, prefer="hard", n_classes=10,
        n_test=597, dedup=[d] * len(dbp), reports=[{}] * len(dbp), acc_all=list(rnd),
        acc_dedup=list(rnd), n_dedup=[1198] * len(dbp), rows=[row])


def test_report_says_so_when_pruning_loses():
    rnd = [0.95, 0.94, 0.96]
    text = "\n".join(example.format_lines(
        _result([0.90, 0.89, 0.91], [0.93, 0.92, 0.94], rnd)))
    assert "pruning pays: nowhere in this sweep" in text
    assert "pruning loses: dbp at 0.3, ssp at 0.3" in text
    assert "150 planted pairs (one image of each) + 2 near-identical digits" in text
    text = "\n".join(example.format_lines(_result([0.96, 0.95, 0.97], rnd, rnd)))
    assert "pruning pays: dbp at 0.3" in text and "pruning loses: nowhere" in text


def _cli(capsys, *args):
    rc = main(["prune", "--example", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_prints_the_sweep_and_writes_the_report(tmp_path, capsys):
    rep = tmp_path / "example.json"
    rc, out, err = _cli(capsys, "--report", rep)
    assert rc == 0, err
    for f in example.FRACTIONS:
        assert any(line.split()[:1] == [str(f)] for line in out.splitlines()), f
    assert out.count("planted pairs (one image of each)") == example.N_SPLITS
    assert "pruning pays:" in out and "pruning loses:" in out
    data = json.loads(rep.read_text())
    assert data["fractions"] == list(example.FRACTIONS) and data["prefer"] == "auto"
    assert [r["keep_fraction"] for r in data["sweep"]] == list(example.FRACTIONS)
    assert [d["planted"] for d in data["semdedup"]] == [example.N_COPIES] * example.N_SPLITS
    first = data["semdedup"][0]
    assert first["removed"] == first["report"]["n_duplicates"] == len(first["report"]["removed"])
    for r in data["sweep"]:
        for m in ("dbp", "ssp", "random"):
            assert len(r[m]["values"]) == example.N_SPLITS
            assert r[m]["mean"] == pytest.approx(np.mean(r[m]["values"]))
            assert f"{r[m]['mean']:.3f} ± {r[m]['sd']:.3f}" in out
    assert data["sweep"][-1]["prefer"] == ["easy"] * example.N_SPLITS  # 0.1: ~12 per class
    assert data["sweep"][0]["prefer"] == ["hard"] * example.N_SPLITS


def test_cli_explicit_prefer_and_clusters(capsys):
    rc, out, err = _cli(capsys, "--prefer", "easy", "--clusters", 10, "--seed", 7)
    assert rc == 0, err
    rows = [line.split() for line in out.splitlines()
            if line.split()[:1] in ([str(f)] for f in example.FRACTIONS)]
    assert len(rows) == len(example.FRACTIONS) and {r[2] for r in rows} == {"easy"}
    assert "not chosen" not in out and "seeds 7-11" in out


@pytest.mark.parametrize("args, frag", [
    (["--keep", "0.3"], "--keep does not apply"),
    (["--clusters", "601"], "at most 600"),
    (["-o", "kept.npy"], "-o does not apply"),
    (["--eps", "0"], "--eps"),
])
def test_cli_refuses_what_does_not_apply(tmp_path, capsys, args, frag):
    rc, out, err = _cli(capsys, *args)
    assert rc == 2 and frag in err and len(err.strip().splitlines()) == 1, err
    assert out == ""


def test_cli_never_overwrites_the_report(tmp_path, capsys):
    rep = tmp_path / "r.json"
    rep.write_text("precious")
    rc, out, err = _cli(capsys, "--report", rep)
    assert rc == 2 and "--force" in err and rep.read_text() == "precious" and out == ""
    rc, _, err = _cli(capsys, "--report", tmp_path / "r.txt")
    assert rc == 2 and ".json" in err
    rc, _, err = _cli(capsys, "--report", tmp_path / "same.json", "--plot",
                      tmp_path / "same.json")
    assert rc == 2 and "same file" in err


def test_plot_needs_example(tmp_path, capsys):
    emb = tmp_path / "e.npy"
    np.save(emb, np.ones((4, 2), np.float32))
    rc = main(["prune", str(emb), "-o", str(tmp_path / "k.npy"), "--plot",
               str(tmp_path / "p.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "--example" in err and not (tmp_path / "k.npy").exists()


def _env_with(tmp_path, missing):
    """An environment in which importing ``missing`` fails."""
    (tmp_path / missing).mkdir()
    (tmp_path / missing / "__init__.py").write_text(f"raise ImportError('no {missing}')\n")
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


@pytest.mark.parametrize("missing, args, what", [
    ("sklearn", [], "--example needs scikit-learn"),
    ("matplotlib", ["--plot", "p.png"], "--plot needs matplotlib"),
])
def test_missing_optional_dependency_is_one_line(tmp_path, missing, args, what):
    r = subprocess.run([sys.executable, "-m", "thrifty.cli", "prune", "--example", *args],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env=_env_with(tmp_path, missing))
    assert r.returncode == 2, r.stderr
    assert what in r.stderr and "pip install 'thrifty[examples]'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""
    assert not (tmp_path / "p.png").exists()


def test_plot_is_drawn(tmp_path, capsys, digits):
    pytest.importorskip("matplotlib")
    x, y = digits
    res = example.run_example(x, y, seeds=[0, 1], fractions=(0.1,))
    fig = example.draw_plot(res)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "all deduplicated data", "dbp (auto)", "ssp (auto)", "random"]
    out = tmp_path / "sweep.svg"
    fig.savefig(out, format="svg")
    assert out.read_text().lstrip().startswith("<?xml")
    rc, _, err = _cli(capsys, "--plot", tmp_path / "p.bogus")
    assert rc == 2 and "p.bogus" in err and "png" in err


def test_cli_plot_and_report_are_published_together(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png, rep = tmp_path / "p.png", tmp_path / "r.json"
    rc, out, err = _cli(capsys, "--plot", png, "--report", rep)
    assert rc == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and json.loads(rep.read_text())
    assert f"plot: {png}" in out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".thrifty-")] == []
