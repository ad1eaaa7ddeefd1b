"""The executor layer: map / broadcast / gather on Ray Core, and stage bookkeeping.

The algorithms (``_stages``) are plain functions of ``(source, row range, small
parameters)`` that read their input themselves and write their output files atomically;
this module is the only one that talks to Ray. A second engine would replace
:class:`RayExecutor` only.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._errors import InvalidInputError, ThriftyError
from .._progress import ProgressArg, progress_callback

__all__ = ["RayExecutor", "WorkDir", "Stage", "connect", "fault_point"]


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError("thrifty.distributed needs Ray: pip install 'thrifty[ray]'") from None
    return ray


def connect(ray_address: str | None = "auto") -> Any:
    """Make sure this process is connected to a Ray cluster; return the ``ray`` module.

    ``"auto"``: an already initialised connection, else the cluster ``ray start`` left
    on this machine (``RAY_ADDRESS``), else a new local one; ``"local"`` / ``"local:N"``:
    a new local cluster with ``N`` CPUs; anything else: a cluster address
    (``"ray://host:10001"``, ``"host:6379"``).
    """
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    addr = "auto" if ray_address is None else str(ray_address)
    if addr.startswith("local"):
        n: int | None = None
        if addr != "local":
            try:
                n = int(addr.split(":", 1)[1])
            except (IndexError, ValueError):
                raise InvalidInputError(f"ray must be 'auto', an address or 'local[:N]', got "
                                        f"{ray_address!r}") from None
            if n < 1:
                raise InvalidInputError(f"local:N needs N >= 1, got {n}")
        ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False)
    elif addr == "auto":
        try:
            ray.init(address="auto", log_to_driver=False)
        except ConnectionError:
            ray.init(include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=addr, log_to_driver=False)
    return ray


def _run_task(fn: Callable[..., Any], threads: int, *args: Any) -> Any:
    """What every Ray task runs: ``fn(*args)`` with thrifty's threads = the task's CPUs."""
    from .. import threads as thrifty_threads

    with thrifty_threads(threads):
        return fn(*args)


def fault_point(stage: str) -> None:
    """Test hook: with ``THRIFTY_DISTRIBUTED_FAULT_DIR`` set and a file ``hold-<stage>``
    in it, a task records its PID (``pid-<stage>-<pid>``) and waits while that file
    exists, so a test can kill the worker mid-stage. Does nothing otherwise."""
    d = os.environ.get("THRIFTY_DISTRIBUTED_FAULT_DIR")
    if not d:
        return
    hold = os.path.join(d, f"hold-{stage}")
    if not os.path.exists(hold):
        return
    path = os.path.join(d, f"pid-{stage}-{os.getpid()}")
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    t0 = time.monotonic()
    while os.path.exists(hold) and time.monotonic() - t0 < 60:
        time.sleep(0.02)


class RayExecutor:
    """Run pure tasks on Ray Core.

    Parameters
    ----------
    num_cpus : int
        CPUs per task; thrifty's thread count inside the task is set to the same number,
        so tasks x threads never exceed the cluster's cores.
    max_retries : int
        Re-runs of a task whose worker died (system failures). thrifty's own errors are
        deterministic and never retried.
    progress : bool, callable or None
        Tasks done / total for every stage (see :mod:`thrifty`).
    """

    def __init__(self, *, num_cpus: int = 1, max_retries: int = 3,
                 progress: ProgressArg = None) -> None:
        self.ray = _import_ray()
        if not self.ray.is_initialized():
            connect("auto")
        self.num_cpus = int(num_cpus)
        self.max_retries = int(max_retries)
        self.progress = progress
        self._remote = self.ray.remote(_run_task)
        #: wall seconds per stage (``desc``), for cost models
        self.seconds: dict[str, float] = {}

    def check_kernels(self) -> None:
        """Warn (once per connection) when the nodes' float32 kernels differ from the
        driver's: exact equality with one process needs one kernel family."""
        import warnings

        from ._stages import kernel_family

        key = self.ray.get_runtime_context().get_job_id()
        if RayExecutor._checked == key:
            return
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        refs = [self._remote.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                    node["NodeID"], soft=False)).remote(kernel_family, 1)
                for node in self.ray.nodes() if node.get("Alive")]
        msg = mixed_kernels([kernel_family(), *self.ray.get(refs)])
        RayExecutor._checked = key
        if msg:
            warnings.warn(msg, RuntimeWarning, stacklevel=3)

    _checked: str | None = None

    def put(self, value: Any) -> Any:
        """Broadcast: store ``value`` once in the object store; pass the ref to tasks."""
        return self.ray.put(value)

    def map(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]], *, desc: str,
            num_cpus: int | None = None) -> list[Any]:
        """``[fn(*a) for a in args]`` as Ray tasks, results in input order.

        Progress shows tasks done / total; Ctrl-C cancels every task of the stage; the
        first task error is raised as itself when it is a thrifty error.
        """
        ray = self.ray
        cpus = self.num_cpus if num_cpus is None else int(num_cpus)
        opts = self._remote.options(num_cpus=cpus, max_retries=self.max_retries,
                                    retry_exceptions=False)
        # arguments are top-level, so broadcast refs (``put``) arrive as their values
        t0 = time.perf_counter()
        refs = [opts.remote(fn, cpus, *a) for a in args]
        index = {r: i for i, r in enumerate(refs)}
        out: list[Any] = [None] * len(refs)
        pending = list(refs)
        try:
            with progress_callback(self.progress, desc=desc, unit="task") as cb:
                if cb:
                    cb(0, len(refs))
                while pending:
                    done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
                    for r in done:
                        out[index[r]] = self._get(r)
                    if cb and done:
                        cb(len(refs) - len(pending), len(refs))
        except BaseException:
            self._cancel(pending)
            raise
        self.seconds[desc] = self.seconds.get(desc, 0.0) + time.perf_counter() - t0
        return out

    def tree_reduce(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]],
                    node: Callable[[Any, Any], Any], *, desc: str,
                    num_cpus: int | None = None,
                    progress: Callable[[int, int], Any] | None = None) -> Any:
        """``fn(*a)`` for every ``a`` as Ray tasks (the leaves, in order), combined by the
        fixed aligned binary tree over their indices: level 1 runs ``node(leaf 2m, leaf
        2m + 1)``, level 2 combines those results pairwise, and so on; a node without a
        right sibling passes up unchanged. The inner nodes are Ray tasks too (1 CPU),
        submitted with the leaves and run as their inputs finish, so no process receives
        more than two partials at a time and the driver receives only the root, which is
        returned. The tree's shape depends on ``len(args)`` only.

        Progress counts tasks done / total (leaves and nodes) through ``progress(done,
        total)`` when given, else a bar named ``desc``; Ctrl-C or an error cancels every
        task of the reduction; the first task error is raised as itself when it is a
        thrifty error (a failed leaf fails every node above it, so it reaches the root).
        """
        if not args:
            raise InvalidInputError("nothing to reduce")
        ray = self.ray
        cpus = self.num_cpus if num_cpus is None else int(num_cpus)
        leaf = self._remote.options(num_cpus=cpus, max_retries=self.max_retries,
                                    retry_exceptions=False)
        inner = self._remote.options(num_cpus=1, max_retries=self.max_retries,
                                     retry_exceptions=False)
        t0 = time.perf_counter()
        level = [leaf.remote(fn, cpus, *a) for a in args]
        pending = list(level)
        while len(level) > 1:
            up = [inner.remote(node, 1, level[i], level[i + 1])
                  for i in range(0, len(level) - 1, 2)]
            pending.extend(up)
            level = up + level[len(level) - len(level) % 2:]
        root = level[0]
        del level
        total = len(pending)
        try:
            with progress_callback(False if progress else self.progress, desc=desc,
                                   unit="task") as cb:
                report = progress or cb
                if report:
                    report(0, total)
                # only readiness is awaited here: partials stay in the object store (a
                # node's inputs go to the node's worker) until the root is fetched
                while pending:
                    done, pending = ray.wait(pending, num_returns=1, timeout=0.5,
                                             fetch_local=False)
                    if report and done:
                        report(total - len(pending), total)
                    if any(r == root for r in done) and pending:
                        break  # the root is ready: done, or failed early with an input
                out = self._get(root)
                if report and pending:  # done: every task under the root finished
                    report(total, total)
        except BaseException:
            self._cancel(pending)
            raise
        self.seconds[desc] = self.seconds.get(desc, 0.0) + time.perf_counter() - t0
        return out

    def _cancel(self, pending: list[Any]) -> None:
        """Cancel ``pending`` and let the tasks end before the caller cleans up after the
        stage (a task still running could write after that)."""
        ray = self.ray
        for r in pending:
            ray.cancel(r, force=True)
        try:
            ray.wait(pending, num_returns=len(pending), timeout=10)
        except Exception:  # noqa: BLE001 - the first error is the one to report
            pass

    def _get(self, ref: Any) -> Any:
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, ThriftyError):
                raise cause from None
            raise


