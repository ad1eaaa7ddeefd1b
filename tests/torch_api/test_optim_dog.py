import pytest

torch = pytest.importorskip("torch")

from _optim_problem import Problem, roundtrip  # noqa: E402

import thrifty  # noqa: E402
from thrifty.torch.optim import LDoG, DoG, PolynomialDecayAverager  # noqa: E402


@pytest.fixture
def problem():
    return Problem()


def reference_dog(problem, steps, groups, *, layerwise, reps_rel=1e-6, eps=1e-8, wd=0.0, lr=1.0, init_eta=None):
    """The paper's rule written out: ``groups`` lists indices of problem.init[:2] per group."""
    x = [t.clone() for t in problem.init]  # index 2 never has a gradient
    x0 = [t.clone() for t in x]
    blocks = [[i] for grp in groups for i in grp] if layerwise else groups
    reps = 0.0 if init_eta is not None else reps_rel
    rbar = {}
    G = {}
    for k in range(steps):
        batch = torch.arange(k % 4, 16, 2)
        g, _ = problem.grads(x, batch)
        g = g + [None]
        g = [gi + wd * xi if gi is not None else None for gi, xi in zip(g, x)]
        new = list(x)
        for b, idx in enumerate(blocks):
            gsq = sum(float((g[i] ** 2).sum()) for i in idx if g[i] is not None)
            if k == 0:
                rbar[b] = reps * (1 + sum(float((x[i] ** 2).sum()) for i in idx) ** 0.5)
                G[b] = eps + gsq
            else:
                d = sum(float(((x[i] - x0[i]) ** 2).sum()) for i in idx) ** 0.5
                rbar[b] = max(rbar[b], d)
                G[b] += gsq
            eta = lr * rbar[b] / G[b] ** 0.5
            if k == 0 and init_eta is not None:
                eta = init_eta
            for i in idx:
                if g[i] is not None:
                    new[i] = x[i] - eta * g[i]
        x = new
    return x


def run(problem, params, opt, steps, start=0):
    for k in range(start, start + steps):
        opt.zero_grad()
        problem.backward(params, torch.arange(k % 4, 16, 2))
        opt.step()


@pytest.mark.parametrize("cls", [DoG, LDoG])
@pytest.mark.parametrize("kw", [{}, {"weight_decay": 0.1, "reps_rel": 1e-3}, {"init_eta": 0.05}])
def test_dog_matches_reference(problem, cls, kw):
    params = problem.params()
    opt = cls([{"params": [params[0], params[2]]}, {"params": [params[1]]}], **kw)
    run(problem, params, opt, 12)
    ref = reference_dog(
        problem,
        12,
        [[0, 2], [1]],
        layerwise=cls is LDoG,
        reps_rel=kw.get("reps_rel", 1e-6),
        wd=kw.get("weight_decay", 0.0),
        init_eta=kw.get("init_eta"),
    )
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.detach(), r, rtol=1e-10, atol=1e-12)
    assert not torch.equal(params[0].detach(), problem.init[0])


def test_dog_one_group_differs_from_ldog(problem):
    a, b = problem.params(), problem.params()
    run(problem, a, DoG(a), 5)
    run(problem, b, LDoG(b), 5)
    assert not torch.equal(a[0].detach(), b[0].detach())


@pytest.mark.parametrize("cls", [DoG, LDoG])
def test_dog_state_dict_roundtrip_resumes(problem, cls, tmp_path):
    params = problem.params()
    opt = cls(params, reps_rel=1e-4)
    run(problem, params, opt, 4)
    sd = roundtrip(opt, tmp_path)
    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = cls(params2)
    opt2.load_state_dict(sd)
    run(problem, params, opt, 4, start=4)
    run(problem, params2, opt2, 4, start=4)
    for p, q in zip(params, params2):
        assert torch.equal(p.detach(), q.detach())


def test_dog_bf16_arithmetic_in_fp32(problem):
    p = torch.nn.Parameter(problem.init[0].to(torch.bfloat16))
    g = torch.randn(p.shape, generator=torch.Generator().manual_seed(1))
    p.grad = g.to(torch.bfloat16)
    x = p.detach().float()
    opt = DoG([p], reps_rel=1e-2)
    opt.step()
    eta = 1e-2 * (1 + x.norm()) / torch.sqrt((p.grad.float() ** 2).sum() + 1e-8)
    assert torch.equal(p.detach(), (x - eta * p.grad.float()).to(torch.bfloat16))
    assert opt.state[p]["rbar"].dtype == torch.float32


def test_dog_non_contiguous(problem):
    a = torch.nn.Parameter(problem.init[0].clone().T.contiguous().T)
    b = torch.nn.Parameter(problem.init[0].clone())
    for p in (a, b):
        opt = LDoG([p])
        for _ in range(3):
            p.grad = torch.sin(p.detach() * 3)
            opt.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-14, atol=1e-14)


