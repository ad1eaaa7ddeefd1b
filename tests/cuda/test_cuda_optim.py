"""The CUDA backend's multi-tensor kernels (thrifty.torch._cuda.optim: device-side
reductions and fused steps) and the fused paths of SAM, DoG/LDoG and MoMo: CPU fallbacks against written-out formulas, the optimizers'
fused bookkeeping (forced onto CPU) against their plain path, kernels under ``-m gpu``."""

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import thrifty  # noqa: E402
from thrifty.torch._cuda import optim as fo  # noqa: E402
from thrifty.torch.optim import SAM, DoG, LDoG, MoMo  # noqa: E402
from thrifty.torch.optim import _fused  # noqa: E402

import cuda_host  # noqa: E402


def tensors(dtype=torch.float32, seed=0, shapes=((5, 3), (7,), (2, 2, 2))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(dtype) for s in shapes]


def test_multi_tensor_sum_matches_numpy():
    xs, ys = tensors(seed=1), tensors(seed=2)
    a = [x.double().numpy() for x in xs]
    b = [y.double().numpy() for y in ys]
    cases = [
        (dict(), [sum((x**2).sum() for x in a)]),
        (dict(ys=ys, op="dot"), [sum((x * y).sum() for x, y in zip(a, b))]),
        (dict(ys=ys, op="prodsq"), [sum(((x * y) ** 2).sum() for x, y in zip(a, b))]),
        (dict(ys=ys, c=-1.0, segments=[2, 1]), [sum(((x - y) ** 2).sum() for x, y in zip(a[:2], b[:2])),
                                                 ((a[2] - b[2]) ** 2).sum()]),
        (dict(ys=ys, c=0.5, segments=[1, 0, 2]), [((a[0] + 0.5 * b[0]) ** 2).sum(), 0.0,
                                                   sum(((x + 0.5 * y) ** 2).sum() for x, y in zip(a[1:], b[1:]))]),
    ]
    for kw, want in cases:
        got = fo.multi_tensor_sum(xs, kw.pop("ys", None), **kw)
        assert got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(fo.multi_tensor_sum(xs, sqrt=True).numpy(), np.sqrt(cases[0][1]), rtol=1e-6)
    assert fo.multi_tensor_sum([x.double() for x in xs]).dtype == torch.float64


