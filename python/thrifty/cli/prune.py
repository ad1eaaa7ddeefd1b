"""``thrifty prune``: prune a file of embeddings (SemDeDup, DBP, SSP or random).

INPUT is a ``.npy`` file of shape (n, d), float32 or float16, read memory-mapped, or a
``.parquet`` file with a list-of-floats column ``--column`` (needs pyarrow). The output
holds the kept row indices in input order: int64 ``.npy``, or one index per line for a
``.txt`` name; with ``--id-column`` the kept ids, one per line. ``--clusters`` defaults to ``round(sqrt(n))`` (spherical k-means on a
faiss-style subsample of 256 points per centroid, then every point assigned). Outputs
are written atomically (a temporary file, then a rename) and never overwrite an existing
file without ``--force``. ``--example`` runs the pipeline on scikit-learn's bundled digits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np

from . import example

METHODS = ("semdedup", "dbp", "ssp", "random")
PREFER = ("hard", "easy", "random", "auto")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "prune",
        help="prune a .npy file of embeddings (SemDeDup, density-based, SSP, random)",
        description=(
            "Prune a dataset by its embeddings. INPUT: .npy of shape (n, d), float32 or "
            "float16 (memory-mapped). OUT: kept row indices (int64 .npy, or .txt one per "
            "line). Default --clusters: round(sqrt(n))."
        ),
    )
    p.add_argument("input", nargs="?", metavar="INPUT", help=".npy file of embeddings")
    p.add_argument("--method", choices=METHODS, default="dbp", help="pruning method (default dbp)")
    p.add_argument("--keep", type=float, default=None, metavar="F",
                   help="fraction to keep, in (0, 1] (default 0.5; not used by semdedup)")
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
    p.add_argument("--column", default="embedding", metavar="NAME",
                   help="parquet input: the embedding column (default 'embedding')")
    p.add_argument("--id-column", default=None, metavar="NAME",
                   help="parquet input: write these ids (one per line) instead of indices")
    p.add_argument("-o", "--output", metavar="OUT", help="output file (.npy or .txt)")
    p.add_argument("--report", metavar="REPORT.json", help="write a JSON report of every removal")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    example.add_arguments(p)
    p.set_defaults(func=run)


def _fail(msg: str) -> int:
    print(f"thrifty prune: error: {msg}", file=sys.stderr)
    return 2


def _load_parquet(path: str, column: str, id_column: str | None) -> tuple[np.ndarray, Any]:
    from .._errors import FormatError, InvalidInputError

    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidInputError(
            "parquet input needs pyarrow: pip install 'thrifty[parquet]'") from None
    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        for c in (column, id_column):
            if c is not None and c not in names:
                raise InvalidInputError(f"{path}: no column {c!r} (columns: {', '.join(names)})")
        cols = [column] + ([id_column] if id_column else [])
        table = pf.read(columns=cols)
    except InvalidInputError:
        raise
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise FormatError(f"{path}: not a readable parquet file: {e}") from None
    col = table.column(column).combine_chunks()
    try:
        flat = col.flatten().to_numpy(zero_copy_only=False)
        n = len(col)
        if n == 0 or flat.size % n:
            raise ValueError("rows of different lengths")
        x = flat.reshape(n, flat.size // n)
    except Exception as e:
        raise FormatError(f"{path}: column {column!r} is not a list of equal-length "
                          f"float vectors: {e}") from None
    if x.dtype not in (np.float32, np.float16):
        raise FormatError(f"{path}: column {column!r} holds {x.dtype}; expected float32 or float16")
    ids = table.column(id_column).to_pylist() if id_column else None
    return np.ascontiguousarray(x), ids


def _load(path: str) -> np.ndarray:
    from .._errors import FormatError

    if not os.path.exists(path):
        raise FileNotFoundError(f"input file not found: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"input is a directory: {path}")
    if not path.endswith(".npy"):
        raise FormatError(f"{path}: unsupported input format; expected a .npy file")
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except PermissionError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise FormatError(f"{path}: not a readable .npy file (truncated or corrupt?): {e}") from None
    if x.dtype not in (np.float32, np.float16):
        raise FormatError(f"{path}: dtype {x.dtype} is not supported; expected float32 or float16")
    if x.ndim != 2:
        raise FormatError(f"{path}: expected a 2-D array (n, d), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise FormatError(f"{path}: empty array of shape {x.shape}")
    return x


def _check_rows(x: np.ndarray, path: str) -> None:
    from .._errors import InvalidInputError

    step = max(1, (64 << 20) // (x.shape[1] * x.itemsize))
    for s in range(0, x.shape[0], step):
        ok = np.isfinite(x[s:s + step]).all(axis=1)
        if not ok.all():
            row = s + int(np.flatnonzero(~ok)[0])
            raise InvalidInputError(f"{path}: row {row} contains NaN or infinity")


def _write_atomic(path: str, write: Any) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".thrifty-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_out(path: str | None, force: bool) -> None:
    if path is None:
        return
    if os.path.isdir(path):
        raise IsADirectoryError(f"output is a directory: {path}")
    if os.path.exists(path) and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"output directory does not exist: {parent}")


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


def run(args: argparse.Namespace) -> int:
    from .._errors import InvalidInputError

    keep = _validate(args)
    if args.example:
        return example.run(args)
    if args.plot is not None:
        return _fail("--plot draws the --example sweep; pass --example")
    if args.input is None:
        return _fail("INPUT is required (or pass --example)")
    if args.output is None:
        return _fail("-o OUT is required")
    _check_out(args.output, args.force)
    _check_out(args.report, args.force)
    ids = None
    if args.input.endswith(".parquet") and os.path.isfile(args.input):
        x, ids = _load_parquet(args.input, args.column, args.id_column)
    else:
        x = _load(args.input)
    _check_rows(x, args.input)
    if args.clusters is not None and args.clusters > x.shape[0]:
        raise InvalidInputError(
            f"--clusters {args.clusters} is more than the number of points ({x.shape[0]})")
    t0 = time.perf_counter()
    show = bool(getattr(sys.stderr, "isatty", lambda: False)())
    r = _prune(x, args, keep, progress=show)
    idx = r.indices
    if ids is not None:
        _write_atomic(args.output, lambda f: f.write("".join(f"{ids[i]}\n" for i in idx).encode()))
    elif args.output.endswith(".txt"):
        _write_atomic(args.output, lambda f: f.write("".join(f"{i}\n" for i in idx).encode()))
    else:
        _write_atomic(args.output, lambda f: np.save(f, idx))
    if args.report:
        rep = r.report()
        rep["input"] = os.path.abspath(args.input)
        _write_atomic(args.report, lambda f: f.write(json.dumps(rep, indent=1).encode()))
    n = x.shape[0]
    dups = int((r.duplicate_of >= 0).sum())
    print(f"{args.method}: kept {idx.size} of {n} ({idx.size / n:.1%}); removed "
          f"{n - idx.size} ({dups} as near-duplicates) in {time.perf_counter() - t0:.1f} s "
          f"-> {args.output}")
    return 0
