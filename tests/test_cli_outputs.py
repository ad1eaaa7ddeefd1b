"""``thrifty prune`` outputs: checked before any work, published together (no-replace),
never over the input or each other, 0644 minus the umask, no temporary files left."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import thrifty.cli._io as cli_io
import thrifty.cli.prune as cli_prune
from thrifty import prune
from thrifty.cli import main


@pytest.fixture
def emb(tmp_path):
    x = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
    p = tmp_path / "emb.npy"
    np.save(p, x)
    return p


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the input is read or the pruning starts."""
    def boom(*a, **k):
        raise AssertionError("the work started although the arguments were refused")
    monkeypatch.setattr(cli_io, "read_embeddings", boom)
    monkeypatch.setattr(cli_prune, "_prune", boom)


def _run(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _temps(d):
    return [f for f in os.listdir(d) if f.startswith(cli_io.TEMP_PREFIX)]


def _refused(capsys, *args, fragment):
    rc, _, e = _run(capsys, "prune", *args)
    assert rc == 2, e
    assert e.startswith("thrifty prune: error: ") and len(e.strip().splitlines()) == 1, e
    assert fragment in e, e
    return e


# ----------------------------------------------------------------------------- same files

def test_output_equal_to_input_is_refused_even_with_force(emb, capsys, no_work):
    before = emb.read_bytes()
    _refused(capsys, emb, "-o", emb, "--force", fragment="is the input file")
    assert emb.read_bytes() == before


@pytest.mark.parametrize("spelling", ["dotdot", "dot", "symlink", "hardlink"])
def test_output_is_input_through_other_spellings(emb, tmp_path, capsys, no_work, spelling):
    (tmp_path / "sub").mkdir()
    other = {"dotdot": tmp_path / "sub" / ".." / "emb.npy",
             "dot": tmp_path / "." / "emb.npy",
             "symlink": tmp_path / "link.npy",
             "hardlink": tmp_path / "hard.npy"}[spelling]
    if spelling == "symlink":
        other.symlink_to(emb)
    if spelling == "hardlink":
        os.link(emb, other)
    before = emb.read_bytes()
    _refused(capsys, emb, "-o", other, "--force", fragment="is the input file")
    assert emb.read_bytes() == before


def test_report_equal_to_input_is_refused(emb, tmp_path, capsys, no_work):
    link = tmp_path / "r.json"
    link.symlink_to(emb)
    _refused(capsys, emb, "-o", tmp_path / "k.npy", "--report", link, "--force",
             fragment="--report")


@pytest.mark.parametrize("report", ["kept.npy", "./kept.npy", "sub/../kept.npy"])
def test_output_equal_to_report_is_refused(emb, tmp_path, capsys, no_work, report):
    (tmp_path / "sub").mkdir()
    _refused(capsys, emb, "-o", tmp_path / "kept.npy", "--report", f"{tmp_path}/{report}",
             fragment="-o and --report name the same file")
    assert sorted(os.listdir(tmp_path)) == ["emb.npy", "sub"]


def test_report_symlinked_to_output_is_refused(emb, tmp_path, capsys, no_work):
    out = tmp_path / "kept.npy"
    rep = tmp_path / "rep.json"
    rep.symlink_to(out)  # dangling until OUT exists
    _refused(capsys, emb, "-o", out, "--report", rep, "--force",
             fragment="-o and --report name the same file")


# ----------------------------------------------------------------------------- formats

@pytest.mark.parametrize("out, extra, fragment", [
    ("kept.csv", [], "unsupported output format .csv"),
    ("kept", [], "unsupported output format (no extension)"),
    ("kept.csv", [], "use .npy (int64 indices), .txt (one index or id per line) or .parquet"),
    ("kept.npy", ["--report", "rep.txt"], "give it a .json name"),
    ("kept.npy", ["--method", "semdedup", "--keep", "0.1"], "--keep is not used by --method semdedup"),
    ("kept.npy", ["--method", "ssp", "--eps", "0.1"], "--eps is not used by --method ssp"),
    ("kept.npy", ["--method", "random", "--clusters", "4"], "--clusters is not used by --method random"),
    ("kept.npy", ["--method", "random", "--eps", "0.1"], "--eps is not used by --method random"),
    ("x" * 300 + ".npy", [], "file name too long"),
    ("missing-dir/kept.npy", [], "does not exist"),
    ("emb.npy/kept.npy", [], "not a directory"),
])
def test_refused_before_any_work(emb, tmp_path, capsys, no_work, out, extra, fragment):
    extra = [str(tmp_path / a) if a.endswith(".txt") else a for a in extra]
    _refused(capsys, emb, "-o", tmp_path / out, *extra, fragment=fragment)
    assert sorted(os.listdir(tmp_path)) == ["emb.npy"]


def test_id_column_with_npy_output_is_refused_before_any_work(tmp_path, capsys, no_work):
    p = tmp_path / "e.parquet"
    p.write_bytes(b"PAR1")
    _refused(capsys, p, "--id-column", "id", "-o", tmp_path / "x.npy",
             fragment="--id-column writes ids, which a .npy of indices can not hold: "
                      "name the output .txt or .parquet, not x.npy")
    _refused(capsys, p, "--id-column", "index", "-o", tmp_path / "x.parquet",
             fragment="--id-column 'index' would clash")


def test_semdedup_keep_message_explains_the_alternative(emb, tmp_path, capsys, no_work):
    e = _refused(capsys, emb, "--method", "semdedup", "--keep", "0.1", "-o", tmp_path / "k.npy",
                 fragment="--eps")
    assert "--method dbp" in e


def test_output_directory_is_refused(emb, tmp_path, capsys, no_work):
    (tmp_path / "d.npy").mkdir()
    _refused(capsys, emb, "-o", tmp_path / "d.npy", "--force", fragment="is a directory")


# ----------------------------------------------------------------------------- existing names

def test_dangling_symlink_output_is_not_replaced_without_force(emb, tmp_path, capsys):
    out = tmp_path / "kept.npy"
    out.symlink_to(tmp_path / "nowhere.npy")
    _refused(capsys, emb, "--method", "random", "-o", out, fragment="dangling symbolic link")
    assert out.is_symlink() and not (tmp_path / "nowhere.npy").exists()
    rc, _, e = _run(capsys, "prune", emb, "--method", "random", "-o", out, "--force")
    assert rc == 0, e
    assert not out.is_symlink() and not (tmp_path / "nowhere.npy").exists()
    np.testing.assert_array_equal(np.load(out), prune.random_subset(200, keep_fraction=0.5).indices)


def test_force_replaces_both_outputs(emb, tmp_path, capsys):
    out, rep = tmp_path / "k.txt", tmp_path / "r.json"
    out.write_text("old\n")
    rep.write_text("old")
    _refused(capsys, emb, "--method", "random", "-o", out, "--report", rep, fragment="--force")
    assert out.read_text() == "old\n" and rep.read_text() == "old"
    rc, _, e = _run(capsys, "prune", emb, "--method", "random", "-o", out, "--report", rep, "--force")
    assert rc == 0, e
    ref = prune.random_subset(200, keep_fraction=0.5).indices
    assert out.read_text().split() == [str(i) for i in ref]
    assert json.loads(rep.read_text())["n_kept"] == ref.size


# ----------------------------------------------------------------------------- publishing

def _ssp(tmp_path):
    return ["--method", "ssp", "--keep", "0.5", "--clusters", "3", "-o", tmp_path / "k.npy",
            "--report", tmp_path / "r.json"]


def test_outputs_appearing_during_the_work_are_not_replaced(emb, tmp_path, capsys, monkeypatch):
    """Another program creates OUT (or REPORT) while the run works: the run fails with
    exit 2, publishes neither file and leaves the other program's file alone."""
    real = cli_prune._prune
    for victim in ("k.npy", "r.json"):
        def racing(*a, **k):
            (tmp_path / victim).write_bytes(b"theirs")
            return real(*a, **k)
        monkeypatch.setattr(cli_prune, "_prune", racing)
        e = _refused(capsys, emb, *_ssp(tmp_path), fragment="was created by another program")
        assert victim in e
        assert (tmp_path / victim).read_bytes() == b"theirs"
        assert sorted(os.listdir(tmp_path)) == sorted(["emb.npy", victim])
        (tmp_path / victim).unlink()


@pytest.mark.parametrize("when", ["work", "report", "publish"])
def test_error_or_ctrl_c_leaves_neither_output_nor_temp_files(emb, tmp_path, capsys, monkeypatch, when):
    if when == "work":
        def stop(*a, **k):
            raise KeyboardInterrupt
        monkeypatch.setattr(cli_prune, "_prune", stop)
    elif when == "report":  # after OUT was staged, halfway through the report
        from thrifty.prune import PruneResult

        def half_written(self, f, **k):
            f.write(b'{\n "method": ')
            raise KeyboardInterrupt
        monkeypatch.setattr(PruneResult, "write_report", half_written)
    else:  # OUT published, REPORT's publication fails: OUT is taken back
        real = cli_io._publish_no_replace

        def fail_second(tmp, final):
            if final.endswith(".json"):
                raise OSError(28, "No space left on device", final)
            real(tmp, final)
        monkeypatch.setattr(cli_io, "_publish_no_replace", fail_second)
    rc, _, e = _run(capsys, "prune", emb, *_ssp(tmp_path))
    assert rc == (1 if when == "publish" else 130), e
    assert len(e.strip().splitlines()) == 1 and "Traceback" not in e
    assert e.startswith("thrifty prune: ")
    assert sorted(os.listdir(tmp_path)) == ["emb.npy"]


def test_ctrl_c_during_publication_is_held_until_both_are_published(emb, tmp_path, capsys, monkeypatch):
    import signal

    real = cli_io._publish_no_replace
    calls = []

    def interrupted(tmp, final):
        if not calls:
            signal.raise_signal(signal.SIGINT)  # delivered while publishing
        calls.append(final)
        real(tmp, final)
    monkeypatch.setattr(cli_io, "_publish_no_replace", interrupted)
    rc, _, e = _run(capsys, "prune", emb, *_ssp(tmp_path))
    assert rc == 130 and len(calls) == 2
    assert sorted(os.listdir(tmp_path)) == ["emb.npy", "k.npy", "r.json"]
    assert json.loads((tmp_path / "r.json").read_text())["n_kept"] == np.load(tmp_path / "k.npy").size


def test_files_and_directory_are_synced_before_success(emb, tmp_path, capsys, monkeypatch):
    synced = []
    real = os.fsync

    def record(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)
    monkeypatch.setattr(os, "fsync", record)
    rc, _, e = _run(capsys, "prune", emb, *_ssp(tmp_path))
    assert rc == 0, e
    assert synced.count(False) == 2 and synced.count(True) >= 1
    assert synced[-1] is True  # the directory, after the names were published


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o000, 0o644), (0o027, 0o640)])
def test_outputs_are_0644_minus_the_umask(emb, tmp_path, capsys, umask, mode):
    old = os.umask(umask)
    try:
        rc, _, e = _run(capsys, "prune", emb, *_ssp(tmp_path))
    finally:
        os.umask(old)
    assert rc == 0, e
    for f in ("k.npy", "r.json"):
        assert stat.S_IMODE(os.stat(tmp_path / f).st_mode) == mode


