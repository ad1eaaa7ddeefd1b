"""Run-time plumbing of the CUDA kernels: sources, compilation, device and stream.

* :func:`available` — CuPy importable and a CUDA device usable by torch and CuPy.
* :func:`kernel_source` / :func:`kernel_names` — the ``.cu`` / ``.cuh`` files shipped as
  ``thrifty/kernels/`` (a dev checkout falls back to the repository's ``cuda/``).
* :func:`get_module` — the kernels of a file, compiled with CuPy's NVRTC once per
  (device, file, options) and loaded as a ``cupy.cuda.function.Module``.
* :func:`as_cupy` / :func:`as_torch` — zero-copy exchange through DLPack.
* :func:`stream` — a CuPy stream wrapping torch's current stream, so kernels launch in
  torch's order.
* :func:`nvrtc_compile` — compile a kernel file to PTX with the NVRTC shared library of
  the pip wheels (``nvidia-cuda-nvrtc-cu12``, ``nvidia-cuda-nvrtc`` for CUDA 13) called
  through ctypes: it needs neither a GPU, a driver nor CuPy, so CI compile-checks every
  kernel on a CPU machine.

Every kernel file is compiled with :data:`BASE_OPTIONS`: C++17, the kernels folder on
the include path, ``--fmad=false`` so that ``a * b + c`` is never contracted into a
fused multiply-add, IEEE division/square root and no flush-to-zero of subnormal floats
— the kernels reproduce the CPU's float32 arithmetic bit for bit.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.resources
import importlib.util
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

from .._errors import InvalidInputError, ThriftyError

__all__ = [
    "BASE_OPTIONS",
    "KernelCompileError",
    "available",
    "kernel_names",
    "kernel_source",
    "kernels_dir",
    "cuda_include_dirs",
    "get_module",
    "as_cupy",
    "as_torch",
    "stream",
    "kernel_signatures",
    "launch",
    "nvrtc_libraries",
    "nvrtc_version",
    "nvrtc_compile",
]

BASE_OPTIONS: tuple[str, ...] = ("-std=c++17", "--fmad=false", "-ftz=false", "-prec-div=true",
                                 "-prec-sqrt=true")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.(cu|cuh)$")


class KernelCompileError(ThriftyError, RuntimeError):
    """A kernel file failed to compile (the message carries the compiler log)."""


# ----------------------------------------------------------------------------- sources

def _repo_cuda_dir() -> Path:
    # python/thrifty/cuda/_runtime.py -> repository root / cuda
    return Path(__file__).resolve().parents[3] / "cuda"


def _source_dirs() -> list[Path]:
    """Folders searched for kernel files, in order: the package's ``kernels/``, then the
    repository's ``cuda/`` (present in a dev checkout only)."""
    dirs: list[Path] = []
    pkg = importlib.resources.files("thrifty").joinpath("kernels")
    if isinstance(pkg, Path) and pkg.is_dir():
        dirs.append(pkg)
    repo = _repo_cuda_dir()
    if repo.is_dir():
        dirs.append(repo)
    return dirs


def kernels_dir() -> Path:
    """The folder of the shipped kernel sources (``thrifty/kernels``; in a dev checkout
    without it, the repository's ``cuda/``).

    Examples
    --------
    >>> from thrifty.cuda._runtime import kernels_dir
    >>> (kernels_dir() / "thrifty_common.cuh").is_file()
    True
    """
    dirs = _source_dirs()
    if not dirs:
        raise FileNotFoundError(
            "thrifty's CUDA kernel sources were not found (neither thrifty/kernels nor a "
            "repository cuda/ folder); the installation is incomplete")
    return dirs[0]


def kernel_names() -> list[str]:
    """Sorted file names of the kernel sources (``*.cu`` and ``*.cuh``)."""
    names = {p.name for d in _source_dirs() for p in d.iterdir() if _NAME.match(p.name) and p.is_file()}
    return sorted(names)


def _kernel_path(name: str) -> Path:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(f"kernel names are plain file names ending in .cu or .cuh, got {name!r}")
    for d in _source_dirs():
        if (d / name).is_file():
            return d / name
    raise InvalidInputError(f"no kernel file {name!r}; available: {kernel_names()}")


def kernel_source(name: str) -> str:
    """Text of the kernel file ``name`` (for example ``"quant.cu"``)."""
    return _kernel_path(name).read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- device

@functools.lru_cache(maxsize=1)
def available() -> bool:
    """True when CuPy is importable and torch and CuPy both see a CUDA device.

    Never raises; the answer is computed once per process.
    """
    try:
        if importlib.util.find_spec("cupy") is None or importlib.util.find_spec("torch") is None:
            return False
        import torch

        if not torch.cuda.is_available():
            return False
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False


