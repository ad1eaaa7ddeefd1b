"""The algorithms, as pure and idempotent task functions (no Ray here).

Each takes a :class:`~thrifty.distributed._source.Source` (paths, no data), a global row
range or a bucket number, and small parameters; it reads what it needs itself, writes
its files with temp + rename, and returns a small summary. Re-running a task (a retry
after a worker died) rewrites the same files with the same bytes.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import numpy as np

from .. import _core
from .._errors import InvalidInputError
from ._executor import fault_point
from ._source import BLOCK_ROWS, Source, write_npy_atomic, write_npz_atomic


def aligned(a: np.ndarray) -> np.ndarray:
    """``a`` C-contiguous and aligned: arrays from the object store may arrive unaligned,
    which the core's zero-copy intake rejects."""
    return np.require(a, requirements=["C", "A"])


def kernel_family() -> dict[str, str]:
    """This process's float32 kernel family: AVX2 and AVX-512 give the same products;
    the scalar fallback (or another architecture) may differ in the last bit."""
    import platform

    from .._config import config

    c = config()
    simd = set(c.get("simd", []))
    arch = str(c.get("arch", platform.machine()))
    fam = "fma-simd" if {"AVX2", "FMA"} <= simd else ",".join(sorted(simd)) or "scalar"
    return {"node": platform.node(), "kernels": f"{arch}:{fam}"}


def chunk_sums(v: np.ndarray) -> list[float]:
    """Sequential float64 sum of every 4096-row chunk (the core's fixed inertia chunks)."""
    return [float(np.add.accumulate(v[c:c + BLOCK_ROWS])[-1]) for c in range(0, v.size, BLOCK_ROWS)]


def sequential_sum(v: list[float] | np.ndarray) -> float:
    """Left-to-right float64 sum (as Rust's ``Iterator::sum``)."""
    a = np.asarray(v, dtype=np.float64)
    return float(np.add.accumulate(a)[-1]) if a.size else 0.0


# The core's seeded random order (``prune::order_items`` with ``Order::Random``) sorts rows
# by ``Stream::new(seed).uniform(global id)``, ties by id. ``uniform`` is the top 32 bits
# of a SplitMix64 draw over 2^32, so the order is the integer order of
# ``(random_bits(id), id)``; the constants are those of ``quant::rng`` (SplitMix64's
# finaliser and the golden-ratio increment). A draw depends on ``(seed, id)`` only, so a
# row's place in the order does not depend on the sharding. The tests compare the kept
# rows with ``thrifty.prune.ssp(..., prefer="random")`` for several seeds.
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# the order's top bits split into this many histogram bins (the SSP threshold search)
RANDOM_BINS_SHIFT = 20
RANDOM_BINS = 1 << (32 - RANDOM_BINS_SHIFT)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, element-wise on uint64 (wrapping products)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def random_bits(ids: np.ndarray, seed: int) -> np.ndarray:
    """The 32 random bits that place each global row id in the core's seeded random
    order (uint32; the order is ``(bits, id)`` ascending)."""
    key = _mix(np.array([seed], dtype=np.uint64))
    i = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    return (_mix(key ^ ((i + np.uint64(1)) * _GOLDEN)) >> np.uint64(32)).astype(np.uint32)


def random_hist_task(start: int, stop: int, seed: int) -> np.ndarray:
    """Rows ``start:stop`` per bin of the top bits of their random order (int64
    counts, :data:`RANDOM_BINS` bins)."""
    fault_point("random")
    b = random_bits(np.arange(start, stop, dtype=np.int64), seed) >> RANDOM_BINS_SHIFT
    return np.bincount(b, minlength=RANDOM_BINS).astype(np.int64)


