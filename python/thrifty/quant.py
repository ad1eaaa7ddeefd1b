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
* ``nvfp4``: element ``2i`` in the LOW nibble; ``scales`` are E4M3 bytes and
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
``ml_dtypes`` does. Stochastic rounding (``rounding="stochastic"``) draws one uniform
variate per element from a counter-based stream keyed by ``(seed, flat index)``
(SplitMix64, see ``rust/core/src/quant/rng.rs``), so it is reproducible and
independent of the thread count; it is available for every format except ``tq1_0``,
``tq2_0`` and ``nf4``, whose references define nearest rounding only.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import struct
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _core
from ._errors import FormatError, InvalidInputError
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
_U8_SCALES = ("mxfp4", "mxfp8_e4m3", "mxfp8_e5m2", "nvfp4")
_LAYOUT_VERSION = 1


def _float_input(x: Any, name: str, *, allow_empty: bool) -> np.ndarray:
    if type(x).__module__.startswith("torch") and str(getattr(x, "dtype", "")) == "torch.bfloat16":
        x = x.float()  # numpy has no bfloat16; one deliberate conversion
    a = _to_float32(_to_numpy(x, name), name)
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
        self.shape = tuple(int(s) for s in shape)
        self.data = data
        self.scales = scales
        self.zero_points = zero_points
        self.group_size = int(group_size)
        self.tensor_scale = None if tensor_scale is None else float(tensor_scale)

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
        return 8.0 * self.nbytes / self.size

    def __repr__(self) -> str:
        return (f"QuantizedTensor(fmt={self.fmt!r}, shape={self.shape}, "
                f"group_size={self.group_size}, bits_per_value={self.bits_per_value:.4g})")


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
        ``fp8_*`` with a fixed scale: clamp values beyond the format's max (default) or
        map them to NaN (E4M3) / Inf (E5M2) as ``ml_dtypes`` does.
    symmetric : bool
        ``int4`` only: symmetric scaling instead of torchao's asymmetric zero points.

    Returns
    -------
    QuantizedTensor

    Raises
    ------
    thrifty.InvalidInputError
        NaN/inf, empty input, unsupported dtype or format, a group size that does not
        divide the last dimension, an option that does not apply to ``fmt``.

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
        keeps its contents. torch tensors that require grad are refused (autograd
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
    if len(q.shape) == 0 or math.prod(q.shape) == 0:
        raise FormatError(f"invalid shape {q.shape}")
    rows, cols = _rows_cols(fmt, q.shape)

    def arr(a: Any, dtype: Any, name: str) -> np.ndarray:
        a = np.asarray(a)
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
        y = _core.quant_dequantize(fmt, rows, cols, q.group_size, data, sf, su, zp,
                                   q.tensor_scale)
        assert y is not None  # a new array whenever no out= is given
        return y.reshape(q.shape)
    flat = _out_buffer(out, tuple(q.shape), [a for a in (data, sf, su, zp) if a is not None])
    _core.quant_dequantize(fmt, rows, cols, q.group_size, data, sf, su, zp, q.tensor_scale,
                           out=flat)
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

_DTYPES: dict[str, np.dtype] = {"U8": np.dtype("<u1"), "F32": np.dtype("<f4")}
_META_KEY = "thrifty.quant"
_MAX_HEADER = 100 * 1024 * 1024


def save(path: str | os.PathLike[str], tensors: Mapping[str, QuantizedTensor],
         metadata: Mapping[str, str] | None = None) -> None:
    """Write quantized tensors to a safetensors file, atomically.

    Each tensor ``name`` is stored as plain tensors ``name`` (uint8 packed bytes),
    ``name.scales`` and ``name.zero_points`` (when present); the format, shape, group
    size, per-tensor scale and layout version go into the header metadata under
    ``"thrifty.quant"`` as JSON. Any safetensors reader can load the arrays.

    Parameters
    ----------
    path : path-like
        Destination; written to a temporary file in the same directory, then renamed.
    tensors : mapping of str to QuantizedTensor
    metadata : mapping of str to str, optional
        Extra header metadata (the key ``"thrifty.quant"`` is reserved).

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> from thrifty import quant
    >>> q = quant.quantize(np.linspace(-1, 1, 64, dtype=np.float32), "nf4")
    >>> p = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> quant.save(p, {"w": q})
    >>> r = quant.load(p)["w"]
    >>> r.fmt, r.shape, bool((r.data == q.data).all())
    ('nf4', (64,), True)
    """
    if not isinstance(tensors, Mapping):
        raise InvalidInputError("tensors must be a mapping of name -> QuantizedTensor")
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
    arrays: list[tuple[str, np.ndarray]] = []
    desc: dict[str, Any] = {}
    for name, q in tensors.items():
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"tensor names must be non-empty strings, got {name!r}")
        if not isinstance(q, QuantizedTensor):
            raise InvalidInputError(f"tensors[{name!r}] is a {type(q).__name__}, not a QuantizedTensor")
        arrays.append((name, np.ascontiguousarray(q.data, dtype=np.uint8)))
        entry: dict[str, Any] = {"format": q.fmt, "shape": list(q.shape), "group_size": q.group_size,
                                 "data_shape": list(np.shape(q.data))}
        if q.scales is not None:
            arrays.append((name + ".scales", np.ascontiguousarray(q.scales)))
            entry["scales"] = name + ".scales"
        if q.zero_points is not None:
            arrays.append((name + ".zero_points", np.ascontiguousarray(q.zero_points, dtype=np.float32)))
            entry["zero_points"] = name + ".zero_points"
        if q.tensor_scale is not None:
            entry["tensor_scale"] = struct.unpack("<I", struct.pack("<f", q.tensor_scale))[0]
        desc[name] = entry
    names = [n for n, _ in arrays]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"tensor names collide with the derived names ('.scales', '.zero_points'): {names}")
    meta[_META_KEY] = json.dumps({"layout_version": _LAYOUT_VERSION, "tensors": desc})
    header: dict[str, Any] = {"__metadata__": meta}
    offset = 0
    for n, a in arrays:
        code = {np.dtype(np.uint8): "U8", np.dtype(np.float32): "F32"}.get(a.dtype)
        if code is None:
            raise InvalidInputError(f"{n} has dtype {a.dtype}; only uint8 and float32 are stored")
        header[n] = {"dtype": code, "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".thrifty-", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
            for _, a in arrays:
                f.write(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _fail(path: str, msg: str) -> FormatError:
    return FormatError(f"{path}: not a valid thrifty quantized safetensors file: {msg}")


def load(path: str | os.PathLike[str]) -> dict[str, QuantizedTensor]:
    """Read tensors written by :func:`save`.

    Raises
    ------
    thrifty.FormatError
        A truncated or corrupt file, a header that does not describe its tensors, or
        arrays whose sizes do not fit their format.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        raise _fail(path, f"{len(buf)} bytes is too short for a header")
    (hlen,) = struct.unpack("<Q", buf[:8])
    if hlen > min(_MAX_HEADER, len(buf) - 8):
        raise _fail(path, f"header length {hlen} exceeds the file ({len(buf)} bytes); truncated?")
    try:
        header = json.loads(buf[8:8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(path, f"header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise _fail(path, "header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or not isinstance(meta.get(_META_KEY), str):
        raise _fail(path, f"no {_META_KEY!r} metadata")
    body = memoryview(buf)[8 + hlen:]
    arrays: dict[str, np.ndarray] = {}
    for name, info in header.items():
        try:
            dt = _DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise _fail(path, f"bad entry for tensor {name!r}") from None
        if any(s < 0 for s in shape) or not 0 <= begin <= end <= len(body):
            raise _fail(path, f"tensor {name!r} lies outside the data ({len(body)} bytes); truncated?")
        if end - begin != math.prod(shape) * dt.itemsize:
            raise _fail(path, f"tensor {name!r}: {end - begin} bytes do not hold shape {shape}")
        a = np.frombuffer(body[begin:end], dtype=dt).reshape(shape)
        arrays[name] = a if dt == np.uint8 else a.astype(np.float32)  # aligned, native
    try:
        desc = json.loads(meta[_META_KEY])
        version, tensors = desc["layout_version"], desc["tensors"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise _fail(path, f"bad {_META_KEY!r} metadata") from None
    if version != _LAYOUT_VERSION:
        raise _fail(path, f"layout version {version!r} is not supported (expected {_LAYOUT_VERSION})")
    out: dict[str, QuantizedTensor] = {}
    for name, entry in tensors.items():
        try:
            fmt, g = entry["format"], int(entry["group_size"])
            shape = tuple(int(s) for s in entry["shape"])
            data = arrays[name].reshape(tuple(int(s) for s in entry["data_shape"]))
            scales = arrays[entry["scales"]] if "scales" in entry else None
            zps = arrays[entry["zero_points"]] if "zero_points" in entry else None
            ts = entry.get("tensor_scale")
            tscale = None if ts is None else struct.unpack("<f", struct.pack("<I", int(ts)))[0]
        except (KeyError, TypeError, ValueError, struct.error):
            raise _fail(path, f"bad description of tensor {name!r}") from None
        if fmt not in FORMATS or not shape or min(shape) <= 0:
            raise _fail(path, f"tensor {name!r}: unknown format {fmt!r} or bad shape {shape}")
        want_data, want_scales, want_zp = _expected_sizes(fmt, shape, g)
        n_scales = 0 if scales is None else scales.size
        n_zp = 0 if zps is None else zps.size
        scale_dtype = np.uint8 if fmt in _U8_SCALES else np.float32
        ok = (data.size == want_data and n_scales == want_scales
              and (want_zp == -1 and n_zp in (0, want_scales) or n_zp == want_zp)
              and (scales is None or scales.dtype == scale_dtype)
              and ((tscale is not None) == (fmt == "nvfp4")))
        if not ok:
            raise _fail(path, f"tensor {name!r}: arrays do not fit format {fmt} with shape {shape}")
        out[name] = QuantizedTensor(fmt, shape, data, scales, zps, g, tscale)
    return out
