"""k-means fit time of thrifty vs faiss-cpu over a grid of shapes, as ratios.

Grid: 200k x 384 and 1M x 128 float32 Gaussian blobs (fixed seed), k = 256 and 1024,
spherical (rows normalised first, as a user of either library would) and Euclidean,
10 Lloyd iterations, then every point assigned to the final centroids.

Both libraries follow the same subsample rule: train on a seeded sample of
``256 * k`` rows when there are more rows than that (faiss's default
``max_points_per_centroid = 256``; thrifty ``max_points_per_centroid=256``), so both
train on the same number of rows (not the same rows: each draws its own sample). Both
start from the same centroids (``k`` rows of the data, passed as ``init`` /
``init_centroids``). faiss's time is ``Kmeans.train`` + ``index.search(x, 1)`` (the final
assignment thrifty's ``fit`` includes). thrifty and faiss run alternately in one process,
both on ``--threads`` threads; each time is the best of ``--repeat`` calls.

The inertia of each is computed afterwards, in float64, from its centroids and labels
over all points; ``d inertia`` is thrifty's relative difference to faiss (negative:
thrifty's is lower). Where both train on every row the difference is the algorithms'
(faiss splits a large cluster to refill an empty one, thrifty takes the farthest point);
where both subsample, each draws its own rows, which adds sampling noise.

Usage::

    python benches/kmeans_grid.py --quick             # < 60 s: n / 20, 5 iterations
    python benches/kmeans_grid.py                     # the full grid (minutes)
    python benches/kmeans_grid.py --only 1000000x128 --json out.json

On a shared machine only the ratios mean anything; the 1-minute load average is printed
before and after every grid point, so rerun a point measured under a high load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

SHAPES = [(200_000, 384), (1_000_000, 128)]
KS = [256, 1024]
ITERS = 10
MPPC = 256


def blobs(n: int, d: int, seed: int = 0, centres: int = 512) -> np.ndarray:
    """Gaussian mixture: ``centres`` standard-normal centres plus noise of sd 0.7."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d), dtype=np.float32)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x *= 0.7
    x += c[rng.integers(0, centres, n)]
    return x


def inertia(x: np.ndarray, c: np.ndarray, labels: np.ndarray) -> float:
    """Sum of squared distances of every row to its centroid, float64, in chunks."""
    total = 0.0
    c64 = c.astype(np.float64)
    for s in range(0, len(x), 65536):
        diff = x[s:s + 65536].astype(np.float64) - c64[labels[s:s + 65536]]
        total += float(np.einsum("ij,ij->", diff, diff))
    return total


def load() -> float:
    return os.getloadavg()[0]


