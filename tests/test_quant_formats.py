"""quantize/dequantize against the references: gguf-py, ml_dtypes, and short numpy
versions of the BitNet, torchao and bitsandbytes formulas."""

import math

import numpy as np
import pytest

import thrifty
from thrifty import quant

md = pytest.importorskip("ml_dtypes")


def data(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# ------------------------------------------------------------------ ternary (BitNet)

def bitnet_ref(w, mode):
    a = np.abs(w).ravel()
    if mode == "absmean":
        gamma = np.float32(a.astype(np.float64).mean())
    else:
        gamma = np.sort(a)[(a.size - 1) // 2]  # torch.median: lower middle value
    s = np.float32(1.0) / max(gamma, np.float32(1e-5))
    q = np.clip(np.rint(w * s), -1, 1).astype(np.int8)
    return q, s


def hf_pack(q):
    """Hugging Face BitNet packing: rows r + i*R at bits 2i of packed row r."""
    out_f = q.shape[0]
    q2 = q.reshape(out_f, -1)
    big_r = -(-out_f // 4)
    packed = np.zeros((big_r, q2.shape[1]), np.uint8)
    for i in range(4):
        rows = q2[i * big_r:(i + 1) * big_r]
        packed[: rows.shape[0]] |= ((rows + 1).astype(np.uint8) << (2 * i))
    return packed.reshape((big_r,) + q.shape[1:])


@pytest.mark.parametrize("mode", ["absmean", "absmedian"])
@pytest.mark.parametrize("shape", [(64, 48), (7, 5), (10,), (6, 2, 3), (1, 1)])
def test_ternary_matches_bitnet(mode, shape):
    w = data(shape, seed=len(shape))
    q = quant.quantize(w, "ternary", scale=mode)
    ref_q, s = bitnet_ref(w, mode)
    assert np.array_equal(q.data, hf_pack(ref_q))
    assert q.scales.dtype == np.float32 and q.scales[0] == np.float32(1.0) / s
    y = quant.dequantize(q)
    assert y.shape == w.shape and y.dtype == np.float32
    assert np.array_equal(y, (ref_q.astype(np.float32) / s))


@pytest.mark.parametrize("shape", [(4096, 1024), (4093, 1024), (2048, 2048)])
def test_ternary_large_tensors_match_bitnet(shape):
    # 4M+ values whose packed quarters start on thrifty's chunk grid: the one-read
    # route on AVX-512 CPUs (scale bracketed from a sample, open codes fixed once the
    # scale is known)
    w = data(shape, seed=shape[0])
    w *= (1 + np.arange(shape[0]) % 7).astype(np.float32)[:, None]  # rows of 7 scales
    q = quant.quantize(w, "ternary")
    ref_q, s = bitnet_ref(w, "absmean")
    assert q.scales[0] == np.float32(1.0) / s
    assert np.array_equal(q.data, hf_pack(ref_q))


def test_ternary_large_tensor_with_a_skewed_sample_and_nan():
    # the values the scale's sample reads (1024 runs of 256, evenly spread, as in
    # rust/core/src/quant/ternary_one_read.rs) are small, the rest large: the bracket
    # misses and every code is recomputed, with the same bytes
    w = data((4096, 1024), seed=7)
    flat = w.reshape(-1)
    step = (flat.size - 256) // 1023
    seen = np.zeros(flat.size, bool)
    for b in range(1024):
        seen[b * step:b * step + 256] = True
    flat[~seen] *= 1000
    q = quant.quantize(w, "ternary")
    ref_q, s = bitnet_ref(w, "absmean")
    assert q.scales[0] == np.float32(1.0) / s
    assert np.array_equal(q.data, hf_pack(ref_q))
    w[4000, 5] = np.nan
    with pytest.raises(thrifty.InvalidInputError, match="NaN"):
        quant.quantize(w, "ternary")


def test_ternary_ties_and_even_median():
    # round half to even: w*s == +-0.5 -> 0, +-1.5 -> +-1 (clamped)
    w = np.array([[0.5, -0.5, 1.5, -1.5, 0.0, 2.0, -3.0, 0.5]], np.float32)
    q = quant.quantize(w, "ternary", scale="absmedian")
    # |w| sorted: 0, .5, .5, .5, 1.5, 1.5, 2, 3 -> lower median .5 -> s = 2
    assert q.scales[0] == 0.5
    codes = (q.data[0] >> 0) & 3
    assert list(codes.astype(int) - 1) == [1, -1, 1, -1, 0, 1, -1, 1]
    w = np.array([[0.25, -0.25, 0.75, 0.0]], np.float32)  # gamma .3125: w*s = 0.8, -0.8, 2.4, 0
    ref_q, _ = bitnet_ref(w, "absmean")
    assert np.array_equal(quant.quantize(w, "ternary").data, hf_pack(ref_q))


def test_ternary_bits_per_value():
    q = quant.quantize(data((1024, 256)), "ternary")
    assert q.data.shape == (256, 256)
    assert abs(q.bits_per_value - 2.0) < 1e-3


# ------------------------------------------------------------------ GGUF TQ1_0 / TQ2_0

def tie_rows():
    """Blocks with exact ties for lroundf (x*id == +-0.5) and near ties."""
    x = data((4, 512), seed=3)
    x[0, :256] = np.resize(np.array([1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 0.0], np.float32), 256)
    x[1, :256] = np.resize(np.array([2.0, 0.99999994, -0.99999994, 1.0000001], np.float32), 256)
    x[2, 256:] = 0.0  # all-zero block: d = 0
    x[3, :256] = np.float32(0.49999997) * np.resize(np.array([2, 0, 2, -2], np.float32), 256)
    x[3, 5] = 1.0
    return x


@pytest.mark.parametrize("fmt,qtype", [("tq1_0", "TQ1_0"), ("tq2_0", "TQ2_0")])
@pytest.mark.parametrize("x", [tie_rows(), data((3, 2, 768), seed=5, scale=0.02)],
                         ids=["ties", "random"])
def test_tq_bytes_identical_to_gguf(fmt, qtype, x):
    gq = pytest.importorskip("gguf.quants")
    from gguf.constants import GGMLQuantizationType as T

    want = gq.quantize(x, getattr(T, qtype))
    q = quant.quantize(x, fmt)
    assert q.scales is None
    assert q.data.shape == want.shape
    assert np.array_equal(q.data, want)
    y = quant.dequantize(q)
    assert np.array_equal(y, gq.dequantize(want, getattr(T, qtype)))
    bpv = {"tq1_0": 1.6875, "tq2_0": 2.0625}[fmt]
    assert q.bits_per_value == bpv


def test_tq_rows_must_be_whole_blocks():
    with pytest.raises(thrifty.InvalidInputError, match="multiple of 256"):
        quant.quantize(data((2, 300)), "tq1_0")


# ------------------------------------------------------------------ int8 / int4

def int_sym_ref(x, g, bits):
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    xg = x.reshape(-1, g)
    amax = np.abs(xg).max(axis=1, keepdims=True)
    scale = np.maximum(amax / np.float32((qmax - qmin) / 2), np.finfo(np.float32).eps)
    q = np.clip(np.rint(xg * (np.float32(1.0) / scale)), qmin, qmax)
    return q.astype(np.int8), scale.ravel().astype(np.float32)


@pytest.mark.parametrize("group_size,g", [(None, None), (-1, 96), (32, 32), (96, 96)])
def test_int8_matches_reference(group_size, g):
    x = data((5, 96), seed=1)
    g = x.size if g is None else g
    q = quant.quantize(x, "int8", group_size=group_size)
    ref, scale = int_sym_ref(x, g, 8)
    assert q.group_size == g
    assert np.array_equal(q.data.view(np.int8), ref.ravel())
    assert np.array_equal(q.scales, scale)
    assert np.array_equal(quant.dequantize(q), (ref * scale[:, None]).reshape(x.shape))


def test_int8_fixed_scale():
    x = np.array([0.4, -300.0, 2.5, 3.5], np.float32)
    q = quant.quantize(x, "int8", scale=2.0)
    assert list(q.data.view(np.int8)) == [0, -128, 1, 2]  # 1.25 -> 1, 1.75 -> 2


def int4_asym_ref(x, g):
    xg = x.reshape(-1, g)
    lo, hi = xg.min(axis=1, keepdims=True), xg.max(axis=1, keepdims=True)
    scale = np.maximum((hi - lo) / np.float32(15), np.finfo(np.float32).eps)
    zp = lo + scale * np.float32(8)
    q = np.clip(np.rint((xg - (zp - scale * np.float32(8))) / scale), 0, 15).astype(np.uint8)
    y = (q.astype(np.float32) - np.float32(8)) * scale + zp
    return q.ravel(), scale.ravel(), zp.ravel(), y.reshape(x.shape)


def nibbles_low_first(q):
    return (q[0::2] | (q[1::2] << 4)).astype(np.uint8)


@pytest.mark.parametrize("group_size", [None, 32, -1])
def test_int4_asymmetric_matches_torchao_formula(group_size):
    x = data((4, 256), seed=2)
    q = quant.quantize(x, "int4", group_size=group_size)
    g = {None: 128, 32: 32, -1: 256}[group_size]
    ref_q, scale, zp, y = int4_asym_ref(x, g)
    assert np.array_equal(q.data, nibbles_low_first(ref_q))
    assert np.array_equal(q.scales, scale) and np.array_equal(q.zero_points, zp)
    assert np.array_equal(quant.dequantize(q), y)
    assert q.bits_per_value == 4 + 64 / g


def test_int4_symmetric():
    x = data((3, 64), seed=4)
    q = quant.quantize(x, "int4", group_size=16, symmetric=True)
    ref, scale = int_sym_ref(x, 16, 4)
    assert q.zero_points is None
    assert np.array_equal(q.data, nibbles_low_first((ref.ravel() + 8).astype(np.uint8)))
    assert np.array_equal(quant.dequantize(q), (ref * scale[:, None]).reshape(x.shape))


# ------------------------------------------------------------------ NF4

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], np.float32)


def nf4_ref(x, bs):
    flat = x.ravel()
    nb = -(-flat.size // bs)
    pad = np.zeros(nb * bs, np.float32)
    pad[: flat.size] = flat
    blocks = pad.reshape(nb, bs)
    absmax = np.abs(blocks).max(axis=1)
    inv = np.where(absmax == 0, np.float32(0), np.float32(1) / np.where(absmax == 0, 1, absmax))
    v = blocks * inv[:, None].astype(np.float32)
    th = ((NF4[:-1].astype(np.float64) + NF4[1:]) / 2).astype(np.float32)
    q = (v[..., None] > th).sum(-1).astype(np.uint8).ravel()[: flat.size]
    if q.size % 2:
        q = np.append(q, 0)
    packed = (q[0::2] << 4) | q[1::2]
    y = (NF4[q[: flat.size]] * np.repeat(absmax, bs)[: flat.size]).reshape(x.shape)
    return packed.astype(np.uint8), absmax.astype(np.float32), y


@pytest.mark.parametrize("shape,bs", [((8, 64), None), ((3, 101), 64), ((999,), 128), ((5,), 32)])
def test_nf4_matches_bitsandbytes_rule(shape, bs):
    x = data(shape, seed=6)
    q = quant.quantize(x, "nf4", group_size=bs)
    packed, absmax, y = nf4_ref(x, bs or 64)
    assert np.array_equal(q.data, packed)
    assert np.array_equal(q.scales, absmax)
    assert np.array_equal(quant.dequantize(q), y)


def test_nf4_ties_go_to_lower_index():
    th = ((NF4[:-1].astype(np.float64) + NF4[1:]) / 2).astype(np.float32)
    x = np.concatenate([[1.0], th, [0.0] * 48]).astype(np.float32)  # absmax 1
    q = quant.quantize(x, "nf4")
    codes = np.stack([q.data >> 4, q.data & 15], axis=1).ravel()
    assert list(codes[1:16]) == list(range(15))


# ------------------------------------------------------------------ FP8 scaled

@pytest.mark.parametrize("fmt,mdt,fmax", [("fp8_e4m3", md.float8_e4m3fn, 448.0),
                                          ("fp8_e5m2", md.float8_e5m2, 57344.0)])
@pytest.mark.parametrize("group_size", [None, -1, 8])
def test_fp8_scaled(fmt, mdt, fmax, group_size):
    x = data((6, 40), seed=7, scale=3.0)
    g = {None: x.size, -1: 40, 8: 8}[group_size]
    q = quant.quantize(x, fmt, group_size=group_size)
    xg = x.reshape(-1, g)
    scale = (np.abs(xg).max(axis=1) / np.float32(fmax)).astype(np.float32)
    want = np.clip(xg / scale[:, None], -fmax, fmax).astype(mdt)
    assert np.array_equal(q.scales, scale)
    assert np.array_equal(q.data, want.view(np.uint8).ravel())
    y = (want.astype(np.float32) * scale[:, None]).reshape(x.shape)
    assert np.array_equal(quant.dequantize(q), y)


def test_fp8_fixed_scale_saturation():
    x = np.array([1.0, 500.0, -1e6], np.float32)
    assert list(quant.quantize(x, "fp8_e4m3", scale=1.0).data) == [0x38, 0x7E, 0xFE]
    assert list(quant.quantize(x, "fp8_e4m3", scale=1.0, saturate=False).data) == [0x38, 0x7F, 0xFF]


# ------------------------------------------------------------------ MX and NVFP4

MX = [("mxfp4", md.float4_e2m1fn, 2, 6.0), ("mxfp8_e4m3", md.float8_e4m3fn, 8, 448.0),
      ("mxfp8_e5m2", md.float8_e5m2, 15, 57344.0)]


def mx_ref(x, mdt, emax, fmax):
    flat = x.ravel()
    nb = -(-flat.size // 32)
    pad = np.zeros(nb * 32, np.float32)
    pad[: flat.size] = flat
    b = pad.reshape(nb, 32)
    amax = np.abs(b).max(axis=1)
    _, e = np.frexp(amax)  # amax = m * 2^e, m in [0.5, 1) -> floor(log2) = e - 1
    code = np.where(amax == 0, 0, np.clip(e - 1 - emax + 127, 0, 254)).astype(np.uint8)
    xs = np.ldexp(np.float32(1), code.astype(np.int32) - 127).astype(np.float32)
    el = np.clip(b / xs[:, None], -fmax, fmax).astype(mdt)
    y = (el.astype(np.float32) * xs[:, None]).ravel()[: flat.size].reshape(x.shape)
    codes = el.view(np.uint8).ravel()
    return codes, code, y


@pytest.mark.parametrize("fmt,mdt,emax,fmax", MX)
@pytest.mark.parametrize("shape", [(4, 64), (3, 33), (7,)])
def test_mx_matches_spec(fmt, mdt, emax, fmax, shape):
    x = data(shape, seed=8)
    x.ravel()[:32] *= 1e-30  # tiny block, still normal float32
    q = quant.quantize(x, fmt)
    codes, scales, y = mx_ref(x, mdt, emax, fmax)
    assert np.array_equal(q.scales, scales)
    if fmt == "mxfp4":
        codes = codes[0::2] | (codes[1::2] << 4)
    assert np.array_equal(q.data, codes)
    assert np.array_equal(quant.dequantize(q), y)


def test_mx_zero_block_and_bits():
    q = quant.quantize(np.zeros(64, np.float32), "mxfp4")
    assert list(q.scales) == [0, 0] and not q.data.any()
    assert q.bits_per_value == 4.25


def nvfp4_ref(x):
    flat = x.ravel()
    nb = -(-flat.size // 16)
    pad = np.zeros(nb * 16, np.float32)
    pad[: flat.size] = flat
    b = pad.reshape(nb, 16)
    pt = np.float32(np.abs(flat).max() / np.float32(448.0 * 6.0))
    bs = ((np.abs(b).max(axis=1) / np.float32(6.0)) / pt).astype(np.float32)
    bs8 = np.clip(bs, np.float32(2.0 ** -6), np.float32(448)).astype(md.float8_e4m3fn)
    total = (pt * bs8.astype(np.float32)).astype(np.float32)
    # torchao's float32 arithmetic, in its order: x * ((1 / pt) / block_scale)
    recip = ((np.float32(1.0) / pt) / bs8.astype(np.float32)).astype(np.float32)
    el = np.clip(b * recip[:, None], -6, 6).astype(md.float4_e2m1fn)
    codes = el.view(np.uint8).ravel()
    packed = codes[0::2] | (codes[1::2] << 4)
    y = (el.astype(np.float32) * total[:, None]).ravel()[: flat.size].reshape(x.shape)
    return packed, bs8.view(np.uint8), pt, y


@pytest.mark.parametrize("shape", [(8, 64), (5, 17)])
def test_nvfp4_matches_torchao_formula(shape):
    x = data(shape, seed=9)
    q = quant.quantize(x, "nvfp4")
    packed, scales, pt, y = nvfp4_ref(x)
    assert q.tensor_scale == pt
    assert np.array_equal(q.scales, scales)
    assert np.array_equal(q.data, packed)
    assert np.array_equal(quant.dequantize(q), y)


# ------------------------------------------------------------------ common behaviour

ALL = ["ternary", "tq1_0", "tq2_0", "int8", "int4", "nf4", "fp8_e4m3", "fp8_e5m2",
       "mxfp4", "mxfp8_e4m3", "mxfp8_e5m2", "nvfp4"]


@pytest.mark.parametrize("fmt", ALL)
def test_thread_count_independent_and_error_bounded(fmt):
    x = data((300, 512), seed=10)
    thrifty.set_num_threads(1)
    a = quant.quantize(x, fmt)
    thrifty.set_num_threads(2)
    b = quant.quantize(x, fmt)
    assert np.array_equal(a.data, b.data)
    assert (a.scales is None and b.scales is None) or np.array_equal(a.scales, b.scales)
    y = quant.dequantize(b)
    assert y.shape == x.shape
    rel = np.linalg.norm(y - x) / np.linalg.norm(x)
    assert rel < {"ternary": 0.8, "tq1_0": 0.9, "tq2_0": 0.9}.get(fmt, 0.3)


def test_input_kinds_no_copy_and_conversion():
    x = data((4, 64))
    q32 = quant.quantize(x, "int8")
    assert np.array_equal(quant.quantize(x.astype(np.float64), "int8").data, q32.data)
    assert np.array_equal(quant.quantize(x.tolist(), "int8").data, q32.data)
    xt = np.asfortranarray(x)
    assert np.array_equal(quant.quantize(xt, "int8").data, q32.data)


def test_torch_tensor_input():
    torch = pytest.importorskip("torch")
    x = data((4, 64))
    t = torch.from_numpy(x)
    assert np.array_equal(quant.quantize(t, "nf4").data, quant.quantize(x, "nf4").data)
    b = quant.quantize(t.to(torch.bfloat16), "int8")
    assert b.shape == (4, 64)


def test_bad_inputs():
    x = data((4, 64))
    E = thrifty.InvalidInputError
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[1, 2] = bad
        for fmt in ALL:
            with pytest.raises(E, match="flat index 66"):
                quant.quantize(y, fmt)
    with pytest.raises(E, match="empty"):
        quant.quantize(np.zeros((0, 4), np.float32), "int8")
    with pytest.raises(E, match="floating-point"):
        quant.quantize(np.ones((2, 4), np.int8), "int8")
    with pytest.raises(E, match="scalar"):
        quant.quantize(np.float32(1.0), "int8")
    with pytest.raises(E, match="fmt"):
        quant.quantize(x, "int3")
    with pytest.raises(E, match="does not divide"):
        quant.quantize(x, "int8", group_size=48)
    with pytest.raises(E, match="does not divide"):
        quant.quantize(data((2, 100)), "int4")  # default group 128
    with pytest.raises(E, match="even"):
        quant.quantize(data((2, 63)), "int4", group_size=-1)
    with pytest.raises(E, match="group_size must be None"):
        quant.quantize(x, "ternary", group_size=4)
    with pytest.raises(E, match="power of two"):
        quant.quantize(x, "nf4", group_size=48)
    with pytest.raises(E, match="blocks of 32"):
        quant.quantize(x, "mxfp4", group_size=16)
    with pytest.raises(E, match="group_size"):
        quant.quantize(x, "int8", group_size=0)
    with pytest.raises(E, match="not supported"):
        quant.quantize(x, "int8", scale="absmean")
    with pytest.raises(E, match="not supported"):
        quant.quantize(x, "nf4", scale=2.0)
    with pytest.raises(E, match="finite and > 0"):
        quant.quantize(x, "int8", scale=-1.0)
    with pytest.raises(E, match="scale"):
        quant.quantize(x, "int8", scale=[1.0])
    with pytest.raises(E, match="stochastic"):
        quant.quantize(x, "tq2_0", rounding="stochastic", seed=1)
    with pytest.raises(E, match="seed"):
        quant.quantize(x, "int8", seed=3)
    with pytest.raises(E, match="rounding"):
        quant.quantize(x, "int8", rounding="up")
    with pytest.raises(E, match="symmetric"):
        quant.quantize(x, "int8", symmetric=True)


def test_dequantize_rejects_corrupt_tensors():
    q = quant.quantize(data((8, 64)), "ternary")
    bad = quant.QuantizedTensor("ternary", q.shape, q.data | 3, q.scales, None, q.group_size)
    with pytest.raises(thrifty.FormatError, match="code 3"):
        quant.dequantize(bad)
    short = quant.QuantizedTensor("ternary", q.shape, q.data[:-1], q.scales, None, q.group_size)
    with pytest.raises(thrifty.FormatError, match="entries"):
        quant.dequantize(short)
    q2 = quant.quantize(data((2, 256)), "tq2_0")
    d = q2.data.copy()
    d[0, 0] = 0xFF
    with pytest.raises(thrifty.FormatError, match="code 3"):
        quant.dequantize(quant.QuantizedTensor("tq2_0", q2.shape, d, None, None, 256))
    q3 = quant.quantize(data((4, 64)), "int8", group_size=32)
    with pytest.raises(thrifty.FormatError, match="scales"):
        quant.dequantize(quant.QuantizedTensor("int8", q3.shape, q3.data, q3.scales[:-1], None, 32))
    with pytest.raises(thrifty.FormatError, match="group_size"):
        quant.dequantize(quant.QuantizedTensor("int8", q3.shape, q3.data, q3.scales, None, 48))
    with pytest.raises(thrifty.InvalidInputError, match="dtype"):
        quant.dequantize(quant.QuantizedTensor("int8", q3.shape, q3.data.astype(np.int16),
                                               q3.scales, None, 32))
    with pytest.raises(thrifty.InvalidInputError, match="QuantizedTensor"):
        quant.dequantize(np.zeros(3))
    q4 = quant.quantize(data(64), "nvfp4")
    with pytest.raises(thrifty.FormatError, match="per-tensor"):
        quant.dequantize(quant.QuantizedTensor("nvfp4", q4.shape, q4.data, q4.scales, None, 16))
    assert math.isfinite(q4.bits_per_value)


# ------------------------------------------------------------------ dequantize(out=)

@pytest.mark.parametrize("fmt", ALL)
@pytest.mark.parametrize("shape", [(8, 256), (3, 512), (5, 2, 256)])
def test_dequantize_into_buffer_matches_new_array(fmt, shape):
    x = data(shape, seed=11)
    q = quant.quantize(x, fmt)
    ref = quant.dequantize(q)
    buf = np.full(shape, np.nan, np.float32)  # stale contents must all be overwritten
    assert quant.dequantize(q, out=buf) is buf
    assert np.array_equal(buf.view(np.uint32), ref.view(np.uint32))
    # reused for a second tensor of the same shape
    q2 = quant.quantize(data(shape, seed=12), fmt)
    quant.dequantize(q2, out=buf)
    assert np.array_equal(buf, quant.dequantize(q2))


def test_dequantize_into_ragged_blocks():
    for fmt, shape in [("nf4", (3, 101)), ("mxfp4", (3, 33)), ("nvfp4", (5, 17)),
                       ("mxfp8_e4m3", (7,)), ("ternary", (7, 5))]:
        q = quant.quantize(data(shape, seed=3), fmt)
        buf = np.full(shape, np.nan, np.float32)
        quant.dequantize(q, out=buf)
        assert np.array_equal(buf, quant.dequantize(q)), fmt


def test_dequantize_into_torch_tensor():
    torch = pytest.importorskip("torch")
    x = data((4, 256))
    q = quant.quantize(x, "nf4")
    w = torch.nn.Parameter(torch.zeros(4, 256))
    with pytest.raises(thrifty.InvalidInputError, match="requires grad"):
        quant.dequantize(q, out=w)
    assert quant.dequantize(q, out=w.detach()) is not None
    assert np.array_equal(w.detach().numpy(), quant.dequantize(q))
    with pytest.raises(thrifty.InvalidInputError, match="float32"):
        quant.dequantize(q, out=torch.zeros(4, 256, dtype=torch.float64))
    with pytest.raises(thrifty.InvalidInputError, match="contiguous"):
        quant.dequantize(q, out=torch.zeros(256, 4).t())


def test_dequantize_into_bad_buffers_leave_it_untouched():
    q = quant.quantize(data((4, 256)), "tq2_0")
    for bad, match in [
        (np.zeros((4, 256), np.float64), "float32"),
        (np.zeros((4, 256), ">f4"), "float32"),
        (np.zeros((256, 4), np.float32), "shape"),
        (np.zeros(1024, np.float32), "shape"),
        (np.zeros((256, 4), np.float32).T, "C-contiguous"),
        ([[0.0] * 256] * 4, "numpy array"),
    ]:
        with pytest.raises(thrifty.InvalidInputError, match=match):
            quant.dequantize(q, out=bad)
    ro = np.zeros((4, 256), np.float32)
    ro.flags.writeable = False
    with pytest.raises(thrifty.InvalidInputError, match="read-only"):
        quant.dequantize(q, out=ro)
    # out aliasing the packed bytes (or scales) is refused, never read while written
    raw = np.zeros(4 * 256 * 4, np.uint8)
    alias = raw.view(np.float32).reshape(4, 256)
    raw[: q.data.size] = q.data.ravel()
    aliased = quant.QuantizedTensor("tq2_0", q.shape, raw[: q.data.size].reshape(q.data.shape),
                                    None, None, 256)
    with pytest.raises(thrifty.InvalidInputError, match="overlaps"):
        quant.dequantize(aliased, out=alias)
    # a corrupt tensor: an error and the buffer as it was
    d = q.data.copy()
    d[3, 7] = 0xFF
    buf = np.full((4, 256), 7.0, np.float32)
    with pytest.raises(thrifty.FormatError, match="code 3"):
        quant.dequantize(quant.QuantizedTensor("tq2_0", q.shape, d, None, None, 256), out=buf)
    assert np.all(buf == 7.0)


# ------------------------------------------------------------------ properties

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

finite32 = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 40)), elements=finite32))
def test_int8_error_is_at_most_half_a_step(x):
    q = quant.quantize(x, "int8", group_size=-1)
    y = quant.dequantize(q)
    s = q.scales[:, None]
    inside = np.abs(x * (np.float32(1) / s)) <= 127  # amax maps to 127.5 and is clamped
    err = np.abs(y - x)
    assert np.all(err[inside] <= s.repeat(x.shape[1], 1)[inside] * 0.5001 + 1e-30)
    assert np.all(err <= s.repeat(x.shape[1], 1) * 1.0001 + 1e-30)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.integers(1, 200), elements=finite32),
       st.sampled_from(["nf4", "mxfp4", "mxfp8_e4m3", "nvfp4", "fp8_e5m2", "ternary"]))
def test_round_trip_shape_and_requantize_is_stable(x, fmt):
    q = quant.quantize(x, fmt)
    y = quant.dequantize(q)
    assert y.shape == x.shape and np.all(np.isfinite(y))
    # values already on the grid come back unchanged (the scales are reproduced)
    if fmt in ("nf4", "mxfp4", "mxfp8_e4m3"):
        assert np.array_equal(quant.dequantize(quant.quantize(y, fmt)), y)


def test_dequantize_thread_independent():
    x = data((300, 512), seed=11)
    for fmt in ALL:
        q = quant.quantize(x, fmt)
        thrifty.set_num_threads(1)
        a = quant.dequantize(q)
        thrifty.set_num_threads(2)
        assert np.array_equal(a, quant.dequantize(q)), fmt


@pytest.mark.parametrize("fmt", ALL)
def test_tiny_and_zero_tensors_stay_finite(fmt):
    shape = (1, 256)
    for v in (0.0, 1e-45, 3e-39):
        x = np.zeros(shape, np.float32)
        x[0, ::3] = v
        x[0, 1::3] = -v
        y = quant.dequantize(quant.quantize(x, fmt))
        assert np.all(np.isfinite(y)), (fmt, v)
        if v == 0.0:
            assert not y.any()
