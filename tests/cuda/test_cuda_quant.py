"""thrifty.torch.quant: the kernel path against the Rust core, byte for byte.

Three layers:
* CPU fallback (torch CPU tensors -> thrifty.quant) and option validation identical to
  thrifty.quant's (runs everywhere);
* the kernels of cuda/quant.cu compiled for the host with cuda_host_shim.h and run
  thread by thread (cuda_host.py) through the real orchestration code: the
  kernels' arithmetic checked bit for bit on any machine with a C++ compiler;
* @pytest.mark.gpu: the same comparisons on a CUDA device (``pytest -m gpu``).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from thrifty import FormatError, InvalidInputError, quant  # noqa: E402
from thrifty.torch import quant as gq  # noqa: E402
from thrifty.torch._cuda import _runtime as rt  # noqa: E402

import cuda_host  # noqa: E402

FIELDS = ("data", "scales", "zero_points")
NO_SR = ("tq1_0", "tq2_0", "nf4")

# (fmt, options) covering every format, scale rule, grouping and rounding
CASES = [
    ("ternary", {}), ("ternary", {"scale": "absmedian"}),
    ("ternary", {"rounding": "stochastic", "seed": 11}),
    ("ternary", {"scale": "absmedian", "rounding": "stochastic", "seed": 2**64 - 1}),
    ("tq1_0", {}), ("tq2_0", {}),
    ("int8", {}), ("int8", {"group_size": -1}), ("int8", {"group_size": 32}),
    ("int8", {"scale": 0.01}), ("int8", {"rounding": "stochastic", "seed": 3, "group_size": 64}),
    ("int4", {}), ("int4", {"symmetric": True}), ("int4", {"group_size": 32}),
    ("int4", {"group_size": -1, "rounding": "stochastic", "seed": 4}),
    ("int4", {"symmetric": True, "rounding": "stochastic", "seed": 5}),
    ("nf4", {}), ("nf4", {"group_size": 32}), ("nf4", {"group_size": 4096}),
    ("fp8_e4m3", {}), ("fp8_e4m3", {"group_size": 128}), ("fp8_e4m3", {"scale": 0.001}),
    ("fp8_e4m3", {"scale": 0.001, "saturate": False}), ("fp8_e5m2", {"scale": 1e-6, "saturate": False}),
    ("fp8_e5m2", {}), ("fp8_e4m3", {"rounding": "stochastic", "seed": 6}),
    ("fp8_e5m2", {"group_size": -1, "rounding": "stochastic", "seed": 7}),
    ("mxfp4", {}), ("mxfp8_e4m3", {}), ("mxfp8_e5m2", {}),
    ("mxfp4", {"rounding": "stochastic", "seed": 8}), ("mxfp8_e4m3", {"rounding": "stochastic", "seed": 9}),
    ("mxfp8_e5m2", {"rounding": "stochastic", "seed": 10}),
    ("nvfp4", {}), ("nvfp4", {"rounding": "stochastic", "seed": 12}),
]


def _ids(case):
    fmt, kw = case
    return fmt + "".join(f"-{k}={v}" for k, v in kw.items())


def _shape_for(fmt):
    return (6, 512) if fmt in ("tq1_0", "tq2_0") else (7, 384)


def _data(shape, seed=0, kind="normal"):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == "wide":  # many magnitudes, exact ties, zeros, subnormals
        x *= np.exp2(rng.integers(-20, 20, shape)).astype(np.float32)
        flat = x.reshape(-1)
        flat[::7] = np.round(flat[::7] * 4) / 4
        flat[3::11] = 0.0
        flat[5::13] = np.float32(1e-40) * rng.choice([-1, 1], flat[5::13].shape)
    return x


def assert_same(a, b):
    """Same bytes: a from thrifty.quant (numpy arrays), b from thrifty.torch.quant (torch
    arrays), both thrifty.quant.QuantizedTensor."""
    assert type(b) is quant.QuantizedTensor and isinstance(b.data, torch.Tensor)
    b = gq.to_numpy(b)
    assert (a.fmt, a.shape, a.group_size) == (b.fmt, b.shape, b.group_size)
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None) == (y is None), f
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape, (f, x.dtype, y.dtype, x.shape, y.shape)
            assert np.array_equal(x.view(np.uint8), y.view(np.uint8)), f
    if a.tensor_scale is None:
        assert b.tensor_scale is None
    else:
        assert np.float32(a.tensor_scale).view(np.uint32) == np.float32(b.tensor_scale).view(np.uint32)


def bits_equal(a, b):
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


# ============================================================================ CPU fallback

@pytest.mark.parametrize("case", CASES[::3], ids=_ids)
def test_cpu_fallback_equals_thrifty_quant(case):
    fmt, kw = case
    x = _data(_shape_for(fmt), 1)
    q = gq.quantize(torch.from_numpy(x), fmt, **kw)
    assert q.data.device.type == "cpu" and isinstance(q.data, torch.Tensor)
    assert_same(quant.quantize(x, fmt, **kw), q)
    y = gq.dequantize(q)
    assert isinstance(y, torch.Tensor) and bits_equal(quant.dequantize(gq.to_numpy(q)), y)
    # a numpy-backed QuantizedTensor is accepted too
    assert bits_equal(gq.dequantize(gq.to_numpy(q)), y)


def test_quantized_tensor_round_trips_numpy_and_device():
    x = torch.linspace(-1, 1, 96).reshape(3, 32)
    q = gq.quantize(x, "nvfp4")
    assert q.nbytes == gq.to_numpy(q).nbytes and q.bits_per_value == gq.to_numpy(q).bits_per_value
    r = gq.to_torch(gq.to_numpy(q), "cpu")
    assert isinstance(r.data, torch.Tensor)
    assert bits_equal(gq.dequantize(r), gq.dequantize(q))
    assert "nvfp4" in repr(q)
    with pytest.raises(InvalidInputError, match="QuantizedTensor"):
        gq.to_numpy(x)
    with pytest.raises(InvalidInputError, match="QuantizedTensor"):
        gq.to_torch(x)


def test_quantized_tensor_saves_and_loads_with_thrifty_quant(tmp_path):
    x = torch.linspace(-1, 1, 128).reshape(4, 32)
    q = gq.quantize(x, "int4", group_size=32)
    quant.save(tmp_path / "w.safetensors", {"w": gq.to_numpy(q)})
    r = quant.load(tmp_path / "w.safetensors")["w"]
    assert_same(r, q)
    assert bits_equal(gq.dequantize(gq.to_torch(r)), quant.dequantize(r))


def test_codecs_fallback():
    x = torch.tensor([0.0, -0.0, 1.0, 464.0, 1e6, float("nan"), float("inf"), -3e-3])
    for enc, dec, kw in ((gq.fp8_encode, gq.fp8_decode, {"fmt": "e4m3"}),
                         (gq.fp8_encode, gq.fp8_decode, {"fmt": "e5m2"})):
        c = enc(x, **kw)
        assert c.dtype == torch.uint8
        assert np.array_equal(c.numpy(), quant.fp8_encode(x.numpy(), kw["fmt"]))
        assert bits_equal(dec(c, **kw), quant.fp8_decode(c.numpy(), kw["fmt"]))
    c = gq.fp4_encode(x, saturate=False)
    assert np.array_equal(c.numpy(), quant.fp4_encode(x.numpy(), saturate=False))
    assert bits_equal(gq.fp4_decode(c), quant.fp4_decode(c.numpy()))


# The option grid: thrifty.torch.quant's own validation (used on the GPU path) must
# accept and reject exactly what thrifty.quant does, with the same error class.
_OPTION_GRID = [
    ("ternary", (5, 6), {"group_size": 4}), ("ternary", (5, 6), {"scale": "absmax"}),
    ("ternary", (5, 6), {"scale": 1.0}), ("ternary", (5, 6), {"scale": "absmedian"}),
    ("tq1_0", (2, 300), {}), ("tq2_0", (2, 512), {"rounding": "stochastic", "seed": 1}),
    ("int8", (4, 30), {"group_size": 7}), ("int8", (4, 30), {"group_size": 0}),
    ("int8", (4, 30), {"group_size": -2}), ("int8", (4, 30), {"group_size": 15}),
    ("int8", (4, 30), {"scale": 0.0}), ("int8", (4, 30), {"scale": float("inf")}),
    ("int8", (4, 30), {"scale": 1e-50}), ("int8", (4, 30), {"scale": 0.5, "group_size": 10}),
    ("int8", (4, 30), {"scale": True}), ("int8", (4, 30), {"scale": "absmean"}),
    ("int8", (4, 30), {"scale": "bogus"}), ("int8", (4, 30), {"symmetric": True}),
    ("int8", (4, 30), {"seed": 3}), ("int8", (4, 30), {"rounding": "up"}),
    ("int8", (4, 30), {"rounding": "stochastic", "seed": -1}),
    ("int8", (4, 30), {"rounding": "stochastic", "seed": 2**64}),
    ("int8", (4, 30), {"saturate": 1}), ("int4", (4, 30), {}), ("int4", (4, 30), {"group_size": 15}),
    ("int4", (4, 30), {"group_size": -1}), ("int4", (4, 128), {}), ("int4", (4, 128), {"scale": 1.0}),
    ("int4", (4, 64), {"symmetric": 1}), ("nf4", (3, 50), {"group_size": 48}),
    ("nf4", (3, 50), {"group_size": 16}), ("nf4", (3, 50), {"group_size": 8192}),
    ("nf4", (3, 50), {"group_size": -1}), ("nf4", (3, 50), {"rounding": "stochastic"}),
    ("fp8_e4m3", (3, 50), {"group_size": 25}), ("fp8_e5m2", (3, 50), {"group_size": 20}),
    ("fp8_e4m3", (3, 50), {"scale": 2.0, "saturate": False}), ("mxfp4", (3, 50), {"group_size": 32}),
    ("mxfp4", (3, 50), {"group_size": 16}), ("nvfp4", (3, 50), {"group_size": 32}),
    ("nvfp4", (3, 50), {"scale": "absmax"}), ("mxfp8_e4m3", (3, 50), {"group_size": -1}),
    ("int9", (3, 50), {}), ("int8", (), {}), ("int8", (0, 4), {}),
]


@pytest.mark.parametrize("fmt,shape,kw", _OPTION_GRID)
def test_validation_matches_thrifty_quant(fmt, shape, kw):
    x = np.ones(shape, np.float32)
    try:
        quant.quantize(x, fmt, **kw)
        want = None
    except Exception as e:  # noqa: BLE001
        want = type(e)
    try:
        gq._plan(fmt, shape, kw.get("group_size"), kw.get("scale"), kw.get("rounding", "nearest"),
                 kw.get("seed"), kw.get("saturate", True), kw.get("symmetric", False))
        got = None
    except Exception as e:  # noqa: BLE001
        got = type(e)
    assert got == want, (got, want)


def test_bad_inputs():
    with pytest.raises(InvalidInputError):
        gq.quantize(torch.tensor([1.0, float("nan")]), "int8")
    with pytest.raises(InvalidInputError):
        gq.dequantize("not a tensor")
    with pytest.raises(InvalidInputError):
        gq.fp8_encode(torch.ones(3), "e3m4")
    with pytest.raises(FormatError):
        gq.fp4_decode(torch.tensor([16], dtype=torch.uint8))


# ============================================================================ host-emulated kernels

def _emulated(monkeypatch):
    if cuda_host.compiler() is None:
        pytest.skip("no C++ compiler to build the host emulation of the kernels")
    cuda_host.patch(monkeypatch)


def _kernels_versus_cpu(case, kind, device):
    """The kernels' quantize/dequantize of ``case`` on ``device`` (None: their result
    back on the CPU, as from the host emulation) against the CPU core, bit for bit; both
    refuse the same inputs."""
    fmt, kw = case
    x = _data(_shape_for(fmt), 2, kind)
    xt = torch.from_numpy(x) if device is None else torch.from_numpy(x).to(device)
    try:
        want = quant.quantize(x, fmt, **kw)
    except InvalidInputError:  # e.g. TQ block scales beyond float16: refused by both
        with pytest.raises(InvalidInputError):
            gq.quantize(xt, fmt, **kw)
        return
    got = gq.quantize(xt, fmt, **kw)
    if device is not None:
        assert got.data.device.type == device  # the packed bytes stay on the device
    assert_same(want, got)
    y = gq.dequantize(got)
    if device is not None:
        assert y.device.type == device
    assert bits_equal(quant.dequantize(want), y.cpu())


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("kind", ["normal", "wide"])
def test_kernels_match_cpu_bit_for_bit(monkeypatch, case, kind):
    _emulated(monkeypatch)
    _kernels_versus_cpu(case, kind, None)


def test_kernels_saturate_and_refuse_overflow_like_cpu(monkeypatch):
    _emulated(monkeypatch)
    x = np.array([[3e38, -3e38, 1.0, 2.5e38]], np.float32)
    for fmt in ("fp8_e4m3", "fp8_e5m2"):
        for kw in ({}, {"rounding": "stochastic", "seed": 3}, {"saturate": False}):
            want = quant.quantize(x, fmt, scale=0.5, **kw)
            assert_same(want, gq.quantize(torch.from_numpy(x), fmt, scale=0.5, **kw))
    wide = np.zeros((2, 256), np.float32)
    wide[1, :2] = [-3e38, 3e38]
    tq = np.zeros((1, 256), np.float32)
    tq[0, 9] = 7e4
    top = np.zeros((2, 256), np.float32)
    top[0, 5] = np.finfo(np.float32).max  # -128 * (amax / 127.5) overflows
    for x, fmt, kw in [(wide, "int4", {}), (top, "int8", {}), (tq, "tq1_0", {}), (tq, "tq2_0", {}),
                       (tq, "int8", {"scale": 1e-39}), (tq, "fp8_e4m3", {"scale": 1e36})]:
        with pytest.raises(InvalidInputError):
            quant.quantize(x, fmt, **kw)
        with pytest.raises(InvalidInputError):
            gq.quantize(torch.from_numpy(x), fmt, **kw)


@pytest.mark.parametrize("fmt", ["ternary", "int4", "nf4", "mxfp4", "nvfp4", "fp8_e4m3"])
def test_kernels_ragged_and_odd_shapes(monkeypatch, fmt):
    _emulated(monkeypatch)
    shapes = {"ternary": (7, 3, 5), "int4": (3, 10), "nf4": (101,), "mxfp4": (5, 13),
              "nvfp4": (3, 7), "fp8_e4m3": (1, 1)}
    x = _data(shapes[fmt], 3)
    for kw in ({}, {} if fmt == "nf4" else {"rounding": "stochastic", "seed": 99}):
        gsz = {"group_size": 10} if fmt == "int4" else {}
        want = quant.quantize(x, fmt, **kw, **gsz)
        got = gq.quantize(torch.from_numpy(x), fmt, **kw, **gsz)
        assert_same(want, got)
        assert bits_equal(quant.dequantize(want), gq.dequantize(got))


@pytest.mark.parametrize("scale", ["absmean", "absmedian"])
def test_kernels_ternary_absmean_order_over_chunks(monkeypatch, scale):
    # 3 chunks of 65536 and a tail that is not a multiple of 16: the float64 absmean
    # must be summed in the CPU's order (lanes, remainder, chunks) to match bit for bit.
    _emulated(monkeypatch)
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((131, 1501)) * np.exp2(rng.integers(-12, 12, (131, 1501)))).astype(np.float32)
    assert x.size > 3 * 65536 and x.size % 65536 % 16
    want = quant.quantize(x, "ternary", scale=scale)
    got = gq.quantize(torch.from_numpy(x), "ternary", scale=scale)
    assert_same(want, got)


@pytest.mark.parametrize("fmt,kw", [("int8", {}), ("int8", {"group_size": -1}), ("int4", {"group_size": -1}),
                                    ("fp8_e5m2", {"group_size": -1})])
def test_kernels_group_reductions_over_many_blocks(monkeypatch, fmt, kw):
    # rows of 70000 values: reduction blocks (65536 values) that lie in one group and
    # blocks that straddle two rows
    _emulated(monkeypatch)
    x = _data((3, 70000), 6, "wide")
    assert_same(quant.quantize(x, fmt, **kw), gq.quantize(torch.from_numpy(x), fmt, **kw))


@pytest.mark.parametrize("fmt,kw", [("int8", {}), ("int8", {"group_size": 5}), ("int4", {"group_size": 6}),
                                    ("fp8_e4m3", {"group_size": 3}), ("fp8_e5m2", {"scale": 0.5}),
                                    ("ternary", {}), ("mxfp8_e4m3", {}), ("mxfp4", {}), ("nvfp4", {}),
                                    ("mxfp4", {"rounding": "stochastic", "seed": 5})])
def test_kernels_unaligned_views_and_ragged_ends(monkeypatch, fmt, kw):
    """The 4-elements-per-thread kernels: a view whose address is not 16-byte aligned,
    lengths that are not multiples of 4 and groups that end inside a thread's 4 elements
    take the scalar accesses and give the same bytes."""
    _emulated(monkeypatch)
    _unaligned_versus_cpu(fmt, kw, "cpu")


UNALIGNED = [("int8", {}), ("int8", {"group_size": 5}), ("int4", {"group_size": 6}),
             ("fp8_e4m3", {"group_size": 3}), ("fp8_e5m2", {"scale": 0.5}), ("ternary", {}),
             ("mxfp8_e4m3", {}), ("mxfp4", {}), ("nvfp4", {}), ("mxfp4", {"rounding": "stochastic", "seed": 5})]


def _unaligned_versus_cpu(fmt, kw, device):
    cols = 30 if fmt in ("int8", "int4", "fp8_e4m3") else 29
    base = torch.from_numpy(_data((3 * cols + 1,), 12, "wide")).to(device)
    x = base[1:].reshape(3, cols)  # data_ptr 4 bytes past an aligned address
    assert x.is_contiguous() and x.data_ptr() % 16 == 4
    want = quant.quantize(x.cpu().numpy(), fmt, **kw)
    got = gq.quantize(x, fmt, **kw)
    assert_same(want, got)
    # dequantize from packed bytes at an odd address too
    buf = torch.empty(got.data.numel() + 1, dtype=torch.uint8, device=device)
    buf[1:] = got.data.reshape(-1)
    odd = gq.QuantizedTensor(got.fmt, got.shape, buf[1:].reshape(got.data.shape), got.scales, got.zero_points,
                             got.group_size, got.tensor_scale)
    y = quant.dequantize(want)
    assert bits_equal(y, gq.dequantize(got).cpu()) and bits_equal(y, gq.dequantize(odd).cpu())


def test_kernels_report_bad_input_found_while_reading(monkeypatch):
    """Non-finite input is found by the encoders themselves (no separate pass) and
    reported with the same message as before, whatever the format."""
    _emulated(monkeypatch)
    x = torch.from_numpy(_data((4, 256), 13))
    x[2, 17] = float("nan")
    x[3, 5] = float("inf")
    for fmt in quant.FORMATS:
        with pytest.raises(InvalidInputError, match=r"input contains nan at flat index 529 \(2 non-finite"):
            gq.quantize(x, fmt)
    with pytest.raises(InvalidInputError, match="non-finite"):
        gq.quantize(x, "fp8_e4m3", scale=1.0)  # no reduction pass: found by the encoder


def test_kernels_all_zero_and_constant_inputs(monkeypatch):
    _emulated(monkeypatch)
    for x in (np.zeros((4, 256), np.float32), np.full((4, 256), -3.0, np.float32)):
        for fmt in quant.FORMATS:
            assert_same(quant.quantize(x, fmt), gq.quantize(torch.from_numpy(x), fmt))


def test_kernels_half_precision_inputs(monkeypatch):
    _emulated(monkeypatch)
    x = torch.from_numpy(_data((4, 64), 7)).to(torch.bfloat16)
    for fmt in ("int8", "mxfp4", "ternary"):
        assert_same(quant.quantize(x, fmt), gq.quantize(x, fmt))
    h = torch.from_numpy(_data((4, 64), 8)).half()
    assert_same(quant.quantize(h.numpy(), "nvfp4"), gq.quantize(h, "nvfp4"))


def test_kernels_codecs_every_code_and_specials(monkeypatch):
    _emulated(monkeypatch)
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    specials = np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 464.0, -1e9, 1e-45, 5.0, 0.25,
                         0.75, 2**-10, -2**-17, 57344.0, 61440.0, 3.4e38], np.float32)
    rng = np.random.default_rng(9)
    x = np.concatenate([specials, (rng.standard_normal(4000) * np.exp2(rng.integers(-30, 30, 4000))).astype(np.float32)])
    for fmt in ("e4m3", "e5m2"):
        assert bits_equal(gq.fp8_decode(codes, fmt), quant.fp8_decode(codes.numpy(), fmt))
        for sat in (True, False):
            assert np.array_equal(gq.fp8_encode(torch.from_numpy(x), fmt, saturate=sat).numpy(),
                                  quant.fp8_encode(x, fmt, saturate=sat))
    assert bits_equal(gq.fp4_decode(codes[:16]), quant.fp4_decode(codes[:16].numpy()))
    for sat in (True, False):
        assert np.array_equal(gq.fp4_encode(torch.from_numpy(x), saturate=sat).numpy(),
                              quant.fp4_encode(x, saturate=sat))
    with pytest.raises(FormatError):
        gq.fp4_decode(torch.tensor([3, 17], dtype=torch.uint8))


def test_kernels_reject_bad_packed_data(monkeypatch):
    _emulated(monkeypatch)
    x = torch.from_numpy(_data((8, 512), 4))
    for fmt in ("ternary", "tq2_0"):
        q = gq.quantize(x, fmt)
        q.data.view(-1)[5] = 0xFF  # code 3
        with pytest.raises(FormatError, match="code 3"):
            gq.dequantize(q)
        with pytest.raises(FormatError):
            quant.dequantize(gq.to_numpy(q))
    q = gq.quantize(x, "int4")
    bad = gq.QuantizedTensor(q.fmt, q.shape, q.data[:-1], q.scales, q.zero_points, q.group_size)
    with pytest.raises(FormatError):
        gq.dequantize(bad)
    with pytest.raises(FormatError):
        quant.dequantize(gq.to_numpy(bad))
    bad = gq.QuantizedTensor("nvfp4", (4,), torch.zeros(8, dtype=torch.uint8), torch.zeros(1, dtype=torch.uint8),
                             None, 16, None)
    with pytest.raises(FormatError, match="per-tensor"):
        gq.dequantize(bad)
    bad = gq.QuantizedTensor("int8", (4,), torch.zeros(4, dtype=torch.uint8), torch.zeros(1, dtype=torch.float64),
                             None, 4, None)
    with pytest.raises(InvalidInputError, match="dtype"):
        gq.dequantize(bad)


def test_kernel_signatures_match_the_launch_calls():
    sigs = rt.kernel_signatures("quant.cu")
    assert set(gq._KERNELS) == set(sigs)
    assert sigs["th_ternary_pack"][-3] == ("u64", "seed")
    # every encoder reports bad input through a status word instead of a checking pass
    for k in ("th_ternary_pack", "th_tq_pack", "th_int_encode", "th_nf4_encode", "th_fp8_encode",
              "th_block_encode", "th_ternary_unpack"):
        assert sigs[k][-1] == ("ptr", "status"), k


# ============================================================================ GPU

gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not rt.available(), reason="needs CuPy and a CUDA device")


@gpu
@needs_gpu
@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("kind", ["normal", "wide"])
def test_gpu_matches_cpu_bit_for_bit(case, kind):
    _kernels_versus_cpu(case, kind, "cuda")


@gpu
@needs_gpu
@pytest.mark.parametrize("fmt", quant.FORMATS)
def test_gpu_large_tensor(fmt):
    # several 65536-chunks, a ragged tail for the block formats, stochastic where defined
    rng = np.random.default_rng(21)
    shape = (777, 1024) if fmt in ("tq1_0", "tq2_0") else (1001, 1003) if fmt not in ("int4",) else (1001, 1024)
    x = (rng.standard_normal(shape) * np.exp2(rng.integers(-8, 8, shape))).astype(np.float32)
    for kw in ({}, {} if fmt in NO_SR else {"rounding": "stochastic", "seed": 1234}):
        want = quant.quantize(x, fmt, **kw)
        got = gq.quantize(torch.from_numpy(x).cuda(), fmt, **kw)
        assert_same(want, got)
        assert bits_equal(quant.dequantize(want), gq.dequantize(got).cpu())


@gpu
@needs_gpu
def test_gpu_codecs_and_stream():
    codes = torch.arange(256, device="cuda").to(torch.uint8)
    for fmt in ("e4m3", "e5m2"):
        assert bits_equal(gq.fp8_decode(codes, fmt).cpu(), quant.fp8_decode(codes.cpu().numpy(), fmt))
    x = torch.randn(100_000, device="cuda") * 100
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):  # kernels follow torch's current stream
        c = gq.fp8_encode(x, "e4m3")
    s.synchronize()
    assert np.array_equal(c.cpu().numpy(), quant.fp8_encode(x.cpu().numpy(), "e4m3"))
    assert np.array_equal(gq.fp4_encode(x).cpu().numpy(), quant.fp4_encode(x.cpu().numpy()))


@gpu
@needs_gpu
@pytest.mark.parametrize("fmt,kw", UNALIGNED, ids=[f"{f}-{i}" for i, (f, _) in enumerate(UNALIGNED)])
def test_gpu_unaligned_views_and_ragged_ends(fmt, kw):
    _unaligned_versus_cpu(fmt, kw, "cuda")
