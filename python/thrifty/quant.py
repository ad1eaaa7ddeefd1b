"""Low-bit quantization and packing, exact to each format's reference.

Formats (``fmt``) and where they come from:

============== ================================================================
``ternary``    BitNet b1.58: per-tensor ``scale="absmean"`` (default) or
               ``"absmedian"`` (BitNet Reloaded, lower median as ``torch.median``);
               2-bit codes ``w + 1`` in the Hugging Face BitNet layout
``tq1_0``      GGUF TQ1_0 (llama.cpp), 256-blocks, bytes identical to ``gguf``
``tq2_0``      GGUF TQ2_0, 256-blocks, bytes identical to ``gguf``
``int8``       symmetric (torchao ``SYMMETRIC``), per tensor / channel / group
``int4``       torchao asymmetric (float zero points) or ``symmetric=True``
``nf4``        bitsandbytes NF4 code book, blocks of 64
``fp8_e4m3``   OCP E4M3 ("fn") with a float32 scale per tensor or group
``fp8_e5m2``   OCP E5M2 with a float32 scale per tensor or group
``mxfp4``      OCP MX v1.0: E2M1 elements, 32-blocks, E8M0 scales
``mxfp8_e4m3`` OCP MX v1.0: E4M3 elements, 32-blocks, E8M0 scales
``mxfp8_e5m2`` OCP MX v1.0: E5M2 elements, 32-blocks, E8M0 scales
``nvfp4``      NVFP4 as torchao: E2M1 elements, 16-blocks, E4M3 block scales and a
               float32 per-tensor scale
============== ================================================================

Layouts, in detail:

* ``ternary``: W is seen as ``(out, in) = (shape[0], prod(shape[1:]))``; ``data`` has
  shape ``(ceil(out/4), *shape[1:])`` and packed row ``r`` holds rows
  ``r + i*ceil(out/4)`` at bits ``2i..2i+1`` (Hugging Face ``pack_weights``). ``scales`` holds ``1/s`` with ``s = 1/max(gamma, 1e-5)``, so
  ``dequantize`` returns exactly ``q / s``. The mean of ``|W|`` is accumulated in
  float64 and rounded to float32.
* ``tq1_0`` / ``tq2_0``: ``data`` has ``gguf``'s byte shape ``shape[:-1] +
  (shape[-1] // 256 * 54,)`` (66 for TQ2_0); the fp16 block scales live inside the
  blocks, so ``scales`` is ``None``.
* ``int8``: one two's-complement byte per value; ``scale = max(amax / 127.5, eps)``,
  ``q = clamp(round_half_even(x * (1 / scale)), -128, 127)``.
* ``int4``: nibbles with element ``2i`` in the LOW nibble of byte ``i``. Asymmetric
  (default, torchao): ``scale = max((max - min) / 15, eps)``, ``zero_point = min + 8
  scale``, nibble ``q = clamp(round((x - (zero_point - 8 scale)) / scale), 0, 15)``,
  ``x ~ (q - 8) scale + zero_point``. Symmetric: ``scale = max(amax / 7.5, eps)``, nibble
  ``q + 8`` with ``q = clamp(round(x / scale), -8, 7)``.
* ``nf4``: ``q[2i] << 4 | q[2i+1]`` (element ``2i`` in the HIGH nibble, as
  bitsandbytes), float32 absmax per block.
* ``fp8_*``: one code per byte, ``scale = amax / max`` (448 or 57344) per group (1.0
  for an all-zero group; the smallest subnormal if the quotient underflows).
* ``mx*``: element ``2i`` in the LOW nibble for MXFP4; ``scales`` are E8M0 bytes.
* ``nvfp4``: elements are ``x * ((1 / tensor_scale) / block_scale)`` rounded to E2M1,
  in float32 and in that order (torchao's ``nvfp4_quantize``; a division by
  ``tensor_scale * block_scale`` differs next to ties, e.g. on bf16-valued weights),
  element ``2i`` in the LOW nibble; ``scales`` are E4M3 bytes and
  ``tensor_scale`` is the float32 per-tensor scale ``amax / 2688`` (torchao), floored
  at 2**-126 so that tensors with a tiny amax cannot produce NaN (1.0 if all zero).

Groups (``group_size``) run along the last dimension for ``int8``, ``int4`` and
``fp8_*``: ``None`` is the format default (per tensor; 128 for ``int4``), ``-1`` one
group per row (per channel), a positive value must divide the last dimension.

Shapes not divisible by the block size: ``nf4`` blocks run over the flattened tensor
and the last block may be short (as bitsandbytes); ``mx*`` and ``nvfp4`` pad the
flattened tensor with zeros to whole blocks and remember the shape; ``tq1_0`` /
``tq2_0`` raise (GGUF rows are whole 256-blocks); ``int8`` / ``int4`` / ``fp8_*``
raise when ``group_size`` does not divide the last dimension.

NaN and infinity: ``quantize`` rejects them for every format (``InvalidInputError``);
the element codecs ``fp8_encode`` / ``fp4_encode`` never raise and map them as
``ml_dtypes`` does.

Saturation and overflow: a tensor made by ``quantize`` always dequantizes to finite
values. ``fp8_*`` with a fixed scale and ``saturate=True`` (the default) clamps every
value beyond the format's max, including values whose quotient ``x / scale`` overflows
float32, to ``±max * scale``; ``saturate=False`` maps them to NaN (E4M3) / Inf (E5M2) as
``ml_dtypes`` does, on purpose. Stochastic rounding always saturates. Other formats
never produce codes past their max. What float32 cannot hold is refused
(``InvalidInputError``) instead of silently becoming inf/NaN: ``tq1_0`` / ``tq2_0``
with a block max ``|x| >= 65520`` (its float16 scale would be infinite); ``int8`` /
``int4`` groups whose dequantized range would overflow float32 (``|x|`` above about
3.39e38 for ``int8``, 3.19e38 for symmetric ``int4``, since code ``-128`` / ``-8`` decodes
to ``-1.004`` / ``-1.067`` times the group's max, or an asymmetric ``int4`` group whose
``max - min`` exceeds float32); a fixed scale whose reciprocal (``int8``) or
``max * scale`` overflows. (``fp8_*`` and ``nvfp4`` groups are checked the same way and
stay finite up to float32's max.)

Element codecs and float64: ``fp8_encode`` / ``fp4_encode`` round float64 input
directly (as ``ml_dtypes``' float64 casts), never through float32; ``quantize``
converts float64 to float32 once, then scales and rounds.

MX scales and torchao: the bytes equal torchao's ``to_mx`` except in blocks whose E8M0
scale code clamps to 0 (scale ``2**-127``, a float32 subnormal), i.e. blocks with
``amax < 2**(emax - 126)``: below 2**-124 (MXFP4), 2**-118 (MXFP8 E4M3) or 2**-111
(MXFP8 E5M2). thrifty follows OCP MX v1.0 there: the elements are ``x / 2**-127``
rounded and clamped, so the stored code 0 and the elements agree. torchao stores code 0
but scales the elements by ``2**-126`` (the smallest normal float32), so its elements
are one binade smaller than its own scale says and decode to half the input.

Stochastic rounding (``rounding="stochastic"``) draws one uniform
variate per element from a counter-based stream keyed by ``(seed, flat index)``
(SplitMix64, see ``rust/core/src/quant/rng.rs``), so it is reproducible and
independent of the thread count; it is available for every format except ``tq1_0``,
``tq2_0`` and ``nf4``, whose references define nearest rounding only.
"""

