"""The GPU benchmark scripts (benches/gpu) without a GPU: each one starts and parses its
command line (so its import of the shared ``_gpu_timing`` helpers works), and the shared
helpers time with CUDA events (median of the repeats, after the warm-up calls) and write
JSON. torch.cuda is replaced by a stand-in."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

GPU_BENCHES = Path(__file__).resolve().parents[1] / "benches" / "gpu"
SCRIPTS = sorted(p.name for p in GPU_BENCHES.glob("bench_*.py"))


@pytest.fixture
def load(monkeypatch):
    """Import a script of benches/gpu (which imports its sibling ``_gpu_timing``)."""
    monkeypatch.syspath_prepend(str(GPU_BENCHES))

    def _load(name: str):
        spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), GPU_BENCHES / name)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return _load


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_parses_its_command_line(script):
    out = subprocess.run([sys.executable, str(GPU_BENCHES / script), "--help"],
                         capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert "--json" in out.stdout


@pytest.fixture
def fake_cuda(monkeypatch):
    torch = pytest.importorskip("torch")
    calls = []
    elapsed_ms = iter([40.0, 10.0, 30.0, 20.0, 50.0, 5.0, 7.0])

    class Event:
        def __init__(self, enable_timing=False):
            assert enable_timing

        def record(self):
            calls.append("record")

        def synchronize(self):
            calls.append("event-sync")

        def elapsed_time(self, end):
            return next(elapsed_ms)

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: calls.append("sync"))
    return calls


def test_timed_is_the_median_in_seconds_after_warmup(fake_cuda, load):
    timing = load("_gpu_timing.py")
    n = []
    t = timing.timed(lambda: n.append(1), repeats=5, warmup=2)
    assert t == 30.0 / 1e3
    assert len(n) == 7 and fake_cuda[0] == "sync" and fake_cuda.count("record") == 10


def test_bitlinear_times_in_milliseconds(fake_cuda, load):
    bench = load("bench_bitlinear.py")
    n = []
    assert bench.timed_ms(lambda: n.append(1), 3) == pytest.approx(30.0)  # median of 40, 10, 30 ms
    assert len(n) == 6  # three warm-up calls


def test_dump(tmp_path, load):
    timing = load("_gpu_timing.py")
    timing.dump(None, {"a": 1})
    timing.dump("", {"a": 1})
    p = tmp_path / "out.json"
    timing.dump(str(p), {"a": [1, 2]}, indent=1)
    assert p.read_text() == json.dumps({"a": [1, 2]}, indent=1)
    assert json.loads(p.read_text()) == {"a": [1, 2]}
    timing.dump(str(p), {"a": 1})
    assert p.read_text() == json.dumps({"a": 1}, indent=2)