def random_bin_task(start: int, stop: int, seed: int, bin_: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(bits, ids)`` of the rows ``start:stop`` in histogram bin ``bin_``."""
    fault_point("random")
    ids = np.arange(start, stop, dtype=np.int64)
    b = random_bits(ids, seed)
    sel = (b >> RANDOM_BINS_SHIFT) == bin_
    return b[sel], ids[sel]


def random_keep_task(start: int, stop: int, seed: int, last_bits: int, last_id: int
                     ) -> np.ndarray:
    """Keep mask of rows ``start:stop``: those at or before ``(last_bits, last_id)`` in
    the random order."""
    fault_point("random")
    ids = np.arange(start, stop, dtype=np.int64)
    b = random_bits(ids, seed).astype(np.int64)
    return (b < last_bits) | ((b == last_bits) & (ids <= last_id))


def gather_task(source: Source, rows: np.ndarray) -> np.ndarray:
    """The float32 rows at sorted global indices ``rows`` (a part of the k-means sample)."""
    fault_point("gather")
    return source.gather(rows)


def _check_nonzero(x: np.ndarray, source: Source, start: int) -> None:
    z = ~x.any(axis=1)
    if z.any():
        g = start + int(np.flatnonzero(z)[0])
        shard, r = source.shard_of(g)
        raise InvalidInputError(f"{shard.path}: row {r} is an all-zero vector, which has no "
                                "direction for cosine clustering")


def assign_task(source: Source, part: int, start: int, stop: int, centroids: np.ndarray,
                spherical: bool, unit_rows: bool, labels: np.ndarray | None,
                out_dir: str, n_buckets: int) -> list[float]:
    """Nearest centroid of rows ``start:stop``; writes ``labels/part-<p>.npy`` and, with
    ``n_buckets > 0``, each bucket's rows ``bucket-<b>/part-<p>.npz`` (global id, label,
    row in the input dtype). Returns the float64 distance sums of its 4096-row chunks."""
    fault_point("assign")
    x = source.read(start, stop)
    if spherical:
        _check_nonzero(x, source, start)
    if labels is None:
        lab, dist = _core.cluster_kmeans_assign(x, aligned(centroids), spherical, None, unit_rows)
        sums = chunk_sums(dist)
    else:
        lab, sums = np.ascontiguousarray(labels[start:stop], dtype=np.int64), []
    write_npy_atomic(os.path.join(out_dir, "labels", f"part-{part:06d}.npy"), lab)
    if n_buckets:
        ids = np.arange(start, stop, dtype=np.int64)
        raw = x.astype(np.dtype(source.dtype))  # exact: the rows came from this dtype
        b = lab % n_buckets
        for bucket in np.unique(b).tolist():
            sel = b == bucket
            d = os.path.join(out_dir, f"bucket-{bucket:05d}")
            os.makedirs(d, exist_ok=True)
            write_npz_atomic(os.path.join(d, f"part-{part:06d}.npz"), ids=ids[sel],
                             labels=lab[sel], x=raw[sel])
    return sums


def _load_bucket(assign_dir: str, bucket: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bucket's rows sorted by (cluster, global id)."""
    files = sorted(glob.glob(os.path.join(assign_dir, f"bucket-{bucket:05d}", "part-*.npz")))
    ids, lab, xs = [], [], []
    for f in files:
        with np.load(f) as z:
            ids.append(z["ids"])
            lab.append(z["labels"])
            xs.append(z["x"])
    if not files:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    i, lb, x = np.concatenate(ids), np.concatenate(lab), np.concatenate(xs)
    order = np.lexsort((i, lb))
    return i[order], lb[order], x[order]


def _clusters(lab: np.ndarray) -> list[tuple[int, int, int]]:
    """``(cluster, first, end)`` of each run of equal labels in sorted ``lab``."""
    if lab.size == 0:
        return []
    cut = np.flatnonzero(np.diff(lab)) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [lab.size]])
    return [(int(lab[a]), int(a), int(e)) for a, e in zip(starts, ends)]