from __future__ import annotations

import json
import math
import operator
import os
import secrets
import struct
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _core
from ._errors import FormatError, InvalidInputError, OutOfMemoryError
from ._validation import _to_float32, _to_numpy, check_choice, check_int

__all__ = [
    "FORMATS",
    "QuantizedTensor",
    "quantize",
    "dequantize",
    "fp8_encode",
    "fp8_decode",
    "fp4_encode",
    "fp4_decode",
    "save",
    "load",
]

FORMATS: tuple[str, ...] = (
    "ternary", "tq1_0", "tq2_0", "int8", "int4", "nf4", "fp8_e4m3", "fp8_e5m2",
    "mxfp4", "mxfp8_e4m3", "mxfp8_e5m2", "nvfp4",
)
"""The format names :func:`quantize` accepts (``QuantizedTensor.fmt``)."""
_U8_SCALES = ("mxfp4", "mxfp8_e4m3", "mxfp8_e5m2", "nvfp4")
_LAYOUT_VERSION = 1


def _float_input(x: Any, name: str, *, allow_empty: bool) -> np.ndarray:
    if type(x).__module__.startswith("torch") and str(getattr(x, "dtype", "")) == "torch.bfloat16":
        x = x.float()  # numpy has no bfloat16; one deliberate conversion
    try:
        a = _to_float32(_to_numpy(x, name), name)
    except MemoryError as e:  # numpy could not make the float32 copy
        raise OutOfMemoryError(f"cannot convert {name} to float32: {e}") from None
    if a.size == 0 and not allow_empty:
        raise InvalidInputError(f"{name} is empty (shape {a.shape}); nothing to quantize")
    return a


