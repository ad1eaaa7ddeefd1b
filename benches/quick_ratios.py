"""Speed-up ratios of thrifty over its anchors, measured interleaved in one process.

The asv suite (``benches/benchmarks``) is the reference for the published tables, but asv
times each backend in its own process, one after the other: on a shared 2-core machine a
burst of load lands on one side of a ratio. This script runs the same benchmark classes
(their ``setup`` and ``time_*`` methods) with every backend set up side by side, then times
them round-robin — thrifty, anchor, thrifty, anchor, ... — and keeps the best of
``--repeats`` rounds for each. The ratio keys are those of ``ratio_table.py``
(``<module>.<Class>.<method>[<other params>] <thrifty> vs <anchor>``).

The default selection (``QUICK``) is the regression check's: the headline comparisons at
one size each, about two minutes on 2 cores. ``--check`` compares with the committed
``benches/ratios.json`` and exits 1 when a ratio fell by more than ``--drop`` (30 %); a
ratio that fails is measured once more, and only a second failure counts, so that one
burst of load on a shared machine does not fail the build. ``--update`` writes the
baseline.

Usage::

    python benches/quick_ratios.py                       # print the ratios
    python benches/quick_ratios.py --check               # CI: compare with benches/ratios.json
    python benches/quick_ratios.py --update --repeats 7  # refresh the committed baseline
    python benches/quick_ratios.py --only TopK --only Fp8Codec
"""

from __future__ import annotations

import argparse
import gc
import importlib
import itertools
import json
import os
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from check_ratios import compare  # noqa: E402
from ratio_table import markdown, ratios  # noqa: E402

DEFAULT_BASELINE = os.path.join(HERE, "ratios.json")

# (benchmark "module.Class.method", {param name: values to run}); the backend axis keeps
# only thrifty and the anchors listed under "backend".
QUICK: list[tuple[str, dict[str, list[Any]]]] = [
    ("bench_neighbors.TopK.time_topk",
     {"backend": ["thrifty", "faiss"], "metric": ["cosine"], "n_queries": [2000]}),
    ("bench_neighbors.KNNPredict.time_predict", {"backend": ["thrifty", "sklearn"]}),
    ("bench_neighbors.NearestMean.time_predict", {"backend": ["thrifty", "sklearn"]}),
    ("bench_prune.KMeansFit.time_fit",
     {"backend": ["thrifty", "faiss"], "shape": ["200000x384"], "k": [256], "metric": ["spherical"]}),
    ("bench_prune.PruneStep.time_step", {"backend": ["thrifty", "numpy"], "method": ["semdedup"]}),
    ("bench_quant.QuantizePack.time_quantize",
     {"fmt": ["ternary", "int8", "fp8_e4m3", "mxfp4"]}),
    # into a preallocated buffer: a fresh 64 MB output is first-touch page faults, which
    # vary 5x from run to run with the allocator's and the kernel's page state
    ("bench_quant.DequantizeInto.time_dequantize_into", {"fmt": ["ternary", "int8"]}),
    ("bench_quant.Fp8Codec.time_fp8_encode", {}),
    ("bench_text.CompressionKNN.time_predict", {"backend": ["thrifty", "npc-gzip", "python-gzip"]}),
]


class Skip(Exception):
    """A backend that is not installed or has no version of this case."""


def _is_skip(exc: BaseException) -> bool:
    return isinstance(exc, (ImportError, NotImplementedError)) or type(exc).__name__ == "SkipNotImplemented"


def _resolve(spec: str) -> tuple[type, str, str]:
    mod_name, cls_name, meth = spec.split(".")
    mod = importlib.import_module(f"benchmarks.{mod_name}")
    return getattr(mod, cls_name), meth, spec


def _axes(cls: type, chosen: dict[str, list[Any]]) -> tuple[list[str], list[list[Any]]]:
    params = getattr(cls, "params", ())
    names = list(getattr(cls, "param_names", []))
    if params and not isinstance(params[0], (list, tuple)):
        params = (params,)
    axes = []
    for name, values in zip(names, params):
        want = chosen.get(name)
        axes.append([v for v in values if want is None or v in want or str(v) in map(str, want)])
    return names, axes