def cluster_task(assign_dir: str, bucket: int, centroids: np.ndarray, method: str,
                 params: dict[str, Any], out_path: str) -> dict[str, list[Any]]:
    """The per-cluster pass over one bucket: SemDeDup (semdedup, dbp with ``dedup_eps``)
    and the cosine distance of every row to its centroid, each cluster's rows in
    ascending global id exactly as one process orders them. Writes ``out_path`` (ids,
    duplicate_of as global ids, similarity, score); returns per-cluster surviving sizes
    and mean scores (summed in id order) for the DBP allocation."""
    fault_point("clusters")
    ids, lab, x = _load_bucket(assign_dir, bucket)
    centroids = aligned(centroids)
    dup = np.full(ids.size, -1, np.int64)
    sim = np.full(ids.size, np.nan, np.float32)
    score = np.zeros(ids.size, np.float64)
    stats: dict[str, list[Any]] = {"cluster": [], "size": [], "intra": []}
    seed = params["seed"]
    for j, a, e in _clusters(lab):
        xj = np.ascontiguousarray(x[a:e], dtype=np.float32)
        gj = np.ascontiguousarray(ids[a:e])
        zeros = np.zeros(e - a, np.int64)
        cj = np.ascontiguousarray(centroids[j:j + 1])
        if method == "semdedup" or (method == "dbp" and params.get("dedup_eps") is not None):
            opts = ({"eps": params["eps"], "prefer": params["prefer"], "seed": seed}
                    if method == "semdedup" else
                    {"eps": params["dedup_eps"], "prefer": "hard", "seed": seed})
            _, d, s, sc, _, _, _ = _core.prune_run("semdedup", xj, zeros, cj, opts, None, gj)
            dup[a:e] = np.where(d >= 0, gj[np.maximum(d, 0)], -1)
            sim[a:e] = s
        else:
            _, _, _, sc, _, _, _ = _core.prune_run(
                "ssp", xj, zeros, cj,
                {"keep_fraction": 1.0, "prefer": "hard", "n_classes": None, "seed": seed},
                None, gj)
        score[a:e] = sc
        alive = sc[dup[a:e] < 0]
        stats["cluster"].append(j)
        stats["size"].append(int(alive.size))
        stats["intra"].append(sequential_sum(alive) / alive.size if alive.size else float("nan"))
    write_npz_atomic(out_path, ids=ids, duplicate_of=dup, similarity=sim, score=score)
    return stats


def select_task(assign_dir: str, bucket: int, cluster_file: str, centroids: np.ndarray,
                counts: np.ndarray, prefer: str, seed: int, out_path: str) -> int:
    """DBP's per-cluster choice: the ``counts[j]`` surviving members the resolved order
    ``prefer`` ("hard", "easy" or "random": "auto" is resolved over the whole input by
    the driver) puts first (ties and seeded draws by global id). Writes the kept global
    ids to ``out_path``."""
    fault_point("select")
    ids, lab, x = _load_bucket(assign_dir, bucket)
    centroids, counts = aligned(centroids), aligned(counts)
    with np.load(cluster_file) as z:
        if not np.array_equal(z["ids"], ids):
            raise InvalidInputError(f"{cluster_file} does not match its bucket; rerun "
                                    "without resume")
        alive = z["duplicate_of"] < 0
    kept = []
    for j, a, e in _clusters(lab):
        c = int(counts[j])
        if c == 0:
            continue
        m = alive[a:e]
        xj = np.ascontiguousarray(x[a:e][m], dtype=np.float32)
        gj = np.ascontiguousarray(ids[a:e][m])
        k, *_ = _core.prune_run("select", xj, np.zeros(gj.size, np.int64),
                            np.ascontiguousarray(centroids[j:j + 1]),
                            {"count": c, "prefer": prefer, "seed": seed}, None, gj)
        kept.append(gj[k])
    out = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    write_npy_atomic(out_path, out)
    return int(out.size)


def topk_task(source: Source, start: int, stop: int, queries: np.ndarray, k: int,
              metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of every query among rows ``start:stop`` (global indices)."""
    fault_point("topk")
    x = source.read(start, stop, check_finite=False)
    s, i = _core.neighbors_topk(aligned(queries), x, min(k, stop - start), metric, None)
    return s, i + start


def text_knn_task(queries: list[bytes], refs: list[bytes], lens: np.ndarray, start: int,
                  k: int, compressor: str, level: int | None, distance: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Compression-distance top-k of every query among reference texts ``refs`` (global
    indices from ``start``)."""
    fault_point("text_knn")
    ind, dist = _core.text_kneighbors(queries, refs, aligned(lens), min(k, len(refs)), compressor,
                                      level, distance, None)
    return dist, ind + start
