"""Fused BitNet b1.58 linear layer: int8 activations x packed ternary weights.

The forward pass of :class:`thrifty.torch.nn.BitLinear` at ``strength=1`` and
``act_bits=8``, computed in integers:

1. :func:`quantize_activations_int8` — per-token absmax int8 codes ``xq`` and scales
   ``s_x = 127 / max(max|x|, 1e-5)`` (one pass over ``x``);
2. :func:`pack_ternary` — ternary codes of the weight with the scale of
   :func:`thrifty.torch.nn.ternary_weight`, packed 16 per 32-bit word (2 bits each,
   16x smaller than float32); :class:`WeightCache` keeps them until the weight changes
   (torch's ``_version`` counter, data pointer, shape, device or scale rule);
3. :func:`int8_ternary_linear` — ``y = (xq @ q.T) / (s_x s_w) + bias`` with the sum in
   int32 (exact) and the rescaling fused into the GEMM's epilogue (a tiled ``__dp4a``
   GEMM; for up to 8 rows, a GEMV with one warp per output feature).

:func:`bitlinear` wraps them in an ``autograd.Function`` whose backward pass is the
straight-through estimator of the float layer: ``grad_x = grad_y @ W_q`` and
``grad_W = grad_y.T @ x_q`` with the dequantised ternary weights ``W_q = q / s_w`` and
activations ``x_q = xq / s_x``; the int8 codes are what is kept for the backward pass
(a quarter of float32 activations).

CUDA tensors run the kernels of ``bitlinear.cu`` when :func:`thrifty.torch.cuda_available`;
everything else runs the torch reference below, which has the same integer semantics
(bit-identical results). Against the float ``BitLinear`` the results agree within the
rounding of the float layer's accumulation (the integer products are exact).

Examples
--------
>>> import torch
>>> from thrifty.torch._cuda.bitlinear import bitlinear
>>> from thrifty.torch.nn import BitLinear
>>> _ = torch.manual_seed(0)
>>> layer = BitLinear(64, 8)
>>> x = torch.randn(4, 64)
>>> y = bitlinear(x, layer.weight)
>>> y.shape, bool(torch.allclose(y, layer(x), atol=1e-5))
(torch.Size([4, 8]), True)
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..._errors import InvalidInputError
from . import _runtime as _rt

__all__ = ["PackedTernary", "WeightCache", "quantize_activations_int8", "pack_ternary",
           "unpack_ternary", "dequantize_activations", "int8_ternary_linear", "bitlinear"]

_FILE = "bitlinear.cu"
_KERNELS: tuple[str, ...] = tuple(_rt.kernel_signatures(_FILE))
_KPAD = 64  # K is padded to the GEMM's k-tile
_GEMV_MAX_M = 8  # rows up to which th_bitlinear_gemv replaces the tiled GEMM


def _launch(kernel: str, nthreads: int, *args: Any) -> None:
    _rt.launch(_FILE, kernel, *args, threads=nthreads)


def _kp(k: int) -> int:
    return -(-k // _KPAD) * _KPAD


class PackedTernary(NamedTuple):
    """Ternary weight codes packed 16 per word, with their scale.

    ``words``: int32 tensor (N, Kp / 16) (bit patterns of uint32 words; word ``w`` of row
    ``n`` holds ``k = 16 w + j`` at bits ``2j`` as the code ``q + 1``, padding code 1);
    ``s_w``: float32 tensor (1,), the weight scale ``1 / max(gamma, 1e-5)``;
    ``in_features``: K.
    """

    words: Any
    s_w: Any
    in_features: int

    @property
    def nbytes(self) -> int:
        return int(self.words.numel()) * 4 + 4


# ----------------------------------------------------------------------------- pieces

def quantize_activations_int8(x: Any) -> tuple[Any, Any]:
    """Per-token absmax int8 codes of ``x`` (..., K), rows = leading dims flattened.

    Returns ``(xq, s_x)``: int8 (M, Kp) codes (zero padded to Kp = K rounded up to 64)
    and float32 (M,) scales; ``xq[:, :K] / s_x[:, None]`` is exactly
    :func:`thrifty.torch.nn.quantize_activations` ``(x, 8)`` in float32.
    """
    import torch

    k = x.shape[-1]
    xf = x.detach().reshape(-1, k).to(torch.float32).contiguous()
    m, kp = xf.shape[0], _kp(k)
    if _rt.use_kernels(xf):
        xq = torch.empty((m, kp), dtype=torch.int8, device=xf.device)
        s_x = torch.empty(m, dtype=torch.float32, device=xf.device)
        _launch("th_act_quant", m * 256, xf, m, k, kp, xq, s_x)
        return xq, s_x
    s_x = 127.0 / xf.abs().amax(dim=-1).clamp(min=1e-5)
    q = torch.round(xf * s_x[:, None]).clamp_(-128, 127).to(torch.int8)
    xq = torch.zeros((m, kp), dtype=torch.int8, device=xf.device)
    xq[:, :k] = q
    return xq, s_x


def dequantize_activations(xq: Any, s_x: Any, k: int) -> Any:
    """``xq[:, :k] / s_x[:, None]`` in float32 (the straight-through activations)."""
    import torch

    if _rt.use_kernels(xq):
        m, kp = xq.shape
        out = torch.empty((m, k), dtype=torch.float32, device=xq.device)
        _launch("th_act_dequant", m * k, xq, m, k, kp, s_x, out)
        return out
    return xq[:, :k].to(torch.float32) / s_x[:, None]


def _weight_scale(weight: Any, scale: str) -> Any:
    import torch

    from .._ternary import weight_scale

    return weight_scale(weight, scale).reshape(1).to(torch.float32).contiguous()


def pack_ternary(weight: Any, scale: str = "absmean") -> PackedTernary:
    """Ternary codes of ``weight`` (N, K) packed 16 per int32 word (see :class:`PackedTernary`).

    The scale and codes are those of :func:`thrifty.torch.nn.ternary_weight` (same torch
    reduction for ``gamma`` on the weight's device).
    """
    import torch

    if weight.dim() != 2:
        raise InvalidInputError(f"weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    n, k = weight.shape
    kp = _kp(k)
    w = weight.detach().to(torch.float32).contiguous()
    s_w = _weight_scale(w, scale)
    if _rt.use_kernels(w):
        words = torch.empty((n, kp // 16), dtype=torch.int32, device=w.device)
        _launch("th_wpack", words.numel(), w, n, k, kp // 16, s_w, words)
        return PackedTernary(words, s_w, k)
    codes = torch.ones((n, kp), dtype=torch.int64, device=w.device)
    codes[:, :k] = torch.round(w * s_w).clamp_(-1, 1).to(torch.int64) + 1
    shifts = 2 * torch.arange(16, dtype=torch.int64, device=w.device)
    words = (codes.reshape(n, kp // 16, 16) << shifts).sum(-1)
    words = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
    return PackedTernary(words, s_w, k)


def _codes(p: PackedTernary) -> Any:
    """int64 codes q in {-1, 0, 1}, shape (N, K) (reference path)."""
    import torch

    w = p.words.to(torch.int64) & 0xFFFFFFFF
    shifts = 2 * torch.arange(16, dtype=torch.int64, device=w.device)
    q = ((w[:, :, None] >> shifts) & 3).reshape(w.shape[0], -1) - 1
    return q[:, :p.in_features]


def unpack_ternary(p: PackedTernary) -> Any:
    """The dequantised weight ``q / s_w`` (float32, (N, K))."""
    import torch

    if _rt.use_kernels(p.words):
        n, kw = p.words.shape
        out = torch.empty((n, p.in_features), dtype=torch.float32, device=p.words.device)
        _launch("th_wunpack", out.numel(), p.words, n, p.in_features, kw, p.s_w, out)
        return out
    return _codes(p).to(torch.float32) / p.s_w


def int8_ternary_linear(xq: Any, s_x: Any, p: PackedTernary, bias: Any = None) -> Any:
    """``(xq @ q.T) / (s_x[:, None] s_w) + bias`` in float32, (M, N); the sum is exact int32."""
    import torch

    m, kp = xq.shape
    n = p.words.shape[0]
    if kp != p.words.shape[1] * 16:
        raise InvalidInputError(f"activations padded to {kp} do not match weights padded to {p.words.shape[1] * 16}")
    b = None if bias is None else bias.detach().to(torch.float32).contiguous()
    if _rt.use_kernels(xq):
        y = torch.empty((m, n), dtype=torch.float32, device=xq.device)
        args = (xq.view(torch.int32), s_x, p.words, p.s_w, b if b is not None else s_x,
                int(b is not None), m, n, kp, y)
        if m <= _GEMV_MAX_M:  # small batches: a warp per output feature
            _launch("th_bitlinear_gemv", -(-n // 8) * 256, *args)
        else:
            _launch("th_bitlinear_gemm", -(-m // 64) * -(-n // 64) * 256, *args)
        return y
    # integer sums, exact in float64 (|sum| <= 128 K < 2^53), on any device
    acc = xq[:, :p.in_features].to(torch.float64) @ _codes(p).to(torch.float64).T
    y = acc.to(torch.float32) / (s_x[:, None] * p.s_w)
    return y if b is None else y + b


# ----------------------------------------------------------------------------- cache

class WeightCache:
    """Packed ternary weights, recomputed only when the weight changes.

    The key is the weight's ``_version`` (bumped by every in-place update, e.g. an
    optimizer step), data pointer, shape, dtype, device and the scale rule. Writes
    through ``weight.data`` bypass the version counter: call :meth:`clear` after them.
    """

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.packed: PackedTernary | None = None
        self.packs = 0

    def clear(self) -> None:
        """Forget the packed weights (the next :meth:`get` repacks)."""
        self.key = None
        self.packed = None

    def get(self, weight: Any, scale: str = "absmean") -> PackedTernary:
        key = (weight._version, weight.data_ptr(), tuple(weight.shape), weight.dtype,
               str(weight.device), scale)
        if self.packed is None or key != self.key:
            self.packed = pack_ternary(weight, scale)
            self.key = key
            self.packs += 1
        return self.packed


# ----------------------------------------------------------------------------- autograd

def _fn() -> Any:
    import torch

    class _BitLinearFn(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, weight: Any, bias: Any, packed: PackedTernary) -> Any:
            k = x.shape[-1]
            xq, s_x = quantize_activations_int8(x)
            y = int8_ternary_linear(xq, s_x, packed, bias)
            ctx.save_for_backward(xq, s_x, packed.words, packed.s_w)
            ctx.meta = (tuple(x.shape), k, x.dtype, weight.dtype, bias is not None)
            return y.to(x.dtype).reshape(*x.shape[:-1], y.shape[-1])

        @staticmethod
        def backward(ctx: Any, gy: Any) -> Any:
            xq, s_x, words, s_w = ctx.saved_tensors
            xshape, k, xdt, wdt, has_bias = ctx.meta
            g = gy.reshape(-1, gy.shape[-1])
            gx = gw = gb = None
            if ctx.needs_input_grad[0]:
                wq = unpack_ternary(PackedTernary(words, s_w, k)).to(g.dtype)
                gx = (g @ wq).reshape(xshape).to(xdt)
            if ctx.needs_input_grad[1]:
                xd = dequantize_activations(xq, s_x, k).to(g.dtype)
                gw = (g.T @ xd).to(wdt)
            if has_bias and ctx.needs_input_grad[2]:
                gb = g.sum(0)
            return gx, gw, gb, None

    return _BitLinearFn


_FN: Any = None


def bitlinear(x: Any, weight: Any, bias: Any = None, *, scale: str = "absmean",
              cache: WeightCache | None = None) -> Any:
    """BitLinear forward (strength 1, 8-bit activations) in integers, with STE gradients.

    Parameters
    ----------
    x : Tensor (..., in_features)
    weight : Tensor (out_features, in_features)
        The latent full-precision weight; its gradient is the straight-through one.
    bias : Tensor (out_features,), optional
    scale : {"absmean", "absmedian"}
    cache : WeightCache, optional
        Reuse packed weights across calls while the weight is unchanged.

    Returns
    -------
    Tensor (..., out_features) of ``x``'s dtype.
    """
    global _FN
    from .._ternary import check_scale

    check_scale(scale)
    if x.shape[-1] != weight.shape[-1]:
        raise InvalidInputError(f"x has {x.shape[-1]} features, the weight expects {weight.shape[-1]}")
    packed = cache.get(weight, scale) if cache is not None else pack_ternary(weight, scale)
    if _FN is None:
        _FN = _fn()
    return _FN.apply(x, weight, bias, packed)
