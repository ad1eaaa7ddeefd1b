"""Run-time plumbing of the CUDA kernels: sources, compilation, device and stream.

* :func:`available` — CuPy importable and a CUDA device usable by torch and CuPy.
* :func:`kernel_source` / :func:`kernel_names` — the ``.cu`` / ``.cuh`` files shipped as
  ``thrifty/kernels/`` (a dev checkout falls back to the repository's ``cuda/``).
* :func:`get_module` — the kernels of a file, compiled with CuPy's NVRTC once per
  (device, file, options) and loaded as a ``cupy.cuda.function.Module``.
* :func:`launch` — the one launcher: tensors by ``data_ptr()``, scalars at the widths of
  the parsed kernel signature (:func:`kernel_signatures`), dtype-generic kernels by
  :func:`kernel_name`; :func:`use_kernels` says when a call can take it.
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

import numpy as np

from ..._errors import InvalidInputError, ThriftyError

__all__ = [
    "BASE_OPTIONS",
    "KernelCompileError",
    "available",
    "kernel_names",
    "kernel_source",
    "kernels_dir",
    "cuda_include_dirs",
    "get_module",
    "stream",
    "float_types",
    "kernel_name",
    "kernel_entries",
    "kernel_signatures",
    "use_kernels",
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
    # python/thrifty/torch/_cuda/_runtime.py -> repository root / cuda
    return Path(__file__).resolve().parents[4] / "cuda"


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
    >>> from thrifty.torch._cuda._runtime import kernels_dir
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


def stream(device: int | None = None) -> Any:
    """A CuPy stream on torch's current CUDA stream (of ``device``, default the current
    device): usable as a context manager so that CuPy launches run in torch's order.

    CuPy >= 14: ``cupy.cuda.Stream.from_external`` (the CUDA stream protocol); older
    CuPy: ``cupy.cuda.ExternalStream``. One wrapper per stream handle, cached.
    """
    import torch

    return _stream_of(torch.cuda.current_device() if device is None else int(device))


_SIG = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+?)(_##S)?\s*\(([^)]*)\)')
_MACRO = re.compile(r"#define\s+(\w+)\(S,\s*T\)((?:[^\n]*\\\n)*[^\n]*)")
_KINDS = {"th_u64": "u64", "unsigned long long": "u64", "int": "i32", "float": "f32",
          "double": "f64", "th_i64": "i64", "long long": "i64", "th_u32": "u32",
          "unsigned int": "u32"}


@functools.lru_cache(maxsize=1)
def float_types() -> dict[str, str]:
    """Suffix -> C type of the dtype-generic kernels' entry points, as listed by
    ``TH_FOR_FLOAT_TYPES`` in ``thrifty_common.cuh`` (``{"f32": "float", ...}``)."""
    m = re.search(r"#define\s+TH_FOR_FLOAT_TYPES\(X\)([^\n]*)", kernel_source("thrifty_common.cuh"))
    if m is None:
        raise KernelCompileError("thrifty_common.cuh does not define TH_FOR_FLOAT_TYPES")
    return dict(re.findall(r"X\((\w+),\s*(\w+)\)", m.group(1)))


# torch dtype name -> entry point suffix: the one naming rule of dtype-generic kernels.
SUFFIXES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}


def kernel_name(kernel: str, dtype: Any = None) -> str:
    """The entry point of ``kernel`` for tensors of ``dtype``: ``kernel`` itself when
    ``dtype`` is None, else ``<kernel>_<suffix>`` (``f32``, ``f16``, ``bf16``).

    Examples
    --------
    >>> import torch
    >>> kernel_name("dog_update", torch.bfloat16)
    'dog_update_bf16'
    """
    if dtype is None:
        return kernel
    sfx = SUFFIXES.get(str(dtype).removeprefix("torch."))
    if sfx is None:
        raise TypeError(f"no CUDA kernel {kernel} for dtype {dtype}")
    return f"{kernel}_{sfx}"


def _parse_params(file: str, kname: str, params: str) -> tuple[tuple[str, str], ...]:
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
            raise KernelCompileError(f"{file}: {kname} has a parameter of unsupported type {typ!r}")
        sig.append((_KINDS[typ], pname))
    return tuple(sig)


@functools.lru_cache(maxsize=None)
def kernel_entries(name: str) -> dict[str, tuple[tuple[tuple[str, str], ...], str]]:
    """Every ``extern "C" __global__`` entry point of file ``name``: its parameters and
    its text (up to the next entry point).

    Entry points are written out, or generated per dtype: a macro ``#define M(S, T)``
    whose entry points are named ``<kernel>_##S`` with parameters in ``T``, instantiated
    by ``TH_FOR_FLOAT_TYPES(M)``, gives ``<kernel>_<suffix>`` for every pair of
    :func:`float_types`.
    """
    text = kernel_source(name)
    out: dict[str, tuple[tuple[tuple[str, str], ...], str]] = {}

    def scan(src: str, subst: tuple[str, str] | None) -> None:
        found = list(_SIG.finditer(src))
        for i, m in enumerate(found):
            kname, generic, params = m.group(1), m.group(2), m.group(3)
            if bool(generic) != (subst is not None):
                continue
            body = src[m.start(): found[i + 1].start() if i + 1 < len(found) else len(src)]
            if subst is not None:
                sfx, ctype = subst
                kname = f"{kname}_{sfx}"
                params = re.sub(r"\bT\b", ctype, params)
            out[kname] = (_parse_params(name, kname, params), body)

    macros = {m.group(1): m.group(2).replace("\\\n", "\n") for m in _MACRO.finditer(text)}
    plain = _MACRO.sub("", text)
    scan(plain, None)
    for used in re.findall(r"^\s*TH_FOR_FLOAT_TYPES\((\w+)\)", plain, re.M):
        if used not in macros:
            raise KernelCompileError(f"{name}: TH_FOR_FLOAT_TYPES({used}) names no #define {used}(S, T)")
        for pair in float_types().items():
            scan(macros[used], pair)
    return out


def kernel_signatures(name: str) -> dict[str, tuple[tuple[str, str], ...]]:
    """Parameters of every entry point of file ``name`` (see :func:`kernel_entries`).

    Returns ``{kernel: ((kind, param), ...)}`` with kind ``"ptr"`` for pointers, else
    one of ``"u64"``, ``"i64"``, ``"u32"``, ``"i32"``, ``"f32"``, ``"f64"``: the launcher
    converts each argument to exactly that width.

    Examples
    --------
    >>> kernel_signatures("optim.cu")["dog_update_bf16"]
    (('ptr', 'tab'), ('i32', 'n'), ('ptr', 'eta'), ('i32', 'eta_stride'), ('f32', 'wd'))
    """
    return {k: sig for k, (sig, _) in kernel_entries(name).items()}


_WIDTHS = {"u64": np.uint64, "i64": np.int64, "u32": np.uint32, "i32": np.int32,
           "f32": np.float32, "f64": np.float64}


def _scalar(kind: str, v: Any) -> Any:
    return _WIDTHS[kind](v)


@functools.lru_cache(maxsize=None)
def _signature(file: str, name: str) -> tuple[tuple[str, str, Any], ...] | None:
    """(kind, parameter, converter) per parameter of entry point ``name`` (None if absent),
    parsed once per process: a launch looks its kernel up in one dict access."""
    sig = kernel_signatures(file).get(name)
    if sig is None:
        return None
    return tuple((kind, pname, None if kind == "ptr" else _WIDTHS[kind]) for kind, pname in sig)


def use_kernels(*tensors: Any) -> bool:
    """Whether the kernels can run on ``tensors``: all of them CUDA tensors and
    :func:`available` true (the tests' host build replaces this check)."""
    return bool(tensors) and all(getattr(t, "is_cuda", False) for t in tensors) and available()


def launch(file: str, kernel: str, *args: Any, threads: int | None = None, blocks: int | None = None,
           block: int = 256, max_blocks: int | None = None, dtype: Any = None) -> None:
    """Launch entry point ``kernel`` of ``file`` (``<kernel>_<suffix>`` of ``dtype`` for a
    dtype-generic kernel, see :func:`kernel_name`) on torch's current stream of the
    tensors' device.

    Give the 1-D grid as ``threads`` (rounded up to whole blocks of ``block``, at most
    ``max_blocks`` of them for grid-stride kernels; nothing runs for 0) or as ``blocks``. Pointer parameters take contiguous tensors, passed by
    ``data_ptr()`` (so bfloat16 works though CuPy has no such dtype, and a view passes
    its offset); scalars are converted to the parameter's exact width as parsed from
    the source (see :func:`kernel_signatures`).
    """
    name = kernel_name(kernel, dtype)
    sig = _signature(file, name)
    if sig is None:
        raise TypeError(f"{file} has no kernel {name}")
    if len(sig) != len(args):
        raise TypeError(f"{name} takes {len(sig)} arguments, got {len(args)}")
    if (threads is None) == (blocks is None):
        raise TypeError("give exactly one of threads and blocks")
    if blocks is None:
        if int(threads) <= 0:  # type: ignore[arg-type]
            return
        grid = (int(threads) + block - 1) // block  # type: ignore[arg-type]
        if max_blocks is not None:
            grid = min(grid, int(max_blocks))
    else:
        grid = max(1, int(blocks))
    device = None
    conv = []
    for (kind, pname, width), a in zip(sig, args):
        if width is None:
            if not hasattr(a, "data_ptr") or not a.is_contiguous():
                raise TypeError(f"{name}: argument {pname} must be a contiguous tensor")
            device = a.device if device is None else device
            conv.append(np.uint64(a.data_ptr()))
        else:
            conv.append(width(a))
    if device is None:
        raise TypeError(f"{name}: no tensor among the arguments")
    _submit(file, name, device, grid, block, tuple(conv))


_FUNCTIONS: dict[tuple[str, str, int], Any] = {}
_STREAMS: dict[tuple[int, int], Any] = {}


def _raw_stream(dev: int) -> int:
    """The handle of torch's current CUDA stream of device ``dev``."""
    import torch

    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)  # no Stream object per call
    if raw is not None:
        return int(raw(dev))
    return int(torch.cuda.current_stream(dev).cuda_stream)


