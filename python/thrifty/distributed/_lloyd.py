"""Full-data k-means on Ray workers, bit for bit the single-process result.

When :class:`thrifty.cluster.KMeans` trains on every row (no subsampling), the core sums
each Lloyd iteration's members per fixed super-chunk of ``SUPER_CHUNK`` (2^20) global
rows, in row order from zero, and combines the super-chunk partials by a fixed aligned
binary tree (``rust/core/src/cluster.rs``: ``SUPER_CHUNK``, ``Tree``); the mean variance
behind ``tol`` is summed the same way. Here every super-chunk is one Ray task that
streams its rows from the shards block by block through the same core functions
(``lloyd_block``, ``feature_sums_block``, ``sq_deviations_block``), the tree's inner
nodes are Ray tasks running the core's node (``add_into``), and the driver receives the
root only: ``k x d`` float64 sums and ``k`` counts. Empty clusters take the farthest
rows, found by a second pass (each task's ``e`` farthest rows by the core, merged in the
same tree: distance descending, then lower global row), and the core's ``lloyd_update``
re-seeds, divides, normalises and returns the shift, as in one process.

Nothing per row reaches the driver; a task holds the ``k x d`` sums and one block of
rows (about 16 MiB of float32, at least 4096 rows).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .. import _core
from .._errors import InvalidInputError
from .._progress import progress_callback
from ._executor import fault_point
from ._source import BLOCK_ROWS, Source
from ._stages import _check_nonzero, aligned, gather_task

__all__ = ["SUPER_CHUNK", "fit_every_row", "super_chunks"]

#: Rows per super-chunk of the core's order-dependent Lloyd sums (a constant).
SUPER_CHUNK: int = _core.cluster_kmeans_super_chunk()

#: A task reads about this many bytes of float32 rows at a time.
_BLOCK_BYTES = 16 << 20


def super_chunks(n: int) -> list[tuple[int, int]]:
    """The global row ranges of the super-chunks of ``n`` rows."""
    return [(a, min(a + SUPER_CHUNK, n)) for a in range(0, n, SUPER_CHUNK)]


def _blocks(source: Source, start: int, stop: int, spherical: bool):
    """Rows ``start:stop`` as float32 blocks ``(first row, rows)``, in order (NaN rows
    and, when spherical, all-zero rows raise naming their shard)."""
    step = max(BLOCK_ROWS, _BLOCK_BYTES // (4 * max(1, source.d)) // BLOCK_ROWS * BLOCK_ROWS)
    for a in range(start, stop, step):
        x = source.read(a, min(a + step, stop))
        if spherical:
            _check_nonzero(x, source, a)
        yield a, x


# -- tasks (pure; no Ray) ---------------------------------------------------------------

def lloyd_task(source: Source, start: int, stop: int, centroids: np.ndarray,
               spherical: bool) -> tuple[np.ndarray, np.ndarray]:
    """One super-chunk's partial of a Lloyd iteration: the float64 member sums ``(k,
    d)`` and counts ``(k,)`` of rows ``start:stop`` assigned to ``centroids``."""
    fault_point("kmeans")
    c = aligned(centroids)
    k, d = c.shape
    sums = np.zeros((k, d), np.float64)
    counts = np.zeros(k, np.int64)
    for _, x in _blocks(source, start, stop, spherical):
        _core.cluster_kmeans_lloyd_block(x, c, spherical, sums, counts)
    return sums, counts


def add_partials(left: tuple[np.ndarray, np.ndarray], right: tuple[np.ndarray, np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A tree node: ``left + right`` (the core's node for the sums; counts are exact)."""
    sums = np.array(left[0], dtype=np.float64, order="C")  # object-store arrays are read-only
    _core.cluster_tree_add(sums, aligned(right[0]))
    return sums, np.asarray(left[1]) + np.asarray(right[1])


