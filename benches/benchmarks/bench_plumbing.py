"""The shared matrix helpers every capability uses, against numpy.

``linalg_column_mean`` accumulates in float64 (as NearestMean and k-means need);
numpy's equivalent is ``X.mean(axis=0, dtype=np.float64)``. ``linalg_normalize_rows`` is the
L2 row normalisation behind every cosine metric; numpy's is ``X / norm(X, axis=1)``.
"""

import numpy as np

from .common import embeddings, require


class ColumnMean:
    params = (["thrifty", "numpy"], [(100_000, 128), (1_000_000, 64)])
    param_names = ["backend", "shape"]

    def setup(self, backend, shape):
        self.x = embeddings(*shape)
        if backend == "thrifty":
            self.core = require("thrifty._core")

    def time_column_mean(self, backend, shape):
        if backend == "thrifty":
            self.core.linalg_column_mean(self.x)
        else:
            self.x.mean(axis=0, dtype=np.float64)


class NormalizeRows:
    params = (["thrifty", "numpy"], [(100_000, 128), (1_000_000, 64)])
    param_names = ["backend", "shape"]

    def setup(self, backend, shape):
        self.x = embeddings(*shape)
        if backend == "thrifty":
            self.core = require("thrifty._core")

    def time_normalize_rows(self, backend, shape):
        if backend == "thrifty":
            self.core.linalg_normalize_rows(self.x)
        else:
            n = np.linalg.norm(self.x, axis=1, keepdims=True)
            self.x / np.where(n > 0, n, 1)

    def peakmem_normalize_rows(self, backend, shape):
        self.time_normalize_rows(backend, shape)
