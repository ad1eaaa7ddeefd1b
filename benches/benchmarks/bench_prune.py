"""k-means and embedding pruning, side by side with faiss-cpu and scikit-learn.

* ``KMeansFit``: k-means over a grid (200k x 384 and 1M x 128 float32 Gaussian blobs,
  k = 256 and 1024, spherical and Euclidean, 10 iterations, no early stop). thrifty
  ``KMeans(max_points_per_centroid=256)`` vs faiss ``Kmeans`` (its default subsample of 256
  points per centroid), same starting centroids, then every point assigned;
  ``thrifty-all`` / ``faiss-all`` train on every point; scikit-learn ``KMeans`` (k-means++
  init included, every point). ``benches/kmeans_grid.py`` runs the same grid interleaved
  in one process and prints the ratio table.
* ``PruneStep``: the per-cluster step given a clustering (labels + centroids):
  ``prune.semdedup`` (eps 0.05) and ``prune.dbp`` vs a dense numpy implementation of the
  reference scripts' per-cluster loop (``E @ E.T``, upper-triangle max).
"""

import os

import numpy as np

from .common import require

N, DIM, K, ITERS = 200_000, 384, 256, 10


def _clustered(n, d, k, seed=0):
    """Gaussian mixture on the sphere: k random centres plus noise, normalised."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((k, d), dtype=np.float32)
    x = c[rng.integers(0, k, n)] + 0.7 * rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


class KMeansFit:
    """k-means fit + assign-all over the grid of ``benches/kmeans_grid.py``.

    Parameters: backend, shape (``n x d``), ``k``, metric. Both libraries train on
    ``256 * k`` rows when there are more (faiss's default ``max_points_per_centroid``;
    thrifty ``max_points_per_centroid=256``), start from the same ``k`` data rows, run
    10 iterations and then assign every point. ``thrifty-all`` / ``faiss-all`` train on
    every point; scikit-learn (k-means++ init, every point) runs only on the 200k x 384,
    k = 256 spherical point (data L2-normalised first).

    The other grid points take seconds to a minute per call, so they run only with
    ``THRIFTY_BENCH_GRID=full`` in the environment (otherwise skipped): the quick run
    stays as cheap as it was.
    """

    params = (["thrifty", "thrifty-all", "faiss", "faiss-all", "sklearn"],
              ["200000x384", "1000000x128"], [256, 1024], ["spherical", "euclidean"])
    param_names = ["backend", "shape", "k", "metric"]
    timeout = 1800
    number = 1
    repeat = 1

    def setup(self, backend, shape, k, metric):
        first = (shape, k, metric) == ("200000x384", 256, "spherical")
        if not first and os.environ.get("THRIFTY_BENCH_GRID") != "full":
            raise NotImplementedError("set THRIFTY_BENCH_GRID=full for the whole grid")
        if backend == "sklearn" and not first:
            raise NotImplementedError("scikit-learn only at 200000x384, k=256, spherical")
        if backend.endswith("-all") and not first:
            raise NotImplementedError("train-on-all variants only at the first grid point")
        n, d = (int(v) for v in shape.split("x"))
        rng = np.random.default_rng(0)
        c = rng.standard_normal((512, d), dtype=np.float32)
        x = c[rng.integers(0, 512, n)] + 0.7 * rng.standard_normal((n, d), dtype=np.float32)
        if metric == "spherical":
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        self.x = x
        pick = np.sort(np.random.default_rng(1).choice(n, k, replace=False))
        self.init = np.ascontiguousarray(x[pick])
        if backend.startswith("thrifty"):
            self.mod = require("thrifty.cluster")
        elif backend.startswith("faiss"):
            self.mod = require("faiss")
        else:
            self.mod = require("sklearn.cluster")

    def time_fit(self, backend, shape, k, metric):
        x, sph = self.x, metric == "spherical"
        n, d = x.shape
        if backend.startswith("thrifty"):
            mppc = None if backend.endswith("all") else 256
            self.mod.KMeans(k, spherical=sph, max_iter=ITERS, tol=0.0, init=self.init,
                            max_points_per_centroid=mppc, seed=1, progress=False).fit(x)
        elif backend.startswith("faiss"):
            mppc = n if backend.endswith("all") else 256
            km = self.mod.Kmeans(d, k, niter=ITERS, spherical=sph, seed=1,
                                 max_points_per_centroid=mppc, min_points_per_centroid=1)
            km.train(x, init_centroids=self.init)
            km.index.search(x, 1)
        else:
            self.mod.KMeans(k, max_iter=ITERS, tol=0.0, n_init=1, random_state=1).fit(x)


def numpy_semdedup(x, labels, centroids, eps):
    """The reference per-cluster loop in numpy (hard-first order)."""
    keep = np.ones(len(x), bool)
    for j in range(len(centroids)):
        mem = np.flatnonzero(labels == j)
        if len(mem) < 2:
            continue
        e = x[mem]
        d = 1 - e @ centroids[j]
        e = e[np.argsort(-d, kind="stable")]
        s = e @ e.T
        s = np.triu(s, 1)
        m = s.max(axis=0)
        keep[mem[np.argsort(-d, kind="stable")][m > 1 - eps]] = False
    return keep


class PruneStep:
    params = (["thrifty", "numpy"], ["semdedup", "dbp"])
    param_names = ["backend", "method"]
    timeout = 600
    number = 1
    repeat = 3

    def setup(self, backend, method):
        cl = require("thrifty.cluster")
        self.x = _clustered(N, DIM, K)
        km = cl.KMeans(K, spherical=True, max_iter=5, tol=0.0, init="random",
                       max_points_per_centroid=64, seed=0, progress=False).fit(self.x)
        self.labels, self.c = km.labels_, km.cluster_centers_
        self.prune = require("thrifty.prune")
        if backend == "numpy" and method == "dbp":
            raise NotImplementedError("no numpy DBP baseline")

    def time_step(self, backend, method):
        if backend == "numpy":
            numpy_semdedup(self.x, self.labels, self.c, 0.05)
        elif method == "semdedup":
            self.prune.semdedup(self.x, eps=0.05, labels=self.labels, centroids=self.c,
                                progress=False)
        else:
            self.prune.dbp(self.x, keep_fraction=0.5, labels=self.labels, centroids=self.c,
                           progress=False)




