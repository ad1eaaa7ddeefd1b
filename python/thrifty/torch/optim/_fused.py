"""When the optimizers take the fused device path of the CUDA backend (private).

The fused path runs for CUDA parameters (float32, float16, bfloat16, contiguous, with
contiguous gradients) when :func:`thrifty.torch.cuda_available` is true. ``FORCE`` (tests
only) sends CPU tensors down the same code path, where the backend runs its
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
    return all(p.is_cuda for p in ps) and _cuda_runtime_ok()


def _cuda_runtime_ok() -> bool:
    from .._cuda import _runtime

    return bool(_runtime.available())


# torch.compile treats the (cached, per-process) answer as a constant instead of tracing it.
if hasattr(torch, "compiler") and hasattr(torch.compiler, "assume_constant_result"):
    _cuda_runtime_ok = torch.compiler.assume_constant_result(_cuda_runtime_ok)