def add_arrays(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """A tree node for float64 arrays (the variance sums)."""
    out = np.array(left, dtype=np.float64, order="C")
    _core.cluster_tree_add(out, aligned(right))
    return out


def feature_sums_task(source: Source, start: int, stop: int, spherical: bool) -> np.ndarray:
    """One super-chunk's per-feature float64 sums (the mean of the ``tol`` variance)."""
    fault_point("kmeans")
    acc = np.zeros(source.d, np.float64)
    for _, x in _blocks(source, start, stop, spherical):
        _core.cluster_kmeans_feature_sums(x, spherical, acc)
    return acc


def sq_deviations_task(source: Source, start: int, stop: int, spherical: bool,
                       mean: np.ndarray) -> np.ndarray:
    """One super-chunk's squared deviations from ``mean`` (one float64, as an array)."""
    fault_point("kmeans")
    acc = 0.0
    m = aligned(mean)
    for _, x in _blocks(source, start, stop, spherical):
        acc = _core.cluster_kmeans_sq_deviations(x, spherical, m, acc)
    return np.array([acc], np.float64)


Candidates = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def merge_farthest(left: Candidates, right: Candidates, e: int) -> Candidates:
    """The first ``e`` of two candidate lists ``(distance, global row, label, row)`` in
    the core's order: distance descending, then lower row."""
    dist, rows, lab, val = (np.concatenate([a, b]) for a, b in zip(left, right))
    order = np.lexsort((rows, -dist))[:e]
    return dist[order], rows[order], lab[order], val[order]


def farthest_task(source: Source, start: int, stop: int, centroids: np.ndarray,
                  spherical: bool, e: int) -> Candidates:
    """The ``e`` rows of ``start:stop`` farthest from their nearest centroid (float64
    distances, labels and training rows exactly as the core computes them)."""
    fault_point("kmeans")
    c = aligned(centroids)
    best: Candidates | None = None
    for a, x in _blocks(source, start, stop, spherical):
        r, dist, lab, val = _core.cluster_kmeans_farthest(x, c, spherical, e)
        cand = (dist, r + a, lab, val)
        best = cand if best is None else merge_farthest(best, cand, e)
    assert best is not None
    return best


# -- driver -----------------------------------------------------------------------------

def _lloyd_cpus(ex: Any, tasks: int) -> int:
    """CPUs (= thrifty threads) per super-chunk task: the user's ``num_cpus``, or more
    when there are fewer super-chunks than CPUs (capped by the largest node)."""
    try:
        total = int(ex.ray.cluster_resources().get("CPU", 1))
        node = max(int(nd.get("Resources", {}).get("CPU", 1))
                   for nd in ex.ray.nodes() if nd.get("Alive"))
    except (ValueError, TypeError):
        return ex.num_cpus
    return max(ex.num_cpus, min(node, total // max(1, tasks)))


def start_centroids(run: Any, p: dict[str, Any]) -> np.ndarray:
    """The first centroids as the core makes them: given centroids, or the seeded random
    rows (gathered: ``k`` rows)."""
    src, k = run.source, p["n_clusters"]
    if not isinstance(p["init"], str):
        return _core.cluster_kmeans_start(np.ascontiguousarray(p["init"], np.float32),
                                          p["spherical"], False)
    rows = _core.cluster_kmeans_random_init_rows(src.n, k, p["seed"])
    cuts = np.searchsorted(rows, [a for a, _ in run.parts] + [src.n])
    args = [(src, rows[cuts[i]:cuts[i + 1]]) for i in range(len(run.parts))
            if cuts[i + 1] > cuts[i]]
    x = np.concatenate(run.ex.map(gather_task, args, desc="k-means init rows"))
    if p["spherical"]:
        z = ~x.any(axis=1)
        if z.any():
            shard, r = src.shard_of(int(rows[np.flatnonzero(z)[0]]))
            raise InvalidInputError(f"{shard.path}: row {r} is an all-zero vector, which has "
                                    "no direction for cosine clustering")
    return _core.cluster_kmeans_start(np.ascontiguousarray(x), p["spherical"], True)


def fit_every_row(run: Any, p: dict[str, Any]) -> tuple[np.ndarray, int]:
    """Train on every row, one Ray task per super-chunk per pass, exactly as
    :class:`thrifty.cluster.KMeans` without subsampling. ``p`` holds the validated
    parameters (``init`` "random" or a ``(k, d)`` array). Returns ``(centroids,
    n_iter)``."""
    if isinstance(p["init"], str) and p["init"] != "random":
        raise InvalidInputError(
            "k-means++ on every row is not distributed (it makes n_clusters sequential "
            "passes over all rows); use init='random', an array of starting centroids, or "
            "max_points_per_centroid to train on a sample")
    src, ex = run.source, run.ex
    n, d, k = src.n, src.d, p["n_clusters"]
    spherical, tol, max_iter = bool(p["spherical"]), float(p["tol"]), int(p["max_iter"])
    chunks = super_chunks(n)
    cpus = _lloyd_cpus(ex, len(chunks))
    tasks = 2 * len(chunks) - 1  # leaves and inner nodes of one pass
    passes = max_iter + (2 if tol != 0.0 else 0)
    with progress_callback(ex.progress, desc="k-means (every row)", unit="task") as cb:
        done = 0

        def report(i: int, _total: int) -> None:
            if cb:
                cb(done + i, passes * tasks)

        cent = start_centroids(run, p)
        if tol == 0.0:  # a fixed number of iterations needs no variance pass
            tol_abs = 0.0
        else:
            sums = ex.tree_reduce(feature_sums_task, [(src, a, b, spherical) for a, b in chunks],
                                  add_arrays, desc="k-means variance", num_cpus=cpus,
                                  progress=report)
            done += tasks
            mean = sums / float(n)  # the core: each sum /= n as f64
            m_ref = ex.put(mean)
            sq = ex.tree_reduce(sq_deviations_task,
                                [(src, a, b, spherical, m_ref) for a, b in chunks],
                                add_arrays, desc="k-means variance", num_cpus=cpus,
                                progress=report)
            done += tasks
            tol_abs = tol * (float(sq[0]) / (float(n) * float(d)))  # tol * var / (n d)
        n_iter = 0
        for _ in range(max_iter):
            n_iter += 1
            c_ref = ex.put(cent)
            sums, counts = ex.tree_reduce(
                lloyd_task, [(src, a, b, c_ref, spherical) for a, b in chunks], add_partials,
                desc="k-means iterations", num_cpus=cpus, progress=report)
            done += tasks
            sums = np.array(sums, dtype=np.float64, order="C")
            counts = np.array(counts, dtype=np.int64)
            e = int((counts == 0).sum())
            if e:
                _, _, lab, rows = ex.tree_reduce(
                    farthest_task, [(src, a, b, c_ref, spherical, e) for a, b in chunks],
                    functools.partial(merge_farthest, e=e), desc="k-means re-seed", num_cpus=cpus,
                    progress=lambda i, t: None)
                rows = np.ascontiguousarray(rows, dtype=np.float32)
                lab = np.ascontiguousarray(lab, dtype=np.int64)
            else:
                rows, lab = np.zeros((0, d), np.float32), np.zeros(0, np.int64)
            cent, shift = _core.cluster_kmeans_update(sums, counts, cent, spherical, rows, lab)
            if shift <= tol_abs:
                break
    return cent, n_iter