def test_multi_tensor_sum_rejects_bad_input():
    xs = tensors()
    with pytest.raises(thrifty.InvalidInputError, match="empty"):
        fo.multi_tensor_sum([])
    with pytest.raises(thrifty.InvalidInputError, match="op"):
        fo.multi_tensor_sum(xs, xs, op="max")
    with pytest.raises(thrifty.InvalidInputError, match="needs ys"):
        fo.multi_tensor_sum(xs, op="dot")
    with pytest.raises(thrifty.InvalidInputError, match="equal shapes"):
        fo.multi_tensor_sum(xs, xs[::-1], op="dot")
    with pytest.raises(thrifty.InvalidInputError, match="segments"):
        fo.multi_tensor_sum(xs, segments=[1, 1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_perturb_matches_formula(dtype, adaptive):
    ws, gs = tensors(dtype, 3), tensors(dtype, 4)
    w0 = [w.clone() for w in ws]
    olds = [torch.empty_like(w) for w in ws]
    norm = torch.tensor(2.5)
    fo.sam_perturb_(ws, gs, olds, rho=0.1, adaptive=adaptive, grad_norm=norm)
    for w, w_0, g, o in zip(ws, w0, gs, olds):
        assert torch.equal(o, w_0)
        x, gg = w_0.float(), g.float()
        e = (x * x * gg if adaptive else gg) * (torch.tensor(0.1) / (norm + 1e-12))  # a true float32 division
        assert torch.equal(w, (x + e).to(dtype))


def test_dog_update_matches_formula():
    ws, gs = tensors(torch.bfloat16, 5), tensors(torch.bfloat16, 6)
    w0 = [w.float() for w in ws]
    etas = [torch.tensor(0.1), torch.tensor(0.2), torch.tensor(0.3)]
    fo.dog_update_(ws, gs, eta=etas, weight_decay=0.01)
    for w, x, g, e in zip(ws, w0, gs, etas):
        assert torch.equal(w, (x - e * (g.float() + 0.01 * x)).to(torch.bfloat16))


def test_momo_moments_and_update_match_formula():
    ws, gs, ds = tensors(seed=7), tensors(seed=8), tensors(seed=9)
    d0 = [d.clone() for d in ds]
    sums = fo.momo_moments_(ws, gs, ds, beta=0.9)
    assert sums.shape == (3, 3)
    for i, (w, g, d, d_0) in enumerate(zip(ws, gs, ds, d0)):
        want = 0.9 * d_0 + 0.1 * g
        torch.testing.assert_close(d, want)
        torch.testing.assert_close(sums[:, i], torch.stack([(w * g).sum(), (w * want).sum(), (want * want).sum()]))
    w0 = [w.clone() for w in ws]
    fo.momo_update_(ws, ds, tau=torch.tensor(0.05), c=1.1)
    for w, x, d in zip(ws, w0, ds):
        torch.testing.assert_close(w, (x - 0.05 * d) / 1.1)


# ------------------------------------------------------- optimizers: fused path vs plain
def problem(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(8, 4, generator=g)
    y = torch.randn(8, generator=g)
    init = [torch.randn(4, generator=g).to(dtype), torch.randn(1, generator=g).to(dtype)]

    def loss(ps):
        return ((a @ ps[0].float() + ps[1].float() - y) ** 2).mean() + 0.1

    return init, loss


def run(make_opt, steps, force, *, sam=False, momo=False, dtype=torch.float32):
    init, loss_fn = problem(dtype)
    ps = [torch.nn.Parameter(t.clone()) for t in init]
    opt = make_opt(ps)
    _fused.FORCE = force
    try:
        for _ in range(steps):
            opt.zero_grad()
            loss = loss_fn(ps)
            loss.backward()
            if sam:
                opt.first_step(zero_grad=True)
                loss_fn(ps).backward()
                opt.second_step()
            elif momo:
                opt.step(loss=loss)
            else:
                opt.step()
    finally:
        _fused.FORCE = False
    return ps, opt


OPTIMIZERS = {
    "sam": (lambda ps: SAM([{"params": ps[:1], "adaptive": True, "rho": 0.5}, {"params": ps[1:]}],
                           torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9), dict(sam=True)),
    "dog": (lambda ps: DoG(ps, weight_decay=0.01), {}),
    "dog_init_eta": (lambda ps: DoG([{"params": ps[:1]}, {"params": ps[1:], "init_eta": 1e-3}]), {}),
    "ldog": (lambda ps: LDoG(ps, reps_rel=1e-4, weight_decay=0.01), {}),
    "momo": (lambda ps: MoMo(ps, lr=0.5, weight_decay=0.01), dict(momo=True)),
    "momo_bc_fstar": (lambda ps: MoMo(ps, lr=0.5, bias_correction=True, use_fstar=True), dict(momo=True)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_path_matches_plain_path(name, dtype):
    make, kw = OPTIMIZERS[name]
    plain, opt_p = run(make, 6, False, dtype=dtype, **kw)
    fused, opt_f = run(make, 6, True, dtype=dtype, **kw)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    for a, b in zip(plain, fused):
        torch.testing.assert_close(b.detach().float(), a.detach().float(), **tol)
    sp, sf = opt_p.state_dict()["state"], opt_f.state_dict()["state"]
    assert sp.keys() == sf.keys()
    for k in sp:
        assert sp[k].keys() == sf[k].keys()


def test_fused_path_is_not_taken_on_cpu_by_default():
    assert not _fused.use_fused([torch.zeros(3)])
    assert not _fused.use_fused([])


# ----------------------------------------------------------------------------- GPU
def _cuda():
    from thrifty.torch._cuda import _runtime

    if not torch.cuda.is_available() or not _runtime.available():
        pytest.skip("needs a CUDA device and CuPy")
    return torch.device("cuda", torch.cuda.current_device())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_gpu_kernels_match_fallback(dtype):
    dev = _cuda()
    xs = tensors(dtype, 1, shapes=((1000, 300), (77,), (3, 5)))
    ys = tensors(dtype, 2, shapes=((1000, 300), (77,), (3, 5)))
    xg, yg = [x.to(dev) for x in xs], [y.to(dev) for y in ys]
    for kw in (dict(), dict(op="dot"), dict(op="prodsq"), dict(c=-1.0, segments=[1, 2], sqrt=True)):
        a = fo.multi_tensor_sum(xs, ys if kw else None, **kw)
        b = fo.multi_tensor_sum(xg, yg if kw else None, **kw)
        torch.testing.assert_close(b.cpu(), a.float(), rtol=1e-4, atol=1e-4)
    norm = torch.tensor(3.0)
    olds_c, olds_g = [torch.empty_like(x) for x in xs], [torch.empty_like(x) for x in xg]
    fo.sam_perturb_(xs, ys, olds_c, rho=0.05, adaptive=True, grad_norm=norm)
    fo.sam_perturb_(xg, yg, olds_g, rho=0.05, adaptive=True, grad_norm=norm.to(dev))
    for a, b in zip(xs + olds_c, xg + olds_g):
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=0)
    fo.dog_update_(xs, ys, eta=torch.tensor(0.1), weight_decay=0.01)
    fo.dog_update_(xg, yg, eta=torch.tensor(0.1, device=dev), weight_decay=0.01)
    ds = [torch.zeros(x.shape) for x in xs]
    dg = [d.to(dev) for d in ds]
    sc = fo.momo_moments_(xs, ys, ds, beta=0.9)
    sg = fo.momo_moments_(xg, yg, dg, beta=0.9)
    torch.testing.assert_close(sg.cpu(), sc, rtol=1e-4, atol=1e-4)
    fo.momo_update_(xs, ds, tau=torch.tensor(0.2), c=1.01)
    fo.momo_update_(xg, dg, tau=torch.tensor(0.2, device=dev), c=1.01)
    # element-wise steps are bit-identical to the fallback (no fused multiply-adds on either side)
    for a, b in zip(xs + ds, xg + dg):
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_gpu_optimizers_match_cpu(name):
    dev = _cuda()
    make, kw = OPTIMIZERS[name]
    init, _ = problem()
    g = torch.Generator().manual_seed(0)
    a, y = torch.randn(8, 4, generator=g), torch.randn(8, generator=g)
    results = []
    for device in ("cpu", dev):
        ps = [torch.nn.Parameter(t.clone().to(device)) for t in init]
        ad, yd = a.to(device), y.to(device)
        opt = make(ps)
        lf = lambda: ((ad @ ps[0] + ps[1] - yd) ** 2).mean() + 0.1  # noqa: E731
        for _ in range(6):
            opt.zero_grad()
            loss = lf()
            loss.backward()
            if kw.get("sam"):
                opt.first_step(zero_grad=True)
                lf().backward()
                opt.second_step()
            elif kw.get("momo"):
                opt.step(loss=loss)
            else:
                opt.step()
        results.append([p.detach().cpu() for p in ps])
    for c, d in zip(*results):
        torch.testing.assert_close(d, c, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("cls", [DoG, LDoG])
def test_gpu_bf16_dog_moves_and_matches_cpu(cls):
    """bfloat16 parameters step a float32 master copy on the fused path too."""
    dev = _cuda()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=g), torch.randn(64, 1, generator=g)
    results = []
    for device in ("cpu", dev):
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 1).to(device=device, dtype=torch.bfloat16)
        before = [p.detach().clone() for p in model.parameters()]
        opt = cls(model.parameters())
        xd, yd = x.to(device, torch.bfloat16), y.to(device)
        for _ in range(200):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(xd).float(), yd).backward()
            opt.step()
        assert all(bool((p != b).all()) for p, b in zip(model.parameters(), before))
        results.append([p.detach().float().cpu() for p in model.parameters()])
    for c, d in zip(*results):
        torch.testing.assert_close(d, c, rtol=2e-2, atol=2e-2)


@pytest.mark.gpu
def test_gpu_dog_step_captures_in_a_cuda_graph():
    dev = _cuda()
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 8).to(dev)
    x, y = torch.randn(32, 64, device=dev), torch.randn(32, 8, device=dev)
    opt = DoG(model.parameters())
    eager = torch.nn.Linear(64, 8).to(dev)
    eager.load_state_dict(model.state_dict())
    opt_e = DoG(eager.parameters())

    def train_step(m, o):
        o.zero_grad(set_to_none=False)
        torch.nn.functional.mse_loss(m(x), y).backward()
        o.step()

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm up on a side stream (state exists, kernels compiled)
        for _ in range(3):
            train_step(model, opt)
    torch.cuda.current_stream().wait_stream(s)
    for _ in range(3):
        train_step(eager, opt_e)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=False)
    with torch.cuda.graph(graph):
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    for _ in range(4):
        for p in model.parameters():
            p.grad.zero_()
        graph.replay()
        opt_e.zero_grad(set_to_none=False)
        torch.nn.functional.mse_loss(eager(x), y).backward()
        opt_e.step()
    torch.cuda.synchronize()
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


