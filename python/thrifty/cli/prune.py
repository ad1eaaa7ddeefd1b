"""``thrifty prune``: prune a file of embeddings (SemDeDup, DBP, SSP or random).

INPUT is a ``.npy`` file of shape (n, d), float32 or float16 (read memory-mapped) or
float64 (converted to float32, said on stderr), or a ``.parquet`` file with a column
``--column`` holding one equal-length list of floats per row (needs pyarrow). OUT holds
the kept row indices in input order: int64 ``.npy``, one index per line for a ``.txt``
name, or a ``.parquet`` table with an int64 column ``index``; with ``--id-column`` the
kept ids, one per line (``.txt``) or as a second column (``.parquet``).
``--clusters`` defaults to ``round(sqrt(n))`` (spherical k-means on a faiss-style
subsample of 256 points per centroid, then every point assigned).

Every option and output path is checked before the work starts. OUT and ``--report``
are written to temporary files and published together at the end (see
:mod:`thrifty.cli._io`); an existing file is never replaced without ``--force``.
``--example`` runs the pipeline on scikit-learn's bundled digits.

With ``--ray [auto|ADDRESS|local[:N]]`` the work runs on a Ray cluster
(:mod:`thrifty.distributed`) and INPUT may be several files, a directory or a glob of
``.npy`` / parquet shards, numbered globally in the given order (sorted names for a
directory or glob); OUT and the report are the same as one process would write for the
concatenated rows. Stage files live in ``--work-dir`` (default ``OUT.work``), removed
after success; ``--resume`` reuses the stages an interrupted run finished. The per-row
results are written there as shards (``--work-dir``/result, a
:class:`~thrifty.distributed.ShardedPruneResult`) and OUT and the report are streamed
from them one input shard at a time (:func:`_publish_sharded`), so the driver never
holds a value per row of the whole input. Without
``--ray`` a single file is required: several inputs are refused with a hint to use
``--ray`` (concatenating them silently could need more memory than one file).
``--ray`` may stand anywhere: the word after it is its value only when it has the form of
one (``auto``, ``local``, ``local:N``, ``HOST:PORT``, ``ray://...``), else it is an INPUT
(:func:`_split_ray_value`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from typing import Any

import numpy as np

from . import example

__all__ = ["register", "run"]

METHODS = ("semdedup", "dbp", "ssp", "random")
PREFER = ("hard", "easy", "random", "auto")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "prune", normalise=_split_ray_value, intermixed=True,
        help="prune a .npy or .parquet file of embeddings (SemDeDup, DBP, SSP, random)",
        description=(
            "Prune a dataset by its embeddings. INPUT: .npy of shape (n, d), float32, "
            "float16 or float64, or .parquet with a list-of-floats column. OUT: kept row "
            "indices (int64 .npy, .txt one per line, or .parquet). Default --clusters: "
            "round(sqrt(n)). With --ray, INPUT may be several shards, a directory or a "
            "glob, pruned on a Ray cluster with the same outputs. "
            "Exit codes: 0 done, 1 failure, 2 bad input or usage, 130 interrupted, "
            "143 terminated."
        ),
    )
    p.add_argument("input", nargs="*", metavar="INPUT",
                   help=".npy or .parquet file of embeddings (with --ray: several files, a "
                        "directory or a glob of shards)")
    p.add_argument("--method", choices=METHODS, default="dbp", help="pruning method (default dbp)")
    p.add_argument("--keep", type=float, default=None, metavar="F",
                   help="fraction to keep, in (0, 1] (default 0.5; refused by semdedup)")
    p.add_argument("--eps", type=float, default=None, metavar="E",
                   help="SemDeDup threshold: drop cosine > 1 - E (semdedup default 0.05; "
                        "for dbp, runs SemDeDup first)")
    p.add_argument("--clusters", type=int, default=None, metavar="K",
                   help="k-means clusters (default round(sqrt(n)))")
    p.add_argument("--prefer", choices=PREFER, default=None,
                   help="which samples dbp/ssp keep (semdedup: which of a pair): hard, easy, "
                        "random, or auto = hard from 32 kept per class (here: per cluster) "
                        "on, easy below (default hard; --example: auto)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--column", default=None, metavar="NAME",
                   help="parquet input: the embedding column (default 'embedding')")
    p.add_argument("--id-column", default=None, metavar="NAME",
                   help="parquet input: write these ids (one per line in a .txt OUT, or a "
                        "column of a .parquet OUT)")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file: .npy (int64 indices), .txt (one per line) or .parquet "
                        "(column 'index', and the ids with --id-column)")
    p.add_argument("--report", metavar="REPORT.json",
                   help="write a JSON report of every removal (published together with OUT)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="run on Ray (thrifty.distributed): 'auto' (the default when given "
                        "without a value: a running cluster, else a local one), a cluster "
                        "address HOST:PORT or ray://..., or 'local[:N]' (a new local "
                        "cluster with N CPUs). The word after --ray is its value only when "
                        "it has one of these forms; anything else is an INPUT, wherever "
                        "--ray stands (--ray=VALUE always takes VALUE)")
    p.add_argument("--resume", action="store_true",
                   help="--ray: reuse the stages a previous run with the same input and "
                        "options finished in --work-dir")
    p.add_argument("--work-dir", metavar="DIR", default=None,
                   help="--ray: directory for the stage files, visible to every worker "
                        "(default OUT.work; removed after success)")
    example.add_arguments(p)
    p.set_defaults(func=run)


_RAY_VALUE = re.compile(r"auto|local(:[0-9]+)?|ray://\S+|(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}")


def _is_ray_value(s: str) -> bool:
    """Whether ``s`` has the form of a ``--ray`` value: ``auto``, ``local``,
    ``local:N``, ``ray://...`` or ``HOST:PORT``."""
    return _RAY_VALUE.fullmatch(s) is not None