def mixed_kernels(reports: list[dict[str, str]]) -> str | None:
    """A warning text when the processes in ``reports`` (see ``kernel_family``) do not
    all use the same float32 kernel family, else None."""
    fams: dict[str, list[str]] = {}
    for r in reports:
        fams.setdefault(r["kernels"], []).append(r["node"])
    if len(fams) <= 1:
        return None
    parts = "; ".join(f"{k} on {', '.join(sorted(set(v)))}" for k, v in sorted(fams.items()))
    return ("the driver and Ray nodes use different float32 kernels (" + parts + "): results "
            "may differ from a single-process run in near ties; use one CPU type for exactness")


class Stage:
    """A stage's directory; "done" once its manifest (written last, atomically) exists
    and records the same ``key`` (the stage's inputs and parameters)."""

    def __init__(self, root: str, name: str, key: dict[str, Any]) -> None:
        self.name = name
        self.dir = os.path.join(root, name)
        self.key = key
        self.manifest_path = os.path.join(self.dir, "_manifest.json")

    def load(self) -> dict[str, Any] | None:
        """The manifest's data when the stage is done with this key, else None."""
        try:
            with open(self.manifest_path) as f:
                m = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return m.get("data") if m.get("key") == self.key else None

    def reset(self) -> None:
        """Remove whatever an earlier (unfinished or different) run left."""
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)

    def path(self, *parts: str) -> str:
        p = os.path.join(self.dir, *parts)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def finish(self, data: dict[str, Any]) -> dict[str, Any]:
        """Drop temporary leftovers of killed tasks, then write the manifest atomically."""
        for t in glob.glob(os.path.join(self.dir, "**", "*.tmp-*"), recursive=True):
            os.unlink(t)
        tmp = f"{self.manifest_path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"key": self.key, "data": data}, f)
        os.replace(tmp, self.manifest_path)
        return data


class WorkDir:
    """Where stages exchange files. It must be visible at the same path to the driver
    and every worker (a shared file system on a multi-node cluster).

    With ``path=None`` a temporary directory is used and removed by :meth:`close`.
    ``resume=True`` reuses every stage whose manifest matches; otherwise stages start
    afresh.
    """

    def __init__(self, path: str | None, *, resume: bool = False) -> None:
        self.temporary = path is None
        self.root = tempfile.mkdtemp(prefix="thrifty-dist-") if path is None else os.path.abspath(path)
        os.makedirs(self.root, exist_ok=True)
        self.resume = resume

    def stage(self, name: str, key: dict[str, Any]) -> tuple[Stage, dict[str, Any] | None]:
        """``(stage, manifest data if it can be reused else None)``; a stage to be run is
        reset."""
        st = Stage(self.root, name, key)
        data = st.load() if self.resume else None
        if data is None:
            st.reset()
        return st, data

    def close(self) -> None:
        if self.temporary:
            shutil.rmtree(self.root, ignore_errors=True)