# ------------------------------------------------ optim.cu on the CPU (host C++ build)
def _sam_dog_momo(xs, ys):
    """A SAM perturbation, a DoG update and MoMo's moments and update, in place on
    ``xs``; returns (SAM's saved values, MoMo's direction buffers, MoMo's sums)."""
    olds = [torch.empty_like(x) for x in xs]
    fo.sam_perturb_(xs, ys, olds, rho=0.05, adaptive=True, grad_norm=torch.tensor(3.0))
    fo.dog_update_(xs, ys, eta=[torch.tensor(0.1)] * len(xs), weight_decay=0.01)
    d = [torch.zeros(x.shape) for x in xs]
    sums = fo.momo_moments_(xs, ys, d, beta=0.9)
    fo.momo_update_(xs, d, tau=torch.tensor(0.2), c=1.01)
    return olds, d, sums


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_host_kernels_match_fallback(monkeypatch, dtype):
    shapes = ((300,), (7, 5), (3,))
    xs, ys = tensors(dtype, 1, shapes), tensors(dtype, 2, shapes)
    kx, ky = [x.clone() for x in xs], [y.clone() for y in ys]
    with monkeypatch.context() as m:
        cuda_host.patch(m)
        for kw in (dict(), dict(op="dot"), dict(op="prodsq"), dict(c=-1.0, segments=[1, 2], sqrt=True)):
            a = fo.multi_tensor_sum(xs, ys if kw else None, **kw)
            m.undo()
            b = fo.multi_tensor_sum(xs, ys if kw else None, **kw)
            cuda_host.patch(m)
            torch.testing.assert_close(a, b.float(), rtol=1e-5, atol=1e-5)
        olds, dk, sk = _sam_dog_momo(kx, ky)
    olds_c, dc, sc = _sam_dog_momo(xs, ys)
    torch.testing.assert_close(sk, sc, rtol=1e-5, atol=1e-5)
    # element-wise steps: the same operations, each rounded once, in every dtype
    for a, b in zip(kx + olds + dk, xs + olds_c + dc):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["sam", "ldog", "momo"])
