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


@pytest.mark.parametrize("sharding", list(SHARDINGS))
def test_ssp_random_equals_single_process(cluster, data, sharding):
    x, shards = data
    # the given clustering skips k-means: the random choice is what is tested here
    lab = np.arange(x.shape[0]) % 4
    cen = np.eye(4, x.shape[1], dtype=np.float32) + 0.5
    for kf, seed in [(0.3, 7), (1 / x.shape[0], 2**64 - 1), (1.0, 0)]:
        r = td.ssp(shards[sharding], keep_fraction=kf, labels=lab, centroids=cen,
                   prefer="random", seed=seed, partition_rows=4096)
        s = tp.ssp(x, keep_fraction=kf, labels=lab, centroids=cen, prefer="random", seed=seed)
        assert r.prefer == "random"
        _same(r, s)
    # and with the pipeline's own k-means
    _same(td.ssp(shards[sharding], keep_fraction=0.5, n_clusters=9, prefer="random", seed=3),
          tp.ssp(x, keep_fraction=0.5, n_clusters=9, prefer="random", seed=3))


def _giant(x):
    """A given clustering with one planted giant cluster: rows 0..5999 (which hold the
    planted near-duplicates) in cluster 0, the rest spread over clusters 1..3."""
    lab = np.where(np.arange(x.shape[0]) < 6000, 0, np.arange(x.shape[0]) % 3 + 1)
    cen = np.zeros((4, x.shape[1]), np.float32)
    for j in range(4):
        cen[j] = x[lab == j].mean(axis=0)
    return lab, cen


@pytest.mark.parametrize("prefer", ["hard", "easy", "random"])
def test_semdedup_splits_a_giant_cluster_into_block_pairs(cluster, data, prefer, monkeypatch):
    x, shards = data
    lab, cen = _giant(x)
    from thrifty.distributed._executor import RayExecutor

    seen = {}
    real_map = RayExecutor.map

    def recording_map(self, fn, args, *, desc, **kw):
        seen[desc] = len(args)
        return real_map(self, fn, args, desc=desc, **kw)

    monkeypatch.setattr(RayExecutor, "map", recording_map)
    # eps 0.5 makes many duplicates, so best predecessors often lie in other blocks
    for eps in (0.01, 0.5):
        r = td.semdedup(shards["uneven"], eps=eps, labels=lab, centroids=cen, prefer=prefer,
                        seed=3, block_rows=1700, buckets=2)
        s = tp.semdedup(x, eps=eps, labels=lab, centroids=cen, prefer=prefer, seed=3)
        _same(r, s)
        # 6000 rows in 4 blocks of at most 1700: 6 pairs; the other clusters (1134 rows)
        # stay whole; one bucket holds the giant cluster
        assert seen["semdedup cluster blocks"] == 6 and seen["semdedup merge blocks"] == 1
    assert (s.duplicate_of >= 0).sum() > 1000


def test_dbp_dedup_splits_big_clusters_too(cluster, data, tmp_path):
    x, shards = data
    lab, cen = _giant(x)
    # every cluster above 500 rows split (the giant one into 12 blocks of 500)
    r = td.dbp(shards["one-row"], keep_fraction=0.4, labels=lab, centroids=cen, dedup_eps=0.05,
               seed=1, block_rows=500)
    _same(r, tp.dbp(x, keep_fraction=0.4, labels=lab, centroids=cen, dedup_eps=0.05, seed=1))
    # k-means clusters, all of them split, with blocks of one row; exact copies make
    # ties between earlier rows in different blocks (the lower id wins)
    small = np.concatenate([x[:25], x[:6] + 1e-5, x[:3], x[:3]])
    paths = _shard(small, [1, 17], str(tmp_path))
    for block_rows in (1, 2):
        _same(td.semdedup(paths, eps=0.2, n_clusters=3, seed=2, block_rows=block_rows),
              tp.semdedup(small, eps=0.2, n_clusters=3, seed=2))
    assert tp.semdedup(small, eps=0.2, n_clusters=3, seed=2).duplicate_of[34] == 0
    with pytest.raises(thrifty.InvalidInputError, match="block_rows"):
        td.semdedup(shards["one"], eps=0.2, n_clusters=3, block_rows=0)


