"""thrifty.distributed on a local Ray cluster: equal to the single-process calls for any
sharding and partitioning, fault tolerance, resume, and clear errors for bad shards."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import thrifty
from thrifty import prune as tp
from thrifty.cluster import KMeans as LocalKMeans
from thrifty.neighbors import topk as local_topk

ray = pytest.importorskip("ray", reason="thrifty.distributed tests need ray: pip install 'thrifty[ray]'")
td = pytest.importorskip("thrifty.distributed")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    fault_dir = tmp_path_factory.mktemp("faults")
    # workers inherit the driver's environment: the fault hook is armed per test by a file
    os.environ["THRIFTY_DISTRIBUTED_FAULT_DIR"] = str(fault_dir)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield fault_dir
    ray.shutdown()


def _data(seed=0, n=9400, d=16):
    """Blobs with planted near-duplicates (the first 100 rows copied with tiny noise)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n - 100, d)).astype(np.float32)
    dup = base[:100] + 1e-4 * rng.normal(size=(100, d)).astype(np.float32)
    return np.concatenate([base[:300], dup, base[300:]])


def _shard(x, cuts, dirpath, dtype=np.float32):
    os.makedirs(dirpath, exist_ok=True)
    paths = []
    bounds = [0, *cuts, x.shape[0]]
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        p = os.path.join(dirpath, f"part-{i:03d}.npy")
        np.save(p, x[a:b].astype(dtype))
        paths.append(p)
    return paths


SHARDINGS = {
    "one": [],
    "uneven": [1, 5000, 5001, 9000],
    "one-row": [1, 2, 3, 4, 9399],
}


def _same(r, s, fields=("keep", "cluster", "duplicate_of", "score", "keep_per_cluster",
                        "complexity")):
    for f in fields:
        np.testing.assert_array_equal(getattr(r, f), getattr(s, f), err_msg=f)
    np.testing.assert_array_equal(r.similarity, s.similarity)  # NaN-aware
    assert r.prefer == s.prefer
    assert r.params == s.params
    assert r.report() == s.report()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    x = _data()
    root = tmp_path_factory.mktemp("shards")
    return x, {name: _shard(x, cuts, str(root / name)) for name, cuts in SHARDINGS.items()}


@pytest.mark.parametrize("sharding", list(SHARDINGS))
def test_semdedup_equals_single_process(cluster, data, sharding):
    x, shards = data
    r = td.semdedup(shards[sharding], eps=0.01, n_clusters=20, seed=1, partition_rows=4096,
                    buckets=3)
    s = tp.semdedup(x, eps=0.01, n_clusters=20, seed=1)
    assert (s.duplicate_of >= 0).sum() >= 90  # the planted duplicates are found
    _same(r, s)


def test_semdedup_random_order_uses_global_ids(cluster, data):
    x, shards = data
    # one task at a time with 2 thrifty threads inside it: same result
    r = td.semdedup(shards["uneven"], eps=0.3, n_clusters=5, prefer="random", seed=4,
                    partition_rows=8192, num_cpus=2)
    _same(r, tp.semdedup(x, eps=0.3, n_clusters=5, prefer="random", seed=4))


@pytest.mark.parametrize("prefer", ["hard", "easy", "random"])
def test_dbp_equals_single_process(cluster, data, prefer):
    x, shards = data
    r = td.dbp(shards["one-row"], keep_fraction=0.4, n_clusters=20, dedup_eps=0.01,
               prefer=prefer, seed=2, partition_rows=4096, buckets=7)
    _same(r, tp.dbp(x, keep_fraction=0.4, n_clusters=20, dedup_eps=0.01, prefer=prefer,
                    seed=2))


