import io
import sys

import numpy as np
import pytest

import thrifty
from thrifty import _core
from thrifty._progress import progress_callback


def test_callback_receives_progress_from_rust():
    seen = []
    done = _core._busy(12, 25, lambda d, t: seen.append((d, t)))
    assert done == 12
    assert seen, "callback never invoked"
    assert all(t == 12 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1] == (12, 12)


def test_column_mean_reports_rows(rng):
    x = rng.standard_normal((5000, 4)).astype(np.float32)
    seen = []
    _core.linalg_column_mean(x, lambda d, t: seen.append((d, t)))
    assert seen[-1] == (5000, 5000)


def test_exception_in_callback_cancels_work():
    calls = []

    def cb(done, total):
        calls.append(done)
        raise KeyError("stop now")

    with pytest.raises(KeyError, match="stop now"):
        _core._busy(1000, 5, cb)  # would take 5 s if not cancelled
    assert len(calls) == 1


def test_progress_argument_resolution(monkeypatch):
    with progress_callback(False, desc="x") as cb:
        assert cb is None
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a TTY
    with progress_callback(None, desc="x") as cb:
        assert cb is None
    with progress_callback(True, desc="demo", unit="rows") as cb:
        assert cb is not None
        _core._busy(3, 1, cb)
    text = sys.stderr.getvalue()
    assert "demo" in text and "3/3" in text
    with pytest.raises(thrifty.InvalidInputError):
        progress_callback("yes", desc="x")


def test_text_bar_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `import tqdm` fail
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    with progress_callback(True, desc="plain") as cb:
        cb(1, 4)
        cb(4, 4)
    assert "plain: 100.0% (4/4 it)" in buf.getvalue()


def test_ctrl_c_interrupts_long_work_promptly():
    import signal
    import subprocess
    import time

    code = (
        "import sys, time, thrifty\n"
        "from thrifty import _core\n"
        "print('ready', flush=True)\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    _core._busy(2000, 5)\n"  # 10 s of work if not interrupted
        "except KeyboardInterrupt:\n"
        "    print(f'interrupted {time.perf_counter() - t:.2f}', flush=True)\n"
        "    sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0, out
    assert out.startswith("interrupted")
    assert float(out.split()[1]) < 5.0
