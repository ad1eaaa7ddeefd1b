"""Run #11's CUDA kernels (mezo.cu, loss.cu, optim.cu) on the CPU (test helper).

Builds each file with tests/_cuda_host.py (the C++ host shim of the #10 helper, plus
``cuda_host_shim_lean.h``) and returns a stand-in for ``thrifty.cuda._launch.run`` that
calls the host build: the real orchestration code of thrifty.cuda.{mezo,losses,optim}
then runs the real kernels on CPU tensors, thread by thread.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import _cuda_host  # noqa: E402

from thrifty.cuda import _runtime as rt  # noqa: E402

SHIM = HERE / "cuda_host_shim_lean.h"


def available() -> bool:
    return _cuda_host.compiler() is not None


def build(file: str) -> ctypes.CDLL:
    old = _cuda_host.SHIM
    _cuda_host.SHIM = SHIM
    try:
        return _cuda_host.build(file)
    finally:
        _cuda_host.SHIM = old


def run(module: str, name: str, device, grid: int, args, *, threads: int = 256) -> None:
    """Signature of thrifty.cuda._launch.run; pointers arrive as 64-bit integers."""
    assert threads == 256
    lib = build(module)
    sig = rt.kernel_signatures(module)[name]
    assert len(sig) == len(args), (name, len(sig), len(args))
    conv = []
    for (kind, pname), a in zip(sig, args):
        if kind == "ptr":
            conv.append(ctypes.c_void_p(int(a)))
        else:
            conv.append(_cuda_host._CT[kind](a.item() if hasattr(a, "item") else a))
    lib.th_lean_set_grid(ctypes.c_uint(int(grid)))
    getattr(lib, f"host_{name}")(ctypes.c_uint64(int(grid) * threads), *conv)


def patch(monkeypatch) -> None:
    """Route thrifty.cuda.{mezo,losses,optim} kernel launches to the host builds, with
    CPU tensors taking the kernel path."""
    import pytest
    import torch

    if not available():
        pytest.skip("no C++ compiler for the host kernel build")
    from thrifty.cuda import _launch
    from thrifty.cuda import optim as fo

    dtypes = (torch.float32, torch.float16, torch.bfloat16)
    monkeypatch.setattr(_launch, "run", run)
    monkeypatch.setattr(_launch, "on_gpu", lambda *ts: bool(ts))
    monkeypatch.setattr(fo, "_kernel_ok", lambda *groups: bool([t for g in groups for t in g]) and all(
        t.dtype in dtypes and t.is_contiguous() for g in groups for t in g))
