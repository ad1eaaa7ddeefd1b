"""The CUDA backend's integer BitLinear path (thrifty.torch._cuda.bitlinear).

* the torch reference (CPU) reproduces the float BitLinear's quantized values exactly
  and its outputs/gradients within the float layer's accumulation rounding;
* the kernels of cuda/bitlinear.cu, compiled for the host and run block by block
  (cuda_host.py), equal the reference bit for bit;
* @pytest.mark.gpu: the same on a CUDA device, plus BitLinear's CUDA hook.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from thrifty import InvalidInputError  # noqa: E402
from thrifty.torch._cuda import _runtime as rt  # noqa: E402
from thrifty.torch._cuda import bitlinear as bl  # noqa: E402
from thrifty.torch.nn import BitLinear, quantize_activations  # noqa: E402

import cuda_host  # noqa: E402

EPS32 = 2.0 ** -24


def _layer(n_in, n_out, bias=False, scale="absmean", seed=0, device="cpu"):
    torch.manual_seed(seed)
    layer = BitLinear(n_in, n_out, bias=bias, scale=scale).to(device)
    if bias:
        with torch.no_grad():
            layer.bias.normal_()
    return layer


def _float_forward(layer, x):
    """The float BitLinear forward (the module's own code path, whatever the device)."""
    w = layer.weight + (layer.quantized_weight() - layer.weight).detach()
    xe = x + (quantize_activations(x, 8) - x).detach()
    return torch.nn.functional.linear(xe, w, layer.bias)


def _tolerance(layer, x):
    """Bound on the float layer's accumulation rounding: K * eps * |x_q| @ |W_q|.T (x2)."""
    xq = quantize_activations(x.float(), 8).abs().reshape(-1, x.shape[-1])
    wq = layer.quantized_weight().float().abs()
    bound = xq @ wq.T
    if layer.bias is not None:
        bound = bound + layer.bias.detach().float().abs()
    return (2 * x.shape[-1] * EPS32 * bound + 1e-30).reshape(*x.shape[:-1], -1)


def _bits(t):
    return t.contiguous().view(torch.int32)


# ============================================================================ reference (CPU)

@pytest.mark.parametrize("k", [1, 15, 16, 100, 130])
@pytest.mark.parametrize("scale", ["absmean", "absmedian"])
def test_reference_quantized_values_are_the_float_layers(k, scale):
    layer = _layer(k, 7, scale=scale, seed=k)
    p = bl.pack_ternary(layer.weight, scale)
    assert p.words.dtype == torch.int32 and p.words.shape == (7, -(-k // 64) * 4)
    assert torch.equal(bl.unpack_ternary(p), layer.quantized_weight())
    x = torch.randn(5, 3, k) * 3
    xq, s_x = bl.quantize_activations_int8(x)
    assert xq.dtype == torch.int8 and xq.shape == (15, p.words.shape[1] * 16)
    assert torch.equal(bl.dequantize_activations(xq, s_x, k), quantize_activations(x, 8).reshape(15, k))
    assert not xq[:, k:].any()


@pytest.mark.parametrize("shape", [(4, 64, 8), (2, 3, 100, 33), (1, 1, 1), (9, 300, 70)])
@pytest.mark.parametrize("bias", [False, True])
def test_reference_forward_equals_float_layer(shape, bias):
    *lead, k, n = shape
    layer = _layer(k, n, bias=bias, seed=sum(shape))
    x = torch.randn(*lead, k)
    y = bl.bitlinear(x, layer.weight, layer.bias)
    want = _float_forward(layer, x)
    assert y.shape == want.shape and y.dtype == want.dtype
    assert ((y - want).abs() <= _tolerance(layer, x)).all()
    assert torch.equal(want, layer(x))  # the module's CPU path is the float layer


def test_reference_backward_is_straight_through():
    layer = _layer(96, 40, bias=True, seed=3)
    x = torch.randn(6, 96, requires_grad=True)
    gy = torch.randn(6, 40)
    bl.bitlinear(x, layer.weight, layer.bias).backward(gy)
    gx, gw, gb = x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()
    x.grad = None
    layer.zero_grad()
    _float_forward(layer, x).backward(gy)
    assert torch.allclose(gx, x.grad, rtol=1e-5, atol=1e-6)
    assert torch.allclose(gw, layer.weight.grad, rtol=1e-5, atol=1e-6)
    assert torch.allclose(gb, layer.bias.grad)
    # exactly the STE formulas with the dequantised operands
    xd = quantize_activations(x.detach(), 8)
    assert torch.allclose(gw, gy.T @ xd, rtol=1e-6, atol=1e-6)
    assert torch.allclose(gx, gy @ layer.quantized_weight(), rtol=1e-6, atol=1e-6)


def test_bfloat16_inputs():
    layer = _layer(64, 16, seed=4).to(torch.bfloat16)
    x = torch.randn(8, 64, dtype=torch.bfloat16)
    y = bl.bitlinear(x, layer.weight)
    assert y.dtype == torch.bfloat16
    want = layer(x).float()
    assert torch.allclose(y.float(), want, rtol=2e-2, atol=2e-2)


def test_weight_cache_repacks_only_when_the_weight_changes():
    layer = _layer(32, 8, seed=5)
    cache = bl.WeightCache()
    x = torch.randn(4, 32)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    for _ in range(3):
        bl.bitlinear(x, layer.weight, cache=cache)
    assert cache.packs == 1
    bl.bitlinear(x, layer.weight, cache=cache).sum().backward()
    opt.step()  # in-place update bumps weight._version
    y = bl.bitlinear(x, layer.weight, cache=cache)
    assert cache.packs == 2
    assert torch.equal(y, bl.bitlinear(x, layer.weight))  # fresh pack agrees
    with torch.no_grad():
        layer.weight.mul_(-1)
    bl.bitlinear(x, layer.weight, cache=cache)
    assert cache.packs == 3
    bl.bitlinear(x, layer.weight, scale="absmedian", cache=cache)
    assert cache.packs == 4
    layer.weight.data.mul_(-1)  # .data bypasses the version counter ...
    bl.bitlinear(x, layer.weight, scale="absmedian", cache=cache)
    assert cache.packs == 4
    cache.clear()  # ... hence clear()
    assert torch.equal(bl.bitlinear(x, layer.weight, scale="absmedian", cache=cache),
                       bl.bitlinear(x, layer.weight, scale="absmedian"))
    assert cache.packs == 5


def test_bad_arguments():
    w = torch.randn(4, 8)
    with pytest.raises(InvalidInputError, match="features"):
        bl.bitlinear(torch.randn(2, 9), w)
    with pytest.raises(InvalidInputError, match="scale"):
        bl.bitlinear(torch.randn(2, 8), w, scale="absmax")
    with pytest.raises(InvalidInputError, match="2-D"):
        bl.pack_ternary(torch.randn(8))
    xq, s = bl.quantize_activations_int8(torch.randn(2, 70))
    with pytest.raises(InvalidInputError, match="padded"):
        bl.int8_ternary_linear(xq, s, bl.pack_ternary(w))


def test_packed_weights_are_16x_smaller():
    w = torch.randn(256, 1024)
    p = bl.pack_ternary(w)
    assert p.nbytes == 256 * 1024 // 4 + 4


# ============================================================================ host-emulated kernels

def _emulated(monkeypatch):
    cuda_host.patch(monkeypatch)


@pytest.mark.parametrize("m,k,n,bias", [(70, 100, 130, True), (3, 200, 5, False), (1, 1, 1, True),
                                        (8, 1100, 19, True), (9, 64, 9, False)])
def test_kernels_equal_reference_bit_for_bit(monkeypatch, m, k, n, bias):
    layer = _layer(k, n, bias=bias, seed=m + k + n)
    x = torch.randn(m, k) * 2
    gy = torch.randn(m, n)

    def run():
        xx = x.clone().requires_grad_(True)
        layer.zero_grad()
        xq, s_x = bl.quantize_activations_int8(x)
        p = bl.pack_ternary(layer.weight)
        y = bl.bitlinear(xx, layer.weight, layer.bias)
        y.backward(gy)
        return (xq, s_x, p.words, p.s_w, y.detach(), bl.unpack_ternary(p),
                bl.dequantize_activations(xq, s_x, k), xx.grad, layer.weight.grad.clone())

    want = run()
    _emulated(monkeypatch)
    got = run()
    names = ("xq", "s_x", "words", "s_w", "y", "w_unpacked", "x_dequant", "grad_x", "grad_w")
    for name, a, b in zip(names, want, got):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(a.view(torch.uint8) if a.dtype != torch.int8 else a, b.view(torch.uint8) if b.dtype != torch.int8 else b), name


def test_bitlinear_module_picks_the_kernels_itself(monkeypatch):
    """BitLinear dispatches to the fused integer path when the kernels can take the
    input (here the host build stands in for the device): same values as the float
    layer within its rounding, straight-through gradients, weights packed once."""
    layer = _layer(96, 40, bias=True, seed=5)
    x = torch.randn(2, 3, 96, requires_grad=True)
    want = _float_forward(layer, x)
    _emulated(monkeypatch)
    y = layer(x)
    assert layer._fused_cache.packs == 1
    assert ((y - want).abs() <= _tolerance(layer, x)).all()
    gy = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, layer.weight), gy)
    rx, rw = torch.autograd.grad(want, (x, layer.weight), gy)
    torch.testing.assert_close(gx, rx, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gw, rw, rtol=1e-4, atol=1e-4)
    layer(x)
    assert layer._fused_cache.packs == 1
    layer.strength = 0.5  # phasing in: the float path
    layer(x)
    assert layer._fused_cache.packs == 1


def test_kernel_signatures_match():
    assert set(bl._KERNELS) == set(rt.kernel_signatures("bitlinear.cu"))


# ============================================================================ GPU

gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not rt.available(), reason="needs CuPy and a CUDA device")


