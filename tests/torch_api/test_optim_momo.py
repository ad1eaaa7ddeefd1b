import pytest

torch = pytest.importorskip("torch")

from _optim_problem import Problem, roundtrip  # noqa: E402

import thrifty  # noqa: E402
from thrifty.torch.optim import MoMo, MoMoAdam  # noqa: E402


@pytest.fixture
def problem():
    return Problem()


def batch_of(k):
    return torch.arange(k % 4, 16, 2)


def reference_momo(problem, steps, *, lr, beta, lb, wd, use_fstar=False, lbs=None):
    """MoMo (no bias correction); ``use_fstar``: the online lower bound of the paper's
    Algorithm 3, its value after each step appended to ``lbs``."""
    x = [t.clone() for t in problem.init[:2]]
    lb0 = lb
    for k in range(steps):
        g, loss = problem.grads(x, batch_of(k))
        if k == 0:
            d, fbar, gam = [gi.clone() for gi in g], loss, sum(float((xi * gi).sum()) for xi, gi in zip(x, g))
        d = [beta * di + (1 - beta) * gi for di, gi in zip(d, g)]
        fbar = beta * fbar + (1 - beta) * loss
        gam = beta * gam + (1 - beta) * sum(float((xi * gi).sum()) for xi, gi in zip(x, g))
        dot = sum(float((xi * di).sum()) for xi, di in zip(x, d))
        nrm = sum(float((di**2).sum()) for di in d)
        c = 1 + lr * wd
        if use_fstar:
            cap = c * float(fbar) + dot - c * gam
            if cap < c * lb:
                lb = max(cap / (2 * c), lb0)
        tau = min(lr, max(c * (float(fbar) - lb) + dot - c * gam, 0.0) / nrm)
        if use_fstar:
            lb = max(float(fbar) + dot - gam - 0.5 * tau * nrm, lb0)
            lbs.append(lb)
        x = [(xi - tau * di) / c for xi, di in zip(x, d)]
    return x


def reference_momo_adam(problem, steps, *, lr, betas, eps, lb, wd, use_fstar=False, lbs=None):
    b1, b2 = betas
    lb0 = lb
    x = [t.clone() for t in problem.init[:2]]
    d = [torch.zeros_like(t) for t in x]
    v = [torch.zeros_like(t) for t in x]
    gam, fbar = 0.0, 0.0
    for k in range(1, steps + 1):
        g, loss = problem.grads(x, batch_of(k - 1))
        d = [b1 * di + (1 - b1) * gi for di, gi in zip(d, g)]
        v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
        gam = b1 * gam + (1 - b1) * sum(float((xi * gi).sum()) for xi, gi in zip(x, g))
        fbar = b1 * fbar + (1 - b1) * float(loss)
        D = [torch.sqrt(vi / (1 - b2**k)) + eps for vi in v]
        dot = sum(float((xi * di).sum()) for xi, di in zip(x, d))
        nrm = sum(float((di * di / Di).sum()) for di, Di in zip(d, D))
        bc1 = 1 - b1**k
        c = 1 + lr * wd
        if use_fstar:
            cap = c * fbar + dot - c * gam
            if cap < c * bc1 * lb:
                lb = max(cap / (2 * c * bc1), lb0)
        tau = min(lr / bc1, max(c * (fbar - bc1 * lb) + dot - c * gam, 0.0) / nrm)
        if use_fstar:
            lb = max((fbar + dot - gam - 0.5 * tau * nrm) / bc1, lb0)
            lbs.append(lb)
        x = [(xi - tau * di / Di) / c for xi, di, Di in zip(x, d, D)]
    return x


def run(problem, params, opt, steps, start=0, closure=False):
    for k in range(start, start + steps):
        opt.zero_grad()
        if closure:
            opt.step(lambda: problem.backward(params, batch_of(k)))
        else:
            loss = problem.backward(params, batch_of(k))
            opt.step(loss=loss)