class _RawStream:
    """A CUDA stream handle seen through the CUDA stream protocol (``__cuda_stream__``)."""

    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __cuda_stream__(self) -> tuple[int, int]:
        return (0, self.handle)


def _stream_of(dev: int) -> Any:
    """The CuPy stream wrapping torch's current stream of ``dev``, one per stream handle."""
    handle = _raw_stream(dev)
    cs = _STREAMS.get((dev, handle))
    if cs is None:
        import cupy

        with cupy.cuda.Device(dev):
            from_external = getattr(getattr(cupy.cuda, "Stream", None), "from_external", None)
            if from_external is not None:
                cs = from_external(_RawStream(handle))
            else:
                cs = cupy.cuda.ExternalStream(handle, dev)
        _STREAMS[(dev, handle)] = cs
    return cs


def _submit(file: str, name: str, device: Any, grid: int, block: int, args: tuple[Any, ...]) -> None:
    """Run ``name`` on ``device`` (a torch device) with converted arguments on torch's
    current stream. The function handle (compiling or reusing the file's module) and the
    CuPy stream are cached per (file, kernel, device) and per stream handle; the device
    is made current only when it is not already."""
    if getattr(device, "type", None) != "cuda":
        raise TypeError(f"{name}: the kernels take CUDA tensors, got tensors on {device}")
    import cupy

    dev = device.index if device.index is not None else 0
    fn = _FUNCTIONS.get((file, name, dev))
    if fn is None:
        with cupy.cuda.Device(dev):
            fn = get_module(file, device=dev).get_function(name)
        _FUNCTIONS[(file, name, dev)] = fn
    cs = _stream_of(dev)
    if int(cupy.cuda.runtime.getDevice()) == dev:
        fn((grid,), (block,), args, stream=cs)
    else:
        with cupy.cuda.Device(dev):
            fn((grid,), (block,), args, stream=cs)


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