@gpu
@needs_gpu
@pytest.mark.parametrize("m,k,n", [(1, 64, 64), (8, 4096, 1000), (70, 100, 130), (257, 1024, 513),
                                   (4096, 2048, 2048)])
@pytest.mark.parametrize("bias", [False, True])
def test_gpu_kernels_equal_reference(monkeypatch, m, k, n, bias):
    layer = _layer(k, n, bias=bias, seed=m, device="cuda")
    x = torch.randn(m, k, device="cuda") * 2

    def run():
        xq, s_x = bl.quantize_activations_int8(x)
        p = bl.pack_ternary(layer.weight)
        y = bl.int8_ternary_linear(xq, s_x, p, layer.bias)
        return xq, s_x, p.words, p.s_w, y, bl.unpack_ternary(p), bl.dequantize_activations(xq, s_x, k)

    got = run()  # kernels
    with monkeypatch.context() as mp:  # the torch reference, on the same device
        mp.setattr(rt, "use_kernels", lambda *ts: False)
        want = run()
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.is_cuda and a.dtype == b.dtype and a.shape == b.shape, i
        assert torch.equal(a.view(torch.uint8) if a.dtype != torch.int8 else a,
                           b.view(torch.uint8) if b.dtype != torch.int8 else b), i
    # and the CPU reference: same codes and outputs unless gamma's float64 sum rounds
    # differently on the two devices (then s_w differs by an ulp)
    xq_c, s_x_c = bl.quantize_activations_int8(x.cpu())
    assert torch.equal(xq_c, got[0].cpu()) and torch.equal(_bits(s_x_c), _bits(got[1].cpu()))


@gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_bitlinear_module_uses_the_fused_path(dtype):
    layer = _layer(512, 384, bias=True, seed=9, device="cuda").to(dtype)
    x = torch.randn(3, 50, 512, device="cuda", dtype=dtype, requires_grad=True)
    y = layer(x)
    assert layer._fused_cache.packs == 1
    want = _float_forward(layer, x)
    if dtype == torch.float32:
        assert ((y - want).abs() <= _tolerance(layer, x)).all()
    else:
        assert torch.allclose(y.float(), want.float(), rtol=3e-2, atol=3e-2)
    gy = torch.randn_like(y)
    y.backward(gy)
    gx, gw = x.grad.clone(), layer.weight.grad.clone()
    x.grad = None
    layer.zero_grad()
    want.backward(gy)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=3e-2, atol=3e-2)
    assert torch.allclose(gx.float(), x.grad.float(), **tol)
    assert torch.allclose(gw.float(), layer.weight.grad.float(), **tol)
    layer(x)
    assert layer._fused_cache.packs == 1
    torch.optim.SGD(layer.parameters(), lr=0.01).step()
    layer(x)
    assert layer._fused_cache.packs == 2


@gpu
@needs_gpu
def test_gpu_kernels_follow_torch_stream():
    layer = _layer(256, 256, seed=1, device="cuda")
    x = torch.randn(128, 256, device="cuda")
    want = bl.bitlinear(x, layer.weight)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        got = bl.bitlinear(x, layer.weight)
    torch.cuda.current_stream().wait_stream(s)
    assert torch.equal(got, want)
