"""thrifty.torch.losses.linear_cross_entropy_loss against the unfused losses on materialised
logits (CPU fallback here; the loss.cu kernels under ``-m gpu``)."""

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import thrifty  # noqa: E402
from thrifty.torch.losses import LinearCrossEntropyLoss, linear_cross_entropy_loss  # noqa: E402
from thrifty.torch import losses as L  # noqa: E402

import cuda_host  # noqa: E402

IGNORE = -100


def unfused(h, w, y, *, bias=None, loss="ce", reduction="mean", a=None, b=None):
    """The materialised pipeline: F.linear, then the thrifty/torch loss on the kept rows."""
    o = F.linear(h, w, bias).reshape(-1, w.shape[0])
    t = y.reshape(-1)
    keep = t != IGNORE
    if loss == "ce":
        per = F.cross_entropy(o[keep], t[keep], reduction="none")
    elif loss == "squentropy":
        per = L.squentropy_loss(o[keep], t[keep], reduction="none")
    else:
        ab = {k: v for k, v in (("a", a), ("b", b)) if v is not None}  # default: the loss's own
        per = L.spherical_z_loss(o[keep], t[keep], reduction="none", **ab)
    per = per.float() if per.dtype != torch.float64 else per
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    full = torch.zeros(t.shape, dtype=per.dtype)
    full[keep] = per
    return full.reshape(y.shape)


