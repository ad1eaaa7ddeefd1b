"""Package metadata a user or packager relies on: licenses, URLs, extras, release build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]


def _toml(name):
    return tomllib.loads((ROOT / name).read_text())


def test_license_files_exist_and_match_the_expression():
    project = _toml("pyproject.toml")["project"]
    assert project["license"] == "MIT OR Apache-2.0"
    assert sorted(project["license-files"]) == ["LICENSE-APACHE", "LICENSE-MIT"]
    mit = (ROOT / "LICENSE-MIT").read_text()
    apache = (ROOT / "LICENSE-APACHE").read_text()
    assert "Copyright (c) 2026 The thrifty authors" in mit and "MIT License" in mit
    assert "Apache License" in apache and "Version 2.0, January 2004" in apache
    assert "Copyright 2026 The thrifty authors" in apache and "END OF TERMS AND CONDITIONS" in apache


def test_project_urls():
    urls = _toml("pyproject.toml")["project"]["urls"]
    assert {"Homepage", "Source", "Issues"} <= set(urls)
    assert all(u.startswith("https://") for u in urls.values())


def test_extras():
    extras = _toml("pyproject.toml")["project"]["optional-dependencies"]
    assert any(d.startswith("torch") for d in extras["cuda"])
    assert any(d.startswith("cupy") for d in extras["cuda"])
    assert "dask" not in extras


def test_release_profile_strips_the_extension():
    release = _toml("Cargo.toml")["profile"]["release"]
    assert release["strip"] is True


def test_torch_submodules_without_torch_are_a_one_line_install_hint():
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"  # as if torch were not installed
        "import thrifty.torch\n"
        "assert thrifty.torch.cuda_available() is False\n"
        "try:\n"
        "    thrifty.torch.quant\n"
        "except ModuleNotFoundError as e:\n"
        "    print(e.name, '|', e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    name, msg = r.stdout.strip().split(" | ")
    assert name == "torch" and "pip install torch" in msg and "'cuda' extra" in msg
    assert "\n" not in msg
