"""Small launch helpers shared by thrifty.cuda.mezo / losses / optim (private).

Kernels receive raw device pointers (``tensor.data_ptr()``), so bfloat16 tensors work
even where CuPy has no bfloat16 dtype; they run on torch's current stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np

THREADS = 256


def on_gpu(*tensors: Any) -> bool:
    """True when every tensor is on a CUDA device and the CuPy runtime is usable."""
    if not tensors or not all(getattr(t, "is_cuda", False) for t in tensors):
        return False
    from . import _runtime

    return bool(_runtime.available())


def ptr(t: Any) -> np.uint64:
    """The device address of a tensor, as the 64-bit value a kernel pointer argument takes."""
    return np.uint64(t.data_ptr())


def kernel(module: str, name: str) -> Any:
    """The compiled kernel ``name`` of ``cuda/<module>`` (compiled once, cached)."""
    from . import _runtime

    return _runtime.get_module(module).get_function(name)


def launch(module: str, name: str, n_work: int, args: tuple[Any, ...], *, threads: int = THREADS,
           max_blocks: int = 65535) -> None:
    """Launch a grid-stride kernel over ``n_work`` items on torch's current stream."""
    from . import _runtime

    blocks = max(1, min(max_blocks, (int(n_work) + threads - 1) // threads))
    kernel(module, name)((blocks,), (threads,), args, stream=_runtime.stream())


def suffix(dtype: Any) -> str:
    """Kernel-name suffix of a parameter dtype (f32, f16, bf16)."""
    import torch

    try:
        return {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}[dtype]
    except KeyError:
        raise TypeError(f"no CUDA kernel for dtype {dtype}") from None