def run_point(x, k, spherical, iters, mppc, repeat, threads, seed=1):
    import faiss
    import thrifty
    from thrifty.cluster import KMeans

    n, d = x.shape
    rng = np.random.default_rng(seed)
    init = np.ascontiguousarray(x[np.sort(rng.choice(n, k, replace=False))])
    out = {}

    def fit_thrifty():
        with thrifty.threads(threads):
            km = KMeans(k, spherical=spherical, max_iter=iters, tol=0.0, init=init,
                        max_points_per_centroid=mppc, seed=seed, progress=False).fit(x)
        out["thrifty"] = (km.cluster_centers_, km.labels_, km.inertia_)

    def fit_faiss():
        faiss.omp_set_num_threads(threads)
        # min_points_per_centroid only silences faiss's "too few points" warning
        km = faiss.Kmeans(d, k, niter=iters, spherical=spherical, seed=seed,
                          max_points_per_centroid=mppc, min_points_per_centroid=1)
        km.train(x, init_centroids=init)
        _, labels = km.index.search(x, 1)
        out["faiss"] = (km.centroids, labels[:, 0], None)

    fns = {"thrifty": fit_thrifty, "faiss": fit_faiss}
    best = {name: float("inf") for name in fns}
    loads = [load()]
    for r in range(repeat):
        order = ["thrifty", "faiss"] if r % 2 == 0 else ["faiss", "thrifty"]
        for name in order:
            t = time.perf_counter()
            fns[name]()
            best[name] = min(best[name], time.perf_counter() - t)
    loads.append(load())
    c_t, l_t, inertia_t = out["thrifty"]
    c_f, l_f, _ = out["faiss"]
    i_t = inertia(x, c_t, l_t)
    i_f = inertia(x, c_f, l_f)
    return {
        "n": n, "d": d, "k": k, "spherical": spherical, "iters": iters,
        "n_train": min(n, mppc * k), "threads": threads, "repeat": repeat,
        "thrifty_s": best["thrifty"], "faiss_s": best["faiss"],
        "ratio": best["thrifty"] / best["faiss"],
        "inertia_thrifty": i_t, "inertia_faiss": i_f,
        "inertia_thrifty_reported": inertia_t,
        "d_inertia": (i_t - i_f) / i_f,
        "load": loads,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="n / 20, 5 iterations, 64 points per centroid, 2 repeats")
    p.add_argument("--repeat", type=int, default=None, help="calls per backend (best of)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default=None,
                   help="comma-separated filters such as 1000000x128, k1024, sph, l2")
    p.add_argument("--json", default=None, help="write the rows to this file")
    a = p.parse_args(argv)

    import faiss
    import thrifty

    scale, iters, mppc = (20, 5, 64) if a.quick else (1, ITERS, MPPC)
    repeat = a.repeat or (2 if a.quick else 3)
    filters = a.only.split(",") if a.only else []
    print(f"thrifty {thrifty.__version__}, faiss {faiss.__version__}, numpy "
          f"{np.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"{a.threads} threads, best of {repeat}, {iters} iterations, "
          f"{mppc} points per centroid")
    rows = []
    t0 = time.perf_counter()
    for n, d in SHAPES:
        n //= scale
        raw = blobs(n, d)
        normed = raw / np.linalg.norm(raw, axis=1, keepdims=True)
        for spherical in (True, False):
            for k in KS:
                tags = {f"{n}x{d}", f"k{k}", "sph" if spherical else "l2"}
                if filters and not all(f in tags for f in filters):
                    continue
                x = normed if spherical else raw
                r = run_point(x, k, spherical, iters, mppc, repeat, a.threads)
                rows.append(r)
                print(f"  {n}x{d} k={k} {'sph' if spherical else 'l2 '} "
                      f"thrifty {r['thrifty_s']:.3f}s faiss {r['faiss_s']:.3f}s "
                      f"ratio {r['ratio']:.3f} d_inertia {r['d_inertia']:+.5%} "
                      f"load {r['load'][0]:.1f}->{r['load'][1]:.1f}", flush=True)
        del raw, normed
    print()
    print("| n x d | k | metric | trained on | thrifty s | faiss s | thrifty / faiss "
          "| inertia vs faiss | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} x {r['d']} | {r['k']} | "
              f"{'spherical' if r['spherical'] else 'euclidean'} | {r['n_train']} | "
              f"{r['thrifty_s']:.3f} | {r['faiss_s']:.3f} | **{r['ratio']:.2f}x** | "
              f"{r['d_inertia']:+.3%} | {r['load'][0]:.1f}-{r['load'][1]:.1f} |")
    print(f"\n{time.perf_counter() - t0:.0f} s in all")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": platform.machine(), "cpus": os.cpu_count(),
                       "thrifty": thrifty.__version__, "faiss": faiss.__version__,
                       "rows": rows}, f, indent=1)
    worse = [r for r in rows if r["d_inertia"] > 1e-3]
    if worse:
        print(f"{len(worse)} point(s) with thrifty's inertia > 0.1% above faiss's (each "
              "library draws its own training sample, so part of it is sampling noise)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
