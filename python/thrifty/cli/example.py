"""``thrifty prune --example``: where pruning pays, shown on scikit-learn's bundled digits.

Offline, a few seconds. For each of :data:`N_SPLITS` random splits of the 1,797 digits
(1,200 training, 597 test) it plants :data:`N_COPIES` near-copies of training digits
(pixel noise of sd :data:`NOISE` on the 0-16 scale), then

1. removes near-duplicates with SemDeDup (``--eps``, default 0.01) and counts what went:
   one image of each planted pair (the copy or its original, whichever comes second in
   its cluster's order) and near-identical digits that were already in the data set;
2. prunes the deduplicated set to each kept fraction of :data:`FRACTIONS` with DBP and SSP
   (``--prefer``, default ``auto``: hard samples from 32 kept per class on, easy ones
   below) and draws a random subset of the same size;
3. trains a 5-NN classifier (:class:`thrifty.neighbors.KNNClassifier`, cosine) on every
   subset and scores it on the test digits: mean ± sd over the splits, with the choice
   ``auto`` did not make beside it, and a verdict per fraction that says where pruning
   beats the random subset, where it ties within noise and where it loses.

``--report FILE.json`` writes every number and every SemDeDup removal, ``--plot FILE``
(``.png``, ``.svg``, ``.pdf``...; needs matplotlib) draws accuracy against the kept
fraction. Both are checked before the work, never replace a file without ``--force``,
and are published together at the end (temporary files, then renames).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

__all__ = ["FRACTIONS", "N_SPLITS", "N_TRAIN", "N_COPIES", "NOISE", "Split", "make_split",
           "DedupCount", "count_dedup", "Row", "ExampleResult", "run_example", "paired",
           "format_lines", "draw_plot", "add_arguments", "run"]

#: Kept fractions of the deduplicated training set swept by the example.
FRACTIONS = (0.9, 0.7, 0.5, 0.3, 0.1)
#: Random splits (seeds ``--seed`` .. ``--seed + N_SPLITS - 1``).
N_SPLITS = 5
#: Training digits per split (the remaining 597 are the test set).
N_TRAIN = 1200
#: Planted near-copies per split.
N_COPIES = 150
#: Standard deviation of the pixel noise of a planted copy (pixels are 0..16).
NOISE = 0.05
#: Neighbours of the kNN classifier that scores every subset.
N_NEIGHBORS = 5
METHODS = ("dbp", "ssp", "random")
_EXTRA = "pip install 'thrifty[examples]'"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--example`` and ``--plot`` to the ``thrifty prune`` parser."""
    p.add_argument("--example", action="store_true",
                   help="show where pruning pays on scikit-learn's digits: SemDeDup, then "
                        "dbp, ssp and random at kept fractions "
                        + ", ".join(str(f) for f in FRACTIONS)
                        + f" ({N_SPLITS} splits, mean ± sd); uses --eps, --clusters, --seed, "
                          "--prefer (default auto), --report, --plot")
    p.add_argument("--plot", metavar="FILE",
                   help="--example: save the accuracy vs kept fraction plot (.png, .svg, "
                        ".pdf; needs matplotlib)")


@dataclass
class Split:
    """One split of the digits with planted near-copies.

    ``x_train`` holds the :data:`N_TRAIN` training digits followed by the
    :data:`N_COPIES` copies; ``pairs[t] = (original_row, copy_row)`` in ``x_train``.
    """

    seed: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    pairs: np.ndarray


