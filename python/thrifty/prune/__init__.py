"""Embedding-based dataset pruning: SemDeDup, SSP and density-based pruning (DBP).

Every method works on a clustering of the L2-normalised embeddings: pass ``labels`` and
``centroids`` to use your own (this skips clustering), or ``n_clusters`` to run
spherical :class:`thrifty.cluster.KMeans` first (default ``n_clusters``:
``max(1, round(sqrt(n_samples)))``, at most ``n_samples``; as faiss: random init, 10
iterations on a subsample of 256 points per centroid, then every point assigned). Within-cluster similarities are float32 products (never float16).
Deterministic for a given ``seed``, independent of the thread count, ties by index.

* :func:`semdedup` — per cluster, order members (``prefer="hard"``: farthest from the
  centroid first), ``M_j = max_{i<j} cos(x_i, x_j)``; ``j`` is removed when
  ``M_j > 1 - eps`` (pairwise: even when the item it matched was itself removed).
* :func:`ssp` — keep ``round(keep_fraction * n)`` samples ranked globally by cosine
  distance to their own centroid (``prefer="hard"`` keeps the farthest).
* :func:`dbp` — optional SemDeDup, complexity ``C_j = d_inter_j * d_intra_j``,
  ``P = softmax(C / temperature)``, keep counts ``clip(lambda * P_j, lb_j, n_j)``
  summing exactly to ``N`` (water-filling; ``lb_j = min(floor(N / k * balance), n_j - 1)``),
  keep the hardest within each cluster. Duplicates count toward ``keep_fraction``.

``prefer`` names which members a method keeps (or, for SemDeDup, puts first):
``"hard"`` (farthest from their centroid), ``"easy"`` (nearest), ``"random"`` (seeded),
or, for :func:`ssp` and :func:`dbp`, ``"auto"``: the strategy switch of Sorscher et al.
2022 ("Beyond neural scaling laws": keep easy samples when data is scarce, hard ones when
it is abundant). With ``K`` the number of samples kept and ``G`` the number of groups
(the distinct classes of ``y`` when it is given, else the non-empty clusters), ``"auto"``
is ``"hard"`` when ``K // G >= 32`` and ``"easy"`` otherwise; :attr:`PruneResult.prefer`
records the choice. 32 is an empirical crossover, not a law: on scikit-learn's digits
with a 5-NN classifier hard-first selection overtook easy-first between 24 and 36 kept
samples per class. Clusters are usually finer than classes, so without ``y`` the switch
to ``"hard"`` comes later (the safer side: hard-only subsets of scarce data fail worst).
SemDeDup refuses ``"auto"``: it fixes no kept count in advance.

``keep_fraction`` is relative to the input size: ``N = floor(keep_fraction * n + 0.5)``,
at least 1. Score-based selection from your own training runs: :mod:`thrifty.prune.scores`.

Examples
--------
>>> import numpy as np
>>> from thrifty.prune import semdedup
>>> X = np.array([[1, 0], [1, 0.001], [0, 1]], dtype=np.float32)
>>> r = semdedup(X, eps=0.01, labels=np.zeros(3, dtype=np.int64),
...              centroids=np.array([[1, 1]], dtype=np.float32))
>>> r.indices.tolist(), r.duplicate_of.tolist()
([0, 2], [-1, 0, -1])

``prefer="auto"`` keeps hard samples from 32 kept per class on, easy ones below:

>>> from thrifty.prune import ssp
>>> rng = np.random.default_rng(0)
>>> X, y = rng.normal(size=(400, 8)).astype(np.float32), np.arange(400) % 4
>>> ssp(X, keep_fraction=0.5, y=y, n_clusters=4, prefer="auto").prefer  # 200 // 4 >= 32
'hard'
>>> ssp(X, keep_fraction=0.2, y=y, n_clusters=4, prefer="auto").prefer  # 80 // 4 < 32
'easy'
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _core
from .._errors import InvalidInputError
from .._progress import ProgressArg, progress_callback
from .._validation import as_float_matrix, check_choice, check_float, check_int
from . import scores

__all__ = ["PruneResult", "semdedup", "ssp", "dbp", "random_subset", "default_n_clusters",
           "scores"]

_ORDERS = ("hard", "easy", "random")
_PREFER = (*_ORDERS, "auto")


def default_n_clusters(n: int) -> int:
    """Default number of clusters for ``n`` points: ``max(1, round(sqrt(n)))``."""
    return max(1, min(n, int(round(math.sqrt(n)))))


@dataclass
class PruneResult:
    """Outcome of a pruning method (arrays of length ``n_samples`` unless noted).

    Attributes
    ----------
    method : str
    keep : ndarray of bool
        Kept samples.
    indices : ndarray of int64
        Kept sample indices, sorted.
    cluster : ndarray of int64
        Cluster of every sample (-1 for :func:`random_subset`).
    duplicate_of : ndarray of int64
        For a sample removed as a duplicate, the most similar sample earlier in its
        cluster's order; -1 otherwise.
    similarity : ndarray of float32
        Largest cosine to a sample earlier in its cluster's SemDeDup order (NaN for the
        first member and when no deduplication ran).
    score : ndarray of float64
        Cosine distance to the sample's own centroid, ``1 - cos``.
    keep_per_cluster : ndarray of int64, shape (n_clusters,)
    complexity : ndarray of float64, shape (n_clusters,) (DBP only, else empty)
    prefer : str
        The member order used: ``"hard"``, ``"easy"`` or ``"random"`` (``prefer="auto"``
        resolved; ``"random"`` for :func:`random_subset`).
    params : dict
        The parameters used (``params["prefer"]`` is the option as passed).
    """

    method: str
    keep: np.ndarray
    cluster: np.ndarray
    duplicate_of: np.ndarray
    similarity: np.ndarray
    score: np.ndarray
    keep_per_cluster: np.ndarray
    complexity: np.ndarray
    prefer: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def indices(self) -> np.ndarray:
        return np.flatnonzero(self.keep).astype(np.int64)

    def report(self, *, max_removed: int | None = None) -> dict[str, Any]:
        """A JSON-ready explanation of every removal.

        Schema::

            {"method": str, "prefer": "hard" | "easy" | "random", "params": {...},
             "n_input": int, "n_kept": int, "n_removed": int, "n_duplicates": int,
             "clusters": [{"cluster": int, "size": int, "kept": int,
                           "complexity": float | null}, ...],
             "removed": [{"index": int, "reason": "duplicate" | "pruned",
                          "cluster": int, "duplicate_of": int | null,
                          "similarity": float | null, "score": float | null}, ...]}

        ``removed`` is in index order (the first ``max_removed`` entries when given);
        ``similarity`` is the cosine to ``duplicate_of`` for duplicates.
        """
        return {**self._report_head(), "removed": list(self.removed(max_removed))}

    def removed(self, max_removed: int | None = None) -> Iterator[dict[str, Any]]:
        """The ``removed`` entries of :meth:`report`, in index order (the first
        ``max_removed`` when given), made one at a time."""
        removed = np.flatnonzero(~self.keep)
        if max_removed is not None:
            removed = removed[:check_int(max_removed, "max_removed", low=0)]
        return _removed_entries(removed, 0, self.duplicate_of, self.cluster, self.similarity,
                                self.score)

    def write_report(self, f: Any, *, extra: dict[str, Any] | None = None) -> None:
        """Write ``json.dumps({**report(), **extra}, indent=1)`` to the binary file ``f``,
        byte for byte, without building the ``removed`` list in memory (a few hundred
        bytes per removed sample as Python objects; the CLI's ``--report`` uses this).

        Examples
        --------
        >>> import io, json
        >>> import numpy as np
        >>> from thrifty.prune import semdedup
        >>> x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
        >>> r = semdedup(np.vstack([x, x[:5]]), n_clusters=2, eps=0.01, seed=0)
        >>> buf = io.BytesIO()
        >>> r.write_report(buf, extra={"input": "emb.npy"})
        >>> buf.getvalue() == json.dumps({**r.report(), "input": "emb.npy"}, indent=1).encode()
        True
        """
        _write_report_json(f, self._report_head(), self.removed(), extra)

    def _report_head(self) -> dict[str, Any]:
        """The report without its ``removed`` list."""
        n = int(self.keep.size)
        kept = int(self.keep.sum())
        sizes = np.bincount(self.cluster[self.cluster >= 0],
                            minlength=self.keep_per_cluster.size)
        return {
            "method": self.method,
            "prefer": self.prefer,
            "params": dict(self.params),
            "n_input": n,
            "n_kept": kept,
            "n_removed": n - kept,
            "n_duplicates": int((self.duplicate_of >= 0).sum()),
            "clusters": _cluster_entries(sizes, self.keep_per_cluster, self.complexity),
        }


def _num(v: float) -> float | None:
    """``v`` as a JSON number, or None (null) when it is not finite."""
    return None if not math.isfinite(float(v)) else float(v)


def _cluster_entries(sizes: np.ndarray, keep_per_cluster: np.ndarray,
                    complexity: np.ndarray) -> list[dict[str, Any]]:
    """The report's ``clusters`` list."""
    return [{"cluster": j, "size": int(sizes[j]), "kept": int(keep_per_cluster[j]),
             "complexity": _num(complexity[j]) if complexity.size else None}
            for j in range(keep_per_cluster.size)]


def _removed_entries(local: np.ndarray, offset: int, dup: np.ndarray, cl: np.ndarray,
                     sim: np.ndarray, sc: np.ndarray) -> Iterator[dict[str, Any]]:
    """The report's ``removed`` entries of the samples ``offset + local``, whose fields are
    ``dup[local]`` etc.; made 65536 at a time, so that only one block of them exists as
    Python objects."""
    for a in range(0, local.size, 65536):
        b = local[a:a + 65536]
        for i, du, c, si, s in zip((b + offset).tolist(), dup[b].tolist(), cl[b].tolist(),
                                   sim[b].tolist(), sc[b].tolist()):
            yield {"index": i, "reason": "duplicate" if du >= 0 else "pruned",
                   "cluster": c, "duplicate_of": du if du >= 0 else None,
                   "similarity": _num(si) if du >= 0 else None, "score": _num(s)}


# one entry of the report's "removed" list as json.dumps(report, indent=1) lays it out
_REMOVED_ITEM = ("  {{\n   \"index\": {index},\n   \"reason\": \"{reason}\",\n"
                 "   \"cluster\": {cluster},\n   \"duplicate_of\": {duplicate_of},\n"
                 "   \"similarity\": {similarity},\n   \"score\": {score}\n  }}")


def _json_scalar(v: Any) -> str:
    """``v`` (None, an int or a finite float) as :func:`json.dumps` writes it."""
    return "null" if v is None else repr(v)


def _check_binary_file(f: Any) -> None:
    """Raise :class:`InvalidInputError` unless ``f`` looks like an open binary file."""
    if isinstance(f, (str, bytes, os.PathLike)):
        raise InvalidInputError(
            f"write_report writes to an open binary file, not a path ({f!r}): "
            "pass open(path, 'wb')")
    if isinstance(f, io.TextIOBase):
        raise InvalidInputError(
            "write_report writes bytes, and this file is in text mode: open it with 'wb' "
            "(for standard output, pass sys.stdout.buffer)")
    if not callable(getattr(f, "write", None)):
        raise InvalidInputError(
            f"write_report writes to an open binary file; got {type(f).__name__}, "
            "which has no write method")


def _write_report_json(f: Any, head: dict[str, Any], removed: Iterable[dict[str, Any]],
                      extra: dict[str, Any] | None) -> None:
    """Write ``json.dumps({**head, "removed": list(removed), **extra}, indent=1)`` to the
    binary file ``f``, byte for byte, streaming ``removed`` (4096 entries per write).
    Nothing is written when ``f`` is not an open binary file."""
    _check_binary_file(f)
    token = os.urandom(16).hex()
    text = json.dumps({**head, "removed": token, **(extra or {})}, indent=1)
    before, after = text.split(f'"removed": "{token}"')
    f.write(before.encode() + b'"removed": [')
    batch: list[str] = []
    first = True

    def flush() -> None:
        nonlocal first
        f.write(("\n" if first else ",\n").encode() + ",\n".join(batch).encode())
        batch.clear()
        first = False

    for item in removed:
        batch.append(_REMOVED_ITEM.format(
            index=item["index"], reason=item["reason"], cluster=item["cluster"],
            duplicate_of=_json_scalar(item["duplicate_of"]),
            similarity=_json_scalar(item["similarity"]),
            score=_json_scalar(item["score"])))
        if len(batch) == 4096:
            flush()
    if batch:
        flush()
    f.write((b"]" if first else b"\n ]") + after.encode())


def _clustering(
    x: np.ndarray,
    n_clusters: int | None,
    labels: Any,
    centroids: Any,
    seed: int,
    progress: ProgressArg,
) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    if (labels is None) != (centroids is None):
        raise InvalidInputError("pass both labels and centroids, or neither")
    if labels is not None:
        c = as_float_matrix(centroids, "centroids", n_features=x.shape[1])
        lab = np.asarray(labels)
        if lab.ndim != 1 or lab.shape[0] != n:
            raise InvalidInputError(f"labels must have shape ({n},), got {lab.shape}")
        if lab.dtype.kind not in "iu":
            raise InvalidInputError(f"labels must be integers, got dtype {lab.dtype}")
        return np.ascontiguousarray(lab, dtype=np.int64), c
    from ..cluster import KMeans

    k = default_n_clusters(n) if n_clusters is None else check_int(n_clusters, "n_clusters", low=1)
    if k > n:
        raise InvalidInputError(f"n_clusters ({k}) is larger than the number of points ({n})")
    km = KMeans(k, spherical=True, max_iter=10, init="random", max_points_per_centroid=256,
                seed=seed, progress=progress).fit(x)
    return km.labels_, km.cluster_centers_


# pruning needs a data set: a single sample (what reshape(1, -1) makes) is never useful
_ONE_ROW_PER_SAMPLE = "pruning needs the whole data set, one embedding per row"


def _fraction(value: Any, name: str) -> float:
    """A fraction in (0, 1]: ``keep_fraction``, ``eps``, ``dedup_eps``."""
    return check_float(value, name, low=0.0, high=1.0, low_inclusive=False)


def _semdedup_options(eps: Any, prefer: Any) -> dict[str, Any]:
    """The validated options of :func:`semdedup` (and its distributed form)."""
    eps = _fraction(eps, "eps")
    if prefer == "auto":
        raise InvalidInputError(
            "prefer='auto' does not apply to semdedup: it chooses from the kept count, which "
            "SemDeDup does not fix in advance; pass 'hard', 'easy' or 'random'")
    return {"eps": eps, "prefer": check_choice(prefer, "prefer", _ORDERS)}


def _ssp_options(keep_fraction: Any, prefer: Any) -> dict[str, Any]:
    """The validated options of :func:`ssp` (and its distributed form), ``y`` aside."""
    return {"keep_fraction": _fraction(keep_fraction, "keep_fraction"),
            "prefer": check_choice(prefer, "prefer", _PREFER)}


def _dbp_options(keep_fraction: Any, n_neighbors: Any, temperature: Any, balance: Any,
                 prefer: Any, dedup_eps: Any) -> dict[str, Any]:
    """The validated options of :func:`dbp` (and its distributed form), ``y`` aside."""
    return {
        "keep_fraction": _fraction(keep_fraction, "keep_fraction"),
        "n_neighbors": check_int(n_neighbors, "n_neighbors", low=1),
        "temperature": check_float(temperature, "temperature", low=0.0, low_inclusive=False),
        "balance": check_float(balance, "balance", low=0.0, high=1.0),
        "prefer": check_choice(prefer, "prefer", _PREFER),
        "dedup_eps": None if dedup_eps is None else _fraction(dedup_eps, "dedup_eps"),
    }


def _run(
    method: str,
    x: np.ndarray,
    n_clusters: int | None,
    labels: Any,
    centroids: Any,
    seed: Any,
    progress: ProgressArg,
    params: dict[str, Any],
) -> PruneResult:
    """Check ``seed``, get the clustering, run ``method`` with ``params`` in one core call.

    ``params`` (the method's validated options, plus ``seed`` and ``n_clusters``) is what
    the core reads its options from and what the result records.
    """
    seed = check_int(seed, "seed", low=0, high=2**64 - 1)
    lab, c = _clustering(x, n_clusters, labels, centroids, seed, progress)
    params = {**params, "seed": seed, "n_clusters": int(c.shape[0])}
    with progress_callback(progress, desc=method) as cb:
        keep, dup, sim, score, kpc, cx, used = _core.prune_run(method, x, lab, c, params, cb)
    return PruneResult(method, keep, lab, dup, sim, score, kpc, cx, used, params)


def _n_classes(y: Any, n: int) -> int | None:
    """The number of distinct classes in ``y`` (length ``n``), or None without ``y``."""
    if y is None:
        return None
    a = np.asarray(y)
    if a.ndim != 1 or a.shape[0] != n:
        raise InvalidInputError(f"y must have shape ({n},) (one class per sample), got {a.shape}")
    if a.dtype.kind == "f" and np.isnan(a).any():
        raise InvalidInputError(f"y contains NaN at index {int(np.flatnonzero(np.isnan(a))[0])}")
    try:
        return int(np.unique(a).size)
    except TypeError as e:
        raise InvalidInputError(f"y holds class labels that can not be compared: {e}") from None


def semdedup(
    X: Any,
    *,
    eps: float,
    n_clusters: int | None = None,
    labels: Any = None,
    centroids: Any = None,
    prefer: str = "hard",
    seed: int = 0,
    progress: ProgressArg = None,
) -> PruneResult:
    """SemDeDup: remove semantic near-duplicates within each cluster.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    eps : float
        Remove a sample whose cosine to an earlier one exceeds ``1 - eps``; ``0 < eps <= 1``.
    n_clusters : int, optional
        Clusters for spherical k-means (see the module doc for the default).
    labels, centroids : array-like, optional
        A clustering to use instead (both or neither).
    prefer : {"hard", "easy", "random"}
        Member order within a cluster; earlier members are kept, so ``"hard"`` keeps the
        member of a duplicate pair farther from the centroid. ``"auto"`` is refused: it
        chooses from a kept count, which SemDeDup does not fix in advance.
    seed : int
    progress : bool, callable or None

    Returns
    -------
    PruneResult
    """
    x = as_float_matrix(X, "X", one_d_hint=_ONE_ROW_PER_SAMPLE)
    return _run("semdedup", x, n_clusters, labels, centroids, seed, progress,
                _semdedup_options(eps, prefer))


def ssp(
    X: Any,
    *,
    keep_fraction: float,
    n_clusters: int | None = None,
    labels: Any = None,
    centroids: Any = None,
    prefer: str = "hard",
    y: Any = None,
    seed: int = 0,
    progress: ProgressArg = None,
) -> PruneResult:
    """Self-supervised prototype pruning: keep samples by distance to their centroid.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    keep_fraction : float
        Fraction of the input to keep, in (0, 1].
    n_clusters, labels, centroids : see :func:`semdedup`
    prefer : {"hard", "easy", "random", "auto"}
        Keep the farthest from their centroid (abundant data), the nearest (scarce data),
        a seeded random choice, or choose hard/easy from the kept count per class (see
        the module doc).
    y : array-like of shape (n_samples,), optional
        Class labels; only ``prefer="auto"`` reads them (to count the classes). Without
        them ``"auto"`` counts the non-empty clusters.
    seed : int
    progress : bool, callable or None

    Returns
    -------
    PruneResult
    """
    x = as_float_matrix(X, "X", one_d_hint=_ONE_ROW_PER_SAMPLE)
    return _run("ssp", x, n_clusters, labels, centroids, seed, progress,
                {**_ssp_options(keep_fraction, prefer), "n_classes": _n_classes(y, x.shape[0])})


def dbp(
    X: Any,
    *,
    keep_fraction: float,
    n_clusters: int | None = None,
    labels: Any = None,
    centroids: Any = None,
    n_neighbors: int = 20,
    temperature: float = 0.5,
    balance: float = 0.5,
    prefer: str = "hard",
    y: Any = None,
    dedup_eps: float | None = None,
    seed: int = 0,
    progress: ProgressArg = None,
) -> PruneResult:
    """Density-based pruning (Abbas et al., ICLR 2024).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    keep_fraction : float
        Fraction of the input to keep, in (0, 1]; SemDeDup removals count toward it.
    n_clusters, labels, centroids : see :func:`semdedup`
    n_neighbors : int, default 20
        ``l``: nearest other centroids averaged in ``d_inter``.
    temperature : float, default 0.5
        Softmax temperature over cluster complexities.
    balance : float, default 0.5
        Lower bound per cluster: ``min(floor(N / k * balance), n_j - 1)``.
    prefer : {"hard", "easy", "random", "auto"}
        Which members a cluster keeps; ``"auto"`` chooses hard or easy from the kept
        count per class (see the module doc).
    y : array-like of shape (n_samples,), optional
        Class labels; only ``prefer="auto"`` reads them. Without them ``"auto"`` counts
        the non-empty clusters.
    dedup_eps : float, optional
        Run SemDeDup (hard order) with this ``eps`` first.
    seed : int
    progress : bool, callable or None

    Returns
    -------
    PruneResult
    """
    x = as_float_matrix(X, "X", one_d_hint=_ONE_ROW_PER_SAMPLE)
    opts = _dbp_options(keep_fraction, n_neighbors, temperature, balance, prefer, dedup_eps)
    return _run("dbp", x, n_clusters, labels, centroids, seed, progress,
                {**opts, "n_classes": _n_classes(y, x.shape[0])})


def random_subset(n: int, *, keep_fraction: float, seed: int = 0) -> PruneResult:
    """A seeded uniformly random subset of ``round(keep_fraction * n)`` of ``n`` samples."""
    n = check_int(n, "n", low=1)
    kf = _fraction(keep_fraction, "keep_fraction")
    m = max(1, min(n, int(math.floor(kf * n + 0.5))))
    rng = np.random.default_rng(seed)
    keep = np.zeros(n, dtype=bool)
    keep[rng.choice(n, size=m, replace=False)] = True
    return PruneResult("random", keep, np.full(n, -1, dtype=np.int64), np.full(n, -1, np.int64),
                       np.full(n, np.nan, np.float32), np.full(n, np.nan), np.zeros(0, np.int64),
                       np.zeros(0), "random", {"keep_fraction": kf, "seed": seed})
