"""The private helpers several optimizers share (thrifty.torch.optim._common and SAM's
norm / perturbation), and SAM with mixed ASAM groups, which other tests do not pin down."""

import math

import pytest

torch = pytest.importorskip("torch")

import thrifty  # noqa: E402
from thrifty.torch.optim import (  # noqa: E402
    FRUGAL,
    SAM,
    DoG,
    FiraAdamW,
    GaLoreAdamW,
    GlobalSparseMomentumSGD,
    LDoG,
    MeZO,
    MoMo,
    MoMoAdam,
    sam_perturbation,
)
from thrifty.torch.optim._common import closure_loss, grad_pairs  # noqa: E402


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: MeZO(p, lr=0.1, seed=-1), "seed must be >= 0"),
        (lambda p: MeZO(p, lr=0.1, seed=1 << 63), "seed must be <= "),
        (lambda p: MeZO(p, lr=0.1, seed=True), "seed must be an integer"),
        (lambda p: FRUGAL(p, lr=0.1, update_gap=0), "update_gap must be >= 1"),
        (lambda p: FRUGAL(p, lr=0.1, update_gap=2.0), "update_gap must be an integer"),
        (lambda p: SAM(p, torch.optim.SGD, rho=-0.1, lr=0.1), "rho must be >= 0.0"),
        (lambda p: MoMo(p, beta=1.0), "beta must be < 1.0"),
        (lambda p: DoG(p, lr=0.0), "lr must be > 0.0"),
        (lambda p: MoMoAdam(p, betas=(0.9, float("nan"))), "betas.1. must be finite"),
    ],
)
def test_optimizers_check_scalars_with_the_shared_validators(make, match):
    with pytest.raises(thrifty.InvalidInputError, match=match):
        make([torch.nn.Parameter(torch.zeros(2))])


def test_closure_loss_runs_with_grad_enabled():
    assert closure_loss(None) is None
    seen = []

    def closure():
        seen.append(torch.is_grad_enabled())
        return "loss"

    with torch.no_grad():
        assert closure_loss(closure) == "loss"
    assert seen == [True]


def test_grad_pairs_keeps_group_order_and_skips_missing_grads():
    a, b, c = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    a.grad, c.grad = torch.ones(2), torch.ones(2)
    groups = [{"params": [a, b], "k": 0}, {"params": [c], "k": 1}]
    pairs = grad_pairs(groups)
    assert [(g["k"], p is a, p is c) for g, p in pairs] == [(0, True, False), (1, False, True)]


def test_sam_first_step_with_mixed_adaptive_groups():
    g = torch.Generator().manual_seed(1)
    W = torch.nn.Parameter(torch.randn(3, 2, generator=g, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(3, generator=g, dtype=torch.float64))
    W.grad = torch.randn(3, 2, generator=g, dtype=torch.float64)
    b.grad = torch.randn(3, generator=g, dtype=torch.float64)
    w0, b0 = W.detach().clone(), b.detach().clone()
    opt = SAM([{"params": [W], "adaptive": True, "rho": 0.5}, {"params": [b]}], torch.optim.SGD, rho=0.1, lr=0.1)
    opt.first_step(zero_grad=False)
    norm = math.sqrt(float(((w0.abs() * W.grad) ** 2).sum()) + float((b.grad**2).sum()))
    torch.testing.assert_close(W.detach(), w0 + 0.5 * w0 * w0 * W.grad / norm, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(b.detach(), b0 + 0.1 * b.grad / norm, rtol=1e-12, atol=1e-14)
    gW, gb = W.grad.clone(), b.grad.clone()
    opt.second_step()  # restores w exactly, then SGD with the (unchanged) gradients
    torch.testing.assert_close(W.detach(), w0 - 0.1 * gW, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(b.detach(), b0 - 0.1 * gb, rtol=1e-12, atol=1e-14)


def test_sam_perturbation_without_tensors_and_with_given_norm():
    assert sam_perturbation([], [], rho=0.1) == []
    w, gr = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 4.0])
    e = sam_perturbation([w], [gr], rho=0.5, adaptive=True, grad_norm=torch.tensor(10.0))[0]
    torch.testing.assert_close(e, 0.5 * w * w * gr / 10.0)


HALF_STATE_OPTIMIZERS = {
    "DoG": lambda ps: DoG(ps),
    "LDoG": lambda ps: LDoG(ps),
    "MoMo": lambda ps: MoMo(ps, lr=0.1),
    "MoMoAdam": lambda ps: MoMoAdam(ps, lr=0.01),
    "GaLoreAdamW": lambda ps: GaLoreAdamW([{"params": ps, "rank": 2, "update_proj_gap": 2}], lr=0.01),
    "FiraAdamW": lambda ps: FiraAdamW([{"params": ps, "rank": 2, "update_proj_gap": 2}], lr=0.01),
    "FRUGAL": lambda ps: FRUGAL(ps, lr=0.01, update_gap=2),
    "GlobalSparseMomentumSGD": lambda ps: GlobalSparseMomentumSGD(ps, lr=0.01, momentum=0.9, density=0.5),
}


@pytest.mark.parametrize("name", sorted(HALF_STATE_OPTIMIZERS))
def test_state_dict_keeps_float32_state_of_bf16_parameters(name, tmp_path):
    """torch casts loaded state to the parameter dtype; thrifty's optimizers keep the
    saved dtypes, so a resumed bf16 run equals the uninterrupted one."""
    make = HALF_STATE_OPTIMIZERS[name]
    g = torch.Generator().manual_seed(0)
    target = torch.randn(6, 4, generator=g)
    a = torch.nn.Parameter(torch.randn(6, 4, generator=g).bfloat16())
    b = torch.nn.Parameter(a.detach().clone())

    def run(w, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            loss = ((w.float() - target) ** 2).sum()
            loss.backward()
            opt.step(loss=loss) if name.startswith("MoMo") else opt.step()

    opt_a = make([a])
    run(a, opt_a, 3)
    saved = {k: v.dtype for k, v in opt_a.state[a].items() if isinstance(v, torch.Tensor)}
    assert torch.float32 in saved.values()
    path = tmp_path / "opt.pt"
    torch.save(opt_a.state_dict(), path)
    opt_b = make([b])
    with torch.no_grad():
        b.copy_(a)
    opt_b.load_state_dict(torch.load(path, weights_only=True))
    assert {k: v.dtype for k, v in opt_b.state[b].items() if isinstance(v, torch.Tensor)} == saved
    run(a, opt_a, 3)
    run(b, opt_b, 3)
    assert torch.equal(a, b)
