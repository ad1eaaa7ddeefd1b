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


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux CPU affinity and two cores")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_available_cores_are_read_once_per_process():
    # The count is cached after the first call (reading the affinity mask and cgroup
    # files cost every default-count call about 40 us); a forked child reads its own.
    thrifty.set_num_threads(None)
    before = thrifty.get_num_threads()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: one core, then the default count
        try:
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
            os.write(w, str(thrifty.get_num_threads()).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        child = int(f.read())
    os.waitpid(pid, 0)
    assert child == 1
    assert thrifty.get_num_threads() == before
    # the cached count is what a call at the default count runs on
    assert _core._pool_threads(8 * before)[0] == before


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
        results.append((_core.linalg_column_mean(x), _core.linalg_row_norms_sq(x), _core.linalg_normalize_rows(x)))
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


def test_threads_context_sets_this_thread_only_and_restores():
    thrifty.set_num_threads(3)
    with thrifty.threads(2) as ctx:
        assert thrifty.get_num_threads() == 2
        assert _core._pool_threads(16)[0] == 2
        with ctx:  # the same object nests
            with thrifty.threads(1):
                assert _core._pool_threads(4)[0] == 1
            assert thrifty.get_num_threads() == 2
        assert thrifty.get_num_threads() == 2
    assert thrifty.get_num_threads() == 3  # the global setting was never changed
    with pytest.raises(RuntimeError), thrifty.threads(1):
        raise RuntimeError("boom")
    assert thrifty.get_num_threads() == 3
    thrifty.set_num_threads(None)


def test_threads_none_means_all_cores_and_decorates():
    thrifty.set_num_threads(1)
    with thrifty.threads(None):
        assert thrifty.get_num_threads() == thrifty.config()["available_threads"]

    @thrifty.threads(2)
    def work():
        return _core._pool_threads(8)[0]

    assert work() == 2 and thrifty.get_num_threads() == 1
    thrifty.set_num_threads(None)


def test_threads_concurrent_python_threads_keep_their_own_count():
    import threading

    barrier = threading.Barrier(2)
    seen = {}

    def worker(n):
        with thrifty.threads(n):
            barrier.wait()  # both are inside their block now
            seen[n] = [(_core._pool_threads(4 * n)[0], thrifty.get_num_threads()) for _ in range(20)]
            barrier.wait()

    ts = [threading.Thread(target=worker, args=(n,)) for n in (1, 3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert seen[1] == [(1, 1)] * 20 and seen[3] == [(3, 3)] * 20


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, 10**6])
def test_threads_invalid_count(bad):
    with pytest.raises(thrifty.InvalidInputError):
        thrifty.threads(bad)
