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
from ._source import BLOCK_ROWS, Source, write_dir_atomic, write_npy_atomic, write_npz_atomic


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
# by 32 random bits drawn from ``(seed, global id)``, ties by id; ``random_bits`` asks the
# core for those bits (``prune::random_keys``), so the order is the integer order of
# ``(random_bits(id), id)``. A draw depends on ``(seed, id)`` only, so a row's place in
# the order does not depend on the sharding. The tests compare the kept rows with
# ``thrifty.prune.ssp(..., prefer="random")`` for several seeds.
# the order's top bits split into this many histogram bins (the SSP threshold search)
RANDOM_BINS_SHIFT = 20
RANDOM_BINS = 1 << (32 - RANDOM_BINS_SHIFT)


def random_bits(ids: np.ndarray, seed: int) -> np.ndarray:
    """The 32 random bits that place each global row id in the core's seeded random
    order (uint32; the order is ``(bits, id)`` ascending)."""
    return _core.prune_random_keys(np.ascontiguousarray(ids, dtype=np.int64), int(seed))


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


# SSP with prefer="hard" / "easy" keeps the first rows of the global order of the
# per-row scores (hard: larger first, easy: smaller first; ties by lower id). The
# threshold row is found without gathering the scores: ``score_keys`` maps each score to
# a uint64 whose integer order is that order (``-0.0`` counted as ``0.0``, as the
# comparisons of ``_keep_by_rule`` do), so the order is the integer order of the
# 128-bit ``(key, id)``; histogram passes over its 16-bit digits narrow it down.
SCORE_DIGIT_BITS = 16
SCORE_DIGITS = 128 // SCORE_DIGIT_BITS


def score_keys(score: np.ndarray, prefer: str) -> np.ndarray:
    """uint64 keys whose ascending order is SSP's ``prefer`` order of ``score``."""
    b = (np.asarray(score, dtype=np.float64) + 0.0).view(np.uint64)  # -0.0 + 0.0 = 0.0
    k = np.where(b >> np.uint64(63) != 0, ~b, b | np.uint64(1 << 63))
    return ~k if prefer == "hard" else k


def _score_digit(keys: np.ndarray, ids: np.ndarray, t: int) -> np.ndarray:
    """Digit ``t`` (most significant first) of the 128-bit ``(key, id)``."""
    word, shift = (keys, 48 - 16 * t) if t < 4 else (ids.astype(np.uint64), 48 - 16 * (t - 4))
    return ((word >> np.uint64(shift)) & np.uint64(0xFFFF)).astype(np.int64)


