"""Behaviour every thrifty optimizer shares: bf16 parameters, non-contiguous parameters,
parameters without gradients, weights_only state_dicts and thrifty not importing torch."""

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from _optim_problem import roundtrip  # noqa: E402

from thrifty.torch import optim as O  # noqa: E402

FACTORIES = {
    "sam": lambda ps: O.SAM(ps, torch.optim.SGD, lr=0.1, momentum=0.9),
    "dog": lambda ps: O.DoG(ps, reps_rel=1e-2),
    "ldog": lambda ps: O.LDoG(ps, reps_rel=1e-2),
    "galore": lambda ps: O.GaLoreAdamW([{"params": ps[:1], "rank": 2}, {"params": ps[1:]}], lr=0.1),
    "fira": lambda ps: O.FiraAdamW([{"params": ps[:1], "rank": 2}, {"params": ps[1:]}], lr=0.1),
    "frugal": lambda ps: O.FRUGAL(ps, lr=0.1, density=0.5, projection="svd", residual="sgd"),
    "momo": lambda ps: O.MoMo(ps),
    "momo_adam": lambda ps: O.MoMoAdam(ps, lr=0.01),
    "mezo": lambda ps: O.MeZO(ps, lr=0.1, eps=1e-2),
    "gsm": lambda ps: O.GlobalSparseMomentumSGD(ps, lr=0.1, momentum=0.9, density=0.5),
    "noise": lambda ps: O.GradientNoise(torch.optim.SGD(ps, lr=0.1), eta=0.01),
}


def loss_of(ps):
    W, b = ps[0], ps[1]
    x = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3).to(W.dtype)
    return ((torch.tanh(x @ W.T + b) - 0.5) ** 2).mean()


def run(name, ps, steps=3):
    opt = FACTORIES[name](ps)
    for _ in range(steps):
        for p in ps:
            p.grad = None
        if name == "mezo":
            with torch.no_grad():
                opt.step(lambda: loss_of(ps))
            continue
        loss = loss_of(ps)
        loss.backward()
        if name == "sam":
            opt.step(lambda: loss_of(ps).backward())
        elif name.startswith("momo"):
            opt.step(loss=loss)
        else:
            opt.step()
    return opt


def params(dtype=torch.float64, transposed=False):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 5, generator=g, dtype=torch.float64).T if transposed else None
    if W is None:
        W = torch.randn(3, 5, generator=g, dtype=torch.float64).T.contiguous()
    b = torch.randn(5, generator=g, dtype=torch.float64)
    idle = torch.ones(4, dtype=torch.float64)
    return [torch.nn.Parameter(t.to(dtype)) for t in (W, b, idle)]


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_non_contiguous_params_match_contiguous(name):
    a, b = params(transposed=True), params()
    assert not a[0].is_contiguous() and b[0].is_contiguous()
    run(name, a)
    run(name, b)
    for p, q in zip(a, b):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-12, atol=1e-12)
    assert not torch.equal(b[0].detach(), params()[0].detach())
    if name != "mezo":  # MeZO perturbs every trainable tensor; the others skip grad-less ones
        assert torch.equal(b[2].detach(), torch.ones(4, dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_bf16_params_train_close_to_fp32(name):
    lo, hi = params(torch.bfloat16), params(torch.float32)
    run(name, lo)
    run(name, hi)
    for p, q in zip(lo, hi):
        assert p.dtype == torch.bfloat16 and torch.isfinite(p.float()).all()
        torch.testing.assert_close(p.detach().float(), q.detach(), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_state_dict_loads_weights_only(name, tmp_path):
    opt = run(name, params())
    sd = roundtrip(opt, tmp_path)
    fresh = FACTORIES[name](params())
    fresh.load_state_dict(sd)


def test_import_thrifty_does_not_import_torch():
    code = "import sys, thrifty; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", sorted(set(FACTORIES) - {"noise"}))
def test_rejected_param_group_is_not_kept(name):
    opt = FACTORIES[name](params())
    before = [list(g["params"]) for g in opt.param_groups]
    extra = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    bad = {"params": [extra], "lr": -1.0, "weight_decay": -1.0, "rho": -1.0, "eps": -1.0}
    with pytest.raises(ValueError):
        opt.add_param_group(bad)
    assert [list(g["params"]) for g in opt.param_groups] == before
