"""thrifty.data.TemperatureSampler and LossFilter against short numpy references."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

import thrifty
from thrifty.data import LossFilter, TemperatureSampler, loss_filter


def ref_probs(sizes, t):
    w = np.asarray(sizes, dtype=np.float64) ** (1.0 / t)
    return w / w.sum()


def test_probabilities_match_formula():
    sizes = [100_000, 5_000, 300, 7]
    for t in [1.0, 2.0, 5.0, 100.0]:
        s = TemperatureSampler(sizes, temperature=t)
        np.testing.assert_allclose(s.probabilities(), ref_probs(sizes, t), rtol=1e-12)
    # T = 1 is proportional sampling
    np.testing.assert_allclose(TemperatureSampler(sizes, temperature=1.0).probabilities(),
                               np.asarray(sizes) / sum(sizes), rtol=1e-12)


def test_cooldown_schedule_lowers_temperature():
    s = TemperatureSampler([1000, 10], temperature=5.0, cooldown=(1.0, 100, 300))
    for step, t in [(0, 5.0), (100, 5.0), (200, 3.0), (250, 2.0), (300, 1.0), (10**6, 1.0)]:
        assert s.temperature_at(step) == pytest.approx(t)
        np.testing.assert_allclose(s.probabilities(step), ref_probs([1000, 10], t), rtol=1e-12)
    # the small domain's share falls as the temperature cools
    assert s.probabilities(0)[1] > s.probabilities(200)[1] > s.probabilities(300)[1]


def test_empirical_frequencies_match():
    sizes = [20_000, 2_000, 200, 20]
    s = TemperatureSampler(sizes, temperature=3.0, seed=7)
    d, idx = s.sample(100_000)
    freq = np.bincount(d, minlength=4) / d.size
    p = ref_probs(sizes, 3.0)
    # 5 standard errors
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / d.size))
    # indices lie inside their domain and each pass over a domain is a permutation
    assert np.all(idx < np.asarray(sizes)[d])
    small = idx[d == 3]
    for k in range(len(small) // 20):
        assert sorted(small[k * 20:(k + 1) * 20].tolist()) == list(range(20))


def test_empirical_frequencies_follow_cooldown():
    s = TemperatureSampler([10_000, 100], temperature=10.0, cooldown=(1.0, 0, 0))
    d, _ = s.sample(50_000)
    p = ref_probs([10_000, 100], 1.0)[1]
    assert abs((d == 1).mean() - p) < 5 * np.sqrt(p * (1 - p) / d.size)


def test_iteration_and_resume_reproduce_the_stream():
    a = TemperatureSampler([50, 30, 20], temperature=2.0, seed=1, cooldown=(1.0, 10, 500))
    d, i = a.sample(3000)
    b = TemperatureSampler([50, 30, 20], temperature=2.0, seed=1, cooldown=(1.0, 10, 500))
    b.sample(1234)
    state = b.state_dict()
    c = TemperatureSampler([50, 30, 20], temperature=2.0, seed=1, cooldown=(1.0, 10, 500))
    c.load_state_dict(state)
    d2, i2 = c.sample(3000 - 1234)
    np.testing.assert_array_equal(d[1234:], d2)
    np.testing.assert_array_equal(i[1234:], i2)
    it = iter(TemperatureSampler([50, 30, 20], temperature=2.0, seed=1, cooldown=(1.0, 10, 500)))
    pairs = [next(it) for _ in range(100)]
    assert pairs == list(zip(d[:100].tolist(), i[:100].tolist()))


def test_loss_weights_give_same_expected_loss():
    sizes = [9000, 900, 100]
    s = TemperatureSampler(sizes, temperature=4.0)
    q = np.asarray(sizes) / sum(sizes)
    w = s.loss_weights()
    np.testing.assert_allclose(q * w, ref_probs(sizes, 4.0), rtol=1e-12)
    np.testing.assert_allclose(s.loss_weights([2, 0, 2]), w[[2, 0, 2]])
    # a random per-domain loss: weighted proportional expectation == temperature expectation
    loss = np.array([0.3, 1.1, 2.5])
    assert (q * w * loss).sum() == pytest.approx((ref_probs(sizes, 4.0) * loss).sum())


def test_sampler_bad_input():
    bad = thrifty.InvalidInputError
    with pytest.raises(bad, match="sizes"):
        TemperatureSampler([], temperature=1.0)
    with pytest.raises(bad, match="positive"):
        TemperatureSampler([0, 0], temperature=1.0)
    with pytest.raises(bad, match=">= 0"):
        TemperatureSampler([5, -1], temperature=1.0)
    with pytest.raises(bad, match="temperature"):
        TemperatureSampler([5], temperature=0.0)
    with pytest.raises(bad, match="temperature"):
        TemperatureSampler([5], temperature=float("nan"))
    with pytest.raises(bad, match="cooldown"):
        TemperatureSampler([5], temperature=2.0, cooldown=(1.0, 10, 5))
    with pytest.raises(bad, match="cooldown"):
        TemperatureSampler([5], temperature=2.0, cooldown=(1.0, 10))
    s = TemperatureSampler([5, 5], temperature=1.0)
    with pytest.raises(bad, match="domains"):
        s.loss_weights([2])
    with pytest.raises(bad, match="counts"):
        s.load_state_dict({"step": 1, "counts": [1]})


def reference_filter(batches, warmup, window):
    """The rule, written out: warm-up keeps all and tracks the window mean."""
    hist = deque(maxlen=window)
    thr = None
    masks, seen, skipped = [], 0, 0
    for step, losses in enumerate(batches):
        if step < warmup or thr is None:
            hist.extend(losses)
            thr = sum(hist) / len(hist)
            m = [True] * len(losses)
        else:
            m = [x >= thr for x in losses]
        seen += len(losses)
        skipped += m.count(False)
        masks.append(m)
    return masks, thr, skipped / seen


def test_loss_filter_matches_reference_rule():
    rng = np.random.default_rng(3)
    batches = [rng.exponential(1.0 / (1 + s / 10), size=16).tolist() for s in range(60)]
    f = LossFilter(warmup_steps=20, window=64)
    got = [f(np.asarray(b)).tolist() for b in batches]
    masks, thr, frac = reference_filter(batches, 20, 64)
    assert got == masks
    assert f.threshold_ == pytest.approx(thr, rel=1e-12)
    assert f.skipped_fraction == pytest.approx(frac)
    assert 0.3 < f.skipped_fraction < 1.0  # the losses fall, so most late examples skip
    assert f.steps == 60


def test_stateless_loss_filter():
    x = np.array([0.5, 3.0, 1.0, 2.0], dtype=np.float32)
    np.testing.assert_array_equal(loss_filter(x), x >= x.mean())
    np.testing.assert_array_equal(loss_filter(x, threshold=1.0), x >= 1.0)
    assert loss_filter([]).shape == (0,)


def test_loss_filter_bad_input():
    bad = thrifty.InvalidInputError
    with pytest.raises(bad, match="window"):
        LossFilter(warmup_steps=1, window=0)
    with pytest.raises(bad, match="warmup_steps"):
        LossFilter(warmup_steps=-1)
    f = LossFilter(warmup_steps=1)
    with pytest.raises(bad, match="finite"):
        f([1.0, float("nan")])
    with pytest.raises(bad, match="1-D"):
        f(np.ones((2, 2)))
    with pytest.raises(bad, match="numeric"):
        f(np.array(["a"]))
    with pytest.raises(bad, match="finite"):
        loss_filter([1.0, float("inf")])