def _score_rows(cluster_file: str, prefer: str, prefix: list[int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(keys, ids, scores)`` of the rows of a bucket whose first digits are ``prefix``."""
    with np.load(cluster_file) as z:
        ids, score = z["ids"], z["score"]
    keys = score_keys(score, prefer)
    sel = np.ones(ids.size, bool)
    for t, v in enumerate(prefix):
        sel &= _score_digit(keys, ids, t) == v
    return keys[sel], ids[sel], score[sel]


def score_hist_task(cluster_file: str, prefer: str, prefix: list[int]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Among a bucket's rows whose ``(key, id)`` starts with the digits ``prefix``: the
    counts per value of the next digit, as ``(digit values, counts)``."""
    fault_point("ssp")
    keys, ids, _ = _score_rows(cluster_file, prefer, prefix)
    return np.unique(_score_digit(keys, ids, len(prefix)), return_counts=True)


def score_rows_task(cluster_file: str, prefer: str, prefix: list[int]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(keys, ids, scores)`` of a bucket's rows whose ``(key, id)`` starts with
    ``prefix`` (the few rows of the threshold's histogram bin)."""
    fault_point("ssp")
    return _score_rows(cluster_file, prefer, prefix)


def gather_task(source: Source, rows: np.ndarray, out_path: str | None = None
                ) -> np.ndarray | int:
    """The float32 rows at sorted global indices ``rows`` (a part of the k-means sample);
    with ``out_path``, written there (``.npy``) and their number returned instead: a
    returned array would live in Ray's shared-memory object store, in the resident
    memory of the worker that wrote it and of the driver that reads it."""
    fault_point("gather")
    x = source.gather(rows)
    if out_path is None:
        return x
    write_npy_atomic(out_path, x)
    return int(x.shape[0])


def _check_nonzero(x: np.ndarray, source: Source, start: int) -> None:
    z = ~x.any(axis=1)
    if z.any():
        g = start + int(np.flatnonzero(z)[0])
        shard, r = source.shard_of(g)
        raise InvalidInputError(f"{shard.path}: row {r} is an all-zero vector, which has no "
                                "direction for cosine clustering")


#: rows per block of the streaming assignment pass (a task holds one block in float32)
ASSIGN_BLOCK_ROWS = 16384
#: bytes of bucket rows an assignment task buffers before appending them to its files
BUCKET_BUFFER_BYTES = 32 << 20


def assign_task(source: Source, part: int, start: int, stop: int, centroids: np.ndarray,
                spherical: bool, unit_rows: bool, labels: np.ndarray | None,
                out_dir: str, n_buckets: int, block_rows: int = ASSIGN_BLOCK_ROWS,
                buffer_bytes: int = BUCKET_BUFFER_BYTES) -> list[float]:
    """Nearest centroid of rows ``start:stop``; writes ``labels/part-<p>.npy`` and, with
    ``n_buckets > 0``, each bucket's rows (see :class:`_BucketWriter`). Returns the
    float64 distance sums of its 4096-row chunks.

    The rows stream through in blocks of ``block_rows`` (read in the input dtype,
    converted to float32, assigned: a row's label and distance depend on that row
    only), and each block's rows go to the buffers of their buckets in the input dtype,
    so the task holds one block, the buffers (``buffer_bytes``) and ~32 bytes per row of
    the partition (labels, distances, ids), never the partition's rows."""
    fault_point("assign")
    n = stop - start
    lab = np.empty(n, np.int64)
    dist = np.empty(n if labels is None else 0, np.float64)
    c32 = aligned(centroids) if labels is None else np.zeros((0, 0), np.float32)
    writer = (_BucketWriter(out_dir, part, n_buckets, source.dtype, source.d, buffer_bytes)
              if n_buckets else None)
    try:
        for a, raw in source.iter_blocks(start, stop, block_rows):
            r0, r1 = a - start, a - start + raw.shape[0]
            if labels is None:
                x = np.ascontiguousarray(raw, dtype=np.float32)
                if spherical:
                    _check_nonzero(x, source, a)
                lab[r0:r1], dist[r0:r1] = _core.cluster_kmeans_assign(x, c32, spherical, None,
                                                                      unit_rows)
                del x
            else:
                if spherical:
                    _check_nonzero(raw, source, a)
                lab[r0:r1] = labels[a:a + raw.shape[0]]
            if writer is not None:
                writer.add(a, lab[r0:r1], raw)
        write_npy_atomic(os.path.join(out_dir, "labels", f"part-{part:06d}.npy"), lab)
        if writer is not None:
            writer.finish()
    finally:
        if writer is not None:
            writer.discard()
    return chunk_sums(dist) if labels is None else []


class _BucketWriter:
    """The shuffle files of one partition: for every bucket ``B`` that receives rows,
    ``bucket-B/part-P.rows`` (the rows, in the input dtype, raw C-order bytes, ascending
    global id) and then ``bucket-B/part-P.npz`` (their global ids and labels, the row
    count, dtype and width). Rows are buffered per bucket up to ``budget`` bytes in all,
    then appended to temporary files; :meth:`finish` renames each file into place."""

    def __init__(self, out_dir: str, part: int, n_buckets: int, dtype: str, d: int,
                 budget: int) -> None:
        self.out_dir, self.part, self.n_buckets = out_dir, part, n_buckets
        self.dtype, self.d, self.budget = np.dtype(dtype), d, budget
        self.rows: dict[int, list[np.ndarray]] = {}
        self.ids: dict[int, list[np.ndarray]] = {}
        self.labels: dict[int, list[np.ndarray]] = {}
        self.tmp: dict[int, str] = {}
        self.buffered = 0

    def path(self, bucket: int, ext: str) -> str:
        return os.path.join(self.out_dir, f"bucket-{bucket:05d}", f"part-{self.part:06d}.{ext}")

    def add(self, first: int, lab: np.ndarray, raw: np.ndarray) -> None:
        """The block of rows ``first : first + len(lab)`` with their labels."""
        b = lab % self.n_buckets
        order = np.argsort(b, kind="stable")  # ascending id within each bucket
        cuts = np.flatnonzero(np.diff(b[order])) + 1
        for sel in np.split(order, cuts):
            if not sel.size:
                continue
            bucket = int(b[sel[0]])
            self.rows.setdefault(bucket, []).append(raw[sel])
            self.ids.setdefault(bucket, []).append(first + sel.astype(np.int64))
            self.labels.setdefault(bucket, []).append(lab[sel])
        self.buffered += raw.nbytes
        if self.buffered > self.budget:
            self.flush()

    def flush(self) -> None:
        for bucket, arrs in self.rows.items():
            if bucket not in self.tmp:
                final = self.path(bucket, "rows")
                os.makedirs(os.path.dirname(final), exist_ok=True)
                self.tmp[bucket] = f"{final}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
            with open(self.tmp[bucket], "ab") as f:
                for a in arrs:
                    f.write(np.ascontiguousarray(a).data)
        self.rows.clear()
        self.buffered = 0

    def finish(self) -> None:
        self.flush()
        for bucket, tmp in sorted(self.tmp.items()):
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path(bucket, "rows"))
            ids = np.concatenate(self.ids[bucket])
            write_npz_atomic(self.path(bucket, "npz"), ids=ids,
                             labels=np.concatenate(self.labels[bucket]),
                             rows=np.array(ids.size, np.int64),
                             d=np.array(self.d, np.int64),
                             dtype=np.array(self.dtype.str))
        self.tmp.clear()

    def discard(self) -> None:
        """Remove the temporary files of an unfinished writer (a failed task)."""
        for tmp in self.tmp.values():
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.tmp.clear()


def _load_bucket(assign_dir: str, bucket: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bucket's rows sorted by (cluster, global id), in the input dtype.

    The ids and labels of every partition's piece give the sorted order first; the
    rows are then read piece by piece into their sorted places of one preallocated
    array, so the task holds the bucket's rows once plus one piece."""
    files = sorted(glob.glob(os.path.join(assign_dir, f"bucket-{bucket:05d}", "part-*.npz")))
    if not files:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    ids, lab, meta = [], [], []
    for f in files:
        with np.load(f) as z:
            ids.append(z["ids"])
            lab.append(z["labels"])
            meta.append((int(z["rows"]), int(z["d"]), np.dtype(str(z["dtype"]))))
    i, lb = np.concatenate(ids), np.concatenate(lab)
    del ids, lab
    order = np.lexsort((i, lb))
    where = np.empty_like(order)
    where[order] = np.arange(order.size)
    d, dtype = meta[0][1], meta[0][2]
    x = np.empty((i.size, d), dtype)
    at = 0
    for f, (m, _, _) in zip(files, meta):
        path = f[:-len(".npz")] + ".rows"
        rows = np.fromfile(path, dtype=dtype)
        if rows.size != m * d:
            raise InvalidInputError(f"{path}: holds {rows.size} values, expected {m} rows of "
                                    f"{d}; the work directory is damaged, rerun without resume")
        x[where[at:at + m]] = rows.reshape(m, d)
        at += m
        del rows
    return i[order], lb[order], x


def _clusters(lab: np.ndarray) -> list[tuple[int, int, int]]:
    """``(cluster, first, end)`` of each run of equal labels in sorted ``lab``."""
    if lab.size == 0:
        return []
    cut = np.flatnonzero(np.diff(lab)) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [lab.size]])
    return [(int(lab[a]), int(a), int(e)) for a, e in zip(starts, ends)]


def _dedup_opts(method: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """The core's SemDeDup options of the per-cluster pass, None when it does not run."""
    if method == "semdedup":
        return {"eps": params["eps"], "prefer": params["prefer"], "seed": params["seed"]}
    if method == "dbp" and params.get("dedup_eps") is not None:
        return {"eps": params["dedup_eps"], "prefer": "hard", "seed": params["seed"]}
    return None


def _block_path(big_dir: str, cluster: int, block: int) -> str:
    return os.path.join(big_dir, f"cluster-{cluster:07d}", f"block-{block:05d}.npz")


def pair_path(big_dir: str, cluster: int, i: int, k: int) -> str:
    return os.path.join(big_dir, f"cluster-{cluster:07d}", f"pair-{i:05d}-{k:05d}.npz")


def n_blocks(m: int, block_rows: int) -> int:
    return -(-m // block_rows)


def cluster_task(assign_dir: str, bucket: int, centroids: np.ndarray, method: str,
                 params: dict[str, Any], out_path: str, block_rows: int | None = None,
                 big_dir: str | None = None) -> dict[str, list[Any]]:
    """The per-cluster pass over one bucket: SemDeDup (semdedup, dbp with ``dedup_eps``)
    and the cosine distance of every row to its centroid, each cluster's rows in
    ascending global id exactly as one process orders them. Writes ``out_path`` (ids,
    duplicate_of as global ids, similarity, score); returns per-cluster surviving sizes
    and mean scores (summed in id order) for the DBP allocation.

    A cluster of more than ``block_rows`` rows that needs SemDeDup is not deduplicated
    here: its rows go to block files in ``big_dir`` (``block_rows`` rows each, ascending
    id) for :func:`pair_task`, and the bucket's rows are written to
    ``<out_path>-pending.npz`` (with labels) for :func:`finalize_task`, which writes
    ``out_path``. Such clusters are listed under ``"big"`` as ``[cluster, rows]``."""
    fault_point("clusters")
    ids, lab, x = _load_bucket(assign_dir, bucket)
    centroids = aligned(centroids)
    dup = np.full(ids.size, -1, np.int64)
    sim = np.full(ids.size, np.nan, np.float32)
    score = np.zeros(ids.size, np.float64)
    stats: dict[str, list[Any]] = {"cluster": [], "size": [], "intra": [], "big": []}
    seed = params["seed"]
    opts = _dedup_opts(method, params)
    for j, a, e in _clusters(lab):
        xj = np.ascontiguousarray(x[a:e], dtype=np.float32)
        gj = np.ascontiguousarray(ids[a:e])
        zeros = np.zeros(e - a, np.int64)
        cj = np.ascontiguousarray(centroids[j:j + 1])
        if opts is not None and block_rows is not None and e - a > block_rows:
            _, _, _, sc, _, _, _ = _core.prune_run(
                "ssp", xj, zeros, cj,
                {"keep_fraction": 1.0, "prefer": "hard", "n_classes": None, "seed": seed},
                None, gj)
            score[a:e] = sc
            assert big_dir is not None
            for i, r0 in enumerate(range(a, e, block_rows)):
                r1 = min(r0 + block_rows, e)
                write_npz_atomic(_block_path(big_dir, j, i), ids=ids[r0:r1], x=x[r0:r1])
            stats["big"].append([j, e - a])
            continue
        if opts is not None:
            _, d, s, sc, _, _, _ = _core.prune_run("semdedup", xj, zeros, cj, opts, None, gj)
            dup[a:e] = np.where(d >= 0, gj[np.maximum(d, 0)], -1)
            sim[a:e] = s
        else:
            _, _, _, sc, _, _, _ = _core.prune_run(
                "ssp", xj, zeros, cj,
                {"keep_fraction": 1.0, "prefer": "hard", "n_classes": None, "seed": seed},
                None, gj)
        score[a:e] = sc
        _cluster_stats(stats, j, sc[dup[a:e] < 0])
    if stats["big"]:
        write_npz_atomic(pending_path(out_path), ids=ids, labels=lab, duplicate_of=dup,
                         similarity=sim, score=score)
    else:
        write_npz_atomic(out_path, ids=ids, duplicate_of=dup, similarity=sim, score=score)
    return stats


def pending_path(out_path: str) -> str:
    return out_path[:-len(".npz")] + "-pending.npz"


def _cluster_stats(stats: dict[str, list[Any]], j: int, alive: np.ndarray) -> None:
    """A cluster's surviving size and mean distance (summed left to right in id order)."""
    stats["cluster"].append(j)
    stats["size"].append(int(alive.size))
    stats["intra"].append(sequential_sum(alive) / alive.size if alive.size else float("nan"))


def pair_task(big_dir: str, cluster: int, i: int, k: int, centroid: np.ndarray,
              opts: dict[str, Any]) -> int:
    """SemDeDup of the rows of blocks ``i < k`` of a big cluster, together.

    Every row's best earlier row (in the cluster's order) lies in its own block or in
    another one, so over the pairs that hold its block it meets every earlier row of the
    cluster. The core orders the two blocks' rows as it orders the whole cluster (by
    score or seeded draw of the global id, ties by id) and computes each product entry
    the same way wherever it sits in a GEMM, so each pair gives, per row, the exact best
    over its part: ``pair-i-k.npz`` (similarity, duplicate_of as a global id or -1)."""
    fault_point("blocks")
    xs, gs = [], []
    for b in (i, k):
        with np.load(_block_path(big_dir, cluster, b)) as z:
            gs.append(z["ids"])
            xs.append(z["x"])
    g = np.concatenate(gs)
    x = np.ascontiguousarray(np.concatenate(xs), dtype=np.float32)
    _, d, s, _, _, _, _ = _core.prune_run("semdedup", x, np.zeros(g.size, np.int64),
                                          aligned(centroid), opts, None, g)
    write_npz_atomic(pair_path(big_dir, cluster, i, k), similarity=s,
                     duplicate_of=np.where(d >= 0, g[np.maximum(d, 0)], -1))
    return int(g.size)


def finalize_task(out_path: str, big_dir: str, big: list[list[int]], block_rows: int
                  ) -> dict[str, list[Any]]:
    """Merge the pair results of a bucket's big clusters into its rows and write
    ``out_path``; returns their per-cluster statistics as :func:`cluster_task` does.

    Per row: the largest similarity over the pairs (NaN, "no earlier row", only when all
    are NaN); among pairs with that similarity the lowest duplicate id, as the core
    breaks ties by index. A row is a duplicate in a pair exactly when that similarity
    exceeds ``1 - eps``, so equal similarities agree on whether it is one."""
    fault_point("finalize")
    with np.load(pending_path(out_path)) as z:
        ids, lab = z["ids"], z["labels"]
        dup, sim, score = z["duplicate_of"], z["similarity"], z["score"]
    stats: dict[str, list[Any]] = {"cluster": [], "size": [], "intra": []}
    where = {j: (a, e) for j, a, e in _clusters(lab)}
    for j, m in big:
        a, e = where[j]
        if e - a != m:
            raise InvalidInputError(f"{out_path}: cluster {j} changed size; rerun without "
                                    "resume")
        best = np.full(m, np.nan, np.float32)
        who = np.full(m, -1, np.int64)
        nb = n_blocks(m, block_rows)
        for i in range(nb):
            for k in range(i + 1, nb):
                pos = np.concatenate([np.arange(i * block_rows, min((i + 1) * block_rows, m)),
                                      np.arange(k * block_rows, min((k + 1) * block_rows, m))])
                with np.load(pair_path(big_dir, j, i, k)) as z:
                    s, d = z["similarity"], z["duplicate_of"]
                cur, cw = best[pos], who[pos]
                better = (s > cur) | (np.isnan(cur) & ~np.isnan(s))
                tie = s == cur
                best[pos] = np.where(better, s, cur)
                who[pos] = np.where(better, d, np.where(tie, np.minimum(cw, d), cw))
        dup[a:e], sim[a:e] = who, best
        _cluster_stats(stats, j, score[a:e][who < 0])
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
        rows = a + np.flatnonzero(alive[a:e])
        xj = x[rows].astype(np.float32)
        gj = ids[rows]
        k, *_ = _core.prune_run("select", xj, np.zeros(gj.size, np.int64),
                            np.ascontiguousarray(centroids[j:j + 1]),
                            {"count": c, "prefer": prefer, "seed": seed}, None, gj)
        kept.append(gj[k])
    out = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    write_npy_atomic(out_path, out)
    return int(out.size)


def _keep_by_rule(rule: tuple[Any, ...], ids: np.ndarray, dup: np.ndarray,
                  score: np.ndarray) -> np.ndarray:
    """The keep mask of rows ``ids`` under a rule the driver chose once for the whole
    input: ``("dup",)`` (SemDeDup: not a duplicate), ``("ids", path)`` (DBP: the kept ids
    in a file), ``("hard" | "easy", score, id)`` (SSP: at or before that row in the
    score order, ties by id), ``("random", seed, bits, id)`` (SSP: at or before that
    row in the seeded order)."""
    kind = rule[0]
    if kind == "dup":
        return dup < 0
    if kind == "ids":
        return np.isin(ids, np.load(rule[1]))
    if kind == "random":
        _, seed, b_last, i_last = rule
        b = random_bits(ids, seed).astype(np.int64)
        return (b < b_last) | ((b == b_last) & (ids <= i_last))
    s_last, i_last = rule[1], rule[2]
    first = score > s_last if kind == "hard" else score < s_last
    return first | ((score == s_last) & (ids <= i_last))


def scatter_task(cluster_file: str, bucket: int, starts: np.ndarray, rule: tuple[Any, ...],
                 out_root: str) -> int:
    """One bucket's per-row results, split by the partition of each row:
    ``part-P/bucket-B.npz`` (ids, duplicate_of, similarity, score, keep) for the writers
    of :func:`write_shard_task`. Returns the rows written."""
    fault_point("scatter")
    with np.load(cluster_file) as z:
        ids, dup, sim, score = z["ids"], z["duplicate_of"], z["similarity"], z["score"]
    keep = _keep_by_rule(rule, ids, dup, score)
    p = np.searchsorted(starts, ids, side="right") - 1
    order = np.argsort(p, kind="stable")
    cuts = np.flatnonzero(np.diff(p[order])) + 1
    for sel in np.split(order, cuts):
        if sel.size:
            write_npz_atomic(os.path.join(out_root, f"part-{int(p[sel[0]]):06d}",
                                          f"bucket-{bucket:05d}.npz"),
                             ids=ids[sel], duplicate_of=dup[sel], similarity=sim[sel],
                             score=score[sel], keep=keep[sel])
    return int(ids.size)


def write_labels_task(out_path: str, start: int, stop: int, parts: list[tuple[int, int, int]],
                      labels_dir: str) -> None:
    """The labels of global rows ``start:stop`` (one input shard), from the partitions
    ``(P, first, end)`` that overlap it, written as one ``.npy`` (temp + rename)."""
    fault_point("labels")
    lab = np.empty(stop - start, np.int64)
    for part, a, b in parts:
        lo, hi = max(a, start), min(b, stop)
        src = np.load(os.path.join(labels_dir, f"part-{part:06d}.npy"), mmap_mode="r")
        lab[lo - start:hi - start] = src[lo - a:hi - a]
    write_npy_atomic(out_path, lab)


def write_shard_task(out_path: str, start: int, stop: int, parts: list[tuple[int, int, int]],
                     labels_dir: str, scatter_root: str, k: int) -> dict[str, Any]:
    """The results of global rows ``start:stop`` (one input shard) from the partitions
    ``(P, first, end)`` that overlap it, written as one directory of ``.npy`` files
    (keep, duplicate_of, similarity, score, cluster), all or nothing. Returns the kept
    and duplicate counts, and the kept rows and all rows per cluster."""
    fault_point("shards")
    n = stop - start
    cluster = np.full(n, -1, np.int64)
    dup = np.full(n, -1, np.int64)
    sim = np.full(n, np.nan, np.float32)
    score = np.zeros(n, np.float64)
    keep = np.zeros(n, bool)
    seen = 0
    for part, a, b in parts:
        lo, hi = max(a, start), min(b, stop)
        lab = np.load(os.path.join(labels_dir, f"part-{part:06d}.npy"))
        cluster[lo - start:hi - start] = lab[lo - a:hi - a]
        for f in sorted(glob.glob(os.path.join(scatter_root, f"part-{part:06d}", "*.npz"))):
            with np.load(f) as z:
                ids = z["ids"]
                sel = (ids >= lo) & (ids < hi)
                r = ids[sel] - start
                dup[r], sim[r] = z["duplicate_of"][sel], z["similarity"][sel]
                score[r], keep[r] = z["score"][sel], z["keep"][sel]
                seen += int(r.size)
    if seen != n:
        raise InvalidInputError(f"{out_path}: found results for {seen} of {n} rows; the work "
                                "directory is incomplete, rerun without resume")
    write_dir_atomic(out_path, keep=keep, duplicate_of=dup, similarity=sim, score=score,
                     cluster=cluster)
    return {"kept": int(keep.sum()), "duplicates": int((dup >= 0).sum()),
            "keep_per_cluster": np.bincount(cluster[keep], minlength=k).astype(np.int64),
            "size_per_cluster": np.bincount(cluster[cluster >= 0], minlength=k).astype(np.int64)}


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
