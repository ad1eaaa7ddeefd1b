import pytest

torch = pytest.importorskip("torch")

from _optim_problem import roundtrip  # noqa: E402

import thrifty  # noqa: E402
from thrifty.torch.optim import FRUGAL  # noqa: E402

D = torch.float64
SHAPES = [(8, 4), (4, 8), (5,)]


def grads_at(k):
    g = torch.Generator().manual_seed(100 + k)
    return [torch.randn(s, generator=g, dtype=D) for s in SHAPES]


def init_params():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(s, generator=g, dtype=D) for s in SHAPES]


def adam(st, g, lr, b1=0.9, b2=0.999, eps=1e-8):
    st["t"] = st.get("t", 0) + 1
    st["m"] = b1 * st.get("m", torch.zeros_like(g)) + (1 - b1) * g
    st["v"] = b2 * st.get("v", torch.zeros_like(g)) + (1 - b2) * g * g
    return lr * (st["m"] / (1 - b1 ** st["t"])) / (torch.sqrt(st["v"] / (1 - b2 ** st["t"])) + eps)


@pytest.mark.parametrize("residual", ["signsgd", "sgd"])
def test_frugal_svd_matches_reference(residual):
    x = init_params()
    params = [torch.nn.Parameter(t.clone()) for t in x]
    opt = FRUGAL(params, lr=0.01, density=0.5, update_gap=3, projection="svd", residual=residual,
                 weight_decay=0.1, free_lr=0.002)
    states = [{}, {}, {}]
    P = [None, None]
    for k in range(7):
        gs = grads_at(k)
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        for i, g in enumerate(gs):
            x[i] = x[i] * (1 - 0.01 * 0.1)
            if i == 2:
                x[i] = x[i] - adam(states[i], g, 0.01)
                continue
            if k % 3 == 0:
                U, S, Vh = torch.linalg.svd(g.float(), full_matrices=False)
                P[i] = Vh[:2].to(D) if g.shape[0] >= g.shape[1] else U[:, :2].to(D)
                states[i] = {}
            if g.shape[0] >= g.shape[1]:
                low = g @ P[i].T
                full = adam(states[i], low, 0.01) @ P[i]
                rest = g - low @ P[i]
            else:
                low = P[i].T @ g
                full = P[i] @ adam(states[i], low, 0.01)
                rest = g - P[i] @ low
            free = torch.sign(rest) if residual == "signsgd" else rest
            x[i] = x[i] - full - 0.002 * free
    for p, r in zip(params, x):
        torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-12)
    assert opt.state[params[0]]["exp_avg"].shape == (8, 2)


def test_frugal_random_projection_is_orthonormal_and_reproducible(tmp_path):
    runs = []
    for _ in range(2):
        params = [torch.nn.Parameter(t) for t in init_params()]
        opt = FRUGAL(params, lr=0.01, density=0.5, update_gap=2, seed=4)
        for k in range(3):
            for p, g in zip(params, grads_at(k)):
                p.grad = g
            opt.step()
        runs.append((params, opt))
    (a, oa), (b, _) = runs
    for p, q in zip(a, b):
        assert torch.equal(p, q)
    P = oa.state[a[0]]["proj"]  # 8 x 4 weight: right projection, 2 x 4 with orthonormal rows
    torch.testing.assert_close(P @ P.T, torch.eye(2, dtype=D), rtol=1e-12, atol=1e-12)
    sd = roundtrip(oa, tmp_path)
    c = [torch.nn.Parameter(p.detach().clone()) for p in a]
    oc = FRUGAL(c, lr=0.01, density=0.5, update_gap=2, seed=4)
    oc.load_state_dict(sd)
    for k in range(3, 6):
        for ps, o in ((a, oa), (c, oc)):
            for p, g in zip(ps, grads_at(k)):
                p.grad = g
            o.step()
    for p, q in zip(a, c):
        assert torch.equal(p, q)


def test_frugal_blockwise_keeps_state_only_for_chosen_blocks():
    params = [torch.nn.Parameter(t) for t in init_params()]
    opt = FRUGAL(params, lr=0.01, density=0.34, update_gap=100, projection="blockwise")
    before = [p.detach().clone() for p in params]
    gs = grads_at(0)
    for p, g in zip(params, gs):
        p.grad = g
    opt.step()
    active = [opt.state[p]["active"] for p in params]
    assert sum(active) == 2  # ceil(0.34 * 3)
    for p, b, g, on in zip(params, before, gs, active):
        assert ("exp_avg" in opt.state[p]) == on
        if not on:
            torch.testing.assert_close(p.detach(), b - 0.01 * torch.sign(g))
        else:  # first Adam step: lr * sign(g) up to eps
            torch.testing.assert_close(p.detach(), b - 0.01 * g / (g.abs() + 1e-8), rtol=1e-12, atol=1e-12)


def test_frugal_rejects_bad_arguments():
    params = [torch.nn.Parameter(t) for t in init_params()]
    for kw, name in [
        ({"projection": "qr"}, "projection"),
        ({"residual": "adam"}, "residual"),
        ({"update_gap": 0}, "update_gap"),
        ({"density": 0.0}, "density"),
        ({"density": 1.5}, "density"),
        ({"lr": -1.0}, "lr"),
        ({"free_lr": -1.0}, "free_lr"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"seed": -1}, "seed"),
    ]:
        kw = {"lr": 0.01, **kw}
        with pytest.raises(thrifty.InvalidInputError, match=name):
            FRUGAL(params, **kw)