def test_no_hard_links_falls_back_to_an_exclusive_name(emb, tmp_path, capsys, monkeypatch):
    def no_link(src, dst):
        raise OSError(1, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_link)
    rc, _, e = _run(capsys, "prune", emb, *_ssp(tmp_path))
    assert rc == 0, e
    assert sorted(os.listdir(tmp_path)) == ["emb.npy", "k.npy", "r.json"]
    rc, _, e = _run(capsys, "prune", emb, *_ssp(tmp_path)[:-4], "-o", tmp_path / "k2.npy")
    assert rc == 0
    np.testing.assert_array_equal(np.load(tmp_path / "k.npy"), np.load(tmp_path / "k2.npy"))


def test_racing_processes_exactly_one_wins(tmp_path):
    """Several processes write the same new OUT at once: exactly one succeeds, the others
    exit 2 with one line, and OUT holds one complete result."""
    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    np.save(tmp_path / "emb.npy", x)
    code = textwrap.dedent(f"""
        import sys, time
        from thrifty.cli import main
        while time.time() < {__import__('time').time() + 2.0}:
            pass
        sys.exit(main(["prune", "emb.npy", "--method", "ssp", "--keep", "0.5",
                       "--clusters", "4", "-o", "kept.npy", "--report", "rep.json"]))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    res = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(rc for rc, _ in res)
    assert codes == [0, 2, 2, 2], res
    for rc, err in res:
        if rc == 2:
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
            assert "exists" in err or "was created by another program" in err
    ref = prune.ssp(x, keep_fraction=0.5, n_clusters=4, seed=0)
    np.testing.assert_array_equal(np.load(tmp_path / "kept.npy"), ref.indices)
    assert json.loads((tmp_path / "rep.json").read_text())["n_kept"] == ref.indices.size
    assert _temps(tmp_path) == []


def test_failed_write_names_the_output_and_leaves_nothing(emb, tmp_path, capsys, monkeypatch):
    def full(f, arr):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(cli_prune.np, "save", full)
    rc, _, e = _run(capsys, "prune", emb, *_ssp(tmp_path))
    assert rc == 1
    assert e == f"thrifty prune: error: can not write {tmp_path / 'k.npy'}: No space left on device\n"
    assert sorted(os.listdir(tmp_path)) == ["emb.npy"]


@pytest.mark.parametrize("sig, code, word", [("SIGINT", 130, "interrupted"),
                                             ("SIGTERM", 143, "terminated")])
def test_ctrl_c_stops_a_long_run_promptly_and_leaves_nothing(tmp_path, sig, code, word):
    import signal
    import time

    x = np.random.default_rng(0).normal(size=(400_000, 64)).astype(np.float32)
    np.save(tmp_path / "big.npy", x)
    p = subprocess.Popen([sys.executable, "-m", "thrifty", "prune", "big.npy", "--method", "dbp",
                          "--keep", "0.5", "--eps", "0.01", "-o", "k.npy", "--report", "r.json"],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    t0 = time.perf_counter()
    p.send_signal(getattr(signal, sig))
    out, err = p.communicate(timeout=60)
    waited = time.perf_counter() - t0
    published = sorted(os.listdir(tmp_path)) == ["big.npy", "k.npy", "r.json"]
    if p.returncode == 0 or (p.returncode < 0 and published):
        # done (or already tearing down after publishing) when the signal came
        pytest.skip("the run finished before the signal arrived")
    assert p.returncode == code and err == f"thrifty prune: {word}\n", err
    assert waited < 2.0
    assert sorted(os.listdir(tmp_path)) == ["big.npy"]


def test_parquet_output_with_and_without_ids(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    x = np.random.default_rng(6).normal(size=(150, 4)).astype(np.float32)
    ids = [f"doc-{i}" for i in range(150)]
    src = tmp_path / "emb.parquet"
    pq.write_table(pa.table({"embedding": pa.array(list(x), pa.list_(pa.float32())), "doc": ids}), src)
    ref = prune.ssp(x, keep_fraction=0.4, n_clusters=3, seed=0).indices
    common = ["prune", src, "--method", "ssp", "--keep", 0.4, "--clusters", 3]
    rc, _, e = _run(capsys, *common, "-o", tmp_path / "a.parquet")
    assert rc == 0, e
    t = pq.read_table(tmp_path / "a.parquet")
    assert t.column_names == ["index"] and t.schema.field("index").type == pa.int64()
    np.testing.assert_array_equal(t.column("index").to_numpy(), ref)
    rc, _, e = _run(capsys, *common, "--id-column", "doc", "-o", tmp_path / "b.parquet")
    assert rc == 0, e
    t = pq.read_table(tmp_path / "b.parquet")
    assert t.column_names == ["index", "doc"]
    np.testing.assert_array_equal(t.column("index").to_numpy(), ref)
    assert t.column("doc").to_pylist() == [ids[i] for i in ref]
    assert stat.S_IMODE(os.stat(tmp_path / "b.parquet").st_mode) == 0o644 & ~_umask()
    assert _temps(tmp_path) == []


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_parquet_output_without_pyarrow_is_refused_before_any_work(emb, tmp_path):
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "pyarrow").mkdir()
    (tmp_path / "fake" / "pyarrow" / "__init__.py").write_text("raise ImportError('no pyarrow')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'fake'}:{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, "-m", "thrifty", "prune", str(emb), "--method", "random",
                        "-o", str(tmp_path / "k.parquet")], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 2 and "parquet output needs pyarrow: pip install pyarrow" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "k.parquet").exists()


def _chunks(a, cuts):
    bounds = [0, *cuts, a.size]
    return [a[x:y] for x, y in zip(bounds[:-1], bounds[1:])]


@pytest.mark.parametrize("n,cuts", [(0, []), (1, []), (7, [0, 3, 3, 7]), (100_003, [5, 70_000])])
def test_npy_written_in_chunks_is_what_np_save_writes(n, cuts):
    # the --ray path streams the kept indices shard by shard into OUT
    import io

    idx = np.arange(n, dtype=np.int64) * 3 + 1
    want, got = io.BytesIO(), io.BytesIO()
    np.save(want, idx)
    cli_io.write_npy_chunks(got, n, iter(_chunks(idx, cuts)))
    assert got.getvalue() == want.getvalue()
    with pytest.raises(ValueError, match="header says"):
        cli_io.write_npy_chunks(io.BytesIO(), n + 1, iter(_chunks(idx, cuts)))


def _ids_cases():
    from decimal import Decimal

    n = cli_io.PARQUET_ROW_GROUP + 1500  # two row groups
    big = np.arange(n, dtype=np.int64) * 2
    yield "no ids", big, None
    yield "string ids", big, [f"doc{i}" for i in range(n)]
    # the first row group's ids are all None: it waits for the type of the next one
    yield "late type", big, [None] * cli_io.PARQUET_ROW_GROUP + list(range(1500))
    yield "all None", np.arange(10, dtype=np.int64), [None] * 10
    # decimals infer their precision from the values: the groups (of 4 rows here)
    # disagree, so the file is written again in one piece
    yield "decimals", np.arange(9, dtype=np.int64), [Decimal(1)] * 4 + [Decimal("123.45")] * 5
    yield "empty", np.zeros(0, np.int64), []


@pytest.mark.parametrize("case", [c[0] for c in _ids_cases()])
def test_parquet_written_in_row_groups_is_what_write_parquet_writes(case, monkeypatch):
    import io

    pytest.importorskip("pyarrow")
    if case == "decimals":
        monkeypatch.setattr(cli_io, "PARQUET_ROW_GROUP", 4)
    _, idx, ids = next(c for c in _ids_cases() if c[0] == case)
    col = None if ids is None else "id"
    want = io.BytesIO()
    # write_parquet takes the ids of every row, indexed by row
    cli_io.write_parquet(want, idx, None if ids is None else dict(zip(idx.tolist(), ids)), col)
    cuts = [1, idx.size // 3, idx.size // 3, idx.size - 2] if idx.size > 3 else []

    def chunks():
        at = 0
        for c in _chunks(idx, cuts):
            yield c, None if ids is None else ids[at:at + c.size]
            at += c.size

    got = io.BytesIO()
    cli_io.write_parquet_chunks(got, chunks, col)
    assert got.getvalue() == want.getvalue()