def test_ssp_random_threshold_is_exact_with_ties(monkeypatch):
    # the threshold search (histogram bin, then the exact (bits, id) inside it) on draws
    # with many ties and all in few bins, against a plain sort; tasks run in-process
    from thrifty.distributed import _random_threshold
    from thrifty.distributed import _stages as st

    n = 5000
    fake = {"bits": (np.arange(n) * 7919 % 13).astype(np.uint32) << np.uint32(29)}
    monkeypatch.setattr(st, "random_bits", lambda ids, seed: fake["bits"][ids])

    class Ex:
        def map(self, fn, args, desc):
            return [fn(*a) for a in args]

    class Run:
        ex = Ex()
        parts = [(0, 1), (1, 1700), (1700, 1701), (1701, n)]

    order = np.lexsort((np.arange(n), fake["bits"]))
    for nk in (1, 2, 384, 385, 2500, n - 1, n):
        rule = ("random", 0, *_random_threshold(Run(), nk, 0))
        keep = st._keep_by_rule(rule, np.arange(n), None, None)
        ref = np.zeros(n, bool)
        ref[order[:nk]] = True
        np.testing.assert_array_equal(keep, ref, err_msg=str(nk))


def test_random_bits_match_the_core_order():
    # the core's seeded random order (SemDeDup's member order, SSP's choice) is the order
    # of (random_bits(id), id): checked on one process's ssp for several seeds
    from thrifty.distributed._stages import random_bits

    x = np.random.default_rng(2).normal(size=(3000, 6)).astype(np.float32)
    ids = np.arange(3000)
    for seed in (0, 1, 12345, 2**63, 2**64 - 1):
        s = tp.ssp(x, keep_fraction=0.25, n_clusters=5, prefer="random", seed=seed)
        ref = np.zeros(3000, bool)
        ref[np.lexsort((ids, random_bits(ids, seed)))[:750]] = True
        np.testing.assert_array_equal(s.keep, ref, err_msg=str(seed))


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


def _check_out_dir(res, s, shards, x_rows):
    """The shard directories of ``res`` concatenate to the single-process arrays ``s``."""
    m = json.load(open(os.path.join(res.out_dir, "_manifest.json")))
    assert [sh["input"] for sh in m["shards"]] == shards
    assert [sh["rows"] for sh in m["shards"]] == x_rows
    for field in ("keep", "duplicate_of", "similarity", "score", "cluster"):
        files = [os.path.join(res.out_dir, sh["dir"], f"{field}.npy") for sh in m["shards"]]
        assert [np.load(f).shape[0] for f in files] == x_rows  # aligned with the inputs
        np.testing.assert_array_equal(np.concatenate([np.load(f) for f in files]),
                                      getattr(s, field), err_msg=field)
    assert m["n_kept"] == int(s.keep.sum()) == res.n_kept
    assert m["keep_per_cluster"] == s.keep_per_cluster.tolist()
    assert m["prefer"] == s.prefer and m["method"] == s.method
    _same(res.load(), s)


@pytest.mark.parametrize("method,kw", [
    ("semdedup", {"eps": 0.01, "block_rows": 500}),
    ("dbp", {"keep_fraction": 0.4, "dedup_eps": 0.01, "prefer": "random"}),
    ("ssp", {"keep_fraction": 0.3, "prefer": "easy"}),
    ("ssp", {"keep_fraction": 0.3, "prefer": "random"}),
])
def test_out_dir_writes_shards_equal_to_single_process(cluster, data, tmp_path, method, kw):
    x, shards = data
    paths = shards["one-row"]
    out = tmp_path / "out"
    res = getattr(td, method)(paths, n_clusters=12, seed=4, out_dir=str(out),
                              partition_rows=4096, **kw)
    assert isinstance(res, td.ShardedPruneResult)
    kw.pop("block_rows", None)
    s = getattr(tp, method)(x, n_clusters=12, seed=4, **kw)
    rows = [np.load(p, mmap_mode="r").shape[0] for p in paths]
    _check_out_dir(res, s, paths, rows)
    _no_partial_files(str(out))
    # never written over: a non-empty out_dir is refused before any work
    with pytest.raises(thrifty.InvalidInputError, match="not an empty directory"):
        getattr(td, method)(paths, n_clusters=12, seed=4, out_dir=str(out), **kw)


