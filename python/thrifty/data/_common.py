"""Helpers shared by the modules of :mod:`thrifty.data`."""

from __future__ import annotations

from typing import Any

from .._validation import check_int

MAX_SEED = 2**64 - 1


def check_seed(seed: Any, name: str = "seed") -> int:
    """A seed or epoch number: an integer in ``[0, 2**64)``."""
    return check_int(seed, name, low=0, high=MAX_SEED)
