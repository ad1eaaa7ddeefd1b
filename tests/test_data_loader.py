"""thrifty.data loaders against plain numpy references."""

from __future__ import annotations

import gc
import subprocess
import sys
import time

import numpy as np
import pytest

import thrifty
from thrifty import _core
from thrifty.data import ArrayLoader, TokenLoader, permutation, read_npy_header


def ids_matrix(n, d=3, dtype=np.float64):
    """Row i holds i in every column (so a batch tells which rows it holds)."""
    return np.repeat(np.arange(n, dtype=dtype)[:, None], d, axis=1)


def collect_rows(loader):
    return np.concatenate([xb[:, 0] for xb in loader]).astype(np.int64)


# ---------------------------------------------------------------- permutation


def test_permutation_is_bijection_and_sliceable():
    for n in [0, 1, 2, 7, 64, 1000, 4097]:
        p = permutation(n, seed=5, epoch=2)
        assert sorted(p.tolist()) == list(range(n))
    p = permutation(1000, seed=5)
    assert (permutation(1000, seed=5, start=100, count=50) == p[100:150]).all()
    assert not (p == np.arange(1000)).all()
    assert not (permutation(1000, seed=5, epoch=1) == p).all()


def test_permutation_looks_uniform():
    # all 120 orders of 5 items appear about equally often over epochs
    counts = {}
    for e in range(6000):
        key = tuple(permutation(5, seed=2, epoch=e).tolist())
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 120
    obs = np.array(list(counts.values()))
    chi2 = ((obs - 50.0) ** 2 / 50.0).sum()
    assert chi2 < 119 + 5 * np.sqrt(2 * 119)  # far above the mean of chi2(119)
    p = permutation(10_000, seed=1).astype(float)
    assert abs(np.corrcoef(p, np.arange(10_000))[0, 1]) < 0.05
    assert abs(np.corrcoef(p[:-1], p[1:])[0, 1]) < 0.05


def test_permutation_of_billions_is_constant_memory():
    n = 10**10
    part = permutation(n, seed=1, start=n - 1000, count=1000)
    assert part.max() < n and np.unique(part).size == 1000


# ---------------------------------------------------------------- ArrayLoader