class QuantizedTensor:
    """A packed low-bit tensor: bytes in the format's own layout plus its scales.

    Parameters
    ----------
    fmt : str
        One of :data:`FORMATS`.
    shape : tuple of int
        Shape of the original float tensor.
    data : numpy.ndarray of uint8
        The packed bytes.
    scales : numpy.ndarray or None
        float32 scales (uint8 E8M0 / E4M3 codes for ``mx*`` / ``nvfp4``).
    zero_points : numpy.ndarray or None
        float32 zero points (asymmetric ``int4``).
    group_size : int
        Values per scale (the whole tensor for per-tensor scaling).
    tensor_scale : float or None
        The per-tensor float32 scale of ``nvfp4``.

    Attributes
    ----------
    nbytes : int
        Storage in bytes: data, scales, zero points and tensor scale.
    bits_per_value : float
        ``8 * nbytes / size``.
    """

    __slots__ = ("fmt", "shape", "data", "scales", "zero_points", "group_size", "tensor_scale")

    def __init__(
        self,
        fmt: str,
        shape: tuple[int, ...],
        data: np.ndarray,
        scales: np.ndarray | None,
        zero_points: np.ndarray | None,
        group_size: int,
        tensor_scale: float | None = None,
    ) -> None:
        self.fmt = fmt
        self.shape = _int_tuple(shape, "shape")
        self.data = data
        self.scales = scales
        self.zero_points = zero_points
        self.group_size = _int_value(group_size, "group_size")
        self.tensor_scale = None if tensor_scale is None else _float_value(tensor_scale, "tensor_scale")

    @property
    def size(self) -> int:
        """Number of values of the original tensor."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        n = self.data.nbytes
        n += 0 if self.scales is None else self.scales.nbytes
        n += 0 if self.zero_points is None else self.zero_points.nbytes
        return n + (4 if self.tensor_scale is not None else 0)

    @property
    def bits_per_value(self) -> float:
        n = self.size
        return 8.0 * self.nbytes / n if n > 0 else math.nan

    def __repr__(self) -> str:
        return (f"QuantizedTensor(fmt={self.fmt!r}, shape={self.shape}, "
                f"group_size={self.group_size}, bits_per_value={self.bits_per_value:.4g})")


def _int_value(v: Any, name: str) -> int:
    """An integer field of a :class:`QuantizedTensor` (bool and float are refused)."""
    if isinstance(v, (bool, np.bool_)):
        raise InvalidInputError(f"{name} must be an integer, got {v!r}")
    try:
        return operator.index(v)
    except TypeError:
        raise InvalidInputError(f"{name} must be an integer, got {type(v).__name__}") from None


def _int_tuple(v: Any, name: str) -> tuple[int, ...]:
    if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
        raise InvalidInputError(f"{name} must be a sequence of integers, got {type(v).__name__}")
    try:
        items = list(v)
    except Exception as e:  # noqa: BLE001 - any failure of a user iterable
        raise InvalidInputError(f"{name} could not be read: {e}") from None
    return tuple(_int_value(s, f"{name} entries") for s in items)


def _float_value(v: Any, name: str) -> float:
    if isinstance(v, (bool, np.bool_, str, bytes)):
        raise InvalidInputError(f"{name} must be a float, got {v!r}")
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInputError(f"{name} must be a float, got {v!r}") from None


_MAX_INDEX = 2**63 - 1  # sizes the core can address


def _rows_cols(fmt: str, shape: tuple[int, ...]) -> tuple[int, int]:
    n = math.prod(shape)
    if fmt == "ternary":
        rows = shape[0]
        return rows, (n // rows if rows else 0)
    cols = shape[-1]
    return (n // cols if cols else 0), cols


def _check_options(fmt: str, cols: int, group_size: Any, scale: Any, rounding: Any,
                   seed: Any, saturate: Any, symmetric: Any
                   ) -> tuple[int | None, str, float, int | None]:
    """Validate the options of :func:`quantize` (shared with the CUDA backend of ``thrifty.torch.quant``):
    returns ``(group_size, scale_mode, scale_value, seed)`` with ``group_size=-1``
    resolved to ``cols`` and a random seed drawn for unseeded stochastic rounding."""
    gs: int | None = None
    if group_size is not None:
        gs = check_int(group_size, "group_size", low=-1)
        if gs == 0:
            raise InvalidInputError("group_size must be positive, -1 (per row) or None")
        if fmt in ("ternary", "tq1_0", "tq2_0"):
            raise InvalidInputError(f"{fmt} has a fixed layout; group_size must be None")
        if gs == -1:
            if fmt not in ("int8", "int4", "fp8_e4m3", "fp8_e5m2"):
                raise InvalidInputError("group_size=-1 (per row) applies to int8, int4 and fp8 only")
            gs = cols
    mode, value = "default", 1.0
    if isinstance(scale, str):
        mode = check_choice(scale, "scale", ("absmean", "absmedian", "absmax"))
    elif scale is not None:
        if isinstance(scale, bool):
            raise InvalidInputError(f"scale must be a string or a positive number, got {scale!r}")
        try:
            value = float(scale)
        except (TypeError, ValueError):
            raise InvalidInputError(f"scale must be a string or a positive number, got {scale!r}") from None
        mode = "fixed"
    check_choice(rounding, "rounding", ("nearest", "stochastic"))
    if rounding == "stochastic":
        seed = secrets.randbits(64) if seed is None else check_int(seed, "seed", low=0, high=2**64 - 1)
    elif seed is not None:
        raise InvalidInputError("seed applies to rounding='stochastic' only")
    if not isinstance(saturate, (bool, np.bool_)):
        raise InvalidInputError(f"saturate must be a bool, got {saturate!r}")
    if not isinstance(symmetric, (bool, np.bool_)):
        raise InvalidInputError(f"symmetric must be a bool, got {symmetric!r}")
    return gs, mode, value, seed


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
    """Quantize a float tensor and pack it in the layout of ``fmt``.

    Parameters
    ----------
    x : array-like or CPU torch.Tensor of float16/float32/float64 (or bfloat16), ndim >= 1
        C-contiguous float32 input (numpy or CPU torch) is read without a copy.
    fmt : str
        One of :data:`FORMATS` (see the module docstring for layouts).
    group_size : int, optional
        ``int8``/``int4``/``fp8_*``: values per scale along the last dimension
        (``None`` = format default, ``-1`` = per row); ``nf4``: block size (power of
        two, 32..4096, default 64); ``mx*``: 32; ``nvfp4``: 16; must be ``None`` for
        ``ternary``, ``tq1_0`` and ``tq2_0``.
    scale : str or float, optional
        ``ternary``: ``"absmean"`` (default) or ``"absmedian"``. ``int8``, ``int4``,
        ``fp8_*``: ``"absmax"`` (default); ``int8`` and ``fp8_*`` also take a positive
        float, a fixed per-tensor scale (``scale=1.0`` with ``fp8_*`` is a plain cast).
    rounding : {"nearest", "stochastic"}
        Stochastic rounding is unbiased and reproducible given ``seed``.
    seed : int, optional
        Seed of the stochastic stream (0 <= seed < 2**64); drawn at random if omitted.
    saturate : bool
        ``fp8_*`` with a fixed scale: clamp values beyond the format's max (default;
        also when ``x / scale`` overflows float32) or map them to NaN (E4M3) / Inf
        (E5M2) as ``ml_dtypes`` does. Stochastic rounding always saturates.
    symmetric : bool
        ``int4`` only: symmetric scaling instead of torchao's asymmetric zero points.

    Returns
    -------
    QuantizedTensor

    Raises
    ------
    thrifty.InvalidInputError
        NaN/inf, empty input, unsupported dtype or format, a group size that does not
        divide the last dimension, an option that does not apply to ``fmt``, values
        whose quantized form float32/float16 cannot hold (see "Saturation and
        overflow" in the module docstring).
    thrifty.OutOfMemoryError
        The packed arrays (or the float32 copy of the input) cannot be allocated.

    Examples
    --------
    >>> import numpy as np
    >>> from thrifty import quant
    >>> w = np.array([[0.9, -0.05], [-1.2, 0.3], [0.2, 0.0], [-0.7, 1.0]], np.float32)
    >>> q = quant.quantize(w, "ternary")          # 4 rows -> one packed row
    >>> q.data, q.bits_per_value
    (array([[ 18, 153]], dtype=uint8), 6.0)
    >>> quant.dequantize(q)
    array([[ 0.54375,  0.     ],
           [-0.54375,  0.54375],
           [ 0.     ,  0.     ],
           [-0.54375,  0.54375]], dtype=float32)
    >>> quant.quantize(np.ones((2, 64), np.float32), "int4", group_size=32).bits_per_value
    6.0
    """
    fmt = check_choice(fmt, "fmt", FORMATS)
    a = _float_input(x, "x", allow_empty=False)
    if a.ndim == 0:
        raise InvalidInputError("x must have at least one dimension, got a scalar")
    rows, cols = _rows_cols(fmt, a.shape)
    gs, mode, value, seed = _check_options(
        fmt, cols, group_size, scale, rounding, seed, saturate, symmetric
    )
    data, scales, zps, tscale, g = _core.quant_quantize(
        a.reshape(-1), fmt, rows, cols, gs, mode, value, bool(symmetric),
        seed, bool(saturate),
    )
    if fmt == "ternary":
        data = data.reshape((-1,) + a.shape[1:])  # (ceil(out/4), *shape[1:]) as HF
    elif fmt in ("tq1_0", "tq2_0"):
        data = data.reshape(a.shape[:-1] + (-1,))
    return QuantizedTensor(fmt, a.shape, data, scales, zps, g, tscale)


def _expected_sizes(fmt: str, shape: tuple[int, ...], g: int) -> tuple[int, int, int]:
    """(data bytes, number of scales, number of zero points) of a valid tensor."""
    n = math.prod(shape)
    rows, cols = _rows_cols(fmt, shape)
    if fmt == "ternary":
        return -(-rows // 4) * cols, 1, 0
    if fmt in ("tq1_0", "tq2_0"):
        return n // 256 * (54 if fmt == "tq1_0" else 66), 0, 0
    if g <= 0:
        return -1, -1, -1
    nb = -(-n // g)
    if fmt == "int8":
        return n, nb, 0
    if fmt == "int4":
        return n // 2, nb, -1  # zero points optional
    if fmt == "nf4":
        return -(-n // 2), nb, 0
    if fmt.startswith("fp8"):
        return n, nb, 0
    per = g // 2 if fmt in ("mxfp4", "nvfp4") else g
    return nb * per, nb, 0


def dequantize(q: QuantizedTensor, *, out: Any = None) -> Any:
    """Unpack and rescale a :class:`QuantizedTensor` to float32 of its original shape.

    Parameters
    ----------
    q : QuantizedTensor
    out : numpy.ndarray or CPU torch.Tensor, optional
        A C-contiguous, writeable float32 buffer of shape ``q.shape`` to write into
        instead of a new array (no allocation: reusing one buffer for many tensors
        also saves the page faults of fresh memory, which dominate a large
        dequantization). It must not overlap the packed arrays. The packed tensor is
        checked completely before the first value is written, so on an error ``out``
        keeps its contents (Ctrl-C, which stops the work between chunks, can leave
        it partly written). torch tensors that require grad are refused (autograd
        would not see the write); pass ``w.detach()`` to write into a parameter.

    Returns
    -------
    numpy.ndarray
        float32 of shape ``q.shape`` (``out`` itself when given).

    Raises
    ------
    thrifty.FormatError
        Arrays whose sizes do not fit the format and shape, or codes out of range
        (ternary/TQ2_0 code 3).
    thrifty.InvalidInputError
        ``out`` of the wrong type, dtype, shape or layout, read-only, or overlapping
        the packed arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from thrifty import quant
    >>> x = np.array([0.5, -1.0, 3.0, 2.0], dtype=np.float32)
    >>> quant.dequantize(quant.quantize(x, "fp8_e4m3", scale=1.0))
    array([ 0.5, -1. ,  3. ,  2. ], dtype=float32)
    >>> buf = np.empty(4, np.float32)
    >>> quant.dequantize(quant.quantize(x, "int8"), out=buf) is buf
    True
    """
    if not isinstance(q, QuantizedTensor):
        raise InvalidInputError(f"expected a QuantizedTensor, got {type(q).__name__}")
    fmt = check_choice(q.fmt, "fmt", FORMATS)
    # the fields are public and writable: check them again, as untrusted input
    shape = _int_tuple(q.shape, "shape")
    if not shape or min(shape) <= 0 or math.prod(shape) > _MAX_INDEX:
        raise FormatError(f"invalid shape {shape}: entries must be positive and the size "
                          f"below 2**63")
    g = _int_value(q.group_size, "group_size")
    if not 0 < g <= _MAX_INDEX:
        raise FormatError(f"invalid group_size {g}: it must be positive and below 2**63")
    tscale = None if q.tensor_scale is None else _float_value(q.tensor_scale, "tensor_scale")
    rows, cols = _rows_cols(fmt, shape)

    def arr(a: Any, dtype: Any, name: str) -> np.ndarray:
        try:
            a = np.asarray(a)
        except Exception as e:  # noqa: BLE001 - ragged lists, objects that refuse
            raise InvalidInputError(f"{name} could not be read as an array: {e}") from None
        if a.dtype != dtype:
            raise InvalidInputError(f"{name} must have dtype {np.dtype(dtype)}, got {a.dtype}")
        return np.require(a, dtype, ["C", "A"]).reshape(-1)

    data = arr(q.data, np.uint8, "data")
    sf = su = zp = None
    if q.scales is not None:
        if fmt in _U8_SCALES:
            su = arr(q.scales, np.uint8, "scales")
        else:
            sf = arr(q.scales, np.float32, "scales")
    if q.zero_points is not None:
        zp = arr(q.zero_points, np.float32, "zero_points")
    if out is None:
        y = _core.quant_dequantize(fmt, rows, cols, g, data, sf, su, zp, tscale)
        assert y is not None  # a new array whenever no out= is given
        return y.reshape(shape)
    flat = _out_buffer(out, shape, [a for a in (data, sf, su, zp) if a is not None])
    _core.quant_dequantize(fmt, rows, cols, g, data, sf, su, zp, tscale, out=flat)
    return out


def _out_buffer(out: Any, shape: tuple, inputs: list) -> np.ndarray:
    """The flat float32 view of a caller's ``out`` buffer, after checking it."""
    if type(out).__module__.startswith("torch") and hasattr(out, "detach"):
        if str(out.device) != "cpu":
            raise InvalidInputError(f"out is a torch tensor on {out.device}; it must be on the CPU")
        if out.requires_grad:
            raise InvalidInputError(
                "out requires grad: autograd would not see the write; pass out.detach() "
                "(same memory) to write into a parameter"
            )
        if str(out.dtype) != "torch.float32":
            raise InvalidInputError(f"out must be float32, got {out.dtype}")
        if not out.is_contiguous():
            raise InvalidInputError("out must be contiguous")
        a = out.numpy()
    elif isinstance(out, np.ndarray):
        a = out
    else:
        raise InvalidInputError(
            f"out must be a numpy array or a CPU torch tensor, got {type(out).__name__}"
        )
    if a.dtype != np.float32:
        raise InvalidInputError(f"out must have dtype float32 (native byte order), got {a.dtype}")
    if tuple(a.shape) != shape:
        raise InvalidInputError(f"out has shape {tuple(a.shape)}, the tensor has shape {shape}")
    if not a.flags.c_contiguous:
        raise InvalidInputError("out must be C-contiguous")
    if not a.flags.writeable:
        raise InvalidInputError("out is read-only")
    if any(np.may_share_memory(a, b) for b in inputs):
        raise InvalidInputError("out overlaps the packed tensor's own arrays")
    return a.reshape(-1)


_FP8 = {"e4m3": "e4m3", "e4m3fn": "e4m3", "fp8_e4m3": "e4m3", "float8_e4m3fn": "e4m3",
        "e5m2": "e5m2", "fp8_e5m2": "e5m2", "float8_e5m2": "e5m2"}


def _fp8_name(fmt: str) -> str:
    if not isinstance(fmt, str) or fmt not in _FP8:
        raise InvalidInputError(f"fmt must be 'e4m3' or 'e5m2', got {fmt!r}")
    return _FP8[fmt]


def _encode(x: Any, kind: str, saturate: bool) -> np.ndarray:
    if not isinstance(saturate, (bool, np.bool_)):
        raise InvalidInputError(f"saturate must be a bool, got {saturate!r}")
    if not (type(x).__module__.startswith("torch") and "bfloat16" in str(getattr(x, "dtype", ""))):
        a64 = _to_numpy(x, "x")
        if a64.dtype == np.float64:
            # rounded directly from float64: a float32 detour would round twice
            try:
                a64 = np.ascontiguousarray(a64, dtype=np.dtype("=f8"))
            except MemoryError as e:
                raise OutOfMemoryError(f"cannot copy x: {e}") from None
            return _core.quant_fp_encode_f64(a64.reshape(-1), kind, bool(saturate)).reshape(a64.shape)
    a = _float_input(x, "x", allow_empty=True)
    return _core.quant_fp_encode(a.reshape(-1), kind, bool(saturate)).reshape(a.shape)


def _decode(codes: Any, kind: str) -> np.ndarray:
    c = _to_numpy(codes, "codes")
    if c.dtype != np.uint8:
        raise InvalidInputError(f"codes must be a uint8 array, got dtype {c.dtype}")
    c = np.ascontiguousarray(c)
    return _core.quant_fp_decode(c.reshape(-1), kind).reshape(c.shape)


def fp8_encode(x: Any, fmt: str = "e4m3", *, saturate: bool = True) -> np.ndarray:
    """Round float values to OCP FP8 codes (one uint8 per value), half to even.

    ``saturate=True`` clamps finite values beyond the max (448 for E4M3, 57344 for
    E5M2) to it; ``saturate=False`` maps them exactly as ``ml_dtypes`` does (E4M3: NaN,
    E5M2: Inf). NaN becomes ``S.1111.111`` (E4M3) / ``S.11111.10`` (E5M2) and Inf becomes
    NaN (E4M3) / Inf (E5M2) in both modes. Never raises on values.

    Examples
    --------
    >>> import numpy as np
    >>> from thrifty.quant import fp8_encode, fp8_decode
    >>> c = fp8_encode(np.array([1.0, 464.0, 1e6], np.float32), "e4m3")
    >>> c, fp8_decode(c, "e4m3")
    (array([ 56, 126, 126], dtype=uint8), array([  1., 448., 448.], dtype=float32))
    """
    return _encode(x, _fp8_name(fmt), saturate)


def fp8_decode(codes: Any, fmt: str = "e4m3") -> np.ndarray:
    """Float32 values of FP8 codes (uint8 array of any shape)."""
    return _decode(codes, _fp8_name(fmt))


def fp4_encode(x: Any, *, saturate: bool = True) -> np.ndarray:
    """Round float values to OCP E2M1 (FP4) codes, one uint8 (0..15) per value.

    E2M1 has no Inf or NaN: out-of-range values and ±Inf become ±6 whatever
    ``saturate`` says, and NaN becomes the code ``ml_dtypes`` gives it (8 for +NaN, 0 for
    -NaN).

    Examples
    --------
    >>> import numpy as np
    >>> from thrifty.quant import fp4_encode, fp4_decode
    >>> fp4_decode(fp4_encode(np.array([0.25, 0.75, 2.5, -5.0, 9.0], np.float32)))
    array([ 0.,  1.,  2., -4.,  6.], dtype=float32)
    """
    return _encode(x, "e2m1", saturate)


def fp4_decode(codes: Any) -> np.ndarray:
    """Float32 values of E2M1 codes; a code above 15 raises :class:`~thrifty.FormatError`."""
    return _decode(codes, "e2m1")


# ----------------------------------------------------------------------------- files

_META_KEY = "thrifty.quant"
_MAX_HEADER = 100 * 1024 * 1024  # as the safetensors library
_MAX_NDIM = 64
_TAG = "safetensors_dtype"  # dtype metadata key of arrays numpy has no dtype for

# safetensors dtype -> (numpy dtype, or the ml_dtypes name; bits per element)
_ST_DTYPES: dict[str, tuple[str, int]] = {
    "BOOL": ("|b1", 8), "U8": ("|u1", 8), "I8": ("|i1", 8), "I16": ("<i2", 16),
    "U16": ("<u2", 16), "I32": ("<i4", 32), "U32": ("<u4", 32), "I64": ("<i8", 64),
    "U64": ("<u8", 64), "F16": ("<f2", 16), "F32": ("<f4", 32), "F64": ("<f8", 64),
    "C64": ("<c8", 64),
    "BF16": ("ml_dtypes.bfloat16", 16), "F8_E4M3": ("ml_dtypes.float8_e4m3fn", 8),
    "F8_E5M2": ("ml_dtypes.float8_e5m2", 8), "F8_E4M3FNUZ": ("ml_dtypes.float8_e4m3fnuz", 8),
    "F8_E5M2FNUZ": ("ml_dtypes.float8_e5m2fnuz", 8), "F8_E8M0": ("ml_dtypes.float8_e8m0fnu", 8),
    "F4": ("", 4), "F6_E2M3": ("", 6), "F6_E3M2": ("", 6),
}


def _ml_dtype(name: str) -> np.dtype | None:
    try:
        import ml_dtypes
    except ImportError:
        return None
    t = getattr(ml_dtypes, name, None)
    return None if t is None else np.dtype(t)


def _numpy_dtype(code: str) -> np.dtype:
    """The numpy dtype a plain tensor of safetensors dtype ``code`` is loaded as.

    Types numpy lacks are ml_dtypes' when it is installed; otherwise (and always for the
    sub-byte F4/F6 types, which safetensors packs) the raw bits as an unsigned integer
    (uint8 bytes for F4/F6) whose dtype carries ``metadata={"safetensors_dtype": code}``
    so that :func:`save` writes them back unchanged."""
    spec, bits = _ST_DTYPES[code]
    if not spec.startswith("ml_dtypes.") and spec:
        return np.dtype(spec)
    if spec:
        dt = _ml_dtype(spec.split(".", 1)[1])
        if dt is not None:
            return dt
    raw = {16: "<u2"}.get(bits, "|u1")
    return np.dtype(raw, metadata={_TAG: code})


def _code_of(a: np.ndarray) -> tuple[str, tuple[int, ...]]:
    """(safetensors dtype, safetensors shape) of a plain array, or InvalidInputError."""
    md: Mapping[str, Any] = a.dtype.metadata or {}
    code = md.get(_TAG)
    if code is not None:
        if code not in _ST_DTYPES:
            raise InvalidInputError(f"unknown safetensors dtype {code!r} in the array's dtype metadata")
        bits = _ST_DTYPES[code][1]
        if bits % 8:
            shape = md.get("shape")
            if (not isinstance(shape, tuple) or a.dtype.itemsize != 1 or a.ndim != 1
                    or math.prod(shape) * bits != 8 * a.size):
                raise InvalidInputError(f"a packed {code} array must be the 1-D uint8 bytes "
                                        f"load() gave, with its shape in the dtype metadata")
            return code, shape
        if a.dtype.itemsize * 8 != bits:
            raise InvalidInputError(f"{code} needs {bits // 8}-byte items, got dtype {a.dtype}")
        return code, a.shape
    dt = a.dtype
    if dt.kind == "b":
        return "BOOL", a.shape
    key = (dt.kind, dt.itemsize)
    plain = {("u", 1): "U8", ("i", 1): "I8", ("i", 2): "I16", ("u", 2): "U16", ("i", 4): "I32",
             ("u", 4): "U32", ("i", 8): "I64", ("u", 8): "U64", ("f", 2): "F16", ("f", 4): "F32",
             ("f", 8): "F64", ("c", 8): "C64"}
    if key in plain and dt.fields is None:
        return plain[key], a.shape
    for c, (spec, _) in _ST_DTYPES.items():
        if spec.startswith("ml_dtypes.") and dt.name == spec.split(".", 1)[1]:
            return c, a.shape
    raise InvalidInputError(f"dtype {dt} has no safetensors equivalent")


def _little_endian_bytes(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and not np.little_endian):
        a = a.astype(a.dtype.newbyteorder("<"))
    return a


def _publish(path: str, chunks: list[Any]) -> None:
    """Write ``chunks`` to ``path`` atomically: a new file beside it (created with mode
    0666 minus the umask, as ``open`` does), fsynced, renamed over ``path``, the
    directory fsynced. On any error the temporary file is removed."""
    d = os.path.dirname(os.path.abspath(path))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = os.path.join(d, f".thrifty-{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 64 random bits
        raise FileExistsError(f"could not create a temporary file in {d}")
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - directories that can not be opened
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover - file systems without directory fsync
        pass
    finally:
        os.close(dfd)


def save(path: str | os.PathLike[str], tensors: Mapping[str, QuantizedTensor | np.ndarray],
         metadata: Mapping[str, str] | None = None) -> None:
    """Write quantized tensors (and plain arrays) to a safetensors file, atomically.

    Each quantized tensor ``name`` is stored as plain tensors ``name`` (uint8 packed
    bytes), ``name.scales`` and ``name.zero_points`` (when present); the format, shape,
    group size, per-tensor scale and layout version go into the header metadata under
    ``"thrifty.quant"`` as JSON. A numpy array is stored as an ordinary tensor of its
    dtype (every safetensors dtype: bool, (u)int8-64, float16/32/64, complex64, and
    ml_dtypes' bfloat16 / float8 types), so checkpoints that mix packed and plain
    tensors round-trip through :func:`load` byte for byte. Any safetensors reader can
    load the arrays.

    Parameters
    ----------
    path : path-like
        Destination; written to a temporary file in the same directory (mode 0666
        minus the umask), then renamed. An existing file is replaced.
    tensors : mapping of str to QuantizedTensor or numpy.ndarray
    metadata : mapping of str to str, optional
        Extra header metadata (the key ``"thrifty.quant"`` is reserved).

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> from thrifty import quant
    >>> q = quant.quantize(np.linspace(-1, 1, 64, dtype=np.float32), "nf4")
    >>> p = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> quant.save(p, {"w": q, "norm": np.ones(4, np.float16)})
    >>> back = quant.load(p)
    >>> r = back["w"]
    >>> r.fmt, r.shape, bool((r.data == q.data).all()), back["norm"].dtype
    ('nf4', (64,), True, dtype('float16'))
    """
    if not isinstance(tensors, Mapping):
        raise InvalidInputError("tensors must be a mapping of name -> QuantizedTensor or array")
    meta: dict[str, str] = {}
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise InvalidInputError("metadata must be a mapping of str -> str")
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise InvalidInputError(f"metadata keys and values must be str, got {k!r}: {v!r}")
            if k == _META_KEY:
                raise InvalidInputError(f"metadata key {_META_KEY!r} is reserved")
            meta[k] = v
    # (name, array in little-endian bytes order, safetensors dtype, safetensors shape)
    arrays: list[tuple[str, np.ndarray, str, tuple[int, ...]]] = []
    desc: dict[str, Any] = {}

    def packed(name: str, a: Any, dtype: Any) -> None:
        try:
            b = np.ascontiguousarray(a, dtype=dtype)
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"{name} could not be read as a {np.dtype(dtype)} numpy array: {e}") from None
        arrays.append((name, _little_endian_bytes(b), _code_of(b)[0], b.shape))

    for name, q in tensors.items():
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"tensor names must be non-empty strings, got {name!r}")
        if name == "__metadata__":
            raise InvalidInputError("'__metadata__' is reserved by safetensors")
        if isinstance(q, np.ndarray):
            code, shape = _code_of(q)
            arrays.append((name, _little_endian_bytes(q), code, shape))
            continue
        if not isinstance(q, QuantizedTensor):
            raise InvalidInputError(f"tensors[{name!r}] is a {type(q).__name__}, "
                                    "not a QuantizedTensor or a numpy array")
        packed(name, q.data, np.uint8)
        entry: dict[str, Any] = {"format": q.fmt, "shape": list(q.shape), "group_size": q.group_size,
                                 "data_shape": list(np.shape(q.data))}
        if q.scales is not None:
            sc = np.asarray(q.scales)
            if sc.dtype not in (np.uint8, np.float32):
                raise InvalidInputError(f"{name}.scales has dtype {sc.dtype}; only uint8 and float32 are stored")
            packed(name + ".scales", sc, sc.dtype)
            entry["scales"] = name + ".scales"
        if q.zero_points is not None:
            packed(name + ".zero_points", q.zero_points, np.float32)
            entry["zero_points"] = name + ".zero_points"
        if q.tensor_scale is not None:
            entry["tensor_scale"] = struct.unpack("<I", struct.pack("<f", q.tensor_scale))[0]
        desc[name] = entry
    names = [n for n, *_ in arrays]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"tensor names collide with the derived names ('.scales', '.zero_points'): {names}")
    meta[_META_KEY] = json.dumps({"layout_version": _LAYOUT_VERSION, "tensors": desc})
    header: dict[str, Any] = {"__metadata__": meta}
    offset = 0
    for n, a, code, shape in arrays:
        header[n] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    chunks: list[Any] = [struct.pack("<Q", len(hb)), hb]
    chunks += [a.reshape(-1).view(np.uint8) for _, a, _, _ in arrays]
    _publish(os.fspath(path), chunks)


