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
inputs and mismatched widths raise :class:`thrifty.InvalidInputError`. Under ``"cosine"``
everything follows scikit-learn's ``cosine_similarity``: an all-zero query, key, sample or
class mean has cosine similarity 0 to every vector (cosine distance 1), ties going to the
lower index as always.

Numerical semantics (see ``rust/core/src/neighbors/topk.rs``): dot products are float32
FMA chains in feature order; cosine normalises rows in float64 first; squared euclidean
distances are ``(|q|² + |k|²) − 2 q·k`` clamped at 0. Each query's result is the first
``n_neighbors`` keys in the order "better score, then lower index", independent of
thread count.

The classifiers are scikit-learn estimators (``BaseEstimator`` + ``ClassifierMixin``):
they pass ``sklearn.utils.estimator_checks`` and work in ``Pipeline``, ``GridSearchCV``
and ``cross_val_score``. Integer ``X`` is converted to float32; sparse input is rejected.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sklearn.base import ClassifierMixin

from . import _core
from ._base import Estimator, as_labels, check_fitted, drop_self, validate_X
from ._errors import InvalidInputError
from ._progress import ProgressArg, progress_callback
from ._validation import as_float_matrix, check_choice, check_float, check_int

__all__ = ["topk", "NearestMeanClassifier", "KNNClassifier", "interpolate"]

_METRICS = ("cosine", "dot", "euclidean")


