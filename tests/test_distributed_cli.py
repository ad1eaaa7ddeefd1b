"""``thrifty prune INPUT... --ray``: the single-process CLI's outputs for sharded input on
a local Ray cluster, --resume, and one-line exit-2 errors naming a bad shard."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from thrifty.cli import main

ray = pytest.importorskip("ray", reason="thrifty prune --ray needs ray: pip install 'thrifty[ray]'")


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():  # test_distributed.py's session cluster
        yield
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """4600 rows (100 planted near-duplicates) in a single file and in three shards."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4500, 12)).astype(np.float32)
    x = np.concatenate([base, base[:100] + 1e-4 * rng.normal(size=(100, 12)).astype(np.float32)])
    root = tmp_path_factory.mktemp("cli-shards")
    whole = str(root / "whole.npy")
    np.save(whole, x)
    d = root / "parts"
    d.mkdir()
    for i, (a, b) in enumerate([(0, 1), (1, 3000), (3000, 4600)]):
        np.save(d / f"part-{i}.npy", x[a:b])
    return whole, str(d)


def _run(*argv):
    return main(["prune", *argv])


@pytest.mark.parametrize("method,opts", [("dbp", ["--keep", "0.4", "--eps", "0.01"]),
                                         ("semdedup", ["--eps", "0.01"]),
                                         ("ssp", ["--keep", "0.3", "--prefer", "auto"])])
def test_ray_outputs_equal_the_single_process_cli(cluster, shards, tmp_path, method, opts):
    whole, parts = shards
    common = ["--method", method, "--clusters", "12", "--seed", "3", *opts]
    one, rep1 = str(tmp_path / "one.npy"), str(tmp_path / "one.json")
    dist, rep2 = str(tmp_path / "dist.npy"), str(tmp_path / "dist.json")
    assert _run(whole, "-o", one, "--report", rep1, *common) == 0
    # a directory, a glob and a list of files all mean the same shards in the same order
    assert _run(parts, "--ray", "-o", dist, "--report", rep2, *common) == 0
    np.testing.assert_array_equal(np.load(dist), np.load(one))
    r1, r2 = json.load(open(rep1)), json.load(open(rep2))
    assert r2.pop("input") == [os.path.join(parts, f"part-{i}.npy") for i in range(3)]
    r1.pop("input")
    assert r1 == r2
    b1, b2 = open(rep1, "rb").read(), open(rep2, "rb").read()
    assert b1[:b1.index(b'"input"')] == b2[:b2.index(b'"input"')]
    assert not os.path.exists(dist + ".work")
    txt = str(tmp_path / "dist.txt")
    files = [os.path.join(parts, f"part-{i}.npy") for i in range(3)]
    assert _run(*files, "--ray", "auto", "-o", txt, *common) == 0
    assert open(txt).read().split() == [str(i) for i in np.load(one).tolist()]
    glob_out = str(tmp_path / "glob.npy")
    assert _run(os.path.join(parts, "part-*.npy"), "--ray", "-o", glob_out, *common) == 0
    np.testing.assert_array_equal(np.load(glob_out), np.load(one))


def test_resume_skips_finished_stages(cluster, shards, tmp_path, monkeypatch):
    whole, parts = shards
    from thrifty import distributed as td
    from thrifty.distributed._executor import RayExecutor

    ran = []
    real_map = RayExecutor.map

    def recording_map(self, fn, args, *, desc, **kw):
        ran.append(desc)
        return real_map(self, fn, args, desc=desc, **kw)

    monkeypatch.setattr(RayExecutor, "map", recording_map)
    work = str(tmp_path / "work")
    # an earlier run that finished its stages but never published (killed at the end)
    first = td.dbp(parts, keep_fraction=0.5, n_clusters=12, dedup_eps=0.01, seed=0,
                   work_dir=work, ray="auto")
    assert {"assign", "dbp clusters", "dbp select"} <= set(ran)
    ran.clear()
    out = str(tmp_path / "kept.npy")
    argv = [parts, "--ray", "--clusters", "12", "--keep", "0.5", "--eps", "0.01",
            "--work-dir", work, "-o", out]
    assert _run(*argv, "--resume") == 0
    # every computing stage reused; the per-row results are written as shards from them
    assert set(ran) == {"scatter results", "write shards"}
    np.testing.assert_array_equal(np.load(out), first.indices)
    assert not os.path.exists(work)  # removed after success
    # without --resume the stages run again
    ran.clear()
    assert _run(*argv, "--force") == 0
    assert {"assign", "dbp clusters", "dbp select"} <= set(ran)
    np.testing.assert_array_equal(np.load(out), first.indices)
    # a run interrupted while publishing keeps its work directory (and publishes
    # nothing); resumed, it only rewrites the result shards from the finished stages
    from thrifty.cli import _io

    real_publish = _io.Outputs.publish

    def interrupted(self):
        raise KeyboardInterrupt

    out2, rep2 = str(tmp_path / "kept2.npy"), str(tmp_path / "kept2.json")
    argv2 = [parts, "--ray", "--clusters", "12", "--keep", "0.5", "--eps", "0.01",
             "--work-dir", work, "-o", out2, "--report", rep2]
    monkeypatch.setattr(_io.Outputs, "publish", interrupted)
    assert _run(*argv2) == 130
    assert not os.path.exists(out2) and not os.path.exists(rep2) and os.path.isdir(work)
    monkeypatch.setattr(_io.Outputs, "publish", real_publish)
    ran.clear()
    assert _run(*argv2, "--resume") == 0
    assert ran == ["write shards"]
    np.testing.assert_array_equal(np.load(out2), first.indices)
    assert json.load(open(rep2))["n_kept"] == first.indices.size