_MODULES: dict[tuple[int, str, tuple[str, ...]], Any] = {}
_LOCK = threading.Lock()


def cuda_include_dirs(major: int | None = None) -> list[str]:
    """Folders with CUDA's own headers (cuda_fp16.h, ...) for CUDA version ``major``.

    Looks at ``$CUDA_PATH`` / ``$CUDA_HOME``, the NVIDIA pip wheels
    (``nvidia/cu13/include`` for 13, ``nvidia/cuda_runtime/include`` from
    ``nvidia-cuda-runtime-cu12`` for 12) and ``/usr/local/cuda``; ``None`` accepts any.
    Files that include ``cuda_fp16.h`` / ``cuda_bf16.h`` / ``cuda_fp8.h`` need them
    (NVRTC has no built-in copy); thrifty's own kernels include none.
    """
    out: list[str] = []
    for var in ("CUDA_PATH", "CUDA_HOME"):
        v = os.environ.get(var)
        if v:
            out.append(os.path.join(v, "include"))
    for root in _nvidia_roots():
        if major in (None, 13):
            out.append(str(root / "cu13" / "include"))
        if major in (None, 12):
            out.append(str(root / "cuda_runtime" / "include"))
    out.append("/usr/local/cuda/include")
    seen: list[str] = []
    for d in out:
        if not os.path.isfile(os.path.join(d, "cuda_fp16.h")) or d in seen:
            continue
        if major is not None and _header_major(d) not in (None, major):
            continue
        seen.append(d)
    return seen


def _header_major(include_dir: str) -> int | None:
    """CUDA major version of a header folder (from cuda.h's CUDA_VERSION), if readable."""
    try:
        with open(os.path.join(include_dir, "cuda.h"), encoding="utf-8", errors="replace") as f:
            m = re.search(r"#define\s+CUDA_VERSION\s+(\d+)", f.read())
        return int(m.group(1)) // 1000 if m else None
    except OSError:
        return None


def _compile_options(options: tuple[str, ...], headers: list[str]) -> tuple[str, ...]:
    inc = [f"-I{d}" for d in _source_dirs()] + [f"-I{d}" for d in headers]
    return BASE_OPTIONS + tuple(inc) + tuple(options)


def get_module(name: str, options: tuple[str, ...] | list[str] = (), device: int | None = None) -> Any:
    """The loaded kernels of file ``name`` (a ``cupy.cuda.function.Module``), compiled once
    per (device, file, options).

    Compiled with CuPy's NVRTC (``cupy.cuda.compiler.compile_using_nvrtc``: a cubin for
    the device's architecture, as CuPy does) and :data:`BASE_OPTIONS` plus the kernels
    folder as include path — but not through ``cupy.RawModule``, which appends
    ``-ftz=true`` (flushing subnormal floats to zero would break bit-exactness with the
    CPU). ``device``: CUDA device index (default: torch's current device).
    """
    import cupy
    import torch
    from cupy.cuda import compiler, function

    opts = tuple(str(o) for o in options)
    dev = torch.cuda.current_device() if device is None else int(device)
    key = (dev, name, opts)
    with _LOCK:
        mod = _MODULES.get(key)
        if mod is None:
            src = kernel_source(name)
            with cupy.cuda.Device(dev):
                major = int(cupy.cuda.runtime.runtimeGetVersion()) // 1000
                arch = str(cupy.cuda.Device(dev).compute_capability)
                out = compiler.compile_using_nvrtc(
                    src, _compile_options(opts, cuda_include_dirs(major)), arch=arch, filename=name)
                binary = out[0] if isinstance(out, tuple) else out
                mod = function.Module()
                mod.load(binary.encode() if isinstance(binary, str) else bytes(binary))
            _MODULES[key] = mod
    return mod


def as_cupy(t: Any) -> Any:
    """Zero-copy CuPy view of a CUDA torch tensor (DLPack)."""
    import cupy

    return cupy.from_dlpack(t.detach())


def as_torch(a: Any) -> Any:
    """Zero-copy torch view of a CuPy array (DLPack)."""
    import torch

    return torch.from_dlpack(a)


class _TorchStream:
    """A torch stream seen through the CUDA stream protocol (``__cuda_stream__``)."""

    def __init__(self, s: Any) -> None:
        self.stream = s  # keeps the torch stream alive

    def __cuda_stream__(self) -> tuple[int, int]:
        return (0, int(self.stream.cuda_stream))


