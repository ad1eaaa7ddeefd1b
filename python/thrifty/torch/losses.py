"""Classification, metric-learning, box-regression and unlearning losses for PyTorch.

Every loss exists as a function and as an ``nn.Module``; all take
``reduction="mean" | "sum" | "none"`` ("mean" averages over samples). float16 and
bfloat16 inputs are computed in float32 and the loss is returned in float32; float64
stays float64. Invalid input (labels out of range, shape mismatch, invalid parameters,
degenerate boxes) raises :class:`thrifty.InvalidInputError`, a ``ValueError``.
The losses on integer class targets (:func:`spherical_z_loss`, :func:`squentropy`,
:func:`comp_sum_loss`, :func:`generalized_cross_entropy`) take ``ignore_index=-100``
with ``F.cross_entropy``'s meaning.

=============================== =========================================================
loss                            formula (per sample)
=============================== =========================================================
:func:`spherical_z_loss`        ``softplus(a (b - z_y)) / a``, ``z = (o - mean o) / std o``
:func:`squentropy`              ``CE + sum_{j != y} o_j**2 / (C - 1)``
:func:`center_loss`             ``||x - c_y||**2 / 2``
:func:`circle_loss`             ``softplus(lse_n(g a_n (s_n - m)) + lse_p(-g a_p (s_p - 1 + m)))``
:func:`sigmoid_pairwise_loss`   ``-sum_j log sigmoid(z_ij (t x_i . y_j + b))`` (SigLIP)
:func:`ge2e_loss`               GE2E softmax / contrast on ``(speakers, utterances, dim)``
:func:`distance_iou_loss`       ``1 - IoU + rho**2 / c**2``
:func:`complete_iou_loss`       DIoU ``+ alpha v``
:func:`npo_loss`                ``2 / beta * softplus(beta (log p - log p_ref))``
:func:`comp_sum_loss`           ``(1 - p_y**(tau - 1)) / (tau - 1)`` (``-log p_y`` at 1)
:func:`generalized_cross_entropy` ``(1 - p_y**q) / q``
=============================== =========================================================

:func:`squentropy` and :func:`spherical_z_loss` work on row chunks with their own
backward pass: besides the logits they allocate one logits-sized buffer (the
gradient) plus chunk-sized temporaries, so they fit N x 128k vocabularies.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .._errors import InvalidInputError
from .._validation import check_float

__all__ = [
    "spherical_z_loss", "ZLoss",
    "squentropy", "Squentropy",
    "center_loss", "CenterLoss",
    "circle_loss", "CircleLoss",
    "sigmoid_pairwise_loss", "SigmoidPairwiseLoss",
    "ge2e_loss", "GE2ELoss",
    "distance_iou_loss", "DistanceIoULoss",
    "complete_iou_loss", "CompleteIoULoss",
    "npo_loss", "NPOLoss",
    "comp_sum_loss", "CompSumLoss",
    "generalized_cross_entropy", "GeneralizedCrossEntropyLoss",
]

_REDUCTIONS = ("mean", "sum", "none")
# Elements per row chunk of the large-vocabulary losses (16 MiB of float32). Smaller
# chunks keep temporaries in cache but multiply small parallel ops, which stall badly
# when the CPU is oversubscribed.
_CHUNK_ELEMENTS = 1 << 22


# ----------------------------------------------------------------------------- helpers
def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise InvalidInputError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _float_tensor(x: Any, name: str, *, min_ndim: int = 1) -> Tensor:
    if not isinstance(x, Tensor):
        raise InvalidInputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InvalidInputError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.ndim < min_ndim:
        raise InvalidInputError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise InvalidInputError(f"{name} is empty (shape {tuple(x.shape)})")
    return x


def _upcast(x: Tensor) -> Tensor:
    return x.to(_compute_dtype(x.dtype))


def _check_labels(
    target: Any, shape: tuple[int, ...], n_classes: int, name: str = "target", *, ignore_index: int | None = None
) -> Tensor:
    if not isinstance(target, Tensor):
        raise InvalidInputError(f"{name} must be a torch.Tensor, got {type(target).__name__}")
    if target.dtype == torch.bool or target.is_floating_point() or target.is_complex():
        raise InvalidInputError(f"{name} must hold integer class indices, got {target.dtype}")
    if tuple(target.shape) != tuple(shape):
        raise InvalidInputError(f"{name} has shape {tuple(target.shape)}, expected {tuple(shape)}")
    if target.numel():
        checked = target if ignore_index is None else target[target != ignore_index]
        if checked.numel():
            lo, hi = torch.stack([checked.min(), checked.max()]).tolist()
            if lo < 0 or hi >= n_classes:
                extra = "" if ignore_index is None else f" (and is not ignore_index={ignore_index})"
                raise InvalidInputError(
                    f"{name} holds class {lo if lo < 0 else hi}, outside [0, {n_classes}){extra}")
    return target.long()


def _check_ignore_index(ignore_index: Any) -> int:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise InvalidInputError(f"ignore_index must be an int, got {ignore_index!r}")
    return ignore_index


def _logits_target(
    logits: Any, target: Any, *, min_classes: int = 1, ignore_index: int = -100
) -> tuple[Tensor, Tensor, Tensor | None, tuple[int, ...]]:
    """Validate ``(*, C)`` logits and ``(*)`` labels.

    Returns the ``(N, C)`` logits, the ``(N,)`` labels with ignored entries replaced by
    class 0 (so they can be gathered), the ``(N,)`` boolean mask of the rows that count
    (``None`` when no label equals ``ignore_index``) and the batch shape ``*``.
    """
    logits = _float_tensor(logits, "logits", min_ndim=2)
    ignore_index = _check_ignore_index(ignore_index)
    c = logits.shape[-1]
    if c < min_classes:
        raise InvalidInputError(f"logits need at least {min_classes} classes, got {c}")
    batch = tuple(logits.shape[:-1])
    target = _check_labels(target, batch, c, ignore_index=ignore_index).reshape(-1)
    valid: Tensor | None = target != ignore_index
    if bool(valid.all()):  # type: ignore[union-attr]
        valid = None
    else:
        target = target.masked_fill(~valid, 0)  # type: ignore[operator]
    return logits.reshape(-1, c), target, valid, batch


def _reduce_valid(loss: Tensor, valid: Tensor | None, batch: tuple[int, ...], reduction: str) -> Tensor:
    """Zero the ignored rows and reduce; "mean" divides by the number of rows that count
    (as ``F.cross_entropy``) and is 0, with a zero gradient, when every row is ignored."""
    if valid is None:
        return _reduce(loss.reshape(batch), reduction)
    loss = torch.where(valid, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
    if reduction == "mean":
        return loss.sum() / valid.sum().clamp(min=1).to(loss.dtype)
    return _reduce(loss.reshape(batch), reduction)


def _positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidInputError(f"{name} must be finite and {bound}, got {value!r}")
    return v


def _ignored_rows(valid: Tensor | None) -> Tensor | None:
    return None if valid is None else torch.nonzero(~valid).squeeze(1)


def _row_chunks(n: int, c: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(c, 1))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


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


def squentropy(
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
    >>> from thrifty.torch.losses import squentropy
    >>> logits = torch.tensor([[2.0, 0.0, -1.0]])
    >>> round(squentropy(logits, torch.tensor([0])).item(), 4)   # CE 0.1698 + 1/2
    0.6698
    """
    _check_reduction(reduction)
    flat, t, valid, batch = _logits_target(logits, target, min_classes=2, ignore_index=ignore_index)
    loss = _SquentropyFn.apply(flat.contiguous(), t, _ignored_rows(valid))
    return _reduce_valid(loss, valid, batch, reduction)


