"""Run thrifty's CUDA kernels on the CPU, thread by thread (test helper).

``build(file)`` compiles ``cuda/<file>`` as C++ with ``tests/cuda_host_shim.h`` and one
launcher per kernel (a loop over the thread index); ``launcher(file)`` returns a function
with the signature of :func:`thrifty.cuda._runtime.launch` that takes CPU torch tensors.
Monkeypatching ``thrifty.cuda.quant._launch`` with it runs the real kernel path
(orchestration + kernels) without a GPU, so the CPU suite checks the kernels' arithmetic
bit for bit against the Rust core. Kernels that synchronise their block (__shared__ +
__syncthreads) run one block at a time with one host thread per CUDA thread.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from thrifty.cuda import _runtime as rt

REPO = Path(__file__).resolve().parents[1]
SHIM = Path(__file__).with_name("cuda_host_shim.h")
_CT = {"ptr": ctypes.c_void_p, "u64": ctypes.c_uint64, "i64": ctypes.c_int64,
       "u32": ctypes.c_uint32, "i32": ctypes.c_int32, "f32": ctypes.c_float, "f64": ctypes.c_double}
_C = {"ptr": "void*", "u64": "unsigned long long", "i64": "long long", "u32": "unsigned int",
      "i32": "int", "f32": "float", "f64": "double"}
_LIBS: dict[str, ctypes.CDLL] = {}


def compiler() -> str | None:
    return shutil.which("g++") or shutil.which("clang++")


def _cooperative(text: str, kernel: str) -> bool:
    """Whether the body of ``kernel`` synchronises its block (needs one host thread per
    CUDA thread)."""
    start = text.index(f"void {kernel}(")
    nxt = text.find('extern "C"', start)
    return "__syncthreads" in text[start:nxt if nxt >= 0 else len(text)]


def build(file: str) -> ctypes.CDLL:
    if file in _LIBS:
        return _LIBS[file]
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler")
    sigs = rt.kernel_signatures(file)
    text = rt.kernel_source(file)
    lines = [f'#include "{file}"']
    for name, sig in sigs.items():
        params = ", ".join(f"{_C[k]} a{i}" for i, (k, _) in enumerate(sig))
        # pointer arguments arrive as void* and are cast to the kernel's parameter type
        call_args = []
        for i, (k, _) in enumerate(sig):
            call_args.append(f"(th_shim_arg{i}_t)a{i}" if k == "ptr" else f"a{i}")
        lines.append(f'extern "C" void host_{name}(unsigned long long nthreads{", " if params else ""}{params}) {{')
        for i, (k, _) in enumerate(sig):
            if k == "ptr":
                lines.append(f"  typedef th_shim_param_t<{i}, decltype(&{name})>::type th_shim_arg{i}_t;")
        lines.append("  blockDim.x = 256;")
        if _cooperative(text, name):
            lines.append("  for (unsigned long long b = 0; b < nthreads / 256; ++b) {")
            lines.append("    blockIdx.x = (unsigned)b;")
            lines.append(f"    th_shim_run_block(256, [&] {{ {name}({', '.join(call_args)}); }});")
        else:
            lines.append("  for (unsigned long long t = 0; t < nthreads; ++t) {")
            lines.append("    blockIdx.x = (unsigned)(t / 256); threadIdx.x = (unsigned)(t % 256);")
            lines.append(f"    {name}({', '.join(call_args)});")
        lines.append("  }\n}")
    traits = """
template <int I, typename F> struct th_shim_param_t;
template <typename R, typename A0, typename... As> struct th_shim_param_t<0, R (*)(A0, As...)> { typedef A0 type; };
template <int I, typename R, typename A0, typename... As> struct th_shim_param_t<I, R (*)(A0, As...)> {
  typedef typename th_shim_param_t<I - 1, R (*)(As...)>::type type; };
"""
    src = traits + "\n".join(lines) + "\n"
    key = hashlib.sha256((src + rt.kernel_source(file) + SHIM.read_text()
                          + "".join(rt.kernel_source(h) for h in rt.kernel_names() if h.endswith(".cuh"))
                          ).encode()).hexdigest()[:16]
    out_dir = Path(tempfile.gettempdir()) / "thrifty-cuda-host"
    out_dir.mkdir(exist_ok=True)
    so = out_dir / f"{file.replace('.', '_')}-{key}.so"
    if not so.exists():
        cpp = out_dir / f"{file.replace('.', '_')}-{key}.cpp"
        cpp.write_text(src)
        tmp = so.with_suffix(".tmp.so")
        cmd = [cxx, "-std=c++17", "-O1", "-pthread", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC",
               "-w", "-include", str(SHIM), f"-I{rt.kernels_dir()}", f"-I{REPO / 'cuda'}",
               "-x", "c++", str(cpp), "-o", str(tmp)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"host build of {file} failed:\n{r.stderr[-4000:]}")
        tmp.replace(so)
    lib = ctypes.CDLL(str(so))
    for name, sig in sigs.items():
        f = getattr(lib, f"host_{name}")
        f.argtypes = [ctypes.c_uint64] + [_CT[k] for k, _ in sig]
        f.restype = None
    _LIBS[file] = lib
    return lib


def launcher(file: str):
    lib = build(file)
    sigs = rt.kernel_signatures(file)

    def launch(kernel: str, nthreads: int, *args, block: int = 256) -> None:
        nthreads = int(nthreads)
        if nthreads <= 0:
            return
        sig = sigs[kernel]
        assert len(sig) == len(args), (kernel, len(sig), len(args))
        conv = []
        for (kind, pname), a in zip(sig, args):
            if kind == "ptr":
                assert a.device.type == "cpu" and a.is_contiguous(), (kernel, pname)
                conv.append(ctypes.c_void_p(a.data_ptr()))
            else:
                conv.append(_CT[kind](a))
        # Whole blocks, as on the GPU: the kernels' bounds checks are exercised too.
        total = -(-nthreads // block) * block
        getattr(lib, f"host_{kernel}")(total, *conv)

    return launch