def test_sharded_report_streams_the_single_process_report(cluster, data, tmp_path):
    # report(), removed() and write_report() read one shard at a time and give the
    # report (and its JSON bytes) of one process
    import io

    x, shards = data
    res = td.dbp(shards["uneven"], keep_fraction=0.4, n_clusters=12, dedup_eps=0.01, seed=4,
                 out_dir=str(tmp_path / "out"))
    s = tp.dbp(x, keep_fraction=0.4, n_clusters=12, dedup_eps=0.01, seed=4)
    rep = s.report()
    assert res.report() == rep
    assert res.report(max_removed=7)["removed"] == rep["removed"][:7]
    assert list(res.removed(max_removed=0)) == []
    assert res.size_per_cluster.tolist() == np.bincount(s.cluster, minlength=12).tolist()
    assert np.array_equal(np.concatenate(list(res.iter_kept())), s.indices)
    extra = {"input": ["a", "b\"c"]}
    buf = io.BytesIO()
    res.write_report(buf, extra=extra)
    assert buf.getvalue() == json.dumps({**rep, **extra}, indent=1).encode()
    # every entry kind: NaN similarity (pruned), finite similarity (duplicate)
    assert {r["reason"] for r in rep["removed"]} == {"duplicate", "pruned"}
    # nothing removed: an empty list, as json.dumps writes it
    res1 = td.ssp(shards["one"], keep_fraction=1.0, n_clusters=3, seed=0,
                  out_dir=str(tmp_path / "all"))
    buf = io.BytesIO()
    res1.write_report(buf)
    s1 = tp.ssp(x, keep_fraction=1.0, n_clusters=3, seed=0)
    assert buf.getvalue() == json.dumps(s1.report(), indent=1).encode()


def test_assignment_streams_in_blocks_with_the_same_results(cluster, data, tmp_path,
                                                            monkeypatch):
    # blocks of 1000 rows (not a multiple of the 4096-row chunks) and a bucket buffer of
    # one byte (every block appended to the bucket files at once) change nothing
    from thrifty.distributed import _stages

    monkeypatch.setattr(_stages, "ASSIGN_BLOCK_ROWS", 1000)
    monkeypatch.setattr(_stages, "BUCKET_BUFFER_BYTES", 1)
    x, shards = data
    paths = _shard(x, [1, 5000, 5001, 9000], str(tmp_path / "f16"), dtype=np.float16)
    x16 = x.astype(np.float16).astype(np.float32)
    for p, xs in ((shards["uneven"], x), (paths, x16)):
        _same(td.dbp(p, keep_fraction=0.4, n_clusters=9, dedup_eps=0.01, seed=2,
                     partition_rows=8192, buckets=3),
              tp.dbp(xs, keep_fraction=0.4, n_clusters=9, dedup_eps=0.01, seed=2))
        _same(td.ssp(p, keep_fraction=0.3, n_clusters=9, prefer="easy", seed=2),
              tp.ssp(xs, keep_fraction=0.3, n_clusters=9, prefer="easy", seed=2))
    km = td.KMeans(6, max_points_per_centroid=64, seed=1, partition_rows=8192).fit(paths)
    ref = LocalKMeans(6, max_points_per_centroid=64, seed=1).fit(x16)
    assert km.inertia_ == ref.inertia_ and np.array_equal(km.labels_, ref.labels_)


def _bucket_pieces(tmp_path, x, lab, parts, n_buckets, block_rows, budget):
    from thrifty.distributed import _stages
    from thrifty.distributed._source import open_source

    tmp_path.mkdir(exist_ok=True)
    np.save(tmp_path / "x.npy", x)
    src = open_source(str(tmp_path / "x.npy"))
    out = tmp_path / "assign"
    for p, (a, b) in enumerate(parts):
        _stages.assign_task(src, p, a, b, None, False, False, lab, str(out), n_buckets,
                            block_rows, budget)
    return src, str(out)


