"""Metric-learning losses on embeddings: center, circle, SigLIP pairwise sigmoid and GE2E."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..._errors import InvalidInputError
from ..._validation import check_int
from ._common import (
    _check_labels,
    _check_reduction,
    _float_tensor,
    _positive,
    _reduce,
    _upcast,
)

__all__ = [
    "center_loss",
    "CenterLoss",
    "circle_loss",
    "CircleLoss",
    "sigmoid_pairwise_loss",
    "SigmoidPairwiseLoss",
    "ge2e_loss",
    "GE2ELoss",
]

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
        check_int(num_classes, "num_classes", low=1)
        check_int(feat_dim, "feat_dim", low=1)
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