def make_split(x: np.ndarray, y: np.ndarray, seed: int) -> Split:
    """Split the digits ``x, y`` with ``seed`` and plant the near-copies."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    tr, te = perm[:N_TRAIN], perm[N_TRAIN:]
    src = rng.choice(N_TRAIN, N_COPIES, replace=False)  # rows of the training part
    noise = rng.normal(0.0, NOISE, (N_COPIES, x.shape[1]))
    xt = np.concatenate([x[tr], x[tr][src] + noise]).astype(np.float32)
    yt = np.concatenate([y[tr], y[tr][src]])
    pairs = np.stack([src, N_TRAIN + np.arange(N_COPIES)], axis=1).astype(np.int64)
    return Split(seed, xt, yt, x[te].astype(np.float32), y[te], pairs)


@dataclass
class DedupCount:
    """What SemDeDup removed from one split.

    ``removed = planted + planted_extra + natural``: ``planted`` pairs lost exactly one
    member, ``planted_extra`` counts second members of pairs that lost both (normally 0),
    ``natural`` removed samples outside every planted pair (near-identical digits that
    were in the data set already); ``missed`` planted pairs kept both members.
    """

    n_input: int
    removed: int
    planted: int
    planted_extra: int
    natural: int
    missed: int


def count_dedup(duplicate_of: np.ndarray, pairs: np.ndarray) -> DedupCount:
    """Classify the removals of a SemDeDup result against the planted ``pairs``."""
    gone = np.asarray(duplicate_of) >= 0
    per_pair = gone[pairs].sum(axis=1)
    in_pair = np.zeros(gone.size, dtype=bool)
    in_pair[pairs.ravel()] = True
    return DedupCount(
        n_input=int(gone.size), removed=int(gone.sum()),
        planted=int((per_pair >= 1).sum()), planted_extra=int((per_pair == 2).sum()),
        natural=int((gone & ~in_pair).sum()), missed=int((per_pair == 0).sum()))


def _stats(values: Sequence[float]) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "sd": sd, "values": [float(a) for a in v]}


@dataclass
class Row:
    """One kept fraction of the sweep."""

    fraction: float
    kept: list[int] = field(default_factory=list)
    prefer: list[str] = field(default_factory=list)
    acc: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METHODS})
    other: dict[str, list[float]] = field(default_factory=dict)

    @property
    def chosen(self) -> str:
        """The order dbp/ssp used ("mixed" if it differed between splits)."""
        return self.prefer[0] if len(set(self.prefer)) == 1 else "mixed"


@dataclass
class ExampleResult:
    """Every number the example prints (and ``--report`` writes)."""

    seeds: list[int]
    eps: float
    clusters: int | None
    prefer: str
    n_classes: int
    n_test: int
    dedup: list[DedupCount]
    reports: list[dict[str, Any]]
    acc_all: list[float]
    acc_dedup: list[float]
    n_dedup: list[int]
    rows: list[Row]
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": "scikit-learn digits", "seeds": self.seeds, "eps": self.eps,
            "clusters": self.clusters, "prefer": self.prefer, "fractions": list(FRACTIONS),
            "classifier": f"thrifty.neighbors.KNNClassifier({N_NEIGHBORS}), cosine",
            "n_train": N_TRAIN, "n_copies": N_COPIES, "noise_sd": NOISE, "n_test": self.n_test,
            "semdedup": [{"seed": s, **vars(d), "report": r}
                         for s, d, r in zip(self.seeds, self.dedup, self.reports)],
            "accuracy_all": _stats(self.acc_all),
            "accuracy_deduplicated": {**_stats(self.acc_dedup), "n": self.n_dedup},
            "sweep": [{"keep_fraction": r.fraction, "kept": r.kept, "prefer": r.prefer,
                       **{m: _stats(r.acc[m]) for m in METHODS},
                       "not_chosen": {m: _stats(v) for m, v in r.other.items()}}
                      for r in self.rows],
            "seconds": self.seconds,
        }


def _flip(order: str) -> str:
    return {"hard": "easy", "easy": "hard"}[order]


def run_example(
    x: np.ndarray,
    y: np.ndarray,
    *,
    seeds: Sequence[int],
    fractions: Sequence[float] = FRACTIONS,
    eps: float = 0.01,
    clusters: int | None = None,
    prefer: str = "auto",
) -> ExampleResult:
    """Run the example on the digits ``x, y``; nothing is printed."""
    from .. import prune
    from ..neighbors import KNNClassifier

    def acc(s: Split, xs: np.ndarray, ys: np.ndarray) -> float:
        return float(KNNClassifier(N_NEIGHBORS).fit(xs, ys).score(s.x_test, s.y_test))

    t0 = time.perf_counter()
    rows = [Row(float(f)) for f in fractions]
    dedup: list[DedupCount] = []
    reports: list[dict[str, Any]] = []
    acc_all: list[float] = []
    acc_dedup: list[float] = []
    n_dedup: list[int] = []
    n_test = 0
    for seed in seeds:
        s = make_split(x, y, seed)
        n_test = len(s.y_test)
        sd = prune.semdedup(s.x_train, eps=eps, n_clusters=clusters, seed=seed)
        dedup.append(count_dedup(sd.duplicate_of, s.pairs))
        reports.append(sd.report())
        xd, yd = s.x_train[sd.keep], s.y_train[sd.keep]
        n_dedup.append(len(yd))
        acc_all.append(acc(s, s.x_train, s.y_train))
        acc_dedup.append(acc(s, xd, yd))
        for row in rows:
            f = row.fraction
            common: dict[str, Any] = dict(keep_fraction=f, n_clusters=clusters, seed=seed)
            r_dbp = prune.dbp(xd, prefer=prefer, y=yd, **common)
            r_ssp = prune.ssp(xd, prefer=prefer, y=yd, **common)
            r_rnd = prune.random_subset(len(yd), keep_fraction=f, seed=seed)
            row.kept.append(int(r_dbp.keep.sum()))
            row.prefer.append(r_dbp.prefer)
            for m, r in (("dbp", r_dbp), ("ssp", r_ssp), ("random", r_rnd)):
                row.acc[m].append(acc(s, xd[r.keep], yd[r.keep]))
            if prefer == "auto":
                for m, fn in (("dbp", prune.dbp), ("ssp", prune.ssp)):
                    r = fn(xd, prefer=_flip(r_dbp.prefer), **common)
                    row.other.setdefault(m, []).append(acc(s, xd[r.keep], yd[r.keep]))
    return ExampleResult(list(seeds), eps, clusters, prefer, int(np.unique(y).size), n_test,
                         dedup, reports, acc_all, acc_dedup, n_dedup, rows,
                         time.perf_counter() - t0)


def _ms(v: Sequence[float]) -> str:
    st = _stats(v)
    return f"{st['mean']:.3f} ± {st['sd']:.3f}"


def paired(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, str]:
    """Mean of the paired differences ``a - b`` over the splits, its standard error, and
    the reading: ``"pays"`` / ``"loses"`` when the mean is more than two standard errors
    away from 0, ``"tie"`` (within noise) otherwise."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mean = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0
    if abs(mean) <= 2 * se or mean == 0:
        return mean, se, "tie"
    return mean, se, "pays" if mean > 0 else "loses"


