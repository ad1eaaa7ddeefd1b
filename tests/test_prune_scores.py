"""thrifty.prune.scores against plain-Python loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

import thrifty
from thrifty.prune import scores


def test_el2n_matches_loop():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 20, 5))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    y = rng.integers(0, 5, 20)
    ref = [sum(math.sqrt(sum((p[r, i, c] - (c == y[i])) ** 2 for c in range(5)))
               for r in range(3)) / 3 for i in range(20)]
    np.testing.assert_allclose(scores.el2n(p, y), ref, rtol=1e-12)
    np.testing.assert_allclose(scores.el2n(p[0], y)[0],
                               math.sqrt(sum((p[0, 0, c] - (c == y[0])) ** 2 for c in range(5))))


def _loop_forget(c):
    out = []
    for i in range(c.shape[1]):
        col = c[:, i].tolist()
        if not any(col):
            out.append(math.inf)
        else:
            out.append(float(sum(a and not b for a, b in zip(col, col[1:]))))
    return out


def _loop_first(c, k):
    out = []
    for i in range(c.shape[1]):
        col = c[:, i].tolist()
        v = math.inf
        for e in range(len(col) - k + 1):
            if all(col[e:e + k]):
                v = float(e)
                break
        out.append(v)
    return out


def test_forgetting_and_late_stopping_match_loops():
    c = np.random.default_rng(1).random((12, 50)) < 0.6
    c[:, 0] = False
    assert scores.forgetting_events(c).tolist() == _loop_forget(c)
    for k in (1, 2, 3):
        assert scores.first_consistent_epoch(c, k).tolist() == _loop_first(c, k)


def test_select():
    s = np.array([0.5, 0.9, 0.5, 0.1, 0.9])
    assert scores.select(s, 0.4).tolist() == [1, 4]
    assert scores.select(s, 0.4, keep="low").tolist() == [0, 3]  # ties by index
    assert scores.select(s, 0.01).tolist() == [1]


@pytest.mark.parametrize("call", [
    lambda: scores.el2n(np.ones((2, 3)) / 3, np.array([0, 3])),
    lambda: scores.el2n(np.ones((2, 3)) / 3, np.array([0])),
    lambda: scores.forgetting_events(np.ones((3, 2), int)),
    lambda: scores.first_consistent_epoch(np.ones((3, 2), bool), 4),
    lambda: scores.select([1.0, np.nan], 0.5),
    lambda: scores.select([1.0, 2.0], 0.0),
])
def test_bad_input(call):
    with pytest.raises(thrifty.InvalidInputError):
        call()
