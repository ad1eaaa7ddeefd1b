"""Tile kernels of the fused linear losses (``loss.cu``), launched by
:func:`thrifty.torch.losses.linear_cross_entropy_loss` for CUDA tiles (private)."""

from __future__ import annotations

from typing import Any

from . import _runtime as _rt

_FILE = "loss.cu"
_KERNELS = tuple(_rt.kernel_name(f"lce_{op}", dt) for op in ("stats", "grad")
                 for dt in ("float32", "float16", "bfloat16"))


def stats_(o: Any, v0: int, target: Any, state: Any) -> None:
    """Fold logits tile ``o`` (rows x cols, classes ``v0 ..``) into the per-row float32
    ``state`` (rows x 6: running max, sum of exponentials, mean, M2, sum of squares of
    the non-target logits, target logit)."""
    rows, cols = o.shape
    _rt.launch(_FILE, "lce_stats", o, o.stride(0), rows, cols, v0, target, state, blocks=rows, dtype=o.dtype)


def grad_(o: Any, v0: int, target: Any, rowp: Any, go: Any, kind: int, n_classes: int) -> Any:
    """Overwrite tile ``o`` with ``dLoss/do * go`` and return it."""
    rows, cols = o.shape
    _rt.launch(_FILE, "lce_grad", o, o.stride(0), rows, cols, v0, target, rowp, go, kind, float(n_classes),
               blocks=rows, dtype=o.dtype)
    return o