def _fail(path: str, msg: str) -> FormatError:
    return FormatError(f"{path}: not a valid thrifty quantized safetensors file: {msg}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {dup!r}")
    return d


def _parse_json(text: bytes | str, path: str, what: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise _fail(path, f"{what} is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise _fail(path, f"{what} is not valid JSON ({e})") from None


def _json_int(v: Any, path: str, what: str, lo: int = 0, hi: int = _MAX_INDEX) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise _fail(path, f"{what} must be an integer in [{lo}, {hi}], got {_short(v)}")
    return v


def _json_shape(v: Any, path: str, what: str, low: int = 0) -> tuple[int, ...]:
    if type(v) is not list or len(v) > _MAX_NDIM:
        raise _fail(path, f"{what} must be a list of at most {_MAX_NDIM} integers, got {_short(v)}")
    return tuple(_json_int(s, path, f"{what} entries", lo=low) for s in v)


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def load(path: str | os.PathLike[str]) -> dict[str, QuantizedTensor | np.ndarray]:
    """Read a file written by :func:`save`: quantized tensors and plain arrays.

    Tensors described in the ``"thrifty.quant"`` metadata come back as
    :class:`QuantizedTensor`; every other tensor of the file as a read-only numpy array
    of its dtype (bfloat16 and float8 as ml_dtypes types when ml_dtypes is installed,
    else as their raw bits, uint16 / uint8, with the safetensors dtype in the numpy
    dtype's metadata; the packed sub-byte F4 / F6 types as 1-D uint8 bytes likewise),
    so that :func:`save` writes them back unchanged.

    Raises
    ------
    thrifty.FormatError
        A truncated or corrupt file: a header that is not a safetensors header (bad
        JSON, sizes, dtypes, overlapping or missing bytes), no ``"thrifty.quant"``
        metadata, or packed arrays whose dtype or size does not fit their format.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        raise _fail(path, f"{len(buf)} bytes is too short for a header")
    (hlen,) = struct.unpack("<Q", buf[:8])
    if hlen > min(_MAX_HEADER, len(buf) - 8):
        raise _fail(path, f"header length {hlen} exceeds the file ({len(buf)} bytes) or "
                          f"{_MAX_HEADER} bytes; truncated?")
    try:
        text = buf[8:8 + hlen].decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(path, "the header is not UTF-8") from None
    header = _parse_json(text, path, "the header")
    if not isinstance(header, dict):
        raise _fail(path, "the header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _fail(path, "__metadata__ must map strings to strings")
    if not isinstance(meta.get(_META_KEY), str):
        raise _fail(path, f"no {_META_KEY!r} metadata (a plain safetensors file: read it with "
                          "safetensors.numpy.load_file)")
    body = memoryview(buf)[8 + hlen:]
    # 1. the safetensors layer: every entry well formed, the entries tile the data
    infos: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    for name, info in header.items():
        if not isinstance(info, dict):
            raise _fail(path, f"entry {_short(name)} is not an object")
        code = info.get("dtype")
        if not isinstance(code, str) or code not in _ST_DTYPES:
            raise _fail(path, f"tensor {_short(name)} has unknown dtype {_short(code)}")
        shape = _json_shape(info.get("shape"), path, f"shape of {_short(name)}")
        offs = info.get("data_offsets")
        if type(offs) is not list or len(offs) != 2:
            raise _fail(path, f"data_offsets of {_short(name)} must be [begin, end]")
        begin, end = (_json_int(v, path, f"data_offsets of {_short(name)}") for v in offs)
        if begin > end or end > len(body):
            raise _fail(path, f"tensor {_short(name)} lies outside the data ({len(body)} bytes); truncated?")
        nbits = 0 if 0 in shape else _ST_DTYPES[code][1]
        for s in shape:
            nbits *= s
            if nbits > 8 * len(body):  # bounded work on absurd shapes
                break
        if nbits != 8 * (end - begin):
            raise _fail(path, f"tensor {_short(name)}: {end - begin} bytes do not hold {code} "
                              f"of shape {shape}")
        infos[name] = (code, shape, begin, end)
    at = 0
    for name, (_, _, begin, end) in sorted(infos.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin != at:
            raise _fail(path, f"tensor {_short(name)} starts at byte {begin}, expected {at} "
                              "(tensors overlap or leave gaps)")
        at = end
    if at != len(body):
        raise _fail(path, f"the tensors cover {at} of {len(body)} data bytes")

    def array(name: str) -> np.ndarray:
        code, shape, begin, end = infos[name]
        dt = _numpy_dtype(code)
        if _ST_DTYPES[code][1] % 8:
            dt = np.dtype("|u1", metadata={_TAG: code, "shape": shape})
            a = np.frombuffer(body[begin:end], dtype=dt)
        else:
            a = np.frombuffer(body[begin:end], dtype=dt).reshape(shape)
        if not a.flags.aligned:
            a = a.copy()  # numpy and the core want aligned items
            a.flags.writeable = False
        return a

    # 2. the thrifty layer
    desc = _parse_json(meta[_META_KEY], path, f"the {_META_KEY!r} metadata")
    if not isinstance(desc, dict) or not isinstance(desc.get("tensors"), dict):
        raise _fail(path, f"the {_META_KEY!r} metadata must be an object with a 'tensors' object")
    version = desc.get("layout_version")
    if version != _LAYOUT_VERSION or type(version) is not int:
        raise _fail(path, f"layout version {_short(version)} is not supported (expected {_LAYOUT_VERSION})")
    quantized: dict[str, QuantizedTensor] = {}
    used: set[str] = set()
    for name, entry in desc["tensors"].items():
        what = f"tensor {_short(name)}"
        if not isinstance(entry, dict):
            raise _fail(path, f"bad description of {what}")
        fmt = entry.get("format")
        if not isinstance(fmt, str) or fmt not in FORMATS:
            raise _fail(path, f"{what}: unknown format {_short(fmt)}")
        g = _json_int(entry.get("group_size"), path, f"group_size of {what}", lo=1)
        shape = _json_shape(entry.get("shape"), path, f"shape of {what}", low=1)
        if not shape:
            raise _fail(path, f"{what}: the shape is empty")
        dshape = _json_shape(entry.get("data_shape"), path, f"data_shape of {what}")
        refs = {"data": name}
        for k in ("scales", "zero_points"):
            if k in entry:
                if not isinstance(entry[k], str):
                    raise _fail(path, f"{k} of {what} must name a tensor")
                refs[k] = entry[k]
        for k, ref in refs.items():
            if ref not in infos:
                raise _fail(path, f"{what}: its {k} tensor {_short(ref)} is not in the file")
        ts = entry.get("tensor_scale")
        tscale = None
        if ts is not None:
            bits = _json_int(ts, path, f"tensor_scale of {what}", hi=2**32 - 1)
            tscale = struct.unpack("<f", struct.pack("<I", bits))[0]
        want = {"data": "U8", "scales": "U8" if fmt in _U8_SCALES else "F32", "zero_points": "F32"}
        for k, ref in refs.items():
            if infos[ref][0] != want[k]:
                raise _fail(path, f"{what}: {k} is stored as {infos[ref][0]}, {fmt} needs {want[k]}")
        data = array(name)
        if math.prod(dshape) != data.size:
            raise _fail(path, f"{what}: data_shape {dshape} does not hold {data.size} bytes")
        data = data.reshape(dshape)
        scales = array(refs["scales"]) if "scales" in refs else None
        zps = array(refs["zero_points"]) if "zero_points" in refs else None
        want_data, want_scales, want_zp = _expected_sizes(fmt, shape, g)
        n_scales = 0 if scales is None else scales.size
        n_zp = 0 if zps is None else zps.size
        ok = (data.size == want_data and n_scales == want_scales
              and (want_zp == -1 and n_zp in (0, want_scales) or n_zp == want_zp)
              and ((tscale is not None) == (fmt == "nvfp4")))
        if not ok:
            raise _fail(path, f"{what}: arrays do not fit format {fmt} with shape {shape}")
        quantized[name] = QuantizedTensor(fmt, shape, data, scales, zps, g, tscale)
        used.update(refs.values())
    out: dict[str, QuantizedTensor | np.ndarray] = {}
    for name in infos:  # in the file's order
        if name in quantized:
            out[name] = quantized[name]
        elif name not in used:
            out[name] = array(name)
    return out
