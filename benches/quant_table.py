"""The README's quantization table: the bodies of the ``bench_quant`` asv benchmarks
(QuantizePack, UnpackDequantize, DequantizeInto), thrifty and its anchor back to back
in one process, interleaved rounds, best time of each.

    python benches/quant_table.py [--rounds 3] [--threads 2]

Prints a markdown table: time thrifty / anchor, speed-up and thrifty's GB/s (float32
input for quantize, output for dequantize), plus thrifty's GB/s per CPU-second on one
thread.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import thrifty  # noqa: E402
from benchmarks import bench_quant as bq  # noqa: E402

GB = 4 * bq.SHAPE[0] * bq.SHAPE[1] / 1e9
ANCHOR = {"tq1_0": "gguf", "tq2_0": "gguf", "fp8_e4m3": "ml_dtypes", "mxfp4": "ml_dtypes",
          "nvfp4": "torch"}
KINDS = {"quantize": lambda o: o.enc(), "dequantize": lambda o: o.dec(),
         "into": lambda o: o.dec() if o.dec_into is None else o.dec_into(o.buf)}


def best(f, calls):
    t = float("inf")
    for _ in range(calls):
        a = time.perf_counter()
        f()
        t = min(t, time.perf_counter() - a)
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--formats", nargs="*", default=bq.FORMATS)
    a = ap.parse_args()
    rows = []
    for fmt in a.formats:
        anchor = ANCHOR.get(fmt, "numpy")
        objs = {}
        for be in ("thrifty", anchor):
            o = bq.DequantizeInto()
            o.setup(fmt, be)
            objs[be] = o
        res = {}
        # torchao's NVFP4 has no plain dequantization to compare with
        kinds = {k: f for k, f in KINDS.items() if k == "quantize" or objs[anchor].dec is not None}
        for _ in range(a.rounds):
            for kind, f in kinds.items():
                thrifty.set_num_threads(a.threads)
                t = best(lambda: f(objs["thrifty"]), 5)
                u = best(lambda: f(objs[anchor]), 2)
                thrifty.set_num_threads(1)
                c = best(lambda: f(objs["thrifty"]), 3)
                old = res.get(kind, (9e9, 9e9, 9e9))
                res[kind] = (min(old[0], t), min(old[1], u), min(old[2], c))
        thrifty.set_num_threads(a.threads)
        rows.append((fmt, anchor, res))
        cells = []
        for kind in KINDS:
            if kind not in res:
                cells += ["-", "-", "-"]
                continue
            t, u, c = res[kind]
            cells += [f"{t * 1e3:.1f} / {u * 1e3:.0f} ms ({GB / t:.1f} GB/s)", f"{u / t:.1f}x",
                      f"{GB / c:.1f} GB/s"]
        print(f"| {fmt} | {anchor} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
