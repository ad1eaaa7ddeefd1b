"""Quantization-aware layers: BitNet b1.58 ``BitLinear``.

``BitLinear`` keeps full-precision latent weights for the optimizer and, in the
forward pass, uses ternary weights with one per-tensor scale and per-token absmax
integer activations, with straight-through gradients:

* weights: ``gamma = mean|W|`` (``"absmean"``, BitNet b1.58) or the lower median of
  ``|W|`` (``"absmedian"``, BitNet Reloaded); ``s = 1 / max(gamma, 1e-5)``;
  ``W_q = clamp(round(W s), -1, 1) / s`` (round half to even);
* activations (``act_bits = b``): ``s_x = (2**(b-1) - 1) / max(max|x|, 1e-5)`` per
  token (last dimension), ``x_q = clamp(round(x s_x), -2**(b-1), 2**(b-1) - 1) / s_x``;
* straight-through estimator blended by ``strength`` (lambda in [0, 1]):
  ``w + lambda (W_q - w).detach()``: 0 is the plain float layer, 1 full quantization,
  values in between phase quantization in (the 16 -> 1.58-bit transition).

On CUDA (``strength=1``, ``act_bits=8``, when :func:`thrifty.torch.cuda_available`) the forward pass runs in
integers (the CUDA backend's fused layer: int8 activations x ternary weights packed 16 per
word, cached until the weight changes), with the same values up to the float layer's
accumulation rounding and the same straight-through gradients.

There is no normalisation inside the layer: put a LayerNorm/RMSNorm before it.
:meth:`BitLinear.export` returns the weights packed by :func:`thrifty.quant.quantize`
(``"ternary"``), exactly the codes the forward pass uses.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_float, check_int
from ._cuda import _runtime as _rt
from ._ternary import check_scale as _check_scale
from ._ternary import weight_scale as _weight_scale

__all__ = ["BitLinear", "to_bitlinear", "set_strength", "StrengthSchedule",
           "ternary_weight", "quantize_activations"]



def _check_strength(strength: Any) -> float:
    return check_float(strength, "strength", low=0.0, high=1.0)


def _check_act_bits(act_bits: Any) -> int | None:
    return None if act_bits is None else check_int(act_bits, "act_bits", low=2, high=16)


def ternary_weight(weight: Tensor, scale: str = "absmean") -> tuple[Tensor, Tensor]:
    """Ternary codes and the inverse scale of a weight, as ``thrifty.quant`` computes them.

    Returns ``(q, s)`` with ``q`` in {-1, 0, 1} (float32, the weight's shape) and the
    float32 scalar ``s``; the dequantised weight is ``q / s``. The mean of ``|W|`` is
    accumulated in float64 and rounded to float32, as ``thrifty.quant`` does.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.nn import ternary_weight
    >>> q, s = ternary_weight(torch.tensor([[0.9, -0.05], [-1.2, 0.3]]))
    >>> q
    tensor([[ 1., -0.],
            [-1.,  0.]])
    >>> round(s.item(), 4)                  # 1 / mean|W| = 1 / 0.6125
    1.6327
    """
    _check_scale(scale)
    w = weight.detach().float()
    s = _weight_scale(w, scale)
    return torch.round(w * s).clamp_(-1.0, 1.0), s


def quantize_activations(x: Tensor, bits: int = 8) -> Tensor:
    """Per-token (last dimension) absmax fake quantization to ``bits``-bit integers.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.nn import quantize_activations
    >>> quantize_activations(torch.tensor([[1.0, 0.5, -0.25]]))
    tensor([[ 1.0000,  0.5039, -0.2520]])
    """
    bits = _check_act_bits(bits) or 8
    qmax = 2 ** (bits - 1) - 1
    xf = x.float()
    s = qmax / xf.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    return (torch.round(xf * s).clamp_(-qmax - 1, qmax) / s).to(x.dtype)


class BitLinear(nn.Linear):
    """BitNet b1.58 linear layer for quantization-aware training.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
        BitNet layers have none (default False).
    scale : {"absmean", "absmedian"}
        Per-tensor weight scale.
    act_bits : int or None
        Bits of the per-token activation quantization (8); None keeps activations float.
    strength : float in [0, 1]
        Quantization blend lambda (1 = full BitNet, 0 = plain ``nn.Linear``).

    Attributes
    ----------
    weight : Parameter
        The latent full-precision weights the optimizer updates.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.nn import BitLinear
    >>> _ = torch.manual_seed(0)
    >>> layer = BitLinear(8, 4)
    >>> layer(torch.randn(2, 8)).shape
    torch.Size([2, 4])
    >>> layer.export().data.shape        # 4 rows of 2-bit codes in one byte row
    (1, 8)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        *,
        scale: str = "absmean",
        act_bits: int | None = 8,
        strength: float = 1.0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        check_int(in_features, "in_features", low=1)
        check_int(out_features, "out_features", low=1)
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.scale = _check_scale(scale)
        self.act_bits = _check_act_bits(act_bits)
        self.strength = _check_strength(strength)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs: Any) -> BitLinear:
        """A BitLinear with a copy of ``linear``'s weight and bias."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype, **kwargs)
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def quantized_weight(self) -> Tensor:
        """The dequantised ternary weight ``W_q = q / s`` (no gradient)."""
        q, s = ternary_weight(self.weight, self.scale)
        return (q / s).to(self.weight.dtype)

    def forward(self, x: Tensor) -> Tensor:
        lam = self.strength
        if lam == 1.0 and self.act_bits == 8 and _rt.use_kernels(x):
            # same layer in integers on the GPU (the CUDA backend): int8 x packed
            # ternary GEMM, packed weights cached until the weight changes
            from ._cuda import bitlinear as fused

            cache = self.__dict__.setdefault("_fused_cache", fused.WeightCache())
            return fused.bitlinear(x, self.weight, self.bias, scale=self.scale, cache=cache)
        w = self.weight
        if lam > 0.0:
            w = w + lam * (self.quantized_weight() - w).detach()
            if self.act_bits is not None:
                x = x + lam * (quantize_activations(x, self.act_bits) - x).detach()
        return F.linear(x, w, self.bias)

    def export(self) -> Any:
        """The ternary weights packed by ``thrifty.quant`` (a ``QuantizedTensor``).

        Same bytes as ``thrifty.quant.quantize(self.weight, "ternary", scale=self.scale)``;
        ``thrifty.quant.dequantize`` gives back :meth:`quantized_weight`. The bias is
        not included.
        """
        from .. import quant

        return quant.quantize(self.weight.detach().float().cpu().contiguous(), "ternary", scale=self.scale)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, scale={self.scale!r}, act_bits={self.act_bits}, "
                f"strength={self.strength}")


def to_bitlinear(
    model: nn.Module,
    *,
    scale: str = "absmean",
    act_bits: int | None = 8,
    strength: float = 1.0,
    exclude: tuple[str, ...] | list[str] = (),
) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place) by a :class:`BitLinear`.

    Weights and biases are copied. ``exclude`` lists qualified module names to keep
    (for example the output head). Returns ``model``; a bare ``nn.Linear`` is returned
    converted.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.nn import to_bitlinear
    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> m = to_bitlinear(m, exclude=["2"])
    >>> [type(x).__name__ for x in m]
    ['BitLinear', 'ReLU', 'Linear']
    """
    kwargs = {"scale": _check_scale(scale), "act_bits": _check_act_bits(act_bits),
              "strength": _check_strength(strength)}
    if type(model) is nn.Linear:
        return BitLinear.from_linear(model, **kwargs)
    skip = set(exclude)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is nn.Linear and full not in skip:
                setattr(module, child_name, BitLinear.from_linear(child, **kwargs))
    return model