def stream(device: int | None = None) -> Any:
    """A CuPy stream on torch's current CUDA stream (of ``device``): usable as a context
    manager so that CuPy launches run in torch's order.

    CuPy >= 14: ``cupy.cuda.Stream.from_external`` (the CUDA stream protocol); older
    CuPy: ``cupy.cuda.ExternalStream``.
    """
    import cupy
    import torch

    s = torch.cuda.current_stream(device)
    from_external = getattr(cupy.cuda.Stream, "from_external", None) if hasattr(cupy.cuda, "Stream") else None
    if from_external is not None:
        return from_external(_TorchStream(s))
    return cupy.cuda.ExternalStream(s.cuda_stream, s.device.index or 0)


_SIG = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')
_KINDS = {"th_u64": "u64", "unsigned long long": "u64", "int": "i32", "float": "f32",
          "double": "f64", "th_i64": "i64", "long long": "i64", "th_u32": "u32",
          "unsigned int": "u32"}


@functools.lru_cache(maxsize=None)
def kernel_signatures(name: str) -> dict[str, tuple[tuple[str, str], ...]]:
    """Parameters of every ``extern "C" __global__`` kernel of file ``name``.

    Returns ``{kernel: ((kind, param), ...)}`` with kind ``"ptr"`` for pointers, else
    one of ``"u64"``, ``"i64"``, ``"u32"``, ``"i32"``, ``"f32"``, ``"f64"``: the launchers
    convert each argument to exactly that width.
    """
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    for kname, params in _SIG.findall(kernel_source(name)):
        sig = []
        for p in params.split(","):
            p = " ".join(p.replace("__restrict__", " ").replace("const ", " ").split())
            if not p:
                continue
            if "*" in p:
                sig.append(("ptr", p.split("*")[-1].strip()))
                continue
            typ, _, pname = p.rpartition(" ")
            if typ not in _KINDS:
                raise KernelCompileError(f"{name}: {kname} has a parameter of unsupported type {typ!r}")
            sig.append((_KINDS[typ], pname))
        out[kname] = tuple(sig)
    return out


def _scalar(kind: str, v: Any) -> Any:
    import numpy as np

    return {"u64": np.uint64, "i64": np.int64, "u32": np.uint32, "i32": np.int32,
            "f32": np.float32, "f64": np.float64}[kind](v)


def launch(file: str, kernel: str, nthreads: int, *args: Any, block: int = 256) -> None:
    """Launch ``kernel`` of ``file`` on ``nthreads`` threads (1-D, ``block`` per block) on
    torch's current stream. Tensor arguments must be contiguous CUDA tensors; scalars are
    converted to the parameter's exact width (see :func:`kernel_signatures`)."""
    nthreads = int(nthreads)
    if nthreads <= 0:
        return
    sig = kernel_signatures(file)[kernel]
    if len(sig) != len(args):
        raise TypeError(f"{kernel} takes {len(sig)} arguments, got {len(args)}")
    import cupy

    dev = next((a.device.index for a in args if getattr(a, "is_cuda", False)), None)
    if dev is None:
        raise TypeError(f"{kernel}: no CUDA tensor among the arguments")
    grid = (nthreads + block - 1) // block
    # Everything on the tensors' device; conversions inside the stream context so that
    # DLPack hands the tensors over on torch's own stream, with no cross-stream wait.
    with cupy.cuda.Device(dev):
        cs = stream(dev)
    with cupy.cuda.Device(dev), cs:
        fn = get_module(file, device=dev).get_function(kernel)
        conv = []
        for (kind, pname), a in zip(sig, args):
            if kind == "ptr":
                if not (getattr(a, "is_cuda", False) and a.is_contiguous()):
                    raise TypeError(f"{kernel}: argument {pname} must be a contiguous CUDA tensor")
                conv.append(as_cupy(a))
            else:
                conv.append(_scalar(kind, a))
        fn((grid,), (block,), tuple(conv), stream=cs)


# ----------------------------------------------------------------------------- NVRTC

def _nvidia_roots() -> list[Path]:
    roots: list[Path] = []
    try:
        import nvidia  # namespace package of the NVIDIA wheels

        roots = [Path(p) for p in getattr(nvidia, "__path__", [])]
    except ImportError:
        pass
    for p in sys.path:
        q = Path(p) / "nvidia"
        if q.is_dir() and q not in roots:
            roots.append(q)
    return roots