class Squentropy(nn.Module):
    """Module form of :func:`squentropy`."""

    def __init__(self, *, reduction: str = "mean", ignore_index: int = -100) -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction
        self.ignore_index = _check_ignore_index(ignore_index)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return squentropy(logits, target, reduction=self.reduction, ignore_index=self.ignore_index)


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


class ZLoss(nn.Module):
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


def generalized_cross_entropy(
    logits: Tensor, target: Tensor, q: float = 0.7, *, reduction: str = "mean", ignore_index: int = -100
) -> Tensor:
    """Generalized cross-entropy ``(1 - p_y**q) / q`` (Zhang & Sabuncu 2018), q in (0, 1].

    The comp-sum loss with ``tau = 1 + q``; ``q -> 0`` is cross-entropy, ``q = 1`` MAE.
    ``reduction`` and ``ignore_index`` as in :func:`comp_sum_loss`.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.losses import generalized_cross_entropy
    >>> o, y = torch.tensor([[0.0, 0.0]]), torch.tensor([0])
    >>> round(generalized_cross_entropy(o, y, q=0.5).item(), 4)   # (1 - 0.5**0.5) / 0.5
    0.5858
    """
    return comp_sum_loss(logits, target, 1.0 + _check_q(q), reduction=reduction, ignore_index=ignore_index)


