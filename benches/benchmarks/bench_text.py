"""Compression kNN ("gzip + kNN") side by side with npc-gzip 0.1.1 and plain Python gzip.

Every backend classifies the same queries against the same references (texts of a few
hundred bytes: English Debian fortunes when installed, otherwise generated sentences)
with NCD, k = 2. Pairs per second = n_queries * n_refs / time; ``track_pairs_per_cpu_second``
divides by CPU time instead, the stable number on a shared machine.

* ``thrifty``: ``CompressionKNNClassifier(compressor="gzip")`` -- exact zlib level 9,
  one reused stream per thread, all cores.
* ``thrifty-1thread``: the same on one thread.
* ``thrifty-zstd``: ``compressor="zstd"`` (level 3; different, faster lengths).
* ``npc-gzip``: ``npc_gzip.knn_classifier.KnnClassifier.predict`` (single-threaded).
* ``python-gzip``: the paper's loop with ``C(reference)`` cached, ``gzip.compress(.., 9)``.
"""

from __future__ import annotations

import gzip
import os
import random

import numpy as np

from .common import require

FORTUNES = "/usr/share/games/fortunes"
_WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so no will can more market team rain government said new people year could first"
).split()


def fortunes(lo: int, hi: int) -> list[tuple[str, str]]:
    """English Debian fortunes of ``lo``..``hi`` characters with their file name as
    label (empty when the ``fortunes`` package is not installed)."""
    out: list[tuple[str, str]] = []
    if not os.path.isdir(FORTUNES):
        return out
    for name in sorted(os.listdir(FORTUNES)):
        path = os.path.join(FORTUNES, name)
        if "." in name or not os.path.isfile(path) or os.path.islink(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                body = f.read()
        except UnicodeDecodeError:
            continue
        out += [(q.strip(), name) for q in body.split("\n%\n") if lo <= len(q.strip()) <= hi]
    return out


def load_texts(n_refs: int, n_queries: int, seed: int = 0):
    """``(refs, labels, queries)``: real English quotes if available, else generated."""
    rng = random.Random(seed)
    quotes = fortunes(150, 450)
    if len(quotes) < n_refs + n_queries:
        quotes = [(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(30, 70))),
                   str(i % 4)) for i in range(n_refs + n_queries)]
    picked = rng.sample(quotes, n_refs + n_queries)
    refs = [q for q, _ in picked[:n_refs]]
    labels = [lab for _, lab in picked[:n_refs]]
    queries = [q for q, _ in picked[n_refs:]]
    return refs, labels, queries


def _python_gzip_knn(refs, labels, queries, k=2):
    """The reference code's loop, with C(reference) computed once."""
    crefs = [len(gzip.compress(r.encode(), 9)) for r in refs]
    out = []
    for q in queries:
        cq = len(gzip.compress(q.encode(), 9))
        d = [(len(gzip.compress((q + " " + r).encode(), 9)) - min(cq, cr)) / max(cq, cr)
             for r, cr in zip(refs, crefs)]
        out.append([labels[i] for i in np.argsort(d, kind="stable")[:k]])
    return out


class CompressionKNN:
    """k=2 NCD classification of 50 queries against 400 references (20 000 pairs)."""

    params = (["thrifty", "thrifty-1thread", "thrifty-zstd", "npc-gzip", "python-gzip"],)
    param_names = ["backend"]
    timeout = 300

    def setup(self, backend):
        self.refs, self.labels, self.queries = load_texts(400, 50)
        if backend.startswith("thrifty"):
            thrifty = require("thrifty")
            text = require("thrifty.text")
            comp = "zstd" if backend == "thrifty-zstd" else "gzip"
            n_threads = 1 if backend == "thrifty-1thread" else None
            self.clf = text.CompressionKNNClassifier(
                n_neighbors=2, compressor=comp, progress=False
            ).fit(self.refs, self.labels)

            def run():
                with thrifty.threads(n_threads):
                    return self.clf.predict(self.queries)

            self.run = run
        elif backend == "npc-gzip":
            knn = require("npc_gzip.knn_classifier")
            comp = require("npc_gzip.compressors.gzip_compressor")
            model = knn.KnnClassifier(
                compressor=comp.GZipCompressor(), training_inputs=self.refs,
                training_labels=[sorted(set(self.labels)).index(v) for v in self.labels],
                distance_metric="ncd",
            )
            queries = np.array(self.queries)
            self.run = lambda: model.predict(queries, top_k=2)
            # npc-gzip draws a tqdm bar per call; silence it for clean asv output.
            os.environ.setdefault("TQDM_DISABLE", "1")
        else:
            self.run = lambda: _python_gzip_knn(self.refs, self.labels, self.queries)

    def time_predict(self, backend):
        self.run()

    def track_pairs_per_cpu_second(self, backend):
        """Pairs per CPU-second (all threads' CPU time; best of 3).

        Unlike wall time this barely moves when other processes load the machine; on
        an idle machine thrifty's wall-clock rate is about this times the core count.
        """
        import time

        best = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            self.run()
            best = min(best, time.process_time() - t0)
        return len(self.refs) * len(self.queries) / best

    track_pairs_per_cpu_second.unit = "pairs/CPU-s"


class CompressedLen:
    """C(x) of 2 000 texts: thrifty vs ``[len(gzip.compress(t, 9)) for t in texts]``."""

    params = (["thrifty", "python-gzip"],)
    param_names = ["backend"]

    def setup(self, backend):
        refs, _, _ = load_texts(2000, 0)
        self.texts = [t.encode() for t in refs]
        if backend == "thrifty":
            self.text = require("thrifty.text")

    def time_compressed_len(self, backend):
        if backend == "thrifty":
            self.text.compressed_len(self.texts, progress=False)
        else:
            [len(gzip.compress(t, 9)) for t in self.texts]
