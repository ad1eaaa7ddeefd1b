"""Helpers shared by the benchmarks.

Every benchmark class is parameterised by ``backend`` so that thrifty and the library a
user would otherwise pick run side by side in one ``asv run``; a backend that is not
installed is skipped (``SkipNotImplemented``), never silently replaced.
"""

from __future__ import annotations

import importlib

import numpy as np
from asv_runner.benchmarks.mark import SkipNotImplemented


def require(module: str):
    """Import ``module`` or skip the benchmark if it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as e:  # say why: "not installed" can hide a broken build
        raise SkipNotImplemented(f"{module} cannot be imported: {e}") from None


def embeddings(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Gaussian float32 embeddings, C-contiguous."""
    return np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)
