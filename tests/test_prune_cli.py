"""``thrifty prune`` command line: outputs, atomic writes, and every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from thrifty import prune
from thrifty.cli import main


def _emb(tmp_path, n=300, d=8, dtype=np.float32, name="emb.npy"):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d))
    x[n // 2:] = x[: n - n // 2] + rng.normal(size=(n - n // 2, d)) * 1e-4
    p = tmp_path / name
    np.save(p, x.astype(dtype))
    return p, x.astype(np.float32)


def _run(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


_METHOD_ARGS = {
    "semdedup": (["--clusters", 5, "--eps", 0.01],
                 lambda x: prune.semdedup(x, eps=0.01, n_clusters=5, seed=0)),
    "dbp": (["--keep", 0.4, "--clusters", 5, "--eps", 0.01],
            lambda x: prune.dbp(x, keep_fraction=0.4, n_clusters=5, dedup_eps=0.01, seed=0)),
    "ssp": (["--keep", 0.4, "--clusters", 5],
            lambda x: prune.ssp(x, keep_fraction=0.4, n_clusters=5, seed=0)),
    "random": (["--keep", 0.4], lambda x: prune.random_subset(len(x), keep_fraction=0.4, seed=0)),
}


@pytest.mark.parametrize("method", ["semdedup", "dbp", "ssp", "random"])
def test_methods_write_indices_matching_the_api(tmp_path, capsys, method):
    p, x = _emb(tmp_path)
    out = tmp_path / "kept.npy"
    extra, api = _METHOD_ARGS[method]
    rc, o, e = _run(capsys, "prune", p, "--method", method, *extra, "-o", out,
                    "--report", tmp_path / "r.json")
    assert rc == 0, e
    idx = np.load(out)
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(idx, api(x).indices)
    if method == "semdedup":
        assert idx.size <= 160  # half the rows are near-copies
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["n_kept"] == idx.size and rep["method"] == method


def test_txt_output_and_float16(tmp_path, capsys):
    p, _ = _emb(tmp_path, dtype=np.float16)
    out = tmp_path / "kept.txt"
    rc, _, e = _run(capsys, "prune", p, "--method", "ssp", "--keep", 0.5, "-o", out)
    assert rc == 0, e
    assert len(out.read_text().split()) == 150


def test_never_overwrites_without_force(tmp_path, capsys):
    p, _ = _emb(tmp_path)
    out = tmp_path / "kept.npy"
    out.write_bytes(b"precious")
    rc, _, e = _run(capsys, "prune", p, "--method", "random", "-o", out)
    assert rc == 2 and "--force" in e and out.read_bytes() == b"precious"
    rc, _, _ = _run(capsys, "prune", p, "--method", "random", "-o", out, "--force")
    assert rc == 0 and np.load(out).size == 150
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".thrifty-")] == []


def _bad_files(tmp_path):
    good, _ = _emb(tmp_path)
    trunc = tmp_path / "trunc.npy"
    trunc.write_bytes(good.read_bytes()[:-100])
    ints = tmp_path / "ints.npy"
    np.save(ints, np.ones((10, 3), np.int32))
    rank = tmp_path / "rank.npy"
    np.save(rank, np.ones(10, np.float32))
    nan = tmp_path / "nan.npy"
    a = np.ones((10, 3), np.float32)
    a[7, 1] = np.nan
    np.save(nan, a)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not numpy at all")
    return good, {"missing": (tmp_path / "nope.npy", [], "not found"),
                  "truncated": (trunc, [], "truncated"),
                  "garbage": (junk, [], "not a .npy file"),
                  "int dtype": (ints, [], "dtype int32"),
                  "rank": (rank, [], "2-D"),
                  "nan row": (nan, [], "row 7"),
                  "keep 0": (good, ["--keep", "0"], "--keep"),
                  "keep > 1": (good, ["--keep", "1.5"], "--keep"),
                  "too many clusters": (good, ["--clusters", "301"], "more than the number"),
                  "eps": (good, ["--eps", "0"], "--eps"),
                  "bad method": (good, ["--method", "magic"], "invalid choice")}


@pytest.mark.parametrize("case", ["missing", "truncated", "garbage", "int dtype",
                                  "rank", "nan row", "keep 0", "keep > 1",
                                  "too many clusters", "eps", "bad method"])
def test_bad_input_one_line_exit_2(tmp_path, capsys, case):
    _, cases = _bad_files(tmp_path)
    path, extra, frag = cases[case]
    out = tmp_path / "out.npy"
    args = ["prune", str(path), "-o", str(out), *extra]
    if "--method" not in extra:
        args += ["--method", "dbp"]
    with pytest.raises(SystemExit) if case == "bad method" else _nullctx():
        rc, _, e = _run(capsys, *args)
        assert rc == 2
        assert frag in e and len(e.strip().splitlines()) == 1, e
        assert not out.exists()
    if case == "bad method":
        assert frag in capsys.readouterr().err


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_missing_output_argument(tmp_path, capsys):
    p, _ = _emb(tmp_path)
    rc, _, e = _run(capsys, "prune", p)
    assert rc == 2 and "-o OUT" in e


@pytest.mark.parametrize("method, prefer", [("ssp", "easy"), ("dbp", "auto"),
                                            ("semdedup", "random")])
def test_prefer_reaches_the_api(tmp_path, capsys, method, prefer):
    p, x = _emb(tmp_path)
    out = tmp_path / "kept.npy"
    extra = ["--keep", 0.4] if method != "semdedup" else ["--eps", 0.01]
    rc, _, e = _run(capsys, "prune", p, "--method", method, *extra, "--clusters", 5,
                    "--prefer", prefer, "-o", out, "--report", tmp_path / "r.json")
    assert rc == 0, e
    if method == "semdedup":
        ref = prune.semdedup(x, eps=0.01, n_clusters=5, prefer=prefer)
    else:
        ref = getattr(prune, method)(x, keep_fraction=0.4, n_clusters=5, prefer=prefer)
    np.testing.assert_array_equal(np.load(out), ref.indices)
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["params"]["prefer"] == prefer and rep["prefer"] == ref.prefer
    if prefer == "auto":  # 120 kept from 5 clusters: 24 per cluster < 32
        assert rep["prefer"] == "easy"


@pytest.mark.parametrize("args, frag", [
    (["--method", "random", "--prefer", "hard"], "--prefer is not used by --method random"),
    (["--method", "semdedup", "--prefer", "auto"], "--prefer auto does not apply"),
])
def test_prefer_refused_where_it_does_not_apply(tmp_path, capsys, args, frag):
    p, _ = _emb(tmp_path)
    out = tmp_path / "kept.npy"
    rc, _, e = _run(capsys, "prune", p, *args, "-o", out)
    assert rc == 2 and frag in e and len(e.strip().splitlines()) == 1, e
    assert not out.exists()
    with pytest.raises(SystemExit):
        main(["prune", str(p), "--prefer", "hardest", "-o", str(out)])
    assert "invalid choice" in capsys.readouterr().err


def test_parquet_input_with_ids(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    _, x = _emb(tmp_path)
    ids = [f"doc-{i}" for i in range(len(x))]
    t = pa.table({"emb": pa.array(list(x), type=pa.list_(pa.float32())), "id": ids})
    p = tmp_path / "emb.parquet"
    pq.write_table(t, p)
    out = tmp_path / "kept.txt"
    rc, _, e = _run(capsys, "prune", p, "--method", "dbp", "--keep", 0.4, "--clusters", 5,
                    "--eps", 0.01, "--column", "emb", "--id-column", "id", "-o", out)
    assert rc == 0, e
    ref = prune.dbp(x, keep_fraction=0.4, n_clusters=5, dedup_eps=0.01, seed=0)
    assert out.read_text().split() == [ids[i] for i in ref.indices]
    rc, _, e = _run(capsys, "prune", p, "--column", "nope", "-o", tmp_path / "o.npy")
    assert rc == 2 and "no column 'nope'" in e and len(e.strip().splitlines()) == 1
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 garbage")
    rc, _, e = _run(capsys, "prune", bad, "-o", tmp_path / "o2.npy")
    assert rc == 2 and "not a readable parquet" in e and len(e.strip().splitlines()) == 1