def test_bucket_files_hold_each_bucket_sorted_by_cluster_then_id(tmp_path):
    from thrifty.distributed import _stages

    rng = np.random.default_rng(0)
    n, d = 5000, 6
    x = rng.normal(size=(n, d)).astype(np.float16)
    lab = rng.integers(0, 11, n)
    parts = [(0, 1700), (1700, 1701), (1701, n)]
    _, out = _bucket_pieces(tmp_path, x, lab, parts, 4, 333, 100)
    assert not glob.glob(os.path.join(out, "**", "*.tmp-*"), recursive=True)
    for b in range(4):
        ids, lb, xb = _stages._load_bucket(out, b)
        want = np.flatnonzero(lab % 4 == b)
        want = want[np.lexsort((want, lab[want]))]
        np.testing.assert_array_equal(ids, want)
        np.testing.assert_array_equal(lb, lab[want])
        assert xb.dtype == np.float16
        np.testing.assert_array_equal(xb, x[want])
    # a damaged piece is named, not misread
    piece = sorted(glob.glob(os.path.join(out, "bucket-00001", "*.rows")))[0]
    with open(piece, "r+b") as f:
        f.truncate(os.path.getsize(piece) - 2)
    with pytest.raises(thrifty.InvalidInputError, match="rerun without resume"):
        _stages._load_bucket(out, 1)