def test_host_kernels_in_the_optimizers(monkeypatch, name):
    make, kw = OPTIMIZERS[name]
    plain, _ = run(make, 4, False, **kw)
    with monkeypatch.context() as m:
        cuda_host.patch(m)
        fused, _ = run(make, 4, True, **kw)
    for a, b in zip(plain, fused):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ torch.compile
def test_fused_functions_compile_without_graph_breaks():
    def f(xs, gs, ds):
        n = fo.multi_tensor_sum(gs, sqrt=True)
        fo.dog_update_(xs, gs, eta=n[0] * 0.1, weight_decay=0.01)
        s = fo.momo_moments_(xs, gs, ds, beta=0.9)
        fo.momo_update_(xs, ds, tau=s[2].sum(), c=1.01)
        fo.sam_perturb_(xs, gs, [torch.empty_like(x) for x in xs], rho=0.1, adaptive=True, grad_norm=n[0])
        return n

    xs, gs, ds = tensors(seed=1), tensors(seed=2), [torch.zeros(s) for s in ((5, 3), (7,), (2, 2, 2))]
    xe, de = [x.clone() for x in xs], [d.clone() for d in ds]
    ref = f(xe, gs, de)
    out = torch.compile(f, backend="aot_eager", fullgraph=True)(xs, gs, ds)
    torch.testing.assert_close(out, ref)
    for a, b in zip(xs + ds, xe + de):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["dog", "momo"])
