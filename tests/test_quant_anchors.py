"""thrifty.quant against the reference libraries themselves (bytes, scales and decoded
floats identical): bitsandbytes for NF4, torchao for int8 / int4 / MX / NVFP4,
transformers for the BitNet ternary packing.

These libraries come with the ``quant-anchors`` extra (CI installs it); the tests
skip when one is missing. The formula-level tests in test_quant_formats.py run always.
"""

import numpy as np
import pytest

from thrifty import quant

torch = pytest.importorskip("torch")


def data(shape, seed, spread=0.0):
    """Normal values, rows scaled by up to e**spread either way, with zero rows,
    constant runs and sparse zeros (ties, empty blocks, tiny and huge scales)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * np.exp(rng.uniform(-spread, spread, (shape[0], 1)))
    x = x.astype(np.float32)
    x[1] = 0
    x[2, : shape[1] // 2] = 0.25
    x[3, ::7] = 0
    return x


def nibbles(d, low_first=True):
    d = np.asarray(d, np.uint8).ravel()
    c = np.empty(d.size * 2, np.uint8)
    c[0::2], c[1::2] = (d & 15, d >> 4) if low_first else (d >> 4, d & 15)
    return c


def same(a, b):
    a = np.asarray(a, np.float32).ravel()
    b = np.asarray(b, np.float32).ravel()
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


# ------------------------------------------------------------------ bitsandbytes NF4

@pytest.mark.parametrize("block", [32, 64, 256, 4096])
@pytest.mark.parametrize("shape", [(16, 256), (7, 100)])
def test_nf4_identical_to_bitsandbytes(block, shape):
    bnb = pytest.importorskip("bitsandbytes.functional")
    x = data(shape, seed=block, spread=6)
    q, st = bnb.quantize_4bit(torch.from_numpy(x), blocksize=block, quant_type="nf4")
    t = quant.quantize(x, "nf4", group_size=block)
    assert np.array_equal(q.numpy().ravel(), t.data.ravel())
    assert same(st.absmax.numpy(), t.scales)
    assert same(bnb.dequantize_4bit(q, st).numpy(), quant.dequantize(t))


# ------------------------------------------------------------------ torchao int8 / int4

def _qp():
    pytest.importorskip("torchao")
    from torchao.quantization import quant_primitives as qp

    return qp


@pytest.mark.parametrize("spread", [0.0, 8.0])
@pytest.mark.parametrize("group", [32, 128, 512])
def test_int4_asymmetric_identical_to_torchao_tinygemm(group, spread):
    qp = _qp()
    x = data((64, 512), seed=group, spread=spread)
    t = torch.from_numpy(x)
    eps = torch.finfo(torch.float32).eps
    args = ((1, group),)
    s, zp = qp._choose_qparams_affine_tinygemm(t, qp.MappingType.ASYMMETRIC, *args, torch.int32,
                                               0, 15, eps, torch.float32, torch.float32)
    codes = qp._quantize_affine_tinygemm(t, *args, s, zp, torch.int32, 0, 15)
    back = qp._dequantize_affine_tinygemm(codes, *args, s, zp, torch.int32, 0, 15,
                                          output_dtype=torch.float32)
    q = quant.quantize(x, "int4", group_size=group)
    assert same(q.scales, s.numpy()) and same(q.zero_points, zp.numpy())
    assert np.array_equal(nibbles(q.data), codes.numpy().ravel())
    assert same(quant.dequantize(q), back.numpy())


@pytest.mark.parametrize("fmt,qmin,qmax", [("int8", -128, 127), ("int4", -8, 7)])
@pytest.mark.parametrize("group", [64, 512])
def test_symmetric_int_identical_to_torchao(fmt, qmin, qmax, group):
    qp = _qp()
    x = data((64, 512), seed=qmax + group, spread=8)
    t = torch.from_numpy(x)
    eps = torch.finfo(torch.float32).eps
    s, zp = qp.choose_qparams_affine(t, qp.MappingType.SYMMETRIC, (1, group), torch.int8,
                                     qmin, qmax, eps, torch.float32)
    codes = qp.quantize_affine(t, (1, group), s, zp, torch.int8, qmin, qmax)
    back = qp.dequantize_affine(codes, (1, group), s, zp, torch.int8, qmin, qmax,
                                output_dtype=torch.float32)
    q = quant.quantize(x, fmt, group_size=group, **({"symmetric": True} if fmt == "int4" else {}))
    mine = q.data.view(np.int8) if fmt == "int8" else nibbles(q.data).astype(np.int8) - 8
    assert same(q.scales, s.numpy())
    assert np.array_equal(mine.ravel(), codes.numpy().ravel())
    assert same(quant.dequantize(q), back.numpy())


# ------------------------------------------------------------------ torchao MX / NVFP4

@pytest.mark.parametrize("fmt,elem", [("mxfp4", "float4_e2m1fn_x2"), ("mxfp8_e4m3", "float8_e4m3fn"),
                                      ("mxfp8_e5m2", "float8_e5m2")])
@pytest.mark.parametrize("spread", [0.0, 20.0])
def test_mx_identical_to_torchao(fmt, elem, spread):
    pytest.importorskip("torchao")
    from torchao.prototype.mx_formats.mx_tensor import to_dtype, to_mx

    x = data((64, 256), seed=len(fmt), spread=spread)
    x[4, :32] = 1e-30  # a block whose scale is near the bottom of E8M0
    dt = getattr(torch, elem)
    s, d = to_mx(torch.from_numpy(x), dt, 32)
    q = quant.quantize(x, fmt)
    assert np.array_equal(s.view(torch.uint8).numpy().ravel(), q.scales.ravel())
    assert np.array_equal(d.view(torch.uint8).numpy().ravel(), q.data.ravel())
    assert same(to_dtype(d, s, dt, 32, torch.float32).numpy(), quant.dequantize(q))


@pytest.mark.parametrize("spread", [0.0, 8.0])
def test_nvfp4_identical_to_torchao(spread):
    pytest.importorskip("torchao")
    from torchao.prototype.mx_formats import nvfp4_tensor as nv

    x = data((64, 256), seed=7, spread=spread)
    t = torch.from_numpy(x)
    pt = nv.per_tensor_amax_to_scale(t.abs().max())
    s, d = nv.nvfp4_quantize(t, 16, pt)
    q = quant.quantize(x, "nvfp4")
    assert q.tensor_scale == pt.item()
    assert np.array_equal(s.view(torch.uint8).numpy().ravel(), q.scales.ravel())
    assert np.array_equal(d.view(torch.uint8).numpy().ravel(), q.data.ravel())


# ------------------------------------------------------------------ HF transformers BitNet

@pytest.mark.parametrize("shape", [(64, 48), (5, 3), (6, 2, 4), (10,)])
def test_ternary_layout_identical_to_transformers(shape):
    pytest.importorskip("transformers")
    from transformers.integrations import bitnet

    x = data((shape[0], int(np.prod(shape[1:], dtype=int))), seed=len(shape)).reshape(shape)
    q = quant.quantize(x, "ternary")
    s = np.float32(1) / q.scales.ravel()[0]  # q.scales holds 1/s
    codes = torch.from_numpy(np.clip(np.rint(x * s), -1, 1).astype(np.int8))
    assert np.array_equal(bitnet.pack_weights(codes.clone()).numpy(), q.data)
    unpacked = bitnet.unpack_weights(torch.from_numpy(q.data), torch.float32)[: shape[0]]
    assert np.array_equal(unpacked.numpy(), codes.numpy().astype(np.float32))
    assert same(quant.dequantize(q), unpacked.numpy() * q.scales.ravel()[0])


def nvfp4_bytes_divided(x):
    """NVFP4 codes computed with a division by ``pt * block_scale`` (what thrifty did
    before): used to show that the inputs below tell the two orders apart."""
    md = pytest.importorskip("ml_dtypes")
    b = x.reshape(-1, 16).astype(np.float32)
    pt = np.float32(np.abs(b).max() / np.float32(2688.0))
    bs = np.clip((np.abs(b).max(axis=1) / np.float32(6.0)) / pt, np.float32(2.0 ** -6),
                 np.float32(448)).astype(md.float8_e4m3fn).astype(np.float32)
    return np.clip(b / (pt * bs)[:, None], -6, 6).astype(md.float4_e2m1fn).view(np.uint8)


def tie_grid():
    """2048 values on a uniform grid of 0.125 steps in [-6, 6]: after scaling, many fall
    exactly on (or one rounding away from) E2M1 midpoints."""
    return ((np.arange(2048) % 97 - 48) * 0.125).astype(np.float32).reshape(16, 128)


@pytest.mark.parametrize("case", ["randn_bf16", "tie_grid", "tie_grid_bf16"])
def test_nvfp4_identical_to_torchao_on_bf16_weights_and_ties(case):
    pytest.importorskip("torchao")
    from torchao.prototype.mx_formats import nvfp4_tensor as nv

    if case == "randn_bf16":
        torch.manual_seed(0)
        t = torch.randn(512, 1024).to(torch.bfloat16)
    else:
        t = torch.from_numpy(tie_grid())
        if case == "tie_grid_bf16":
            t = t.to(torch.bfloat16)
    x = t.float().numpy()
    pt = nv.per_tensor_amax_to_scale(t.float().abs().max())
    s, d = nv.nvfp4_quantize(t, 16, pt)
    for q in (quant.quantize(t, "nvfp4"), quant.quantize(x, "nvfp4")):
        assert q.tensor_scale == pt.item()
        assert np.array_equal(s.view(torch.uint8).numpy().ravel(), q.scales.ravel())
        assert np.array_equal(d.view(torch.uint8).numpy().ravel(), q.data.ravel())
    # the inputs do discriminate: dividing by pt * block_scale changes some codes
    codes = nibbles(d.view(torch.uint8).numpy())
    assert (nvfp4_bytes_divided(x).ravel() != codes).sum() > 0


@pytest.mark.parametrize("fmt,elem,emax", [("mxfp4", "float4_e2m1fn_x2", 2),
                                           ("mxfp8_e4m3", "float8_e4m3fn", 8),
                                           ("mxfp8_e5m2", "float8_e5m2", 15)])
def test_mx_scale_code_zero_follows_ocp_not_torchao(fmt, elem, emax):
    """The one documented difference from torchao: blocks whose E8M0 scale code clamps
    to 0 (amax < 2**(emax - 126)). Both store code 0; thrifty's elements are
    x / 2**-127 as OCP MX specifies, torchao's are x / 2**-126."""
    pytest.importorskip("torchao")
    from torchao.prototype.mx_formats.mx_tensor import to_mx

    md = pytest.importorskip("ml_dtypes")
    elem_md = {"mxfp4": md.float4_e2m1fn, "mxfp8_e4m3": md.float8_e4m3fn,
               "mxfp8_e5m2": md.float8_e5m2}[fmt]
    rng = np.random.default_rng(3)
    x = (rng.uniform(-1, 1, (4, 32)) * 2.0 ** (emax - 128)).astype(np.float32)
    x[:, 0] = 2.0 ** (emax - 127)  # amax just under the limit: code 0
    x[3] = rng.standard_normal(32).astype(np.float32)  # an ordinary block
    s, d = to_mx(torch.from_numpy(x.ravel()), getattr(torch, elem), 32)
    q = quant.quantize(x, fmt)
    assert list(q.scales) == [0, 0, 0, q.scales[3]] and q.scales[3] > 0
    assert np.array_equal(s.view(torch.uint8).numpy().ravel(), q.scales)

    def elements(raw):
        raw = np.asarray(raw, np.uint8).ravel()
        return nibbles(raw) if fmt == "mxfp4" else raw

    ours, theirs = elements(q.data), elements(d.view(torch.uint8).numpy())
    for scale, codes in ((2.0 ** -127, ours), (2.0 ** -126, theirs)):
        want = np.clip(x[:3].astype(np.float64) / scale, -float(md.finfo(elem_md).max),
                       float(md.finfo(elem_md).max)).astype(elem_md).view(np.uint8).ravel()
        assert np.array_equal(codes[:96], want)
    assert np.array_equal(ours[96:], theirs[96:])  # the ordinary block is identical
    # read with the stored scale 2**-127, thrifty's elements are the closer ones
    y = quant.dequantize(q)[:3].astype(np.float64)
    y_torchao = theirs[:96].view(elem_md).astype(np.float64).reshape(3, 32) * 2.0 ** -127
    assert np.abs(y - x[:3]).sum() < np.abs(y_torchao - x[:3]).sum()
