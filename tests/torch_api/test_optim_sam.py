import warnings

import pytest

torch = pytest.importorskip("torch")

from _optim_problem import Problem, roundtrip  # noqa: E402

import thrifty  # noqa: E402
from thrifty.torch.optim import (  # noqa: E402
    SAM,
    disable_running_stats,
    enable_running_stats,
    frozen_running_stats,
    sam_perturbation,
)


@pytest.fixture
def problem():
    return Problem()


def reference_sam(problem, steps, *, rho, adaptive, lr, momentum, rhos=None):
    """Plain re-implementation: SAM/ASAM on top of SGD with momentum (float64)."""
    w = [t.clone() for t in problem.init[:2]]
    bufs = [None, None]
    rhos = rhos or [rho, rho]
    for k in range(steps):
        batch = torch.arange(k % 4, 16, 2)
        g, _ = problem.grads(w, batch)
        if adaptive:
            norm = torch.sqrt(sum(((wi.abs() * gi) ** 2).sum() for wi, gi in zip(w, g)))
            e = [r * wi * wi * gi / (norm + 1e-12) for r, wi, gi in zip(rhos, w, g)]
        else:
            norm = torch.sqrt(sum((gi**2).sum() for gi in g))
            e = [r * gi / (norm + 1e-12) for r, gi in zip(rhos, g)]
        g2, _ = problem.grads([wi + ei for wi, ei in zip(w, e)], batch)
        for i in range(2):
            bufs[i] = g2[i].clone() if bufs[i] is None else momentum * bufs[i] + g2[i]
            w[i] = w[i] - lr * bufs[i]
    return w


def run_sam(problem, steps, params, opt, *, use_closure, start=0):
    for k in range(start, start + steps):
        batch = torch.arange(k % 4, 16, 2)
        problem.backward(params, batch)
        if use_closure:

            def closure():
                return problem.backward(params, batch)

            opt.step(closure)
        else:
            opt.first_step(zero_grad=True)
            problem.backward(params, batch)
            opt.second_step(zero_grad=True)


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("use_closure", [False, True])
def test_sam_matches_reference(problem, adaptive, use_closure):
    rho = 2.0 if adaptive else 0.05
    params = problem.params()
    opt = SAM(params, torch.optim.SGD, rho=rho, adaptive=adaptive, lr=0.1, momentum=0.9)
    run_sam(problem, 6, params, opt, use_closure=use_closure)
    ref = reference_sam(problem, 6, rho=rho, adaptive=adaptive, lr=0.1, momentum=0.9)
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(params[2].detach(), problem.init[2], rtol=0, atol=0)


def test_sam_param_groups_have_own_rho_and_global_norm(problem):
    params = problem.params()
    opt = SAM(
        [{"params": [params[0]], "rho": 0.1}, {"params": params[1:], "lr": 0.1}],
        torch.optim.SGD,
        rho=0.05,
        lr=0.1,
        momentum=0.9,
    )
    run_sam(problem, 4, params, opt, use_closure=False)
    ref = reference_sam(problem, 4, rho=None, adaptive=False, lr=0.1, momentum=0.9, rhos=[0.1, 0.05])
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-12)


def test_sam_restores_weights_exactly(problem):
    params = problem.params()
    opt = SAM(params, torch.optim.SGD, lr=0.0)
    before = [p.detach().clone() for p in params]
    problem.backward(params)
    opt.first_step()
    assert not torch.equal(params[0].detach(), before[0])
    problem.backward(params)
    opt.second_step()
    for p, b in zip(params, before):
        assert torch.equal(p.detach(), b)


