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