def _split_ray_value(argv: list[str]) -> list[str]:
    """``--ray WORD`` keeps WORD as its value only when WORD has the form of one
    (:func:`_is_ray_value`); otherwise ``--ray`` becomes ``--ray=auto`` and WORD stays a
    positional INPUT. So ``--ray`` may stand anywhere, before, between or after the
    inputs, and never swallows one. Tokens after ``--`` are left alone."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        t = argv[i]
        if t == "--":
            return out + argv[i:]
        # argparse accepts unambiguous prefixes of long options ("--ra")
        if len(t) >= 4 and "--ray".startswith(t):
            if i + 1 < len(argv) and _is_ray_value(argv[i + 1]):
                out += ["--ray", argv[i + 1]]
                i += 2
                continue
            out.append("--ray=auto")
        else:
            out.append(t)
        i += 1
    return out


def _fail(msg: str) -> int:
    print(f"thrifty prune: error: {msg}", file=sys.stderr)
    return 2


def _prune(x: np.ndarray, args: argparse.Namespace, keep: float, progress: Any = None) -> Any:
    from .. import prune

    prefer = "hard" if args.prefer is None else args.prefer
    if args.method == "random":
        return prune.random_subset(x.shape[0], keep_fraction=keep, seed=args.seed)
    if args.method == "semdedup":
        eps = 0.05 if args.eps is None else args.eps
        return prune.semdedup(x, eps=eps, n_clusters=args.clusters, prefer=prefer,
                              seed=args.seed, progress=progress)
    if args.method == "ssp":
        return prune.ssp(x, keep_fraction=keep, n_clusters=args.clusters, prefer=prefer,
                         seed=args.seed, progress=progress)
    return prune.dbp(x, keep_fraction=keep, n_clusters=args.clusters, dedup_eps=args.eps,
                     prefer=prefer, seed=args.seed, progress=progress)


#: where a --ray run writes its sharded results, inside the work directory
RESULT_DIR = "result"


def _prune_ray(args: argparse.Namespace, keep: float, work_dir: str, progress: Any) -> Any:
    """Run on Ray with the per-row results written as shards in ``work_dir/result``
    (a :class:`~thrifty.distributed.ShardedPruneResult`): nothing per row is gathered
    here, the outputs are streamed from those shards."""
    import thrifty.distributed as td

    prefer = "hard" if args.prefer is None else args.prefer
    out_dir = os.path.join(work_dir, RESULT_DIR)
    # results of an earlier, unpublished run are rewritten from its reused stages
    shutil.rmtree(out_dir, ignore_errors=True)
    common: dict[str, Any] = dict(
        n_clusters=args.clusters, seed=args.seed, column=args.column, id_column=args.id_column,
        work_dir=work_dir, resume=args.resume, ray=args.ray, progress=progress,
        out_dir=out_dir)
    if args.method == "semdedup":
        return td.semdedup(args.input, eps=0.05 if args.eps is None else args.eps,
                           prefer=prefer, **common)
    if args.method == "ssp":
        return td.ssp(args.input, keep_fraction=keep, prefer=prefer, **common)
    return td.dbp(args.input, keep_fraction=keep, dedup_eps=args.eps, prefer=prefer, **common)


def _validate(args: argparse.Namespace) -> float:
    from .._errors import InvalidInputError

    keep = 0.5 if args.keep is None else args.keep
    if not (0.0 < keep <= 1.0):
        raise InvalidInputError(f"--keep must be in (0, 1], got {keep}")
    if args.eps is not None and not (0.0 < args.eps <= 1.0):
        raise InvalidInputError(f"--eps must be in (0, 1], got {args.eps}")
    if args.clusters is not None and args.clusters < 1:
        raise InvalidInputError(f"--clusters must be at least 1, got {args.clusters}")
    if args.seed < 0:
        raise InvalidInputError(f"--seed must be non-negative, got {args.seed}")
    if not args.example and args.prefer is not None and args.method == "random":
        raise InvalidInputError("--prefer is not used by --method random: it draws a uniform "
                                "random subset")
    if not args.example and args.prefer == "auto" and args.method == "semdedup":
        raise InvalidInputError("--prefer auto does not apply to --method semdedup: it chooses "
                                "from the kept count, which SemDeDup does not fix in advance")
    return keep


# options each method reads; any other option given on the command line is refused
# rather than silently ignored
_USES = {
    "semdedup": {"eps", "clusters"},
    "dbp": {"keep", "eps", "clusters"},
    "ssp": {"keep", "clusters"},
    "random": {"keep"},
}
_WHY_NOT = {
    ("semdedup", "keep"): "it removes every near-duplicate and keeps the rest, so the "
                          "fraction kept follows from --eps (or use --method dbp --eps E "
                          "--keep F to deduplicate, then prune to a fraction)",
    ("ssp", "eps"): "use --method dbp --eps E to remove near-duplicates before pruning",
    ("random", "eps"): "it draws a uniform random subset",
    ("random", "clusters"): "it draws a uniform random subset",
}


def _check_method_options(args: argparse.Namespace) -> None:
    from .._errors import InvalidInputError

    for opt in ("keep", "eps", "clusters"):
        if getattr(args, opt) is not None and opt not in _USES[args.method]:
            why = _WHY_NOT.get((args.method, opt), "")
            raise InvalidInputError(f"--{opt} is not used by --method {args.method}"
                                    + (f": {why}" if why else ""))


def _plan(args: argparse.Namespace) -> str:
    """Check every option and output path before any work; return the output kind."""
    from .._errors import InvalidInputError
    from ._io import OutputSpec, check_outputs, output_kind

    _check_method_options(args)
    kind = output_kind(args.output)
    if args.id_column is not None and kind == "npy":
        raise InvalidInputError(f"--id-column writes ids, which a .npy of indices can not "
                                f"hold: name the output .txt or .parquet, not "
                                f"{os.path.basename(args.output)}")
    if kind == "parquet" and args.id_column == "index":
        raise InvalidInputError("--id-column 'index' would clash with the output's column "
                                "'index' (the kept row indices); write a .txt of ids instead")
    outs = [OutputSpec(args.output, "-o")]
    if args.report is not None:
        outs.append(OutputSpec(args.report, "--report"))
    check_outputs(outs, args.shards, force=args.force)
    if args.report is not None and os.path.splitext(args.report)[1].lower() != ".json":
        raise InvalidInputError(f"--report {args.report}: the report is JSON; give it a "
                                ".json name")
    return kind


def run(args: argparse.Namespace) -> int:
    from .._errors import InvalidInputError
    from ._io import Outputs, read_embeddings, write_parquet

    keep = _validate(args)
    if args.example:
        return example.run(args)
    if args.plot is not None:
        return _fail("--plot draws the --example sweep; pass --example")
    if not args.input:
        return _fail("INPUT is required (or pass --example)")
    if args.output is None:
        return _fail("-o OUT is required")
    if args.ray is None:
        for opt in ("resume", "work_dir"):
            if getattr(args, opt):
                return _fail(f"--{opt.replace('_', '-')} applies to --ray runs only")
        if len(args.input) > 1:
            return _fail(f"got {len(args.input)} inputs; one process prunes one file: pass "
                         "--ray to prune several shards (--ray local runs on this machine)")
        if os.path.isdir(args.input[0]) or any(c in args.input[0] for c in "*?["):
            if not os.path.exists(args.input[0]) or os.path.isdir(args.input[0]):
                return _fail(f"{args.input[0]} names several shards; pass --ray to prune "
                             "them (--ray local runs on this machine)")
        args.input = args.input[0]
        args.shards = [args.input]
        src = None
    else:
        if not _is_ray_value(args.ray):
            return _fail(f"--ray {args.ray!r}: expected auto, local, local:N, HOST:PORT or "
                         "ray://ADDRESS")
        if args.method == "random":
            return _fail("--method random draws a uniform subset in one process; drop --ray")
        from ..distributed import open_source

        # every shard checked (exists, header, width, dtype) before any work
        src = open_source(args.input, column=args.column, id_column=args.id_column)
        args.shards = [s.path for s in src.shards]
        if args.clusters is not None and args.clusters > src.n:
            raise InvalidInputError(
                f"--clusters {args.clusters} is more than the number of points ({src.n})")
    kind = _plan(args)
    t0 = time.perf_counter()
    show = bool(getattr(sys.stderr, "isatty", lambda: False)())
    if args.ray is not None:
        work_dir = args.work_dir or f"{args.output}.work"
        r = _prune_ray(args, keep, work_dir, show)
        _publish_sharded(r, src, args, kind)
        shutil.rmtree(work_dir, ignore_errors=True)
        _summary(args, r.n_kept, r.n_input, r.n_duplicates, t0)
        if r.seconds:
            print("stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in r.seconds.items()))
        return 0
    emb = read_embeddings(args.input, column=args.column, id_column=args.id_column)
    for note in emb.notes:
        print(f"thrifty prune: note: {note}", file=sys.stderr)
    x, ids = emb.x, emb.ids
    if args.clusters is not None and args.clusters > x.shape[0]:
        raise InvalidInputError(
            f"--clusters {args.clusters} is more than the number of points ({x.shape[0]})")
    r = _prune(x, args, keep, progress=show)
    n = x.shape[0]
    idx = r.indices
    with Outputs(force=args.force) as outs:
        if kind == "parquet":
            outs.stage(args.output, lambda f: write_parquet(f, idx, ids, args.id_column))
        elif ids is not None:
            outs.stage(args.output, lambda f: f.write("".join(f"{ids[i]}\n" for i in idx).encode()))
        elif kind == "txt":
            outs.stage(args.output, lambda f: f.write("".join(f"{i}\n" for i in idx.tolist()).encode()))
        else:
            outs.stage(args.output, lambda f: np.save(f, idx))
        if args.report:
            extra = {"input": os.path.abspath(args.input)}
            outs.stage(args.report, lambda f: r.write_report(f, extra=extra))
        outs.publish()
    _summary(args, idx.size, n, int((r.duplicate_of >= 0).sum()), t0)
    return 0


def _summary(args: argparse.Namespace, kept: int, n: int, dups: int, t0: float) -> None:
    print(f"{args.method}: kept {kept} of {n} ({kept / n:.1%}); removed "
          f"{n - kept} ({dups} as near-duplicates) in {time.perf_counter() - t0:.1f} s "
          f"-> {args.output}" + (f" (report: {args.report})" if args.report else ""))


def _publish_sharded(r: Any, src: Any, args: argparse.Namespace, kind: str) -> None:
    """Write OUT and the report of a sharded result, byte for byte what the
    single-process path writes, reading one input shard's results at a time."""
    from ._io import Outputs, write_npy_chunks, write_parquet_chunks

    def kept() -> Any:
        """``(kept global indices, their ids or None)`` per input shard."""
        for sh, idx in zip(r.shards, r.iter_kept()):
            if args.id_column is None:
                yield idx, None
                continue
            ids = src.read_ids(sh["start"], sh["start"] + sh["rows"])
            yield idx, [ids[i] for i in (idx - sh["start"]).tolist()]

    def text(f: Any) -> None:
        for idx, ids in kept():
            vals = idx.tolist() if ids is None else ids
            f.write("".join(f"{v}\n" for v in vals).encode())

    with Outputs(force=args.force) as outs:
        if kind == "parquet":
            outs.stage(args.output, lambda f: write_parquet_chunks(f, kept, args.id_column))
        elif kind == "npy":
            outs.stage(args.output, lambda f: write_npy_chunks(f, r.n_kept, r.iter_kept()))
        else:
            outs.stage(args.output, text)
        if args.report:
            extra = {"input": [os.path.abspath(p) for p in args.shards]}
            outs.stage(args.report, lambda f: r.write_report(f, extra=extra))
        outs.publish()
