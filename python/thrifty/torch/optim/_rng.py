"""Per-step random streams that survive a state_dict round trip (private)."""

from __future__ import annotations

import torch

_MIX = 0x9E3779B97F4A7C15


def step_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for update ``step`` of a run seeded ``seed``: ``(seed * golden + step)``
    modulo 2**63, so it is reproducible without keeping generator state."""
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * _MIX + int(step)) % (1 << 63))
    return g


class StepGenerators:
    """One :func:`step_generator` per device, created on first use (CUDA parameters need
    a CUDA generator)."""

    def __init__(self, seed: int, step: int) -> None:
        self.seed, self.step = seed, step
        self._gens: dict[torch.device, torch.Generator] = {}

    def __call__(self, device: torch.device) -> torch.Generator:
        if device not in self._gens:
            self._gens[device] = step_generator(self.seed, self.step, device)
        return self._gens[device]
