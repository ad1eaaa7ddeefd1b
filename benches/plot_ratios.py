"""Draw the headline speed-ups (thrifty vs the library a user would otherwise pick).

Reads a ratios JSON (default: ``benches/headline_ratios.json``: rows of task, anchor,
speed-up, source, measured side by side in one process) and writes a horizontal bar
chart on a log scale, 1x marked. Needs matplotlib (the ``examples`` extra)::

    python benches/plot_ratios.py --out docs/img/ratios.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratios", default=str(Path(__file__).with_name("headline_ratios.json")))
    ap.add_argument("--out", required=True, help="image file (.png, .svg, .pdf)")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(Path(args.ratios).read_text())
    rows = data["rows"]
    labels = [f"{r['task']}\nvs {r['anchor']}" for r in rows]
    values = [float(r["speedup"]) for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(rows) + 1.2))
    colors = ["tab:green" if v >= 1 else "tab:red" for v in values]
    y = list(range(len(rows)))[::-1]
    ax.barh(y, values, color=colors)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xscale("log")
    ax.axvline(1.0, color="k", lw=0.8)
    for yi, v in zip(y, values):
        ax.text(v * 1.05, yi, f"{v:g}x", va="center", fontsize=7)
    ax.set_xlabel("speed-up over the anchor (log scale; > 1: thrifty faster)")
    ax.set_title(f"thrifty vs the usual library — {data['machine']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
