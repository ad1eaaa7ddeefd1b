"""Lock-step equality with pytorch-optimizer's implementations where it has the method
(skipped when ``pytorch_optimizer`` is not installed).

Its GaLore is not galore-torch's arithmetic (the projection refreshes one step later, the
first moment uses lerp), so GaLoreAdamW is checked against galore-torch's rules written
out in test_optim_galore.py instead."""

import pytest

torch = pytest.importorskip("torch")
po = pytest.importorskip("pytorch_optimizer")

from _optim_problem import Problem  # noqa: E402

from thrifty.torch.optim import SAM  # noqa: E402


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_lockstep_with_pytorch_optimizer(adaptive):
    problem = Problem()
    a, b = problem.params()[:2], problem.params()[:2]
    oa = SAM(a, torch.optim.SGD, rho=0.5, adaptive=adaptive, lr=0.1, momentum=0.9)
    ob = po.SAM(b, torch.optim.SGD, rho=0.5, adaptive=adaptive, lr=0.1, momentum=0.9)
    for k in range(6):
        batch = torch.arange(k % 4, 16, 2)
        for ps, opt in ((a, oa), (b, ob)):
            problem.backward(ps, batch)
            opt.first_step(zero_grad=True)
            problem.backward(ps, batch)
            opt.second_step(zero_grad=True)
    # pytorch-optimizer accumulates the gradient norm in float32: agreement to ~1e-8.
    for p, q in zip(a, b):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-9)