def test_fused_optimizer_step_compiles_as_one_graph(monkeypatch, name):
    monkeypatch.setattr(_fused, "FORCE", True)
    gen = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(4, generator=gen)), torch.nn.Parameter(torch.randn(3, generator=gen))]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    make = (lambda v: DoG(v)) if name == "dog" else (lambda v: MoMo(v))
    o1, o2 = make(ps), make(qs)
    loss = torch.tensor(1.0)
    step = (lambda o: o.step()) if name == "dog" else (lambda o: o.step(loss=loss))
    for p, q in zip(ps, qs):
        p.grad = torch.linspace(-1, 1, p.numel())
        q.grad = p.grad.clone()
    step(o1)
    step(o2)  # the first step creates the state eagerly
    compiled = torch.compile(lambda: step(o2), backend="aot_eager", fullgraph=True)
    for _ in range(3):
        step(o1)
        compiled()
    for p, q in zip(ps, qs):
        torch.testing.assert_close(q, p)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["dog", "momo"])
def test_gpu_fused_optimizer_step_compiles_as_one_graph(name):
    dev = _cuda()
    gen = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(400, generator=gen).to(dev)), torch.nn.Parameter(torch.randn(3).to(dev))]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    make = (lambda v: DoG(v)) if name == "dog" else (lambda v: MoMo(v))
    o1, o2 = make(ps), make(qs)
    loss = torch.tensor(1.0, device=dev)
    step = (lambda o: o.step()) if name == "dog" else (lambda o: o.step(loss=loss))
    for p, q in zip(ps, qs):
        p.grad = torch.linspace(-1, 1, p.numel(), device=dev)
        q.grad = p.grad.clone()
    step(o1)
    step(o2)
    compiled = torch.compile(lambda: step(o2), fullgraph=True)
    for _ in range(3):
        step(o1)
        compiled()
    for p, q in zip(ps, qs):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