class GeneralizedCrossEntropyLoss(nn.Module):
    """Module form of :func:`generalized_cross_entropy`."""

    def __init__(self, q: float = 0.7, *, reduction: str = "mean", ignore_index: int = -100) -> None:
        super().__init__()
        _check_reduction(reduction)
        self.q = _check_q(q)
        self.reduction = reduction
        self.ignore_index = _check_ignore_index(ignore_index)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return generalized_cross_entropy(logits, target, self.q, reduction=self.reduction,
                                         ignore_index=self.ignore_index)


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


# ------------------------------------------------------------------------ center loss
def _features_labels(features: Any, labels: Any, n_classes: int | None = None) -> tuple[Tensor, Tensor]:
    features = _float_tensor(features, "features", min_ndim=2)
    if features.ndim != 2:
        raise InvalidInputError(f"features must be 2-D (N, D), got shape {tuple(features.shape)}")
    n = features.shape[0]
    if n_classes is None:
        if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
            raise InvalidInputError("labels must be an integer torch.Tensor")
        if tuple(labels.shape) != (n,):
            raise InvalidInputError(f"labels has shape {tuple(labels.shape)}, expected ({n},)")
        return features, labels.long()
    return features, _check_labels(labels, (n,), n_classes, "target")


def center_loss(features: Tensor, target: Tensor, centers: Tensor, *, reduction: str = "mean") -> Tensor:
    """Center loss ``||x_i - c_{y_i}||**2 / 2`` (Wen et al. 2016).

    Parameters
    ----------
    features : Tensor of shape (N, D)
    target : integer Tensor of shape (N,), values in ``[0, K)``
    centers : Tensor of shape (K, D)
    reduction : {"mean", "sum", "none"}

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.losses import center_loss
    >>> x, c = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    >>> center_loss(x, torch.tensor([1]), c).item()
    2.0
    """
    _check_reduction(reduction)
    centers = _float_tensor(centers, "centers", min_ndim=2)
    if centers.ndim != 2:
        raise InvalidInputError(f"centers must be 2-D (K, D), got shape {tuple(centers.shape)}")
    features, t = _features_labels(features, target, centers.shape[0])
    if features.shape[1] != centers.shape[1]:
        raise InvalidInputError(
            f"features have {features.shape[1]} dimensions but centers have {centers.shape[1]}")
    diff = _upcast(features) - _upcast(centers)[t]
    return _reduce(0.5 * diff.square().sum(1), reduction)