def format_lines(res: ExampleResult) -> list[str]:
    """The example's report, line by line."""
    k = len(res.seeds)
    seeds = f"seed {res.seeds[0]}" if k == 1 else f"seeds {res.seeds[0]}-{res.seeds[-1]}"
    n_in = N_TRAIN + N_COPIES
    out = [
        f"scikit-learn digits (8x8 images, {res.n_classes} classes), {k} random "
        f"split{'s' if k > 1 else ''} ({seeds}), each:",
        f"  {N_TRAIN:,} training digits + {N_COPIES} planted near-copies of them (pixel noise, "
        f"sd {NOISE}) = {n_in:,}; {res.n_test} test digits",
        f"  accuracy: {N_NEIGHBORS}-NN (cosine) on the test digits, mean ± sd over the splits",
        "",
        f"1. SemDeDup --eps {res.eps}: a sample goes when its cosine to an earlier sample of "
        f"its cluster is > {1 - res.eps:g}.",
        "   Each planted pair is two near-identical images: one goes (whichever comes second "
        "in its",
        "   cluster's order), the other stays; scikit-learn's digits hold a few "
        "near-identical images too.",
    ]
    for seed, d in zip(res.seeds, res.dedup):
        parts = [f"{d.planted} planted pairs (one image of each)"]
        if d.planted_extra:
            parts.append(f"{d.planted_extra} second images of planted pairs")
        parts.append(f"{d.natural} near-identical digit{'s' if d.natural != 1 else ''} "
                     "already in the set")
        miss = f"; {d.missed} planted pairs not found" if d.missed else ""
        out.append(f"   split {seed}: removed {d.removed} of {d.n_input:,} = "
                   + " + ".join(parts) + miss)
    diff, se, verdict = paired(res.acc_dedup, res.acc_all)
    n_mean = float(np.mean(res.n_dedup))
    out.append(f"   accuracy: all {n_in:,} {_ms(res.acc_all)}; deduplicated (~{n_mean:,.0f}) "
               f"{_ms(res.acc_dedup)}")
    out.append(f"   {1 - n_mean / n_in:.0%} fewer samples, accuracy {diff:+.3f} ± {se:.3f} "
               "(paired difference ± standard error"
               + (", within noise)" if verdict == "tie" else ")"))
    out.append("")
    auto = res.prefer == "auto"
    how = "auto: hard from 32 kept per class on, easy below" if auto else res.prefer
    out.append("2. Prune the deduplicated set to a kept fraction with dbp and ssp")
    out.append(f"   (--prefer {how});")
    out.append("   random = a random subset of the same size.")
    head = f"   {'keep':>4}  {'/class':>6}  {'prefer':<6}  " + "  ".join(
        f"{m:<13}" for m in METHODS)
    if auto:
        head += "  | not chosen: dbp, ssp"
    out.append(head)
    for r in res.rows:
        per_class = int(np.mean(r.kept)) // res.n_classes
        line = f"   {r.fraction:>4}  {per_class:>6}  {r.chosen:<6}  " + "  ".join(
            f"{_ms(r.acc[m]):<13}" for m in METHODS)
        if auto and r.other:
            other = _flip(r.prefer[0]) if r.chosen != "mixed" else "mixed"
            line += f"  | {other}: " + ", ".join(_ms(r.other[m]) for m in ("dbp", "ssp"))
        out.append(line)
    out.append("")
    out.append(f"3. Against the random subset: mean paired difference ± standard error over the "
               f"{k} splits")
    out.append("   (pays / loses: more than two standard errors from 0; tie: within noise):")
    pays: list[str] = []
    loses: list[str] = []
    for r in res.rows:
        cells = []
        for m in ("dbp", "ssp"):
            diff, se, verdict = paired(r.acc[m], r.acc["random"])
            cells.append(f"{m} {diff:+.3f} ± {se:.3f} {verdict}")
            {"pays": pays, "loses": loses}.get(verdict, []).append(f"{m} at {r.fraction}")
        out.append(f"   keep {r.fraction}: {cells[0]:<24}  {cells[1]}")
    out.append("   pruning pays: " + (", ".join(pays) if pays else "nowhere in this sweep"))
    out.append("   pruning loses: " + (", ".join(loses) if loses else "nowhere in this sweep"))
    if auto:
        out.append("   Sorscher et al. 2022: keep easy samples when data is scarce, hard ones "
                   "when it is abundant;")
        out.append("   'not chosen' is the order auto did not pick.")
    return out