def test_prefer_auto_resolves_over_the_whole_input(cluster, data):
    # "auto" depends on the kept count and the classes (or non-empty clusters) of the
    # whole input; every shard and bucket must use the order one process chooses
    x, shards = data
    y = np.arange(x.shape[0]) % 100
    used = set()
    for kf, k, labels in [(0.3, 9, None), (0.05, 20, None), (0.3, 9, y)]:
        for method in (td.ssp, td.dbp):
            extra = {"dedup_eps": 0.01} if method is td.dbp else {}
            r = method(shards["uneven"], keep_fraction=kf, n_clusters=k, prefer="auto", y=labels,
                       seed=6, partition_rows=4096, buckets=4, **extra)
            local = getattr(tp, method.__name__)
            s = local(x, keep_fraction=kf, n_clusters=k, prefer="auto", y=labels, seed=6, **extra)
            assert r.prefer == s.prefer
            _same(r, s)
            used.add(s.prefer)
    assert used == {"hard", "easy"}


def test_dbp_without_dedup_and_ssp_equal_single_process(cluster, data):
    x, shards = data
    _same(td.dbp(shards["uneven"], keep_fraction=0.3, n_clusters=9, seed=5, n_neighbors=3),
          tp.dbp(x, keep_fraction=0.3, n_clusters=9, seed=5, n_neighbors=3))
    for prefer in ("hard", "easy"):
        _same(td.ssp(shards["uneven"], keep_fraction=0.3, n_clusters=9, prefer=prefer, seed=5,
                     partition_rows=4096),
              tp.ssp(x, keep_fraction=0.3, n_clusters=9, prefer=prefer, seed=5))


def test_given_clustering_and_float16_shards(cluster, data, tmp_path):
    x, _ = data
    paths = _shard(x, [3000, 3001], str(tmp_path), dtype=np.float16)
    x16 = x.astype(np.float16).astype(np.float32)
    rng = np.random.default_rng(3)
    lab = rng.integers(0, 4, x.shape[0])
    c = rng.normal(size=(4, x.shape[1])).astype(np.float32)
    r = td.semdedup(paths, eps=0.05, labels=lab, centroids=c, seed=0, partition_rows=4096)
    _same(r, tp.semdedup(x16, eps=0.05, labels=lab, centroids=c, seed=0))


@pytest.mark.parametrize("spherical,mppc,init", [(False, 100, "k-means++"), (True, 100, "random"),
                                                 (True, None, "random"), (False, None, "random")])
def test_kmeans_equals_single_process(cluster, data, spherical, mppc, init):
    x, shards = data
    p = dict(spherical=spherical, max_points_per_centroid=mppc, init=init, seed=3, max_iter=20)
    km = td.KMeans(7, **p, partition_rows=4096).fit(shards["one-row"])
    kl = LocalKMeans(7, **p).fit(x)
    np.testing.assert_array_equal(km.cluster_centers_, kl.cluster_centers_)
    np.testing.assert_array_equal(km.labels_, kl.labels_)
    assert km.inertia_ == kl.inertia_ and km.n_iter_ == kl.n_iter_
    np.testing.assert_array_equal(km.predict(shards["uneven"]), kl.predict(x))
    assert km.get_params()["n_clusters"] == 7


def test_kmeans_has_the_single_process_parameters():
    import inspect

    from thrifty.text import CompressionKNNClassifier

    for dist, local in [(td.KMeans.__init__, LocalKMeans.__init__), (td.semdedup, tp.semdedup),
                        (td.dbp, tp.dbp), (td.ssp, tp.ssp), (td.topk, local_topk),
                        (td.CompressionKNNClassifier.__init__, CompressionKNNClassifier.__init__)]:
        a, b = inspect.signature(dist).parameters, inspect.signature(local).parameters
        for name, p in b.items():
            if name in ("X", "self"):
                continue
            assert name in a and a[name].default == p.default, (dist, name)


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
def test_topk_equals_single_process(cluster, data, metric):
    x, shards = data
    q = np.random.default_rng(1).normal(size=(40, x.shape[1])).astype(np.float32)
    q[5] = x[7]  # an exact match
    keys = np.concatenate([x, x[:50]])  # exact ties: lower global index first
    paths = shards["uneven"] + [_shard(x[:50], [], os.path.dirname(shards["uneven"][0]) + "-tail")[0]]
    seen = []
    s, i = td.topk(q, paths, 12, metric=metric, partition_rows=4096,
                   progress=lambda done, total: seen.append((done, total)))
    s0, i0 = local_topk(q, keys, 12, metric=metric)
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)  # tasks done / total on the driver
    np.testing.assert_array_equal(i, i0)
    np.testing.assert_array_equal(s, s0)
    with pytest.raises(thrifty.InvalidInputError, match="n_neighbors"):
        td.topk(q, paths, 0)
    with pytest.raises(thrifty.InvalidInputError, match="n_neighbors must be between 1 and"):
        td.topk(q, paths, x.shape[0] + 51)


