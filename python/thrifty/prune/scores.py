"""Score-based data selection from your own training runs.

* :func:`el2n` — EL2N (Paul et al. 2021): ``||softmax - onehot(y)||_2``, averaged over runs.
* :func:`forgetting_events` — Toneva et al. 2019: correct -> incorrect transitions over
  epochs; samples never learned get ``inf``.
* :func:`first_consistent_epoch` — Late Stopping (Yuan et al. 2023): first epoch after
  which a sample stays correct ``k`` consecutive epochs (``inf`` if never).
* :func:`select` — indices of the ``round(keep_fraction * n)`` highest (or lowest) scores.

Examples
--------
>>> import numpy as np
>>> from thrifty.prune.scores import forgetting_events, select
>>> correct = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1]], dtype=bool)  # T=3 epochs, N=3
>>> forgetting_events(correct).tolist()
[1.0, inf, 0.0]
>>> select([0.1, 0.9, 0.5], 2 / 3).tolist()
[1, 2]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._errors import InvalidInputError
from .._validation import check_choice, check_float, check_int

__all__ = ["el2n", "forgetting_events", "first_consistent_epoch", "select"]


def el2n(probs: Any, labels: Any) -> np.ndarray:
    """EL2N scores.

    Parameters
    ----------
    probs : array-like of shape (n, C) or (runs, n, C)
        Predicted class probabilities (rows sum to 1).
    labels : array-like of shape (n,)
        Integer labels in ``0..C-1``.

    Returns
    -------
    ndarray of float64, shape (n,)
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[1] == 0 or p.shape[2] == 0:
        raise InvalidInputError(f"probs must have shape (n, C) or (runs, n, C), got {np.shape(probs)}")
    if not np.isfinite(p).all():
        raise InvalidInputError("probs contains NaN or infinite values")
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != p.shape[1] or y.dtype.kind not in "iu":
        raise InvalidInputError(f"labels must be {p.shape[1]} integers")
    if y.size and (y.min() < 0 or y.max() >= p.shape[2]):
        raise InvalidInputError(f"labels must be in 0..{p.shape[2] - 1}")
    onehot = np.zeros(p.shape[1:])
    onehot[np.arange(y.size), y] = 1.0
    return np.linalg.norm(p - onehot[None], axis=2).mean(axis=0)


def _correct(correct: Any) -> np.ndarray:
    c = np.asarray(correct)
    if c.ndim != 2 or c.size == 0:
        raise InvalidInputError(f"correct must be a non-empty (epochs, n) array, got shape {c.shape}")
    if c.dtype != bool:
        raise InvalidInputError(f"correct must be boolean, got dtype {c.dtype}")
    return c


def forgetting_events(correct: Any) -> np.ndarray:
    """Number of correct -> incorrect transitions per sample (``inf`` if never correct).

    ``correct`` is a boolean (epochs, n) array. Returns float64 of shape (n,).
    """
    c = _correct(correct)
    ev = (c[:-1] & ~c[1:]).sum(axis=0).astype(np.float64)
    ev[~c.any(axis=0)] = np.inf
    return ev


def first_consistent_epoch(correct: Any, k: int) -> np.ndarray:
    """First epoch ``e`` with samples correct at epochs ``e .. e+k-1`` (``inf`` if none).

    ``correct`` is a boolean (epochs, n) array; a high value suggests a mislabeled sample.
    """
    c = _correct(correct)
    k = check_int(k, "k", low=1, high=c.shape[0])
    run = np.zeros(c.shape[1], dtype=np.int64)
    out = np.full(c.shape[1], np.inf)
    for t in range(c.shape[0]):
        run = np.where(c[t], run + 1, 0)
        hit = (run >= k) & np.isinf(out)
        out[hit] = t - k + 1
    return out


def select(scores: Any, keep_fraction: float, *, keep: str = "high") -> np.ndarray:
    """Sorted indices of the ``floor(keep_fraction * n + 0.5)`` (at least 1) highest
    (``keep="high"``) or lowest scores; ties by index."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise InvalidInputError(f"scores must be a non-empty 1-D array, got shape {s.shape}")
    if np.isnan(s).any():
        raise InvalidInputError("scores contains NaN")
    kf = check_float(keep_fraction, "keep_fraction", low=0.0, high=1.0, low_inclusive=False)
    keep = check_choice(keep, "keep", ("high", "low"))
    m = max(1, min(s.size, int(math.floor(kf * s.size + 0.5))))
    order = np.lexsort((np.arange(s.size), -s if keep == "high" else s))
    return np.sort(order[:m]).astype(np.int64)
