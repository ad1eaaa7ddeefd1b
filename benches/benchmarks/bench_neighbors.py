"""Nearest neighbours and nearest-mean classifiers, side by side with scikit-learn and
faiss-cpu.

Shapes from issue 4: 100k x 384 float32 keys, 2k-10k queries, k = 10.
* ``TopK``: thrifty.neighbors.topk vs scikit-learn ``NearestNeighbors(algorithm="brute")``
  vs faiss ``IndexFlatIP`` (cosine: keys normalised when the index is built, queries
  normalised inside the timed call) / ``IndexFlatL2``.
* ``KNNPredict``: ``KNNClassifier.predict`` vs ``KNeighborsClassifier(algorithm="brute")``.
* ``NearestMean``: fit / partial_fit / predict vs ``NearestCentroid``.
* ``GemmRate``: GFLOP/s of thrifty's fused top-k and of numpy's BLAS ``Q @ K.T`` (the
  machine's matrix-multiply rate), counting ``2 * n_queries * n_keys * d`` flops.
"""

import time

import numpy as np

from .common import embeddings, require

N_KEYS, DIM, K = 100_000, 384, 10


class TopK:
    params = (["thrifty", "sklearn", "faiss"], ["cosine", "euclidean"], [2000, 10000])
    param_names = ["backend", "metric", "n_queries"]
    timeout = 900
    number = 1
    repeat = 1

    def setup(self, backend, metric, n_queries):
        self.keys = embeddings(N_KEYS, DIM, seed=1)
        self.q = embeddings(n_queries, DIM, seed=2)
        if backend == "thrifty":
            self.nb = require("thrifty.neighbors")
        elif backend == "sklearn":
            nn = require("sklearn.neighbors")
            self.index = nn.NearestNeighbors(n_neighbors=K, algorithm="brute", metric=metric)
            self.index.fit(self.keys)
        else:
            self.faiss = require("faiss")
            if metric == "cosine":
                k = self.keys.copy()
                self.faiss.normalize_L2(k)
                self.index = self.faiss.IndexFlatIP(DIM)
                self.index.add(k)
            else:
                self.index = self.faiss.IndexFlatL2(DIM)
                self.index.add(self.keys)

    def time_topk(self, backend, metric, n_queries):
        if backend == "thrifty":
            self.nb.topk(self.q, self.keys, K, metric=metric, progress=False)
        elif backend == "sklearn":
            self.index.kneighbors(self.q)
        else:
            q = self.q
            if metric == "cosine":
                q = q.copy()
                self.faiss.normalize_L2(q)
            self.index.search(q, K)


class KNNPredict:
    params = (["thrifty", "sklearn"], [2000])
    param_names = ["backend", "n_queries"]
    timeout = 900
    number = 1
    repeat = 1

    def setup(self, backend, n_queries):
        keys = embeddings(N_KEYS, DIM, seed=1)
        y = np.random.default_rng(3).integers(0, 100, N_KEYS)
        self.q = embeddings(n_queries, DIM, seed=2)
        if backend == "thrifty":
            nb = require("thrifty.neighbors")
            self.clf = nb.KNNClassifier(K, metric="cosine").fit(keys, y)
        else:
            nn = require("sklearn.neighbors")
            self.clf = nn.KNeighborsClassifier(K, algorithm="brute", metric="cosine").fit(keys, y)

    def time_predict(self, backend, n_queries):
        self.clf.predict(self.q)


class NearestMean:
    params = (["thrifty", "sklearn"],)
    param_names = ["backend"]
    timeout = 600

    def setup(self, backend):
        self.x = embeddings(N_KEYS, DIM, seed=1)
        self.y = np.random.default_rng(3).integers(0, 100, N_KEYS)
        self.q = embeddings(10_000, DIM, seed=2)
        if backend == "thrifty":
            self.cls = require("thrifty.neighbors").NearestMeanClassifier
        else:
            self.cls = require("sklearn.neighbors").NearestCentroid
        self.fitted = self.cls().fit(self.x, self.y)

    def time_fit(self, backend):
        self.cls().fit(self.x, self.y)

    def time_partial_fit_10_chunks(self, backend):
        if backend == "sklearn":
            # NearestCentroid cannot stream: the equivalent is a refit on all data seen.
            for i in range(1, 11):
                self.cls().fit(self.x[: i * 10_000], self.y[: i * 10_000])
        else:
            clf = self.cls()
            for i in range(10):
                clf.partial_fit(self.x[i * 10_000 : (i + 1) * 10_000], self.y[i * 10_000 : (i + 1) * 10_000])

    def time_predict(self, backend):
        self.fitted.predict(self.q)


class GemmRate:
    params = (["thrifty-topk-dot", "numpy-matmul"],)
    param_names = ["backend"]
    timeout = 600
    unit = "GFLOP/s"

    def setup(self, backend):
        self.keys = embeddings(N_KEYS, DIM, seed=1)
        self.q = embeddings(4000, DIM, seed=2)
        if backend.startswith("thrifty"):
            self.nb = require("thrifty.neighbors")

    def track_gflops(self, backend):
        flops = 2.0 * self.q.shape[0] * N_KEYS * DIM
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            if backend.startswith("thrifty"):
                self.nb.topk(self.q, self.keys, K, metric="dot", progress=False)
            else:
                self.q @ self.keys.T
            best = min(best, time.perf_counter() - t0)
        return flops / best / 1e9
