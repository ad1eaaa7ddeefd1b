"""PyTorch integrations of thrifty: data loaders, optimizers, schedules, weight averaging,
losses, initialisers and quantization-aware layers.

Importing :mod:`thrifty` never imports torch, and neither does ``import thrifty.torch``:
each submodule (``thrifty.torch.optim``, ``thrifty.torch.data``, ...) imports torch when
it is first used, and needs the optional ``torch`` extra (``pip install 'thrifty[torch]'``).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["data", "optim", "schedules", "averaging", "losses", "init", "nn"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
