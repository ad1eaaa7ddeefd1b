"""thrifty.torch.nn.BitLinear against the BitNet b1.58 formulas and thrifty.quant."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import thrifty  # noqa: E402
from thrifty import quant  # noqa: E402
from thrifty.torch import nn as tnn  # noqa: E402


def _ref_weight(w, scale):
    """BitNet formulas written out in numpy (float32 products, half-to-even rounding)."""
    a = np.abs(w.astype(np.float32))
    if scale == "absmean":
        gamma = np.float32(a.astype(np.float64).mean())
    else:
        gamma = np.sort(a.ravel())[(a.size - 1) // 2]  # lower median
    s = np.float32(1.0) / np.maximum(gamma, np.float32(1e-5))
    q = np.clip(np.round(w * s), -1, 1)
    return q, s


def _ref_act(x, bits=8):
    qmax = 2 ** (bits - 1) - 1
    s = np.float32(qmax) / np.maximum(np.abs(x).max(-1, keepdims=True), np.float32(1e-5))
    return np.clip(np.round(x * s), -qmax - 1, qmax) / s


@pytest.mark.parametrize("scale", ["absmean", "absmedian"])
@pytest.mark.parametrize("shape", [(8, 16), (7, 5), (1, 3), (13, 32)])
def test_export_matches_thrifty_quant_bytes(scale, shape):
    torch.manual_seed(sum(shape))
    layer = tnn.BitLinear(shape[1], shape[0], scale=scale)
    q = layer.export()
    want = quant.quantize(layer.weight.detach().numpy(), "ternary", scale=scale)
    assert q.data.tobytes() == want.data.tobytes() and q.data.shape == want.data.shape
    np.testing.assert_array_equal(q.scales, want.scales)
    # the forward pass uses exactly the exported codes
    np.testing.assert_array_equal(quant.dequantize(q), layer.quantized_weight().numpy())
    qr, s = _ref_weight(layer.weight.detach().numpy(), scale)
    np.testing.assert_array_equal(layer.quantized_weight().numpy(), (qr / s).astype(np.float32))


def test_forward_equals_bitnet_formula():
    torch.manual_seed(0)
    layer = tnn.BitLinear(16, 6, bias=True)
    x = torch.randn(3, 4, 16)
    q, s = _ref_weight(layer.weight.detach().numpy(), "absmean")
    xq = _ref_act(x.numpy())
    want = xq @ (q / s).T.astype(np.float32) + layer.bias.detach().numpy()
    np.testing.assert_allclose(layer(x).detach().numpy(), want, rtol=1e-5, atol=1e-5)
    assert torch.unique(layer.quantized_weight() * torch.tensor(s)).tolist() == [-1.0, 0.0, 1.0]


def test_activation_bits_and_none():
    torch.manual_seed(1)
    x = torch.randn(5, 8)
    np.testing.assert_allclose(tnn.quantize_activations(x, 4).numpy(), _ref_act(x.numpy(), 4), rtol=1e-6)
    layer = tnn.BitLinear(8, 3, act_bits=None)
    torch.testing.assert_close(layer(x), x @ layer.quantized_weight().T)


def test_straight_through_gradients():
    torch.manual_seed(2)
    layer = tnn.BitLinear(8, 4)
    x = torch.randn(5, 8, requires_grad=True)
    g = torch.randn(5, 4)
    layer(x).backward(g)
    # STE: d/dW = g^T x_q, d/dx = g W_q (quantizers act as identity)
    xq = tnn.quantize_activations(x.detach())
    torch.testing.assert_close(layer.weight.grad, g.T @ xq)
    torch.testing.assert_close(x.grad, g @ layer.quantized_weight())


def test_strength_blends_and_schedule():
    torch.manual_seed(3)
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(6, 8)
    layer = tnn.BitLinear.from_linear(lin, strength=0.0)
    torch.testing.assert_close(layer(x), lin(x))
    full = tnn.BitLinear.from_linear(lin)(x)
    layer.strength = 0.25
    w = lin.weight + 0.25 * (layer.quantized_weight() - lin.weight)
    xb = x + 0.25 * (tnn.quantize_activations(x) - x)
    torch.testing.assert_close(layer(x), xb @ w.T + lin.bias)
    layer.strength = 1.0
    torch.testing.assert_close(layer(x), full)
    model = torch.nn.Sequential(layer, torch.nn.ReLU(), tnn.BitLinear(4, 2))
    sched = tnn.StrengthSchedule(model, ramp_steps=4, start_step=2)
    seen = []
    for _ in range(7):
        seen.append(model[2].strength)
        sched.step()
    assert seen == [0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0]
    assert model[0].strength == 1.0


def test_to_bitlinear_swaps_linear_layers():
    torch.manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                torch.nn.Sequential(torch.nn.Linear(8, 8)), torch.nn.Linear(8, 2))
    w0 = model[0].weight.detach().clone()
    out = tnn.to_bitlinear(model, scale="absmedian", exclude=["3"])
    assert out is model
    assert isinstance(model[0], tnn.BitLinear) and isinstance(model[2][0], tnn.BitLinear)
    assert type(model[3]) is torch.nn.Linear
    assert model[0].scale == "absmedian"
    torch.testing.assert_close(model[0].weight.detach(), w0)
    assert isinstance(tnn.to_bitlinear(torch.nn.Linear(3, 3)), tnn.BitLinear)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()  # latent weights are ordinary parameters
    assert not torch.equal(model[0].weight.detach(), w0)


def test_bitlinear_trains_a_toy_problem():
    torch.manual_seed(5)
    x = torch.randn(256, 16)
    y = (x[:, :4].sum(1) > 0).long()
    model = torch.nn.Sequential(torch.nn.LayerNorm(16), tnn.BitLinear(16, 32), torch.nn.ReLU(),
                                torch.nn.LayerNorm(32), tnn.BitLinear(32, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert (model(x).argmax(1) == y).float().mean() > 0.9


def test_bad_arguments():
    with pytest.raises(thrifty.InvalidInputError, match="scale"):
        tnn.BitLinear(4, 4, scale="absmax")
    with pytest.raises(ValueError, match="strength"):
        tnn.BitLinear(4, 4, strength=1.5)
    with pytest.raises(ValueError, match="act_bits"):
        tnn.BitLinear(4, 4, act_bits=1)
    with pytest.raises(ValueError, match="in_features"):
        tnn.BitLinear(0, 4)
    with pytest.raises(ValueError, match="strength"):
        tnn.set_strength(torch.nn.Sequential(), -0.1)
    with pytest.raises(ValueError, match="ramp_steps"):
        tnn.StrengthSchedule(torch.nn.Sequential(), -1)
    with pytest.raises(ValueError, match="scale"):
        tnn.to_bitlinear(torch.nn.Linear(2, 2), scale="x")