@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("lb", [0.0, -0.5])
def test_momo_matches_reference(problem, wd, lb):
    params = problem.params()
    opt = MoMo([{"params": params[:1]}, {"params": params[1:]}], lr=1.0, beta=0.9, lb=lb, weight_decay=wd)
    run(problem, params, opt, 10, closure=True)
    ref = reference_momo(problem, 10, lr=1.0, beta=0.9, lb=lb, wd=wd)
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.detach(), r, rtol=1e-11, atol=1e-12)
    assert torch.equal(params[2].detach(), problem.init[2])


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_momo_adam_matches_reference(problem, wd):
    params = problem.params()
    opt = MoMoAdam(params, lr=0.1, weight_decay=wd, lb=0.0)
    run(problem, params, opt, 10)
    ref = reference_momo_adam(problem, 10, lr=0.1, betas=(0.9, 0.999), eps=1e-8, lb=0.0, wd=wd)
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.detach(), r, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("cls", [MoMo, MoMoAdam])
def test_momo_fstar_matches_reference(problem, cls, wd):
    params = problem.params()
    lb, lr = (-1.0, 1.0) if cls is MoMo else (-0.5, 0.1)
    opt = cls(params, lr=lr, lb=lb, weight_decay=wd, use_fstar=True)
    lbs, ref_lbs = [], []
    for k in range(8):
        run(problem, params, opt, 1, start=k, closure=cls is MoMoAdam)
        lbs.append(opt.state[params[0]]["lb"])
    if cls is MoMo:
        ref = reference_momo(problem, 8, lr=lr, beta=0.9, lb=lb, wd=wd, use_fstar=True, lbs=ref_lbs)
    else:
        ref = reference_momo_adam(
            problem, 8, lr=lr, betas=(0.9, 0.999), eps=1e-8, lb=lb, wd=wd, use_fstar=True, lbs=ref_lbs
        )
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.detach(), r, rtol=1e-11, atol=1e-12)
    assert lbs == pytest.approx(ref_lbs, rel=1e-10, abs=1e-12)
    assert any(v != lb for v in lbs)  # the bound moved


@pytest.mark.parametrize("cls", [MoMo, MoMoAdam])
def test_momo_fstar_and_roundtrip(problem, cls, tmp_path):
    params = problem.params()
    opt = cls(params, lb=-1.0, use_fstar=True)
    run(problem, params, opt, 3)
    assert opt.state[params[0]]["lb"] >= -1.0
    sd = roundtrip(opt, tmp_path)
    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = cls(params2, lb=-1.0, use_fstar=True)
    opt2.load_state_dict(sd)
    run(problem, params, opt, 3, start=3)
    run(problem, params2, opt2, 3, start=3)
    for a, b in zip(params, params2):
        assert torch.equal(a.detach(), b.detach())


@pytest.mark.parametrize("cls", [MoMo, MoMoAdam])
def test_momo_requires_loss_and_rejects_bad_arguments(problem, cls):
    params = problem.params()
    opt = cls(params)
    problem.backward(params)
    with pytest.raises(thrifty.InvalidInputError, match="needs the loss"):
        opt.step()
    with pytest.raises(thrifty.InvalidInputError, match="not both"):
        opt.step(lambda: torch.tensor(1.0), loss=torch.tensor(1.0))
    for kw, name in [({"lr": -1.0}, "lr"), ({"weight_decay": -1.0}, "weight_decay"), ({"lb": float("nan")}, "lb")]:
        with pytest.raises(thrifty.InvalidInputError, match=name):
            cls(params, **kw)
    if cls is MoMo:
        with pytest.raises(ValueError, match="beta"):
            MoMo(params, beta=1.0)
    else:
        with pytest.raises(ValueError, match="betas"):
            MoMoAdam(params, betas=(0.9, 1.5))
        with pytest.raises(ValueError, match="eps"):
            MoMoAdam(params, eps=-1.0)
