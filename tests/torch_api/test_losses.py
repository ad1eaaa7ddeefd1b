"""thrifty.torch.losses against explicit-loop references, gradcheck and bad input."""

import math

import pytest

torch = pytest.importorskip("torch")

import thrifty  # noqa: E402
from thrifty.torch import losses as L  # noqa: E402

F = torch.nn.functional
D = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _logits(n=6, c=5, seed=0, scale=2.0, dtype=D):
    g = _gen(seed)
    return (torch.randn(n, c, generator=g, dtype=D) * scale).to(dtype), torch.randint(0, c, (n,), generator=g)


# ---------------------------------------------------------------- explicit references
def ref_squentropy(o, y):
    out = []
    for i in range(o.shape[0]):
        row = [float(v) for v in o[i]]
        c = len(row)
        mx = max(row)
        lse = mx + math.log(sum(math.exp(v - mx) for v in row))
        sq = sum(row[j] ** 2 for j in range(c) if j != int(y[i])) / (c - 1)
        out.append(lse - row[int(y[i])] + sq)
    return torch.tensor(out, dtype=D)


def ref_zloss(o, y, a, b):
    out = []
    for i in range(o.shape[0]):
        row = [float(v) for v in o[i]]
        c = len(row)
        mu = sum(row) / c
        sd = math.sqrt(sum((v - mu) ** 2 for v in row) / c)
        z = (row[int(y[i])] - mu) / sd
        t = a * (b - z)
        out.append((max(t, 0) + math.log1p(math.exp(-abs(t)))) / a)
    return torch.tensor(out, dtype=D)


def ref_comp_sum(o, y, tau):
    out = []
    for i in range(o.shape[0]):
        row = [float(v) for v in o[i]]
        hy = row[int(y[i])]
        u = sum(math.exp(row[j] - hy) for j in range(len(row)) if j != int(y[i]))
        if tau == 1:
            out.append(math.log(1 + u))
        else:
            out.append(((1 + u) ** (1 - tau) - 1) / (1 - tau))
    return torch.tensor(out, dtype=D)


def _unit_rows(e):
    x = [[float(v) for v in r] for r in e]
    return [[v / math.sqrt(sum(w * w for w in r)) for v in r] for r in x]


def ref_circle(e, lab, m, gamma, weights_from=None):
    """``weights_from``: embeddings the (constant) weights a_p, a_n are computed from."""
    x = _unit_rows(e)
    x0 = x if weights_from is None else _unit_rows(weights_from)
    n = len(x)
    out = []
    for i in range(n):
        sp, sn = [], []
        for j in range(n):
            s = sum(a * b for a, b in zip(x[i], x[j]))
            s0 = sum(a * b for a, b in zip(x0[i], x0[j]))
            if j != i and lab[i] == lab[j]:
                sp.append(-gamma * max(1 + m - s0, 0) * (s - 1 + m))
            elif lab[i] != lab[j]:
                sn.append(gamma * max(s0 + m, 0) * (s - m))
        if not sp or not sn:
            out.append(0.0)
            continue
        v = torch.logsumexp(torch.tensor(sp, dtype=D), 0) + torch.logsumexp(torch.tensor(sn, dtype=D), 0)
        out.append(float(F.softplus(v)))
    return torch.tensor(out, dtype=D)


def ref_siglip(x, y, t_log, b):
    x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
    n = x.shape[0]
    rows = []
    for i in range(n):
        s = 0.0
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = math.exp(t_log) * float(x[i] @ y[j]) + b
            s += math.log1p(math.exp(-z * logit))
        rows.append(s)
    return torch.tensor(rows, dtype=D)


def ref_ge2e(e, w, b, method):
    n, m, _ = e.shape
    out = torch.zeros(n, m, dtype=D)
    for j in range(n):
        for i in range(m):
            sims = []
            for k in range(n):
                if k == j:
                    c = sum(e[k, u] for u in range(m) if u != i) / (m - 1)
                else:
                    c = e[k].mean(0)
                sims.append(w * float(F.cosine_similarity(e[j, i], c, dim=0)) + b)
            if method == "softmax":
                out[j, i] = -sims[j] + math.log(sum(math.exp(s) for s in sims))
            else:
                sig = [1 / (1 + math.exp(-s)) for s in sims]
                out[j, i] = 1 - sig[j] + max(sig[k] for k in range(n) if k != j)
    return out


