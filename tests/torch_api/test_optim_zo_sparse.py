"""MeZO, Global Sparse Momentum SGD and gradient noise against written-out references."""

import math

import pytest

torch = pytest.importorskip("torch")

from _optim_problem import Problem, roundtrip  # noqa: E402

import thrifty  # noqa: E402
from thrifty.torch.optim import GlobalSparseMomentumSGD, GradientNoise, MeZO  # noqa: E402
from thrifty.torch.optim._rng import step_generator  # noqa: E402


@pytest.fixture
def problem():
    return Problem()


def mezo_closure(problem, params, k):
    return lambda: problem.loss(params, torch.arange(k % 4, 16, 2))


def test_mezo_matches_reference(problem):
    params = problem.params()[:2]
    opt = MeZO([{"params": params[:1], "weight_decay": 0.1}, {"params": params[1:]}], lr=1e-2, eps=1e-3, seed=5)
    x = [t.clone() for t in problem.init[:2]]
    wds = [0.1, 0.0]
    for k in range(5):
        loss = opt.step(mezo_closure(problem, params, k))
        gen = step_generator(5, k)
        z = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in x]
        batch = torch.arange(k % 4, 16, 2)
        lp = problem.loss([xi + 1e-3 * zi for xi, zi in zip(x, z)], batch)
        lm = problem.loss([xi - 1e-3 * zi for xi, zi in zip(x, z)], batch)
        torch.testing.assert_close(loss, lp, rtol=1e-12, atol=0)
        pg = (lp - lm) / 2e-3
        x = [xi - 1e-2 * (pg * zi + wd * xi) for xi, zi, wd in zip(x, z, wds)]
    for p, r in zip(params, x):
        torch.testing.assert_close(p.detach(), r, rtol=1e-9, atol=1e-11)


def test_mezo_projected_grad_is_directional_derivative():
    A = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    w0 = w.detach().clone()
    opt = MeZO([w], lr=0.0, eps=1e-3, seed=1)
    opt.step(lambda: (A @ w).pow(2).sum())
    z = torch.randn(4, generator=step_generator(1, 0), dtype=torch.float64)
    grad = 2 * A.T @ (A @ w0)
    torch.testing.assert_close(opt.state[w]["projected_grad"], grad @ z, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(w.detach(), w0, rtol=0, atol=1e-15)  # perturbations undone


def test_mezo_reproducible_resumable_and_leaves_global_rng(problem, tmp_path):
    runs = []
    for _ in range(2):
        params = problem.params()[:2]
        opt = MeZO(params, lr=1e-2, seed=3)
        torch.manual_seed(123)
        for k in range(3):
            opt.step(mezo_closure(problem, params, k))
        assert torch.equal(torch.rand(1), torch.manual_seed(123) and torch.rand(1))
        runs.append((params, opt))
    (a, oa), (b, _) = runs
    for p, q in zip(a, b):
        assert torch.equal(p, q)
    sd = roundtrip(oa, tmp_path)
    c = [torch.nn.Parameter(p.detach().clone()) for p in a]
    oc = MeZO(c, lr=1e-2, seed=3)
    oc.load_state_dict(sd)
    for k in range(3, 5):
        oa.step(mezo_closure(problem, a, k))
        oc.step(mezo_closure(problem, c, k))
    for p, q in zip(a, c):
        assert torch.equal(p, q)


def test_mezo_rejects_bad_arguments(problem):
    params = problem.params()
    with pytest.raises(thrifty.InvalidInputError, match="lr"):
        MeZO(params, lr=-1.0)
    with pytest.raises(thrifty.InvalidInputError, match="eps"):
        MeZO(params, lr=1.0, eps=0.0)
    with pytest.raises(thrifty.InvalidInputError, match="seed"):
        MeZO(params, lr=1.0, seed=-1)
    with pytest.raises(thrifty.InvalidInputError, match="closure"):
        MeZO(params, lr=1.0).step()


def test_gsm_matches_reference(problem):
    params = problem.params()
    opt = GlobalSparseMomentumSGD(
        [{"params": params[:1]}, {"params": params[1:], "lr": 0.05}], lr=0.1, momentum=0.9, weight_decay=0.01,
        density=0.3,
    )
    x = [t.clone() for t in problem.init[:2]]
    zs = [torch.zeros_like(t) for t in x]
    lrs = [0.1, 0.05]
    for k in range(6):
        batch = torch.arange(k % 4, 16, 2)
        opt.zero_grad()
        problem.backward(params, batch)
        opt.step()
        g, _ = problem.grads(x, batch)
        scores = torch.cat([(xi * gi).abs().reshape(-1) for xi, gi in zip(x, g)])
        q = math.ceil(0.3 * scores.numel())
        thresh = torch.sort(scores, descending=True).values[q - 1]
        for i in range(2):
            masked = torch.where((x[i] * g[i]).abs() >= thresh, g[i], torch.zeros_like(g[i]))
            zs[i] = 0.9 * zs[i] + lrs[i] * (0.01 * x[i] + masked)
            x[i] = x[i] - zs[i]
    for p, r in zip(params, x):
        torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-12)
    assert torch.equal(params[2].detach(), problem.init[2])


def test_gsm_rejects_bad_arguments(problem):
    params = problem.params()
    for kw, name in [
        ({"density": 0.0}, "density"),
        ({"density": 1.5}, "density"),
        ({"density": 0.5, "lr": -1.0}, "lr"),
        ({"density": 0.5, "momentum": 1.0}, "momentum"),
        ({"density": 0.5, "weight_decay": -1.0}, "weight_decay"),
    ]:
        with pytest.raises(thrifty.InvalidInputError, match=name):
            GlobalSparseMomentumSGD(params, **kw)


def test_gradient_noise_matches_reference(problem, tmp_path):
    params = problem.params()
    opt = GradientNoise(torch.optim.SGD(params, lr=0.1), eta=0.3, gamma=0.55, seed=2)
    x = [t.clone() for t in problem.init[:2]]
    for t in range(4):
        batch = torch.arange(t % 4, 16, 2)
        opt.zero_grad()
        opt.step(lambda: problem.backward(params, batch))
        g, _ = problem.grads(x, batch)
        gen = step_generator(2, t)
        sd = math.sqrt(0.3 / (1 + t) ** 0.55)
        x = [xi - 0.1 * (gi + sd * torch.randn(gi.shape, generator=gen, dtype=torch.float64)) for xi, gi in zip(x, g)]
    for p, r in zip(params, x):
        torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-12)
    sd = roundtrip(opt, tmp_path)
    opt2 = GradientNoise(torch.optim.SGD(problem.params(), lr=0.1))
    opt2.load_state_dict(sd)
    assert opt2.t == 4 and opt2.seed == 2 and opt2.std() == opt.std()
    with pytest.raises(thrifty.InvalidInputError, match="eta"):
        GradientNoise(torch.optim.SGD(params, lr=0.1), eta=-1.0)
    with pytest.raises(thrifty.InvalidInputError, match="Optimizer"):
        GradientNoise(params)
