"""Quantize+pack and unpack+dequantize of 16M float32 values (64 MB), thrifty side by
side with what a user would otherwise run: a plain vectorised numpy implementation of
the same format, gguf-py for TQ1_0/TQ2_0, ml_dtypes casts for FP8 and MXFP4, and torch's
own CPU paths (``x.to(torch.float8_e4m3fn)``, torchao's ``to_mx`` and
``nvfp4_quantize``; skipped when torch / torchao are not installed).

GB/s = 0.067 GB (float32 input, or float32 output for dequantize) / time.
"""

import numpy as np
from asv_runner.benchmarks.mark import SkipNotImplemented

from .common import require

SHAPE = (4096, 4096)  # 16M values

FORMATS = ["ternary", "tq1_0", "tq2_0", "int8", "int4", "nf4", "fp8_e4m3", "mxfp4", "nvfp4"]
BACKENDS = ["thrifty", "numpy", "gguf", "ml_dtypes", "torch"]


def thrifty_kwargs(fmt):
    """Options of ``thrifty.quant.quantize`` matching the anchors' version of ``fmt``."""
    return {"group_size": -1} if fmt == "int8" else {}  # per row, as the numpy version

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], np.float32)
NF4_MID = ((NF4[:-1].astype(np.float64) + NF4[1:]) / 2).astype(np.float32)


# ---------------------------------------------------------------- plain numpy versions

def np_ternary(w):
    s = np.float32(1) / max(np.abs(w).mean(), np.float32(1e-5))
    q = (np.clip(np.rint(w * s), -1, 1) + 1).astype(np.uint8)
    r = w.shape[0] // 4
    return q[:r] | (q[r:2 * r] << 2) | (q[2 * r:3 * r] << 4) | (q[3 * r:] << 6), s


def np_ternary_de(p):
    packed, s = p
    return np.concatenate([((packed >> (2 * i)) & 3).astype(np.float32) - 1 for i in range(4)]) / s


def np_int8(x):
    s = np.maximum(np.abs(x).max(axis=1, keepdims=True) / np.float32(127.5), np.finfo(np.float32).eps)
    return np.clip(np.rint(x * (np.float32(1) / s)), -128, 127).astype(np.int8), s


def np_int8_de(p):
    q, s = p
    return q.astype(np.float32) * s


def np_int4(x):
    g = x.reshape(-1, 128)
    lo, hi = g.min(axis=1, keepdims=True), g.max(axis=1, keepdims=True)
    s = np.maximum((hi - lo) / np.float32(15), np.finfo(np.float32).eps)
    zp = lo + s * np.float32(8)
    q = np.clip(np.rint((g - (zp - s * np.float32(8))) / s), 0, 15).astype(np.uint8).ravel()
    return q[0::2] | (q[1::2] << 4), s, zp


def np_int4_de(p):
    packed, s, zp = p
    q = np.empty((packed.size * 2,), np.uint8)
    q[0::2], q[1::2] = packed & 15, packed >> 4
    return ((q.reshape(s.shape[0], -1).astype(np.float32) - 8) * s + zp)


def np_nf4(x):
    b = x.reshape(-1, 64)
    a = np.abs(b).max(axis=1, keepdims=True)
    q = np.searchsorted(NF4_MID, b * (np.float32(1) / a), side="left").astype(np.uint8).ravel()
    return (q[0::2] << 4) | q[1::2], a


def np_nf4_de(p):
    packed, a = p
    q = np.empty((packed.size * 2,), np.uint8)
    q[0::2], q[1::2] = packed >> 4, packed & 15
    return NF4[q].reshape(a.shape[0], -1) * a


def mx_scales(b, emax):
    a = np.abs(b).max(axis=1, keepdims=True)
    _, e = np.frexp(a)
    code = np.where(a == 0, 0, np.clip(e - 1 - emax + 127, 0, 254))
    return code.astype(np.uint8), np.ldexp(np.float32(1), code.astype(np.int32) - 127).astype(np.float32)


def np_fp8(x, md):
    s = np.abs(x).max() / np.float32(448)
    return np.clip(x / s, -448, 448).astype(md.float8_e4m3fn), s


def np_fp8_de(p):
    c, s = p
    return c.astype(np.float32) * s


