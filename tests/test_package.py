import importlib.resources
import subprocess
import sys

import pytest

import thrifty


def test_import_does_not_pull_heavy_dependencies():
    code = (
        "import sys, thrifty, thrifty.cli; "
        "heavy = [m for m in ('torch', 'cupy', 'sklearn', 'tqdm', 'scipy') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_api():
    for name in thrifty.__all__:
        assert hasattr(thrifty, name), name
    assert thrifty.__version__.count(".") == 2


def test_typed_package():
    assert importlib.resources.files("thrifty").joinpath("py.typed").is_file()
    assert importlib.resources.files("thrifty").joinpath("_core.pyi").is_file()


def test_stubs_match_extension():
    pytest.importorskip("mypy")
    r = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "thrifty._core"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_show_config_writes_to_file():
    import io

    buf = io.StringIO()
    thrifty.show_config(file=buf)
    text = buf.getvalue()
    assert text.startswith("thrifty ") and "cpu features:" in text and "threads:" in text