def test_sam_state_dict_roundtrip_resumes_trajectory(problem, tmp_path):
    params = problem.params()
    opt = SAM(params, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    run_sam(problem, 3, params, opt, use_closure=False)
    sd = roundtrip(opt, tmp_path)
    assert any("momentum_buffer" in s for s in sd["state"].values())
    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = SAM(params2, torch.optim.SGD, rho=0.05, lr=0.5, momentum=0.9)
    opt2.load_state_dict(sd)
    assert opt2.param_groups is opt2.base_optimizer.param_groups
    assert opt2.param_groups[0]["lr"] == 0.1
    run_sam(problem, 3, params, opt, use_closure=False, start=3)
    run_sam(problem, 3, params2, opt2, use_closure=False, start=3)
    for a, b in zip(params, params2):
        assert torch.equal(a.detach(), b.detach())


def test_sam_scheduler_sees_base_lr(problem):
    params = problem.params()
    opt = SAM(params, torch.optim.SGD, lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    problem.backward(params)
    opt.first_step()
    problem.backward(params)
    opt.second_step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == 0.5


def test_sam_bf16_arithmetic_in_fp32(problem):
    p = torch.nn.Parameter(problem.init[0].to(torch.bfloat16))
    p.grad = torch.ones_like(p)
    opt = SAM([p], torch.optim.SGD, rho=0.05, lr=0.1)
    w = p.detach().float()
    e = sam_perturbation([w], [torch.ones_like(w)], rho=0.05)[0]
    opt.first_step(zero_grad=False)
    assert torch.equal(p.detach(), (w + e).to(torch.bfloat16))
    q = torch.nn.Parameter(w.to(torch.bfloat16))
    q.grad = torch.full_like(q, 2.0)
    p.grad = torch.full_like(p, 2.0)
    opt.second_step()
    torch.optim.SGD([q], lr=0.1).step()
    assert torch.equal(p.detach(), q.detach())  # w restored, then the base step


def test_sam_non_contiguous_params(problem):
    a = torch.nn.Parameter(problem.init[0].clone().T.contiguous().T)  # transposed view
    assert not a.is_contiguous()
    b = torch.nn.Parameter(problem.init[0].clone())
    ref = []
    for p in (a, b):
        opt = SAM([p], torch.optim.SGD, lr=0.1, momentum=0.9)
        for _ in range(3):
            p.grad = None
            problem.loss([p, torch.zeros(5, dtype=torch.float64)]).backward()
            opt.first_step()
            problem.loss([p, torch.zeros(5, dtype=torch.float64)]).backward()
            opt.second_step()
        ref.append(p.detach())
    torch.testing.assert_close(ref[0], ref[1], rtol=1e-14, atol=1e-14)


def test_sam_functional_perturbation_matches_formula():
    w = [torch.tensor([1.0, -2.0], dtype=torch.float64)]
    g = [torch.tensor([3.0, 4.0], dtype=torch.float64)]
    e = sam_perturbation(w, g, rho=0.5, adaptive=True)[0]
    tg = torch.tensor([3.0, 8.0], dtype=torch.float64)
    torch.testing.assert_close(e, 0.5 * torch.tensor([1.0, 4.0], dtype=torch.float64) * g[0] / tg.norm())


def test_running_stats_helpers_freeze_batchnorm():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    x = torch.randn(8, 3)
    model(x)
    mean = model[1].running_mean.clone()
    count = model[1].num_batches_tracked.clone()
    out_ref = model(x)
    model(x)  # the normal pass moved the stats again
    mean2 = model[1].running_mean.clone()
    disable_running_stats(model)
    out = model(x)
    assert torch.equal(model[1].running_mean, mean2)
    assert int(model[1].num_batches_tracked) == int(count) + 2
    torch.testing.assert_close(out, out_ref)  # batch statistics still used
    enable_running_stats(model)
    assert model[1].track_running_stats
    with frozen_running_stats(model):
        model(x)
    assert torch.equal(model[1].running_mean, mean2)
    model(x)
    assert not torch.equal(model[1].running_mean, mean2)
    assert not torch.equal(mean, mean2)


def test_sam_rejects_bad_arguments(problem):
    params = problem.params()
    with pytest.raises(thrifty.InvalidInputError, match="rho"):
        SAM(params, torch.optim.SGD, rho=-0.1, lr=0.1)
    with pytest.raises(ValueError, match="rho"):
        SAM([{"params": params, "rho": float("nan")}], torch.optim.SGD, lr=0.1)
    with pytest.raises(thrifty.InvalidInputError, match="class"):
        SAM(params, torch.optim.SGD(params, lr=0.1), lr=0.1)
    opt = SAM(params, torch.optim.SGD, lr=0.1)
    with pytest.raises(thrifty.InvalidInputError, match="closure"):
        opt.step()
    with pytest.raises(RuntimeError, match="first_step"):
        opt.second_step()
    with pytest.raises(RuntimeError, match="no parameter"):
        opt.first_step()


def test_step_hooks_fire_with_first_and_second_step():
    from torch.optim.optimizer import register_optimizer_step_post_hook

    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = SAM([w], torch.optim.SGD, lr=0.1, rho=0.05)
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append(("pre", o is opt, w.detach().clone())))
    opt.register_step_post_hook(lambda o, args, kwargs: seen.append(("post", o is opt, w.detach().clone())))
    # global hooks also see the base optimizer's own step: record SAM's only
    handle = register_optimizer_step_post_hook(lambda o, args, kwargs: o is opt and seen.append(("global", True)))
    try:
        def backward():
            opt.zero_grad()
            (w ** 2).sum().backward()

        backward()
        start = w.detach().clone()
        opt.first_step()
        assert [s[0] for s in seen] == ["pre"] and torch.equal(seen[0][2], start)
        backward()
        opt.second_step()
        assert [s[0] for s in seen] == ["pre", "post", "global"] and all(s[1] for s in seen)
        assert torch.equal(seen[1][2], w.detach()) and not torch.equal(w.detach(), start)
        # step(closure): torch runs the hooks around step, exactly once each
        seen.clear()
        backward()

        def closure():
            backward()
            return (w ** 2).sum()

        opt.step(closure)
        assert [s[0] for s in seen] == ["pre", "post", "global"]
    finally:
        handle.remove()


def test_lr_scheduler_and_hooks_see_manual_sam_steps():
    w = torch.nn.Parameter(torch.ones(3))
    opt = SAM([w], torch.optim.SGD, lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    calls = []
    opt.register_step_post_hook(lambda *a: calls.append(1))
    for _ in range(2):
        w.grad = torch.ones(3)
        opt.first_step()
        w.grad = torch.ones(3)
        opt.second_step()
        sched.step()
    assert calls == [1, 1] and opt.param_groups[0]["lr"] == 0.25