@pytest.mark.parametrize("world_size", [1, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_kept_row_once_across_ranks(world_size, drop_last):
    n = 503
    X = ids_matrix(n)
    rng = np.random.default_rng(0)
    keep = rng.random(n) < 0.7
    kept = np.flatnonzero(keep)
    seen, counts = [], []
    for r in range(world_size):
        loader = ArrayLoader(X, batch_size=16, keep=keep, rank=r, world_size=world_size,
                             seed=3, drop_last=drop_last)
        rows = collect_rows(loader)
        assert len(rows) == len(loader) * 16 or not drop_last
        seen.append(rows)
        counts.append(len(loader))
    assert len(set(counts)) == 1  # every rank runs the same number of steps
    allrows = np.concatenate(seen)
    per_rank = len(kept) // world_size if drop_last else -(-len(kept) // world_size)
    if not drop_last:
        # padded by wrapping: every kept row at least once, (W * per_rank - n) twice
        values, mult = np.unique(allrows, return_counts=True)
        assert values.tolist() == kept.tolist()
        assert (mult == 2).sum() == world_size * per_rank - len(kept) and mult.max() <= 2
    else:
        assert np.unique(allrows).size == allrows.size  # no overlap, no repeats
        assert set(allrows.tolist()) <= set(kept.tolist())
        assert all(len(s) == per_rank // 16 * 16 for s in seen)


def test_batches_match_numpy_fancy_index_bit_exact():
    rng = np.random.default_rng(1)
    for dtype in [np.float32, np.float64, np.float16, np.int8, np.uint64, np.bool_, np.int16]:
        X = (rng.standard_normal((257, 5)) * 50).astype(dtype)
        y = rng.integers(0, 10, 257)
        loader = ArrayLoader(X, labels=y, batch_size=32, seed=9)
        order = loader.epoch_indices()
        batches = list(loader)
        assert len(batches) == len(order) // 32 + 1
        for b, (xb, yb) in enumerate(batches):
            idx = order[b * 32:(b + 1) * 32]
            assert xb.dtype == X.dtype and yb.dtype == y.dtype
            np.testing.assert_array_equal(xb, X[idx])
            np.testing.assert_array_equal(yb, y[idx])
            assert not np.shares_memory(xb, X)


def test_two_dimensional_labels_and_no_shuffle_order():
    X = ids_matrix(10)
    Y = np.arange(20, dtype=np.float32).reshape(10, 2)
    loader = ArrayLoader(X, labels=Y, batch_size=4, shuffle=False, rank=1, world_size=2)
    out = list(loader)
    np.testing.assert_array_equal(np.concatenate([x[:, 0] for x, _ in out]), [1, 3, 5, 7, 9])
    np.testing.assert_array_equal(np.concatenate([y for _, y in out]), Y[[1, 3, 5, 7, 9]])


def test_order_independent_of_threads_and_prefetch():
    X = ids_matrix(50_000, d=8, dtype=np.float32)  # large batches take the parallel path
    ref = [xb.copy() for xb in ArrayLoader(X, batch_size=40_000, seed=4, prefetch=1)]
    old = thrifty.get_num_threads()
    try:
        thrifty.set_num_threads(1)
        one = [xb.copy() for xb in ArrayLoader(X, batch_size=40_000, seed=4, prefetch=8)]
    finally:
        thrifty.set_num_threads(old)
    for a, b in zip(ref, one):
        np.testing.assert_array_equal(a, b)
    other = ArrayLoader(X, batch_size=40_000, seed=4)
    other.set_epoch(1)
    assert not np.array_equal(next(iter(other)), ref[0])


def test_resume_reproduces_stream_exactly():
    X = ids_matrix(1000)
    full = ArrayLoader(X, batch_size=64, seed=2, prefetch=8)
    full.set_epoch(3)
    expected = [xb[:, 0].copy() for xb in full]

    a = ArrayLoader(X, batch_size=64, seed=2, prefetch=8)
    a.set_epoch(3)
    it = iter(a)
    head = [next(it)[:, 0].copy() for _ in range(5)]
    time.sleep(0.05)  # let the thread prefetch ahead: must not be counted
    state = a.state_dict()
    assert state == {"epoch": 3, "batch": 5, "seed": 2}
    del it

    b = ArrayLoader(X, batch_size=64, seed=2)
    b.load_state_dict(state)
    b.set_epoch(3)  # same epoch: keeps the resumed position
    tail = [xb[:, 0].copy() for xb in b]
    for got, want in zip(head + tail, expected):
        np.testing.assert_array_equal(got, want)
    assert len(head) + len(tail) == len(expected)
    # a completed epoch advances the loader
    assert b.state_dict() == {"epoch": 4, "batch": 0, "seed": 2}


def test_epoch_advances_and_set_epoch_restarts():
    X = ids_matrix(30)
    loader = ArrayLoader(X, batch_size=10, seed=0)
    e0 = collect_rows(loader)
    e1 = collect_rows(loader)
    assert loader.epoch == 2
    assert not np.array_equal(e0, e1)
    loader.set_epoch(0)
    np.testing.assert_array_equal(collect_rows(loader), e0)


def test_abandoned_iterator_stops_thread_promptly():
    X = np.zeros((20_000, 64), dtype=np.float32)
    base = _core.data_active_loaders()
    loader = ArrayLoader(X, batch_size=256, prefetch=4)
    it = iter(loader)
    next(it)
    assert _core.data_active_loaders() == base + 1
    t = time.perf_counter()
    del it
    gc.collect()
    assert _core.data_active_loaders() == base
    assert time.perf_counter() - t < 1.0
    # breaking out of a for-loop too
    for _ in loader:
        break
    gc.collect()
    assert _core.data_active_loaders() == base
    # explicit close
    it = iter(loader)
    next(it)
    it.close()
    assert _core.data_active_loaders() == base
    with pytest.raises(StopIteration):
        next(it)


def test_len():
    X = ids_matrix(10)
    assert len(ArrayLoader(X, batch_size=3)) == 4
    assert len(ArrayLoader(X, batch_size=3, drop_last=True)) == 3
    # ceil(10 / 3) = 4 rows on every rank (padded), floor(10 / 3) = 3 with drop_last
    assert len(ArrayLoader(X, batch_size=3, rank=2, world_size=3)) == 2
    assert len(ArrayLoader(X, batch_size=3, rank=2, world_size=3, drop_last=True)) == 1
    assert len(ArrayLoader(X, batch_size=3, keep=[0, 4, 9])) == 1
    it = iter(ArrayLoader(X, batch_size=3))
    assert len(it) == 4
    next(it)
    assert len(it) == 3


# ---------------------------------------------------------------- .npy files


def test_npy_path_is_memory_mapped_and_matches_array(tmp_path):
    X = np.random.default_rng(0).standard_normal((300, 7)).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, X)
    loader = ArrayLoader(path, batch_size=50, seed=1)
    assert isinstance(loader._x, np.memmap) and loader._file == (str(path), 128)
    assert ArrayLoader(path, batch_size=50, read="pread")._x is None
    ref = ArrayLoader(X, batch_size=50, seed=1)
    for a, b in zip(loader, ref):
        np.testing.assert_array_equal(a, b)
    assert read_npy_header(path)[:2] == (np.dtype(np.float32), (300, 7))


def test_npy_header_v2(tmp_path):
    X = np.arange(12, dtype=np.int32).reshape(4, 3)
    path = tmp_path / "v2.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array(f, X, version=(2, 0))
    rows = np.concatenate(list(ArrayLoader(str(path), batch_size=3, shuffle=False)))
    np.testing.assert_array_equal(rows, X)


def test_bad_npy_files(tmp_path):
    X = np.zeros((100, 4), dtype=np.float32)
    path = tmp_path / "x.npy"
    np.save(path, X)
    data = path.read_bytes()
    trunc = tmp_path / "trunc.npy"
    trunc.write_bytes(data[:-5])
    with pytest.raises(thrifty.FormatError, match="truncated"):
        ArrayLoader(trunc, batch_size=4)
    head_only = tmp_path / "head.npy"
    head_only.write_bytes(data[:20])
    with pytest.raises(thrifty.FormatError, match="truncated"):
        ArrayLoader(head_only, batch_size=4)
    three = tmp_path / "three.npy"
    np.save(three, np.zeros((2, 3, 4), dtype=np.float32))
    with pytest.raises(thrifty.InvalidInputError, match="2-D"):
        ArrayLoader(three, batch_size=4)
    cplx = tmp_path / "c.npy"
    np.save(cplx, np.zeros((3, 3), dtype=np.complex64))
    with pytest.raises(thrifty.InvalidInputError, match="unsupported dtype"):
        ArrayLoader(cplx, batch_size=4)
    fort = tmp_path / "f.npy"
    np.save(fort, np.asfortranarray(np.zeros((3, 3), dtype=np.float32)))
    with pytest.raises(thrifty.FormatError, match="Fortran"):
        ArrayLoader(fort, batch_size=4)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"hello world, not numpy")
    with pytest.raises(thrifty.FormatError, match="not a .npy"):
        ArrayLoader(junk, batch_size=4)
    with pytest.raises(thrifty.InvalidInputError, match="cannot read"):
        ArrayLoader(tmp_path / "missing.npy", batch_size=4)


# ---------------------------------------------------------------- bad input


def test_bad_loader_arguments():
    X = ids_matrix(10)
    bad = thrifty.InvalidInputError
    with pytest.raises(bad, match="batch_size"):
        ArrayLoader(X, batch_size=0)
    with pytest.raises(bad, match="rank must be < world_size"):
        ArrayLoader(X, batch_size=2, rank=2, world_size=2)
    with pytest.raises(bad, match="world_size"):
        ArrayLoader(X, batch_size=2, world_size=0)
    with pytest.raises(bad, match="out of range"):
        ArrayLoader(X, batch_size=2, keep=[0, 10])
    with pytest.raises(bad, match="negative"):
        ArrayLoader(X, batch_size=2, keep=[-1])
    with pytest.raises(bad, match="more than once"):
        ArrayLoader(X, batch_size=2, keep=[3, 3])
    with pytest.raises(bad, match="mask of length"):
        ArrayLoader(X, batch_size=2, keep=np.ones(9, dtype=bool))
    with pytest.raises(bad, match="labels"):
        ArrayLoader(X, labels=np.arange(9), batch_size=2)
    with pytest.raises(bad, match="2-D"):
        ArrayLoader(np.arange(10.0), batch_size=2)
    with pytest.raises(bad, match="unsupported dtype"):
        ArrayLoader(np.zeros((3, 3), dtype=object), batch_size=2)
    with pytest.raises(bad, match="prefetch"):
        ArrayLoader(X, batch_size=2, prefetch=0)
    with pytest.raises(bad, match="read must be one of"):
        ArrayLoader(X, batch_size=2, read="mapped")
    loader = ArrayLoader(X, batch_size=2)
    with pytest.raises(bad, match="state"):
        loader.load_state_dict({"epoch": 0})
    with pytest.raises(bad, match="seed"):
        loader.load_state_dict({"epoch": 0, "batch": 1, "seed": 5})
    with pytest.raises(bad, match="batch"):
        loader.load_state_dict({"epoch": 0, "batch": 99})


def test_non_contiguous_source_is_copied_once():
    base = ids_matrix(20, d=6)
    X = base[:, ::2]
    rows = np.concatenate(list(ArrayLoader(X, batch_size=7, shuffle=False)))
    np.testing.assert_array_equal(rows, X)


# ---------------------------------------------------------------- TokenLoader


def test_token_windows_match_reference(tmp_path):
    rng = np.random.default_rng(0)
    for dtype in ["uint16", "uint32"]:
        tokens = rng.integers(0, 60_000, 10_001).astype(dtype)
        path = tmp_path / f"t_{dtype}.bin"
        tokens.tofile(path)
        L, bs = 64, 8
        loader = TokenLoader(path, dtype=dtype, seq_len=L, batch_size=bs, seed=5)
        n_windows = (tokens.size - 1) // L
        assert loader.n_windows == n_windows
        assert len(loader) == n_windows // bs
        order = loader.epoch_indices()
        batches = list(loader)
        assert len(batches) == len(loader)
        for b, xb in enumerate(batches):
            assert xb.shape == (bs, L + 1) and xb.dtype == np.dtype(dtype)
            for r, w in enumerate(order[b * bs:(b + 1) * bs]):
                np.testing.assert_array_equal(xb[r], tokens[w * L:w * L + L + 1])


def test_token_windows_once_across_ranks(tmp_path):
    path = tmp_path / "t.bin"
    np.arange(4 * 1000 + 1, dtype=np.uint32).tofile(path)
    for drop_last in (True, False):
        starts, lens = [], []
        for r in range(3):
            loader = TokenLoader(path, dtype="uint32", seq_len=4, batch_size=1, rank=r,
                                 world_size=3, drop_last=drop_last)
            starts += [int(xb[0, 0]) // 4 for xb in loader]
            lens.append(len(loader))
        assert lens == [334 if not drop_last else 333] * 3
        if drop_last:  # 999 distinct windows: the last one of the order is cut
            assert len(set(starts)) == len(starts) == 999
        else:  # all 1000, two of them twice (padding by wrapping)
            assert sorted(set(starts)) == list(range(1000)) and len(starts) == 1002


def test_token_loader_resume(tmp_path):
    path = tmp_path / "t.bin"
    np.arange(5000, dtype=np.uint16).tofile(path)
    full = [xb.copy() for xb in TokenLoader(path, seq_len=16, batch_size=4, seed=1)]
    a = TokenLoader(path, seq_len=16, batch_size=4, seed=1)
    it = iter(a)
    for _ in range(7):
        next(it)
    b = TokenLoader(path, seq_len=16, batch_size=4, seed=1)
    b.load_state_dict(a.state_dict())
    rest = [xb.copy() for xb in b]
    assert len(rest) == len(full) - 7
    for got, want in zip(rest, full[7:]):
        np.testing.assert_array_equal(got, want)


def test_bad_token_files(tmp_path):
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\x00" * 1001)
    with pytest.raises(thrifty.FormatError, match="multiple"):
        TokenLoader(odd, seq_len=4, batch_size=2)
    four = tmp_path / "four.bin"
    four.write_bytes(b"\x00" * 1002)
    with pytest.raises(thrifty.FormatError, match="multiple"):
        TokenLoader(four, dtype="uint32", seq_len=4, batch_size=2)
    small = tmp_path / "small.bin"
    np.arange(4, dtype=np.uint16).tofile(small)
    with pytest.raises(thrifty.InvalidInputError, match="needs at least"):
        TokenLoader(small, seq_len=4, batch_size=2)
    with pytest.raises(thrifty.InvalidInputError, match="dtype"):
        TokenLoader(small, dtype="int64", seq_len=1, batch_size=1)
    with pytest.raises(thrifty.InvalidInputError, match="seq_len"):
        TokenLoader(small, seq_len=0, batch_size=1)
    with pytest.raises(thrifty.InvalidInputError, match="rank"):
        TokenLoader(small, seq_len=1, batch_size=1, rank=1, world_size=1)


def _rss_mb():
    """(file-backed, anonymous) resident MiB of this process."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssFile:", "RssAnon:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    if len(out) < 2:
        pytest.skip("no RSS breakdown in /proc/self/status")
    return np.array([out["RssFile"], out["RssAnon"]])


def test_streaming_a_large_npy_keeps_rss_bounded(tmp_path):
    path = tmp_path / "big.npy"
    n, d = 131_072, 512  # 256 MiB
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, 16384):
        X[s:s + 16384] = 1.0
    X.flush()
    del X
    loader = ArrayLoader(path, batch_size=1024, read="pread")
    assert loader._x is None  # read with pread, not through a map
    before = _rss_mb()
    peak = before
    for i, xb in enumerate(loader):
        if i % 4 == 2:
            peak = np.maximum(peak, _rss_mb())
    grown_file, grown_anon = peak - before
    assert grown_file < 48, f"mapped pages grew by {grown_file:.0f} MiB while streaming 256 MiB"
    assert grown_anon < 96, f"anonymous memory grew by {grown_anon:.0f} MiB"


def test_files_read_with_pread_match_numpy(tmp_path):
    X = np.random.default_rng(0).standard_normal((700, 9)).astype(np.float64)
    path = tmp_path / "x.npy"
    np.save(path, X)
    keep = np.arange(0, 700, 3)
    for shuffle in (True, False):  # random rows, and runs of consecutive rows
        ref = list(ArrayLoader(np.load(path), batch_size=64, seed=2, keep=keep, shuffle=shuffle))
        for how in ("pread", "mmap", "auto"):
            got = list(ArrayLoader(path, batch_size=64, seed=2, keep=keep, shuffle=shuffle,
                                   read=how))
            assert len(got) == len(ref) == 4
            for a, b in zip(got, ref):
                np.testing.assert_array_equal(a, b)
    tok = tmp_path / "t.bin"
    tokens = np.random.default_rng(1).integers(0, 2**32, 5001, dtype=np.uint32)
    tokens.tofile(tok)
    loader = TokenLoader(tok, dtype="uint32", seq_len=50, batch_size=7, seed=2, shuffle=False,
                         read="pread")
    assert loader._tokens is None
    for b, xb in enumerate(loader):
        for r in range(7):
            w = b * 7 + r
            np.testing.assert_array_equal(xb[r], tokens[w * 50:w * 50 + 51])


def test_import_thrifty_never_imports_torch():
    code = ("import sys, thrifty, thrifty.data, thrifty.torch; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ctrl_c_while_waiting_for_a_batch(tmp_path):
    import _thread
    import threading

    path = tmp_path / "slow.npy"
    np.save(path, np.zeros((2_000_000, 1), dtype=np.uint8))
    # shuffled rows of a file: one system call per row, slow
    loader = ArrayLoader(path, batch_size=2_000_000, read="pread")
    it = iter(loader)
    timer = threading.Timer(0.05, _thread.interrupt_main)
    timer.start()
    t = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        next(it)
    assert time.perf_counter() - t < 5
    timer.join()
    it.close()
    assert loader.state_dict()["batch"] == 0
