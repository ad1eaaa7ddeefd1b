"""thrifty.torch.init: ZerO, mimetic and LSUV initialisers."""

import math

import pytest

torch = pytest.importorskip("torch")

import thrifty  # noqa: E402
from thrifty.torch import init as tinit  # noqa: E402

nn = torch.nn


def _sylvester(n):
    return torch.tensor([[(-1.0) ** bin(i & j).count("1") for j in range(n)] for i in range(n)])


def test_hadamard_is_sylvester_and_orthogonal():
    for n in (1, 2, 8, 32):
        h = tinit.hadamard(n)
        torch.testing.assert_close(h, _sylvester(n))
        torch.testing.assert_close(h @ h.T, n * torch.eye(n))
    with pytest.raises(ValueError, match="power of two"):
        tinit.hadamard(6)


@pytest.mark.parametrize("out,inp", [(5, 5), (3, 7), (6, 4), (9, 3), (16, 16), (17, 8)])
def test_zero_matrices_exact(out, inp):
    w = tinit.zero_init_(torch.empty(out, inp))
    if out <= inp:
        want = torch.zeros(out, inp)
        for i in range(out):
            want[i, i] = 1.0
    else:
        m = math.ceil(math.log2(out))
        want = 2.0 ** (-(m - 1) / 2) * _sylvester(2**m)[:out, :inp]
    assert torch.equal(w, want)


def test_zero_init_model_layers_and_residual_zero():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Conv2d(8, 3, 3))
    tinit.zero_init_(model, zero_layers=["2"])
    m = 3
    torch.testing.assert_close(model[0].weight, 2.0 ** (-(m - 1) / 2) * _sylvester(8)[:, :4])
    assert (model[0].bias == 0).all()
    assert (model[2].weight == 0).all() and (model[2].bias == 0).all()
    conv = model[3].weight
    assert torch.equal(conv[:, :, 1, 1], torch.eye(3, 8)) and conv.abs().sum() == 3
    lin = tinit.zero_init_(nn.Linear(6, 6))
    x = torch.randn(3, 6)
    torch.testing.assert_close(lin(x), x)  # identity layer
    with pytest.raises(thrifty.InvalidInputError, match="not a module"):
        tinit.zero_init_(model, zero_layers=["nope"])
    with pytest.raises(ValueError, match="no nn.Linear"):
        tinit.zero_init_(nn.ReLU())
    with pytest.raises(ValueError, match="ndim"):
        tinit.zero_init_(torch.empty(3))
    with pytest.raises(ValueError, match="Tensor or nn.Module"):
        tinit.zero_init_([1, 2])


