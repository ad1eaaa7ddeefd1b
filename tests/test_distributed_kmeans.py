"""Full-data k-means on Ray workers (``thrifty.distributed.KMeans`` training on every
row): one Ray task per 2^20-row super-chunk per Lloyd iteration, partials combined by the
core's fixed tree, equal bit for bit to ``thrifty.cluster.KMeans`` on the concatenated
rows; the tree reduction itself; progress, Ctrl-C and bad input."""

from __future__ import annotations

import functools
import glob
import operator
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import thrifty
from thrifty import _core
from thrifty.cluster import KMeans as LocalKMeans

ray = pytest.importorskip("ray", reason="thrifty.distributed tests need ray: pip install 'thrifty[ray]'")
td = pytest.importorskip("thrifty.distributed")
from thrifty.distributed import _lloyd  # noqa: E402
from thrifty.distributed._executor import RayExecutor  # noqa: E402

S = _core.cluster_kmeans_super_chunk()
N = 2 * S + 202_848  # 2.3M rows: three super-chunks, the last one short
D = 4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray cluster; yields the fault-hook directory its workers watch (None when
    another module's cluster runs without one)."""
    if ray.is_initialized():  # test_distributed.py's session cluster
        d = os.environ.get("THRIFTY_DISTRIBUTED_FAULT_DIR")
        yield Path(d) if d else None
        return
    d = tmp_path_factory.mktemp("faults")
    os.environ["THRIFTY_DISTRIBUTED_FAULT_DIR"] = str(d)  # workers inherit it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield d
    ray.shutdown()
    del os.environ["THRIFTY_DISTRIBUTED_FAULT_DIR"]


def _save(x, cuts, root, dtype):
    os.makedirs(root, exist_ok=True)
    bounds = [0, *cuts, x.shape[0]]
    paths = []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        p = os.path.join(root, f"emb-{i:03d}.npy")
        np.save(p, x[a:b].astype(dtype))
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """N x 4 rows around three centres of different scales (float64 sums of such rows
    depend on their order), as uneven float32 shards (one of one row, cuts off the
    super-chunk boundaries) and as float16 shards."""
    rng = np.random.default_rng(0)
    centre = np.array([[0, 0, 0, 0], [40, -3, 7, 1], [-5, 90, 2, 300]], np.float32)
    lab = rng.integers(0, 3, N)
    scale = np.array([0.3, 5.0, 40.0], np.float32)[lab][:, None]
    x = (centre[lab] + scale * rng.standard_normal((N, D), dtype=np.float32)).astype(np.float32)
    root = tmp_path_factory.mktemp("kmeans-shards")
    f32 = _save(x, [1, 700_001, S + 5, 2_000_000], str(root / "f32"), np.float32)
    f16 = _save(x, [S - 1, 2 * S + 1], str(root / "f16"), np.float16)
    return x, f32, f16


def _same(km, kl):
    np.testing.assert_array_equal(km.cluster_centers_, kl.cluster_centers_)
    np.testing.assert_array_equal(km.labels_, kl.labels_)
    assert km.n_iter_ == kl.n_iter_
    assert km.inertia_ == kl.inertia_


@pytest.mark.parametrize("spherical,f16,mppc", [(False, False, None), (True, False, None),
                                                (True, True, None), (False, True, 10**6)])
def test_every_row_equals_single_process(cluster, big, spherical, f16, mppc):
    x, f32, shards16 = big
    assert len(_lloyd.super_chunks(N)) == 3
    xs = x.astype(np.float16).astype(np.float32) if f16 else x
    p = dict(spherical=spherical, init="random", max_iter=4, tol=1e-4, seed=5,
             max_points_per_centroid=mppc)
    km = td.KMeans(3, **p).fit(shards16 if f16 else f32)
    kl = LocalKMeans(3, **p).fit(xs)
    _same(km, kl)


@pytest.mark.parametrize("spherical", [False, True])
def test_empty_clusters_are_reseeded_as_in_one_process(cluster, big, spherical):
    x, f32, _ = big
    # the third start is far from every row (spherical: the second start again, which
    # wins the tie): its cluster is empty and takes the farthest row
    init = np.array([[0, 0, 0, 1], [40, -3, 7, 1], [4e4, -3e3, 7e3, 1e3]], np.float32)
    if spherical:
        init[2] = init[1]
    one = LocalKMeans(3, spherical=spherical, init=init, max_iter=1).fit(x)
    start = init[2] / (np.linalg.norm(init[2]) if spherical else 1)
    assert not np.allclose(one.cluster_centers_[2], start), "no re-seed happened"
    p = dict(spherical=spherical, init=init, max_iter=3, tol=0.0)
    _same(td.KMeans(3, **p, num_cpus=2).fit(f32), LocalKMeans(3, **p).fit(x))


def test_progress_counts_tasks_and_ctrl_c_cancels_the_pass(cluster, big):
    _, f32, _ = big
    seen = []
    km = td.KMeans(3, init="random", max_iter=2, tol=0.0, seed=1,
                   progress=lambda d, t: seen.append((d, t))).fit(f32)
    assert km.n_iter_ == 2
    lloyd = [(d, t) for d, t in seen if t == 2 * 5]  # 2 passes x (3 leaves + 2 nodes)
    assert lloyd[-1] == (10, 10)
    assert [d for d, _ in lloyd] == sorted(d for d, _ in lloyd)

    if cluster is None:
        return
    # Ctrl-C while super-chunk tasks run: every task of the pass is cancelled
    hold = cluster / "hold-kmeans"
    hold.write_text("")
    pids = []

    def interrupt(done, total):
        if total != 2 * 5:
            return  # another stage's bar
        deadline = time.monotonic() + 60
        while not pids and time.monotonic() < deadline:
            pids.extend(p for p in glob.glob(str(cluster / "pid-kmeans-*"))
                        if not p.endswith(".tmp"))
            time.sleep(0.05)
        raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            td.KMeans(3, init="random", max_iter=2, tol=0.0, progress=interrupt).fit(f32)
        assert pids, "no k-means task started"
        pid = int(open(pids[0]).read())
        deadline = time.monotonic() + 30
        alive = True
        while alive and time.monotonic() < deadline:  # cancelled: its worker is gone
            try:
                os.kill(pid, 0)
                time.sleep(0.1)
            except ProcessLookupError:
                alive = False
        assert not alive, "the held task was not cancelled"
    finally:
        hold.unlink()
        for p in glob.glob(str(cluster / "pid-*")):
            os.unlink(p)


def _tree(leaves, add):
    """The aligned binary tree, level by level (the definition)."""
    while len(leaves) > 1:
        leaves = [add(leaves[i], leaves[i + 1]) if i + 1 < len(leaves) else leaves[i]
                  for i in range(0, len(leaves), 2)]
    return leaves[0]


def test_tree_reduce_is_the_cores_aligned_tree(cluster):
    ex = RayExecutor(progress=False)
    rng = np.random.default_rng(3)
    for p in (1, 2, 3, 5, 6, 7, 11):
        v = [rng.standard_normal(4) * 10.0 ** rng.integers(-8, 9, 4) for _ in range(p)]
        got = ex.tree_reduce(np.asarray, [(a,) for a in v], _lloyd.add_arrays, desc="t")
        want = _tree(v, lambda a, b: a + b)
        np.testing.assert_array_equal(got, want, err_msg=str(p))
        if p == 7:
            left = functools.reduce(lambda a, b: a + b, v)
            assert not np.array_equal(got, left), "data must tell the shapes apart"


def test_a_failed_leaf_fails_the_reduction_with_its_error(cluster):
    ex = RayExecutor(progress=False)
    leaf = functools.partial(thrifty._validation.check_int, low=0)
    assert ex.tree_reduce(leaf, [(i, "leaf") for i in range(5)], operator.add, desc="t") == 10
    with pytest.raises(thrifty.InvalidInputError, match="leaf"):
        ex.tree_reduce(leaf, [(0, "leaf"), (1, "leaf"), (-1, "leaf"), (3, "leaf"), (4, "leaf")],
                       operator.add, desc="t")


def test_farthest_merge_orders_by_distance_then_row():
    a = (np.array([5.0, 2.0]), np.array([7, 1]), np.array([0, 1]), np.zeros((2, 1), np.float32))
    b = (np.array([5.0, 3.0]), np.array([3, 9]), np.array([2, 2]), np.ones((2, 1), np.float32))
    d, r, lab, _ = _lloyd.merge_farthest(a, b, 3)
    assert r.tolist() == [3, 7, 9] and d.tolist() == [5.0, 5.0, 3.0] and lab.tolist() == [2, 0, 2]


def test_every_row_kmeans_plus_plus_gathers_small_inputs_and_refuses_large_ones(
        cluster, big, tmp_path, monkeypatch):
    x, f32, _ = big
    small = _save(x[:5000], [1000], str(tmp_path / "small"), np.float32)
    for kw in ({}, {"max_points_per_centroid": 5000}):  # n <= mppc * k: every row too
        got = td.KMeans(3, max_iter=5, **kw).fit(small)     # the defaults: k-means++
        ref = LocalKMeans(3, max_iter=5, **kw).fit(x[:5000])
        np.testing.assert_array_equal(got.cluster_centers_, ref.cluster_centers_)
        np.testing.assert_array_equal(got.labels_, ref.labels_)
        assert got.inertia_ == ref.inertia_ and got.n_iter_ == ref.n_iter_
    # 5000 x 4 float32 rows are 80,000 bytes: one byte less allowed refuses them
    monkeypatch.setattr(td, "EVERY_ROW_PLUS_PLUS_BYTES", 5000 * D * 4 - 1)
    with pytest.raises(thrifty.InvalidInputError, match="k-means\\+\\+ on every row would gather"):
        td.KMeans(3, max_iter=5, seed=1).fit(small)
    monkeypatch.undo()


def test_every_row_refuses_bad_parameters(cluster, big, tmp_path):
    x, f32, _ = big
    small = _save(x[:5000], [1000], str(tmp_path / "small"), np.float32)
    bad = [({"init": "kmeans"}, "init must be"), ({"init": np.zeros((2, D))}, "init has 2 rows"),
           ({"init": np.zeros((3, D + 1))}, "features"), ({"max_iter": 0}, "max_iter"),
           ({"tol": -1.0}, "tol"), ({"init": np.full((3, D), np.nan)}, "NaN")]
    for kw, msg in bad:
        with pytest.raises(thrifty.InvalidInputError, match=msg):
            td.KMeans(3, **{"init": "random", **kw}).fit(small)
    y = x[:5000].copy()
    y[3000] = 0.0
    zero = _save(y, [1000], str(tmp_path / "zero"), np.float32)
    with pytest.raises(thrifty.InvalidInputError, match=r"emb-001\.npy: row 2000 is an all-zero"):
        td.KMeans(3, spherical=True, init=x[:3]).fit(zero)
    # the core's pieces refuse what does not fit
    with pytest.raises(thrifty.InvalidInputError, match="cannot be added"):
        _core.cluster_tree_add(np.zeros(3), np.zeros(4))
    with pytest.raises(thrifty.InvalidInputError, match="re-seed rows"):
        _core.cluster_kmeans_update(np.zeros((2, 2)), np.zeros(2, np.int64),
                                    np.zeros((2, 2), np.float32), False,
                                    np.zeros((0, 2), np.float32), np.zeros(0, np.int64))
    with pytest.raises(thrifty.InvalidInputError, match="do not fit 1 centroids"):
        _core.cluster_kmeans_lloyd_block(np.ones((2, 2), np.float32), np.ones((1, 2), np.float32),
                                         False, np.zeros((2, 2)), np.zeros(2, np.int64))


def test_a_killed_lloyd_worker_is_retried_and_the_result_unchanged(cluster, tmp_path):
    if cluster is None:
        pytest.skip("the running Ray cluster has no fault hook")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((9000, 8)).astype(np.float32)
    paths = _save(x, [2000, 2001], str(tmp_path / "s"), np.float32)
    hold = cluster / "hold-kmeans"
    hold.write_text("")
    out = {}

    def go():
        try:
            out["km"] = td.KMeans(4, init="random", seed=2, max_iter=5, max_retries=3).fit(paths)
        except BaseException as e:  # pragma: no cover - reported below
            out["e"] = e

    t = threading.Thread(target=go)
    t.start()
    try:
        deadline = time.monotonic() + 60
        pids = []
        while not pids and time.monotonic() < deadline:
            pids = [p for p in glob.glob(str(cluster / "pid-kmeans-*")) if not p.endswith(".tmp")]
            time.sleep(0.05)
        assert pids, "no k-means task started"
        os.kill(int(open(pids[0]).read()), signal.SIGKILL)
    finally:
        hold.unlink()
    t.join(120)
    for p in glob.glob(str(cluster / "pid-*")):
        os.unlink(p)
    assert "e" not in out, out.get("e")
    _same(out["km"], LocalKMeans(4, init="random", seed=2, max_iter=5).fit(x))


def test_predict_writes_label_shards_aligned_with_the_input(cluster, tmp_path):
    import json

    rng = np.random.default_rng(7)
    x = rng.standard_normal((7001, 8)).astype(np.float32)
    paths = _save(x, [1, 3000, 3001], str(tmp_path / "s"), np.float32)
    km = td.KMeans(5, init="random", max_iter=4, seed=3, partition_rows=4096).fit(paths)
    whole = km.predict(paths)
    np.testing.assert_array_equal(whole, LocalKMeans(5, init="random", max_iter=4, seed=3)
                                  .fit(x).predict(x))
    out = tmp_path / "labels"
    files = km.predict(paths, out_dir=out)
    assert [os.path.basename(f) for f in files] == [f"part-{i:05d}.npy" for i in range(4)]
    got = [np.load(f) for f in files]
    assert [g.size for g in got] == [1, 2999, 1, 4000]
    np.testing.assert_array_equal(np.concatenate(got), whole)
    m = json.loads((out / "_manifest.json").read_text())
    assert m["n"] == 7001 and [s["start"] for s in m["shards"]] == [0, 1, 3000, 3001]
    assert sorted(os.listdir(out)) == sorted([os.path.basename(f) for f in files]
                                             + ["_manifest.json"])
    # never over other files
    with pytest.raises(thrifty.InvalidInputError, match="not an empty directory"):
        km.predict(paths, out_dir=out)
    with pytest.raises(thrifty.InvalidInputError, match="not fitted"):
        td.KMeans(5).predict(paths, out_dir=tmp_path / "other")
