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
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["info", "--bogus"], "unrecognized arguments: --bogus"),
        (["prune", "x.npy", "--bogus", "-o", "k.npy"], "unrecognized arguments: --bogus"),
        (["prune", "x.npy", "--keep", "abc"], "argument --keep: invalid float value: 'abc'"),
    ],
)
def test_bad_usage_is_one_line_exit_2(args, fragment):
    r = run_cli(*args)
    assert r.returncode == 2
    assert fragment in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    prefix = "thrifty: error:" if not args or args[0] in ("frobnicate", "--bogus") else \
        f"thrifty {args[0]}: error:"
    assert last.startswith(prefix) and fragment in last
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


def test_python_dash_m_thrifty():
    r = subprocess.run([sys.executable, "-m", "thrifty", "--version"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"thrifty {thrifty.__version__}"
    r = subprocess.run([sys.executable, "-m", "thrifty"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "a command is required" in r.stderr


@pytest.mark.parametrize("args", [["info"], ["info", "--json"], ["--help"]])
def test_closed_stdout_is_not_a_traceback(args):
    """``thrifty info | head -1``: the reader leaves before the output is written."""
    p = subprocess.Popen([sys.executable, "-m", "thrifty", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()  # long before the interpreter has started
    err = p.stderr.read().decode()
    rc = p.wait(timeout=60)
    p.stderr.close()
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err
    assert rc in (0, 141)


def test_head_of_info_through_a_shell_pipe():
    r = subprocess.run(f"'{sys.executable}' -m thrifty info | head -1", shell=True,
                       capture_output=True, text=True, timeout=60)
    assert r.stdout == f"thrifty {thrifty.__version__}\n" and r.stderr == ""


@pytest.mark.parametrize("value, fragment", [
    ("3", "set by THRIFTY_NUM_THREADS"),
    ("abc", "THRIFTY_NUM_THREADS='abc' was ignored"),
    ("0", "THRIFTY_NUM_THREADS='0' was ignored"),
    ("", "the default: all cores"),
])
def test_info_says_where_the_thread_count_comes_from(value, fragment):
    env = dict(os.environ, THRIFTY_NUM_THREADS=value)
    r = subprocess.run([sys.executable, "-m", "thrifty", "info"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0
    line = next(ln for ln in r.stdout.splitlines() if "threads:" in ln)
    assert fragment in line, line
    if value == "abc":
        assert "set by" not in line
    r = subprocess.run([sys.executable, "-m", "thrifty", "info", "--json"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert fragment in json.loads(r.stdout)["num_threads_source"]


def test_set_num_threads_is_named_as_the_source():
    thrifty.set_num_threads(1)
    try:
        assert thrifty.config()["num_threads_source"] == "set by thrifty.set_num_threads"
    finally:
        thrifty.set_num_threads(None)
    assert thrifty.config()["num_threads_source"] == "the default: all cores"


def test_errors_carry_the_command_prefix(tmp_path, capsys):
    assert main(["prune", str(tmp_path / "missing.npy"), "-o", str(tmp_path / "k.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("thrifty prune: error: input file not found") and err.count("\n") == 1