# ------------------------------------- multi-tensor launches: fixed order, count, cache
def _ref_block_partials(a, b, op, c):
    """The fixed order of one reduction over a tensor, written out in numpy float32:
    min(1024, ceil(n / 256)) blocks of 256 threads, thread t of block k adding elements
    k 256 + t, then + blocks 256 ..., then a tree over the block's threads."""
    n = a.size
    nb = max(1, min(1024, -(-n // 256)))
    c = np.float32(c)
    out = []
    for k in range(nb):
        acc = np.zeros(256, np.float32)
        i = k * 256 + np.arange(256)
        while (i < n).any():
            m = i < n
            x, y = a[i[m]], b[i[m]]
            if op == 0:
                t = x + c * y if c != 0 else x
                v = t * t
            elif op == 1:
                v = x * y
            else:
                t = x * y
                v = t * t
            acc[m] = acc[m] + v
            i = i + nb * 256
        out.append(_tree(acc))
    return out


def _tree(acc):
    acc = acc.copy()
    w = 128
    while w:
        acc[:w] = acc[:w] + acc[w:2 * w]
        w //= 2
    return acc[0]


def _ref_segment_sums(parts, offsets):
    out = []
    for s in range(len(offsets) - 1):
        acc = np.zeros(256, np.float32)
        for j, v in enumerate(parts[offsets[s]:offsets[s + 1]]):
            acc[j % 256] = acc[j % 256] + v
        out.append(_tree(acc))
    return np.array(out, np.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_host_multi_tensor_sum_keeps_the_fixed_order_bit_for_bit(monkeypatch, dtype):
    """One launch over all tensors sums in the order of one launch per tensor."""
    shapes = ((1000,), (7, 5), (300,), (3,))
    xs, ys = tensors(dtype, 11, shapes), tensors(dtype, 12, shapes)
    a = [x.float().numpy().ravel() for x in xs]
    b = [y.float().numpy().ravel() for y in ys]
    cuda_host.patch(monkeypatch)
    for op, c, seg in ((0, 0.0, [4]), (0, -1.0, [1, 3]), (1, 0.0, [2, 0, 2]), (2, 0.0, [1, 1, 1, 1])):
        got = fo.multi_tensor_sum(xs, ys, op=("sumsq", "dot", "prodsq")[op], c=c, segments=seg)
        parts = [p for x, y in zip(a, b) for p in _ref_block_partials(x, y, op, c)]
        starts = np.cumsum([0] + [len(_ref_block_partials(x, y, op, c)) for x, y in zip(a, b)])
        bounds = np.cumsum([0] + seg)
        want = _ref_segment_sums(np.array(parts, np.float32), [int(starts[i]) for i in bounds])
        np.testing.assert_array_equal(got.numpy(), want)


def test_host_momo_moments_keep_the_fixed_order_bit_for_bit(monkeypatch):
    shapes = ((600,), (9,))
    ws, gs, ds = tensors(torch.float32, 1, shapes), tensors(torch.float32, 2, shapes), tensors(torch.float32, 3, shapes)
    d_new = [(d.numpy() * np.float32(0.9) + g.numpy() * (np.float32(1) - np.float32(0.9))).astype(np.float32)
             for d, g in zip(ds, gs)]
    cuda_host.patch(monkeypatch)
    sums = fo.momo_moments_(ws, gs, ds, beta=0.9)
    for i, (w, g, d) in enumerate(zip(ws, gs, d_new)):
        np.testing.assert_array_equal(ds[i].numpy(), d)
        x = w.numpy()
        for row, (u, v) in enumerate(((x, g.numpy()), (x, d), (d, d))):
            parts = np.array(_ref_block_partials(u, v, 1, 0.0), np.float32)
            want = _ref_segment_sums(parts, [0, len(parts)])[0]
            assert sums[row, i].item() == want


def test_host_mixed_dtypes_take_one_launch_per_dtype(monkeypatch):
    shapes = ((300,), (20,), (9000,), (5,))
    dts = (torch.float32, torch.bfloat16, torch.float32, torch.float16)
    xs = [t.to(d) for t, d in zip(tensors(torch.float32, 1, shapes), dts)]
    ys = [t.to(d) for t, d in zip(tensors(torch.float32, 2, shapes), dts)]
    kx, ky = [x.clone() for x in xs], [y.clone() for y in ys]
    names = []
    with monkeypatch.context() as m:
        cuda_host.patch(m)
        m.setattr(fo._rt, "_submit", lambda file, name, *a: (names.append(name), cuda_host.submit(file, name, *a)))
        etas = [torch.tensor(0.1 * (i + 1)) for i in range(4)]  # one step size per tensor (LDoG)
        fo.dog_update_(kx, ky, eta=etas, weight_decay=0.01)
        assert names == ["dog_update_f32", "dog_update_bf16", "dog_update_f16"]
        olds_k, dk, sk = _sam_dog_momo(kx, ky)
    fo.dog_update_(xs, ys, eta=etas, weight_decay=0.01)
    olds_c, dc, sc = _sam_dog_momo(xs, ys)
    for a, b in zip(kx + olds_k + dk, xs + olds_c + dc):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(sk, sc, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [DoG, LDoG])
def test_host_dog_step_launches_do_not_grow_with_the_tensors(monkeypatch, cls):
    """A fused DoG step issues O(1) kernel launches, not O(tensors), and a steady-state
    step finds every tensor table cached (nothing uploaded). With 4 tensors the launches
    run in the host build and the step matches the plain path; with 100 they are only
    counted."""
    counts = {}
    for n in (4, 100):
        gen = torch.Generator().manual_seed(n)
        ps = [torch.nn.Parameter(torch.randn(3, generator=gen)) for _ in range(n)]
        qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
        for p, q in zip(ps, qs):
            p.grad = torch.randn(3, generator=gen)
            q.grad = p.grad.clone()
        o_plain, o_fused = cls(ps, weight_decay=0.01), cls(qs, weight_decay=0.01)
        launched = []
        run = cuda_host.submit if n == 4 else (lambda *a: None)
        for step in range(3):
            o_plain.step()
            with monkeypatch.context() as m:
                cuda_host.patch(m)
                m.setattr(_fused, "FORCE", True)
                m.setattr(fo._rt, "_submit", lambda *a: (launched.append(a[1]), run(*a)))
                tables = dict(fo._TABLES)
                o_fused.step()
            if step == 1:
                counts[n] = len(launched)
            if step == 2:
                assert len(launched) == 2 * counts[n]
                assert all(fo._TABLES.get(k) is v for k, v in tables.items())  # cached, not rebuilt
                assert len(fo._TABLES) == len(tables)  # nothing new
            launched.clear() if step == 0 else None
        if n == 4:
            for p, q in zip(ps, qs):
                torch.testing.assert_close(q.detach(), p.detach(), rtol=1e-5, atol=1e-6)
    assert counts[4] == counts[100] == (5 if cls is DoG else 7), counts


@pytest.mark.gpu
def test_gpu_dog_step_is_a_few_launches_over_cached_tables(monkeypatch):
    """100 tensors: a DoG step launches 5 kernels and, once warm, uploads no table."""
    dev = _cuda()
    ps = [torch.nn.Parameter(torch.randn(1000 + i, device=dev)) for i in range(100)]
    for p in ps:
        p.grad = torch.randn_like(p)
    qs = [torch.nn.Parameter(p.detach().cpu().clone()) for p in ps]
    for p, q in zip(ps, qs):
        q.grad = p.grad.cpu()
    opt, ref = DoG(ps, weight_decay=0.01), DoG(qs, weight_decay=0.01)
    launched = []
    real = fo._rt._submit
    monkeypatch.setattr(fo._rt, "_submit", lambda *a: (launched.append(a[1]), real(*a)))
    for step in range(3):
        tables = dict(fo._TABLES)
        launched.clear()
        opt.step()
        ref.step()
    assert len(launched) == 5, launched
    assert all(fo._TABLES.get(k) is v for k, v in tables.items()) and len(fo._TABLES) == len(tables)
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p.detach().cpu(), q.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_gpu_mixed_dtypes_match_fallback():
    dev = _cuda()
    shapes = ((3000,), (20,), (90000,), (5,))
    dts = (torch.float32, torch.bfloat16, torch.float32, torch.float16)
    xs = [t.to(d) for t, d in zip(tensors(torch.float32, 1, shapes), dts)]
    ys = [t.to(d) for t, d in zip(tensors(torch.float32, 2, shapes), dts)]
    xg, yg = [x.to(dev) for x in xs], [y.to(dev) for y in ys]
    etas = [torch.tensor(0.1 * (i + 1)) for i in range(4)]
    fo.dog_update_(xs, ys, eta=etas, weight_decay=0.01)
    fo.dog_update_(xg, yg, eta=[e.to(dev) for e in etas], weight_decay=0.01)
    for a, b in zip(xs, xg):
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("warm", [True, False])
def test_gpu_multi_tensor_step_in_a_cuda_graph(warm):
    """Warmed up, the step's tables are cached before capture and kept for the graph's
    replays. Cold (a table first needed during capture), the pinned, non-blocking upload
    is either captured and replays correctly, or refused with a clear error."""
    dev = _cuda()
    ws = [torch.randn(5000 + i, device=dev) for i in range(7)]
    gs = [torch.randn_like(w) for w in ws]
    eta = torch.tensor(0.01, device=dev)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # kernels compiled (and, warm, the tables built) outside capture
        if warm:
            fo.dog_update_(ws, gs, eta=eta)
        else:
            fo.dog_update_([torch.zeros(3, device=dev)], [torch.zeros(3, device=dev)], eta=eta)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    ref = [w.cpu().clone() for w in ws]
    fo._KEEP.clear()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fo.dog_update_(ws, gs, eta=eta)
    except thrifty.ThriftyError as e:
        assert not warm and "warm-up" in str(e)
        print("cold capture refused:", e)
        return
    assert fo._KEEP  # used during capture: never evicted
    for _ in range(3):
        graph.replay()
        for r, g in zip(ref, gs):
            r.sub_(0.01 * g.cpu())
    torch.cuda.synchronize()
    for w, r in zip(ws, ref):
        torch.testing.assert_close(w.cpu(), r, rtol=1e-5, atol=1e-6)


def test_fused_ldog_keeps_its_per_tensor_state_in_two_vectors(monkeypatch):
    """LDoG's fused step updates every tensor's rbar and G with one operation each (the
    per-tensor state entries are views of two vectors); a loaded state dict breaks the
    views once and gives the same steps."""
    monkeypatch.setattr(_fused, "FORCE", True)
    gen = torch.Generator().manual_seed(3)
    ps = [torch.nn.Parameter(torch.randn(5, generator=gen)) for _ in range(6)]
    grads = [[torch.randn(5, generator=gen) for _ in ps] for _ in range(5)]
    opt = LDoG(ps, weight_decay=0.01)
    for k in range(3):
        for p, g in zip(ps, grads[k]):
            p.grad = g.clone()
        opt.step()
    rbar, G = opt._stacked(ps)
    assert rbar.shape == G.shape == (6,)
    assert torch.equal(rbar, torch.stack([opt.state[p]["rbar"] for p in ps]))
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    opt2 = LDoG(qs, weight_decay=0.01)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf))
    assert opt2._stacked(qs) is None  # loaded from a file: restacked by the next step
    for k in (3, 4):
        for p, q, g in zip(ps, qs, grads[k]):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        opt2.step()
        assert opt2._stacked(qs) is not None
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)


def test_host_sam_fused_steps_reuse_their_buffers_and_tables(monkeypatch):
    """SAM's fused first step saves the weights into the same buffers every step, so
    its multi-tensor tables stay cached; the steps match the plain path."""
    make, kw = OPTIMIZERS["sam"]
    plain, _ = run(make, 3, False, **kw)
    with monkeypatch.context() as m:
        cuda_host.patch(m)
        init, loss_fn = problem()
        ps = [torch.nn.Parameter(t.clone()) for t in init]
        opt = make(ps)
        m.setattr(_fused, "FORCE", True)
        seen = []
        for _ in range(3):
            opt.zero_grad()
            loss_fn(ps).backward()
            opt.first_step(zero_grad=True)
            loss_fn(ps).backward()
            opt.second_step()
            seen.append((dict(fo._TABLES), {id(p): b.data_ptr() for p, b in opt._old_bufs.items()}))
    assert seen[1][1] == seen[2][1]  # the same buffers
    assert all(fo._TABLES.get(k) is v for k, v in seen[1][0].items())
    for a, b in zip(plain, ps):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-6)


def test_fused_momo_keeps_its_per_tensor_averages_in_one_vector(monkeypatch):
    from thrifty.torch.optim._common import stacked_views

    monkeypatch.setattr(_fused, "FORCE", True)
    make, kw = OPTIMIZERS["momo"]
    ps, opt = run(make, 3, True, **kw)
    states = [opt.state[p] for p in ps]
    vec = stacked_views(states, "grad_dot_w")
    assert vec is not None and vec.shape == (len(ps),)
    assert torch.equal(vec, torch.stack([st["grad_dot_w"] for st in states]))
    plain, _ = run(make, 3, False, **kw)
    for a, b in zip(plain, ps):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-6)
