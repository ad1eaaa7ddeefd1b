"""Markdown table of thrifty's speed-up over each anchor, from asv result JSON.

asv (format version 2) stores, per benchmark, the timings of every combination of its
parameters. A benchmark takes part when one parameter axis holds ``'thrifty'`` (the
backend axis); for every other value on that axis (the anchors: faiss, numpy, ...) and
every combination of the remaining parameters, the ratio ``anchor time / thrifty time`` is
reported (> 1: thrifty is faster). Backends that are variants of thrifty
(``thrifty-all``, ...) are compared with the anchor of the same suffix when there is one
(``faiss-all``) and are otherwise skipped.

Usage::

    python benches/ratio_table.py benches/.asv/results/<machine>/<commit>-<env>.json
    python benches/ratio_table.py --json ratios.json <result files>   # also write the ratios
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import sys
from typing import Any


def _value(v: str) -> Any:
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return v


def _fmt_time(t: float) -> str:
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if t >= f:
            return f"{t / f:.3g} {unit}"
    return f"{t * 1e9:.3g} ns"


def load_results(paths: list[str]) -> dict[str, tuple[list[list[Any]], list[Any]]]:
    """``{benchmark: (params, results)}`` merged over the files (later files win)."""
    out: dict[str, tuple[list[list[Any]], list[Any]]] = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        if data.get("version") != 2 or "result_columns" not in data:
            raise SystemExit(f"{path}: not an asv result file (format version 2)")
        cols = data["result_columns"]
        i_res, i_par = cols.index("result"), cols.index("params")
        for name, row in data.get("results", {}).items():
            if not isinstance(row, list) or len(row) <= i_res or row[i_res] is None:
                continue
            params = row[i_par] if len(row) > i_par and row[i_par] else []
            res = row[i_res]
            if not isinstance(res, list):
                res = [res]
            out[name] = ([[_value(v) for v in axis] for axis in params], res)
    return out


def ratios(results: dict[str, tuple[list[list[Any]], list[Any]]]) -> list[dict[str, Any]]:
    """One row per (benchmark, other parameters, anchor)."""
    rows = []
    for name, (params, res) in sorted(results.items()):
        axis = next((i for i, a in enumerate(params) if "thrifty" in a), None)
        if axis is None:
            continue
        combos = list(itertools.product(*params))
        if len(combos) != len(res):
            continue
        table = {c: r for c, r in zip(combos, res)}
        others = [p for i, p in enumerate(params) if i != axis]
        for rest in itertools.product(*others):
            def key(backend: str) -> tuple:
                k = list(rest)
                k.insert(axis, backend)
                return tuple(k)

            variants = [str(b) for b in params[axis] if str(b).startswith("thrifty")]
            suffixes = [v[len("thrifty"):] for v in variants if v != "thrifty"]
            for th in variants:
                suffix = th[len("thrifty"):]
                t_th = table.get(key(th))
                if not isinstance(t_th, (int, float)) or t_th <= 0:
                    continue
                for an in params[axis]:
                    an = str(an)
                    if an.startswith("thrifty"):
                        continue
                    # "thrifty-all" pairs with "faiss-all"; plain "thrifty" with the rest
                    paired = next((x for x in suffixes if an.endswith(x)), "")
                    if paired != suffix:
                        continue
                    t_an = table.get(key(an))
                    if not isinstance(t_an, (int, float)) or t_an <= 0:
                        continue
                    label = ", ".join(str(v) for v in rest)
                    rows.append(dict(benchmark=name, params=label, thrifty=th, anchor=an,
                                     thrifty_s=t_th, anchor_s=t_an, ratio=t_an / t_th,
                                     key=f"{name}[{label}] {th} vs {an}"))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| benchmark | parameters | thrifty | anchor | anchor time | speed-up |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['benchmark']} | {r['params'] or '-'} | {r['thrifty']} "
                     f"{_fmt_time(r['thrifty_s'])} | {r['anchor']} | {_fmt_time(r['anchor_s'])} "
                     f"| {r['ratio']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="asv result JSON files")
    ap.add_argument("--json", help="also write {key: ratio} to this file")
    a = ap.parse_args(argv)
    rows = ratios(load_results(a.results))
    print(markdown(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({r["key"]: round(r["ratio"], 4) for r in rows}, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
