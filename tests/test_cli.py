import json
import os
import subprocess
import sys

import pytest

import thrifty
from thrifty.cli import main


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "thrifty.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"thrifty {thrifty.__version__}"


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"thrifty {thrifty.__version__}")
    assert "rust compiler:   rustc " in out and "threads:" in out and "cpu features:" in out


def test_info_json_honours_env():
    env = dict(os.environ, THRIFTY_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, "-m", "thrifty.cli", "info", "--json"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0
    cfg = json.loads(r.stdout)
    assert cfg["num_threads"] == 1 and cfg["version"] == thrifty.__version__
    assert isinstance(cfg["simd"], list)


@pytest.mark.parametrize(
    "args, fragment",
    [
        ([], "a command is required"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["info", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_usage_is_one_line_exit_2(args, fragment):
    r = run_cli(*args)
    assert r.returncode == 2
    assert fragment in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("thrifty: error:") and fragment in last
    assert "Traceback" not in r.stderr


def test_help_lists_commands():
    r = run_cli("--help")
    assert r.returncode == 0 and "info" in r.stdout


def test_console_script_installed():
    import shutil

    exe = shutil.which("thrifty")
    if exe is None:
        pytest.skip("console script not on PATH")
    r = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and thrifty.__version__ in r.stdout
