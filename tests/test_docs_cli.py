"""docs/cli.md runs as written: its python and sh blocks, in order, in a fresh folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _blocks():
    return [(lang, body) for lang, body in BLOCK.findall(DOC.read_text()) if lang in ("python", "sh")]


def test_doc_has_runnable_blocks():
    langs = [lang for lang, _ in _blocks()]
    assert langs.count("python") >= 3 and langs.count("sh") >= 3


def test_doc_blocks_run_in_order(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ)
    env.pop("THRIFTY_NUM_THREADS", None)
    # `thrifty` as the console script would be, whether or not it is on PATH
    prelude = f"set -eu\nthrifty() {{ '{sys.executable}' -m thrifty \"$@\"; }}\n" \
              f"python() {{ '{sys.executable}' \"$@\"; }}\n"
    for i, (lang, body) in enumerate(_blocks()):
        if lang == "python":
            r = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True,
                               timeout=120, env=env)
        else:
            r = subprocess.run(["bash", "-c", prelude + body], capture_output=True, text=True,
                               timeout=120, env=env)
        assert r.returncode == 0, f"block {i} ({lang}) failed:\n{body}\n{r.stdout}\n{r.stderr}"


def test_python_blocks_run_without_the_shell_blocks(tmp_path, monkeypatch):
    """A harness that executes only the python blocks, in order, also succeeds."""
    pytest.importorskip("pyarrow")
    monkeypatch.chdir(tmp_path)
    for i, (lang, body) in enumerate(_blocks()):
        if lang == "python":
            r = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True,
                               timeout=120)
            assert r.returncode == 0, f"block {i} failed:\n{body}\n{r.stderr}"


def test_doc_shows_the_real_messages(tmp_path, capsys, monkeypatch):
    """The error and summary lines quoted in the doc are what the CLI prints."""
    import numpy as np

    from thrifty.cli import main

    text = DOC.read_text()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 32)).astype(np.float32)
    x[1000:1100] = x[:100] + 1e-4
    np.save(tmp_path / "emb.npy", x)
    monkeypatch.chdir(tmp_path)
    assert main(["prune", "emb.npy", "--method", "semdedup", "--keep", "0.3", "-o", "out.npy"]) == 2
    err = capsys.readouterr().err.strip()
    assert err in text
    assert main(["prune", "emb.npy", "--method", "dbp", "--keep", "0.5", "--eps", "0.01",
                 "-o", "kept.npy", "--report", "report.json"]) == 0
    out = capsys.readouterr().out.strip()
    assert re.sub(r"in [0-9.]+ s", "in 0.2 s", out) in text
