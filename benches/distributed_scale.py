"""Scale run of thrifty.distributed against the single-process call on the same shards.

Writes N x D float16 synthetic embeddings (with planted near-duplicates) into S `.npy`
shards, runs ``thrifty.distributed.dbp`` on a local Ray cluster and ``thrifty.prune.dbp``
in one process on the concatenated rows, checks the results are equal, and prints wall
times and peak RSS (driver; every Ray worker, from /proc VmHWM).

    python benches/distributed_scale.py --rows 1000000 --dim 256 --shards 8 --clusters 1000

With ``--cli`` it runs the command-line tool instead, as a user would: ``thrifty prune
DIR --ray local:N`` against ``thrifty prune ALL.npy`` on one file holding the same rows,
polling /proc for the peak RSS of the driver and of every Ray worker process:

    python benches/distributed_scale.py --cli --rows 10000000 --shards 40 --clusters 1000
"""

from __future__ import annotations

import argparse
import glob
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np


def make(root: str, n: int, d: int, shards: int, k: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)).astype(np.float32)
    bounds = np.linspace(0, n, shards + 1).astype(int)
    paths = []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        m = b - a
        x = centres[rng.integers(0, k, m)] + 0.5 * rng.normal(size=(m, d)).astype(np.float32)
        x[1::50] = x[0::50][: x[1::50].shape[0]] + 1e-3 * rng.normal(size=(x[1::50].shape[0], d))
        p = os.path.join(root, f"emb-{i:03d}.npy")
        np.save(p, x.astype(np.float16))
        paths.append(p)
    return paths