def np_mxfp4(x, md):
    b = x.reshape(-1, 32)
    code, xs = mx_scales(b, 2)
    el = np.clip(b / xs, -6, 6).astype(md.float4_e2m1fn).view(np.uint8).ravel()
    return el[0::2] | (el[1::2] << 4), code, xs


def np_mxfp4_de(p, md):
    packed, _, xs = p
    q = np.empty((packed.size * 2,), np.uint8)
    q[0::2], q[1::2] = packed & 15, packed >> 4
    return q.view(md.float4_e2m1fn).astype(np.float32).reshape(xs.shape[0], -1) * xs


# ------------------------------------------- plain numpy, into a preallocated buffer

def np_ternary_into(p, out):
    packed, s = p
    r = packed.shape[0]
    table = (np.arange(3, dtype=np.float32) - 1) / s
    for i in range(4):
        np.take(table, (packed >> (2 * i)) & 3, out=out[i * r:(i + 1) * r])
    return out


def np_int8_into(p, out):
    q, s = p
    return np.multiply(q, s, out=out)


def np_int4_into(p, out):
    packed, s, zp = p
    q = np.empty((packed.size * 2,), np.uint8)
    q[0::2], q[1::2] = packed & 15, packed >> 4
    o = out.reshape(s.shape[0], -1)
    np.subtract(q.reshape(o.shape), np.float32(8), out=o)
    o *= s
    o += zp
    return out


def np_nf4_into(p, out):
    packed, a = p
    q = np.empty((packed.size * 2,), np.uint8)
    q[0::2], q[1::2] = packed >> 4, packed & 15
    np.take(NF4, q, out=out.reshape(-1))
    out.reshape(a.shape[0], -1)[...] *= a
    return out


def np_fp8_into(p, out):
    c, s = p
    np.copyto(out, c)
    out *= s
    return out


def np_mxfp4_into(p, out, md):
    packed, _, xs = p
    q = np.empty((packed.size * 2,), np.uint8)
    q[0::2], q[1::2] = packed & 15, packed >> 4
    o = out.reshape(xs.shape[0], -1)
    np.copyto(o, q.view(md.float4_e2m1fn).reshape(o.shape))
    o *= xs
    return out


# ---------------------------------------------------------------- benchmarks

class _Quant:
    params = (FORMATS, BACKENDS)
    param_names = ["fmt", "backend"]
    timeout = 300

    def setup(self, fmt, backend):
        self.x = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)
        x = self.x
        if backend == "thrifty":
            q = require("thrifty.quant")
            kw = thrifty_kwargs(fmt)
            self.enc = lambda: q.quantize(x, fmt, **kw)
            packed = self.enc()
            self.dec = lambda: q.dequantize(packed)
            self.dec_into = lambda out: q.dequantize(packed, out=out)
        elif backend == "gguf":
            if fmt not in ("tq1_0", "tq2_0"):
                raise SkipNotImplemented("gguf-py is the anchor for tq1_0/tq2_0 only")
            gq = require("gguf.quants")
            t = getattr(require("gguf.constants").GGMLQuantizationType, fmt.upper())
            self.enc = lambda: gq.quantize(x, t)
            packed = self.enc()
            self.dec = lambda: gq.dequantize(packed, t)
            self.dec_into = None  # gguf-py has no output argument
        elif backend == "ml_dtypes":
            md = require("ml_dtypes")
            if fmt == "fp8_e4m3":
                self.enc = lambda: np_fp8(x, md)
                packed = self.enc()
                self.dec = lambda: np_fp8_de(packed)
                self.dec_into = lambda out: np_fp8_into(packed, out)
            elif fmt == "mxfp4":
                self.enc = lambda: np_mxfp4(x, md)
                packed = self.enc()
                self.dec = lambda: np_mxfp4_de(packed, md)
                self.dec_into = lambda out: np_mxfp4_into(packed, out, md)
            else:
                raise SkipNotImplemented("ml_dtypes covers the float formats only")
        elif backend == "torch":
            self._setup_torch(fmt)
        else:
            funcs = {"ternary": (np_ternary, np_ternary_de, np_ternary_into),
                     "int8": (np_int8, np_int8_de, np_int8_into),
                     "int4": (np_int4, np_int4_de, np_int4_into),
                     "nf4": (np_nf4, np_nf4_de, np_nf4_into)}
            if fmt not in funcs:
                raise SkipNotImplemented(f"no plain numpy version of {fmt} (see gguf / ml_dtypes)")
            e, d, di = funcs[fmt]
            self.enc = lambda: e(x)
            packed = self.enc()
            self.dec = lambda: d(packed)
            self.dec_into = lambda out: di(packed, out)


    def _setup_torch(self, fmt):
        torch = require("torch")
        xt = torch.from_numpy(self.x)
        if fmt == "fp8_e4m3":
            # per-tensor scaled cast, as the ml_dtypes version
            def enc():
                s = xt.abs().max() / 448.0
                return (xt / s).clamp(-448.0, 448.0).to(torch.float8_e4m3fn), s
            packed = enc()
            self.dec = lambda: packed[0].to(torch.float32) * packed[1]
            self.dec_into = lambda out: torch.mul(packed[0].to(torch.float32), packed[1],
                                                  out=torch.from_numpy(out))
        elif fmt in ("mxfp4", "nvfp4"):
            require("torchao")
            if fmt == "mxfp4":
                mx = require("torchao.prototype.mx_formats.mx_tensor")
                dt = torch.float4_e2m1fn_x2

                def enc():
                    return mx.to_mx(xt, dt, 32)
                packed = enc()
                self.dec = lambda: mx.to_dtype(packed[1], packed[0], dt, 32, torch.float32)
            else:
                nv = require("torchao.prototype.mx_formats.nvfp4_tensor")

                def enc():
                    pt = nv.per_tensor_amax_to_scale(xt.abs().max())
                    return nv.nvfp4_quantize(xt, 16, pt)
                self.dec = None
            self.dec_into = None
        else:
            raise SkipNotImplemented("torch is the anchor for fp8_e4m3, mxfp4 and nvfp4 only")
        self.enc = enc