def test_assignment_and_bucket_loading_hold_a_block_not_the_partition(tmp_path):
    # numpy's allocations (traced by tracemalloc): the assignment holds one block and
    # the small per-row arrays, never the partition's rows; a bucket is loaded with one
    # copy of its rows (plus one partition's piece), not three
    import tracemalloc

    from thrifty.distributed import _stages
    from thrifty.distributed._source import open_source

    rng = np.random.default_rng(1)
    n, d = 81920, 64
    x = rng.normal(size=(n, d)).astype(np.float16)
    np.save(tmp_path / "x.npy", x)
    src = open_source(str(tmp_path / "x.npy"))
    c = rng.normal(size=(8, d)).astype(np.float32)
    tracemalloc.start()
    try:
        _stages.assign_task(src, 0, 0, n, c, True, False, None, str(tmp_path / "a"), 2,
                            4096, 1 << 16)
        _, assign_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the partition's rows: 10 MiB in float16, 20 MiB as float32
    assert assign_peak < x.nbytes, assign_peak
    # one bucket holding every row, from four partitions
    _, out = _bucket_pieces(tmp_path / "b", x, rng.integers(0, 2, n),
                            [(a, a + n // 4) for a in range(0, n, n // 4)], 1, 4096, 1 << 16)
    tracemalloc.start()
    try:
        ids, _, xb = _stages._load_bucket(out, 0)
        _, load_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert load_peak < 1.5 * xb.nbytes + 64 * ids.size, (load_peak, xb.nbytes)


def test_ssp_score_threshold_is_exact_with_ties(tmp_path, monkeypatch):
    # the hard / easy threshold search (16-bit digits of (score key, id), then the
    # gathered bin) on scores full of ties, -0.0 and negatives, against a plain sort of
    # every score; tasks run in-process
    import thrifty.distributed as tdm
    from thrifty.distributed import _stages as st

    rng = np.random.default_rng(5)
    n = 3000
    values = np.array([-0.25, -0.0, 0.0, 1e-300, 0.5, 0.5 + 2**-52, 0.75, 1.0, 2.0])
    score = values[rng.integers(0, values.size, n)]
    score[rng.random(n) < 0.3] = rng.random(int((rng.random(n) < 0.3).sum()) or 1)[0]
    ids = rng.permutation(n).astype(np.int64) * 7 + 3  # ids need not be dense
    files = []
    for b, sel in enumerate(np.array_split(np.arange(n), 4)):
        f = str(tmp_path / f"bucket-{b}.npz")
        np.savez(f, ids=ids[sel], score=score[sel])
        files.append(f)

    class Ex:
        def map(self, fn, args, desc):
            return [fn(*a) for a in args]

    class Run:
        ex = Ex()

    for gather in (0, 5, 1 << 16):
        monkeypatch.setattr(tdm, "SCORE_GATHER_ROWS", gather)
        for prefer in ("hard", "easy"):
            order = np.lexsort((ids, -score if prefer == "hard" else score))
            for nk in (1, 2, 17, 1000, 1001, n - 1, n):
                rule = (prefer, *tdm._score_threshold(Run(), files, nk, prefer))
                keep = st._keep_by_rule(rule, ids, None, score)
                ref = np.zeros(n, bool)
                ref[order[:nk]] = True
                np.testing.assert_array_equal(keep, ref, err_msg=f"{prefer} {nk} {gather}")
    # the keys order scores as the comparisons do: -0.0 == 0.0, negatives first
    k = st.score_keys(np.array([-1.0, -0.0, 0.0, 1e-300, 3.0]), "easy")
    assert k[0] < k[1] == k[2] < k[3] < k[4]
    assert (st.score_keys(np.array([-1.0, 0.0, 3.0]), "hard")[::-1] ==
            np.sort(st.score_keys(np.array([-1.0, 0.0, 3.0]), "hard"))).all()


def test_ssp_hard_easy_gather_no_scores_on_the_driver(cluster, data, tmp_path, monkeypatch):
    # with out_dir, the driver receives histograms and one bin's rows, never a score
    # per row: the threshold passes return at most SCORE_GATHER_ROWS rows in all
    import thrifty.distributed as tdm
    from thrifty.distributed._executor import RayExecutor

    x, shards = data
    monkeypatch.setattr(tdm, "SCORE_GATHER_ROWS", 50)
    got = {}
    real_map = RayExecutor.map

    def recording_map(self, fn, args, *, desc, **kw):
        out = real_map(self, fn, args, desc=desc, **kw)
        if fn.__name__ == "score_rows_task":
            got["rows"] = sum(o[1].size for o in out)
        if fn.__name__ == "score_hist_task":
            got["hist"] = got.get("hist", 0) + 1
        return out

    monkeypatch.setattr(RayExecutor, "map", recording_map)
    for i, prefer in enumerate(("hard", "easy")):
        res = td.ssp(shards["uneven"], keep_fraction=0.37, n_clusters=9, prefer=prefer,
                     seed=6, out_dir=str(tmp_path / f"o{i}"))
        s = tp.ssp(x, keep_fraction=0.37, n_clusters=9, prefer=prefer, seed=6)
        _same(res.load(), s)
        assert 0 < got["rows"] <= 50 and got["hist"] >= 2


def test_dbp_allocation_reports_progress_and_stops_on_an_error():
    # the driver's O(k^2 d) step: progress per centroid, and an exception from the
    # callback (as Ctrl-C) stops it and propagates
    from thrifty import _core

    rng = np.random.default_rng(0)
    k = 3000
    c = rng.normal(size=(k, 8)).astype(np.float32)
    intra = rng.random(k)
    sizes = np.full(k, 10, np.int64)
    params = {"keep_fraction": 0.5, "n_neighbors": 5, "temperature": 0.5, "balance": 0.5,
              "prefer": "hard", "dedup_eps": None, "seed": 0, "n_classes": None}
    seen = []
    counts, cx = _core.prune_dbp_counts(c, intra, sizes, k * 10, params,
                                        lambda d, t: seen.append((d, t)))
    assert seen and seen[-1] == (k, k)
    ref_counts, ref_cx = _core.prune_dbp_counts(c, intra, sizes, k * 10, params)
    assert np.array_equal(counts, ref_counts) and np.array_equal(cx, ref_cx)

    class Stop(Exception):
        pass

    def stop(d, t):
        raise Stop

    with pytest.raises(Stop):
        _core.prune_dbp_counts(c, intra, sizes, k * 10, params, stop)


def _kill_one(fault_dir, stage, deadline_s=60):
    deadline = time.monotonic() + deadline_s
    pids = []
    while not pids and time.monotonic() < deadline:
        pids = [p for p in glob.glob(str(fault_dir / f"pid-{stage}-*")) if not p.endswith(".tmp")]
        time.sleep(0.05)
    assert pids, f"no {stage} task started"
    os.kill(int(open(pids[0]).read()), signal.SIGKILL)


@pytest.mark.parametrize("retries", [0, 2])
def test_a_writer_killed_mid_shard_leaves_no_half_shard(cluster, data, tmp_path, retries):
    # the writer is killed after the first of a shard's five files: with retries the
    # output is complete and equal; without, the call fails and every shard directory
    # present holds all five files, whole, and there is no manifest
    x, shards = data
    paths = shards["uneven"]
    out = tmp_path / "out"
    hold = cluster / "hold-write"
    hold.write_text("")
    box = {}

    def go():
        try:
            box["r"] = td.semdedup(paths, eps=0.01, n_clusters=8, seed=1, out_dir=str(out),
                                   max_retries=retries)
        except BaseException as e:
            box["e"] = e

    t = threading.Thread(target=go)
    t.start()
    try:
        _kill_one(cluster, "write")
    finally:
        hold.unlink()
    t.join(120)
    for p in glob.glob(str(cluster / "pid-*")):
        os.unlink(p)
    _no_partial_files(str(out))
    rows = [np.load(p, mmap_mode="r").shape[0] for p in paths]
    if retries:
        assert "e" not in box, box.get("e")
        _check_out_dir(box["r"], tp.semdedup(x, eps=0.01, n_clusters=8, seed=1), paths, rows)
        return
    assert "e" in box
    assert not os.path.exists(out / "_manifest.json")
    for d in glob.glob(str(out / "part-*")):
        i = int(os.path.basename(d)[5:])
        assert sorted(os.listdir(d)) == ["cluster.npy", "duplicate_of.npy", "keep.npy",
                                         "score.npy", "similarity.npy"]
        for f in os.listdir(d):
            assert np.load(os.path.join(d, f)).shape[0] == rows[i]


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
        td.KMeans(3, init="random", partition_rows=4096).fit(paths)


def test_bad_parameters(cluster, data):
    _, shards = data
    with pytest.raises(thrifty.InvalidInputError, match="n_clusters"):
        td.semdedup(shards["one"], eps=0.1, n_clusters=10**6)
    with pytest.raises(thrifty.InvalidInputError, match="eps"):
        td.semdedup(shards["one"], eps=2.0)
    with pytest.raises(thrifty.InvalidInputError, match="multiple of 4096"):
        td.semdedup(shards["one"], eps=0.1, partition_rows=5000)
    with pytest.raises(thrifty.InvalidInputError, match="prefer"):
        td.ssp(shards["one"], keep_fraction=0.5, prefer="shuffled")
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


def test_gathering_a_sample_maps_one_window_of_a_shard_at_a_time(tmp_path):
    # the k-means sample touches rows all over a partition; the pages it maps count in
    # the worker's resident memory, so a shard is mapped one window at a time (peak
    # resident memory of a fresh process, from /proc)
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc")
    x = np.random.default_rng(0).normal(size=(131072, 256)).astype(np.float16)  # 64 MiB
    np.save(tmp_path / "x.npy", x)
    code = f"""
import numpy as np
from thrifty.distributed import _source
_source.GATHER_WINDOW_ROWS = 4096
src = _source.open_source({str(tmp_path / "x.npy")!r})
rows = np.arange(0, src.n, 16, dtype=np.int64)
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
out = np.empty((rows.size, src.d), np.float32)  # what gather returns, touched first
out[:] = 1
before = hwm()
got = src.gather(rows)
grew = hwm() - before
ref = np.load({str(tmp_path / "x.npy")!r}, mmap_mode="r")[rows].astype(np.float32)
assert np.array_equal(got, ref)
print(before, grew)
"""
    before, grew = map(int, subprocess.run([sys.executable, "-c", code], check=True,
                                           capture_output=True, text=True).stdout.split())
    # the sample (8 MiB as float32, 4 MiB as float16) and one window; mapping the
    # whole shard would add its 64 MiB
    assert grew < 24 << 20, grew


def test_the_kmeans_sample_comes_back_as_files(cluster, data, tmp_path, monkeypatch):
    # arrays returned by tasks live in Ray's shared-memory object store, resident in
    # the worker that wrote them and in the driver: the sample pieces go through the
    # work directory instead, read one at a time into the training array
    from thrifty.distributed._executor import RayExecutor

    x, shards = data
    got = {}
    real_map = RayExecutor.map

    def recording_map(self, fn, args, *, desc, **kw):
        out = real_map(self, fn, args, desc=desc, **kw)
        got.setdefault(desc, out)
        return out

    monkeypatch.setattr(RayExecutor, "map", recording_map)
    wd = tmp_path / "work"
    r = td.dbp(shards["uneven"], keep_fraction=0.5, n_clusters=10, seed=3, partition_rows=4096,
               work_dir=str(wd))
    _same(r, tp.dbp(x, keep_fraction=0.5, n_clusters=10, seed=3))
    pieces = got["k-means sample"]
    assert all(type(p) is int for p in pieces) and len(pieces) == 3
    assert sum(pieces) == min(x.shape[0], 256 * 10)
    assert not glob.glob(str(wd / "kmeans" / "sample-*"))