def test_mimetic_single_head_products_exact():
    d = 16
    attn = nn.MultiheadAttention(d, 1)
    g = torch.Generator().manual_seed(0)
    tinit.mimetic_init_(attn, generator=g)
    wq, wk, wv = attn.in_proj_weight.detach().double().chunk(3)
    wo = attn.out_proj.weight.detach().double()
    # regenerate the same Z draws
    g2 = torch.Generator().manual_seed(0)
    z1 = torch.randn(d, d, generator=g2, dtype=torch.float64) / math.sqrt(d)
    z2 = torch.randn(d, d, generator=g2, dtype=torch.float64) / math.sqrt(d)
    eye = torch.eye(d, dtype=torch.float64)
    torch.testing.assert_close(wq.T @ wk, 0.7 * z1 + 0.7 * eye, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(wv.T @ wo.T, 0.4 * z2 - 0.4 * eye, atol=1e-5, rtol=1e-5)


def test_mimetic_multi_head_is_best_low_rank_and_explicit_weights():
    d, h = 12, 3
    k = d // h
    ws = [torch.empty(d, d) for _ in range(4)]
    tinit.mimetic_init_(tuple(ws), num_heads=h, generator=torch.Generator().manual_seed(1))
    g2 = torch.Generator().manual_seed(1)
    eye = torch.eye(d, dtype=torch.float64)
    for i in range(h):
        target = 0.7 * torch.randn(d, d, generator=g2, dtype=torch.float64) / math.sqrt(d) + 0.7 * eye
        u, s, vh = torch.linalg.svd(target)
        best = (u[:, :k] * s[:k]) @ vh[:k]
        prod = ws[0][i * k:(i + 1) * k].double().T @ ws[1][i * k:(i + 1) * k].double()
        torch.testing.assert_close(prod, best, atol=1e-5, rtol=1e-5)
    z2 = torch.randn(d, d, generator=g2, dtype=torch.float64) / math.sqrt(d)
    torch.testing.assert_close(ws[2].double().T @ ws[3].double().T, 0.4 * z2 - 0.4 * eye, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="num_heads"):
        tinit.mimetic_init_(tuple(ws))
    with pytest.raises(ValueError, match="divisor"):
        tinit.mimetic_init_(tuple(ws), num_heads=5)
    with pytest.raises(ValueError, match="MultiheadAttention"):
        tinit.mimetic_init_(nn.Linear(2, 2))


@pytest.mark.parametrize("consts", [(0.7, 0.7, 0.4, 0.4), (0.5, -0.6, 0.3, -0.2), (0.0, 1.0, 0.0, 1.0)])
def test_mimetic_products_match_targets_for_any_constants(consts):
    """Per head, W_q[h]^T W_k[h] is the best rank-k approximation of a1 Z_h + b1 I (the
    SVD target) and W_v^T W_o^T = a2 Z - b2 I exactly; negative betas give the
    language-model signs; alpha = 0 gives exact (partial) identities."""
    a1, b1, a2, b2 = consts
    d, h = 16, 4
    k = d // h
    attn = nn.MultiheadAttention(d, h)
    tinit.mimetic_init_(attn, alpha1=a1, beta1=b1, alpha2=a2, beta2=b2, generator=torch.Generator().manual_seed(5))
    wq, wk, wv = (w.double() for w in attn.in_proj_weight.detach().chunk(3))
    wo = attn.out_proj.weight.detach().double()
    g2 = torch.Generator().manual_seed(5)
    eye = torch.eye(d, dtype=torch.float64)
    for i in range(h):
        target = a1 * torch.randn(d, d, generator=g2, dtype=torch.float64) / math.sqrt(d) + b1 * eye
        u, s, vh = torch.linalg.svd(target)
        prod = wq[i * k:(i + 1) * k].T @ wk[i * k:(i + 1) * k]
        torch.testing.assert_close(prod, (u[:, :k] * s[:k]) @ vh[:k], atol=1e-5, rtol=1e-5)
        assert torch.linalg.matrix_rank(prod) == k
        assert (prod.trace() > 0) == (b1 > 0)
    target = a2 * torch.randn(d, d, generator=g2, dtype=torch.float64) / math.sqrt(d) - b2 * eye
    torch.testing.assert_close(wv.T @ wo.T, target, atol=1e-5, rtol=1e-5)


def test_mimetic_bad_constants_raise():
    attn = nn.MultiheadAttention(8, 2)
    for kw in ({"alpha1": -0.1}, {"alpha2": float("nan")}, {"beta1": float("inf")}, {"beta2": "x"}):
        with pytest.raises(ValueError):
            tinit.mimetic_init_(attn, **kw)


def test_mimetic_separate_qkv_module():
    attn = nn.MultiheadAttention(8, 2, kdim=8, vdim=8)
    attn._qkv_same_embed_dim = False  # exercise the separate-projection path
    attn.q_proj_weight = nn.Parameter(torch.empty(8, 8))
    attn.k_proj_weight = nn.Parameter(torch.empty(8, 8))
    attn.v_proj_weight = nn.Parameter(torch.empty(8, 8))
    tinit.mimetic_init_(attn, generator=torch.Generator().manual_seed(2))
    prod = attn.v_proj_weight.detach().T @ attn.out_proj.weight.detach().T
    assert prod.diagonal().mean() < -0.2


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 6 * 6, 32)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x)).flatten(1)
        return self.fc2(self.drop(torch.tanh(self.fc1(x))))


def test_lsuv_unit_variance_on_batch():
    torch.manual_seed(0)
    net = _Net()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(7.0)  # badly scaled start
    batch = torch.randn(128, 3, 6, 6) * 3
    net.train()
    tinit.lsuv_init_(net, batch, tol=0.05)
    assert net.training  # mode restored
    outs = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: outs.__setitem__(n, o))
             for n, m in net.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    net.eval()
    with torch.no_grad():
        net(batch)
    for h in hooks:
        h.remove()
    assert set(outs) == {"conv", "fc1", "fc2"}
    for name, out in outs.items():
        assert abs(out.var().item() - 1.0) < 0.05, name


def test_lsuv_bad_input():
    with pytest.raises(ValueError, match="tol"):
        tinit.lsuv_init_(nn.Linear(2, 2), torch.randn(3, 2), tol=0)
    with pytest.raises(ValueError, match="max_iter"):
        tinit.lsuv_init_(nn.Linear(2, 2), torch.randn(3, 2), max_iter=0)
    with pytest.raises(ValueError, match="no nn.Linear"):
        tinit.lsuv_init_(nn.ReLU(), torch.randn(3, 2))