def test_dog_rejects_bad_arguments(problem):
    params = problem.params()
    for kw, name in [
        ({"lr": 0.0}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"reps_rel": 0.0}, "reps_rel"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"init_eta": 0.0}, "init_eta"),
    ]:
        with pytest.raises(thrifty.InvalidInputError, match=name):
            DoG(params, **kw)
    opt = DoG(params)
    with pytest.raises(ValueError, match="reps_rel"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "reps_rel": -1.0})


def test_polynomial_decay_averager_matches_formula(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)).double()
    avg = PolynomialDecayAverager(model, gamma=8)
    snapshots = []
    for _ in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(4, 3, dtype=torch.float64))
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        avg.step()
    key = "0.weight"
    ref = snapshots[0][key]
    for t, sd in enumerate(snapshots[1:], start=2):
        w = 9 / (8 + t)
        ref = (1 - w) * ref + w * sd[key]
    torch.testing.assert_close(avg.averaged_model.state_dict()[key], ref, rtol=1e-14, atol=1e-14)
    assert int(avg.averaged_model[1].num_batches_tracked) == 5
    uniform = PolynomialDecayAverager(model, gamma=0)
    path = tmp_path / "avg.pt"
    torch.save(avg.state_dict(), path)
    uniform.load_state_dict(torch.load(path, weights_only=True))
    assert uniform.t == 6 and uniform.gamma == 8
    with pytest.raises(thrifty.InvalidInputError):
        uniform.load_state_dict({})
    with pytest.raises(thrifty.InvalidInputError, match="gamma"):
        PolynomialDecayAverager(model, gamma=-1)


def _regression(dtype, cls, steps=300, seed=0):
    """A linear regression trained with DoG/LDoG at the default reps_rel in ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(64, 8, generator=g)
    w_true = torch.randn(1, 8, generator=g)
    Y = X @ w_true.T + 0.1 * torch.randn(64, 1, generator=g)
    model = torch.nn.Linear(8, 1)
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, 8, generator=g))
        model.bias.zero_()
    model = model.to(dtype)
    init = [p.detach().clone() for p in model.parameters()]
    opt = cls(model.parameters())
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(X.to(dtype)).float(), Y)
        loss.backward()
        opt.step()
    return init, [p.detach() for p in model.parameters()], float(loss.detach()), opt


@pytest.mark.parametrize("cls", [DoG, LDoG])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_parameters_move_and_track_the_float32_run(cls, dtype):
    init, got, loss, opt = _regression(dtype, cls)
    _, want, loss32, _ = _regression(torch.float32, cls)
    moved = sum(int((a != b).sum()) for a, b in zip(init, got))
    assert moved == sum(a.numel() for a in init)  # every element moved
    for a, b in zip(got, want):
        torch.testing.assert_close(a.float(), b, rtol=0.02, atol=0.02)
    assert loss < 2 * loss32 + 1e-3
    st = opt.state[next(iter(opt.param_groups[0]["params"]))]
    assert st["x0"].dtype == torch.float32 and st["x32"].dtype == torch.float32
    assert torch.equal(st["x32"].to(dtype), got[0])


def test_half_precision_fused_path_matches_plain_path():
    from thrifty.torch.optim import _fused

    runs = []
    for force in (False, True):
        _fused.FORCE = force
        try:
            runs.append(_regression(torch.bfloat16, DoG, steps=40)[1])
        finally:
            _fused.FORCE = False
    for a, b in zip(*runs):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-2, atol=1e-2)


def test_matches_the_dog_optimizer_reference_when_installed():
    dog = pytest.importorskip("dog", reason="dog-optimizer is not installed (CI installs it)")
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g)
    runs = []
    for make in (lambda ps: DoG(ps), lambda ps: dog.DoG(ps)):
        model = torch.nn.Linear(4, 1)
        with torch.no_grad():
            model.weight.copy_(torch.linspace(-1, 1, 4)[None])
            model.bias.fill_(0.5)
        opt = make(model.parameters())
        for _ in range(20):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(X), Y).backward()
            opt.step()
        runs.append([p.detach() for p in model.parameters()])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [DoG, LDoG])
def test_half_precision_state_dict_roundtrip_keeps_float32_state(cls, tmp_path):
    g = torch.Generator().manual_seed(3)
    X, Y = torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g)

    def run(model, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(X.bfloat16()).float(), Y).backward()
            opt.step()

    torch.manual_seed(0)
    a = torch.nn.Linear(4, 1).to(torch.bfloat16)
    b = torch.nn.Linear(4, 1).to(torch.bfloat16)
    b.load_state_dict(a.state_dict())
    opt_a = cls(a.parameters())
    run(a, opt_a, 30)
    sd = roundtrip(opt_a, tmp_path)
    opt_b = cls(b.parameters())
    b.load_state_dict(a.state_dict())
    opt_b.load_state_dict(sd)
    for p in b.parameters():
        st = opt_b.state[p]
        assert st["x0"].dtype == torch.float32 and st["x32"].dtype == torch.float32
        if "rbar" in st:
            assert st["rbar"].dtype == torch.float32 and st["G"].dtype == torch.float32
    run(a, opt_a, 30)
    run(b, opt_b, 30)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
