"""Sharded inputs: `.npy` / parquet shards (or a Ray Dataset written to `.npy` shards),
numbered globally in shard order, read by logical partitions of whole 4096-row blocks.

Nothing here imports Ray; a task receives a :class:`Source` (paths and row counts, no
data) and a global row range, and reads only those rows (memory-mapped for `.npy`).
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import FormatError, InvalidInputError, ThriftyIOError
from ._executor import fault_point

__all__ = ["Shard", "Source", "open_source", "partitions", "BLOCK_ROWS"]

#: Logical partitions are whole multiples of this many rows (the core's fixed chunk for
#: order-dependent sums), so per-partition partial results combine exactly.
BLOCK_ROWS = 4096

_DTYPES = {"float32": np.float32, "float16": np.float16}

#: rows of a ``.npy`` shard mapped at a time while gathering a sample of its rows
GATHER_WINDOW_ROWS = 65536


class ShardNotFoundError(ThriftyIOError, FileNotFoundError):
    """A shard named by the input does not exist (a :class:`thrifty.ThriftyIOError` and a
    ``FileNotFoundError``, so the CLI reports it as bad input)."""


@dataclass(frozen=True)
class Shard:
    """One input file: ``rows`` rows starting at global row ``start``."""

    path: str
    kind: str  # "npy" or "parquet"
    start: int
    rows: int


@dataclass(frozen=True)
class Source:
    """Shards in global row order, with their common width and dtype."""

    shards: tuple[Shard, ...]
    n: int
    d: int
    dtype: str
    column: str | None = None
    id_column: str | None = None

    def fingerprint(self) -> str:
        """Identifies the input (paths, sizes, modification times) for ``resume``."""
        h = hashlib.sha256()
        for s in self.shards:
            st = os.stat(s.path)
            h.update(f"{s.path}|{s.rows}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        h.update(f"{self.column}|{self.id_column}|{self.d}|{self.dtype}".encode())
        return h.hexdigest()[:16]

    def shard_of(self, row: int) -> tuple[Shard, int]:
        starts = [s.start for s in self.shards]
        i = int(np.searchsorted(starts, row, side="right")) - 1
        return self.shards[i], row - self.shards[i].start

    def read(self, start: int, stop: int, *, check_finite: bool = True) -> np.ndarray:
        """Rows ``start:stop`` as a C-contiguous float32 array (a fresh, aligned copy)."""
        parts = []
        for s in self.shards:
            a, b = max(start, s.start), min(stop, s.start + s.rows)
            if a >= b:
                continue
            x = _read_shard(s, a - s.start, b - s.start, self.column)
            if check_finite:
                _check_finite(x, s, a - s.start)
            parts.append(x.astype(np.float32))
        if not parts:
            return np.zeros((0, self.d), np.float32)
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return np.ascontiguousarray(out, dtype=np.float32)

    def iter_blocks(self, start: int, stop: int, block_rows: int
                    ) -> Iterator[tuple[int, np.ndarray]]:
        """Rows ``start:stop`` as ``(first global row, rows)`` blocks of at most
        ``block_rows`` rows in the input dtype, checked finite, in row order.

        Each block is a fresh array: a ``.npy`` shard's memory map is released after
        every block and a parquet shard is read one batch at a time, so a pass over a
        partition holds one block in memory, never the partition (its pages would count
        in the worker's resident memory)."""
        for s in self.shards:
            a, b = max(start, s.start), min(stop, s.start + s.rows)
            if a >= b:
                continue
            blocks = (_npy_blocks(s, a - s.start, b - s.start, block_rows) if s.kind == "npy"
                      else _parquet_blocks(s, a - s.start, b - s.start, self.column,
                                           block_rows))
            for r, x in blocks:
                _check_finite(x, s, r)
                yield s.start + r, x

    def read_raw(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` in the input dtype (what the shuffle stores)."""
        parts = []
        for s in self.shards:
            a, b = max(start, s.start), min(stop, s.start + s.rows)
            if a < b:
                parts.append(np.asarray(_read_shard(s, a - s.start, b - s.start, self.column)))
        return np.ascontiguousarray(np.concatenate(parts)) if parts else np.zeros((0, self.d))

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """The float32 rows at sorted global indices ``rows`` (each shard read once)."""
        out = np.empty((rows.size, self.d), np.float32)
        for s in self.shards:
            lo, hi = np.searchsorted(rows, [s.start, s.start + s.rows])
            if lo == hi:
                continue
            local = rows[lo:hi] - s.start
            # one window of rows at a time: a .npy map (and the pages the sample touched)
            # is dropped after each window, parquet is read batch by batch, so the
            # task never holds the partition's rows
            x = np.empty((local.size, self.d), _DTYPES[self.dtype])
            if s.kind == "npy":
                cuts = np.searchsorted(local, np.arange(0, s.rows, GATHER_WINDOW_ROWS))
                for a, b in zip(cuts, [*cuts[1:], local.size]):
                    if a < b:
                        m = _npy_map(s)
                        x[a:b] = m[local[a:b]]
                        del m
            else:
                for r, blk in _parquet_blocks(s, int(local[0]), int(local[-1]) + 1,
                                              self.column, GATHER_WINDOW_ROWS):
                    a, b = np.searchsorted(local, [r, r + blk.shape[0]])
                    x[a:b] = blk[local[a:b] - r]
            ok = np.isfinite(x).all(axis=1)
            if not ok.all():
                r = int(local[np.flatnonzero(~ok)[0]])
                raise InvalidInputError(f"{s.path}: row {r} contains NaN or infinity")
            out[lo:hi] = x
        return out

    def read_ids(self, start: int, stop: int) -> list[Any]:
        """Values of ``id_column`` for rows ``start:stop``."""
        out: list[Any] = []
        for s in self.shards:
            a, b = max(start, s.start), min(stop, s.start + s.rows)
            if a < b:
                t = _parquet_table(s, a - s.start, b - s.start, self.id_column)
                out.extend(t.column(0).to_pylist())
        return out


def _check_finite(x: np.ndarray, s: Shard, offset: int) -> None:
    ok = np.isfinite(x).all(axis=1)
    if not ok.all():
        r = offset + int(np.flatnonzero(~ok)[0])
        raise InvalidInputError(f"{s.path}: row {r} contains NaN or infinity")


def _npy_map(s: Shard) -> np.ndarray:
    try:
        return np.load(s.path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise ShardNotFoundError(f"{s.path}: shard not found (removed while running?)") from None
    except (ValueError, OSError, EOFError) as e:
        raise FormatError(f"{s.path}: not a readable .npy file: {e}") from None


def _parquet_table(s: Shard, a: int, b: int, column: str | None) -> Any:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    try:
        pf = pq.ParquetFile(s.path)
        out, base = [], 0
        for g in range(pf.num_row_groups):
            m = pf.metadata.row_group(g).num_rows
            if base < b and base + m > a:
                t = pf.read_row_group(g, columns=[column])
                out.append(t.slice(max(a - base, 0), min(b, base + m) - max(a, base)))
            base += m
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise FormatError(f"{s.path}: not a readable parquet file: {e}") from None
    import pyarrow as pa  # type: ignore[import-untyped]

    return pa.concat_tables(out)


def _npy_blocks(s: Shard, a: int, b: int, block_rows: int
                ) -> Iterator[tuple[int, np.ndarray]]:
    """Rows ``a:b`` of a ``.npy`` shard in blocks, each a copy (the map is dropped)."""
    for r in range(a, b, block_rows):
        m = _npy_map(s)
        x = np.array(m[r:min(r + block_rows, b)])
        del m
        yield r, x


def _parquet_blocks(s: Shard, a: int, b: int, column: str | None, block_rows: int
                    ) -> Iterator[tuple[int, np.ndarray]]:
    """Rows ``a:b`` of a parquet shard in blocks, read batch by batch from the row
    groups that hold them."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    try:
        pf = pq.ParquetFile(s.path)
        groups, base, first = [], 0, None
        for g in range(pf.num_row_groups):
            m = pf.metadata.row_group(g).num_rows
            if base < b and base + m > a:
                groups.append(g)
                first = base if first is None else first
            base += m
        batches = pf.iter_batches(batch_size=block_rows, row_groups=groups, columns=[column])
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise FormatError(f"{s.path}: not a readable parquet file: {e}") from None
    if first is None:
        return
    at = first
    while at < b:
        try:
            batch = next(batches)
        except StopIteration:
            raise FormatError(f"{s.path}: fewer rows than its metadata promises") from None
        except Exception as e:
            raise FormatError(f"{s.path}: not a readable parquet file: {e}") from None
        lo, hi = max(a, at), min(b, at + batch.num_rows)
        if lo < hi:
            yield lo, _column_matrix(batch.slice(lo - at, hi - lo).column(0), s, column)
        at += batch.num_rows


def _read_shard(s: Shard, a: int, b: int, column: str | None) -> np.ndarray:
    if s.kind == "npy":
        return np.asarray(_npy_map(s)[a:b])
    t = _parquet_table(s, a, b, column)
    return _column_matrix(t.column(0), s, column)


def _column_matrix(column_data: Any, s: Shard, column: str | None) -> np.ndarray:
    """An arrow list column (one embedding per row) as an ``(n, d)`` array."""
    col = (column_data.combine_chunks() if hasattr(column_data, "combine_chunks")
           else column_data)
    try:
        flat = col.flatten().to_numpy(zero_copy_only=False)
        n = len(col)
        if n == 0 or flat.size % n:
            raise ValueError("rows of different lengths")
        return flat.reshape(n, flat.size // n)
    except Exception as e:
        raise FormatError(f"{s.path}: column {column!r} is not a list of equal-length "
                          f"float vectors: {e}") from None


def _expand(item: str) -> list[str]:
    if os.path.isdir(item):
        found = sorted(glob.glob(os.path.join(item, "*.npy"))) or sorted(
            glob.glob(os.path.join(item, "*.parquet")))
        if not found:
            raise InvalidInputError(f"{item}: directory holds no .npy or .parquet shards")
        return found
    if any(c in item for c in "*?["):
        found = sorted(glob.glob(item))
        if not found:
            raise InvalidInputError(f"{item}: pattern matches no file")
        return found
    return [item]


def _npy_header(path: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(f)
            offset = f.tell()
    except FileNotFoundError:
        raise ShardNotFoundError(f"{path}: shard not found") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path}: is a directory, not a shard") from None
    except (ValueError, OSError, EOFError) as e:
        raise FormatError(f"{path}: not a readable .npy file (truncated or corrupt?): {e}") from None
    need = offset + int(np.prod(shape)) * dtype.itemsize
    if os.path.getsize(path) < need:
        raise FormatError(f"{path}: truncated .npy file ({os.path.getsize(path)} bytes, the "
                          f"header promises {need})")
    return shape, dtype, fortran


def _parquet_shape(path: str, column: str, id_column: str | None) -> tuple[int, int, str]:
    try:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        raise InvalidInputError("parquet input needs pyarrow: pip install 'thrifty[parquet]'") from None
    if not os.path.exists(path):
        raise ShardNotFoundError(f"{path}: shard not found")
    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
    except Exception as e:
        raise FormatError(f"{path}: not a readable parquet file: {e}") from None
    for c in (column, id_column):
        if c is not None and c not in names:
            raise InvalidInputError(f"{path}: no column {c!r} (columns: {', '.join(names)})")
    typ = pf.schema_arrow.field(column).type
    if not (pa.types.is_list(typ) or pa.types.is_fixed_size_list(typ)
            or pa.types.is_large_list(typ)):
        raise FormatError(f"{path}: column {column!r} has type {typ}; expected a list of floats")
    vt = typ.value_type
    dtype = "float32" if pa.types.is_float32(vt) else "float16" if pa.types.is_float16(vt) else None
    if dtype is None:
        raise FormatError(f"{path}: column {column!r} holds {vt}; expected float32 or float16")
    n = pf.metadata.num_rows
    if n == 0:
        return 0, 0, dtype
    if pa.types.is_fixed_size_list(typ):
        d = typ.list_size
    else:
        d = len(_parquet_table(Shard(path, "parquet", 0, n), 0, 1, column).column(0)[0])
    return n, d, dtype


def open_source(inputs: Any, *, column: str | None = None, id_column: str | None = None,
                work_dir: str | None = None, resume: bool = False) -> Source:
    """Describe ``inputs`` (path, directory, glob, list of those, or a Ray Dataset).

    Directories and globs expand to their sorted file names; a list keeps its order.
    Every shard is checked here (exists, readable header, 2-D, float32/float16, the same
    width and dtype as the first, not empty); the error names the shard.
    """
    if isinstance(inputs, Source):
        return inputs
    if type(inputs).__name__ in ("Dataset", "MaterializedDataset") and hasattr(inputs, "iter_batches"):
        if work_dir is None:
            raise InvalidInputError("a ray.data.Dataset input needs a work_dir")
        return _from_dataset(inputs, column or "data", work_dir, resume)
    if isinstance(inputs, (str, os.PathLike)):
        items = [os.fspath(inputs)]
    else:
        try:
            items = [os.fspath(p) for p in inputs]
        except TypeError:
            raise InvalidInputError(
                "inputs must be a path, glob, directory, a list of them or a ray.data.Dataset, "
                f"got {type(inputs).__name__}") from None
    if not items:
        raise InvalidInputError("inputs is empty; need at least one shard")
    paths = [p for item in items for p in _expand(item)]
    shards: list[Shard] = []
    first: tuple[int, str, str] | None = None
    start = 0
    for p in paths:
        if p.endswith(".parquet"):
            n, d, dt = _parquet_shape(p, column or "embedding", id_column)
            kind = "parquet"
        elif p.endswith(".npy"):
            if id_column is not None:
                raise InvalidInputError(f"{p}: id_column needs parquet shards")
            shape, dtype, fortran = _npy_header(p)
            if len(shape) != 2:
                raise InvalidInputError(f"{p}: expected a 2-D array (n, d), got shape {shape}")
            if dtype.name not in _DTYPES:
                raise InvalidInputError(f"{p}: dtype {dtype} is not supported; expected float32 "
                                        "or float16")
            if fortran:
                raise InvalidInputError(f"{p}: Fortran-ordered array; save it C-ordered")
            n, d, dt, kind = shape[0], shape[1], dtype.name, "npy"
        else:
            if not os.path.exists(p):
                raise ShardNotFoundError(f"{p}: shard not found")
            raise FormatError(f"{p}: unsupported shard format; expected .npy or .parquet")
        if n == 0 or d == 0:
            raise InvalidInputError(f"{p}: empty shard ({n} rows x {d} features)")
        if first is None:
            first = (d, dt, p)
        elif (d, dt) != first[:2]:
            raise InvalidInputError(f"{p}: shard has {d} features of {dt} but {first[2]} has "
                                    f"{first[0]} of {first[1]}; every shard must match")
        if kind == "parquet" and any(s.kind == "npy" for s in shards) or (
                kind == "npy" and any(s.kind == "parquet" for s in shards)):
            raise InvalidInputError(f"{p}: mixes .npy and parquet shards")
        shards.append(Shard(os.path.abspath(p), kind, start, n))
        start += n
    assert first is not None
    return Source(tuple(shards), start, first[0], first[1],
                  column=(column or "embedding") if shards[0].kind == "parquet" else None,
                  id_column=id_column)


def _from_dataset(ds: Any, column: str, work_dir: str, resume: bool) -> Source:
    """Stream a Ray Dataset (in order) into `.npy` shards under ``work_dir/input``
    (reused with ``resume`` when complete)."""
    import shutil

    import ray.data

    out = os.path.join(work_dir, "input")
    manifest = os.path.join(out, "_manifest")
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
    if not os.path.exists(manifest):
        os.makedirs(out, exist_ok=True)
        ctx = ray.data.DataContext.get_current()
        before = ctx.execution_options.preserve_order
        ctx.execution_options.preserve_order = True
        try:
            for i, batch in enumerate(ds.iter_batches(batch_size=1 << 16, batch_format="numpy")):
                if column not in batch:
                    raise InvalidInputError(f"the Dataset has no column {column!r} (columns: "
                                            f"{', '.join(batch)})")
                x = np.asarray(batch[column])
                if x.dtype == object:
                    x = np.stack(list(x))
                write_npy_atomic(os.path.join(out, f"part-{i:08d}.npy"), x)
        finally:
            ctx.execution_options.preserve_order = before
        with open(manifest, "w") as f:
            f.write("done\n")
    return open_source(out)


def _write_atomic(path: str, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary name beside ``path``, fsync, then rename:
    never half a file, and no temporary left behind on an error."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_npy_atomic(path: str, arr: np.ndarray) -> None:
    """``np.save`` to a temporary name beside ``path``, then rename: never half a file."""
    _write_atomic(path, lambda f: np.save(f, arr))


def write_npz_atomic(path: str, **arrays: np.ndarray) -> None:
    """``np.savez`` to a temporary name beside ``path``, then rename."""
    _write_atomic(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]


def write_dir_atomic(path: str, **arrays: np.ndarray) -> bool:
    """Every array as ``<name>.npy`` (each written with :func:`write_npy_atomic`) in a
    temporary directory beside ``path``, then one rename to ``path``: a reader sees all
    the files or none. When ``path`` already exists (a retried writer whose first try
    got as far as the rename) it is left as it is and False is returned."""
    tmp = f"{path}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        os.makedirs(tmp)
        for name, arr in arrays.items():
            write_npy_atomic(os.path.join(tmp, f"{name}.npy"), arr)
            fault_point("write")
        try:
            os.rename(tmp, path)
        except OSError:
            if not os.path.isdir(path):
                raise
            shutil.rmtree(tmp)
            return False
        return True
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def partitions(n: int, rows: int) -> list[tuple[int, int]]:
    """Global row ranges of ``rows`` rows each (a multiple of :data:`BLOCK_ROWS`)."""
    if rows < BLOCK_ROWS or rows % BLOCK_ROWS:
        raise InvalidInputError(f"partition_rows must be a positive multiple of {BLOCK_ROWS}, "
                                f"got {rows}")
    return [(a, min(a + rows, n)) for a in range(0, n, rows)]
