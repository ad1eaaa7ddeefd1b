"""thrifty.torch.schedules and thrifty.torch.averaging against written-out formulas."""

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import thrifty  # noqa: E402
from thrifty.torch.averaging import WeightInterpolation, greedy_soup, model_stock, uniform_soup  # noqa: E402
from thrifty.torch.schedules import infinite, wsd  # noqa: E402


def make_opt(lrs=(1.0, 0.1)):
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs], lr=1.0)


def trace(opt, sched, n, hook=None):
    out = []
    for k in range(n):
        if hook:
            hook(k)
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return np.array(out)


@pytest.mark.parametrize("cooldown", ["linear", "1-sqrt"])
def test_wsd_matches_formula(cooldown):
    opt = make_opt()
    lrs = trace(opt, wsd(opt, warmup_steps=5, total_steps=50, cooldown=cooldown, final_lr_ratio=0.1), 55)
    ref = []
    for s in range(55):
        if s < 5:
            f = (s + 1) / 5
        elif s < 40:
            f = 1.0
        else:
            u = min(1.0, (s - 39) / 10)
            f = 1 - 0.9 * u if cooldown == "linear" else 0.1 + 0.9 * (1 - math.sqrt(u))
        ref.append(f)
    np.testing.assert_allclose(lrs[:, 0], ref, rtol=1e-12)
    np.testing.assert_allclose(lrs[:, 1], 0.1 * np.array(ref), rtol=1e-12)
    assert lrs[49, 0] == pytest.approx(0.1)  # the final step reaches the final ratio


def test_infinite_phases_and_state_dict():
    opt = make_opt()
    sched = infinite(opt, warmup_steps=3, cooldown_steps=4, constant_ratio=0.3, anneal_steps=5)
    lrs = trace(opt, sched, 12)[:, 0]
    ref = [1 / 3, 2 / 3, 1.0] + [0.3 + 0.7 * 0.5 * (1 + math.cos(math.pi * j / 4)) for j in range(1, 5)] + [0.3] * 5
    np.testing.assert_allclose(lrs, ref, rtol=1e-12)
    sched.start_anneal()
    state = sched.state_dict()
    opt2 = make_opt()
    sched2 = infinite(opt2, warmup_steps=3, cooldown_steps=4, constant_ratio=0.3, anneal_steps=5)
    sched2.load_state_dict(state)
    assert sched2.anneal_start == 12
    tail = [sched2.factor(s) for s in range(12, 19)]
    np.testing.assert_allclose(tail, [0.3 * (1 - j / 5) for j in range(1, 6)] + [0.0, 0.0], atol=1e-15)


def test_wsd_resume_from_state_dict():
    opt = make_opt()
    sched = wsd(opt, warmup_steps=2, total_steps=20)
    full = trace(opt, sched, 20)
    opt2 = make_opt()
    s2 = wsd(opt2, warmup_steps=2, total_steps=20)
    trace(opt2, s2, 8)
    opt3 = make_opt()
    s3 = wsd(opt3, warmup_steps=2, total_steps=20)
    s3.load_state_dict(s2.state_dict())
    for g in opt3.param_groups:
        g["lr"] = s3.get_last_lr()[opt3.param_groups.index(g)]
    np.testing.assert_allclose(trace(opt3, s3, 12), full[8:], rtol=1e-12)


def test_schedules_reject_bad_arguments():
    opt = make_opt()
    with pytest.raises(thrifty.InvalidInputError, match="exceed"):
        wsd(opt, warmup_steps=90, total_steps=100)
    with pytest.raises(thrifty.InvalidInputError, match="cooldown"):
        wsd(opt, warmup_steps=1, total_steps=10, cooldown="cosine")
    with pytest.raises(thrifty.InvalidInputError, match="total_steps"):
        wsd(opt, warmup_steps=0, total_steps=0)
    with pytest.raises(thrifty.InvalidInputError, match="final_lr_ratio"):
        wsd(opt, warmup_steps=1, total_steps=10, final_lr_ratio=-0.1)
    with pytest.raises(thrifty.InvalidInputError, match="constant_ratio"):
        infinite(opt, warmup_steps=1, cooldown_steps=1, constant_ratio=0.0, anneal_steps=1)
    with pytest.raises(thrifty.InvalidInputError, match="anneal_steps"):
        infinite(opt, warmup_steps=1, cooldown_steps=1, constant_ratio=0.5, anneal_steps=0)


