"""Compile-check every CUDA kernel file with NVRTC (no GPU or driver needed).

Parametrised over every ``cuda/*.cu`` of the repository x {compute_80, compute_90} x
each NVRTC library found (CUDA 12 and 13 from the ``cuda-check`` extra). Without NVRTC
the compile tests skip, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from thrifty import InvalidInputError
from thrifty.torch._cuda import _runtime as rt

REPO = Path(__file__).resolve().parents[2]
CUDA_DIR = REPO / "cuda"
KERNELS_DIR = REPO / "python" / "thrifty" / "kernels"
SOURCES = sorted(p.name for p in CUDA_DIR.glob("*.cu"))
VERSIONS = sorted(rt.nvrtc_libraries())
ARCHS = ("compute_80", "compute_90")

# Entry points each Python module launches: the PTX must define every one of them.
EXPECTED_ENTRIES = {
    "quant.cu": "thrifty.torch.quant",
    "bitlinear.cu": "thrifty.torch._cuda.bitlinear",
    "mezo.cu": "thrifty.torch._cuda.mezo",
    "loss.cu": "thrifty.torch._cuda.loss",
    "optim.cu": "thrifty.torch._cuda.optim",
}


def _need_nvrtc() -> None:
    if not VERSIONS:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("NVRTC is missing in CI: install the cuda-check extra")
        pytest.skip("no NVRTC library (pip install 'thrifty[cuda-check]')")


def test_kernel_sources_exist():
    assert "quant.cu" in SOURCES and "bitlinear.cu" in SOURCES
    assert (CUDA_DIR / "thrifty_common.cuh").is_file()


@pytest.mark.parametrize("name", sorted(p.name for p in CUDA_DIR.glob("*.cu*")))
def test_every_kernel_file_ships_in_the_package(name):
    # The wheel carries python/thrifty/kernels/*: one symlink per file of cuda/.
    link = KERNELS_DIR / name
    assert link.exists(), f"add the link: ln -s ../../../cuda/{name} python/thrifty/kernels/{name}"
    assert link.resolve() == (CUDA_DIR / name).resolve()
    assert rt.kernel_source(name) == (CUDA_DIR / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("version", VERSIONS or [None])
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", SOURCES)
def test_compiles_with_nvrtc(name, arch, version):
    _need_nvrtc()
    ptx = rt.nvrtc_compile(name, arch, version=version).decode()
    target = arch.replace("compute_", "sm_")
    assert re.search(rf"^\.target {target}\b", ptx, re.M), ptx[:400]
    entries = set(re.findall(r"\.entry\s+(\w+)", ptx))
    assert entries, f"{name} defines no kernel"
    mod = EXPECTED_ENTRIES.get(name)
    if mod is not None:
        import importlib

        want = set(importlib.import_module(mod)._KERNELS)
        assert want <= entries, f"missing kernels in {name}: {sorted(want - entries)}"


def test_no_forbidden_headers():
    # CUDA's own headers only: no curand, CCCL or C++ standard library.
    allowed = {"cuda_fp16.h", "cuda_bf16.h", "cuda_fp8.h"} | {p.name for p in CUDA_DIR.glob("*.cuh")}
    for p in sorted(CUDA_DIR.glob("*.cu*")):
        for inc in re.findall(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', p.read_text(), re.M):
            assert inc in allowed, f"{p.name} includes {inc}"


def test_compile_error_carries_the_log(monkeypatch):
    _need_nvrtc()
    monkeypatch.setattr(rt, "kernel_source", lambda name: "extern \"C\" __global__ void k() { undefined_thing(); }")
    with pytest.raises(rt.KernelCompileError, match="undefined_thing"):
        rt.nvrtc_compile("quant.cu", "compute_80")


def test_bad_arguments():
    with pytest.raises(InvalidInputError, match="compute_80"):
        rt.nvrtc_compile("quant.cu", "sm80")
    with pytest.raises(InvalidInputError, match="plain file names"):
        rt.kernel_source("../quant.cu")
    with pytest.raises(InvalidInputError, match="no kernel file"):
        rt.kernel_source("missing.cu")
    if VERSIONS:
        with pytest.raises(InvalidInputError, match="no NVRTC 7"):
            rt.nvrtc_compile("quant.cu", version=7)


def test_header_folders_match_the_version():
    for v in VERSIONS:
        for d in rt.cuda_include_dirs(v):
            assert (Path(d) / "cuda_fp16.h").is_file()
            assert rt._header_major(d) in (None, v)


def test_import_needs_no_cupy_or_torch():
    code = ("import sys, thrifty.torch, thrifty.torch._cuda._runtime; "
            "print([m for m in ('cupy', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "[]"
    # the probe may import torch (to ask for a device); it must never fail
    code2 = "import thrifty.torch; print(thrifty.torch.cuda_available() in (True, False))"
    out2 = subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out2.stdout.strip() == "True"


def test_no_issue_numbers_in_kernel_sources():
    for p in sorted(CUDA_DIR.glob("*")):
        assert not re.search(r"#\d+|\bissue\b", p.read_text(), re.I), p.name


@pytest.mark.parametrize("name", ["quant.cu", "bitlinear.cu"])
def test_no_fused_float_multiply_add(name):
    # Bit-exactness with the CPU needs every float op rounded on its own: the kernels use
    # explicitly rounded intrinsics, so even --fmad=true must produce no float fma/mad.
    _need_nvrtc()
    for opts in ((), ("--fmad=true",)):
        ptx = rt.nvrtc_compile(name, "compute_90", options=opts).decode()
        assert not re.findall(r"\b(?:fma|mad)\.(?:rn\.)?(?:ftz\.)?(?:sat\.)?f(?:32|64)\b", ptx)
