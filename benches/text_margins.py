"""thrifty's exact gzip kNN against npc-gzip 0.1.1, interleaved, best of N.

Two workloads of English Debian fortunes (``apt-get install fortunes``), k = 2, NCD:

* ``50x400``: 50 queries against 400 references of 150-450 characters (the asv
  benchmark ``bench_text.CompressionKNN``'s data);
* ``500x5000``: 500 queries against 5000 references of 40-1000 characters, labelled by
  fortune file.

Every repeat runs npc-gzip (``KnnClassifier.predict``), thrifty on 1 thread and thrifty
on 2 threads back to back, so that a busy machine slows all three alike; the ratio is
npc-gzip's best time over thrifty's best time, both as time per pair. npc-gzip costs the
same for every query (one ``gzip.compress`` per reference), so on ``500x5000`` it is timed
on the first ``--npc-queries`` queries only and its time per pair is compared (thrifty
always runs the whole workload). thrifty's nearest distances for the first queries must
equal those from Python's gzip. CPU time per pair (all threads together) is printed
beside the wall time: on a busy machine it shows whether a poor 2-thread time is the
machine's load (same CPU per pair as 1 thread) or overhead. Run::

    python benches/text_margins.py            # best of 5, about 5 minutes on 2 cores
    python benches/text_margins.py --quick    # under a minute: 500x5000 shrunk to 50x5000
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import random
import sys
import time

import numpy as np

# npc-gzip draws a tqdm bar per call.
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmarks.bench_text import fortunes, load_texts  # noqa: E402


def workload(name: str, quick: bool):
    if name == "50x400":
        refs, labels, queries = load_texts(400, 50)
        return refs, labels, queries, len(queries)
    nq = 50 if quick else 500
    pool = fortunes(40, 1000)
    picked = random.Random(1).sample(pool, 5000 + nq)
    refs = [q for q, _ in picked[:5000]]
    labels = [lab for _, lab in picked[:5000]]
    queries = [q for q, _ in picked[5000:]]
    return refs, labels, queries, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller 500x5000 run, best of 3")
    ap.add_argument("--repeats", type=int, default=None, help="repeats (default 5, quick 3)")
    ap.add_argument("--npc-queries", type=int, default=None,
                    help="queries npc-gzip runs on 500x5000 (default 40, quick 8)")
    ap.add_argument("--only", choices=["50x400", "500x5000"], default=None)
    args = ap.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    npc_q = args.npc_queries or (8 if args.quick else 40)

    import thrifty
    from npc_gzip.compressors.gzip_compressor import GZipCompressor
    from npc_gzip.knn_classifier import KnnClassifier
    from thrifty.text import CompressionKNNClassifier

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"python {platform.python_version()}, thrifty {thrifty.__version__}, "
          f"npc-gzip 0.1.1, best of {repeats}, interleaved")
    for name in [args.only] if args.only else ["50x400", "500x5000"]:
        refs, labels, queries, nq_npc = workload(name, args.quick)
        nq_npc = nq_npc or min(npc_q, len(queries))
        classes = sorted(set(labels))
        npc = KnnClassifier(compressor=GZipCompressor(), training_inputs=refs,
                            training_labels=[classes.index(v) for v in labels],
                            distance_metric="ncd")
        clf = CompressionKNNClassifier(n_neighbors=2, compressor="gzip",
                                       progress=False).fit(refs, labels)
        npc_queries = np.array(queries[:nq_npc])
        best = {"npc-gzip": np.inf, "thrifty-1": np.inf, "thrifty-2": np.inf}
        cpu = dict(best)
        pairs = {"npc-gzip": nq_npc * len(refs)}
        pairs["thrifty-1"] = pairs["thrifty-2"] = len(queries) * len(refs)
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            npc.predict(npc_queries, top_k=2)
            best["npc-gzip"] = min(best["npc-gzip"], time.perf_counter() - t0)
            cpu["npc-gzip"] = min(cpu["npc-gzip"], time.process_time() - c0)
            for threads in (1, 2):
                with thrifty.threads(threads):
                    c0, t0 = time.process_time(), time.perf_counter()
                    clf.kneighbors(queries, n_neighbors=2)
                    dt, dc = time.perf_counter() - t0, time.process_time() - c0
                best[f"thrifty-{threads}"] = min(best[f"thrifty-{threads}"], dt)
                cpu[f"thrifty-{threads}"] = min(cpu[f"thrifty-{threads}"], dc)
        # Exactness spot check: thrifty's two nearest distances of the first queries
        # equal those from Python's gzip (query first, as thrifty and the paper).
        dist, _ = clf.kneighbors(queries[:2], n_neighbors=2)
        cr = [len(gzip.compress(r.encode(), 9)) for r in refs]
        for qi, q in enumerate(queries[:2]):
            cq = len(gzip.compress(q.encode(), 9))
            d = sorted((len(gzip.compress((q + " " + r).encode(), 9)) - min(cq, c))
                       / max(cq, c) for r, c in zip(refs, cr))
            if d[:2] != list(dist[qi]):
                raise SystemExit(f"{name}: thrifty's distances differ from gzip's")
        per_pair = {b: best[b] / pairs[b] for b in best}
        print(f"{name}: {len(queries)} queries x {len(refs)} refs "
              f"(npc-gzip timed on {nq_npc} queries)")
        cpu_pair = {b: cpu[b] / pairs[b] for b in cpu}
        for b in best:
            print(f"  {b:10s} {per_pair[b] * 1e6:8.3f} us/pair  "
                  f"{1 / per_pair[b]:12,.0f} pairs/s  "
                  f"ratio {per_pair['npc-gzip'] / per_pair[b]:6.2f}x   "
                  f"CPU {cpu_pair[b] * 1e6:7.3f} us/pair (all threads)")


if __name__ == "__main__":
    main()
