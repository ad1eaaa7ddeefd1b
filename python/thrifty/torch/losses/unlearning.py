"""Unlearning losses: negative preference optimisation (NPO)."""

from __future__ import annotations

import torch.nn.functional as F
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
    "npo_loss",
    "NPOLoss",
]

# ------------------------------------------------------------------------------- NPO
def npo_loss(logp: Tensor, logp_ref: Tensor, beta: float = 0.1, *, reduction: str = "mean") -> Tensor:
    """Negative preference optimisation loss for unlearning (Zhang et al. 2024).

    ``2 / beta * softplus(beta (log pi_theta - log pi_ref))`` per forget sample, usually
    added to a retain loss. ``logp_ref`` comes from the frozen reference model.

    Parameters
    ----------
    logp, logp_ref : Tensor of the same shape
        Sequence log-likelihoods under the model and the reference model.
    beta : float, > 0
    reduction : {"mean", "sum", "none"}

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.losses import npo_loss
    >>> round(npo_loss(torch.tensor([-3.0]), torch.tensor([-3.0])).item(), 4)  # 20 log 2
    13.8629
    """
    _check_reduction(reduction)
    beta = _positive(beta, "beta")
    logp = _float_tensor(logp, "logp")
    logp_ref = _float_tensor(logp_ref, "logp_ref")
    if logp.shape != logp_ref.shape:
        raise InvalidInputError(
            f"logp has shape {tuple(logp.shape)} but logp_ref has {tuple(logp_ref.shape)}")
    diff = _upcast(logp) - _upcast(logp_ref)
    return _reduce(F.softplus(beta * diff) * (2.0 / beta), reduction)


class NPOLoss(nn.Module):
    """Module form of :func:`npo_loss`."""

    def __init__(self, beta: float = 0.1, *, reduction: str = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.beta = _positive(beta, "beta")
        self.reduction = reduction

    def forward(self, logp: Tensor, logp_ref: Tensor) -> Tensor:
        return npo_loss(logp, logp_ref, self.beta, reduction=self.reduction)
