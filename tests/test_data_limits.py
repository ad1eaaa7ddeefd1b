"""thrifty.data under hostile conditions: memory limits and files that change under a loader.

Each case runs in a child process, so an abort (SIGABRT on a failed allocation) or a
SIGBUS shows up as a failed test instead of killing the test run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

resource = pytest.importorskip("resource")


def run_child(code: str, timeout: float = 60) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"child died with {proc.returncode} (negative: killed by that signal)\n"
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


LIMIT = """
import resource
def vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise SystemExit("no VmSize")
import numpy as np, thrifty, thrifty.data
from thrifty.data import ArrayLoader, LossFilter, TemperatureSampler, permutation
thrifty.data.permutation(10)  # start the thread pool before the limit
limit = vm_bytes() + (1 << 30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

def expect_oom(name, fn):
    try:
        fn()
    except thrifty.OutOfMemoryError as e:
        assert isinstance(e, MemoryError)
        print(name, "OutOfMemoryError", e)
    else:
        raise AssertionError(name + " did not fail")
"""


def sparse_npy(path, n, d, dtype="<f4"):
    """A .npy file of shape (n, d) whose data is a hole (no disk, no memory)."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(
            f, {"descr": dtype, "fortran_order": False, "shape": (n, d)})
        f.truncate(f.tell() + n * d * np.dtype(dtype).itemsize)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (Linux)")
def test_huge_requests_under_a_memory_limit_raise_instead_of_aborting(tmp_path):
    big = tmp_path / "big.npy"
    sparse_npy(big, 655_360, 1024)  # 2.5 GiB of float32
    out = run_child(LIMIT + f"""
f = LossFilter(warmup_steps=1, window=2**40)  # the window grows only with the losses fed
assert f([1.0, 3.0]).tolist() == [True, True] and f.threshold_ == 2.0
print("LossFilter ok")
expect_oom("permutation", lambda: permutation(2**62, count=2**40))
expect_oom("sample", lambda: TemperatureSampler([5, 5], temperature=1.0).sample(2**36))
loader = ArrayLoader({str(big)!r}, batch_size=655_360, shuffle=False)
expect_oom("batch", lambda: next(iter(loader)))
small = ArrayLoader({str(big)!r}, batch_size=16)  # the same file in small batches works
assert next(iter(small)).shape == (16, 1024)
print("small batches ok")
""")
    assert "LossFilter ok" in out and "small batches ok" in out
    for name in ("permutation", "sample", "batch"):
        assert f"{name} OutOfMemoryError" in out, out


@pytest.mark.parametrize("read", ["pread", "mmap"])
def test_truncating_a_streamed_file_raises_instead_of_sigbus(tmp_path, read):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(64_000, dtype=np.float32).reshape(4000, 16))
    out = run_child(f"""
import os, time, numpy as np, thrifty
from thrifty.data import ArrayLoader, TokenLoader, read_npy_header
path = {str(path)!r}
_, _, offset = read_npy_header(path)
loader = ArrayLoader(path, batch_size=100, shuffle=False, prefetch=1, read={read!r})
it = iter(loader)
first = next(it)
assert first[1, 0] == 16.0
time.sleep(0.3)  # the producer has filled its queue and waits: no copy in flight
os.truncate(path, offset + 100 * 64)  # keep one batch's worth of rows
try:
    for _ in it:
        pass
except thrifty.FormatError as e:
    print("FormatError", e)
tok = path + ".tokens"
np.arange(10_001, dtype=np.uint16).tofile(tok)
tl = TokenLoader(tok, seq_len=10, batch_size=50, prefetch=1, read={read!r})
it = iter(tl)
next(it)
time.sleep(0.3)
os.truncate(tok, 100)
try:
    for _ in it:
        pass
except thrifty.FormatError as e:
    print("FormatError", e)
""")
    assert out.count("FormatError") == 2, out
    assert "changed size while it was being read" in out
