"""One million random pairs: thrifty's ``C(query + " " + ref)`` against Python's zlib.

thrifty computes gzip level-9 lengths without zlib (``thrifty_core::text::deflate9``:
one block with a shared query parse for short pairs, several blocks and window slides for
long ones). This script compares every pair's joint length with
``len(zlib.compress(query + b" " + ref, 9))`` (the same raw deflate stream; the zlib
wrapper adds 6 bytes where gzip adds 18) over families that stress different parts of
zlib: real fortunes (English and other languages), random bytes (literal-only blocks,
stored blocks), repetitive text (long matches, chain cut-offs), joint texts of 16-64 KB
(several blocks) and over 64 KB (window slides).

Joint lengths come from ``ncd_matrix(..., distance="cdm")``: ``cdm = C(qr) / (C(q) + C(r))``
is one IEEE division of integers below 2^53, so ``round(cdm * (C(q) + C(r)))`` gives
``C(qr)`` back exactly; ``C(q)`` and ``C(r)`` are checked against zlib as well. Run::

    python benches/verify_gzip_pairs.py                  # 1,000,000+ pairs
    python benches/verify_gzip_pairs.py --scale 0.01     # a quick run

Exit status 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import zlib

import numpy as np

from thrifty.text import compressed_len, ncd_matrix

#: zlib.compress wraps the raw stream in 6 bytes (header 2, Adler-32 4); gzip in 18.
GZIP_MINUS_ZLIB = 18 - 6

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his "
         "from at which but have an they you were her she there been one all we their has "
         "would when if so no will can more market team rain government said new people "
         "year could first").split()


def fortunes(rng: random.Random) -> tuple[list[bytes], list[bytes]]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from verify_gzip_exact import corpus

    by_lang = corpus()
    en = [t.encode() for t in by_lang.pop("en", [])]
    other = [t.encode() for ts in by_lang.values() for t in ts]
    rng.shuffle(en)
    rng.shuffle(other)
    return en, other


def repetitive(rng: random.Random, n: int) -> bytes:
    period = rng.randint(1, 300)
    blk = bytes(97 + rng.randrange(4) for _ in range(period))
    t = bytearray((blk * (n // period + 1))[:n])
    for _ in range(rng.randrange(20)):
        t[rng.randrange(n)] = 97 + rng.randrange(5)
    return bytes(t)


def wordy(rng: random.Random, n: int) -> bytes:
    return " ".join(rng.choice(WORDS) for _ in range(n // 3 + 1)).encode()[:n]


def mixed(rng: random.Random, n: int) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return wordy(rng, n)
    if kind == 1:
        return rng.randbytes(n)
    if kind == 2:
        return repetitive(rng, n)
    cut = rng.randrange(n)
    return wordy(rng, cut) + rng.randbytes(n - cut)


def families(scale: float, rng: random.Random):
    """``(name, queries, refs)``; the short families hold 1,000,000 pairs at scale 1."""
    en, other = fortunes(rng)

    def take(pool, n, lo=1, hi=10**9):
        out = [t for t in pool if lo <= len(t) <= hi][:n]
        if len(out) < n:
            raise SystemExit(f"not enough fortunes ({len(out)} < {n}); install fortunes*")
        return out

    def dims(nq, nr):
        k = scale ** 0.5
        return max(1, round(nq * k)), max(1, round(nr * k))

    nq, nr = dims(150, 4300)
    pool = take(en, nq + nr)
    yield "fortunes-en", pool[:nq], pool[nq:]
    nq, nr = dims(50, 3000)
    pool = take(other, nq + nr)
    yield "fortunes-other", pool[:nq], pool[nq:]
    nq, nr = dims(100, 1000)
    yield ("random-bytes", [rng.randbytes(rng.randint(1, 800)) for _ in range(nq)],
           [rng.randbytes(rng.randint(1, 800)) for _ in range(nr)])
    nq, nr = dims(100, 1000)
    yield ("repetitive", [repetitive(rng, rng.randint(1, 2000)) for _ in range(nq)],
           [repetitive(rng, rng.randint(1, 2000)) for _ in range(nr)])
    nq, nr = dims(50, 100)
    yield ("long-16k-64k", [mixed(rng, rng.randint(8_000, 32_000)) for _ in range(nq)],
           [mixed(rng, rng.randint(8_000, 32_000)) for _ in range(nr)])
    nq, nr = dims(20, 20)
    yield ("long-over-64k", [mixed(rng, rng.randint(30_000, 120_000)) for _ in range(nq)],
           [mixed(rng, rng.randint(35_000, 120_000)) for _ in range(nr)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the pairs to check")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    total = bad = 0
    for name, queries, refs in families(args.scale, rng):
        t0 = time.perf_counter()
        cq = compressed_len(queries, progress=False)
        cr = compressed_len(refs, progress=False)
        cdm = ncd_matrix(queries, refs, distance="cdm", progress=False)
        got = np.rint(cdm * (cq[:, None] + cr[None, :])).astype(np.int64)
        t1 = time.perf_counter()
        want_q = [len(zlib.compress(q, 9)) + GZIP_MINUS_ZLIB for q in queries]
        want_r = [len(zlib.compress(r, 9)) + GZIP_MINUS_ZLIB for r in refs]
        n_bad = int((cq != want_q).sum() + (cr != want_r).sum())
        for i, q in enumerate(queries):
            qs = q + b" "
            want = [len(zlib.compress(qs + r, 9)) + GZIP_MINUS_ZLIB for r in refs]
            n_bad += int((got[i] != want).sum())
        t2 = time.perf_counter()
        joint = [len(q) + 1 + len(r) for q in queries[:3] for r in refs[:3]]
        total += got.size
        bad += n_bad
        print(f"{name:15s} {got.size:9,d} pairs (joint {min(joint):,}-{max(joint):,} B, "
              f"sampled)  mismatches {n_bad}  thrifty {t1 - t0:6.2f} s  zlib {t2 - t1:7.2f} s",
              flush=True)
    print(f"total {total:,} pairs, {bad} mismatches")
    sys.exit(1 if bad or not total else 0)


if __name__ == "__main__":
    main()