def topk(
    queries: Any,
    keys: Any,
    n_neighbors: int,
    *,
    metric: str = "cosine",
    progress: ProgressArg = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest keys of every query, by brute force.

    Parameters
    ----------
    queries : array-like of shape (n_queries, n_features)
    keys : array-like of shape (n_keys, n_features)
    n_neighbors : int
        Neighbours per query, ``1 <= n_neighbors <= n_keys``.
    metric : {"cosine", "dot", "euclidean"}
        Cosine similarity (an all-zero query or key has similarity 0 to every vector,
        as in scikit-learn's ``cosine_similarity``), inner product, or squared euclidean
        distance.
    progress : bool, callable or None
        Progress display (see :mod:`thrifty`).

    Returns
    -------
    scores : ndarray of shape (n_queries, n_neighbors), float32
        Similarities in descending order, or squared distances in ascending order.
    indices : ndarray of shape (n_queries, n_neighbors), int64
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
    k = check_int(n_neighbors, "n_neighbors", low=1)
    if k > x.shape[0]:
        raise InvalidInputError(
            f"n_neighbors must be between 1 and the number of keys ({x.shape[0]}), got {k}"
        )
    with progress_callback(progress, desc="topk", unit="block") as cb:
        scores, idx = _core.neighbors_topk(q, x, k, metric, cb)
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


def _check_two_classes(classes: np.ndarray, what: str) -> None:
    if classes.shape[0] < 2:
        raise InvalidInputError(
            f"{what} needs at least two classes, got {classes.shape[0]} class "
            f"({classes.tolist()})"
        )


def _require_finite_chunked(x: np.ndarray, name: str) -> None:
    """NaN/inf check in row chunks (memory-mapped input is never loaded whole)."""
    step = max(1, (1 << 22) // max(1, x.shape[1]))
    for start in range(0, x.shape[0], step):
        part = x[start : start + step]
        if not np.isfinite(part).all():
            r, c = np.argwhere(~np.isfinite(part))[0]
            v = part[r, c]
            what = "NaN" if np.isnan(v) else ("inf" if v > 0 else "-inf")
            raise InvalidInputError(
                f"{name} contains {what} at row {start + r}, column {c}; NaN and inf are "
                "not allowed"
            )


def _softmax_rows(s: np.ndarray) -> np.ndarray:
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


class _Classifier(ClassifierMixin, Estimator):
    """Label bookkeeping and input checks of the two embedding classifiers."""

    classes_: np.ndarray
    n_features_in_: int

    def _X(self, X: Any, *, reset: bool) -> np.ndarray:
        x = validate_X(self, X, reset=reset, finite=False)
        _require_finite_chunked(x, "X")
        return x

    def _Xy(self, X: Any, y: Any, classes: Any, *, reset: bool) -> tuple[np.ndarray, np.ndarray, int]:
        """Validated ``X``, the labels to register (``classes`` first, then ``y``) and
        how many of them come from ``classes``."""
        x = self._X(X, reset=reset)
        yy = as_labels(y, x.shape[0])
        if classes is None:
            return x, yy, 0
        cl = as_labels(classes, np.asarray(classes).reshape(-1).shape[0])
        if (cl.dtype.kind in "US") != (yy.dtype.kind in "US"):
            raise InvalidInputError("classes and y must hold labels of the same type")
        return x, np.concatenate([cl, yy]), cl.shape[0]

    def _reset(self, names: tuple[str, ...]) -> None:
        for attr in names:
            self.__dict__.pop(attr, None)


class NearestMeanClassifier(_Classifier):
    """Nearest class mean (NMC): predict the class whose mean is nearest.

    Class means are always means of the raw samples, kept as float64 sums and counts, so
    :meth:`partial_fit` in any chunking gives bit-identical means to one :meth:`fit`.
    New classes may appear in any :meth:`partial_fit` call.

    Parameters
    ----------
    metric : {"euclidean", "cosine"}
        ``"euclidean"``: nearest mean in euclidean distance (equal to scikit-learn's
        ``NearestCentroid``); ``"cosine"``: the mean with the highest cosine similarity
        (an all-zero sample or mean has similarity 0 to every vector, as in
        scikit-learn's ``cosine_similarity``).
    progress : bool, callable or None
        Progress display of :meth:`fit`, :meth:`partial_fit` and :meth:`predict` (see
        :mod:`thrifty`).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Sorted class labels seen so far.
    means_ : ndarray of shape (n_classes, n_features), float64
        Class means (NaN for a class registered through ``classes`` without samples).
    counts_ : ndarray of shape (n_classes,), int64
    within_class_variance_ : float
        Pooled within-class variance per feature (float64),
        ``sum_c sum_{i in c} |x_i - mean_c|^2 / ((n_samples - n_classes) * n_features)``:
        the scale :meth:`predict_proba` measures squared distances in.
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
    >>> clf.predict_proba([[2.8, 2.8]]).round(3).tolist()
    [[0.119, 0.881]]
    >>> clf.partial_fit(np.array([[0, 9.0]]), ["c"]).classes_.tolist()
    ['a', 'b', 'c']
    >>> clf.means_[1].tolist(), clf.counts_.tolist()
    ([5.5, 5.0], [2, 2, 1])
    """

    _FITTED = ("classes_", "means_", "counts_", "n_features_in_", "within_class_variance_",
               "_sums", "_sq_sums", "_labels")

    def __init__(self, *, metric: str = "euclidean", progress: ProgressArg = None) -> None:
        self.metric = metric
        self.progress = progress

    def _metric(self) -> str:
        return check_choice(self.metric, "metric", ("euclidean", "cosine"))

    def fit(self, X: Any, y: Any) -> NearestMeanClassifier:
        """Fit the class means from scratch (at least two classes)."""
        self._reset(self._FITTED)
        x, yy, n_cls = self._Xy(X, y, None, reset=True)
        try:
            self._accumulate(x, yy, n_cls)
            _check_two_classes(self.classes_, "fit")
        except InvalidInputError:
            self._reset(self._FITTED)
            raise
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> NearestMeanClassifier:
        """Add samples to the running class means; new classes may appear.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like, optional
            Labels to register now even without samples (scikit-learn's protocol);
            optional, since any call may bring new classes.
        """
        x, yy, n_cls = self._Xy(X, y, classes, reset=not hasattr(self, "n_features_in_"))
        return self._accumulate(x, yy, n_cls)

    def _accumulate(self, x: np.ndarray, y: np.ndarray, skip: int) -> NearestMeanClassifier:
        self._metric()
        labels: _Labels = self.__dict__.setdefault("_labels", _Labels())
        codes, moved = labels.update(y)
        codes = np.ascontiguousarray(codes[skip:])
        assert labels.classes is not None
        n_cls, d = labels.classes.shape[0], x.shape[1]
        sums = getattr(self, "_sums", None)
        sq = getattr(self, "_sq_sums", None)
        counts = getattr(self, "counts_", None)
        if sums is None or counts is None or sq is None:
            sums, sq = np.zeros((n_cls, d)), np.zeros(n_cls)
            counts = np.zeros(n_cls, dtype=np.int64)
        elif moved is not None:
            s2, q2, c2 = np.zeros((n_cls, d)), np.zeros(n_cls), np.zeros(n_cls, dtype=np.int64)
            s2[moved], q2[moved], c2[moved] = sums, sq, counts
            sums, sq, counts = s2, q2, c2
        with progress_callback(self.progress, desc="partial_fit") as cb:
            sums, cnt = _core.neighbors_class_sums(x, codes, sums, counts.astype(np.uint64), cb)
        step = max(1, (1 << 22) // max(1, d))
        for start in range(0, x.shape[0], step):  # row chunks: memmaps stay on disk
            part = x[start : start + step]
            norms = np.einsum("ij,ij->i", part, part, dtype=np.float64)
            sq = sq + np.bincount(codes[start : start + step], weights=norms, minlength=n_cls)
        self._sums, self._sq_sums = sums, sq
        self.counts_ = cnt.astype(np.int64)
        self.classes_ = labels.classes
        self.n_features_in_ = d
        with np.errstate(invalid="ignore", divide="ignore"):
            self.means_ = sums / self.counts_[:, None]
            scatter = sq - np.einsum("ij,ij->i", sums, sums) / self.counts_
        seen = self.counts_ > 0
        dof = (int(self.counts_.sum()) - int(seen.sum())) * d
        total = float(np.maximum(scatter[seen], 0.0).sum())
        self.within_class_variance_ = total / dof if dof > 0 and total > 0 else 1.0
        return self

    def _fitted_means(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Means of the classes that have samples, and their codes (None: all)."""
        check_fitted(self, "classes_")
        seen = self.counts_ > 0
        _check_two_classes(self.classes_[seen], "prediction")
        if seen.all():
            return self.means_, None
        return np.ascontiguousarray(self.means_[seen]), np.flatnonzero(seen)

    def _scores(self, X: Any) -> np.ndarray:
        """Per-class scores (n_samples, n_classes), float32; -inf for empty classes."""
        means, idx = self._fitted_means()
        x = self._X(X, reset=False)
        metric = self._metric()
        s = _core.neighbors_nearest_mean_scores(x, means, metric)
        if idx is None:
            return s
        out = np.full((s.shape[0], self.classes_.shape[0]), -np.inf, dtype=np.float32)
        out[:, idx] = s
        return out

    def decision_function(self, X: Any) -> np.ndarray:
        """Class scores, float32: negative squared euclidean distances to the means, or
        cosine similarities; shape (n_samples, n_classes), or (n_samples,) with two
        classes (the score of ``classes_[1]`` minus that of ``classes_[0]``, as
        scikit-learn)."""
        s = self._scores(X)
        if s.shape[1] == 2:
            return s[:, 1] - s[:, 0]
        return s

    def predict(self, X: Any) -> np.ndarray:
        """The class of the nearest mean for every row of ``X``."""
        means, idx = self._fitted_means()
        x = self._X(X, reset=False)
        metric = self._metric()
        with progress_callback(self.progress, desc="predict") as cb:
            codes = _core.neighbors_nearest_mean_predict(x, means, metric, cb)
        return self.classes_[codes if idx is None else idx[codes]]

    def predict_proba(self, X: Any, temperature: float = 1.0) -> np.ndarray:
        """Class probabilities: ``softmax(logits / temperature)`` over the classes.

        With ``"euclidean"`` the logits are ``-|x - mean_c|^2 / (2 v)``, ``v`` being
        :attr:`within_class_variance_`: the posterior of classes that are isotropic
        Gaussians with the pooled within-class variance (and equal priors). The logits
        are thus relative to the data's own scale -- multiplying ``X`` by a constant does
        not change the probabilities, and unscaled features (pixels, raw embeddings) do
        not saturate them to 0/1. With ``"cosine"`` the logits are the cosine
        similarities (already scale-free). ``temperature`` > 1 flattens, < 1 sharpens.
        """
        t = check_float(temperature, "temperature", low=0.0, low_inclusive=False)
        s = self._scores(X).astype(np.float64)
        if self._metric() == "euclidean":
            s = s / (2.0 * self.within_class_variance_)
        return _softmax_rows(s / t)


class KNNClassifier(_Classifier):
    """k-nearest-neighbour classifier over stored embeddings (exact search).

    Parameters
    ----------
    n_neighbors : int
        Neighbours that vote.
    metric : {"cosine", "dot", "euclidean"}
        Under ``"cosine"`` an all-zero sample or query has similarity 0 to every vector
        (cosine distance 1), as in scikit-learn's ``cosine_similarity``.
    weights : {"uniform", "distance", "softmax"}
        ``"uniform"``: one vote each; ``"distance"``: ``1 / distance`` with euclidean
        distance (not squared) or cosine distance ``1 - similarity`` -- neighbours at
        distance 0, if any, take all the weight (scikit-learn's rule); ``"softmax"``:
        ``exp(score / temperature)`` with the similarity (or, for euclidean, the negative
        squared distance) as score.
    temperature : float
        Softmax temperature (``0.07`` as in the kNN-on-pretrained-features literature).
    progress : bool, callable or None
        Progress display of the neighbour search (see :mod:`thrifty`).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Sorted labels seen so far.
    n_samples_fit_ : int
    n_features_in_ : int

    Notes
    -----
    Vote ties go to the smallest class label. :meth:`partial_fit` appends samples, new
    classes may appear. With ``metric="euclidean"`` and uniform or distance weights the
    predictions equal scikit-learn's ``KNeighborsClassifier(algorithm="brute")``.

    Examples
    --------
    >>> import numpy as np
    >>> from thrifty.neighbors import KNNClassifier
    >>> X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    >>> knn = KNNClassifier(n_neighbors=3).fit(X, [0, 0, 1, 1])
    >>> knn.predict([[1, 0.2]]).tolist()
    [0]
    >>> knn.predict_proba([[1, 0.2]]).round(3).tolist()
    [[0.667, 0.333]]
    """

    _FITTED = ("classes_", "n_features_in_", "n_samples_fit_", "_labels", "_chunks", "_codes")

    def __init__(
        self,
        n_neighbors: int = 10,
        *,
        metric: str = "cosine",
        weights: str = "uniform",
        temperature: float = 0.07,
        progress: ProgressArg = None,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.weights = weights
        self.temperature = temperature
        self.progress = progress

    def _check_params(self) -> tuple[int, str, str, float]:
        k = check_int(self.n_neighbors, "n_neighbors", low=1)
        metric = check_choice(self.metric, "metric", _METRICS)
        weights = check_choice(self.weights, "weights", ("uniform", "distance", "softmax"))
        t = check_float(self.temperature, "temperature", low=0.0, low_inclusive=False)
        if weights == "distance" and metric == "dot":
            raise InvalidInputError('weights="distance" is not defined for metric="dot"')
        return k, metric, weights, t

    def fit(self, X: Any, y: Any) -> KNNClassifier:
        """Store the samples and labels (at least two classes)."""
        self._reset(self._FITTED)
        self._check_params()
        x, yy, _ = self._Xy(X, y, None, reset=True)
        _check_two_classes(np.unique(yy), "fit")
        return self._append(x, yy, 0)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> KNNClassifier:
        """Add samples; new classes may appear.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like, optional
            Labels to register now even without samples (scikit-learn's protocol);
            optional, since any call may bring new classes.
        """
        self._check_params()
        x, yy, n_cls = self._Xy(X, y, classes, reset=not hasattr(self, "n_features_in_"))
        return self._append(x, yy, n_cls)

    def _append(self, x: np.ndarray, y: np.ndarray, skip: int) -> KNNClassifier:
        labels: _Labels = self.__dict__.setdefault("_labels", _Labels())
        codes, moved = labels.update(y)
        chunks: list[np.ndarray] = self.__dict__.setdefault("_chunks", [])
        old = getattr(self, "_codes", np.zeros(0, dtype=np.uint32))
        if moved is not None:
            old = moved[old].astype(np.uint32)
        chunks.append(x)
        self._codes = np.concatenate([old, codes[skip:]])
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

    def _search(self, x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """Raw :func:`topk` scores and indices of ``k`` stored samples."""
        if k > self.n_samples_fit_:
            raise InvalidInputError(
                f"n_neighbors must be between 1 and the number of stored samples "
                f"({self.n_samples_fit_}), got {k}"
            )
        with progress_callback(self.progress, desc="kneighbors") as cb:
            return _core.neighbors_topk(x, self._keys(), k, metric, cb)

    def kneighbors(
        self, X: Any = None, n_neighbors: int | None = None, return_distance: bool = True
    ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
        """The nearest stored samples of each row of ``X``, nearest first.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), optional
            ``None``: the neighbours of every stored sample among the others (a sample
            is not its own neighbour), as scikit-learn.
        n_neighbors : int, optional
            Defaults to the estimator's ``n_neighbors``.
        return_distance : bool, default True

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors), float32
            Only with ``return_distance``. Euclidean distance (not squared) for
            ``"euclidean"``, ``1 - cosine similarity`` for ``"cosine"``, the negative
            inner product for ``"dot"``; ascending.
        indices : ndarray of shape (n_queries, n_neighbors), int64
            Row indices of the stored samples (equal scores: the lower index first).
        """
        check_fitted(self, "classes_")
        kk, metric, _, _ = self._check_params()
        if n_neighbors is not None:
            kk = check_int(n_neighbors, "n_neighbors", low=1)
        if X is None:
            if kk >= self.n_samples_fit_:
                raise InvalidInputError(
                    f"n_neighbors must be smaller than the number of stored samples "
                    f"({self.n_samples_fit_}) when X is None (a sample is not its own "
                    f"neighbour), got {kk}"
                )
            s, idx = drop_self(*self._search(self._keys(), kk + 1, metric))
        else:
            s, idx = self._search(self._X(X, reset=False), kk, metric)
        if not return_distance:
            return idx
        if metric == "euclidean":
            dist = np.sqrt(s)
        elif metric == "cosine":
            dist = (np.float32(1.0) - s).astype(np.float32)
        else:
            dist = -s
        return dist, idx

    def predict_proba(self, X: Any) -> np.ndarray:
        """Weighted class votes of the nearest samples, normalised to sum to 1."""
        check_fitted(self, "classes_")
        _check_two_classes(self.classes_, "prediction")
        k, metric, weights, t = self._check_params()
        scores, idx = self._search(self._X(X, reset=False), k, metric)
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
        proba = proba / proba.sum(axis=1, keepdims=True)
        return proba

    def predict(self, X: Any) -> np.ndarray:
        """Class with the largest vote (ties: the smallest label)."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]