def measure(spec: str, chosen: dict[str, list[Any]], repeats: int,
            log=print) -> tuple[list[list[Any]], list[Any]]:
    """``(axes, results)`` in asv's layout (results in ``itertools.product`` order)."""
    cls, meth, _ = _resolve(spec)
    names, axes = _axes(cls, chosen)
    b = names.index("backend") if "backend" in names else None
    others = [a for i, a in enumerate(axes) if i != b]
    results: dict[tuple, float | None] = {}
    for rest in itertools.product(*others):
        backends = axes[b] if b is not None else [None]
        live = {}
        for be in backends:
            args = list(rest)
            if b is not None:
                args.insert(b, be)
            inst = cls()
            try:
                if hasattr(inst, "setup"):
                    inst.setup(*args)
                getattr(inst, meth)(*args)  # warm-up (and first-call costs)
            except Exception as exc:  # noqa: BLE001 - a skipped backend, reported
                if not _is_skip(exc):
                    raise
                log(f"  skip {spec}{args}: {exc}")
                results[tuple(args)] = None
                continue
            live[tuple(args)] = inst
        best = {k: float("inf") for k in live}
        for _ in range(repeats):
            for args, inst in live.items():
                gc.collect()
                t0 = time.perf_counter()
                getattr(inst, meth)(*args)
                best[args] = min(best[args], time.perf_counter() - t0)
        for args, inst in live.items():
            if hasattr(inst, "teardown"):
                inst.teardown(*args)
            results[args] = best[args]
        del live
        gc.collect()
    order = list(itertools.product(*axes))
    return ([[str(v) if not isinstance(v, (int, float)) else v for v in a] for a in axes],
            [results.get(c) for c in order])


def run(selection: list[tuple[str, dict[str, list[Any]]]], repeats: int,
        log=print) -> list[dict[str, Any]]:
    rows = []
    for spec, chosen in selection:
        t0 = time.perf_counter()
        axes, res = measure(spec, chosen, repeats, log)
        got = ratios({spec: (axes, res)})
        rows += got
        log(f"{spec}: {len(got)} ratio(s) in {time.perf_counter() - t0:.0f} s "
            + " ".join(f"{r['ratio']:.2f}x" for r in got))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds per backend (best kept)")
    ap.add_argument("--only", action="append", default=[], help="substring of the benchmark name")
    ap.add_argument("--baseline", default=DEFAULT_BASELINE)
    ap.add_argument("--check", action="store_true", help="fail on a drop of more than --drop")
    ap.add_argument("--drop", type=float, default=0.30)
    ap.add_argument("--update", action="store_true", help="write the ratios to --baseline")
    ap.add_argument("--json", help="also write {key: ratio} here")
    a = ap.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    sel = [s for s in QUICK if not a.only or any(o in s[0] for o in a.only)]
    if not sel:
        print(f"no benchmark matches {a.only}", file=sys.stderr)
        return 2
    rows = run(sel, a.repeats)
    print(markdown(rows))
    current = {r["key"]: r["ratio"] for r in rows}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(current, f, indent=1, sort_keys=True)
    if a.update:
        with open(a.baseline, "w") as f:
            json.dump({k: round(v, 3) for k, v in sorted(current.items())}, f, indent=1)
            f.write("\n")
        print(f"wrote {len(current)} ratios to {a.baseline}")
    if not a.check:
        return 0
    with open(a.baseline) as f:
        baseline = json.load(f)
    baseline = {k: v for k, v in baseline.items() if any(k.startswith(s) for s, _ in sel)}
    fails, notes = compare(current, baseline, a.drop)
    # Up to twice more, the failing benchmarks only: a burst of load is not a
    # regression. Each ratio keeps its best measurement (a re-run measures every ratio
    # of a benchmark, and one that held before must not fail on the re-run's burst).
    for _ in range(2):
        if not fails:
            break
        again = [s for s in sel if any(f.startswith(s[0]) for f in fails)]
        print(f"re-measuring {len(again)} benchmark(s) with a drop: " + "; ".join(fails))
        for r in run(again, a.repeats):
            current[r["key"]] = max(current.get(r["key"], 0.0), r["ratio"])
        fails, notes = compare(current, baseline, a.drop)
    for n in notes:
        print("note:", n)
    for f in fails:
        print("REGRESSION:", f)
    print(f"{len(baseline) - len(fails)}/{len(baseline)} committed ratios hold (drop allowed {a.drop:.0%})")
    return 1 if fails else 0


if __name__ == "__main__":
    raise SystemExit(main())