def worker_peaks() -> list[int]:
    """Peak RSS (bytes) of every live Ray worker process on this machine."""
    out = []
    for status in glob.glob("/proc/[0-9]*/status"):
        try:
            with open(status) as f:
                txt = f.read()
            with open(status.replace("status", "cmdline"), "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"default_worker.py" in cmd or txt.startswith("Name:\tray::"):
            for line in txt.splitlines():
                if line.startswith("VmHWM:"):
                    out.append(int(line.split()[1]) * 1024)
    return out


def concatenate(paths: list[str], out: str) -> None:
    """Write the shards' rows into one .npy without holding them all in memory."""
    shapes = [np.load(p, mmap_mode="r").shape for p in paths]
    d = shapes[0][1]
    y = np.lib.format.open_memmap(out, mode="w+", dtype=np.float16,
                                  shape=(sum(s[0] for s in shapes), d))
    at = 0
    for p, (m, _) in zip(paths, shapes):
        y[at:at + m] = np.load(p, mmap_mode="r")
        at += m
    y.flush()
    del y


class Peaks:
    """Polls /proc while a command runs: peak RSS of the command and of each Ray worker
    it started (its descendants; other Ray clusters on the machine are not counted)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.driver, self.workers = pid, 0, {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    @staticmethod
    def hwm(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    @staticmethod
    def parents() -> dict[int, int]:
        """Parent pid of every process."""
        out = {}
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(stat) as f:
                    txt = f.read()
            except OSError:
                continue
            # the command name (field 2) may hold spaces and parentheses
            out[int(stat.split("/")[2])] = int(txt[txt.rindex(")") + 2:].split()[1])
        return out

    def ours(self, pid: int, parent: dict[int, int]) -> bool:
        """Whether ``pid`` descends from the measured command: its own Ray cluster, not
        another one running on this machine."""
        while pid > 1:
            if pid == self.pid:
                return True
            pid = parent.get(pid, 0)
        return False

    def loop(self) -> None:
        while not self.stop.is_set():
            self.driver = max(self.driver, self.hwm(self.pid))
            parent = self.parents()
            for pid in parent:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read()
                except OSError:
                    continue
                if (b"default_worker.py" in cmd or b"ray::" in cmd) and self.ours(pid, parent):
                    self.workers[pid] = max(self.workers.get(pid, 0), self.hwm(pid))
            self.stop.wait(0.5)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def run_cli(argv: list[str]) -> tuple[float, int, dict[int, int]]:
    t = time.perf_counter()
    proc = subprocess.Popen(argv)
    peaks = Peaks(proc.pid)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    peaks.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}")
    return wall, max(peaks.driver, usage.ru_maxrss * 1024), peaks.workers


def main_cli(args: argparse.Namespace, root: str, paths: list[str]) -> None:
    exe = [sys.executable, "-m", "thrifty"]
    opts = ["--method", "dbp", "--eps", str(args.eps), "--clusters", str(args.clusters),
            "--seed", "0", "--force"]
    shard = max(os.path.getsize(p) for p in paths)
    wall, drv, workers = run_cli(exe + ["prune", os.path.join(root, "emb-*.npy"), "--ray", f"local:{args.cpus}", *opts,
                                        "-o", os.path.join(root, "kept-ray.npy"),
                                        "--report", os.path.join(root, "report-ray.json")])
    print(f"CLI --ray local:{args.cpus}: {wall:.1f} s; driver peak RSS {drv / 2**20:.0f} MiB; "
          f"worker peak RSS max {max(workers.values(), default=0) / 2**20:.0f} MiB over "
          f"{len(workers)} worker processes (largest shard {shard / 2**20:.0f} MiB)", flush=True)
    if not args.single:
        return
    one = os.path.join(root, "all.npy")
    if not os.path.exists(one):
        concatenate(paths, one)
    wall1, rss1, _ = run_cli(exe + ["prune", one, *opts, "-o", os.path.join(root, "kept-one.npy"),
                                    "--report", os.path.join(root, "report-one.json")])
    same = np.array_equal(np.load(os.path.join(root, "kept-ray.npy")),
                          np.load(os.path.join(root, "kept-one.npy")))
    print(f"CLI one process: {wall1:.1f} s; peak RSS {rss1 / 2**20:.0f} MiB; "
          f"ratio Ray / one process {wall / wall1:.2f}; identical kept rows: {same}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--eps", type=float, default=0.01)
    ap.add_argument("--single", action="store_true", help="also run the single-process call")
    ap.add_argument("--data", help="directory for the shards; reuses those an earlier run wrote")
    ap.add_argument("--cli", action="store_true",
                    help="run `thrifty prune` as a user would, --ray against one process")
    args = ap.parse_args()
    import ray

    import thrifty
    import thrifty.distributed as td
    from thrifty import prune

    root = args.data or tempfile.mkdtemp(prefix="thrifty-scale-")
    os.makedirs(root, exist_ok=True)
    t = time.perf_counter()
    paths = (sorted(glob.glob(os.path.join(root, "emb-*.npy")))
             or make(root, args.rows, args.dim, args.shards, args.clusters))
    print(f"data: {args.rows} x {args.dim} float16 in {args.shards} shards "
          f"({sum(os.path.getsize(p) for p in paths) / 2**20:.0f} MiB), {time.perf_counter() - t:.1f} s",
          flush=True)
    if args.cli:
        return main_cli(args, root, paths)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    kw = dict(keep_fraction=0.5, n_clusters=args.clusters, dedup_eps=args.eps, seed=0)
    t = time.perf_counter()
    r = td.dbp(paths, **kw, work_dir=os.path.join(root, "work"), progress=False)
    t_dist = time.perf_counter() - t
    drv = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peaks = worker_peaks()
    print(f"distributed: {t_dist:.1f} s; driver peak RSS {drv / 2**20:.0f} MiB; worker peak RSS "
          f"max {max(peaks) / 2**20:.0f} MiB over {len(peaks)} workers; shard "
          f"{os.path.getsize(paths[0]) / 2**20:.0f} MiB; kept {int(r.keep.sum())}")
    print("stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in (r.seconds or {}).items()))
    ray.shutdown()
    if args.single:
        x = np.concatenate([np.load(p) for p in paths]).astype(np.float32)
        thrifty.set_num_threads(args.cpus)
        t = time.perf_counter()
        s = prune.dbp(x, **kw)
        t_one = time.perf_counter() - t
        same = all(np.array_equal(getattr(r, f), getattr(s, f))
                   for f in ("keep", "cluster", "duplicate_of", "keep_per_cluster"))
        print(f"single process: {t_one:.1f} s (load {x.nbytes / 2**20:.0f} MiB float32); "
              f"ratio {t_dist / t_one:.2f}; identical results: {same}")


if __name__ == "__main__":
    main()
