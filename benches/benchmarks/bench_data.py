"""Streaming loaders against torch DataLoader patterns and a raw numpy gather.

All backends read the same memory-mapped files (written once per benchmark process
into a temporary folder) and produce the same batches' worth of rows per epoch.

* ``thrifty``: :class:`thrifty.data.ArrayLoader` / ``TokenLoader`` (Rust background
  thread, GIL released, ``prefetch=2``).
* ``numpy``: the raw memory-gather rate, ``X[perm[b*bs:(b+1)*bs]]`` on the memmap in the
  calling thread (the limit; no prefetching).
* ``torch_item_wN``: a map-style dataset with a per-item ``__getitem__`` and
  ``DataLoader(batch_size=bs, shuffle=True, num_workers=N)`` — as users commonly
  write it.
* ``torch_batched_wN``: hand-batched ``DataLoader(sampler=BatchSampler(RandomSampler))``
  whose ``__getitem__`` fancy-indexes a whole batch (``batch_size=None``).

``StepOverlap`` follows every batch with a simulated accelerator step (the host waits
``STEP_S`` seconds), which is where the background gather pays off.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
from .common import require

_DIR = tempfile.mkdtemp(prefix="thrifty-bench-data-")
STEP_S = 0.002


def _npy(name: str, n: int, d: int) -> str:
    path = os.path.join(_DIR, f"{name}_{n}x{d}.npy")
    if not os.path.exists(path):
        X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
        rng = np.random.default_rng(0)
        for s in range(0, n, 8192):
            X[s:s + 8192] = rng.standard_normal((min(8192, n - s), d), dtype=np.float32)
        X.flush()
        del X
    return path


def _tokens(n_tokens: int) -> str:
    path = os.path.join(_DIR, f"tokens_{n_tokens}.bin")
    if not os.path.exists(path):
        np.random.default_rng(0).integers(0, 50_000, n_tokens, dtype=np.uint16).tofile(path)
    return path


def _torch_loaders(X, bs, backend):
    torch = require("torch")
    data = torch.utils.data

    class Items(data.Dataset):
        def __len__(self):
            return X.shape[0]

        def __getitem__(self, i):
            return torch.from_numpy(np.array(X[i]))

    class Batches(data.Dataset):
        def __len__(self):
            return X.shape[0]

        def __getitem__(self, idx):
            return torch.from_numpy(X[np.sort(idx)])

    workers = int(backend.rsplit("_w", 1)[1])
    if backend.startswith("torch_item"):
        return data.DataLoader(Items(), batch_size=bs, shuffle=True, num_workers=workers)
    sampler = data.BatchSampler(data.RandomSampler(range(X.shape[0])), bs, drop_last=False)
    return data.DataLoader(Batches(), sampler=sampler, batch_size=None, num_workers=workers)


def _make(backend, path, bs):
    if backend == "thrifty":
        from thrifty.data import ArrayLoader

        return ArrayLoader(path, batch_size=bs, seed=0)
    X = np.load(path, mmap_mode="r")
    if backend == "numpy":
        perm = np.random.default_rng(0).permutation(X.shape[0])

        def gen():
            for s in range(0, X.shape[0], bs):
                yield X[perm[s:s + bs]]

        class Epoch:
            def __iter__(self):
                return gen()

        return Epoch()
    return _torch_loaders(X, bs, backend)


class ArrayEpoch:
    """One epoch of 100k x 128 float32 rows (51 MB .npy), batch 256: samples/s."""

    params = (["thrifty", "numpy", "torch_item_w0", "torch_item_w2",
               "torch_batched_w0", "torch_batched_w2"],)
    param_names = ["backend"]
    n, d, bs = 100_000, 128, 256
    timeout = 300

    def setup(self, backend):
        self.path = _npy("array", self.n, self.d)
        self.loader = _make(backend, self.path, self.bs)
        for _ in self.loader:  # warm the page cache
            pass

    def time_epoch(self, backend):
        for _ in self.loader:
            pass

    def track_samples_per_s(self, backend):
        t = time.perf_counter()
        for _ in self.loader:
            pass
        return self.n / (time.perf_counter() - t)

    track_samples_per_s.unit = "samples/s"


class StepOverlap:
    """16k x 2048 float32 (128 MB .npy), batch 512, each batch followed by a 2 ms
    host wait (an accelerator step)."""

    params = (["thrifty", "numpy", "torch_batched_w0", "torch_batched_w2"],)
    param_names = ["backend"]
    n, d, bs = 16_384, 2048, 512
    timeout = 300

    def setup(self, backend):
        self.path = _npy("step", self.n, self.d)
        self.loader = _make(backend, self.path, self.bs)
        for _ in self.loader:
            pass

    def time_epoch_with_step(self, backend):
        for _ in self.loader:
            time.sleep(STEP_S)

    def peakmem_epoch_with_step(self, backend):
        self.time_epoch_with_step(backend)


class TokenEpoch:
    """8M uint16 tokens, seq_len 512, batch 16 windows."""

    params = (["thrifty", "numpy", "torch_item_w0", "torch_batched_w0"],)
    param_names = ["backend"]
    n_tokens, seq_len, bs = 8_000_001, 512, 16
    timeout = 300

    def setup(self, backend):
        path = _tokens(self.n_tokens)
        L = self.seq_len
        n_win = (self.n_tokens - 1) // L
        if backend == "thrifty":
            from thrifty.data import TokenLoader

            self.loader = TokenLoader(path, seq_len=L, batch_size=self.bs)
            return
        tok = np.memmap(path, dtype=np.uint16, mode="r")
        offs = np.arange(L + 1)
        if backend == "numpy":
            perm = np.random.default_rng(0).permutation(n_win)

            def gen():
                for s in range(0, n_win - self.bs + 1, self.bs):
                    yield tok[(perm[s:s + self.bs, None] * L) + offs]

            class Epoch:
                def __iter__(self):
                    return gen()

            self.loader = Epoch()
            return
        torch = require("torch")
        data = torch.utils.data

        class Windows(data.Dataset):
            def __len__(self):
                return n_win

            def __getitem__(self, w):
                if isinstance(w, list):
                    w = np.asarray(w)
                    return torch.from_numpy(tok[(w[:, None] * L) + offs].astype(np.int32))
                return torch.from_numpy(tok[w * L:w * L + L + 1].astype(np.int32))

        if backend == "torch_item_w0":
            self.loader = data.DataLoader(Windows(), batch_size=self.bs, shuffle=True,
                                          drop_last=True)
        else:
            sampler = data.BatchSampler(data.RandomSampler(range(n_win)), self.bs, drop_last=True)
            self.loader = data.DataLoader(Windows(), sampler=sampler, batch_size=None)

    def time_epoch(self, backend):
        for _ in self.loader:
            pass