class QuantizePack(_Quant):
    def time_quantize(self, fmt, backend):
        self.enc()


class UnpackDequantize(_Quant):
    def time_dequantize(self, fmt, backend):
        if self.dec is None:
            raise SkipNotImplemented(f"{backend} has no {fmt} dequantization")
        self.dec()


class DequantizeInto(_Quant):
    """Dequantize into one reused float32 buffer (``dequantize(q, out=buf)``; numpy
    versions with ``out=`` / in-place steps), which spares the page faults of 64 MB of
    fresh memory. gguf-py has no output argument: its row allocates, as in
    UnpackDequantize."""

    def setup(self, fmt, backend):
        super().setup(fmt, backend)
        self.buf = np.ones(SHAPE, np.float32)  # touched: its pages exist

    def time_dequantize_into(self, fmt, backend):
        if self.dec_into is None:
            if self.dec is None:
                raise SkipNotImplemented(f"{backend} has no {fmt} dequantization")
            self.dec()
        else:
            self.dec_into(self.buf)


class Fp8Codec:
    """Element codec alone: float32 -> E4M3 codes, against ml_dtypes' astype and
    torch's own cast ``x.to(torch.float8_e4m3fn)`` (both non-saturating)."""

    params = (["thrifty", "ml_dtypes", "torch"],)
    param_names = ["backend"]

    def setup(self, backend):
        self.x = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)
        if backend == "thrifty":
            self.q = require("thrifty.quant")
        elif backend == "torch":
            self.torch = require("torch")
            self.xt = self.torch.from_numpy(self.x)
        else:
            self.md = require("ml_dtypes")

    def time_fp8_encode(self, backend):
        if backend == "thrifty":
            self.q.fp8_encode(self.x, "e4m3", saturate=False)
        elif backend == "torch":
            self.xt.to(self.torch.float8_e4m3fn)
        else:
            self.x.astype(self.md.float8_e4m3fn)


class StochasticRounding:
    """Quantize with ``rounding="stochastic"`` (counter-based stream, thrifty only: the
    anchors have no reproducible stochastic rounding); compare with QuantizePack's
    thrifty row (same options, nearest rounding)."""

    params = (["ternary", "int8", "int4", "fp8_e4m3", "mxfp4", "nvfp4"],)
    param_names = ["fmt"]
    timeout = 300

    def setup(self, fmt):
        self.x = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)
        self.q = require("thrifty.quant")

    def time_quantize_stochastic(self, fmt):
        self.q.quantize(self.x, fmt, rounding="stochastic", seed=0, **thrifty_kwargs(fmt))
