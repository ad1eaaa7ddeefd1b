"""Small launch helpers shared by thrifty.cuda.mezo / losses / optim (private).

Kernels receive raw device pointers (``tensor.data_ptr()`` as a 64-bit scalar), so
bfloat16 tensors work even where CuPy has no bfloat16 dtype (DLPack would refuse them);
every launch runs on the tensors' device and torch's current stream there.
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


def run(module: str, name: str, device: int, grid: int, args: tuple[Any, ...], *, threads: int = THREADS) -> None:
    """Launch kernel ``name`` of ``cuda/<module>`` (compiled once per device, cached) with
    ``grid`` blocks of ``threads`` on ``device``'s current torch stream."""
    import cupy

    from . import _runtime

    with cupy.cuda.Device(device):
        cs = _runtime.stream(device)
    with cupy.cuda.Device(device), cs:
        fn = _runtime.get_module(module, device=device).get_function(name)
        fn((max(1, int(grid)),), (threads,), args, stream=cs)


def launch(module: str, name: str, n_work: int, args: tuple[Any, ...], *, device: int, threads: int = THREADS,
           max_blocks: int = 65535) -> None:
    """Launch a grid-stride kernel over ``n_work`` items."""
    blocks = max(1, min(max_blocks, (int(n_work) + threads - 1) // threads))
    run(module, name, device, blocks, args, threads=threads)


def suffix(dtype: Any) -> str:
    """Kernel-name suffix of a parameter dtype (f32, f16, bf16)."""
    import torch

    try:
        return {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}[dtype]
    except KeyError:
        raise TypeError(f"no CUDA kernel for dtype {dtype}") from None
