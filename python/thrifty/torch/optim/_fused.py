"""When the optimizers take the fused device path of :mod:`thrifty.cuda.optim` (private).

The fused path runs for CUDA parameters (float32, float16, bfloat16, contiguous, with
contiguous gradients) when :func:`thrifty.cuda.available` is true. ``FORCE`` (tests only)
sends CPU tensors down the same code path, where :mod:`thrifty.cuda.optim` runs its
torch fallback, so the bookkeeping of the fused path is tested without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

FORCE = False
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def use_fused(params: Iterable[torch.Tensor]) -> bool:
    ps = list(params)
    if not ps:
        return False
    ok = all(
        p.dtype in _DTYPES and p.is_contiguous() and (p.grad is None or (p.grad.is_contiguous() and not p.grad.is_sparse))
        for p in ps
    )
    if not ok:
        return False
    if FORCE:
        return True
    if not all(p.is_cuda for p in ps):
        return False
    from ...cuda import _launch

    return _launch.on_gpu(*ps)
