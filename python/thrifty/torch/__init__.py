"""PyTorch interop: losses, initialisers, quantization-aware layers and more.

``import thrifty`` never imports torch; this subpackage does not import it either.
torch is imported by the submodules, which are loaded on first use:
``from thrifty.torch import losses`` or ``import thrifty.torch.nn``.
"""

from __future__ import annotations

__all__ = ["losses", "init", "nn"]
