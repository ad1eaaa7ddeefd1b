"""The quant margins: thrifty against its anchors, and stochastic against nearest
rounding, in one process, interleaved rounds, best time of each.

    python benches/quant_margins.py [--rounds 5] [--threads 1 2]

Runs the bodies of the ``bench_quant`` asv benchmarks on 16M float32 values:

* ternary quantize+pack (``QuantizePack``) against the plain numpy version;
* fp8 E4M3 encode (``Fp8Codec``) against ml_dtypes' ``astype`` and, when torch is
  installed, torch's own ``x.to(torch.float8_e4m3fn)`` (given the same thread count);
* fp8_e4m3 / mxfp4 / nvfp4 quantize against torch's scaled cast and torchao's
  ``to_mx`` / ``nvfp4_quantize`` (``QuantizePack``'s torch rows), when installed;
* ``rounding="stochastic"`` against nearest rounding (``StochasticRounding`` against
  ``QuantizePack``, same options) for int8, int4, ternary, fp8_e4m3, mxfp4 and nvfp4.

Every function is called once per round (thrifty three times), rounds alternate between
all functions, and each keeps its best time over all rounds; a ratio is anchor time /
thrifty time (higher is better; for stochastic/nearest it is nearest time /
stochastic time). Prints one markdown table per thread count.

``--cpu`` times with the process's CPU time instead of the wall clock: on a machine
shared with other work, a single-threaded comparison then no longer depends on how
much of a core each call happened to get (with more threads, CPU time adds the
threads up: it compares work, not waiting).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import thrifty  # noqa: E402
from benchmarks import bench_quant as bq  # noqa: E402

SR_FORMATS = ["int8", "int4", "ternary", "fp8_e4m3", "mxfp4", "nvfp4"]


CLOCK = time.perf_counter


def timed(f, calls):
    t = float("inf")
    for _ in range(calls):
        a = CLOCK()
        f()
        t = min(t, CLOCK() - a)
    return t


def cases():
    """(name, thrifty function, anchor name, anchor function) per comparison."""
    out = []
    tern = {}
    for be in ("thrifty", "numpy"):
        o = bq.QuantizePack()
        o.setup("ternary", be)
        tern[be] = o.enc
    out.append(("ternary quantize+pack", tern["thrifty"], "numpy", tern["numpy"]))

    codec = {}
    for be in ("thrifty", "ml_dtypes", "torch"):
        o = bq.Fp8Codec()
        try:
            o.setup(be)
        except NotImplementedError:  # asv's SkipNotImplemented
            continue
        codec[be] = (lambda o=o, be=be: o.time_fp8_encode(be))
    for be in ("ml_dtypes", "torch"):
        if be in codec:
            out.append(("fp8 e4m3 encode", codec["thrifty"], be, codec[be]))

    for fmt in ("fp8_e4m3", "mxfp4", "nvfp4"):  # torch's / torchao's CPU paths
        objs = {}
        for be in ("thrifty", "torch"):
            o = bq.QuantizePack()
            try:
                o.setup(fmt, be)
            except NotImplementedError:
                break
            objs[be] = o.enc
        if len(objs) == 2:
            out.append((f"{fmt} quantize", objs["thrifty"], "torch", objs["torch"]))

    for fmt in SR_FORMATS:
        near = bq.QuantizePack()
        near.setup(fmt, "thrifty")
        sr = bq.StochasticRounding()
        sr.setup(fmt)
        out.append((f"{fmt} stochastic", lambda sr=sr, fmt=fmt: sr.time_quantize_stochastic(fmt),
                    "nearest", near.enc))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--cpu", action="store_true", help="time with process CPU time")
    a = ap.parse_args()
    global CLOCK
    if a.cpu:
        CLOCK = time.process_time
    torch = sys.modules.get("torch")
    todo = cases()
    for n in a.threads:
        thrifty.set_num_threads(n)
        if torch is not None:
            torch.set_num_threads(n)
        best = {}
        for _ in range(a.rounds):
            for name, f, anchor, g in todo:
                t = timed(f, 3)
                u = timed(g, 1 if anchor != "nearest" else 3)
                old = best.get((name, anchor), (np.inf, np.inf))
                best[(name, anchor)] = (min(old[0], t), min(old[1], u))
        clock = "process CPU time" if a.cpu else "wall clock"
        print(f"\n{n} thread(s), best of {a.rounds} interleaved rounds, {clock}\n")
        print("| case | thrifty | anchor | anchor time | ratio (anchor / thrifty) |")
        print("|---|---|---|---|---|")
        for (name, anchor), (t, u) in best.items():
            print(f"| {name} | {t * 1e3:.1f} ms | {anchor} | {u * 1e3:.1f} ms | {u / t:.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
