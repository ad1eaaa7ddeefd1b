"""Ternary (BitNet b1.58) weight scale shared by :mod:`thrifty.torch.nn` and the CUDA
backend's fused layer (private)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_choice

SCALES = ("absmean", "absmedian")


def check_scale(scale: str) -> str:
    """Validate the scale rule of a ternary weight."""
    return check_choice(scale, "scale", SCALES)


def weight_scale(w: Tensor, scale: str) -> Tensor:
    """``s = 1 / max(gamma, 1e-5)`` of a float32 weight: ``gamma = mean|W|`` accumulated
    in float64 (``"absmean"``) or the lower median of ``|W|`` (``"absmedian"``), as
    :mod:`thrifty.quant` computes them."""
    a = w.abs()
    if scale == "absmean":
        gamma = a.mean(dtype=torch.float64).float()
    else:
        gamma = a.flatten().median()  # the lower middle value, as thrifty.quant
    return 1.0 / gamma.clamp(min=1e-5)