def ref_box(p, g, complete, eps=1e-7, alpha_from=None):
    """``alpha_from``: predicted boxes the (constant) CIoU weight alpha is computed from."""
    out = []
    p0 = p if alpha_from is None else alpha_from
    for a, t, a0 in zip(p.tolist(), g.tolist(), p0.tolist()):
        iw = max(0.0, min(a[2], t[2]) - max(a[0], t[0]))
        ih = max(0.0, min(a[3], t[3]) - max(a[1], t[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (t[2] - t[0]) * (t[3] - t[1]) - inter
        iou = inter / (union + eps)
        c2 = (max(a[2], t[2]) - min(a[0], t[0])) ** 2 + (max(a[3], t[3]) - min(a[1], t[1])) ** 2 + eps
        rho2 = ((a[0] + a[2]) / 2 - (t[0] + t[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (t[1] + t[3]) / 2) ** 2
        loss = 1 - iou + rho2 / c2
        if complete:
            v = 4 / math.pi**2 * (math.atan((t[2] - t[0]) / (t[3] - t[1])) - math.atan((a[2] - a[0]) / (a[3] - a[1]))) ** 2
            if alpha_from is None:
                alpha = v / (1 - iou + v + eps)
            else:  # same formula on the constant boxes
                alpha = float(ref_alpha(a0, t, eps))
            loss += alpha * v
        out.append(loss)
    return torch.tensor(out, dtype=D)


def ref_alpha(a, t, eps):
    iw = max(0.0, min(a[2], t[2]) - max(a[0], t[0]))
    ih = max(0.0, min(a[3], t[3]) - max(a[1], t[1]))
    inter = iw * ih
    iou = inter / ((a[2] - a[0]) * (a[3] - a[1]) + (t[2] - t[0]) * (t[3] - t[1]) - inter + eps)
    v = 4 / math.pi**2 * (math.atan((t[2] - t[0]) / (t[3] - t[1])) - math.atan((a[2] - a[0]) / (a[3] - a[1]))) ** 2
    return v / (1 - iou + v + eps)


def _boxes(n=8, seed=0):
    g = _gen(seed)
    xy = torch.rand(n, 2, generator=g, dtype=D) * 10
    wh = torch.rand(n, 2, generator=g, dtype=D) * 5 + 0.5
    return torch.cat([xy, xy + wh], 1)


# ------------------------------------------------------------------- value checks
def test_squentropy_matches_loop():
    o, y = _logits()
    torch.testing.assert_close(L.squentropy_loss(o, y, reduction="none"), ref_squentropy(o, y))
    torch.testing.assert_close(L.SquentropyLoss()(o, y), ref_squentropy(o, y).mean())


@pytest.mark.parametrize("a,b", [(0.1, 10.0), (1.0, 2.0)])
def test_z_loss_matches_loop(a, b):
    o, y = _logits(c=7)
    torch.testing.assert_close(L.spherical_z_loss(o, y, a=a, b=b, reduction="none"), ref_zloss(o, y, a, b))
    torch.testing.assert_close(L.SphericalZLoss(a, b, reduction="sum")(o, y), ref_zloss(o, y, a, b).sum())


def test_z_loss_defaults_are_reference_code_softplus_minus_z():
    """Defaults a=1, b=0: softplus(-z_y), the loss of the authors' reference code, written
    here from the paper's spherical statistics S1 = sum(o), S2 = sum(o**2) and o_y."""
    o, y = _logits(n=5, c=8, seed=3)
    want = []
    for i in range(o.shape[0]):
        row = [float(v) for v in o[i]]
        c = len(row)
        s1, s2 = sum(row), sum(v * v for v in row)
        mu = s1 / c
        sigma = math.sqrt(s2 / c - mu * mu)
        z = (row[int(y[i])] - mu) / sigma
        want.append(math.log1p(math.exp(-z)))
    want = torch.tensor(want, dtype=D)
    torch.testing.assert_close(L.spherical_z_loss(o, y, reduction="none"), want)
    module = L.SphericalZLoss()
    assert (module.a, module.b) == (1.0, 0.0)
    torch.testing.assert_close(module(o, y), want.mean())


def test_z_loss_shift_and_scale_invariant():
    o, y = _logits(c=9)
    base = L.spherical_z_loss(o, y, reduction="none")
    torch.testing.assert_close(L.spherical_z_loss(3.0 * o + 7.0, y, reduction="none"), base)


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
def test_comp_sum_matches_loop(tau):
    o, y = _logits()
    torch.testing.assert_close(L.comp_sum_loss(o, y, tau, reduction="none"), ref_comp_sum(o, y, tau))


def test_comp_sum_tau1_is_cross_entropy_and_gce_is_tau_1_plus_q():
    o, y = _logits()
    torch.testing.assert_close(L.comp_sum_loss(o, y, 1.0), F.cross_entropy(o, y))
    p = torch.softmax(o, 1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(L.generalized_cross_entropy_loss(o, y, reduction="none"), (1 - p**0.7) / 0.7)
    torch.testing.assert_close(L.GeneralizedCrossEntropyLoss(0.3)(o, y), L.CompSumLoss(1.3)(o, y))


def test_npo_matches_formula():
    g = _gen(1)
    lp, lr = torch.randn(10, generator=g, dtype=D) * 5, torch.randn(10, generator=g, dtype=D) * 5
    want = torch.tensor([2 / 0.5 * math.log1p(math.exp(0.5 * (a - b))) for a, b in zip(lp.tolist(), lr.tolist())], dtype=D)
    torch.testing.assert_close(L.npo_loss(lp, lr, 0.5, reduction="none"), want)
    torch.testing.assert_close(L.NPOLoss(0.5, reduction="sum")(lp, lr), want.sum())


def test_center_loss_matches_loop():
    g = _gen(2)
    x, c = torch.randn(7, 3, generator=g, dtype=D), torch.randn(4, 3, generator=g, dtype=D)
    y = torch.randint(0, 4, (7,), generator=g)
    want = torch.tensor([0.5 * sum((float(x[i, d]) - float(c[y[i], d])) ** 2 for d in range(3)) for i in range(7)], dtype=D)
    torch.testing.assert_close(L.center_loss(x, y, c, reduction="none"), want)


def test_center_loss_module_paper_update():
    torch.manual_seed(0)
    crit = L.CenterLoss(3, 2, alpha=0.5)
    x = torch.randn(6, 2)
    y = torch.tensor([0, 0, 1, 1, 1, 2])
    before = crit.centers.detach().clone()
    opt = torch.optim.SGD([crit.centers], lr=1.0)
    (0.003 * crit(x, y)).backward()
    opt.step()
    want = before.clone()
    for j in range(3):
        idx = [i for i in range(6) if int(y[i]) == j]
        delta = sum(before[j] - x[i] for i in idx) / (1 + len(idx))
        want[j] = before[j] - 0.5 * delta
    torch.testing.assert_close(crit.centers.detach(), want)
    # alpha=None: the true gradient
    crit2 = L.CenterLoss(3, 2, alpha=None)
    crit2(x, y).backward()
    c = crit2.centers.detach()
    want_grad = torch.zeros_like(c)
    for i in range(6):
        want_grad[y[i]] -= (x[i] - c[y[i]]) / 6
    torch.testing.assert_close(crit2.centers.grad, want_grad)


@pytest.mark.parametrize("m,gamma", [(0.4, 80.0), (0.25, 256.0)])
def test_circle_matches_loop(m, gamma):
    g = _gen(3)
    e = torch.randn(10, 4, generator=g, dtype=D)
    lab = [0, 0, 1, 1, 1, 2, 2, 3, 0, 4]  # class 3 and 4 have one member: loss 0
    lt = torch.tensor(lab)
    want = ref_circle(e, lab, m, gamma)
    got = L.circle_loss(e, lt, m=m, gamma=gamma, reduction="none")
    torch.testing.assert_close(got, want)
    nz = want[want > 0]
    torch.testing.assert_close(L.CircleLoss(m, gamma)(e, lt), nz.mean())


def test_circle_no_valid_pairs_is_zero_and_large_gamma_finite():
    e = torch.randn(3, 4, dtype=D, requires_grad=True)
    loss = L.circle_loss(e, torch.tensor([0, 1, 2]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(e.grad).all()
    e32 = torch.randn(16, 8, requires_grad=True)
    big = L.circle_loss(e32, torch.arange(16) % 4, gamma=1e4)
    big.backward()
    assert torch.isfinite(big) and torch.isfinite(e32.grad).all()


def test_siglip_matches_loop_and_open_clip_formula():
    g = _gen(4)
    x, y = torch.randn(5, 3, generator=g, dtype=D), torch.randn(5, 3, generator=g, dtype=D)
    want = ref_siglip(x, y, math.log(10), -10.0)
    torch.testing.assert_close(L.sigmoid_pairwise_loss(x, y, math.log(10), -10.0, reduction="none"), want)
    mod = L.SigmoidPairwiseLoss().double()
    assert mod.logit_scale.item() == pytest.approx(math.log(10)) and mod.logit_bias.item() == -10
    # open_clip: -logsigmoid(labels * logits).sum() / batch on pre-normalised features
    xn, yn = F.normalize(x, dim=1), F.normalize(y, dim=1)
    logits = 10.0 * xn @ yn.T - 10.0
    labels = 2 * torch.eye(5, dtype=D) - 1
    torch.testing.assert_close(mod(x, y), -F.logsigmoid(labels * logits).sum() / 5)
    torch.testing.assert_close(L.sigmoid_pairwise_loss(xn, yn, math.log(10), -10.0, normalize=False), mod(x, y))


@pytest.mark.parametrize("method", ["softmax", "contrast"])
def test_ge2e_matches_loop(method):
    g = _gen(5)
    e = torch.randn(3, 4, 5, generator=g, dtype=D)
    want = ref_ge2e(e, 10.0, -5.0, method)
    torch.testing.assert_close(L.ge2e_loss(e, method=method, reduction="none"), want)
    torch.testing.assert_close(L.GE2ELoss(method).double()(e), want.mean())


@pytest.mark.parametrize("complete", [False, True])
def test_iou_losses_match_loop(complete):
    p, gt = _boxes(seed=6), _boxes(seed=7)
    fn = L.complete_iou_loss if complete else L.distance_iou_loss
    torch.testing.assert_close(fn(p, gt, reduction="none"), ref_box(p, gt, complete))
    mod = L.CompleteIoULoss() if complete else L.DistanceIoULoss()
    torch.testing.assert_close(mod(p, gt), ref_box(p, gt, complete).mean())
    same = fn(p, p, reduction="none")
    assert (same.abs() < 1e-6).all()


@pytest.mark.parametrize("complete", [False, True])
def test_iou_losses_match_torchvision(complete):
    ops = pytest.importorskip("torchvision.ops")
    p, gt = _boxes(seed=8), _boxes(seed=9)
    ref = (ops.complete_box_iou_loss if complete else ops.distance_box_iou_loss)(p, gt, reduction="none")
    fn = L.complete_iou_loss if complete else L.distance_iou_loss
    torch.testing.assert_close(fn(p, gt, reduction="none"), ref)


@pytest.mark.parametrize("m,gamma", [(0.4, 80.0), (0.25, 256.0)])
def test_circle_matches_pytorch_metric_learning(m, gamma):
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    g = _gen(10)
    e = torch.randn(12, 6, generator=g, dtype=D)
    lab = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 0, 4, 4, 1])
    torch.testing.assert_close(L.circle_loss(e, lab, m=m, gamma=gamma), pml.CircleLoss(m=m, gamma=gamma)(e, lab))


# --------------------------------------------------------------------- gradcheck
def _gc(fn, *inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)


def test_gradcheck_all_losses():
    o, y = _logits(n=4, c=5)
    o.requires_grad_(True)
    _gc(lambda t: L.squentropy_loss(t, y, reduction="none"), o)
    _gc(lambda t: L.spherical_z_loss(t, y, a=0.5, b=2.0, reduction="none"), o)
    _gc(lambda t: L.comp_sum_loss(t, y, 1.7, reduction="none"), o)
    _gc(lambda t: L.comp_sum_loss(t, y, 1.0), o)
    _gc(lambda t: L.generalized_cross_entropy_loss(t, y, reduction="sum"), o)
    g = _gen(11)
    lp = torch.randn(5, generator=g, dtype=D, requires_grad=True)
    lr = torch.randn(5, generator=g, dtype=D, requires_grad=True)
    _gc(lambda a, b: L.npo_loss(a, b, 0.3, reduction="none"), lp, lr)
    x = torch.randn(5, 3, generator=g, dtype=D, requires_grad=True)
    c = torch.randn(3, 3, generator=g, dtype=D, requires_grad=True)
    _gc(lambda a, b: L.center_loss(a, torch.tensor([0, 1, 2, 0, 1]), b, reduction="none"), x, c)
    xs = torch.randn(4, 3, generator=g, dtype=D, requires_grad=True)
    ys = torch.randn(4, 3, generator=g, dtype=D, requires_grad=True)
    ts = torch.tensor(0.5, dtype=D, requires_grad=True)
    bs = torch.tensor(-1.0, dtype=D, requires_grad=True)
    _gc(lambda a, b, t, s: L.sigmoid_pairwise_loss(a, b, t, s), xs, ys, ts, bs)
    ge = torch.randn(3, 3, 4, generator=g, dtype=D, requires_grad=True)
    w = torch.tensor(2.0, dtype=D, requires_grad=True)
    b = torch.tensor(-1.0, dtype=D, requires_grad=True)
    _gc(lambda t, u, v: L.ge2e_loss(t, u, v, reduction="none"), ge, w, b)
    _gc(lambda t, u, v: L.ge2e_loss(t, u, v, method="contrast", reduction="sum"), ge, w, b)
    p, gt = _boxes(4, seed=12).requires_grad_(True), _boxes(4, seed=13).requires_grad_(True)
    _gc(lambda a, t: L.distance_iou_loss(a, t, reduction="none"), p, gt)


def _central_difference(fn, x, h=1e-6):
    grad = torch.zeros_like(x)
    flat = grad.view(-1)
    for i in range(x.numel()):
        xp, xm = x.clone(), x.clone()
        xp.view(-1)[i] += h
        xm.view(-1)[i] -= h
        flat[i] = (fn(xp) - fn(xm)) / (2 * h)
    return grad


def test_gradients_with_constant_weights():
    """Circle loss (a_p, a_n) and CIoU (alpha) hold weights constant, as their anchors:
    the gradient is the finite difference of the loop reference with frozen weights."""
    g = _gen(17)
    e = torch.randn(6, 4, generator=g, dtype=D, requires_grad=True)
    lab = [0, 0, 1, 1, 2, 2]
    loss = L.circle_loss(e, torch.tensor(lab), m=0.25, gamma=4.0, reduction="sum")
    (got,) = torch.autograd.grad(loss, e)
    e0 = e.detach()
    want = _central_difference(lambda t: ref_circle(t, lab, 0.25, 4.0, weights_from=e0).sum(), e0)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    p, gt = _boxes(4, seed=12).requires_grad_(True), _boxes(4, seed=13)
    (got,) = torch.autograd.grad(L.complete_iou_loss(p, gt, reduction="sum"), p)
    p0 = p.detach()
    want = _central_difference(lambda t: ref_box(t, gt, True, alpha_from=p0).sum(), p0)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_large_vocab_losses_chunked_match_unchunked(monkeypatch):
    o, y = _logits(n=9, c=11, seed=14)
    o.requires_grad_(True)
    full_s = L.squentropy_loss(o, y, reduction="none")
    full_z = L.spherical_z_loss(o, y, reduction="none")
    gs = torch.autograd.grad(full_s.sum(), o)[0]
    gz = torch.autograd.grad(full_z.sum(), o)[0]
    monkeypatch.setattr(L._common, "_CHUNK_ELEMENTS", 20)  # 1 row per chunk
    torch.testing.assert_close(L.squentropy_loss(o, y, reduction="none"), full_s)
    torch.testing.assert_close(L.spherical_z_loss(o, y, reduction="none"), full_z)
    _gc(lambda t: L.squentropy_loss(t, y, reduction="none"), o)
    _gc(lambda t: L.spherical_z_loss(t, y, reduction="none"), o)
    torch.testing.assert_close(torch.autograd.grad(L.squentropy_loss(o, y).sum() * 9, o)[0], gs)
    torch.testing.assert_close(torch.autograd.grad(L.spherical_z_loss(o, y).sum() * 9, o)[0], gz)


# --------------------------------------------------------------- dtypes, stability
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["squentropy_loss", "spherical_z_loss", "comp_sum_loss"])
def test_half_inputs_computed_in_fp32(dtype, name):
    o, y = _logits(n=5, c=6, seed=15, dtype=dtype)
    fn = getattr(L, name)
    args = (1.5,) if name == "comp_sum_loss" else ()
    oh = o.clone().requires_grad_(True)
    got = fn(oh, y, *args, reduction="none")
    assert got.dtype == torch.float32
    want = fn(o.double(), y, *args, reduction="none")
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    got.sum().backward()
    assert oh.grad.dtype == dtype and torch.isfinite(oh.grad.float()).all()


def test_large_logits_are_stable():
    o = torch.tensor([[1e4, -1e4, 0.0], [300.0, 299.0, -50.0]], requires_grad=True)
    y = torch.tensor([1, 0])
    for loss in (L.squentropy_loss(o, y), L.spherical_z_loss(o, y), L.comp_sum_loss(o, y, 1.5),
                 L.generalized_cross_entropy_loss(o, y), L.comp_sum_loss(o, y, 1.0)):
        assert torch.isfinite(loss)
        (g,) = torch.autograd.grad(loss, o)
        assert torch.isfinite(g).all()
    lp = torch.tensor([1e4, -1e4], requires_grad=True)
    assert torch.isfinite(L.npo_loss(lp, torch.zeros(2)))


def test_z_loss_constant_logits_finite():
    o = torch.zeros(2, 4, requires_grad=True)
    loss = L.spherical_z_loss(o, torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(o.grad).all()


def test_reductions_and_batch_dims():
    o, y = _logits(n=12, c=5, seed=16)
    o3, y3 = o.reshape(3, 4, 5), y.reshape(3, 4)
    none = L.squentropy_loss(o3, y3, reduction="none")
    assert none.shape == (3, 4)
    torch.testing.assert_close(L.squentropy_loss(o3, y3, reduction="sum"), none.sum())
    torch.testing.assert_close(L.squentropy_loss(o3, y3), none.mean())
    torch.testing.assert_close(L.spherical_z_loss(o3, y3, reduction="none").reshape(-1),
                               L.spherical_z_loss(o, y, reduction="none"))


# -------------------------------------------------------------------- bad input
def test_bad_labels_raise_value_error():
    o, y = _logits()
    for fn in (L.squentropy_loss, L.spherical_z_loss, L.generalized_cross_entropy_loss,
               lambda a, b: L.comp_sum_loss(a, b, 1.5)):
        with pytest.raises(thrifty.InvalidInputError, match="outside"):
            fn(o, torch.full_like(y, 5))
        with pytest.raises(ValueError, match="outside"):
            fn(o, torch.full_like(y, -1))
        with pytest.raises(ValueError, match="shape"):
            fn(o, y[:-1])
        with pytest.raises(ValueError, match="integer"):
            fn(o, y.double())
        with pytest.raises(ValueError, match="floating"):
            fn(o.long(), y)
    with pytest.raises(ValueError, match="outside"):
        L.CenterLoss(3, 5)(torch.randn(2, 5), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="dimensions"):
        L.CenterLoss(3, 5)(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="empty"):
        L.squentropy_loss(torch.empty(0, 3), torch.empty(0, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 classes"):
        L.squentropy_loss(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))


def test_bad_parameters_raise():
    o, y = _logits()
    with pytest.raises(ValueError, match="reduction"):
        L.squentropy_loss(o, y, reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        L.SphericalZLoss(reduction="max")
    with pytest.raises(ValueError, match="a must"):
        L.spherical_z_loss(o, y, a=0.0)
    with pytest.raises(ValueError, match="b must"):
        L.spherical_z_loss(o, y, b=float("nan"))
    with pytest.raises(ValueError, match="tau"):
        L.comp_sum_loss(o, y, -0.5)
    for q in (0.0, 1.5, float("inf"), "x"):
        with pytest.raises(ValueError, match="q must"):
            L.generalized_cross_entropy_loss(o, y, q)
    with pytest.raises(ValueError, match="beta"):
        L.npo_loss(torch.zeros(2), torch.zeros(2), beta=0)
    with pytest.raises(ValueError, match="shape"):
        L.npo_loss(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="gamma"):
        L.CircleLoss(gamma=-1)
    with pytest.raises(ValueError, match="labels"):
        L.circle_loss(torch.randn(4, 3), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="same shape"):
        L.sigmoid_pairwise_loss(torch.randn(3, 2), torch.randn(4, 2), 0.0, 0.0)
    with pytest.raises(ValueError, match="method"):
        L.GE2ELoss("triplet")
    with pytest.raises(ValueError, match="utterances"):
        L.ge2e_loss(torch.randn(3, 1, 4))
    with pytest.raises(ValueError, match="num_classes"):
        L.CenterLoss(0, 3)


def test_degenerate_or_bad_boxes_raise_instead_of_nan():
    good = _boxes(2)
    flat = good.clone()
    flat[0, 3] = flat[0, 1]  # zero height
    for fn in (L.distance_iou_loss, L.complete_iou_loss):
        with pytest.raises(ValueError, match="degenerate"):
            fn(flat, good)
        with pytest.raises(ValueError, match="degenerate"):
            fn(good, good[:, [2, 3, 0, 1]])  # x2 < x1
        with pytest.raises(ValueError, match="NaN"):
            fn(good, torch.full_like(good, float("nan")))
        for pos, v in ((2, float("inf")), (0, float("-inf")), (1, float("nan"))):
            bad = good.clone()
            bad[1, pos] = v
            with pytest.raises(ValueError, match="NaN or infinite"):
                fn(bad, good)
        with pytest.raises(ValueError, match=r"\(\*, 4\)"):
            fn(good[:, :3], good[:, :3])
    # finite boxes whose width overflows float32 are valid input (the quick check's
    # width is infinite; the full check accepts them)
    huge = torch.tensor([[-3e38, 0.0, 3e38, 1.0]])
    for fn in (L.distance_iou_loss, L.complete_iou_loss):
        fn(huge, huge)  # no InvalidInputError


def test_squentropy_square_term_exact_when_target_logit_dominates():
    # sum(o**2) - o_y**2 would cancel catastrophically in float32 here
    o = torch.tensor([[1000.0, 1e-3, -2e-3], [0.5, 0.1, 3.0], [-800.0, 1.0, 2.0]])
    y = torch.tensor([0, 2, 0])
    got = L.squentropy_loss(o, y, reduction="none")
    torch.testing.assert_close(got.double(), ref_squentropy(o.double(), y), rtol=1e-6, atol=0)


# ------------------------------------------------------------------- ignore_index
_IGNORE_LOSSES = {
    "squentropy": (lambda o, y, **kw: L.squentropy_loss(o, y, **kw), ref_squentropy),
    "z": (lambda o, y, **kw: L.spherical_z_loss(o, y, a=0.5, b=2.0, **kw), lambda o, y: ref_zloss(o, y, 0.5, 2.0)),
    "comp_sum": (lambda o, y, **kw: L.comp_sum_loss(o, y, 1.5, **kw), lambda o, y: ref_comp_sum(o, y, 1.5)),
    "gce": (lambda o, y, **kw: L.generalized_cross_entropy_loss(o, y, 0.7, **kw), lambda o, y: ref_comp_sum(o, y, 1.7)),
    "ce": (lambda o, y, **kw: L.comp_sum_loss(o, y, 1.0, **kw), lambda o, y: ref_comp_sum(o, y, 1.0)),
}


def _ref_ignored(ref, o, y, ignore, reduction):
    """Loop reference with F.cross_entropy's semantics: ignored rows give 0, "mean"
    divides by the number of kept rows."""
    keep = [i for i in range(len(y)) if int(y[i]) != ignore]
    per_row = torch.zeros(len(y), dtype=D)
    if keep:
        per_row[keep] = ref(o[keep], y[keep])
    if reduction == "none":
        return per_row
    if reduction == "sum":
        return per_row.sum()
    return per_row.sum() / max(len(keep), 1)


@pytest.mark.parametrize("name", sorted(_IGNORE_LOSSES))
@pytest.mark.parametrize("ignore", [-100, 2, 7])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ignore_index_matches_loop(name, ignore, reduction):
    fn, ref = _IGNORE_LOSSES[name]
    o, y = _logits(n=8, c=5, seed=21)
    y = y.clone()
    y[[1, 4, 5]] = ignore
    got = fn(o, y, reduction=reduction, ignore_index=ignore)
    torch.testing.assert_close(got, _ref_ignored(ref, o, y, ignore, reduction))
    ot = o.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(ot, y, reduction="sum", ignore_index=ignore), ot)
    kept = y != ignore
    assert kept.sum() >= 4 and (grad[~kept] == 0).all() and (grad[kept] != 0).any(1).all()
    _gc(lambda t: fn(t, y, reduction=reduction, ignore_index=ignore), ot)


def test_ignore_index_mean_has_cross_entropy_semantics():
    o, y = _logits(n=10, c=6, seed=22)
    y = y.clone()
    y[::3] = -100
    ot = o.clone().requires_grad_(True)
    ref = F.cross_entropy(ot, y)
    got = L.comp_sum_loss(ot, y, 1.0)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(torch.autograd.grad(got, ot)[0], torch.autograd.grad(ref, ot)[0])
    # batch dimensions: (N, T, C) logits with (N, T) targets, as a padded sequence batch
    o3, y3 = o.reshape(2, 5, 6), y.reshape(2, 5)
    for fn in (L.squentropy_loss, L.spherical_z_loss):
        torch.testing.assert_close(fn(o3, y3), fn(o, y))
        assert fn(o3, y3, reduction="none").shape == (2, 5)
        assert (fn(o3, y3, reduction="none")[y3 == -100] == 0).all()


@pytest.mark.parametrize("name", sorted(_IGNORE_LOSSES))
def test_all_ignored_is_zero_with_zero_gradient(name):
    fn, _ = _IGNORE_LOSSES[name]
    o = torch.randn(4, 5, dtype=D, generator=_gen(23))
    # padded positions often carry -inf logits: still no NaN
    o[1] = float("-inf")
    ot = o.requires_grad_(True)
    y = torch.full((4,), -100)
    for reduction in ("mean", "sum"):
        loss = fn(ot, y, reduction=reduction)
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, ot)
        assert (grad == 0).all()
    assert (fn(ot, y, reduction="none") == 0).all()
    y2 = torch.tensor([0, -100, 3, -100])  # the -inf row ignored, others finite
    (grad,) = torch.autograd.grad(fn(ot, y2), ot)
    assert torch.isfinite(grad).all() and (grad[1] == 0).all()


def test_ignore_index_in_large_vocab_chunks(monkeypatch):
    o, y = _logits(n=9, c=11, seed=24)
    y = y.clone()
    y[[0, 5, 8]] = -100
    o.requires_grad_(True)
    full = [L.squentropy_loss(o, y, reduction="none"), L.spherical_z_loss(o, y, reduction="none")]
    monkeypatch.setattr(L._common, "_CHUNK_ELEMENTS", 20)
    torch.testing.assert_close(L.squentropy_loss(o, y, reduction="none"), full[0])
    torch.testing.assert_close(L.spherical_z_loss(o, y, reduction="none"), full[1])
    _gc(lambda t: L.squentropy_loss(t, y), o)
    _gc(lambda t: L.spherical_z_loss(t, y), o)


def test_ignore_index_modules_and_bad_values():
    o, y = _logits(n=6, c=5, seed=25)
    y = y.clone()
    y[0] = 4
    for module, fn in ((L.SquentropyLoss(ignore_index=4), L.squentropy_loss),
                       (L.SphericalZLoss(ignore_index=4), L.spherical_z_loss),
                       (L.CompSumLoss(1.5, ignore_index=4), lambda a, b, **kw: L.comp_sum_loss(a, b, 1.5, **kw)),
                       (L.GeneralizedCrossEntropyLoss(ignore_index=4), L.generalized_cross_entropy_loss)):
        torch.testing.assert_close(module(o, y), fn(o, y, ignore_index=4))
        assert not torch.allclose(module(o, y), fn(o, y))
    # labels other than ignore_index stay checked
    bad = y.clone()
    bad[1] = -1
    for fn in (L.squentropy_loss, L.spherical_z_loss, L.generalized_cross_entropy_loss):
        with pytest.raises(ValueError, match="outside"):
            fn(o, bad)
        bad[1] = 5
        with pytest.raises(ValueError, match="ignore_index=-100"):
            fn(o, bad)
        bad[1] = -1
    with pytest.raises(ValueError, match="ignore_index"):
        L.squentropy_loss(o, y, ignore_index=1.5)
    with pytest.raises(ValueError, match="ignore_index"):
        L.SphericalZLoss(ignore_index=True)
