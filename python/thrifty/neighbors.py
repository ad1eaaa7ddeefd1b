"""Exact nearest neighbours and training-free classifiers on embeddings.

* :func:`topk` — exact brute-force top-k (cosine, dot or squared euclidean), computed
  by a blocked float32 matrix product fused with a per-query selection in Rust.
* :class:`NearestMeanClassifier` — one running mean per class (float64 sums, so
  streaming in any chunking gives exactly the means of one ``fit``); new classes may
  appear in any :meth:`~NearestMeanClassifier.partial_fit` call (task-free continual
  learning).
* :class:`KNNClassifier` — k-nearest-neighbour votes (uniform, inverse distance or
  ``exp(similarity / T)``), streaming too.
* :func:`interpolate` — the kNN / classifier probability mixture
  ``lam * p_knn + (1 - lam) * p_clf``.

Inputs follow :mod:`thrifty`'s array rules: C-contiguous float32 (memory-mapped arrays
included) is read in place; float16/float64 is converted to float32 once; NaN/inf, empty
inputs, zero vectors under ``"cosine"`` and mismatched widths raise
:class:`thrifty.InvalidInputError`.

Numerical semantics (see ``rust/core/src/neighbors/topk.rs``): dot products are float32
FMA chains in feature order; cosine normalises rows in float64 first; squared euclidean
distances are ``(|q|² + |k|²) − 2 q·k`` clamped at 0. Each query's result is the first
``k`` keys in the order "better score, then lower index", independent of thread count.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from . import _core
from ._base import ParamsMixin
from ._errors import InvalidInputError
from ._progress import ProgressArg, progress_callback
from ._validation import as_float_matrix, check_choice, check_float, check_int

__all__ = ["topk", "NearestMeanClassifier", "KNNClassifier", "interpolate"]

_METRICS = ("cosine", "dot", "euclidean")


def topk(
    queries: Any,
    keys: Any,
    k: int,
    *,
    metric: str = "cosine",
    progress: ProgressArg = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest keys of every query, by brute force.

    Parameters
    ----------
    queries : array-like of shape (n_queries, n_features)
    keys : array-like of shape (n_keys, n_features)
    k : int
        Neighbours per query, ``1 <= k <= n_keys``.
    metric : {"cosine", "dot", "euclidean"}
        Cosine similarity, inner product, or squared euclidean distance.
    progress : bool, callable or None
        Progress display (see :mod:`thrifty`).

    Returns
    -------
    scores : ndarray of shape (n_queries, k), float32
        Similarities in descending order, or squared distances in ascending order.
    indices : ndarray of shape (n_queries, k), int64
        Row indices into ``keys``; ties go to the lower index.

    Examples
    --------
    >>> import numpy as np
    >>> from thrifty.neighbors import topk
    >>> keys = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    >>> scores, idx = topk(np.array([[2.0, 0.1]]), keys, 2, metric="euclidean")
    >>> idx.tolist(), [round(float(s), 2) for s in scores[0]]
    ([[0, 2]], [1.01, 1.81])
    """
    metric = check_choice(metric, "metric", _METRICS)
    q = as_float_matrix(queries, "queries", finite=False)
    x = as_float_matrix(keys, "keys", finite=False)
    if q.shape[1] != x.shape[1]:
        raise InvalidInputError(
            f"queries have {q.shape[1]} features but keys have {x.shape[1]}; they must match"
        )
    k = check_int(k, "k", low=1)
    if k > x.shape[0]:
        raise InvalidInputError(f"k must be between 1 and the number of keys ({x.shape[0]}), got {k}")
    with progress_callback(progress, desc="topk", unit="block") as cb:
        scores, idx = _core.topk(q, x, k, metric, cb)
    return scores, idx


