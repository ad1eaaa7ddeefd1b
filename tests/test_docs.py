"""Every code block in README.md and docs/ runs, so an example can not go stale.

A page's ```python blocks run in order in one fresh interpreter (later blocks see the
names of earlier ones, as a reader would type them), in a temporary directory; its
```bash blocks run there too, after the Python blocks, with ``set -euo pipefail``.
Blocks fenced as ```text or ```console are output or commands to read (installing,
launching a cluster) and are not run. A page whose blocks need an optional package
(torch, ray, matplotlib) is skipped, loudly, where it is missing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
RUN = {"python": "python", "py": "python", "bash": "bash", "sh": "bash"}
OPTIONAL = {"torch": "torch", "thrifty.distributed": "ray", "matplotlib": "matplotlib"}


def blocks(page: Path) -> list[tuple[str, str]]:
    """The runnable (language, source) blocks of a page, in order."""
    out = []
    for m in FENCE.finditer(page.read_text(encoding="utf-8")):
        lang = m.group(1).strip().split()[0] if m.group(1).strip() else ""
        if lang in RUN:
            out.append((RUN[lang], m.group(2)))
        elif lang not in ("text", "console", "toml", "yaml", "json", "cpp", "c", "rust", ""):
            raise AssertionError(f"{page.name}: unknown code block language {lang!r}")
    return out


def test_every_page_fence_is_known() -> None:
    for page in PAGES:
        blocks(page)  # raises on an unknown language
        text = page.read_text(encoding="utf-8")
        assert "```\n" not in re.sub(r"```[^\n]*\n.*?```", "", text, flags=re.S), (
            f"{page}: a code block without a language"
        )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_code_blocks_run(page: Path, tmp_path: Path) -> None:
    found = blocks(page)
    if not found:
        pytest.skip(f"{page.name} has no runnable code blocks")
    source = "\n".join(src for _, src in found)
    for needle, module in OPTIONAL.items():
        if needle in source and importlib.util.find_spec(module) is None:
            pytest.skip(f"{page.name} needs {module}, which is not installed")
    env = dict(os.environ, PYTHONHASHSEED="0", MPLBACKEND="Agg")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    python = "\n\n".join(textwrap.dedent(src) for lang, src in found if lang == "python")
    if python:
        script = tmp_path / "page.py"
        script.write_text(python, encoding="utf-8")
        r = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=300,
        )
        assert r.returncode == 0, f"{page.name}: python blocks failed\n{r.stdout}\n{r.stderr}"
    for lang, src in found:
        if lang != "bash":
            continue
        r = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + src], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=300,
        )
        assert r.returncode == 0, f"{page.name}: bash block failed\n{src}\n{r.stdout}\n{r.stderr}"
