"""The progress-callback contract: ``total`` is a positive int or ``None``, never 0."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

from thrifty import _core, prune
from thrifty._progress import progress_callback


def test_unknown_total_reaches_the_callback_as_none():
    seen = []
    with progress_callback(lambda d, t: seen.append((d, t)), desc="x") as cb:
        cb(0, 0)  # what the core reports before a phase declares its size
        cb(3, 0)
        cb(3, 10)
        cb(10, 10)
    assert seen == [(0, None), (3, None), (3, 10), (10, 10)]
    assert all(type(d) is int and (t is None or type(t) is int) for d, t in seen)


def test_a_ratio_callback_never_divides_by_zero():
    x = np.random.default_rng(0).normal(size=(3000, 8)).astype(np.float32)
    seen = []

    def ratio(done, total):
        if total is not None:
            seen.append(done / total)  # the pattern users write; 0 would raise here

    prune.dbp(x, keep_fraction=0.5, n_clusters=8, dedup_eps=0.01, progress=ratio)
    with progress_callback(ratio, desc="x") as cb:
        _core._busy(3, 1, cb)
        cb(0, 0)
    assert seen and seen[-1] == 1.0 and all(0.0 <= r <= 1.0 for r in seen)


def test_text_bar_draws_unknown_total_as_a_spinner(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # the built-in bar
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    with progress_callback(True, desc="k-means", unit="it") as cb:
        cb(0, 0)
        cb(4, 0)
        cb(2, 8)
    frames = buf.getvalue().split("\r")[1:]
    assert frames[0].startswith("k-means: / (0 it)") and frames[1].startswith("k-means: - (4 it)")
    assert frames[2].startswith("k-means:  25.0% (2/8 it)")
    assert "0/0" not in buf.getvalue() and "100.0%" not in buf.getvalue()
    assert len(frames[2].rstrip("\n")) >= len(frames[1])  # a longer frame is fully overwritten


def test_tqdm_bar_switches_from_unknown_to_known_total(monkeypatch):
    pytest.importorskip("tqdm")
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    pc = progress_callback(True, desc="phase", unit="it")
    with pc as cb:
        cb(0, 0)
        cb(5, 0)
        bar = pc._sink.bar  # tqdm throttles drawing, so check its state, then the text
        assert bar.total is None and bar.n == 5
        cb(5, 20)
        assert bar.total == 20 and bar.n == 5
        cb(20, 20)
    text = buf.getvalue()
    assert "0/0" not in text and "20/20" in text and "0it" in text
