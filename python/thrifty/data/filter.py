"""Online loss filtering with an automatic threshold (``thrifty.data``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from .._errors import InvalidInputError
from .._validation import check_float, check_int

__all__ = ["LossFilter", "loss_filter"]


def _as_losses(losses: Any) -> np.ndarray:
    if type(losses).__module__.startswith("torch") and hasattr(losses, "detach"):
        losses = losses.detach().cpu().numpy()
    a = np.asarray(losses)
    if a.ndim != 1:
        raise InvalidInputError(f"losses must be 1-D (one loss per example), got shape {a.shape}")
    if a.dtype.kind not in "fiu":
        raise InvalidInputError(f"losses must be numeric, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float64)


def loss_filter(losses: Any, *, threshold: float | None = None) -> np.ndarray:
    """Which examples of a batch to back-propagate: those with loss >= threshold.

    Stateless form of :class:`LossFilter`: without ``threshold`` the batch's own mean
    loss is used (the paper's rule applied to a single window).

    Examples
    --------
    >>> loss_filter([0.1, 2.0, 0.5, 1.4]).tolist()
    [False, True, False, True]
    >>> loss_filter([0.1, 2.0], threshold=0.05).tolist()
    [True, True]
    """
    a = _as_losses(losses)
    if threshold is None:
        if a.size == 0:
            return np.zeros(0, dtype=bool)
        if not np.isfinite(a).all():
            return _core.data_loss_mask(a, 0.0)  # raises with the position
        threshold = float(a.mean())
    else:
        threshold = check_float(threshold, "threshold")
    return _core.data_loss_mask(a, threshold)


class LossFilter:
    """Skip the backward pass on examples the model already fits (online filtering).

    The automatic threshold of "Efficient NLP Model Finetuning via Multistage Data
    Filtering" (Ouyang et al.): for the first ``warmup_steps`` batches every example
    is back-propagated and the threshold tracks the **mean of the most recent
    ``window`` per-example losses**; then it is frozen, and an example is
    back-propagated only if its loss is at least the threshold. The paper's code uses
    a window of 16 batches.

    Parameters
    ----------
    warmup_steps : int
        Batches of warm-up (>= 0; with 0 the first batch still sets the threshold).
    window : int, default=128
        Number of recent losses averaged into the threshold.

    Attributes
    ----------
    threshold_ : float or None
        Current threshold.
    skipped_fraction : float
        Fraction of all examples seen so far that were skipped.

    Examples
    --------
    >>> f = LossFilter(warmup_steps=1, window=4)
    >>> f([1.0, 2.0, 3.0, 4.0]).tolist()    # warm-up: threshold = 2.5
    [True, True, True, True]
    >>> f([0.5, 3.0]).tolist()
    [False, True]
    >>> f.skipped_fraction
    0.16666666666666666
    """

    def __init__(self, *, warmup_steps: int, window: int = 128) -> None:
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", low=0)
        self.window = check_int(window, "window", low=1)
        self._core = _core.LossFilterCore(self.warmup_steps, self.window)

    def __call__(self, losses: Any) -> np.ndarray:
        """Feed one batch of per-example losses; returns the boolean keep-mask."""
        return self._core.update(_as_losses(losses))

    loss_filter = __call__

    @property
    def threshold_(self) -> float | None:
        return self._core.stats()[0]

    @property
    def steps(self) -> int:
        """Batches fed so far."""
        return self._core.stats()[1]

    @property
    def skipped_fraction(self) -> float:
        _, _, seen, skipped = self._core.stats()
        return skipped / seen if seen else 0.0
