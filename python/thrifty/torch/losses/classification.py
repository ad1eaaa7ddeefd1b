"""Classification losses on logits: squentropy, spherical Z-loss, comp-sum and generalized
cross-entropy (each a function and an ``nn.Module``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..._errors import InvalidInputError
from ..._validation import check_float
from ._common import (
    _check_ignore_index,
    _check_reduction,
    _compute_dtype,
    _ignored_rows,
    _logits_target,
    _positive,
    _reduce_valid,
    _row_chunks,
    _upcast,
)

__all__ = [
    "squentropy_loss",
    "SquentropyLoss",
    "spherical_z_loss",
    "SphericalZLoss",
    "comp_sum_loss",
    "CompSumLoss",
    "generalized_cross_entropy_loss",
    "GeneralizedCrossEntropyLoss",
]

# ------------------------------------------------------------------------- squentropy
class _SquentropyFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: Tensor, target: Tensor, ignored: Tensor | None) -> Tensor:  # type: ignore[override]
        n, c = logits.shape
        cd = _compute_dtype(logits.dtype)
        out = torch.empty(n, dtype=cd, device=logits.device)
        lse = torch.empty(n, dtype=cd, device=logits.device)
        for s in _row_chunks(n, c):
            x = logits[s].to(cd)
            idx = target[s, None]
            lse[s] = torch.logsumexp(x, 1)
            o_y = x.gather(1, idx).squeeze(1)
            rest = torch.linalg.vecdot(x, x) - o_y * o_y  # sum of squares without o_y
            # where o_y**2 dominates, the difference loses digits: recompute those rows
            bad = torch.nonzero(rest < o_y * o_y).squeeze(1)
            if bad.numel():
                xr = x[bad].scatter(1, idx[bad], 0.0)
                rest[bad] = torch.linalg.vecdot(xr, xr)
            out[s] = lse[s] - o_y + rest / (c - 1)
        if ignored is not None:
            out.index_fill_(0, ignored, 0.0)
        ctx.save_for_backward(logits, target, lse, ignored)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        logits, target, lse, ignored = ctx.saved_tensors
        n, c = logits.shape
        cd = lse.dtype
        coef = 2.0 / (c - 1)
        grad = torch.empty_like(logits)
        direct = grad.dtype == cd  # write straight into the gradient, no temporary
        for s in _row_chunks(n, c):
            x = logits[s].to(cd)
            idx = target[s, None]
            p = grad[s] if direct else torch.empty_like(x)
            torch.sub(x, lse[s, None], out=p).exp_()  # softmax
            p.add_(x, alpha=coef)
            # target column: softmax - 1, and no square term
            p.scatter_add_(1, idx, -1.0 - coef * x.gather(1, idx))
            p.mul_(grad_out[s, None].to(cd))
            if not direct:
                grad[s] = p
        if ignored is not None:  # even where their logits are not finite
            grad.index_fill_(0, ignored, 0.0)
        return grad, None, None


def squentropy_loss(
    logits: Tensor, target: Tensor, *, reduction: str = "mean", ignore_index: int = -100
) -> Tensor:
    """Squentropy: cross-entropy plus the mean square of the incorrect-class logits.

    ``loss = logsumexp(o) - o_y + sum_{j != y} o_j**2 / (C - 1)`` (Hui, Belkin & Wright,
    arXiv 2302.03952); no hyper-parameters.

    Parameters
    ----------
    logits : Tensor of shape (*, C), C >= 2
        Unnormalised scores; float16/bfloat16 are computed in float32.
    target : integer Tensor of shape (*)
        Class indices in ``[0, C)``, or ``ignore_index``.
    reduction : {"mean", "sum", "none"}
        "mean" averages over the rows whose target is not ``ignore_index``.
    ignore_index : int
        Rows with this target contribute 0 to the loss and get a zero gradient, as in
        ``F.cross_entropy``; if every row is ignored, "mean" is 0 (not NaN).

    Returns
    -------
    Tensor
        Scalar, or shape ``(*)`` for ``reduction="none"``.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.losses import squentropy_loss
    >>> logits = torch.tensor([[2.0, 0.0, -1.0]])
    >>> round(squentropy_loss(logits, torch.tensor([0])).item(), 4)   # CE 0.1698 + 1/2
    0.6698
    """
    _check_reduction(reduction)
    flat, t, valid, batch = _logits_target(logits, target, min_classes=2, ignore_index=ignore_index)
    loss = _SquentropyFn.apply(flat.contiguous(), t, _ignored_rows(valid))
    return _reduce_valid(loss, valid, batch, reduction)


class SquentropyLoss(nn.Module):
    """Module form of :func:`squentropy_loss`."""

    def __init__(self, *, reduction: str = "mean", ignore_index: int = -100) -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction
        self.ignore_index = _check_ignore_index(ignore_index)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return squentropy_loss(logits, target, reduction=self.reduction, ignore_index=self.ignore_index)


# --------------------------------------------------------------------- spherical Z-loss
_Z_EPS = 1e-12  # added to the variance: all-equal logits give a finite (huge) gradient


class _ZLossFn(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, logits: Tensor, target: Tensor, a: float, b: float, ignored: Tensor | None
    ) -> Tensor:
        n, c = logits.shape
        cd = _compute_dtype(logits.dtype)
        mu = torch.empty(n, dtype=cd, device=logits.device)
        sigma = torch.empty_like(mu)
        for s in _row_chunks(n, c):
            x = logits[s].to(cd)
            m = x.mean(1)
            mu[s] = m
            sigma[s] = ((x - m[:, None]).square_().mean(1) + _Z_EPS).sqrt_()
        o_y = logits.gather(1, target[:, None]).squeeze(1).to(cd)
        z_y = (o_y - mu) / sigma
        out = F.softplus(a * (b - z_y)) / a
        if ignored is not None:
            out.index_fill_(0, ignored, 0.0)
        ctx.save_for_backward(logits, target, mu, sigma, z_y, ignored)
        ctx.a, ctx.b = a, b
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None, None, None, None]:  # type: ignore[override]
        logits, target, mu, sigma, z_y, ignored = ctx.saved_tensors
        n, c = logits.shape
        cd = mu.dtype
        # dL/dz_y = -sigmoid(a (b - z_y)); dz_y/do_j = (delta_jy - 1/C - z_y z_j / C) / sigma
        k = -torch.sigmoid(ctx.a * (ctx.b - z_y)) * grad_out.to(cd) / sigma
        grad = torch.empty_like(logits)
        direct = grad.dtype == cd
        for s in _row_chunks(n, c):
            x = logits[s].to(cd)
            p = grad[s] if direct else torch.empty_like(x)
            torch.sub(x, mu[s, None], out=p).mul_((-z_y[s] / (c * sigma[s]))[:, None]).sub_(1.0 / c)
            p.scatter_add_(1, target[s, None], torch.ones_like(p[:, :1]))
            p.mul_(k[s, None])
            if not direct:
                grad[s] = p
        if ignored is not None:
            grad.index_fill_(0, ignored, 0.0)
        return grad, None, None, None, None


def _check_ab(a: Any, b: Any) -> tuple[float, float]:
    return _positive(a, "a"), check_float(b, "b")


def spherical_z_loss(
    logits: Tensor,
    target: Tensor,
    *,
    a: float = 1.0,
    b: float = 0.0,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> Tensor:
    """The spherical Z-loss of de Brebisson & Vincent (arXiv 1604.08859).

    ``z = (o - mean(o)) / std(o)`` over the ``C`` classes, with the population standard
    deviation ``std(o) = sqrt(sum(o**2) / C - mean(o)**2)``, and
    ``loss = softplus(a (b - z_y)) / a`` (the paper's ``L_Z``). It depends on the logits
    only through ``sum(o)``, ``sum(o**2)`` and ``o_y`` (the spherical family), and is
    shift and scale invariant. Not PaLM's ``(log Z)**2`` "z-loss".

    ``a`` (sharpness) and ``b`` (location) are hyper-parameters that the paper tunes on
    validation data per task; it publishes no universal default. The defaults
    ``a=1, b=0`` (``softplus(-z_y)``) are the loss in the authors' reference code
    (Vincent & de Brebisson's ``factored_output_layer`` repository, Z-loss example).
    Larger ``a`` approaches the hinge ``max(0, b - z_y)``; ``z_y`` can never exceed
    ``sqrt(C - 1)``, so ``b`` beyond that keeps the loss from saturating.

    Parameters
    ----------
    logits : Tensor of shape (*, C), C >= 2
    target : integer Tensor of shape (*)
        Class indices in ``[0, C)``, or ``ignore_index``.
    a, b : float
        Sharpness (> 0) and location of the softplus.
    reduction : {"mean", "sum", "none"}
        "mean" averages over the rows whose target is not ``ignore_index``.
    ignore_index : int
        Rows with this target contribute 0 and get a zero gradient (as in
        ``F.cross_entropy``); if every row is ignored, "mean" is 0 (not NaN).

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.losses import spherical_z_loss
    >>> o = torch.tensor([[3.0, 1.0, -1.0, -3.0]])
    >>> z0 = 3.0 / 5 ** 0.5                     # (3 - 0) / std
    >>> expect = torch.nn.functional.softplus(torch.tensor(-z0))      # a=1, b=0
    >>> torch.allclose(spherical_z_loss(o, torch.tensor([0])), expect)
    True
    >>> expect = torch.nn.functional.softplus(torch.tensor(0.1 * (10 - z0))) / 0.1
    >>> torch.allclose(spherical_z_loss(o, torch.tensor([0]), a=0.1, b=10.0), expect)
    True
    """
    _check_reduction(reduction)
    a, b = _check_ab(a, b)
    flat, t, valid, batch = _logits_target(logits, target, min_classes=2, ignore_index=ignore_index)
    loss = _ZLossFn.apply(flat.contiguous(), t, a, b, _ignored_rows(valid))
    return _reduce_valid(loss, valid, batch, reduction)


class SphericalZLoss(nn.Module):
    """Module form of :func:`spherical_z_loss` (defaults ``a=1, b=0``)."""

    def __init__(
        self, a: float = 1.0, b: float = 0.0, *, reduction: str = "mean", ignore_index: int = -100
    ) -> None:
        super().__init__()
        _check_reduction(reduction)
        self.a, self.b = _check_ab(a, b)
        self.reduction = reduction
        self.ignore_index = _check_ignore_index(ignore_index)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return spherical_z_loss(logits, target, a=self.a, b=self.b, reduction=self.reduction,
                                ignore_index=self.ignore_index)


# --------------------------------------------------------------- comp-sum, GCE
def _log_p_target(
    logits: Tensor, target: Tensor, ignore_index: int
) -> tuple[Tensor, Tensor | None, tuple[int, ...]]:
    flat, t, valid, batch = _logits_target(logits, target, ignore_index=ignore_index)
    x = _upcast(flat)
    if valid is not None:  # ignored rows may hold -inf padding: keep their gradient 0, not NaN
        x = x.masked_fill(~valid[:, None], 0.0)
    return x.gather(1, t[:, None]).squeeze(1) - torch.logsumexp(x, 1), valid, batch


def comp_sum_loss(
    logits: Tensor, target: Tensor, tau: float, *, reduction: str = "mean", ignore_index: int = -100
) -> Tensor:
    """Comp-sum loss ``Phi^tau(sum_{y' != y} exp(h_y' - h_y))`` (Mao, Mohri & Zhong 2023).

    ``Phi^1(u) = log(1 + u)`` is cross-entropy; otherwise
    ``Phi^tau(u) = ((1 + u)**(1 - tau) - 1) / (1 - tau) = (1 - p_y**(tau - 1)) / (tau - 1)``,
    computed as ``-expm1((tau - 1) log p_y) / (tau - 1)``. ``tau`` in (1, 2) is the
    generalized cross-entropy with ``q = tau - 1``, ``tau = 2`` is ``1 - p_y`` (MAE),
    ``tau = 0`` the sum-exponential loss.

    Parameters
    ----------
    logits : Tensor of shape (*, C)
    target : integer Tensor of shape (*)
    tau : float, >= 0
    reduction : {"mean", "sum", "none"}
        "mean" averages over the rows whose target is not ``ignore_index``.
    ignore_index : int
        Rows with this target contribute 0 and get a zero gradient (as in
        ``F.cross_entropy``); if every row is ignored, "mean" is 0 (not NaN).

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.losses import comp_sum_loss
    >>> o, y = torch.tensor([[1.0, 2.0, 0.5]]), torch.tensor([1])
    >>> p = torch.softmax(o, 1)[0, 1]
    >>> torch.allclose(comp_sum_loss(o, y, 2.0), 1 - p)
    True
    """
    _check_reduction(reduction)
    tau = _positive(tau, "tau", allow_zero=True)
    logp, valid, batch = _log_p_target(logits, target, ignore_index)
    if tau == 1.0:
        loss = -logp
    else:
        loss = -torch.expm1((tau - 1.0) * logp) / (tau - 1.0)
    return _reduce_valid(loss, valid, batch, reduction)


class CompSumLoss(nn.Module):
    """Module form of :func:`comp_sum_loss`."""

    def __init__(self, tau: float = 1.5, *, reduction: str = "mean", ignore_index: int = -100) -> None:
        super().__init__()
        _check_reduction(reduction)
        self.tau = _positive(tau, "tau", allow_zero=True)
        self.reduction = reduction
        self.ignore_index = _check_ignore_index(ignore_index)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return comp_sum_loss(logits, target, self.tau, reduction=self.reduction, ignore_index=self.ignore_index)


def _check_q(q: Any) -> float:
    q = _positive(q, "q")
    if q > 1.0:
        raise InvalidInputError(f"q must be in (0, 1], got {q!r}")
    return q


def generalized_cross_entropy_loss(
    logits: Tensor, target: Tensor, q: float = 0.7, *, reduction: str = "mean", ignore_index: int = -100
) -> Tensor:
    """Generalized cross-entropy ``(1 - p_y**q) / q`` (Zhang & Sabuncu 2018), q in (0, 1].

    The comp-sum loss with ``tau = 1 + q``; ``q -> 0`` is cross-entropy, ``q = 1`` MAE.
    ``reduction`` and ``ignore_index`` as in :func:`comp_sum_loss`.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.losses import generalized_cross_entropy_loss
    >>> o, y = torch.tensor([[0.0, 0.0]]), torch.tensor([0])
    >>> round(generalized_cross_entropy_loss(o, y, q=0.5).item(), 4)   # (1 - 0.5**0.5) / 0.5
    0.5858
    """
    return comp_sum_loss(logits, target, 1.0 + _check_q(q), reduction=reduction, ignore_index=ignore_index)


class GeneralizedCrossEntropyLoss(nn.Module):
    """Module form of :func:`generalized_cross_entropy_loss`."""

    def __init__(self, q: float = 0.7, *, reduction: str = "mean", ignore_index: int = -100) -> None:
        super().__init__()
        _check_reduction(reduction)
        self.q = _check_q(q)
        self.reduction = reduction
        self.ignore_index = _check_ignore_index(ignore_index)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return generalized_cross_entropy_loss(logits, target, self.q, reduction=self.reduction,
                                         ignore_index=self.ignore_index)
