"""k-means and embedding pruning, side by side with faiss-cpu and scikit-learn.

Shapes from issue 5: 200k x 384 float32, k = 256, 10 iterations (no early stop).
* ``KMeansFit``: spherical k-means. thrifty ``KMeans(spherical=True, init="random",
  max_points_per_centroid=256)`` vs faiss ``Kmeans(spherical=True)`` (default subsample of
  256 points per centroid; random init) — both train on 65,536 points then assign all;
  ``thrifty-all`` / ``faiss-all`` train on every point; scikit-learn ``KMeans`` (k-means++
  init included, every point; data L2-normalised first).
* ``PruneStep``: the per-cluster step given a clustering (labels + centroids):
  ``prune.semdedup`` (eps 0.05) and ``prune.dbp`` vs a dense numpy implementation of the
  reference scripts' per-cluster loop (``E @ E.T``, upper-triangle max).
"""

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
    params = (["thrifty", "thrifty-all", "faiss", "faiss-all", "sklearn"],)
    param_names = ["backend"]
    timeout = 1200
    number = 1
    repeat = 1

    def setup(self, backend):
        self.x = _clustered(N, DIM, K)
        if backend.startswith("thrifty"):
            self.mod = require("thrifty.cluster")
        elif backend.startswith("faiss"):
            self.mod = require("faiss")
        else:
            self.mod = require("sklearn.cluster")

    def time_fit(self, backend):
        x = self.x
        if backend.startswith("thrifty"):
            mppc = None if backend.endswith("all") else 256
            self.mod.KMeans(K, spherical=True, max_iter=ITERS, tol=0.0, init="random",
                            max_points_per_centroid=mppc, seed=1, progress=False).fit(x)
        elif backend.startswith("faiss"):
            kw = {"max_points_per_centroid": N} if backend.endswith("all") else {}
            km = self.mod.Kmeans(DIM, K, niter=ITERS, spherical=True, seed=1, **kw)
            km.train(x)
            km.index.search(x, 1)
        else:
            self.mod.KMeans(K, max_iter=ITERS, tol=0.0, n_init=1, random_state=1).fit(x)


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