def interpolate(p_clf: Any, p_knn: Any, lam: float) -> np.ndarray:
    """Mix two class-probability matrices: ``lam * p_knn + (1 - lam) * p_clf``.

    The kNN/classifier interpolation of "Rethinking Nearest Neighbors for Visual
    Classification"; both inputs must have the same shape and class order.

    Examples
    --------
    >>> from thrifty.neighbors import interpolate
    >>> interpolate([[0.2, 0.8]], [[1.0, 0.0]], 0.5).tolist()
    [[0.6, 0.4]]
    """
    lam = check_float(lam, "lam", low=0.0, high=1.0)
    a = np.asarray(p_clf, dtype=np.float64)
    b = np.asarray(p_knn, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape or a.size == 0:
        raise InvalidInputError(
            f"p_clf and p_knn must be non-empty 2-D arrays of the same shape, got {a.shape} and {b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InvalidInputError("probabilities must be finite")
    return lam * b + (1.0 - lam) * a


# ---------------------------------------------------------------------------------------
# labels


def _label_kind(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "bool"
    if isinstance(v, (numbers.Integral, np.integer)):
        return "int"
    if isinstance(v, (numbers.Real, np.floating)):
        return "float"
    if isinstance(v, (str, np.str_)):
        return "str"
    if isinstance(v, (bytes, np.bytes_)):
        return "bytes"
    return type(v).__name__


def _as_labels(y: Any, n: int) -> np.ndarray:
    """1-D label array of one kind (numbers or strings), ``n`` long."""
    if y is None:
        raise InvalidInputError("y is None; expected one label per row of X")
    if isinstance(y, np.ndarray) and y.dtype != object:
        arr = y
    else:
        seq = list(np.asarray(y, dtype=object).ravel()) if not isinstance(y, (list, tuple)) else list(y)
        kinds = {_label_kind(v) for v in seq}
        if {"int", "float"} >= kinds and kinds:
            kinds = {"number"}
        if len(kinds) > 1:
            raise InvalidInputError(
                f"y mixes labels of different types ({', '.join(sorted(kinds))}); use one type"
            )
        arr = np.asarray(seq)
        if arr.dtype == object:
            raise InvalidInputError("y must hold numbers or strings")
    if arr.ndim != 1:
        raise InvalidInputError(f"y must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "biufUS":
        raise InvalidInputError(f"y must hold numbers or strings, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InvalidInputError("y contains NaN or infinity")
    if arr.shape[0] != n:
        raise InvalidInputError(f"y has {arr.shape[0]} labels but X has {n} rows")
    return arr


class _Labels:
    """The sorted set of classes seen so far and the encoding of new batches."""

    def __init__(self) -> None:
        self.classes: np.ndarray | None = None

    def update(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Codes of ``y`` in the (possibly grown) class list, and where the old codes
        moved (``None`` when nothing moved)."""
        if self.classes is None:
            new, inv = np.unique(y, return_inverse=True)
            self.classes = new
            return inv.astype(np.uint32).reshape(-1), None
        new = np.unique(y)
        if (self.classes.dtype.kind in "US") != (new.dtype.kind in "US"):
            raise InvalidInputError(
                f"y holds {new.dtype} labels but the classes seen so far are {self.classes.dtype}; "
                "labels of mixed types are not allowed"
            )
        merged = np.union1d(self.classes, new)
        moved = None
        if merged.shape[0] != self.classes.shape[0]:
            moved = np.searchsorted(merged, self.classes)
        self.classes = merged
        return np.searchsorted(merged, y).astype(np.uint32), moved


def _check_two_classes(classes: np.ndarray | None, what: str) -> None:
    if classes is not None and classes.shape[0] < 2:
        raise InvalidInputError(
            f"{what} needs at least two classes, got only {classes.tolist()}"
        )


class _Base(ParamsMixin):
    n_features_in_: int

    def _require_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise InvalidInputError(
                f"this {type(self).__name__} is not fitted yet; call fit or partial_fit first"
            )
        _check_two_classes(self.classes_, "prediction")

    def _X(self, X: Any, *, fitting: bool) -> np.ndarray:
        nf = None if fitting or not hasattr(self, "n_features_in_") else self.n_features_in_
        x = as_float_matrix(X, "X", finite=False)
        if nf is not None and x.shape[1] != nf:
            raise InvalidInputError(
                f"X has {x.shape[1]} features, but {type(self).__name__} was fitted with {nf}"
            )
        return x

    classes_: np.ndarray

    def predict(self, X: Any) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def score(self, X: Any, y: Any) -> float:
        """Mean accuracy of :meth:`predict` on ``X`` against ``y``."""
        pred = self.predict(X)
        yy = _as_labels(y, pred.shape[0])
        return float(np.mean(pred == yy))


def _require_finite_chunked(x: np.ndarray, name: str) -> None:
    """NaN/inf check in row chunks (memory-mapped input is never loaded whole)."""
    step = max(1, (1 << 22) // max(1, x.shape[1]))
    for start in range(0, x.shape[0], step):
        part = x[start : start + step]
        if not np.isfinite(part).all():
            r, c = np.argwhere(~np.isfinite(part))[0]
            raise InvalidInputError(
                f"{name} contains a non-finite value ({part[r, c]}) at row {start + r}, column {c}"
            )


def _softmax_rows(s: np.ndarray) -> np.ndarray:
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


class NearestMeanClassifier(_Base):
    """Nearest class mean (NMC): predict the class whose mean is nearest.

    Class means are always means of the raw samples, kept as float64 sums and counts, so
    :meth:`partial_fit` in any chunking gives bit-identical means to one :meth:`fit`.
    New classes may appear in any :meth:`partial_fit` call.

    Parameters
    ----------
    metric : {"euclidean", "cosine"}
        ``"euclidean"``: nearest mean in euclidean distance (equal to scikit-learn's
        ``NearestCentroid``); ``"cosine"``: the mean with the highest cosine similarity.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Sorted class labels seen so far.
    means_ : ndarray of shape (n_classes, n_features), float64
    counts_ : ndarray of shape (n_classes,), int64
    n_features_in_ : int

    Notes
    -----
    :meth:`predict` ranks classes with float32 scores and re-decides a sample in float64
    when its two best classes are within float32 rounding of each other, so predictions
    equal a float64 computation (ties: the smallest class label).

    Examples
    --------
    >>> import numpy as np
    >>> from thrifty.neighbors import NearestMeanClassifier
    >>> X = np.array([[0, 0], [0, 1], [5, 5], [6, 5]], dtype=np.float32)
    >>> clf = NearestMeanClassifier().fit(X, ["a", "a", "b", "b"])
    >>> clf.predict([[1.0, 1.0], [5.0, 4.0]]).tolist()
    ['a', 'b']
    >>> clf.partial_fit(np.array([[0, 9.0]]), ["c"]).classes_.tolist()
    ['a', 'b', 'c']
    >>> clf.means_[1].tolist(), clf.counts_.tolist()
    ([5.5, 5.0], [2, 2, 1])
    """

    _param_names = ("metric",)

    def __init__(self, *, metric: str = "euclidean") -> None:
        self.metric = metric

    def _metric(self) -> str:
        return check_choice(self.metric, "metric", ("euclidean", "cosine"))

    def fit(self, X: Any, y: Any) -> NearestMeanClassifier:
        """Fit the class means from scratch (at least two classes)."""
        for attr in ("classes_", "means_", "counts_", "n_features_in_", "_sums", "_labels"):
            self.__dict__.pop(attr, None)
        x = self._X(X, fitting=True)
        yy = _as_labels(y, x.shape[0])
        self._accumulate(x, yy)
        try:
            _check_two_classes(self.classes_, "fit")
        except InvalidInputError:
            for attr in ("classes_", "means_", "counts_", "n_features_in_", "_sums", "_labels"):
                self.__dict__.pop(attr, None)
            raise
        return self

    def partial_fit(self, X: Any, y: Any) -> NearestMeanClassifier:
        """Add samples to the running class means; new classes may appear."""
        x = self._X(X, fitting=not hasattr(self, "n_features_in_"))
        yy = _as_labels(y, x.shape[0])
        return self._accumulate(x, yy)

    def _accumulate(self, x: np.ndarray, y: np.ndarray) -> NearestMeanClassifier:
        self._metric()
        labels: _Labels = self.__dict__.setdefault("_labels", _Labels())
        codes, moved = labels.update(y)
        assert labels.classes is not None
        n_cls, d = labels.classes.shape[0], x.shape[1]
        sums = getattr(self, "_sums", None)
        counts = getattr(self, "counts_", None)
        if sums is None or counts is None:
            sums = np.zeros((n_cls, d))
            counts = np.zeros(n_cls, dtype=np.int64)
        elif moved is not None:
            s2, c2 = np.zeros((n_cls, d)), np.zeros(n_cls, dtype=np.int64)
            s2[moved], c2[moved] = sums, counts
            sums, counts = s2, c2
        with progress_callback(False, desc="partial_fit") as cb:
            sums, cnt = _core.class_sums(x, codes, sums, counts.astype(np.uint64), cb)
        self._sums = sums
        self.counts_ = cnt.astype(np.int64)
        self.classes_ = labels.classes
        self.n_features_in_ = d
        with np.errstate(invalid="ignore", divide="ignore"):
            self.means_ = sums / self.counts_[:, None]
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores per class, shape (n_samples, n_classes), float32: negative squared
        euclidean distances to the means, or cosine similarities."""
        self._require_fitted()
        x = self._X(X, fitting=False)
        return _core.nearest_mean_scores(x, self.means_, self._metric())

    def predict(self, X: Any) -> np.ndarray:
        """The class of the nearest mean for every row of ``X``."""
        self._require_fitted()
        x = self._X(X, fitting=False)
        with progress_callback(False, desc="predict") as cb:
            codes = _core.nearest_mean_predict(x, self.means_, self._metric(), cb)
        return self.classes_[codes]

    def predict_proba(self, X: Any, temperature: float = 1.0) -> np.ndarray:
        """``softmax(decision_function(X) / temperature)`` over the classes.

        With ``"euclidean"`` the scores are negative squared distances; with
        ``"cosine"`` cosine similarities.
        """
        t = check_float(temperature, "temperature", low=0.0, low_inclusive=False)
        return _softmax_rows(self.decision_function(X).astype(np.float64) / t)


class KNNClassifier(_Base):
    """k-nearest-neighbour classifier over stored embeddings (exact search).

    Parameters
    ----------
    k : int
        Neighbours that vote.
    metric : {"cosine", "dot", "euclidean"}
    weights : {"uniform", "distance", "softmax"}
        ``"uniform"``: one vote each; ``"distance"``: ``1 / distance`` with euclidean
        distance (not squared) or cosine distance ``1 - similarity`` — neighbours at
        distance 0, if any, take all the weight (scikit-learn's rule); ``"softmax"``:
        ``exp(score / temperature)`` with the similarity (or, for euclidean, the negative
        squared distance) as score.
    temperature : float
        Softmax temperature (``0.07`` as in the kNN-on-pretrained-features literature).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Sorted labels seen so far.
    n_samples_fit_ : int
    n_features_in_ : int

    Notes
    -----
    Vote ties go to the smallest class label. :meth:`partial_fit` appends samples, new
    classes may appear.

    Examples
    --------
    >>> import numpy as np
    >>> from thrifty.neighbors import KNNClassifier
    >>> X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    >>> knn = KNNClassifier(k=3).fit(X, [0, 0, 1, 1])
    >>> knn.predict([[1, 0.2]]).tolist()
    [0]
    >>> knn.predict_proba([[1, 0.2]]).round(3).tolist()
    [[0.667, 0.333]]
    """

    _param_names = ("k", "metric", "weights", "temperature")

    def __init__(
        self,
        k: int = 10,
        *,
        metric: str = "cosine",
        weights: str = "uniform",
        temperature: float = 0.07,
    ) -> None:
        self.k = k
        self.metric = metric
        self.weights = weights
        self.temperature = temperature

    def _check_params(self) -> tuple[int, str, str, float]:
        k = check_int(self.k, "k", low=1)
        metric = check_choice(self.metric, "metric", _METRICS)
        weights = check_choice(self.weights, "weights", ("uniform", "distance", "softmax"))
        t = check_float(self.temperature, "temperature", low=0.0, low_inclusive=False)
        if weights == "distance" and metric == "dot":
            raise InvalidInputError('weights="distance" is not defined for metric="dot"')
        return k, metric, weights, t

    def fit(self, X: Any, y: Any) -> KNNClassifier:
        """Store the samples and labels (at least two classes)."""
        for attr in ("classes_", "n_features_in_", "n_samples_fit_", "_labels", "_chunks", "_codes"):
            self.__dict__.pop(attr, None)
        self._check_params()
        x = self._X(X, fitting=True)
        yy = _as_labels(y, x.shape[0])
        _check_two_classes(np.unique(yy), "fit")
        return self._append(x, yy)

    def partial_fit(self, X: Any, y: Any) -> KNNClassifier:
        """Add samples; new classes may appear."""
        self._check_params()
        x = self._X(X, fitting=not hasattr(self, "n_features_in_"))
        yy = _as_labels(y, x.shape[0])
        return self._append(x, yy)

    def _append(self, x: np.ndarray, y: np.ndarray) -> KNNClassifier:
        _require_finite_chunked(x, "X")
        labels: _Labels = self.__dict__.setdefault("_labels", _Labels())
        codes, moved = labels.update(y)
        chunks: list[np.ndarray] = self.__dict__.setdefault("_chunks", [])
        old = getattr(self, "_codes", np.zeros(0, dtype=np.uint32))
        if moved is not None:
            old = moved[old].astype(np.uint32)
        chunks.append(x)
        self._codes = np.concatenate([old, codes])
        assert labels.classes is not None
        self.classes_ = labels.classes
        self.n_features_in_ = x.shape[1]
        self.n_samples_fit_ = int(self._codes.shape[0])
        return self

    def _keys(self) -> np.ndarray:
        chunks: list[np.ndarray] = self._chunks
        if len(chunks) > 1:
            chunks[:] = [np.concatenate(chunks)]
        return chunks[0]

    def kneighbors(self, X: Any, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores and indices (into the stored samples) of the ``k`` nearest, as
        :func:`topk` returns them."""
        if not hasattr(self, "classes_"):
            self._require_fitted()
        kk, metric, _, _ = self._check_params()
        if k is not None:
            kk = check_int(k, "k", low=1)
        x = self._X(X, fitting=False)
        if kk > self.n_samples_fit_:
            raise InvalidInputError(
                f"k must be between 1 and the number of stored samples ({self.n_samples_fit_}), got {kk}"
            )
        with progress_callback(False, desc="kneighbors") as cb:
            return _core.topk(x, self._keys(), kk, metric, cb)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Weighted class votes of the ``k`` nearest samples, normalised to sum to 1."""
        self._require_fitted()
        _, metric, weights, t = self._check_params()
        scores, idx = self.kneighbors(X)
        votes = self._codes[idx]
        s = scores.astype(np.float64)
        if weights == "uniform":
            w = np.ones_like(s)
        elif weights == "softmax":
            z = (-s if metric == "euclidean" else s) / t
            w = np.exp(z - z.max(axis=1, keepdims=True))
        else:
            dist = np.sqrt(s) if metric == "euclidean" else np.maximum(1.0 - s, 0.0)
            zero = dist == 0
            with np.errstate(divide="ignore"):
                w = 1.0 / dist
            rows = zero.any(axis=1)
            w[rows] = zero[rows].astype(np.float64)
        n_cls = self.classes_.shape[0]
        flat = (np.arange(s.shape[0])[:, None] * n_cls + votes).ravel()
        proba = np.bincount(flat, weights=w.ravel(), minlength=s.shape[0] * n_cls)
        proba = proba.reshape(s.shape[0], n_cls)
        proba /= proba.sum(axis=1, keepdims=True)
        return proba

    def predict(self, X: Any) -> np.ndarray:
        """Class with the largest vote (ties: the smallest label)."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]
