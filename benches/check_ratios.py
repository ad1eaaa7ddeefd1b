"""Fail when thrifty's speed-up over an anchor dropped by more than 30 % (ratios, not times).

Reads asv result JSON (a quick run: ``asv run --python=same --quick``), computes the same
``anchor time / thrifty time`` ratios as ``ratio_table.py`` and compares them with the
committed ones in ``benches/ratios.json``. A ratio below ``(1 - drop) x`` its committed
value fails the check (exit status 1); ratios that are new or no longer measured are
listed but do not fail. ``--update`` rewrites the committed file from the run instead.

Usage::

    python benches/check_ratios.py <asv result JSON>... [--baseline benches/ratios.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ratio_table import load_results, ratios  # noqa: E402

DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ratios.json")


def compare(current: dict[str, float], baseline: dict[str, float],
            drop: float) -> tuple[list[str], list[str]]:
    """(failures, notes) of ``current`` against ``baseline``."""
    fails, notes = [], []
    for key, old in sorted(baseline.items()):
        new = current.get(key)
        if new is None:
            notes.append(f"not measured: {key}")
        elif new < (1.0 - drop) * old:
            fails.append(f"{key}: {new:.2f}x, committed {old:.2f}x "
                         f"({(1 - new / old) * 100:.0f}% drop)")
    notes += [f"new: {k} = {v:.2f}x" for k, v in sorted(current.items()) if k not in baseline]
    return fails, notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="asv result JSON files of the quick run")
    ap.add_argument("--baseline", default=DEFAULT, help="committed ratios (JSON)")
    ap.add_argument("--drop", type=float, default=0.30, help="largest allowed relative drop")
    ap.add_argument("--update", action="store_true", help="write the run's ratios as baseline")
    a = ap.parse_args(argv)
    current = {r["key"]: r["ratio"] for r in ratios(load_results(a.results))}
    if not current:
        print("no thrifty-vs-anchor benchmarks in the results", file=sys.stderr)
        return 1
    if a.update:
        with open(a.baseline, "w") as f:
            json.dump({k: round(v, 4) for k, v in current.items()}, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"wrote {len(current)} ratios to {a.baseline}")
        return 0
    with open(a.baseline) as f:
        baseline = json.load(f)
    fails, notes = compare(current, baseline, a.drop)
    for n in notes:
        print(n)
    for f_ in fails:
        print("REGRESSION", f_)
    print(f"{len(baseline) - len(fails)}/{len(baseline)} committed ratios held "
          f"(allowed drop {a.drop:.0%})")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