def draw_plot(res: ExampleResult) -> Any:
    """A matplotlib ``Figure`` of accuracy against the kept fraction."""
    from matplotlib.figure import Figure  # type: ignore[import-not-found]

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    fr = [r.fraction for r in res.rows]
    for m, style in (("dbp", "o-"), ("ssp", "s-"), ("random", "^--")):
        st = [_stats(r.acc[m]) for r in res.rows]
        label = m if m == "random" or res.prefer != "auto" else f"{m} (auto)"
        ax.errorbar(fr, [s["mean"] for s in st], yerr=[s["sd"] for s in st], fmt=style,
                    capsize=3, label=label)
    ax.axhline(float(np.mean(res.acc_dedup)), color="grey", linestyle=":",
               label="all deduplicated data")
    for r in res.rows:
        ax.annotate(r.chosen, (r.fraction, float(np.mean(r.acc["dbp"]))),
                    textcoords="offset points", xytext=(0, -14), ha="center", fontsize=7)
    ax.set_xlabel("kept fraction of the deduplicated training set")
    ax.set_ylabel(f"{N_NEIGHBORS}-NN test accuracy (mean ± sd, {len(res.seeds)} splits)")
    ax.set_title("thrifty prune --example: scikit-learn digits")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _check_outputs(paths: list[tuple[str, str]], force: bool) -> None:
    """Refuse an output that exists (without ``force``), is a directory, sits in a missing
    directory, or is named twice; before any work."""
    from .._errors import InvalidInputError

    seen: dict[str, str] = {}
    for path, opt in paths:
        real = os.path.realpath(path)
        if real in seen:
            raise InvalidInputError(f"{opt} and {seen[real]} name the same file: {path}")
        seen[real] = opt
        if os.path.isdir(path):
            raise IsADirectoryError(f"{opt} {path} is a directory")
        if os.path.exists(path) and not force:
            raise FileExistsError(f"{path} exists; pass --force to overwrite it")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise FileNotFoundError(f"{opt}: directory does not exist: {parent}")