def set_strength(model: nn.Module, strength: float) -> None:
    """Set the quantization strength of every :class:`BitLinear` in ``model``."""
    v = _check_strength(strength)
    for m in model.modules():
        if isinstance(m, BitLinear):
            m.strength = v


class StrengthSchedule:
    """Linear 16 -> 1.58-bit transition: strength 0 until ``start_step``, then rising
    linearly to 1 over ``ramp_steps`` optimizer steps. Call :meth:`step` after each
    optimizer step (like an LR scheduler).

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.nn import BitLinear, StrengthSchedule
    >>> layer = BitLinear(4, 4)
    >>> sched = StrengthSchedule(layer, ramp_steps=4)
    >>> [round(layer.strength, 2) for _ in range(5) if sched.step() is None]
    [0.25, 0.5, 0.75, 1.0, 1.0]
    """

    def __init__(self, model: nn.Module, ramp_steps: int, *, start_step: int = 0) -> None:
        check_int(ramp_steps, "ramp_steps", low=0)
        check_int(start_step, "start_step", low=0)
        self.model = model
        self.ramp_steps = ramp_steps
        self.start_step = start_step
        self.last_step = 0
        set_strength(model, self.strength_at(0))

    def strength_at(self, step: int) -> float:
        """Strength after ``step`` optimizer steps."""
        if step < self.start_step:
            return 0.0
        if self.ramp_steps == 0:
            return 1.0
        return min(1.0, (step - self.start_step) / self.ramp_steps)

    def step(self) -> None:
        self.last_step += 1
        set_strength(self.model, self.strength_at(self.last_step))
