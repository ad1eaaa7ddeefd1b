"""How thrifty's cost grows with input size, next to the library a user would otherwise use.

Each capability is timed at 3-4 sizes spanning 100x (one dimension varied, the others
fixed), thrifty and its anchor called alternately in one process (best of ``--repeat``).
The exponent ``b`` of ``time ~ size**b`` is fitted by least squares on log-log axes, for
thrifty and for the anchor, and compared with the algorithm's order in the varied
dimension. A capability is flagged when thrifty's exponent exceeds that order by more than
``--slack`` or when its speed-up over the anchor falls as the size grows (the speed-up's
own log-log slope below ``-slack``).

Usage::

    python benches/scaling.py --quick            # < 60 s on an idle 2-core machine
    python benches/scaling.py --json out.json    # full sizes (minutes)

Times on a shared machine are noisy; the exponents and ratios, measured interleaved, are
what this script is for.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np


def _best(fns: list[Callable[[], Any]], repeat: int) -> list[float]:
    """Best wall time of every function, calls interleaved."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, f in enumerate(fns):
            t = time.perf_counter()
            f()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def _slope(sizes: list[float], times: list[float]) -> float:
    return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


def _texts(n: int, length: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    words = [bytes(rng.choice(list(b"abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 9)))
             for _ in range(500)]
    out = []
    for _ in range(n):
        s = b" ".join(words[i] for i in rng.integers(0, len(words), length // 4 + 1))
        out.append(s[:length])
    return out


def _gzip_ncd(queries: list[bytes], refs: list[bytes]) -> np.ndarray:
    """npc-gzip's loop with C(x) cached: the in-process anchor."""
    cr = [len(gzip.compress(r)) for r in refs]
    out = np.empty((len(queries), len(refs)))
    for i, q in enumerate(queries):
        cq = len(gzip.compress(q))
        for j, r in enumerate(refs):
            cqr = len(gzip.compress(q + b" " + r))
            out[i, j] = (cqr - min(cq, cr[j])) / max(cq, cr[j])
    return out


def cases(quick: bool) -> list[dict]:
    """(name, order, sizes, make(size) -> (thrifty_fn, anchor_fn or None), anchor)."""
    import thrifty.cluster as cl
    import thrifty.data as td
    import thrifty.neighbors as nb
    import thrifty.prune as pr
    import thrifty.quant as tq
    import thrifty.text as tt

    try:
        import faiss
    except ImportError:  # pragma: no cover - optional anchor
        faiss = None
    rng = np.random.default_rng(0)
    s = 1 if quick else 4
    it = 3 if quick else 10

    def unit(n: int, d: int) -> np.ndarray:
        x = rng.standard_normal((n, d), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def km_case(n: int, k: int, d: int):
        x = unit(n, d)

        def th():
            cl.KMeans(k, spherical=True, max_iter=it, tol=0.0, init="random",
                      max_points_per_centroid=None, seed=1, progress=False).fit(x)

        def fa():
            km = faiss.Kmeans(d, k, niter=it, spherical=True, seed=1,
                              max_points_per_centroid=n)
            km.train(x)
            km.index.search(x, 1)

        return th, (fa if faiss is not None else None)

    def topk_case(nq: int, nr: int, d: int = 64):
        q, r = unit(nq, d), unit(nr, d)

        def npy():
            sc = q @ r.T
            idx = np.argpartition(-sc, 9, axis=1)[:, :10]
            np.take_along_axis(sc, idx, 1)

        return (lambda: nb.topk(q, r, 10, metric="dot")), npy

    def gz_case(nq: int, nr: int, length: int):
        qs, rs = _texts(nq, length, 1), _texts(nr, length, 2)
        return (lambda: tt.ncd_matrix(qs, rs)), (lambda: _gzip_ncd(qs, rs))

    def quant_case(n: int):
        x = rng.standard_normal(n, dtype=np.float32).reshape(-1, 256)

        def npy():
            sc = np.abs(x).max(axis=1, keepdims=True) / 127
            np.clip(np.rint(x / sc), -127, 127).astype(np.int8)

        return (lambda: tq.quantize(x, "int8")), npy

    tmp = tempfile.mkdtemp(prefix="thrifty-scaling-")

    def loader_case(rows: int, d: int = 256):
        path = os.path.join(tmp, f"x{rows}.npy")
        np.save(path, rng.standard_normal((rows, d), dtype=np.float32))

        def th():
            for _ in td.ArrayLoader(path, batch_size=256, seed=0):
                pass

        def npy():
            m = np.load(path, mmap_mode="r")
            p = np.random.default_rng(0).permutation(rows)
            for i in range(0, rows, 256):
                np.ascontiguousarray(m[np.sort(p[i:i + 256])])

        return th, npy

    def dbp_case(n: int, k: int, d: int = 64):
        x = unit(n, d)
        return (lambda: pr.dbp(x, keep_fraction=0.5, n_clusters=k, seed=0)), None

    n0 = 2_000 * s
    return [
        dict(name="kmeans, n points (k=16, d=64)", order=1.0,
             sizes=[n0, 5 * n0, 20 * n0, 100 * n0] if not quick else [n0, 10 * n0, 100 * n0],
             make=lambda n: km_case(n, 16, 64), anchor="faiss"),
        dict(name="kmeans, k clusters (n=20k, d=64)", order=1.0,
             sizes=[4, 16, 64, 400] if not quick else [4, 40, 400],
             make=lambda k: km_case(20_000 * s, k, 64), anchor="faiss"),
        dict(name="dbp, n points (k=16, d=64)", order=1.0,
             sizes=[n0, 10 * n0, 100 * n0], make=lambda n: dbp_case(n, 16), anchor=None),
        dict(name="dbp, k clusters (n=20k)", order=1.0,
             sizes=[4, 40, 400], make=lambda k: dbp_case(20_000 * s, k), anchor=None),
        dict(name="topk, n refs (200 queries, d=64)", order=1.0,
             sizes=[1_000 * s, 10_000 * s, 100_000 * s],
             make=lambda n: topk_case(200, n), anchor="numpy"),
        dict(name="topk, n queries (10k refs, d=64)", order=1.0,
             sizes=[20 * s, 200 * s, 2_000 * s],
             make=lambda n: topk_case(n, 10_000), anchor="numpy"),
        dict(name="gzip ncd, pairs (text 200 B)", order=1.0,
             sizes=[25 * s, 250 * s, 2_500 * s],
             make=lambda p: gz_case(5, p // 5, 200), anchor="gzip loop"),
        dict(name="gzip ncd, text length (100 pairs)", order=1.0,
             sizes=[100, 1_000, 10_000],
             make=lambda n: gz_case(5, 20, n), anchor="gzip loop"),
        dict(name="quant int8, values", order=1.0,
             sizes=[2**14 * s, 2**17 * s, 2**21 * s],
             make=quant_case, anchor="numpy"),
        dict(name="ArrayLoader, file rows (d=256)", order=1.0,
             sizes=[2_000 * s, 20_000 * s, 200_000 * s],
             make=loader_case, anchor="numpy memmap"),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, 3 repeats")
    ap.add_argument("--repeat", type=int, default=None, help="best of N (default 3 / 5)")
    ap.add_argument("--slack", type=float, default=0.15,
                    help="tolerance on exponents and on the speed-up slope")
    ap.add_argument("--only", default=None, help="run the cases whose name contains this")
    ap.add_argument("--json", default="scaling.json", help="where to write the results")
    a = ap.parse_args(argv)
    repeat = a.repeat or (3 if a.quick else 5)
    import thrifty

    rows = []
    t_all = time.perf_counter()
    for c in cases(a.quick):
        if a.only and a.only not in c["name"]:
            continue
        th_t, an_t = [], []
        for size in c["sizes"]:
            th, an = c["make"](size)
            fns = [th] + ([an] if an is not None else [])
            th(), an and an()  # warm up (page-in, thread pools)
            b = _best(fns, repeat)
            th_t.append(b[0])
            an_t.append(b[1] if an is not None else float("nan"))
        b_th = _slope(c["sizes"], th_t)
        b_an = _slope(c["sizes"], an_t) if c["anchor"] else float("nan")
        speed = [x / y for x, y in zip(an_t, th_t)] if c["anchor"] else []
        b_speed = _slope(c["sizes"], speed) if speed else float("nan")
        flags = []
        if b_th > c["order"] + a.slack:
            flags.append("exponent above order")
        if speed and b_speed < -a.slack:
            flags.append("speed-up falls with size")
        rows.append(dict(name=c["name"], order=c["order"], sizes=c["sizes"],
                         thrifty_s=th_t, anchor=c["anchor"], anchor_s=an_t,
                         exponent=b_th, anchor_exponent=b_an, speedup=speed,
                         speedup_slope=b_speed, flags=flags))
        print(f"{c['name']}: exponent {b_th:.2f}, speed-up {[round(v, 2) for v in speed]}",
              file=sys.stderr, flush=True)
    print("| capability | sizes | order | thrifty exp. | anchor | anchor exp. "
          "| speed-up at each size | flags |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        sp = " / ".join(f"{v:.2f}x" for v in r["speedup"]) or "-"
        print(f"| {r['name']} | {r['sizes'][0]}..{r['sizes'][-1]} | {r['order']:.0f} "
              f"| {r['exponent']:.2f} | {r['anchor'] or '-'} | "
              f"{'-' if r['anchor'] is None else format(r['anchor_exponent'], '.2f')} "
              f"| {sp} | {', '.join(r['flags']) or 'ok'} |")
    meta = dict(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                load=os.getloadavg()[0], thrifty=thrifty.__version__,
                numpy=np.__version__, python=platform.python_version(), quick=a.quick,
                repeat=repeat, seconds=time.perf_counter() - t_all)
    with open(a.json, "w") as f:
        json.dump(dict(meta=meta, cases=rows), f, indent=1)
    print(f"\n{meta['seconds']:.0f} s, load {meta['load']:.1f}; wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