def data(n=29, d=12, v=203, dtype=torch.float32, seed=0, ignored=(3, 17)):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(n, d, generator=g, dtype=torch.float64) * 2).to(dtype).requires_grad_(True)
    w = torch.randn(v, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    bias = torch.randn(v, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    y = torch.randint(0, v, (n,), generator=g)
    y[list(ignored)] = IGNORE
    return h, w, bias, y


@pytest.mark.parametrize("loss", ["ce", "squentropy", "z"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("use_bias", [False, True])
def test_values_and_gradients_match_unfused(loss, reduction, use_bias):
    h, w, bias, y = data()
    bias = bias if use_bias else None
    kw = dict(bias=bias, loss=loss, reduction=reduction)
    fused = linear_cross_entropy_loss(h, w, y, chunk_size=37, token_chunk=8, **kw)  # ragged tiles
    ref = unfused(h, w, y, **kw)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
    inputs = (h, w) + ((bias,) if use_bias else ())
    up = torch.randn(fused.shape, generator=torch.Generator().manual_seed(1))
    gf = torch.autograd.grad((fused * up).sum(), inputs)
    gr = torch.autograd.grad((ref * up).sum(), inputs)
    for a, b in zip(gf, gr):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loss", ["ce", "squentropy", "z"])
def test_gradcheck_float64(loss):
    h, w, bias, y = data(n=5, d=3, v=11, dtype=torch.float64, ignored=(2,))
    fn = lambda h, w, b: linear_cross_entropy_loss(h, w, y, bias=b, loss=loss, chunk_size=4, token_chunk=2,  # noqa: E731
                                              a=0.5, b=1.0)
    assert torch.autograd.gradcheck(fn, (h, w, bias), fast_mode=True)


def test_float64_tiles_do_not_change_the_result():
    h, w, bias, y = data(dtype=torch.float64)
    ref = linear_cross_entropy_loss(h, w, y, loss="z", chunk_size=10_000)
    for cs, tc in [(7, 3), (202, 28), (203, 29)]:
        torch.testing.assert_close(linear_cross_entropy_loss(h, w, y, loss="z", chunk_size=cs, token_chunk=tc), ref,
                                   rtol=1e-12, atol=1e-12)


def test_batched_hidden_and_module_form():
    h, w, bias, y = data(n=24)
    h3, y3 = h.detach().reshape(4, 6, -1), y.reshape(4, 6)
    out = LinearCrossEntropyLoss(loss="squentropy", reduction="none", chunk_size=50)(h3, w, y3, bias)
    assert out.shape == (4, 6)
    torch.testing.assert_close(out, unfused(h3, w, y3, bias=bias, loss="squentropy", reduction="none"),
                               rtol=1e-5, atol=1e-5)


def test_check_target_can_be_skipped():
    h, w, _, y = data()
    ref = linear_cross_entropy_loss(h, w, y)
    torch.testing.assert_close(linear_cross_entropy_loss(h, w, y, check_target=False), ref, rtol=0, atol=0)


def test_z_defaults_follow_spherical_z_loss():
    h, w, _, y = data(ignored=())
    torch.testing.assert_close(linear_cross_entropy_loss(h, w, y, loss="z"), L.spherical_z_loss(h @ w.T, y),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_matches_the_unfused_half_pipeline(dtype):
    h, w, bias, y = data(dtype=dtype)
    for loss in ("ce", "squentropy", "z"):
        fused = linear_cross_entropy_loss(h, w, y, bias=bias, loss=loss, chunk_size=64)
        ref = unfused(h, w, y, bias=bias, loss=loss)
        assert fused.dtype == torch.float32
        # logits are rounded to the half dtype per tile as per full matrix: ~1 ulp apart
        torch.testing.assert_close(fused, ref, rtol=5e-3, atol=5e-3)
        gf = torch.autograd.grad(fused, (h, w))
        gr = torch.autograd.grad(ref, (h, w))
        for a, b in zip(gf, gr):
            assert a.dtype == dtype
            torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-3)


class LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any op creates."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("loss", ["ce", "squentropy", "z"])
def test_never_materialises_the_logits(loss):
    n, d, v = 64, 16, 4096
    h, w, bias, y = data(n=n, d=d, v=v)
    with LargestTensor() as mode:
        linear_cross_entropy_loss(h, w, y, bias=bias, loss=loss, chunk_size=256, token_chunk=32).backward()
    # the largest tensors are weight's gradient (V x D) and one 32 x 256 tile
    assert mode.largest <= max(v * d, 32 * 256)
    assert mode.largest < n * v // 2
    with LargestTensor() as naive:
        unfused(h, w, y, bias=bias, loss=loss).backward()
    assert naive.largest >= n * v - 2 * n  # the counter does see materialised logits


def test_bad_input_is_rejected():
    h, w, bias, y = data()
    with pytest.raises(thrifty.InvalidInputError, match="loss"):
        linear_cross_entropy_loss(h, w, y, loss="mse")
    with pytest.raises(thrifty.InvalidInputError, match="reduction"):
        linear_cross_entropy_loss(h, w, y, reduction="avg")
    with pytest.raises(thrifty.InvalidInputError, match="outside"):
        linear_cross_entropy_loss(h, w, torch.full_like(y, 203))
    with pytest.raises(thrifty.InvalidInputError, match="shape"):
        linear_cross_entropy_loss(h, w, y[:-1])
    with pytest.raises(thrifty.InvalidInputError, match="last dimension"):
        linear_cross_entropy_loss(h[:, :-1], w, y)
    with pytest.raises(thrifty.InvalidInputError, match="dtype"):
        linear_cross_entropy_loss(h.double(), w, y)
    with pytest.raises(thrifty.InvalidInputError, match="integer"):
        linear_cross_entropy_loss(h, w, y.float())
    with pytest.raises(thrifty.InvalidInputError, match="bias"):
        linear_cross_entropy_loss(h, w, y, bias=bias[:-1])
    with pytest.raises(thrifty.InvalidInputError, match="chunk_size"):
        linear_cross_entropy_loss(h, w, y, chunk_size=0)
    with pytest.raises(thrifty.InvalidInputError, match="a must be > 0"):
        linear_cross_entropy_loss(h, w, y, loss="z", a=0.0)
    with pytest.raises(thrifty.InvalidInputError, match="2 classes"):
        linear_cross_entropy_loss(h, w[:1], torch.zeros_like(y), loss="squentropy")


# ----------------------------------------------------------------------------- GPU
def _cuda():
    from thrifty.torch._cuda import _runtime

    if not torch.cuda.is_available() or not _runtime.available():
        pytest.skip("needs a CUDA device and CuPy")
    return torch.device("cuda", torch.cuda.current_device())


@pytest.mark.gpu
@pytest.mark.parametrize("loss", ["ce", "squentropy", "z"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_matches_cpu_fallback(loss, dtype):
    dev = _cuda()
    h, w, bias, y = data(n=300, d=64, v=5003, dtype=dtype)
    hg, wg, bg = (t.detach().to(dev).requires_grad_(True) for t in (h, w, bias))
    kw = dict(loss=loss, chunk_size=1000, token_chunk=128)
    f_cpu = linear_cross_entropy_loss(h, w, y, bias=bias, **kw)
    f_gpu = linear_cross_entropy_loss(hg, wg, y.to(dev), bias=bg, **kw)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(f_gpu.cpu(), f_cpu, **tol)
    g_cpu = torch.autograd.grad(f_cpu, (h, w, bias))
    g_gpu = torch.autograd.grad(f_gpu, (hg, wg, bg))
    gtol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=3e-2, atol=3e-3)
    for a, b in zip(g_gpu, g_cpu):
        torch.testing.assert_close(a.cpu().float(), b.float(), **gtol)
    ref = unfused(hg.detach().cpu().to(dtype), wg.detach().cpu(), y, bias=bg.detach().cpu(), loss=loss)
    torch.testing.assert_close(f_gpu.cpu(), ref, **tol)


@pytest.mark.gpu
def test_gpu_memory_stays_below_the_logits():
    dev = _cuda()
    n, d, v = 4096, 256, 32768
    g = torch.Generator(device=dev).manual_seed(0)
    h = torch.randn(n, d, device=dev, generator=g, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(v, d, device=dev, generator=g, dtype=torch.bfloat16, requires_grad=True)
    y = torch.randint(0, v, (n,), device=dev, generator=g)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    linear_cross_entropy_loss(h, w, y, chunk_size=4096, token_chunk=1024).backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    logits_bytes = n * v * 2
    assert extra < logits_bytes / 2, (extra, logits_bytes)


# ------------------------------------------------- loss.cu on the CPU (host C++ build)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_host_kernels_match_fallback(monkeypatch, dtype):
    h, w, bias, y = data(n=11, d=8, v=301, dtype=dtype, ignored=(4,))
    for loss in ("ce", "squentropy", "z"):
        kw = dict(bias=bias, loss=loss, chunk_size=100, token_chunk=6)
        ref = linear_cross_entropy_loss(h, w, y, **kw)
        g_ref = torch.autograd.grad(ref, (h, w, bias))
        with monkeypatch.context() as m:
            cuda_host.patch(m)
            got = linear_cross_entropy_loss(h, w, y, **kw)
            g_got = torch.autograd.grad(got, (h, w, bias))
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        for a, b in zip(g_got, g_ref):
            tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-3)
            torch.testing.assert_close(a.float(), b.float(), **tol)
