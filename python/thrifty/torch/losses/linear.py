"""Fused linear + loss for large vocabularies, without the ``N x V`` logits.

:func:`linear_cross_entropy_loss` computes ``loss(hidden @ weight.T + bias, target)`` for
cross-entropy, squentropy and the spherical Z-loss (the same values as
``torch.nn.functional.cross_entropy`` and :mod:`thrifty.torch.losses` on materialised
logits) one ``token_chunk x chunk_size`` logits tile at a time, forward and backward
(the Cut-Cross-Entropy / Liger idea):

- forward: every tile is folded into per-row running statistics (online logsumexp:
  running max and sum of exponentials; Welford mean and squared deviations for the
  Z-loss; the sum of squares of the non-target logits for squentropy; the target logit);
- backward: every tile is recomputed, turned in place into ``dLoss/dlogits`` and
  multiplied back into the gradients of ``hidden``, ``weight`` and ``bias``.

Memory beyond inputs and gradients: one tile (plus a float32 accumulator of
``hidden``'s gradient and of one ``chunk_size x D`` slice of ``weight``'s for
half-precision inputs) and a few numbers per row. Logit tiles are computed in the
inputs' dtype like ``F.linear`` (so bfloat16 inputs give bfloat16 logits, as in the
unfused pipeline); the statistics and gradient tiles are computed in float32 (float64
for float64 inputs). On CUDA (when :func:`thrifty.torch.cuda_available`) the tile work runs in ``cuda/loss.cu`` and the
matrix products in cuBLAS through torch; elsewhere the same loop runs with torch ops.

Examples
--------
>>> import torch
>>> from thrifty.torch.losses import linear_cross_entropy_loss
>>> g = torch.Generator().manual_seed(0)
>>> h, w = torch.randn(6, 4, generator=g), torch.randn(50, 4, generator=g)
>>> y = torch.tensor([1, 7, 49, -100, 0, 3])
>>> fused = linear_cross_entropy_loss(h, w, y, chunk_size=16)
>>> ref = torch.nn.functional.cross_entropy(h @ w.T, y)
>>> bool(torch.allclose(fused, ref))
True
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._errors import InvalidInputError
from ..._validation import check_choice, check_float, check_int
from .._cuda import _runtime as _rt
from .._cuda import loss as _kernels
from ._common import _check_reduction
from .classification import _Z_EPS, spherical_z_loss

__all__ = ["linear_cross_entropy_loss", "LinearCrossEntropyLoss"]

_KINDS = {"ce": 0, "squentropy": 1, "z": 2}
_TILE_ELEMENTS = {"cuda": 1 << 24, "cpu": 1 << 21}  # default tile size per device type


def _z_defaults() -> tuple[float, float]:
    """``a`` and ``b`` defaults of :func:`spherical_z_loss`."""
    prm = inspect.signature(spherical_z_loss).parameters
    return float(prm["a"].default), float(prm["b"].default)


def _stat_dtype(dtype: Any) -> Any:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tiles(n: int, step: int) -> list[tuple[int, int]]:
    return [(i, min(n, i + step)) for i in range(0, n, step)]


def _logits(h: Any, w: Any, b: Any) -> Any:

    return F.linear(h, w, b)


def _mm_f32(a: Any, b: Any, acc_dtype: Any) -> Any:
    """``a @ b`` with the result in ``acc_dtype`` (float32 accumulation for half inputs)."""
    if a.dtype == acc_dtype:
        return a @ b
    try:
        return torch.mm(a, b, out_dtype=acc_dtype)
    except (TypeError, RuntimeError, NotImplementedError):
        return (a @ b).to(acc_dtype)


# ------------------------------------------------------------------- tile work (fallback)
def _stats_torch(o: Any, v0: int, target: Any, state: Any, need_sq: bool) -> None:
    """Fold tile ``o`` (rows x cols) into ``state`` (rows x 6: m, s, mean, m2, sq, o_y).

    One tile-sized temporary (plus the float32 copy of a half-precision tile)."""
    x = o.to(state.dtype)
    cols = x.shape[1]
    local = target - v0
    inside = (local >= 0) & (local < cols)
    idx = local.clamp(0, cols - 1)[:, None]
    m_t = x.max(1).values
    buf = torch.sub(x, m_t[:, None])
    s_t = buf.exp_().sum(1)
    mean_t = x.mean(1)
    m2_t = torch.sub(x, mean_t[:, None], out=buf).square_().sum(1)
    m, s, mean, m2 = state[:, 0], state[:, 1], state[:, 2], state[:, 3]
    m_new = torch.maximum(m, m_t)
    s_old = torch.where(s == 0, torch.zeros_like(s), s * torch.exp(m - m_new))
    state[:, 1] = s_old + s_t * torch.exp(m_t - m_new)
    state[:, 0] = m_new
    n_a, n_b = float(v0), float(cols)
    d = mean_t - mean
    state[:, 2] = mean + d * (n_b / (n_a + n_b))
    state[:, 3] = m2 + m2_t + d * d * (n_a * n_b / (n_a + n_b))
    o_y = x.gather(1, idx).squeeze(1)
    if need_sq:  # sum of squares with the target column zeroed
        buf.copy_(x).scatter_(1, idx, torch.where(inside, 0.0, o_y)[:, None].to(buf.dtype))
        state[:, 4] += torch.linalg.vecdot(buf, buf)
    state[:, 5] = torch.where(inside, o_y, state[:, 5])


def _grad_torch(o: Any, v0: int, target: Any, rowp: Any, go: Any, kind: int, n_classes: int) -> Any:
    """``dLoss/do * go`` of tile ``o``, computed in the statistics dtype into one new
    tile-sized buffer."""
    x = o.to(rowp.dtype)
    cols = x.shape[1]
    local = target - v0
    rows_in = torch.nonzero((local >= 0) & (local < cols)).squeeze(1)
    cols_in = local[rows_in]
    if kind == 2:
        z_y, mu, sigma, k = rowp[:, 0:1], rowp[:, 1:2], rowp[:, 2:3], rowp[:, 3:4]
        d = torch.sub(x, mu).mul_(-z_y / (n_classes * sigma)).sub_(1.0 / n_classes)
        d.index_put_((rows_in, cols_in), torch.ones_like(cols_in, dtype=d.dtype), accumulate=True)
        d.mul_(k)
    else:
        d = torch.sub(x, rowp[:, 0:1]).exp_()
        delta = -torch.ones_like(cols_in, dtype=d.dtype)
        if kind == 1:
            coef = 2.0 / (n_classes - 1)
            d.add_(x, alpha=coef)
            delta = delta - coef * x[rows_in, cols_in]  # no square term for the target
        d.index_put_((rows_in, cols_in), delta, accumulate=True)
    return d.mul_(go[:, None])


# ------------------------------------------------------------------------------ function
def _init_state(n: int, dtype: Any, device: Any) -> Any:
    state = torch.zeros(n, 6, dtype=dtype, device=device)
    state[:, 0] = -math.inf
    return state


def _row_losses(state: Any, kind: int, n_classes: int, a: float, b: float) -> tuple[Any, Any]:
    """Per-row loss and the per-row numbers the backward pass needs (rows x 4)."""

    m, s, mean, m2, sq, o_y = state.unbind(1)
    rowp = torch.zeros(state.shape[0], 4, dtype=state.dtype, device=state.device)
    if kind == 2:
        sigma = torch.sqrt(m2 / n_classes + _Z_EPS)
        z_y = (o_y - mean) / sigma
        loss = F.softplus(a * (b - z_y)) / a
        rowp[:, 0], rowp[:, 1], rowp[:, 2] = z_y, mean, sigma
        rowp[:, 3] = -torch.sigmoid(a * (b - z_y)) / sigma
        return loss, rowp
    lse = m + torch.log(s)
    loss = lse - o_y
    if kind == 1:
        loss = loss + sq / (n_classes - 1)
    rowp[:, 0] = lse
    return loss, rowp


def _fused_forward(h: Any, w: Any, bias: Any, target: Any, kind: int, vchunk: int, tchunk: int,
                   gpu: bool) -> Any:
    n, v = h.shape[0], w.shape[0]
    state = _init_state(n, _stat_dtype(h.dtype), h.device)
    for r0, r1 in _tiles(n, tchunk):
        st = state[r0:r1]
        tg = target[r0:r1]
        for v0, v1 in _tiles(v, vchunk):
            o = _logits(h[r0:r1], w[v0:v1], None if bias is None else bias[v0:v1])
            if gpu:
                _kernels.stats_(o, v0, tg, st)
            else:
                _stats_torch(o, v0, tg, st, kind == 1)
    return state


class _LinearLossFn:
    """Holder of the autograd.Function (built lazily: importing this module needs no torch)."""

    fn: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls.fn is not None:
            return cls.fn
        import torch

        class Fn(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, h: Any, w: Any, bias: Any, target: Any, valid: Any, kind: int, a: float,
                        b: float, vchunk: int, tchunk: int, gpu: bool) -> Any:
                v = w.shape[0]
                state = _fused_forward(h, w, bias, target, kind, vchunk, tchunk, gpu)
                loss, rowp = _row_losses(state, kind, v, a, b)
                loss = torch.where(valid, loss, torch.zeros_like(loss))
                ctx.save_for_backward(h, w, bias if bias is not None else torch.empty(0), target, valid, rowp)
                ctx.meta = (kind, vchunk, tchunk, gpu, bias is not None)
                return loss

            @staticmethod
            def backward(ctx: Any, grad_loss: Any) -> Any:
                h, w, bias, target, valid, rowp = ctx.saved_tensors
                kind, vchunk, tchunk, gpu, has_bias = ctx.meta
                if not has_bias:
                    bias = None
                n, v = h.shape[0], w.shape[0]
                acc = _stat_dtype(h.dtype)
                go = torch.where(valid, grad_loss.to(acc), torch.zeros((), dtype=acc, device=h.device))
                need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], (
                    has_bias and ctx.needs_input_grad[2])
                gh: Any = torch.zeros(h.shape, dtype=acc, device=h.device) if need_h else None
                gw: Any = torch.empty_like(w) if need_w else None
                gb: Any = torch.empty_like(bias) if need_b else None
                gpu_rowp = rowp.to(torch.float32).contiguous() if gpu else rowp
                go_k = go.to(torch.float32).contiguous() if gpu else go
                for v0, v1 in _tiles(v, vchunk):
                    wc = w[v0:v1]
                    gw_c: Any = torch.zeros(wc.shape, dtype=acc, device=w.device) if need_w else None
                    gb_c: Any = torch.zeros(v1 - v0, dtype=acc, device=w.device) if need_b else None
                    for r0, r1 in _tiles(n, tchunk):
                        o = _logits(h[r0:r1], wc, None if bias is None else bias[v0:v1])
                        if gpu:
                            g = _kernels.grad_(o, v0, target[r0:r1], gpu_rowp[r0:r1], go_k[r0:r1], kind, v)
                        else:
                            g = _grad_torch(o, v0, target[r0:r1], rowp[r0:r1], go[r0:r1], kind, v).to(h.dtype)
                        if need_h:
                            gh[r0:r1] += _mm_f32(g, wc, acc)
                        if need_w:
                            gw_c += _mm_f32(g.t(), h[r0:r1], acc)
                        if need_b:
                            gb_c += g.to(acc).sum(0)
                    if need_w:
                        gw[v0:v1] = gw_c
                    if need_b:
                        gb[v0:v1] = gb_c
                gh = gh.to(h.dtype) if need_h else None
                return gh, gw, gb, None, None, None, None, None, None, None, None

        cls.fn = Fn
        return Fn


def _check(hidden: Any, weight: Any, target: Any, bias: Any) -> None:
    for name, t in (("hidden", hidden), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise InvalidInputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            raise InvalidInputError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if weight.ndim != 2:
        raise InvalidInputError(f"weight must have shape (V, D), got {tuple(weight.shape)}")
    if hidden.ndim < 1 or hidden.shape[-1] != weight.shape[1]:
        raise InvalidInputError(f"hidden has shape {tuple(hidden.shape)}; its last dimension must be "
                                f"weight's D = {weight.shape[1]}")
    if hidden.dtype != weight.dtype:
        raise InvalidInputError(f"hidden ({hidden.dtype}) and weight ({weight.dtype}) must have one dtype")
    if hidden.device != weight.device:
        raise InvalidInputError("hidden and weight must be on one device")
    if not isinstance(target, torch.Tensor) or target.dtype.is_floating_point or target.dtype == torch.bool:
        raise InvalidInputError("target must be an integer torch.Tensor of class indices")
    if tuple(target.shape) != tuple(hidden.shape[:-1]):
        raise InvalidInputError(f"target has shape {tuple(target.shape)}, expected {tuple(hidden.shape[:-1])}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (weight.shape[0],):
            raise InvalidInputError(f"bias must be a tensor of shape ({weight.shape[0]},)")
        if bias.dtype != weight.dtype or bias.device != weight.device:
            raise InvalidInputError("bias must have weight's dtype and device")


def linear_cross_entropy_loss(
    hidden: Any,
    weight: Any,
    target: Any,
    *,
    bias: Any = None,
    loss: str = "ce",
    a: float | None = None,
    b: float | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_size: int | None = None,
    token_chunk: int | None = None,
    check_target: bool = True,
) -> Any:
    """``loss(hidden @ weight.T + bias, target)`` without materialising the logits.

    Parameters
    ----------
    hidden : Tensor of shape (*, D)
        float32, float64, float16 or bfloat16.
    weight : Tensor of shape (V, D)
        The output projection (same dtype and device as ``hidden``).
    target : integer Tensor of shape (*)
        Class indices in ``[0, V)`` or ``ignore_index``.
    bias : Tensor of shape (V,), optional
    loss : {"ce", "squentropy", "z"}
        Cross-entropy, squentropy (:func:`squentropy_loss`) or the
        spherical Z-loss (:func:`spherical_z_loss`).
    a, b : float, optional
        The Z-loss parameters (default: those of ``spherical_z_loss``).
    ignore_index : int, default=-100
        Rows with this target contribute 0 and no gradient; "mean" averages over the others.
    reduction : {"mean", "sum", "none"}
    chunk_size : int, optional
        Vocabulary columns per tile (default: ``2**24 // token_chunk`` on CUDA,
        ``2**21 // token_chunk`` elsewhere, at least 128).
    token_chunk : int, optional
        Rows per tile (default: all rows up to 8192).
    check_target : bool, default=True
        Reject targets outside ``[0, V)`` (other than ``ignore_index``). The check reads
        one flag back from the device; ``False`` skips it (no host synchronisation, e.g.
        inside a CUDA graph), and then such rows give undefined values.

    Returns
    -------
    Tensor
        float32 (float64 for float64 inputs): a scalar, or shape ``(*)`` for "none".
    """
    _check(hidden, weight, target, bias)
    check_choice(loss, "loss", tuple(_KINDS))
    _check_reduction(reduction)
    kind = _KINDS[loss]
    v, d = weight.shape
    if kind > 0 and v < 2:
        raise InvalidInputError(f"{loss} needs at least 2 classes, got {v}")
    a0, b0 = _z_defaults()
    a = a0 if a is None else check_float(a, "a", low=0.0, low_inclusive=False)
    b = b0 if b is None else check_float(b, "b")
    ignore_index = check_int(ignore_index, "ignore_index")
    batch = tuple(hidden.shape[:-1])
    h = hidden.reshape(-1, d)
    t = target.reshape(-1).to(torch.long)
    n = h.shape[0]
    if n == 0:
        raise InvalidInputError("hidden has no rows")
    valid = t != ignore_index
    if check_target and bool((valid & ((t < 0) | (t >= v))).any()):
        raise InvalidInputError(f"target holds a class outside [0, {v}) that is not ignore_index={ignore_index}")
    t = t.to(h.device).contiguous()
    valid = valid.to(h.device)
    tchunk = min(n, 8192) if token_chunk is None else check_int(token_chunk, "token_chunk", low=1)
    tile = _TILE_ELEMENTS["cuda" if h.is_cuda else "cpu"]
    vchunk = max(128, tile // tchunk) if chunk_size is None else check_int(chunk_size, "chunk_size", low=1)
    gpu = _rt.use_kernels(h) and h.dtype != torch.float64
    if gpu:
        h = h.contiguous()
    w = weight.contiguous() if gpu else weight
    per_row = _LinearLossFn.get().apply(h, w, bias, t, valid, kind, a, b, vchunk, tchunk, gpu)
    if reduction == "none":
        return per_row.reshape(batch)
    total = per_row.sum()
    if reduction == "sum":
        return total
    return total / valid.sum().to(total.dtype)


class LinearCrossEntropyLoss(nn.Module):
    """Module form of :func:`linear_cross_entropy_loss`: the options are stored, the
    projection ``weight`` (and ``bias``) is passed to :meth:`forward` (it usually belongs
    to the model's output layer, e.g. a tied embedding).

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.losses import LinearCrossEntropyLoss
    >>> crit = LinearCrossEntropyLoss(loss="squentropy")
    >>> h, w = torch.randn(3, 4), torch.randn(10, 4)
    >>> crit(h, w, torch.tensor([0, 1, 2])).ndim
    0
    """

    def __init__(
        self,
        *,
        loss: str = "ce",
        a: float | None = None,
        b: float | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        chunk_size: int | None = None,
        token_chunk: int | None = None,
        check_target: bool = True,
    ) -> None:
        super().__init__()
        self.loss = check_choice(loss, "loss", tuple(_KINDS))
        _check_reduction(reduction)
        self.a = None if a is None else check_float(a, "a", low=0.0, low_inclusive=False)
        self.b = None if b is None else check_float(b, "b")
        self.ignore_index = check_int(ignore_index, "ignore_index")
        self.reduction = reduction
        self.chunk_size = None if chunk_size is None else check_int(chunk_size, "chunk_size", low=1)
        self.token_chunk = None if token_chunk is None else check_int(token_chunk, "token_chunk", low=1)
        self.check_target = bool(check_target)

    def forward(self, hidden: Tensor, weight: Tensor, target: Tensor, bias: Tensor | None = None) -> Tensor:
        return linear_cross_entropy_loss(
            hidden, weight, target, bias=bias, loss=self.loss, a=self.a, b=self.b,
            ignore_index=self.ignore_index, reduction=self.reduction, chunk_size=self.chunk_size,
            token_chunk=self.token_chunk, check_target=self.check_target)