def _publish(items: list[tuple[str, Callable[[BinaryIO], Any]]]) -> None:
    """Write every item to a temporary file beside it, then rename them all; on an error
    none is published."""
    tmps: list[tuple[str, str]] = []
    try:
        for path, write in items:
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                       prefix=".thrifty-", suffix=".tmp")
            tmps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.chmod(tmp, 0o666 & ~_umask())
        for tmp, path in tmps:
            os.replace(tmp, path)
        tmps = []
    finally:
        for tmp, _ in tmps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def run(args: argparse.Namespace) -> int:
    """``thrifty prune --example``."""
    from .._errors import InvalidInputError
    from .prune import _fail

    given = [opt for opt, v in (("INPUT", args.input), ("-o", args.output),
                                ("--keep", args.keep), ("--id-column", args.id_column))
             if v is not None and v != []]  # INPUT is a (possibly empty) list
    if given:
        return _fail(f"--example runs on scikit-learn's digits and sweeps the kept fraction "
                     f"({', '.join(str(f) for f in FRACTIONS)}); {', '.join(given)} "
                     f"{'does' if len(given) == 1 else 'do'} not apply")
    if args.clusters is not None and args.clusters > N_TRAIN // 2:
        raise InvalidInputError(f"--clusters {args.clusters}: the example allows at most "
                                f"{N_TRAIN // 2} (half its {N_TRAIN:,} training digits)")
    outs = [(p, o) for p, o in ((args.report, "--report"), (args.plot, "--plot")) if p]
    _check_outputs(outs, args.force)
    if args.report and os.path.splitext(args.report)[1].lower() != ".json":
        raise InvalidInputError(f"--report {args.report}: the report is JSON; give it a "
                                ".json name")
    if args.plot:
        try:
            from matplotlib.figure import Figure
        except ImportError:
            return _fail(f"--plot needs matplotlib: {_EXTRA}")
    try:
        from sklearn.datasets import load_digits  # type: ignore[import-untyped]
    except ImportError:
        return _fail(f"--example needs scikit-learn: {_EXTRA}")
    if args.plot:
        fmt = os.path.splitext(args.plot)[1][1:].lower()
        kinds = Figure().canvas.get_supported_filetypes()
        if fmt not in kinds:
            raise InvalidInputError(f"--plot {args.plot}: not an image name matplotlib "
                                    f"writes (use one of .{', .'.join(sorted(kinds))})")
    prefer = "auto" if args.prefer is None else args.prefer
    eps = 0.01 if args.eps is None else args.eps
    d = load_digits()
    x, y = d.data.astype(np.float32), d.target
    seeds = [args.seed + i for i in range(N_SPLITS)]
    res = run_example(x, y, seeds=seeds, eps=eps, clusters=args.clusters, prefer=prefer)
    for line in format_lines(res):
        print(line)
    items: list[tuple[str, Callable[[BinaryIO], Any]]] = []
    if args.report:
        rep = json.dumps(res.to_json(), indent=1, allow_nan=False).encode()
        items.append((args.report, lambda f: f.write(rep)))
    if args.plot:
        fig, fmt = draw_plot(res), os.path.splitext(args.plot)[1][1:].lower()
        items.append((args.plot, lambda f: fig.savefig(f, format=fmt)))
    _publish(items)  # both or neither
    for path, what in ((args.report, "report"), (args.plot, "plot")):
        if path:
            print(f"{what}: {path}")
    print(f"done in {res.seconds:.1f} s")
    sys.stdout.flush()
    return 0

