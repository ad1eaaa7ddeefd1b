import os
import subprocess
import sys

import numpy as np
import pytest

import thrifty
from thrifty import _core


def test_default_is_all_cores():
    thrifty.set_num_threads(None)
    assert thrifty.get_num_threads() == (os.cpu_count() or 1) or thrifty.get_num_threads() == len(
        os.sched_getaffinity(0)
    )


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_thread_count_is_honoured(n):
    thrifty.set_num_threads(n)
    assert thrifty.get_num_threads() == n
    pool_threads, workers_used = _core._pool_threads(8 * n)
    assert pool_threads == n
    assert 1 <= workers_used <= n


def test_can_change_repeatedly():
    for n in [3, 1, 2, 1, 3]:
        thrifty.set_num_threads(n)
        assert _core._pool_threads(4)[0] == n


def test_results_identical_across_thread_counts(rng):
    x = rng.standard_normal((20_000, 33)).astype(np.float32) * 1e3
    results = []
    for n in [1, 2, 3, 7]:
        thrifty.set_num_threads(n)
        results.append((_core.column_mean(x), _core.row_norms_sq(x), _core.normalize_rows(x)))
    for r in results[1:]:
        for a, b in zip(results[0], r):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, 10**6])
def test_invalid_thread_counts(bad):
    with pytest.raises(thrifty.InvalidInputError):
        thrifty.set_num_threads(bad)


def _threads_in_subprocess(env_value):
    env = dict(os.environ)
    env["THRIFTY_NUM_THREADS"] = env_value
    out = subprocess.run(
        [sys.executable, "-W", "always", "-c", "import thrifty; print(thrifty.get_num_threads())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip()), out.stderr


def test_env_variable():
    n, err = _threads_in_subprocess("3")
    assert n == 3 and err == ""


def test_bad_env_variable_warns_and_uses_all_cores():
    n, err = _threads_in_subprocess("lots")
    assert n >= 1
    assert "THRIFTY_NUM_THREADS" in err and "RuntimeWarning" in err
