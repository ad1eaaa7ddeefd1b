"""k-means clustering (Lloyd's algorithm), plain or spherical, in Rust.

Assignment reuses thrifty's blocked float32 product fused with a top-1 selection
(:func:`thrifty.neighbors.topk`), so the points x centroids distance matrix is never
stored. Centroid sums are float64 in row order: results are deterministic for a given
``seed`` and never depend on the thread count. Like faiss, training may use a seeded
subsample of ``max_points_per_centroid * n_clusters`` points; every point is then
assigned to the final centroids. Empty clusters are re-seeded with the point farthest
from its centroid. Convergence as scikit-learn: the summed squared centroid shift is at
most ``tol`` times the mean per-feature variance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sklearn.base import ClusterMixin

from . import _core
from ._base import Estimator, check_fitted, validate_X
from ._errors import InvalidInputError
from ._progress import ProgressArg, progress_callback
from ._validation import as_float_matrix, check_bool, check_float, check_int

__all__ = ["KMeans"]


class KMeans(ClusterMixin, Estimator):
    """k-means clustering (a scikit-learn estimator: ``BaseEstimator`` + ``ClusterMixin``).

    Parameters
    ----------
    n_clusters : int, default 8
        Number of clusters, ``1 <= n_clusters <= n_samples``.
    spherical : bool, default False
        Cluster L2-normalised points with unit-length centroids (cosine k-means, as
        faiss ``spherical=True``); all-zero rows are rejected.
    max_iter : int, default 100
        Maximum Lloyd iterations.
    tol : float, default 1e-4
        Relative tolerance on the centroid shift (scikit-learn's definition).
    init : {"k-means++", "random"} or array of shape (n_clusters, n_features)
        Starting centroids.
    max_points_per_centroid : int or None, default None
        Train on a seeded subsample of at most this many points per centroid (faiss uses
        256); ``None`` trains on every point.
    seed : int, default 0
        Random seed (initialisation and subsampling).
    progress : bool, callable or None
        Progress display (see :mod:`thrifty`).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features), float32
    labels_ : ndarray of shape (n_samples,), int64
    inertia_ : float
        Sum of squared distances of every point (normalised when spherical) to its
        centroid.
    n_iter_ : int
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from thrifty.cluster import KMeans
    >>> X = np.array([[0, 0], [0, 1], [10, 10], [10, 11]], dtype=np.float32)
    >>> km = KMeans(2, seed=0).fit(X)
    >>> sorted(np.bincount(km.labels_).tolist())
    [2, 2]
    >>> round(km.inertia_, 3)
    1.0
    >>> km.predict(np.array([[9, 9]], dtype=np.float32)) == km.labels_[2]
    array([ True])
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        spherical: bool = False,
        max_iter: int = 100,
        tol: float = 1e-4,
        init: Any = "k-means++",
        max_points_per_centroid: int | None = None,
        seed: int = 0,
        progress: ProgressArg = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.spherical = spherical
        self.max_iter = max_iter
        self.tol = tol
        self.init = init
        self.max_points_per_centroid = max_points_per_centroid
        self.seed = seed
        self.progress = progress

    def fit(self, X: Any, y: Any = None) -> KMeans:
        """Cluster ``X`` (array-like of shape (n_samples, n_features)); returns self."""
        for attr in ("cluster_centers_", "labels_", "inertia_", "n_iter_", "n_features_in_"):
            self.__dict__.pop(attr, None)
        x = as_float_matrix(X, "X", convert=True)
        k = check_int(self.n_clusters, "n_clusters", low=1)
        if k > x.shape[0]:
            raise InvalidInputError(
                f"n_clusters ({k}) is larger than the number of points ({x.shape[0]})"
            )
        spherical = check_bool(self.spherical, "spherical")
        max_iter = check_int(self.max_iter, "max_iter", low=1)
        tol = check_float(self.tol, "tol", low=0.0)
        seed = check_int(self.seed, "seed", low=0, high=2**64 - 1)
        mppc = self.max_points_per_centroid
        if mppc is not None:
            mppc = check_int(mppc, "max_points_per_centroid", low=1)
        init_arr = None
        init = self.init
        if isinstance(init, str):
            if init not in ("k-means++", "random"):
                raise InvalidInputError(
                    f"init must be 'k-means++', 'random' or an array, got {init!r}"
                )
        else:
            init_arr = as_float_matrix(init, "init", n_features=x.shape[1])
            if init_arr.shape[0] != k:
                raise InvalidInputError(
                    f"init has {init_arr.shape[0]} rows but n_clusters is {k}"
                )
            init = "array"
        with progress_callback(self.progress, desc="k-means") as cb:
            c, labels, inertia, n_iter = _core.cluster_kmeans(
                x, k, spherical, max_iter, tol, init, init_arr, mppc, seed, cb
            )
        self.cluster_centers_ = c
        self.labels_ = labels
        self.inertia_ = float(inertia)
        self.n_iter_ = int(n_iter)
        self.n_features_in_ = int(x.shape[1])
        return self

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit and return ``labels_``."""
        return self.fit(X).labels_

    def predict(self, X: Any) -> np.ndarray:
        """Index of the nearest centroid of every row (int64)."""
        check_fitted(self, "cluster_centers_")
        x = validate_X(self, X, reset=False)
        with progress_callback(self.progress, desc="k-means assign") as cb:
            labels, _ = _core.cluster_kmeans_assign(
                x, self.cluster_centers_, check_bool(self.spherical, "spherical"), cb
            )
        return labels