def test_compression_knn_equals_single_process(cluster):
    from thrifty.text import CompressionKNNClassifier

    rng = np.random.default_rng(0)
    words = ["goal", "match", "bank", "rates", "team", "market", "score", "shares"]
    train = [" ".join(rng.choice(words, 6)) for _ in range(60)] + ["goal match team"] * 3
    y = [i % 3 for i in range(len(train))]
    test = [" ".join(rng.choice(words, 5)) for _ in range(15)]
    clf = CompressionKNNClassifier(n_neighbors=3).fit(train, y)
    d, i = td.text_kneighbors(clf, test, 5, partition_size=7)
    d0, i0 = clf.kneighbors(test, 5)
    np.testing.assert_array_equal(i, i0)
    np.testing.assert_array_equal(d, d0)
    np.testing.assert_array_equal(td.text_predict(clf, test, partition_size=11), clf.predict(test))


def test_compression_knn_over_text_shards(cluster, tmp_path):
    from thrifty.text import CompressionKNNClassifier

    rng = np.random.default_rng(1)
    words = ["goal", "match", "bank", "rates", "team", "market", "score", "shares"]
    train = [" ".join(rng.choice(words, 6)) for _ in range(40)] + ["goal match team"] * 3
    y = [["sport", "finance", "other"][i % 3] for i in range(len(train))]
    test = [" ".join(rng.choice(words, 5)) for _ in range(12)]
    ref = CompressionKNNClassifier(n_neighbors=3).fit(train, y)
    cuts = [0, 1, 20, len(train)]
    for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        with open(tmp_path / f"t{i}.jsonl", "w") as f:
            f.writelines(json.dumps({"text": t, "label": lab}) + "\n"
                         for t, lab in zip(train[a:b], y[a:b]))
        (tmp_path / f"p{i}.txt").write_text("".join(t + "\n" for t in train[a:b]))
    for shards, labels in [(str(tmp_path / "*.jsonl"), None), (str(tmp_path / "p*.txt"), y)]:
        clf = td.CompressionKNNClassifier(n_neighbors=3).fit(shards, labels)
        d, i = clf.kneighbors(test, 5)
        d0, i0 = ref.kneighbors(test, 5)
        np.testing.assert_array_equal(i, i0)
        np.testing.assert_array_equal(d, d0)
        np.testing.assert_array_equal(clf.predict(test), ref.predict(test))
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\nnot json\n')
    with pytest.raises(thrifty.FormatError, match=r"bad\.jsonl: line 2"):
        td.CompressionKNNClassifier(n_neighbors=1).fit([str(tmp_path / "bad.jsonl")], ["a", "b"])
    with pytest.raises(thrifty.ThriftyIOError, match="missing.txt"):
        td.CompressionKNNClassifier(n_neighbors=1).fit([str(tmp_path / "missing.txt")], ["a"])