def test_bad_shards_exit_2_naming_the_shard(cluster, shards, tmp_path, capsys):
    whole, parts = shards
    out = str(tmp_path / "out.npy")
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "a.npy", np.ones((10, 12), np.float32))
    (bad / "b.npy").write_bytes(b"\x93NUMPY garbage")
    assert _run(str(bad), "--ray", "local", "-o", out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "b.npy" in err and err.startswith("thrifty prune: error:")
    missing = str(tmp_path / "missing.npy")
    assert _run(whole, missing, "--ray", "-o", out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.npy" in err and "not found" in err
    np.save(bad / "b.npy", np.ones((10, 7), np.float32))
    assert _run(str(bad), "--ray", "-o", out) == 2
    assert "b.npy" in capsys.readouterr().err
    assert not os.path.exists(out)


def test_several_inputs_without_ray_are_refused(shards, tmp_path, capsys):
    whole, parts = shards
    out = str(tmp_path / "out.npy")
    assert _run(whole, whole, "-o", out) == 2
    assert "--ray" in capsys.readouterr().err
    assert _run(parts, "-o", out) == 2
    assert "--ray" in capsys.readouterr().err
    assert _run(os.path.join(parts, "*.npy"), "-o", out) == 2
    assert "--ray" in capsys.readouterr().err
    assert _run(whole, "--resume", "-o", out) == 2
    assert "--ray" in capsys.readouterr().err
    assert _run(whole, "--ray", "--method", "random", "-o", out) == 2
    assert "random" in capsys.readouterr().err
    assert not os.path.exists(out)


# --ray takes the next word only when it has the form of a Ray value, so it may stand
# anywhere among the inputs: every order below parses to the same inputs, in order
_INPUTS = ["a.npy", "shards/", "c-*.npy"]
_ORDERS = {
    "ray first": ["--ray", *_INPUTS, "-o", "o.npy"],
    "ray last": [*_INPUTS, "-o", "o.npy", "--ray"],
    "ray after inputs": [*_INPUTS, "--ray", "-o", "o.npy"],
    "ray between inputs": ["a.npy", "--ray", "shards/", "-o", "o.npy", "c-*.npy"],
    "output first": ["-o", "o.npy", "--ray", *_INPUTS],
    "abbreviated": ["--ra", *_INPUTS, "-o", "o.npy"],
    "explicit auto": ["--ray=auto", *_INPUTS, "-o", "o.npy"],
    "auto value between": ["a.npy", "--ray", "auto", "shards/", "c-*.npy", "-o", "o.npy"],
}


def _parse(argv):
    from thrifty.cli import build_parser

    args, extra = build_parser().parse_known_args(["prune", *argv])
    assert extra == []
    return args


@pytest.mark.parametrize("order", list(_ORDERS))
def test_ray_never_swallows_an_input(order):
    args = _parse(_ORDERS[order])
    assert args.input == _INPUTS
    assert args.ray == "auto"
    assert args.output == "o.npy"


@pytest.mark.parametrize("value", ["auto", "local", "local:3", "head:6379", "10.0.0.7:6379",
                                   "[::1]:6379", "ray://head:10001"])
@pytest.mark.parametrize("where", ["first", "last", "between"])
def test_ray_values_are_taken_wherever_ray_stands(value, where):
    argv = {"first": ["--ray", value, *_INPUTS, "-o", "o.npy"],
            "last": [*_INPUTS, "-o", "o.npy", "--ray", value],
            "between": ["a.npy", "--ray", value, "shards/", "c-*.npy", "-o", "o.npy"]}[where]
    args = _parse(argv)
    assert args.input == _INPUTS
    assert args.ray == value


@pytest.mark.parametrize("word", ["data/", "emb.npy", "localdir", "local:x", "emb:v2/",
                                  "./head:6379", "autos"])
def test_words_that_are_not_ray_values_stay_inputs(word):
    args = _parse(["--ray", word, "-o", "o.npy"])
    assert args.input == [word] and args.ray == "auto"
    # after "--" everything is an input, even a Ray-like word
    args = _parse(["-o", "o.npy", "--ray", "--", "local"])
    assert args.input == ["local"] and args.ray == "auto"
    # without --ray nothing changes
    assert _parse([word, "-o", "o.npy"]).ray is None


def test_a_malformed_explicit_ray_value_exits_2(shards, tmp_path, capsys):
    whole, parts = shards
    out = str(tmp_path / "out.npy")
    assert _run(parts, "--ray=local:two", "-o", out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "local:two" in err and "HOST:PORT" in err
    assert not os.path.exists(out)


def test_ray_before_the_inputs_prunes_them(cluster, shards, tmp_path):
    whole, parts = shards
    common = ["--method", "ssp", "--keep", "0.3", "--clusters", "12", "--seed", "1"]
    one, dist = str(tmp_path / "one.npy"), str(tmp_path / "dist.npy")
    assert _run(whole, "-o", one, *common) == 0
    files = [os.path.join(parts, f"part-{i}.npy") for i in range(3)]
    assert _run("--ray", files[0], "-o", dist, *common, files[1], files[2]) == 0
    np.testing.assert_array_equal(np.load(dist), np.load(one))


@pytest.fixture(scope="module")
def parquet_shards(tmp_path_factory):
    """The rows of ``shards`` as one parquet file and as three parquet shards, with
    string ids."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(1)
    base = rng.normal(size=(2900, 10)).astype(np.float32)
    x = np.concatenate([base, base[:100] + 1e-4 * rng.normal(size=(100, 10)).astype(np.float32)])
    root = tmp_path_factory.mktemp("cli-parquet")

    def table(a, b):
        return pa.table({"emb": pa.FixedSizeListArray.from_arrays(pa.array(x[a:b].ravel()), 10),
                         "doc": [f"doc-{i}" for i in range(a, b)]})

    whole = str(root / "whole.parquet")
    pq.write_table(table(0, 3000), whole)
    d = root / "parts"
    d.mkdir()
    for i, (a, b) in enumerate([(0, 1000), (1000, 1001), (1001, 3000)]):
        pq.write_table(table(a, b), d / f"p{i}.parquet", row_group_size=700)
    return whole, str(d)


@pytest.mark.parametrize("out_name", ["kept.txt", "kept.parquet"])
def test_ray_id_outputs_equal_the_single_process_cli(cluster, parquet_shards, tmp_path,
                                                      out_name, monkeypatch):
    # the --ray outputs are streamed from the sharded results (never gathered into
    # per-row arrays on the driver), byte for byte what one process writes
    import thrifty.distributed as td

    whole, parts = parquet_shards
    common = ["--method", "dbp", "--keep", "0.5", "--eps", "0.01", "--clusters", "9",
              "--column", "emb", "--id-column", "doc"]
    one, rep1 = str(tmp_path / f"one-{out_name}"), str(tmp_path / "one.json")
    assert _run(whole, "-o", one, "--report", rep1, *common) == 0

    def no_gather(*a, **k):
        raise AssertionError("the per-row results were gathered on the driver")

    monkeypatch.setattr(td.ShardedPruneResult, "load", no_gather)
    real_dbp = td.dbp

    def sharded_dbp(*a, **k):
        assert k.get("out_dir"), "the --ray path must write sharded results"
        return real_dbp(*a, **k)

    monkeypatch.setattr(td, "dbp", sharded_dbp)
    dist, rep2 = str(tmp_path / f"dist-{out_name}"), str(tmp_path / "dist.json")
    assert _run(parts, "--ray", "-o", dist, "--report", rep2, *common) == 0
    assert open(dist, "rb").read() == open(one, "rb").read()
    r1, r2 = json.load(open(rep1)), json.load(open(rep2))
    assert r2.pop("input") == [os.path.join(parts, f"p{i}.parquet") for i in range(3)]
    r1.pop("input")
    assert r1 == r2
    # byte for byte apart from the input line(s)
    b1 = open(rep1, "rb").read()
    b2 = open(rep2, "rb").read()
    assert b1[:b1.index(b'"input"')] == b2[:b2.index(b'"input"')]
    assert not os.path.exists(dist + ".work")
