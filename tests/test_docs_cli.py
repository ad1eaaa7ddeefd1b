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


def test_doc_blocks_run(tmp_path, monkeypatch):
    """As the docs harness runs a page: all python blocks in order in one interpreter,
    then each sh block with ``set -euo pipefail``, in one fresh folder."""
    pytest.importorskip("pyarrow")
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ)
    env.pop("THRIFTY_NUM_THREADS", None)
    found = _blocks()
    script = "\n\n".join(body for lang, body in found if lang == "python")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, f"python blocks failed:\n{r.stdout}\n{r.stderr}"
    # `thrifty` and `python` as on an installed system, whether or not they are on PATH
    prelude = (f"set -euo pipefail\nthrifty() {{ '{sys.executable}' -m thrifty \"$@\"; }}\n"
               f"python() {{ '{sys.executable}' \"$@\"; }}\n")
    for i, (lang, body) in enumerate(found):
        if lang == "sh":
            r = subprocess.run(["bash", "-c", prelude + body], capture_output=True, text=True,
                               timeout=120, env=env)
            assert r.returncode == 0, f"sh block {i} failed:\n{body}\n{r.stdout}\n{r.stderr}"


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
