"""Markdown table of thrifty's speed-up over each anchor, from asv result JSON.

asv (format version 2) stores, per benchmark, the timings of every combination of its
parameters. A benchmark takes part when one parameter axis holds ``'thrifty'`` (the
backend axis); for every other value on that axis (the anchors: faiss, numpy, ...) and
every combination of the remaining parameters, the ratio ``anchor time / thrifty time`` is
reported (> 1: thrifty is faster); for ``track_*`` benchmarks (a rate: higher is better)
it is ``thrifty / anchor``, for ``peakmem_*`` and ``track_*_mib`` / ``track_*_bytes``
``anchor amount / thrifty amount`` (> 1: thrifty needs less). Combinations asv did not measure (skipped, failed: NaN) are left out.
Backends that are variants of thrifty
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
import math
import sys
from typing import Any


def _value(v: str) -> Any:
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return v


def _measured(t: Any) -> bool:
    return isinstance(t, (int, float)) and math.isfinite(t) and t > 0


def _kind(name: str) -> str:
    """``time`` and ``peakmem`` (lower is better), ``track`` (a rate: higher is better) or
    ``size`` (a ``track_*_mib`` / ``track_*_bytes`` amount: lower is better)."""
    method = name.rsplit(".", 1)[-1]
    if method.startswith("track_"):
        return "size" if method.endswith(("_mib", "_bytes")) else "track"
    return "peakmem" if method.startswith("peakmem_") else "time"


def _fmt(t: float, kind: str) -> str:
    if kind in ("track", "size"):
        return f"{t:.3g}"
    if kind == "peakmem":
        return f"{t / 2**20:.3g} MiB"
    return _fmt_time(t)


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
                if not _measured(t_th):
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
                    if not _measured(t_an):
                        continue
                    label = ", ".join(str(v) for v in rest)
                    kind = _kind(name)
                    ratio = t_th / t_an if kind == "track" else t_an / t_th
                    rows.append(dict(benchmark=name, params=label, thrifty=th, anchor=an,
                                     thrifty_s=t_th, anchor_s=t_an, ratio=ratio, kind=kind,
                                     key=f"{name}[{label}] {th} vs {an}"))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| benchmark | parameters | thrifty | anchor | anchor value | thrifty's advantage |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        kind = r.get("kind", "time")
        lines.append(f"| {r['benchmark']} | {r['params'] or '-'} | {r['thrifty']} "
                     f"{_fmt(r['thrifty_s'], kind)} | {r['anchor']} "
                     f"| {_fmt(r['anchor_s'], kind)} | {r['ratio']:.2f}x |")
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