def test_parquet_shards_with_ids(cluster, data, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    x, _ = data
    for i, (a, b) in enumerate([(0, 4000), (4000, 4001), (4001, x.shape[0])]):
        t = pa.table({"emb": pa.FixedSizeListArray.from_arrays(pa.array(x[a:b].ravel()), x.shape[1]),
                      "id": [f"doc{j}" for j in range(a, b)]})
        pq.write_table(t, tmp_path / f"p{i}.parquet", row_group_size=1000)
    r = td.semdedup(str(tmp_path), eps=0.01, n_clusters=20, seed=1, column="emb",
                    id_column="id", partition_rows=4096)
    _same(r, tp.semdedup(x, eps=0.01, n_clusters=20, seed=1))
    assert r.ids[:2] == ["doc0", "doc1"] and len(r.ids) == x.shape[0]


def test_ray_dataset_input(cluster, data, tmp_path):
    x, _ = data
    ds = ray.data.from_numpy(x[:3000])
    r = td.ssp(ds, keep_fraction=0.5, n_clusters=6, seed=0, work_dir=str(tmp_path))
    _same(r, tp.ssp(x[:3000], keep_fraction=0.5, n_clusters=6, seed=0))
    # the same work_dir without resume: the new Dataset is read, not the old copy
    r = td.ssp(ray.data.from_numpy(x[3000:5000]), keep_fraction=0.5, n_clusters=6, seed=0,
               work_dir=str(tmp_path))
    _same(r, tp.ssp(x[3000:5000], keep_fraction=0.5, n_clusters=6, seed=0))


def _no_partial_files(root):
    assert not glob.glob(os.path.join(root, "**", "*.tmp-*"), recursive=True)


def test_killed_worker_is_retried_and_result_unchanged(cluster, data, tmp_path):
    x, shards = data
    hold = cluster / "hold-assign"
    hold.write_text("")
    out = {}
    wd = str(tmp_path / "work")

    def go():
        try:
            out["r"] = td.dbp(shards["uneven"], keep_fraction=0.5, n_clusters=10, dedup_eps=0.01,
                              seed=1, partition_rows=4096, work_dir=wd, max_retries=3)
        except BaseException as e:  # pragma: no cover - reported below
            out["e"] = e

    t = threading.Thread(target=go)
    t.start()
    try:
        deadline = time.monotonic() + 60
        pids = []
        while not pids and time.monotonic() < deadline:
            pids = [p for p in glob.glob(str(cluster / "pid-assign-*")) if not p.endswith(".tmp")]
            time.sleep(0.05)
        assert pids, "no assign task started"
        pid = int(open(pids[0]).read())
        os.kill(pid, signal.SIGKILL)
    finally:
        hold.unlink()
    t.join(120)
    for p in glob.glob(str(cluster / "pid-*")):
        os.unlink(p)
    assert "e" not in out, out.get("e")
    _same(out["r"], tp.dbp(x, keep_fraction=0.5, n_clusters=10, dedup_eps=0.01, seed=1))
    _no_partial_files(wd)
    assert all(os.path.exists(os.path.join(wd, s, "_manifest.json"))
               for s in ("kmeans", "assign", "clusters", "select"))


def test_ctrl_c_cancels_the_running_tasks(cluster, data):
    _, shards = data
    hold = cluster / "hold-topk"
    hold.write_text("")
    pids = []

    def interrupt(done, total):
        deadline = time.monotonic() + 60
        while not pids and time.monotonic() < deadline:
            pids.extend(p for p in glob.glob(str(cluster / "pid-topk-*")) if not p.endswith(".tmp"))
            time.sleep(0.05)
        raise KeyboardInterrupt

    q = np.ones((2, 16), np.float32)
    try:
        with pytest.raises(KeyboardInterrupt):
            td.topk(q, shards["uneven"], 3, partition_rows=4096, progress=interrupt)
        assert pids, "no topk task started"
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


def test_resume_skips_finished_stages(cluster, data, tmp_path):
    x, shards = data
    wd = str(tmp_path / "work")
    kw = dict(keep_fraction=0.5, n_clusters=10, seed=1, partition_rows=4096, work_dir=wd)
    r1 = td.dbp(shards["uneven"], **kw)
    man = os.path.join(wd, "clusters", "_manifest.json")
    before = os.stat(man).st_mtime_ns
    # everything reused: no stage rewrites its manifest
    r2 = td.dbp(shards["uneven"], **kw, resume=True)
    assert os.stat(man).st_mtime_ns == before
    _same(r1, r2)
    r3 = td.dbp(shards["uneven"], **{**kw, "seed": 2}, resume=True)
    assert os.stat(man).st_mtime_ns != before
    _same(r3, tp.dbp(x, keep_fraction=0.5, n_clusters=10, seed=2))


def test_bad_shards_name_the_shard(cluster, data, tmp_path):
    x, _ = data
    good = _shard(x[:100], [], str(tmp_path / "good"))[0]
    cases = {}
    cases["missing"] = [good, str(tmp_path / "nope.npy")]
    p = tmp_path / "corrupt.npy"
    p.write_bytes(b"\x93NUMPY garbage")
    cases["corrupt"] = [good, str(p)]
    p = tmp_path / "trunc.npy"
    np.save(p, x[:100])
    p.write_bytes(p.read_bytes()[:-40])
    cases["truncated"] = [good, str(p)]
    p = tmp_path / "wide.npy"
    np.save(p, np.ones((5, 17), np.float32))
    cases["width"] = [good, str(p)]
    p = tmp_path / "half.npy"
    np.save(p, np.ones((5, 16), np.float16))
    cases["dtype"] = [good, str(p)]
    p = tmp_path / "empty.npy"
    np.save(p, np.zeros((0, 16), np.float32))
    cases["empty"] = [good, str(p)]
    p = tmp_path / "ints.npy"
    np.save(p, np.ones((5, 16), np.int32))
    cases["ints"] = [good, str(p)]
    for name, paths in cases.items():
        with pytest.raises(thrifty.ThriftyError, match=os.path.basename(paths[1])):
            td.semdedup(paths, eps=0.1, n_clusters=2)
    with pytest.raises(thrifty.InvalidInputError, match="matches no file"):
        td.semdedup(str(tmp_path / "none-*.npy"), eps=0.1)


def test_nan_row_error_names_shard_and_row(cluster, data, tmp_path):
    x, _ = data
    y = x[:600].copy()
    y[450, 3] = np.nan
    paths = _shard(y, [400], str(tmp_path))
    with pytest.raises(thrifty.InvalidInputError, match=r"part-001\.npy: row 50 contains NaN"):
        td.semdedup(paths, eps=0.1, n_clusters=3)
    with pytest.raises(thrifty.InvalidInputError, match=r"part-001\.npy: row 50 contains NaN"):
        td.KMeans(3, partition_rows=4096).fit(paths)


def test_bad_parameters(cluster, data):
    _, shards = data
    with pytest.raises(thrifty.InvalidInputError, match="n_clusters"):
        td.semdedup(shards["one"], eps=0.1, n_clusters=10**6)
    with pytest.raises(thrifty.InvalidInputError, match="eps"):
        td.semdedup(shards["one"], eps=2.0)
    with pytest.raises(thrifty.InvalidInputError, match="multiple of 4096"):
        td.semdedup(shards["one"], eps=0.1, partition_rows=5000)
    with pytest.raises(thrifty.InvalidInputError, match="random"):
        td.ssp(shards["one"], keep_fraction=0.5, prefer="random")
    with pytest.raises(thrifty.InvalidInputError, match="auto"):
        td.semdedup(shards["one"], eps=0.1, prefer="auto")
    with pytest.raises(thrifty.InvalidInputError, match="y must have shape"):
        td.dbp(shards["one"], keep_fraction=0.5, prefer="auto", y=[0, 1])
    with pytest.raises(thrifty.InvalidInputError, match="not fitted"):
        td.KMeans(2).predict(shards["one"])


def test_mixed_cpu_kernels_are_reported():
    from thrifty.distributed._executor import mixed_kernels
    from thrifty.distributed._stages import kernel_family

    me = kernel_family()
    assert mixed_kernels([me, dict(me, node="other")]) is None
    msg = mixed_kernels([me, {"node": "old-box", "kernels": "x86_64:SSE4.2"}])
    assert "old-box" in msg and "different float32 kernels" in msg


def test_import_thrifty_imports_no_ray():
    code = ("import sys, thrifty, thrifty.prune, thrifty.cluster, thrifty.distributed; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
