"""PyTorch interop: optimizers, schedules and weight averaging (and more submodules).

Importing :mod:`thrifty` never imports torch; this subpackage is imported explicitly
(``import thrifty.torch.optim``) and needs the optional ``torch`` extra.
"""

from __future__ import annotations

__all__ = ["optim", "schedules", "averaging"]
