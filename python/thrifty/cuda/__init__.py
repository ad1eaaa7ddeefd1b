"""CUDA kernels for the training paths, compiled at run time by CuPy (NVRTC).

Every public function accepts CPU or CUDA torch tensors: CUDA tensors run the kernels
when :func:`available` is true, everything else runs a CPU fallback with the same
semantics (the fallback is the executable specification of each kernel). Importing
:mod:`thrifty.cuda` imports neither CuPy nor torch; each submodule imports torch when it
is first used, CuPy only when a kernel is launched.

Submodules: :mod:`thrifty.cuda.quant` (GPU encode/decode of every
:mod:`thrifty.quant` format), :mod:`thrifty.cuda.bitlinear` (fused BitNet b1.58 linear
layer). The kernel sources ship inside the package as ``thrifty/kernels/*.cu``.

Examples
--------
>>> import thrifty.cuda
>>> isinstance(thrifty.cuda.available(), bool)
True
>>> "quant.cu" in thrifty.cuda.kernel_names()
True
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from ._runtime import available, kernel_names, kernel_source

__all__ = ["available", "kernel_names", "kernel_source", "quant", "bitlinear"]

_SUBMODULES = ("quant", "bitlinear", "mezo", "losses", "optim")


def _torch_installed() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # e.g. sys.modules["torch"] is None
        return False


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        if not _torch_installed():
            raise ModuleNotFoundError(
                f"thrifty.cuda.{name} works on torch tensors, but PyTorch is not installed: "
                "pip install torch (or install thrifty with its 'cuda' extra)",
                name="torch",
            )
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
