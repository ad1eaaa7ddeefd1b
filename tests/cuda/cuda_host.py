"""Run thrifty's CUDA kernels on the CPU, thread by thread (the tests' host stand-in).

:func:`build` compiles ``cuda/<file>`` as C++ with ``cuda_host_shim.h`` (the CUDA
intrinsics as plain C++) and one launcher per entry point (a loop over the thread
index). :func:`patch` puts :func:`submit` in place of the GPU submission of the one
launcher (``thrifty.torch._cuda._runtime._submit``) and lets CPU tensors take the kernel
path, so the real orchestration code and the real kernels run on CPU tensors and the
tests compare them bit for bit with the Rust core and the torch references. Kernels
that synchronise their block (``__syncthreads``) run one block at a time with one host
thread per CUDA thread.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from thrifty.torch._cuda import _runtime as rt

REPO = Path(__file__).resolve().parents[2]
SHIM = Path(__file__).with_name("cuda_host_shim.h")
_CT = {"ptr": ctypes.c_void_p, "u64": ctypes.c_uint64, "i64": ctypes.c_int64,
       "u32": ctypes.c_uint32, "i32": ctypes.c_int32, "f32": ctypes.c_float, "f64": ctypes.c_double}
_C = {"ptr": "void*", "u64": "unsigned long long", "i64": "long long", "u32": "unsigned int",
      "i32": "int", "f32": "float", "f64": "double"}
_LIBS: dict[str, ctypes.CDLL] = {}
_TRAITS = """
template <int I, typename F> struct th_shim_param_t;
template <typename R, typename A0, typename... As> struct th_shim_param_t<0, R (*)(A0, As...)> { typedef A0 type; };
template <int I, typename R, typename A0, typename... As> struct th_shim_param_t<I, R (*)(A0, As...)> {
  typedef typename th_shim_param_t<I - 1, R (*)(As...)>::type type; };
"""


def compiler() -> str | None:
    return shutil.which("g++") or shutil.which("clang++")


def build(file: str) -> ctypes.CDLL:
    """The host build of ``file``: ``host_<kernel>(nthreads, args...)`` per entry point."""
    if file in _LIBS:
        return _LIBS[file]
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler")
    entries = rt.kernel_entries(file)
    lines = [f'#include "{file}"']
    for name, (sig, body) in entries.items():
        params = ", ".join(f"{_C[k]} a{i}" for i, (k, _) in enumerate(sig))
        # pointer arguments arrive as void* and are cast to the kernel's parameter type
        call = ", ".join(f"(th_shim_arg{i}_t)a{i}" if k == "ptr" else f"a{i}" for i, (k, _) in enumerate(sig))
        lines.append(f'extern "C" void host_{name}(unsigned long long nthreads{", " if params else ""}{params}) {{')
        for i, (k, _) in enumerate(sig):
            if k == "ptr":
                lines.append(f"  typedef th_shim_param_t<{i}, decltype(&{name})>::type th_shim_arg{i}_t;")
        lines.append("  blockDim.x = 256; gridDim.x = (unsigned)(nthreads / 256);")
        if "__syncthreads" in body:
            lines.append("  for (unsigned long long b = 0; b < nthreads / 256; ++b) {")
            lines.append("    blockIdx.x = (unsigned)b;")
            lines.append(f"    th_shim_run_block(256, [&] {{ {name}({call}); }});")
        else:
            lines.append("  for (unsigned long long t = 0; t < nthreads; ++t) {")
            lines.append("    blockIdx.x = (unsigned)(t / 256); threadIdx.x = (unsigned)(t % 256);")
            lines.append(f"    {name}({call});")
        lines.append("  }\n}")
    src = _TRAITS + "\n".join(lines) + "\n"
    key = hashlib.sha256((src + rt.kernel_source(file) + SHIM.read_text()
                          + "".join(rt.kernel_source(h) for h in rt.kernel_names() if h.endswith(".cuh"))
                          ).encode()).hexdigest()[:16]
    out_dir = Path(tempfile.gettempdir()) / "thrifty-cuda-host"
    out_dir.mkdir(exist_ok=True)
    so = out_dir / f"{file.replace('.', '_')}-{key}.so"
    if not so.exists():
        cpp = out_dir / f"{file.replace('.', '_')}-{key}.cpp"
        cpp.write_text(src)
        tmp = so.with_suffix(f".{id(src)}.tmp.so")
        cmd = [cxx, "-std=c++17", "-O1", "-pthread", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC",
               "-w", "-include", str(SHIM), f"-I{rt.kernels_dir()}", f"-I{REPO / 'cuda'}",
               "-x", "c++", str(cpp), "-o", str(tmp)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"host build of {file} failed:\n{r.stderr[-4000:]}")
        tmp.replace(so)
    lib = ctypes.CDLL(str(so))
    for name, (sig, _) in entries.items():
        f = getattr(lib, f"host_{name}")
        f.argtypes = [ctypes.c_uint64] + [_CT[k] for k, _ in sig]
        f.restype = None
    _LIBS[file] = lib
    return lib


def submit(file: str, name: str, device, grid: int, block: int, args: tuple) -> None:
    """Stand-in for ``_runtime._submit``: run the host build on CPU tensors (pointers
    arrive as 64-bit addresses, scalars at the kernel parameters' widths)."""
    assert block == 256, block
    assert getattr(device, "type", "cpu") == "cpu", device
    sig = rt.kernel_signatures(file)[name]
    conv = [ctypes.c_void_p(int(a)) if kind == "ptr" else _CT[kind](a.item()) for (kind, _), a in zip(sig, args)]
    getattr(build(file), f"host_{name}")(ctypes.c_uint64(int(grid) * block), *conv)


def patch(monkeypatch) -> None:
    """Route every kernel launch to the host builds, with CPU tensors taking the kernel
    path (skips the test without a C++ compiler)."""
    import pytest

    if compiler() is None:
        pytest.skip("no C++ compiler for the host kernel build")
    monkeypatch.setattr(rt, "_submit", submit)
    monkeypatch.setattr(rt, "use_kernels", lambda *ts: bool(ts))
