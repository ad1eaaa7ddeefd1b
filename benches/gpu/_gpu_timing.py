"""Timing, peak-memory and output helpers shared by the GPU benchmarks in benches/gpu
(CUDA events, median). The scripts run as ``python benches/gpu/<script>.py`` and import
this module from their own folder."""

from __future__ import annotations

import json
import statistics
from typing import Any, Callable


def timed(fn: Callable[[], Any], repeats: int = 5, warmup: int = 2) -> float:
    """Median seconds of ``fn`` on the current stream."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


def peak_extra(fn: Callable[[], Any]) -> int:
    """Bytes ``fn`` allocates on top of what is live when it starts (peak)."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def device_line() -> str:
    import torch

    return (f"{torch.cuda.get_device_name()} | torch {torch.__version__} CUDA {torch.version.cuda}")


def dump(path: str | None, payload: dict[str, Any], indent: int = 2) -> None:
    """Write ``payload`` as JSON to ``path`` (nothing when ``path`` is empty or None)."""
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=indent)
