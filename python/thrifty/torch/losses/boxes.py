"""Bounding-box regression losses: distance-IoU and complete-IoU."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..._errors import InvalidInputError
from ._common import (
    _check_reduction,
    _float_tensor,
    _positive,
    _reduce,
    _upcast,
)

__all__ = [
    "distance_iou_loss",
    "DistanceIoULoss",
    "complete_iou_loss",
    "CompleteIoULoss",
]

# --------------------------------------------------------------------------- IoU losses
_BOX_EPS = 1e-7  # torchvision's default


def _boxes(pred: Any, target: Any) -> tuple[Tensor, Tensor]:
    pred = _float_tensor(pred, "pred")
    target = _float_tensor(target, "target")
    if pred.shape != target.shape or pred.shape[-1] != 4:
        raise InvalidInputError(
            f"pred and target must have the same shape (*, 4), got {tuple(pred.shape)} and {tuple(target.shape)}")
    for name, bx in (("pred", pred), ("target", target)):
        d = bx.detach()
        if d.numel():
            # one subtraction and one min/max pass: every width and height positive and
            # finite (NaN fails both) means the boxes pass the checks below
            lo, hi = torch.aminmax(d[..., 2:] - d[..., :2])
            if bool(lo > 0) and bool(hi < math.inf):
                continue
        if not torch.isfinite(d).all():
            raise InvalidInputError(f"{name} holds NaN or infinite coordinates")
        if not ((d[..., 2] > d[..., 0]) & (d[..., 3] > d[..., 1])).all():
            raise InvalidInputError(
                f"{name} holds degenerate boxes: every box needs x2 > x1 and y2 > y1 (x1, y1, x2, y2)")
    return _upcast(pred), _upcast(target)


def _diou(p: Tensor, g: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    x1, y1, x2, y2 = p.unbind(-1)
    gx1, gy1, gx2, gy2 = g.unbind(-1)
    iw = (torch.minimum(x2, gx2) - torch.maximum(x1, gx1)).clamp(min=0)
    ih = (torch.minimum(y2, gy2) - torch.maximum(y1, gy1)).clamp(min=0)
    inter = iw * ih
    union = (x2 - x1) * (y2 - y1) + (gx2 - gx1) * (gy2 - gy1) - inter
    iou = inter / (union + eps)
    cw = torch.maximum(x2, gx2) - torch.minimum(x1, gx1)
    ch = torch.maximum(y2, gy2) - torch.minimum(y1, gy1)
    diag2 = cw.square() + ch.square() + eps
    rho2 = ((x1 + x2 - gx1 - gx2) / 2).square() + ((y1 + y2 - gy1 - gy2) / 2).square()
    return 1.0 - iou + rho2 / diag2, iou


def distance_iou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-7, reduction: str = "mean") -> Tensor:
    """Distance-IoU loss ``1 - IoU + rho**2 / c**2`` (Zheng et al. 2020).

    Same formula and ``eps`` as ``torchvision.ops.distance_box_iou_loss``; boxes are
    ``(x1, y1, x2, y2)`` and must have positive width and height (degenerate boxes raise
    instead of producing NaN).

    Parameters
    ----------
    pred, target : Tensor of shape (*, 4)
    eps : float
    reduction : {"mean", "sum", "none"}

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.losses import distance_iou_loss
    >>> box = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    >>> distance_iou_loss(box, box).item() < 1e-6
    True
    """
    _check_reduction(reduction)
    eps = _positive(eps, "eps", allow_zero=True)
    p, g = _boxes(pred, target)
    return _reduce(_diou(p, g, eps)[0], reduction)


def complete_iou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-7, reduction: str = "mean") -> Tensor:
    """Complete-IoU loss: DIoU ``+ alpha v`` with
    ``v = 4 / pi**2 (atan(w_g / h_g) - atan(w / h))**2`` and
    ``alpha = v / (1 - IoU + v + eps)`` held constant, as
    ``torchvision.ops.complete_box_iou_loss``.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.losses import complete_iou_loss
    >>> p = torch.tensor([[0.0, 0.0, 2.0, 1.0]]); g = torch.tensor([[0.0, 0.0, 1.0, 2.0]])
    >>> complete_iou_loss(p, g).item() > 0
    True
    """
    _check_reduction(reduction)
    eps = _positive(eps, "eps", allow_zero=True)
    p, g = _boxes(pred, target)
    diou, iou = _diou(p, g, eps)
    w, h = p[..., 2] - p[..., 0], p[..., 3] - p[..., 1]
    wg, hg = g[..., 2] - g[..., 0], g[..., 3] - g[..., 1]
    v = (4.0 / math.pi**2) * (torch.atan(wg / hg) - torch.atan(w / h)).square()
    with torch.no_grad():
        alpha = v / (1.0 - iou + v + eps)
    return _reduce(diou + alpha * v, reduction)


class DistanceIoULoss(nn.Module):
    """Module form of :func:`distance_iou_loss`."""

    def __init__(self, *, eps: float = 1e-7, reduction: str = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.eps = _positive(eps, "eps", allow_zero=True)
        self.reduction = reduction

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return distance_iou_loss(pred, target, eps=self.eps, reduction=self.reduction)


class CompleteIoULoss(DistanceIoULoss):
    """Module form of :func:`complete_iou_loss`."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return complete_iou_loss(pred, target, eps=self.eps, reduction=self.reduction)
