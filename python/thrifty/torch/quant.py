"""Every :mod:`thrifty.quant` format for torch tensors on any device, byte-identical to
the CPU.

:func:`quantize` and :func:`dequantize` take the options of :func:`thrifty.quant.quantize`
and return / accept the same :class:`thrifty.quant.QuantizedTensor`, with torch tensors
as its arrays:

* CUDA tensors, when :func:`thrifty.torch.cuda_available` is true, run the kernels of
  ``quant.cu`` on torch's current stream; the packed bytes, scales and zero points stay
  on the GPU;
* everything else runs :func:`thrifty.quant.quantize` (the Rust core) and returns its
  arrays as torch tensors on the input's device.

Both paths produce the same bytes: each kernel is a port of the Rust loop it replaces,
compiled without fused multiply-adds, with the same counter-based random stream for
``rounding="stochastic"`` (element ``i`` draws from ``(seed, i)``) and the same float64
summation order for the ternary absmean scale. :func:`to_numpy` copies the arrays to
the host (what :func:`thrifty.quant.save` writes), :func:`to_torch` brings a loaded one
to a device.

Examples
--------
>>> import torch
>>> from thrifty.torch import quant as gq
>>> w = torch.tensor([[0.9, -0.05], [-1.2, 0.3], [0.2, 0.0], [-0.7, 1.0]])
>>> q = gq.quantize(w, "ternary")
>>> q.data
tensor([[ 18, 153]], dtype=torch.uint8)
>>> gq.dequantize(q)[0]
tensor([0.5437, 0.0000])
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .. import quant as _cpu
from ..quant import QuantizedTensor
from .._errors import FormatError, InvalidInputError
from .._validation import check_choice
from ._cuda import _runtime as _rt

__all__ = ["QuantizedTensor", "quantize", "dequantize", "to_numpy", "to_torch", "fp8_encode",
           "fp8_decode", "fp4_encode", "fp4_decode"]

_FILE = "quant.cu"
_KERNELS: tuple[str, ...] = tuple(_rt.kernel_signatures(_FILE))

_CHUNK = 65536
_SEG = 256  # elements per thread of the group reductions
_KIND = {"e4m3": 0, "e5m2": 1, "e2m1": 2}
_FP8_MAX = {"e4m3": 448.0, "e5m2": 57344.0}


_AMAX_BLOCKS = 2048  # grid of the per-tensor amax (a grid-stride loop)
# status word bits set by the kernels (quant.cu: TH_ST_*), read once per call
_ST_NONFINITE, _ST_RANGE, _ST_TQ_SCALE, _ST_CODE3 = 1, 2, 4, 8


def _launch(kernel: str, nthreads: int, *args: Any, **kw: Any) -> None:
    _rt.launch(_FILE, kernel, *args, threads=nthreads, **kw)


def _per4(n: int) -> int:
    """Threads of a kernel taking 4 elements per thread."""
    return -(-n // 4)


def to_numpy(q: QuantizedTensor) -> QuantizedTensor:
    """The same quantized tensor with numpy arrays (copied to the host), e.g. for
    :func:`thrifty.quant.save`; numpy arrays pass through unchanged.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch import quant
    >>> q = quant.to_numpy(quant.quantize(torch.ones(32), "int8"))
    >>> type(q.data).__name__, q.data.dtype.name
    ('ndarray', 'uint8')
    """
    if not isinstance(q, _cpu.QuantizedTensor):
        raise InvalidInputError(f"expected a QuantizedTensor, got {type(q).__name__}")

    def host(a: Any) -> np.ndarray | None:
        if a is None or isinstance(a, np.ndarray):
            return a
        return a.detach().cpu().numpy()

    return _cpu.QuantizedTensor(q.fmt, q.shape, host(q.data), host(q.scales), host(q.zero_points),
                                q.group_size, q.tensor_scale)


def to_torch(q: QuantizedTensor, device: Any = "cpu") -> QuantizedTensor:
    """The same quantized tensor with its arrays as torch tensors on ``device`` (from
    numpy arrays, e.g. read by :func:`thrifty.quant.load`, or from another device)."""
    import torch

    if not isinstance(q, _cpu.QuantizedTensor):
        raise InvalidInputError(f"expected a QuantizedTensor, got {type(q).__name__}")

    def dev(a: Any) -> Any:
        if a is None:
            return None
        if isinstance(a, np.ndarray):
            a = torch.from_numpy(np.require(a, requirements=["C", "W"]))
        return a.to(device)

    return _cpu.QuantizedTensor(q.fmt, q.shape, dev(q.data), dev(q.scales), dev(q.zero_points),
                                q.group_size, q.tensor_scale)


# ----------------------------------------------------------------------------- options

@dataclasses.dataclass(frozen=True)
class _Plan:
    """The checked options of one quantize call (the rules of thrifty.quant + Rust core)."""

    fmt: str
    shape: tuple[int, ...]
    n: int
    rows: int
    cols: int
    g: int
    mode: str
    value: Any
    seed: int | None
    saturate: bool
    symmetric: bool


def _plan(fmt: str, shape: tuple[int, ...], group_size: Any, scale: Any, rounding: Any,
          seed: Any, saturate: Any, symmetric: Any) -> _Plan:
    """Validate options exactly as ``thrifty.quant.quantize`` does (same error types)."""
    fmt = check_choice(fmt, "fmt", _cpu.FORMATS)
    if len(shape) == 0:
        raise InvalidInputError("x must have at least one dimension, got a scalar")
    n = math.prod(shape)
    if n == 0:
        raise InvalidInputError(f"x is empty (shape {tuple(shape)}); nothing to quantize")
    rows, cols = _cpu._rows_cols(fmt, shape)
    gs, mode, value, seed = _cpu._check_options(
        fmt, cols, group_size, scale, rounding, seed, saturate, symmetric
    )
    # --- rust/core/src/quant/mod.rs::quantize
    if seed is not None and fmt in ("tq1_0", "tq2_0", "nf4"):
        raise InvalidInputError(f'rounding="stochastic" is not defined for {fmt}; its reference '
                                "rounds to nearest")
    with np.errstate(over="ignore"):
        value32 = np.float32(value)
    if mode == "fixed" and not (math.isfinite(value32) and value32 > 0):
        raise InvalidInputError(f"a fixed scale must be finite and > 0, got {value}")
    ok = {"default": True,
          "absmean": fmt == "ternary", "absmedian": fmt == "ternary",
          "absmax": fmt in ("int8", "int4", "fp8_e4m3", "fp8_e5m2"),
          "fixed": fmt in ("int8", "fp8_e4m3", "fp8_e5m2") and gs is None}[mode]
    if not ok:
        raise InvalidInputError(
            f"scale={scale!r} is not supported for format {fmt} (ternary: absmean/absmedian; "
            "int8/int4/fp8: absmax, and a fixed number for per-tensor int8/fp8; others: default)")
    if symmetric and fmt != "int4":
        raise InvalidInputError("symmetric applies to int4 only")
    if mode == "fixed":  # int.rs / mx.rs: the dequantized range must fit float32
        with np.errstate(over="ignore", divide="ignore"):
            bad = (not (np.isfinite(np.float32(1) / value32) and np.isfinite(np.float32(-128) * value32))
                   if fmt == "int8" else not np.isfinite(np.float32(_FP8_MAX[fmt[4:]]) * value32))
        if bad:
            raise InvalidInputError(f"a fixed {fmt} scale {value} would overflow float32 (its "
                                    "reciprocal or the dequantized range)")
    # --- format rules (ternary.rs, int.rs, mx.rs)
    g = n
    if fmt in ("tq1_0", "tq2_0"):
        if cols % 256:
            raise InvalidInputError(
                f"{fmt} needs the last dimension to be a multiple of 256 (GGUF rows are whole "
                f"blocks), got {cols}; pad the rows yourself or use another format")
        g = 256
    elif fmt in ("int8", "int4", "fp8_e4m3", "fp8_e5m2"):
        want = gs if gs is not None else (128 if fmt == "int4" else None)
        g = n if want is None else want
        if g != n and cols % g:
            raise InvalidInputError(
                f"group_size={g} does not divide the last dimension ({cols}) for {fmt}; choose "
                "a divisor, -1 for one group per row, or None for per-tensor")
        if fmt == "int4" and g % 2:
            raise InvalidInputError(f"int4 needs an even group_size, got {g}")
    elif fmt == "nf4":
        g = 64 if gs is None else gs
        if not (32 <= g <= 4096 and g & (g - 1) == 0):
            raise InvalidInputError(f"nf4 block size must be a power of two between 32 and 4096, got {g}")
    elif fmt.startswith("mx"):
        if gs is not None and gs != 32:
            raise InvalidInputError(f"{fmt} uses blocks of 32 (OCP MX v1.0); group_size must be None or 32")
        g = 32
    elif fmt == "nvfp4":
        if gs is not None and gs != 16:
            raise InvalidInputError("nvfp4 uses blocks of 16; group_size must be None or 16")
        g = 16
    return _Plan(fmt=fmt, shape=tuple(int(s) for s in shape), n=n, rows=rows, cols=cols, g=g,
                 mode=mode, value=value, seed=seed, saturate=bool(saturate),
                 symmetric=bool(symmetric))


def _float_tensor(x: Any) -> Any:
    import torch

    if not isinstance(x, torch.Tensor):
        raise InvalidInputError(f"x must be a torch.Tensor for the GPU path, got {type(x).__name__}")
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise InvalidInputError(f"x must have a floating dtype (float16/bfloat16/float32/float64), got {x.dtype}")
    return x.detach().to(torch.float32).contiguous()


# ----------------------------------------------------------------------------- quantize

def quantize(
    x: Any,
    fmt: str,
    *,
    group_size: int | None = None,
    scale: str | float | None = None,
    rounding: str = "nearest",
    seed: int | None = None,
    saturate: bool = True,
    symmetric: bool = False,
) -> QuantizedTensor:
    """Quantize ``x`` to ``fmt``: :func:`thrifty.quant.quantize` for torch tensors.

    CUDA tensors run the kernels (when :func:`thrifty.torch.cuda_available`), everything else
    the Rust core; the result's arrays live on ``x``'s device and hold the same bytes as
    ``thrifty.quant.quantize(x.cpu(), fmt, ...)``. Options and errors are those of
    :func:`thrifty.quant.quantize`.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch import quant as gq
    >>> q = gq.quantize(torch.linspace(-1, 1, 64), "int4", group_size=32, rounding="stochastic", seed=7)
    >>> q.data.dtype, tuple(q.data.shape), tuple(q.scales.shape)
    (torch.uint8, (32,), (2,))
    """
    import torch

    if not (isinstance(x, torch.Tensor) and _rt.use_kernels(x)):
        return _quantize_fallback(x, fmt, group_size=group_size, scale=scale, rounding=rounding,
                                  seed=seed, saturate=saturate, symmetric=symmetric)
    plan = _plan(fmt, tuple(x.shape), group_size, scale, rounding, seed, saturate, symmetric)
    xf = _float_tensor(x)
    return _quantize_kernels(xf.reshape(-1), plan)


def _nonfinite_error(x: Any) -> InvalidInputError:
    import torch

    bad = (~torch.isfinite(x)).reshape(-1)
    i = int(bad.nonzero()[0, 0])
    return InvalidInputError(
        f"input contains {float(x.reshape(-1)[i])} at flat index {i} ({int(bad.sum())} "
        "non-finite values); quantize accepts finite values only (the fp8_encode/fp4_encode "
        "codecs map NaN and Inf)")


def _quantize_fallback(x: Any, fmt: str, **kw: Any) -> QuantizedTensor:
    device = getattr(x, "device", "cpu")
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return to_torch(_cpu.quantize(x, fmt, **kw), device)


def _quantize_kernels(x: Any, p: _Plan) -> QuantizedTensor:
    """The kernel path on a flat contiguous float32 tensor (any device the launcher takes).

    The kernels check the input while they read it (non-finite values, groups whose
    dequantized range overflows, TQ block scales beyond float16) and set bits of a
    status word, read once at the end: no separate checking pass over ``x``.
    """
    import torch

    dev = x.device
    n, fmt = p.n, p.fmt
    stoch = 1 if p.seed is not None else 0
    seed = p.seed or 0
    u8 = dict(dtype=torch.uint8, device=dev)
    f32 = dict(dtype=torch.float32, device=dev)
    scales: Any = None
    zps: Any = None
    tscale: float | None = None
    status = torch.zeros(2, dtype=torch.int32, device=dev)  # flags, nvfp4 tensor scale bits

    if fmt == "ternary":
        sbuf = torch.empty(2, **f32)
        if p.mode == "absmedian":
            gamma = x.abs().kthvalue((n - 1) // 2 + 1).values.reshape(1).contiguous()
            _launch("th_ternary_scale_gamma", 1, gamma, sbuf)
        else:
            nch = -(-n // _CHUNK)
            parts = torch.empty(nch, dtype=torch.float64, device=dev)
            _rt.launch(_FILE, "th_absmean_chunks", x, n, parts, blocks=nch)
            _launch("th_ternary_scale_mean", 1, parts, nch, n, sbuf)
        big_r = -(-p.rows // 4)
        data = torch.empty(big_r * p.cols, **u8)
        _launch("th_ternary_pack", _per4(big_r * p.cols), x, p.rows, p.cols, sbuf, stoch, seed, data, status)
        data = data.reshape((big_r,) + p.shape[1:])
        scales = sbuf[1:2].clone()
    elif fmt in ("tq1_0", "tq2_0"):
        nb = n // 256
        tb = 54 if fmt == "tq1_0" else 66
        data = torch.empty(nb * tb, **u8)
        _launch("th_tq_pack", nb * 256, x, nb, int(fmt == "tq1_0"), data, status)
        data = data.reshape(p.shape[:-1] + (-1,))
    elif fmt in ("int8", "int4", "fp8_e4m3", "fp8_e5m2"):
        g = p.g
        ng = n // g
        is4 = fmt == "int4"
        asym = is4 and not p.symmetric
        if p.mode == "fixed":
            scales = torch.full((1,), p.value, **f32)
        elif asym:
            lo = torch.full((ng,), -1, dtype=torch.int32, device=dev)  # 0xFFFFFFFF
            hi = torch.zeros(ng, dtype=torch.int32, device=dev)
            _launch("th_group_minmax", -(-n // _SEG), x, n, g, _SEG, lo, hi)
            scales = torch.empty(ng, **f32)
            zps = torch.empty(ng, **f32)
            _launch("th_int4_asym_scales", ng, lo, hi, ng, scales, zps, status)
        else:
            amax = torch.zeros(ng, dtype=torch.int32, device=dev)
            _amax(x, n, g, amax)
            scales = torch.empty(ng, **f32)
            # int.rs / mx.rs: every group's dequantized range must fit float32 (_ST_RANGE)
            if fmt.startswith("fp8"):
                _launch("th_fp8_scales", ng, amax, ng, _FP8_MAX[fmt[4:]], scales, status)
            else:
                _launch("th_int_scales", ng, amax, ng, 7.5 if is4 else 127.5, -8.0 if is4 else -128.0,
                        scales, status)
        if fmt.startswith("fp8"):
            data = torch.empty(n, **u8)
            _launch("th_fp8_encode", _per4(n), x, n, g, scales, _KIND[fmt[4:]], int(p.saturate), stoch,
                    seed, data, status)
        else:
            data = torch.empty(n // 2 if is4 else n, **u8)
            zp_arg = zps if zps is not None else scales
            _launch("th_int_encode", _per4(n), x, n, g, scales, zp_arg, int(is4), int(asym),
                    stoch, seed, data, status)
    elif fmt == "nf4":
        g = p.g
        nb = -(-n // g)
        scales = torch.empty(nb, **f32)
        _launch("th_block_amax", nb, x, n, g, scales)
        data = torch.empty(-(-n // 2), **u8)
        _launch("th_nf4_encode", data.numel(), x, n, g, scales, data, status)
    elif fmt.startswith("mx"):
        nb = -(-n // 32)
        kind = {"mxfp4": "e2m1", "mxfp8_e4m3": "e4m3", "mxfp8_e5m2": "e5m2"}[fmt]
        emax = {"e2m1": 2, "e4m3": 8, "e5m2": 15}[kind]
        data = torch.empty(nb * (16 if kind == "e2m1" else 32), **u8)
        scales = torch.empty(nb, **u8)
        _launch("th_block_encode", nb * 8, x, n, 32, 0, _KIND[kind], emax, x, stoch, seed, data,
                scales, status)
    else:  # nvfp4
        nb = -(-n // 16)
        amax = torch.zeros(1, dtype=torch.int32, device=dev)
        _amax(x, n, n, amax)
        ptbuf = status.view(torch.float32)[1:]  # read back with the flags
        _launch("th_nvfp4_tensor_scale", 1, amax, ptbuf)
        data = torch.empty(nb * 8, **u8)
        scales = torch.empty(nb, **u8)
        _launch("th_block_encode", nb * 4, x, n, 16, 1, _KIND["e2m1"], 0, ptbuf, stoch, seed,
                data, scales, status)
    flags, pt_bits = status.tolist()  # the one host synchronisation
    if flags & _ST_NONFINITE:
        raise _nonfinite_error(x)
    if flags & _ST_TQ_SCALE:  # ternary.rs: a float16 block scale that rounded to infinity
        i = int((x.abs() >= 65520).nonzero()[0, 0])
        raise InvalidInputError(
            f"{fmt} stores each block's largest |x| as float16, which ends at 65504: x = "
            f"{float(x[i])} at flat index {i} would give an infinite scale; rescale the "
            "tensor or use another format")
    if flags & _ST_RANGE:
        if zps is not None:
            fits = torch.isfinite(-8.0 * scales + zps) & torch.isfinite(7.0 * scales + zps)
        else:
            fits = torch.isfinite(scales * (_FP8_MAX[fmt[4:]] if fmt.startswith("fp8")
                                            else (-8.0 if fmt == "int4" else -128.0)))
        k = int((~fits).nonzero()[0, 0])
        raise InvalidInputError(
            f"{fmt}: the values of group {k} come too close to float32's max (3.4e38): "
            "their dequantized values would overflow to infinity; rescale the tensor")
    if fmt == "nvfp4":
        tscale = float(np.array([pt_bits], dtype=np.int32).view(np.float32)[0])
        if not np.isfinite(np.float32(6) * (np.float32(tscale) * np.float32(448))):
            raise InvalidInputError("nvfp4: the largest |x| comes too close to float32's max "
                                    "(3.4e38): the dequantized values would overflow to infinity")
    return QuantizedTensor(fmt, p.shape, data, scales, zps, p.g, tscale)  # torch arrays


def _amax(x: Any, n: int, g: int, amax: Any) -> None:
    """Largest |x| per group of ``g`` as float bit patterns into the zeroed ``amax``:
    one grid-stride pass of 16-byte loads for a whole tensor, else per group."""
    if g == n:
        _launch("th_tensor_amax", _per4(n), x, n, amax, max_blocks=_AMAX_BLOCKS)
    else:
        _launch("th_group_amax", -(-n // _SEG), x, n, g, _SEG, amax)


# ----------------------------------------------------------------------------- dequantize

def _check_packed(q: Any) -> tuple[str, int, int, int]:
    """Rust's dequantize checks; returns (fmt, n, rows, cols)."""
    import torch

    if not isinstance(q, _cpu.QuantizedTensor):
        raise InvalidInputError(f"expected a QuantizedTensor, got {type(q).__name__}")
    fmt = check_choice(q.fmt, "fmt", _cpu.FORMATS)
    if len(q.shape) == 0 or math.prod(q.shape) == 0:
        raise FormatError(f"invalid shape {q.shape}")
    n = math.prod(q.shape)
    rows, cols = _cpu._rows_cols(fmt, q.shape)
    sdtype = torch.uint8 if fmt in _cpu._U8_SCALES else torch.float32
    for name, a, dt in (("data", q.data, torch.uint8), ("scales", q.scales, sdtype),
                        ("zero_points", q.zero_points, torch.float32)):
        if a is not None and a.dtype != dt:
            raise InvalidInputError(f"{name} must have dtype {dt}, got {a.dtype}")
    g = q.group_size

    def size(a: Any) -> int:
        return 0 if a is None else a.numel()

    def expect(what: str, got: int, want: int) -> None:
        if got != want:
            raise FormatError(f"{fmt} {what} has {got} entries, expected {want} for this shape")

    def groups(even: bool) -> None:
        if g <= 0 or n % g or (g != n and cols % g) or (even and g % 2):
            raise FormatError(f"{fmt}: group_size {g} does not fit shape {rows} x {cols}")

    if fmt == "ternary":
        expect("data", size(q.data), -(-rows // 4) * cols)
        expect("scales", size(q.scales), 1)
    elif fmt in ("tq1_0", "tq2_0"):
        if n % 256 or cols % 256:
            raise FormatError(f"{fmt} needs rows that are multiples of 256")
        expect("data", size(q.data), n // 256 * (54 if fmt == "tq1_0" else 66))
    elif fmt in ("int8", "int4"):
        groups(fmt == "int4")
        expect("data", size(q.data), n // 2 if fmt == "int4" else n)
        expect("scales", size(q.scales), n // g)
        if q.zero_points is not None:
            if fmt == "int8":
                raise FormatError("int8 has no zero points")
            expect("zero_points", size(q.zero_points), n // g)
    elif fmt == "nf4":
        if not (32 <= g <= 4096 and g & (g - 1) == 0):
            raise FormatError(f"nf4 block size must be a power of two between 32 and 4096, got {g}")
        expect("data", size(q.data), -(-n // 2))
        expect("scales", size(q.scales), -(-n // g))
    elif fmt.startswith("fp8"):
        groups(False)
        expect("data", size(q.data), n)
        expect("scales", size(q.scales), n // g)
    else:
        blk = 16 if fmt == "nvfp4" else 32
        nb = -(-n // blk)
        expect("data", size(q.data), nb * (blk // 2 if fmt in ("mxfp4", "nvfp4") else blk))
        expect("scales", size(q.scales), nb)
        if fmt == "nvfp4" and q.tensor_scale is None:
            raise FormatError("nvfp4 needs its per-tensor scale")
    return fmt, n, rows, cols


def dequantize(q: Any) -> Any:
    """Float32 torch tensor of ``q``'s original shape, on ``q``'s device.

    ``q`` is a :class:`thrifty.quant.QuantizedTensor` with torch arrays (from
    :func:`quantize`) or numpy arrays (decoded on the CPU). CUDA arrays run the kernels;
    errors are those of :func:`thrifty.quant.dequantize`.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch import quant as gq
    >>> gq.dequantize(gq.quantize(torch.tensor([0.5, -1.0, 3.0, 2.0]), "fp8_e4m3", scale=1.0))
    tensor([ 0.5000, -1.0000,  3.0000,  2.0000])
    """
    import torch

    if not isinstance(q, _cpu.QuantizedTensor):
        raise InvalidInputError(f"expected a QuantizedTensor, got {type(q).__name__}")
    if not isinstance(q.data, torch.Tensor):
        return torch.from_numpy(_cpu.dequantize(q))
    if not _rt.use_kernels(q.data):
        return torch.from_numpy(_cpu.dequantize(to_numpy(q))).to(q.data.device)
    fmt, n, rows, cols = _check_packed(q)
    for a in (q.scales, q.zero_points):
        if a is not None and a.device != q.data.device:
            raise InvalidInputError("data, scales and zero points must be on the same device")
    return _dequantize_kernels(q, fmt, n, rows, cols)


def _code3(d: Any) -> bool:
    return bool(((d & (d >> 1) & 0x55) != 0).any())


def _dequantize_kernels(q: Any, fmt: str, n: int, rows: int, cols: int) -> Any:
    import torch

    dev = q.data.device
    data = q.data.contiguous().reshape(-1)
    sc = None if q.scales is None else q.scales.contiguous().reshape(-1)
    y = torch.empty(n, dtype=torch.float32, device=dev)
    g = q.group_size
    if fmt == "ternary":
        status = torch.zeros(1, dtype=torch.int32, device=dev)
        _launch("th_ternary_unpack", _per4(n), data, rows, cols, sc, y, status)
        if int(status.item()) & _ST_CODE3:  # checked while unpacking, read once
            raise FormatError("ternary data holds code 3, which is out of range (codes are 0, 1, 2)")
    elif fmt in ("tq1_0", "tq2_0"):
        nb = n // 256
        if fmt == "tq2_0" and _code3(data.reshape(nb, 66)[:, :64]):
            raise FormatError("tq2_0 data holds code 3, which is out of range (codes are 0, 1, 2)")
        _launch("th_tq_unpack", n, data, nb, int(fmt == "tq1_0"), y)
    elif fmt in ("int8", "int4"):
        zp = q.zero_points
        zp = sc if zp is None else zp.contiguous().reshape(-1)
        _launch("th_int_decode", _per4(n), data, n, g, sc, zp, int(fmt == "int4"),
                int(q.zero_points is not None), y)
    elif fmt == "nf4":
        _launch("th_nf4_decode", n, data, n, g, sc, y)
    elif fmt.startswith("fp8"):
        _launch("th_fp8_decode", _per4(n), data, n, g, sc, _KIND[fmt[4:]], y)
    elif fmt.startswith("mx"):
        kind = {"mxfp4": "e2m1", "mxfp8_e4m3": "e4m3", "mxfp8_e5m2": "e5m2"}[fmt]
        _launch("th_block_decode", _per4(n), data, sc, n, 32, _KIND[kind], 0, 0.0, y)
    else:
        _launch("th_block_decode", _per4(n), data, sc, n, 16, _KIND["e2m1"], 1, float(q.tensor_scale), y)
    return y.reshape(q.shape)


# ----------------------------------------------------------------------------- codecs

def _encode(x: Any, kind: str, saturate: bool) -> Any:
    import torch

    if not isinstance(saturate, (bool, np.bool_)):
        raise InvalidInputError(f"saturate must be a bool, got {saturate!r}")
    if not (isinstance(x, torch.Tensor) and _rt.use_kernels(x)):
        device = getattr(x, "device", "cpu")
        xc = x.detach().cpu() if hasattr(x, "detach") else x
        return torch.from_numpy(_cpu._encode(xc, kind, bool(saturate))).to(device)
    xf = _float_tensor(x)
    out = torch.empty(xf.shape, dtype=torch.uint8, device=xf.device)
    _launch("th_fp_encode", _per4(xf.numel()), xf.reshape(-1), out.reshape(-1), xf.numel(), _KIND[kind],
            int(bool(saturate)))
    return out


def _decode(codes: Any, kind: str) -> Any:
    import torch

    if not (isinstance(codes, torch.Tensor) and _rt.use_kernels(codes)):
        device = getattr(codes, "device", "cpu")
        c = codes.detach().cpu().numpy() if hasattr(codes, "detach") else codes
        return torch.from_numpy(_cpu._decode(c, kind)).to(device)
    if codes.dtype != torch.uint8:
        raise InvalidInputError(f"codes must be a uint8 array, got dtype {codes.dtype}")
    c = codes.contiguous()
    if kind == "e2m1" and bool((c > 15).any()):
        i = int((c.reshape(-1) > 15).nonzero()[0, 0])
        raise FormatError(f"code {int(c.reshape(-1)[i])} at flat index {i} is out of range for a "
                          "4-bit format (0..15)")
    y = torch.empty(c.shape, dtype=torch.float32, device=c.device)
    _launch("th_fp_decode", _per4(c.numel()), c.reshape(-1), y.reshape(-1), c.numel(), _KIND[kind])
    return y


def fp8_encode(x: Any, fmt: str = "e4m3", *, saturate: bool = True) -> Any:
    """:func:`thrifty.quant.fp8_encode` for torch tensors (uint8 codes on ``x``'s device)."""
    return _encode(x, _cpu._fp8_name(fmt), saturate)


def fp8_decode(codes: Any, fmt: str = "e4m3") -> Any:
    """:func:`thrifty.quant.fp8_decode` for torch tensors."""
    return _decode(codes, _cpu._fp8_name(fmt))


def fp4_encode(x: Any, *, saturate: bool = True) -> Any:
    """:func:`thrifty.quant.fp4_encode` for torch tensors."""
    return _encode(x, "e2m1", saturate)


def fp4_decode(codes: Any) -> Any:
    """:func:`thrifty.quant.fp4_decode` for torch tensors."""
    return _decode(codes, "e2m1")
