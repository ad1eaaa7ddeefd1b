"""PyTorch integrations of thrifty: data loaders, optimizers, schedules, weight averaging,
losses, initialisers, quantization and quantization-aware layers.

This is thrifty's one torch-facing API. Its functions dispatch by the tensors' device,
as ``torch.nn.functional`` does: on CUDA tensors they run thrifty's CUDA kernels when
:func:`cuda_available` is true (the fused linear losses, :mod:`thrifty.torch.quant`,
``BitLinear``, ``MeZO``, ``SAM``, ``DoG``/``LDoG``, ``MoMo``), everywhere else a CPU
implementation with the same semantics.

Importing :mod:`thrifty` never imports torch, and neither does ``import thrifty.torch``:
each submodule (``thrifty.torch.optim``, ``thrifty.torch.data``, ...) imports torch when
it is first used, and needs the optional ``torch`` extra (``pip install 'thrifty[torch]'``).

Examples
--------
>>> import thrifty.torch
>>> thrifty.torch.cuda_available() in (True, False)
True
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__all__ = ["cuda_available", "data", "optim", "schedules", "averaging", "losses", "init", "nn", "quant"]

_SUBMODULES = ("data", "optim", "schedules", "averaging", "losses", "init", "nn", "quant")


def cuda_available() -> bool:
    """True when thrifty's CUDA kernels can run: CuPy is installed and torch and CuPy
    both see a CUDA device. Never raises; computed once per process.

    Without it, CUDA tensors still work everywhere in :mod:`thrifty.torch`: they take the
    torch implementation on their device.
    """
    from ._cuda._runtime import available

    return available()


def _torch_installed() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # e.g. sys.modules["torch"] is None
        return False


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        if not _torch_installed():
            raise ModuleNotFoundError(
                f"thrifty.torch.{name} needs PyTorch, which is not installed: "
                "pip install torch (or install thrifty with its 'torch' or 'cuda' extra)",
                name="torch",
            )
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