def nvrtc_libraries() -> dict[int, str]:
    """Major CUDA version -> path of an NVRTC shared library found on this machine.

    Searches the pip wheels (``nvidia/cuda_nvrtc/lib/libnvrtc.so.12`` from
    ``nvidia-cuda-nvrtc-cu12``, ``nvidia/cu13/lib/libnvrtc.so.13`` from
    ``nvidia-cuda-nvrtc`` 13.x), then ``$CUDA_PATH`` and ``/usr/local/cuda``.
    """
    found: dict[int, str] = {}
    cands: list[Path] = []
    for root in _nvidia_roots():
        cands += [root / "cuda_nvrtc" / "lib" / "libnvrtc.so.12",
                  root / "cu13" / "lib" / "libnvrtc.so.13",
                  root / "cuda_nvrtc" / "lib" / "libnvrtc.so.13"]
    for base in (os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if base:
            cands += sorted(Path(base, "lib64").glob("libnvrtc.so.1[0-9]*"))
    for c in cands:
        m = re.search(r"libnvrtc\.so\.(\d+)", c.name)
        if m and c.is_file():
            found.setdefault(int(m.group(1)), str(c))
    return dict(sorted(found.items()))


@functools.lru_cache(maxsize=None)
def _nvrtc(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    vp = ctypes.c_void_p
    pp = ctypes.POINTER(ctypes.c_char_p)
    sz = ctypes.POINTER(ctypes.c_size_t)
    sigs: dict[str, list[Any]] = {
        "nvrtcVersion": [ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)],
        "nvrtcCreateProgram": [ctypes.POINTER(vp), ctypes.c_char_p, ctypes.c_char_p,
                               ctypes.c_int, pp, pp],
        "nvrtcCompileProgram": [vp, ctypes.c_int, pp],
        "nvrtcGetProgramLogSize": [vp, sz],
        "nvrtcGetProgramLog": [vp, ctypes.c_char_p],
        "nvrtcGetPTXSize": [vp, sz],
        "nvrtcGetPTX": [vp, ctypes.c_char_p],
        "nvrtcDestroyProgram": [ctypes.POINTER(vp)],
    }
    for fn, args in sigs.items():
        f = getattr(lib, fn)
        f.argtypes = args
        f.restype = ctypes.c_int
    lib.nvrtcGetErrorString.argtypes = [ctypes.c_int]
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    return lib


def nvrtc_version(version: int | None = None) -> tuple[int, int]:
    """(major, minor) of the NVRTC library used for ``version`` (None: the newest)."""
    lib = _nvrtc(_library_for(version))
    a, b = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(a), ctypes.byref(b))
    return a.value, b.value


def _library_for(version: int | None) -> str:
    libs = nvrtc_libraries()
    if not libs:
        raise ThriftyError(
            "no NVRTC library found; install the cuda-check extra "
            "(pip install 'thrifty[cuda-check]')")
    if version is None:
        return libs[max(libs)]
    if version not in libs:
        raise InvalidInputError(f"no NVRTC {version} library found; available: {sorted(libs)}")
    return libs[version]


def nvrtc_compile(
    source_name: str,
    arch: str = "compute_80",
    *,
    version: int | None = None,
    options: tuple[str, ...] | list[str] = (),
) -> bytes:
    """Compile the kernel file ``source_name`` to PTX for ``arch`` with NVRTC.

    Parameters
    ----------
    source_name : str
        A file of :func:`kernel_names` (``.cu``).
    arch : str
        Virtual architecture, e.g. ``"compute_80"`` or ``"compute_90"``.
    version : int, optional
        Major CUDA version of the NVRTC library (12, 13); default: the newest found.
    options : sequence of str
        Extra NVRTC options, after :data:`BASE_OPTIONS` and the include paths.

    Returns
    -------
    bytes
        The PTX text (NUL terminator removed).

    Raises
    ------
    KernelCompileError
        The source does not compile; the message holds NVRTC's log.
    """
    if not isinstance(arch, str) or not re.fullmatch(r"compute_\d+[a-z]?", arch):
        raise InvalidInputError(f"arch must look like 'compute_80', got {arch!r}")
    src = kernel_source(source_name).encode()
    lib = _nvrtc(_library_for(version))
    prog = ctypes.c_void_p()

    def check(rc: int, what: str) -> None:
        if rc != 0:
            raise KernelCompileError(f"{what} failed: {lib.nvrtcGetErrorString(rc).decode()}")

    check(lib.nvrtcCreateProgram(ctypes.byref(prog), src, source_name.encode(), 0, None, None),
          "nvrtcCreateProgram")
    try:
        major = nvrtc_version(version)[0]
        opts = (f"--gpu-architecture={arch}",) + _compile_options(tuple(options), cuda_include_dirs(major))
        arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        n = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
        log = ctypes.create_string_buffer(max(n.value, 1))
        lib.nvrtcGetProgramLog(prog, log)
        if rc != 0:
            raise KernelCompileError(
                f"{source_name} ({arch}, NVRTC {'.'.join(map(str, nvrtc_version(version)))}) "
                f"does not compile:\n{log.value.decode(errors='replace')}")
        check(lib.nvrtcGetPTXSize(prog, ctypes.byref(n)), "nvrtcGetPTXSize")
        ptx = ctypes.create_string_buffer(n.value)
        check(lib.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX")
        return ptx.raw.rstrip(b"\0")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
