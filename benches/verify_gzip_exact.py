"""Check thrifty's gzip pair lengths against Python's gzip on real corpora, pair by pair.

thrifty computes ``C(query + " " + ref)`` at level 9 without zlib, at any length
(``thrifty_core::text::deflate9`` reproduces zlib's parse, block splits, window slides and
block decisions and counts bits). This script is the large-scale evidence that it is exact: every pair of
a sample of real texts is compressed by Python's ``gzip.compress(.., 9)``, and the NCD
matrix built from those lengths must equal ``thrifty.text.ncd_matrix`` bit for bit.

    python benches/verify_gzip_exact.py                 # fortunes (all installed languages)
    python benches/verify_gzip_exact.py --queries 100 --refs 1000
    python benches/verify_gzip_exact.py --weka-dir DIR   # + weka's Reuters articles

Exit status 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import sys
import time

import numpy as np

from thrifty.text import ncd_matrix

FORTUNES = "/usr/share/games/fortunes"


def corpus(weka_dir: str | None = None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    folders = [("en", FORTUNES)] + [
        (d, os.path.join(FORTUNES, d)) for d in sorted(os.listdir(FORTUNES))
        if os.path.isdir(os.path.join(FORTUNES, d))
    ] if os.path.isdir(FORTUNES) else []
    for lang, folder in folders:
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name.endswith((".dat", ".u8")) or os.path.islink(path) or not os.path.isfile(path):
                continue
            try:
                body = open(path, "rb").read().decode("utf-8")
            except UnicodeDecodeError:
                continue
            out.setdefault(lang, []).extend(
                q.strip() for q in body.split("\n%\n") if 1 <= len(q.strip()) <= 700)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from reproduce_text import read_arff, tweet_corpus

    tweets = [t for ts in tweet_corpus().values() for t in ts]
    if tweets:
        out["tweets"] = tweets
    if weka_dir:
        for task in ("Grain", "Corn"):
            path = os.path.join(weka_dir, f"Reuters{task}-train.arff")
            if os.path.isfile(path):
                out[f"reuters-{task.lower()}"] = read_arff(path)[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=60, help="queries per corpus")
    ap.add_argument("--refs", type=int, default=600, help="references per corpus")
    ap.add_argument("--weka-dir", default=None, help="folder with weka's Reuters*.arff")
    args = ap.parse_args()
    rng = random.Random(0)
    total = bad = 0
    for name, texts in corpus(args.weka_dir).items():
        if len(texts) < args.queries + args.refs:
            continue
        pick = rng.sample(texts, args.queries + args.refs)
        queries, refs = pick[: args.queries], pick[args.queries:]
        t0 = time.perf_counter()
        got = ncd_matrix(queries, refs)
        t1 = time.perf_counter()
        cq = [len(gzip.compress(q.encode(), 9)) for q in queries]
        cr = [len(gzip.compress(r.encode(), 9)) for r in refs]
        want = np.array([[(len(gzip.compress((q + " " + r).encode(), 9)) - min(a, b)) / max(a, b)
                          for r, b in zip(refs, cr)] for q, a in zip(queries, cq)])
        t2 = time.perf_counter()
        n_bad = int((got != want).sum())
        total += got.size
        bad += n_bad
        print(f"{name:14s} {got.size:8d} pairs  mismatches {n_bad}  "
              f"thrifty {t1 - t0:6.2f} s  python gzip {t2 - t1:6.2f} s")
    print(f"total {total} pairs, {bad} mismatches")
    sys.exit(1 if bad or not total else 0)


if __name__ == "__main__":
    main()