def random_sds(k, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [
        {"a": torch.randn(3, 4, generator=g).to(dtype), "b": torch.randn(5, generator=g).to(dtype),
         "n": torch.tensor(7)}
        for _ in range(k)
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_uniform_soup_is_the_mean(dtype):
    sds = random_sds(4, dtype=dtype)
    soup = uniform_soup(sds)
    for key in ("a", "b"):
        ref = np.mean([sd[key].double().numpy() for sd in sds], axis=0)
        assert soup[key].dtype == dtype
        np.testing.assert_allclose(soup[key].double().numpy(), ref, rtol=1e-2 if dtype == torch.bfloat16 else 1e-6)
    assert int(soup["n"]) == 7


def test_greedy_soup_matches_brute_reference():
    sds = random_sds(5, seed=1)
    target = torch.randn(3, 4, generator=torch.Generator().manual_seed(9))

    def evaluate(sd):
        return -float(((sd["a"] - target) ** 2).sum())

    got = greedy_soup(sds, evaluate)
    order = sorted(range(5), key=lambda i: -evaluate(sds[i]))
    chosen = [order[0]]
    best = evaluate(sds[order[0]])
    for i in order[1:]:
        cand = {k: torch.stack([sds[j][k].double() for j in chosen + [i]]).mean(0) for k in ("a", "b")}
        score = -float(((cand["a"] - target.double()) ** 2).sum())
        if score > best:
            chosen, best = chosen + [i], score
    ref = {k: torch.stack([sds[j][k].double() for j in chosen]).mean(0) for k in ("a", "b")}
    for k in ("a", "b"):
        torch.testing.assert_close(got[k].double(), ref[k], rtol=1e-6, atol=1e-6)


def test_model_stock_matches_formula():
    w0 = random_sds(1, seed=2, dtype=torch.float64)[0]
    fts = [{k: v + 0.3 * torch.randn_like(v) if v.is_floating_point() else v for k, v in w0.items()} for _ in range(3)]
    shared = torch.randn(3, 4, dtype=torch.float64)
    for sd in fts:
        sd["a"] = sd["a"] + shared  # correlated deltas: cos > 0
    out = model_stock(w0, fts)
    for key in ("a", "b"):
        d = [(sd[key] - w0[key]).reshape(-1).numpy() for sd in fts]
        cos = np.mean([np.dot(x, y) / np.linalg.norm(x) / np.linalg.norm(y) for x, y in itertools.combinations(d, 2)])
        t = 3 * cos / (1 + 2 * cos)
        ref = t * np.mean([sd[key].numpy() for sd in fts], axis=0) + (1 - t) * w0[key].numpy()
        np.testing.assert_allclose(out[key].numpy(), ref, rtol=1e-12)
    with pytest.raises(thrifty.InvalidInputError, match="at least"):
        model_stock(w0, fts[:1])
    with pytest.raises(thrifty.InvalidInputError, match="shape"):
        model_stock(w0, [fts[0], {**fts[1], "b": torch.zeros(4, dtype=torch.float64)}])
    with pytest.raises(thrifty.InvalidInputError, match="keys"):
        uniform_soup([{"a": torch.zeros(1)}, {"c": torch.zeros(1)}])


def test_weight_interpolation_is_an_ema(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    wi = WeightInterpolation(model, momentum=0.8)
    ref = {k: v.detach().clone().double() for k, v in model.state_dict().items()}
    for _ in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(4, 2))
        wi.step()
        for k, v in model.state_dict().items():
            ref[k] = 0.8 * ref[k] + 0.2 * v.double() if v.is_floating_point() else v.double()
    got = wi.averaged_state_dict()
    for k in ref:
        torch.testing.assert_close(got[k].double(), ref[k], rtol=1e-5, atol=1e-6)
    torch.save(wi.state_dict(), tmp_path / "wi.pt")
    wi2 = WeightInterpolation(model, momentum=0.5)
    wi2.load_state_dict(torch.load(tmp_path / "wi.pt", weights_only=True))
    assert wi2.momentum == 0.8
    assert torch.equal(wi2.averaged_model()[0].weight, got["0.weight"])
    with pytest.raises(thrifty.InvalidInputError, match="momentum"):
        WeightInterpolation(model, momentum=1.5)