class _CenterUpdateFn(torch.autograd.Function):
    """Identity on the centers whose backward is the paper's update ``alpha * delta_c``."""

    @staticmethod
    def forward(ctx: Any, centers: Tensor, features: Tensor, target: Tensor, alpha: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(centers, features, target)
        ctx.alpha = alpha
        return centers.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        centers, features, target = ctx.saved_tensors
        k = centers.shape[0]
        diff = centers[target] - features.to(centers.dtype)
        sums = torch.zeros_like(centers).index_add_(0, target, diff)
        counts = torch.bincount(target, minlength=k).to(centers.dtype)
        return ctx.alpha * sums / (1.0 + counts)[:, None], None, None, None


class CenterLoss(nn.Module):
    """Center loss with learnable class centers ``.centers`` of shape (num_classes, feat_dim).

    The value is ``||x - c_y||**2 / 2`` per sample; train with ``CE + lambda *
    center_loss`` (lambda around 0.003). With ``alpha`` set (default 0.5) the gradient
    that reaches ``.centers`` is replaced by the paper's update
    ``alpha * sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)`` (independent of lambda), so a
    separate ``torch.optim.SGD([loss.centers], lr=1.0)`` reproduces Wen et al.'s rule
    exactly. With ``alpha=None`` the centers receive the true gradient of the loss.
    Centers start from a standard normal draw.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.losses import CenterLoss
    >>> _ = torch.manual_seed(0)
    >>> crit = CenterLoss(3, 2)
    >>> x, y = torch.randn(4, 2, requires_grad=True), torch.tensor([0, 1, 2, 0])
    >>> crit(x, y).backward()
    >>> crit.centers.grad.shape
    torch.Size([3, 2])
    """

    def __init__(
        self, num_classes: int, feat_dim: int, alpha: float | None = 0.5, *, reduction: str = "mean"
    ) -> None:
        super().__init__()
        _check_reduction(reduction)
        for name, v in (("num_classes", num_classes), ("feat_dim", feat_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {v!r}")
        self.alpha = None if alpha is None else _positive(alpha, "alpha")
        self.reduction = reduction
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, features: Tensor, target: Tensor) -> Tensor:
        centers: Tensor = self.centers
        if self.alpha is not None and centers.requires_grad:
            features_c, t = _features_labels(features, target, centers.shape[0])
            if features_c.shape[1] != centers.shape[1]:
                raise InvalidInputError(
                    f"features have {features_c.shape[1]} dimensions but centers have {centers.shape[1]}")
            centers = _CenterUpdateFn.apply(centers, features_c.detach(), t, self.alpha)
        return center_loss(features, target, centers, reduction=self.reduction)


# ------------------------------------------------------------------------ circle loss
def _circle_check(m: Any, gamma: Any) -> tuple[float, float]:
    m = _positive(m, "m", allow_zero=True)
    gamma = _positive(gamma, "gamma")
    return m, gamma


def circle_loss(
    embeddings: Tensor, labels: Tensor, *, m: float = 0.4, gamma: float = 80.0, reduction: str = "mean"
) -> Tensor:
    """Circle loss (Sun et al. 2020), class-label form on cosine similarities.

    For anchor ``i`` with positives ``p`` (same label, not ``i``) and negatives ``n``:
    ``softplus(logsumexp_n(gamma a_n (s_n - m)) + logsumexp_p(-gamma a_p (s_p - 1 + m)))``
    with ``a_p = relu(1 + m - s_p)``, ``a_n = relu(s_n + m)`` treated as constants, as
    pytorch-metric-learning's ``CircleLoss``. Anchors without a positive or a negative
    get loss 0; ``reduction="mean"`` averages the non-zero losses (pytorch-metric-learning's
    ``AvgNonZeroReducer``) and is 0 when there are none. Stable for large ``gamma``.

    Parameters
    ----------
    embeddings : Tensor of shape (N, D)
        Normalised to unit length inside.
    labels : integer Tensor of shape (N,)
    m, gamma : float
        Relaxation margin and scale (defaults 0.4 and 80 as pytorch-metric-learning;
        the paper uses 0.25 and 256 for faces).
    reduction : {"mean", "sum", "none"}

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.losses import circle_loss
    >>> e = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    >>> circle_loss(e, torch.tensor([0, 0, 1]), reduction="none").shape
    torch.Size([3])
    """
    _check_reduction(reduction)
    m, gamma = _circle_check(m, gamma)
    x, lab = _features_labels(embeddings, labels)
    x = F.normalize(_upcast(x), dim=1)
    sim = x @ x.T
    n = x.shape[0]
    same = lab[:, None] == lab[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    pos, neg = same & ~eye, ~same
    s_det = sim.detach()
    logit_p = -gamma * torch.relu(1.0 + m - s_det) * (sim - (1.0 - m))
    logit_n = gamma * torch.relu(s_det + m) * (sim - m)
    low = torch.finfo(sim.dtype).min
    lse_p = torch.logsumexp(logit_p.masked_fill(~pos, low), 1)
    lse_n = torch.logsumexp(logit_n.masked_fill(~neg, low), 1)
    valid = pos.any(1) & neg.any(1)
    loss = torch.where(valid, F.softplus(torch.where(valid, lse_p + lse_n, 0.0)), 0.0)
    if reduction == "mean":
        nonzero = loss > 0
        count = nonzero.sum()
        return torch.where(count > 0, (loss * nonzero).sum() / count.clamp(min=1), loss.sum() * 0)
    return _reduce(loss, reduction)


class CircleLoss(nn.Module):
    """Module form of :func:`circle_loss`."""

    def __init__(self, m: float = 0.4, gamma: float = 80.0, *, reduction: str = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.m, self.gamma = _circle_check(m, gamma)
        self.reduction = reduction

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return circle_loss(embeddings, labels, m=self.m, gamma=self.gamma, reduction=self.reduction)


# ----------------------------------------------------------------------------- SigLIP
def sigmoid_pairwise_loss(
    x: Tensor,
    y: Tensor,
    logit_scale: Tensor | float,
    logit_bias: Tensor | float,
    *,
    normalize: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """SigLIP pairwise sigmoid loss (Zhai et al. 2023) as open_clip's ``SigLipLoss``.

    ``logits = exp(logit_scale) x @ y.T + logit_bias``, labels +1 on the diagonal and -1
    elsewhere, per-sample loss ``-sum_j log sigmoid(label_ij logits_ij)``; "mean" is the
    sum over all pairs divided by the batch size (open_clip), "none" returns the per-row
    sums. ``logit_scale`` is the log of the temperature ``t``.

    Parameters
    ----------
    x, y : Tensor of shape (B, D)
        Paired embeddings (row i of ``x`` matches row i of ``y``).
    logit_scale, logit_bias : scalar Tensor or float
    normalize : bool
        L2-normalise ``x`` and ``y`` first (open_clip's models do it before the loss).
    reduction : {"mean", "sum", "none"}

    Examples
    --------
    >>> import math, torch
    >>> from thrifty.torch.losses import sigmoid_pairwise_loss
    >>> x = torch.eye(2)
    >>> loss = sigmoid_pairwise_loss(x, x, math.log(10.0), -10.0)
    >>> round(loss.item(), 4)        # 2 pairs with logit 0, 2 with logit -10, per row
    0.6932
    """
    _check_reduction(reduction)
    x = _float_tensor(x, "x", min_ndim=2)
    y = _float_tensor(y, "y", min_ndim=2)
    if x.ndim != 2 or x.shape != y.shape:
        raise InvalidInputError(
            f"x and y must be 2-D of the same shape (B, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    xc, yc = _upcast(x), _upcast(y)
    if normalize:
        xc, yc = F.normalize(xc, dim=1), F.normalize(yc, dim=1)
    scale = torch.as_tensor(logit_scale, dtype=xc.dtype, device=xc.device)
    bias = torch.as_tensor(logit_bias, dtype=xc.dtype, device=xc.device)
    if scale.numel() != 1 or bias.numel() != 1:
        raise InvalidInputError("logit_scale and logit_bias must be scalars")
    logits = scale.exp() * (xc @ yc.T) + bias
    n = logits.shape[0]
    labels = 2.0 * torch.eye(n, dtype=logits.dtype, device=logits.device) - 1.0
    per_row = -F.logsigmoid(labels * logits).sum(1)
    return _reduce(per_row, reduction)


class SigmoidPairwiseLoss(nn.Module):
    """SigLIP loss with learnable ``logit_scale`` (log temperature, init log 10) and
    ``logit_bias`` (init -10), as in the paper. See :func:`sigmoid_pairwise_loss`."""

    def __init__(
        self,
        init_temperature: float = 10.0,
        init_bias: float = -10.0,
        *,
        normalize: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        _check_reduction(reduction)
        t = _positive(init_temperature, "init_temperature")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(t)))
        self.logit_bias = nn.Parameter(torch.tensor(float(init_bias)))
        self.normalize = bool(normalize)
        self.reduction = reduction

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return sigmoid_pairwise_loss(x, y, self.logit_scale, self.logit_bias,
                                     normalize=self.normalize, reduction=self.reduction)


# ------------------------------------------------------------------------------- GE2E
_GE2E_METHODS = ("softmax", "contrast")


def ge2e_loss(
    embeddings: Tensor,
    w: Tensor | float = 10.0,
    b: Tensor | float = -5.0,
    *,
    method: str = "softmax",
    reduction: str = "mean",
) -> Tensor:
    """Generalized end-to-end loss (Wan et al. 2018) on (speakers, utterances, dim).

    ``S_ji,k = w cos(e_ji, c_k) + b`` with centroids ``c_k`` (the own-speaker centroid
    leaves ``e_ji`` out) and ``w`` clamped to at least 1e-6. ``softmax``:
    ``-S_ji,j + logsumexp_k S_ji,k``; ``contrast``:
    ``1 - sigmoid(S_ji,j) + max_{k != j} sigmoid(S_ji,k)``. "none" returns shape (N, M).

    Parameters
    ----------
    embeddings : Tensor of shape (N, M, D), N >= 2 speakers, M >= 2 utterances
    w, b : scalar Tensor or float
    method : {"softmax", "contrast"}
    reduction : {"mean", "sum", "none"}

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.losses import ge2e_loss
    >>> _ = torch.manual_seed(0)
    >>> ge2e_loss(torch.randn(3, 4, 8), reduction="none").shape
    torch.Size([3, 4])
    """
    _check_reduction(reduction)
    if method not in _GE2E_METHODS:
        raise InvalidInputError(f"method must be one of {_GE2E_METHODS}, got {method!r}")
    e = _float_tensor(embeddings, "embeddings", min_ndim=3)
    if e.ndim != 3 or e.shape[0] < 2 or e.shape[1] < 2:
        raise InvalidInputError(
            f"embeddings must have shape (speakers >= 2, utterances >= 2, dim), got {tuple(e.shape)}")
    e = _upcast(e)
    n, m, _ = e.shape
    wt = torch.as_tensor(w, dtype=e.dtype, device=e.device)
    bt = torch.as_tensor(b, dtype=e.dtype, device=e.device)
    if wt.numel() != 1 or bt.numel() != 1:
        raise InvalidInputError("w and b must be scalars")
    total = e.sum(1)                                     # (N, D)
    centroids = total / m
    excl = (total[:, None, :] - e) / (m - 1)             # own centroid without e_ji
    en = F.normalize(e, dim=2)
    cos = torch.einsum("jid,kd->jik", en, F.normalize(centroids, dim=1))  # (N, M, N)
    own = (en * F.normalize(excl, dim=2)).sum(2)         # (N, M)
    eye = torch.eye(n, dtype=torch.bool, device=e.device)[:, None, :].expand(n, m, n)
    cos = torch.where(eye, own[:, :, None], cos)
    s = wt.clamp(min=1e-6) * cos + bt
    s_own = s[eye].reshape(n, m)
    if method == "softmax":
        loss = torch.logsumexp(s, 2) - s_own
    else:
        sig = torch.sigmoid(s).masked_fill(eye, float("-inf"))
        loss = 1.0 - torch.sigmoid(s_own) + sig.amax(2)
    return _reduce(loss, reduction)


class GE2ELoss(nn.Module):
    """GE2E loss with learnable ``w`` (init 10) and ``b`` (init -5). See :func:`ge2e_loss`."""

    def __init__(
        self, method: str = "softmax", *, init_w: float = 10.0, init_b: float = -5.0, reduction: str = "mean"
    ) -> None:
        super().__init__()
        _check_reduction(reduction)
        if method not in _GE2E_METHODS:
            raise InvalidInputError(f"method must be one of {_GE2E_METHODS}, got {method!r}")
        self.method = method
        self.reduction = reduction
        self.w = nn.Parameter(torch.tensor(float(init_w)))
        self.b = nn.Parameter(torch.tensor(float(init_b)))

    def forward(self, embeddings: Tensor) -> Tensor:
        return ge2e_loss(embeddings, self.w, self.b, method=self.method, reduction=self.reduction)


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
