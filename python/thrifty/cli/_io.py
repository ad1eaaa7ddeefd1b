"""File handling for the CLI: reading embeddings, checking output paths, publishing.

Readers turn every malformed file into :class:`thrifty.FormatError` (one line, naming
the file and, where it helps, the first bad row) and never leak numpy or pyarrow
internals. Outputs are written to temporary files beside their final names and
published together at the end (:class:`Outputs`): a no-replace hard link (or an
``os.replace`` with ``--force``), so a run never silently replaces a file that appeared
while it worked, and an error or Ctrl-C before the end leaves neither output behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from .._errors import FormatError, InvalidInputError
from .._npy import open_npy

__all__ = ["Embeddings", "read_embeddings", "OutputSpec", "check_outputs", "Outputs",
           "output_kind", "write_parquet", "write_parquet_chunks", "write_npy_chunks",
           "TEMP_PREFIX"]

#: Temporary outputs are named ``.thrifty-<random>.tmp`` in the output's directory.
TEMP_PREFIX = ".thrifty-"
#: Rows converted (or checked for NaN) per step: bounds the extra memory to ~64 MiB.
_CHUNK_BYTES = 64 << 20
_FLOAT_DTYPES = ("float16", "float32", "float64")


@dataclass
class Embeddings:
    """What :func:`read_embeddings` returns."""

    x: np.ndarray
    """(n, d) float32 or float16, C-contiguous or a read-only memory map."""
    ids: list[Any] | None = None
    notes: list[str] = field(default_factory=list)
    """Things the user should know (e.g. a dtype conversion), one line each."""


# ----------------------------------------------------------------------------- inputs

def _to_working(src: np.ndarray, path: str, row0: int, out: np.ndarray) -> None:
    """Copy ``src`` (rows ``row0...`` of the input) into ``out`` (float32), checking that
    every value is finite before and after the conversion."""
    ok = np.isfinite(src).all(axis=1)
    if not ok.all():
        raise InvalidInputError(f"{path}: row {row0 + int(np.flatnonzero(~ok)[0])} "
                                "contains NaN or infinity")
    with np.errstate(over="ignore"):
        out[...] = src
    ok = np.isfinite(out).all(axis=1)
    if not ok.all():
        raise InvalidInputError(f"{path}: row {row0 + int(np.flatnonzero(~ok)[0])} holds a "
                                "value beyond the float32 range (|x| > 3.4e38)")


def _check_finite(x: np.ndarray, path: str) -> None:
    step = max(1, _CHUNK_BYTES // max(1, x.shape[1] * x.itemsize))
    for s in range(0, x.shape[0], step):
        ok = np.isfinite(x[s:s + step]).all(axis=1)
        if not ok.all():
            row = s + int(np.flatnonzero(~ok)[0])
            raise InvalidInputError(f"{path}: row {row} contains NaN or infinity")


def _read_npy(path: str) -> Embeddings:
    x, h = open_npy(path)
    if h.dtype.kind != "f" or h.dtype.name not in _FLOAT_DTYPES:
        raise FormatError(f"{path}: dtype {h.dtype.name} is not supported; expected float16, "
                          "float32 or float64 embeddings (convert with x.astype(np.float32))")
    if x.ndim != 2:
        raise FormatError(f"{path}: expected a 2-D array of shape (n_samples, n_features), one "
                          f"embedding per row; got a {x.ndim}-D array of shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise FormatError(f"{path}: the array is empty (shape {x.shape})")
    notes = []
    if h.dtype.name == "float64":
        notes.append(f"{path} holds float64; converting it to float32 (the working dtype)")
    if h.dtype.name == "float64" or not h.dtype.isnative or h.fortran_order:
        # one deliberate copy, in chunks, into native C-ordered float32
        out = np.empty(x.shape, np.float32)
        step = max(1, _CHUNK_BYTES // (x.shape[1] * 8))
        for s in range(0, x.shape[0], step):
            _to_working(x[s:s + step], path, s, out[s:s + step])
        return Embeddings(out, notes=notes)
    _check_finite(x, path)
    return Embeddings(x, notes=notes)


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _read_parquet(path: str, column: str, id_column: str | None, *,
                  source: BinaryIO | None = None) -> Embeddings:
    """Read the parquet file ``path`` (or the bytes of ``source``, named ``path``)."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidInputError("parquet input needs pyarrow: pip install pyarrow "
                                "(or the 'parquet' extra of thrifty)") from None

    def unreadable(e: BaseException) -> FormatError:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if len(msg) > 160:
            msg = msg[:157] + "..."
        return FormatError(f"{path}: not a readable parquet file ({msg})")

    try:
        pf = pq.ParquetFile(path if source is None else source)
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError, ValueError, EOFError) as e:
        raise unreadable(e) from None
    names = schema.names
    for c in (column, id_column):
        if c is not None and c not in names:
            raise InvalidInputError(f"{path}: no column {c!r} (columns: {', '.join(names) or 'none'})")
    if names.count(column) > 1 or (id_column is not None and names.count(id_column) > 1):
        raise FormatError(f"{path}: more than one column is named {column!r}")
    t = schema.field(column).type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise FormatError(f"{path}: column {column!r} holds {t}, not one list of floats per row")
    vt = t.value_type
    if not pa.types.is_floating(vt):
        raise FormatError(f"{path}: column {column!r} holds lists of {vt}; expected "
                          "float16, float32 or float64 values")
    if id_column is not None:
        it = schema.field(id_column).type
        if not (pa.types.is_string(it) or pa.types.is_large_string(it) or pa.types.is_integer(it)):
            raise FormatError(f"{path}: id column {id_column!r} holds {it}; expected strings or "
                              "integers")
    try:
        table = pf.read(columns=[column] + ([id_column] if id_column else []))
        for c in table.columns:  # offsets in range, valid UTF-8...
            for chunk in c.chunks:
                chunk.validate(full=True)
        col = table.column(column)
    except (pa.ArrowException, OSError, ValueError, EOFError) as e:
        raise unreadable(e) from None
    n = len(col)
    if n == 0:
        raise FormatError(f"{path}: column {column!r} has no rows")
    d: int | None = None
    row0 = 0
    chunks = []
    for chunk in col.chunks:
        if len(chunk) == 0:
            continue
        if chunk.null_count:
            bad = row0 + _first(chunk.is_null().to_numpy(zero_copy_only=False))
            raise FormatError(f"{path}: row {bad} of column {column!r} is null")
        lens = pc.list_value_length(chunk).to_numpy(zero_copy_only=False)
        if d is None:
            d = int(lens[0])
            if d == 0:
                raise FormatError(f"{path}: row 0 of column {column!r} is an empty list")
        if (lens != d).any():
            i = _first(lens != d)
            k = int(lens[i])
            raise FormatError(f"{path}: row {row0 + i} of column {column!r} has {k} "
                              f"value{'' if k == 1 else 's'} but row 0 has {d}; every row must "
                              "have the same length")
        values = chunk.flatten()
        if values.null_count:
            i = _first(values.is_null().to_numpy(zero_copy_only=False))
            raise FormatError(f"{path}: row {row0 + i // d} of column {column!r} holds a null value")
        chunks.append((row0, values.to_numpy(zero_copy_only=False).reshape(len(chunk), d)))
        row0 += len(chunk)
    assert d is not None
    notes = []
    if vt == pa.float64():
        notes.append(f"{path}: column {column!r} holds float64; converting it to float32 "
                     "(the working dtype)")
    x = np.empty((n, d), np.float16 if vt == pa.float16() else np.float32)
    step = max(1, _CHUNK_BYTES // (d * 8))
    for start, v in chunks:
        for s in range(0, v.shape[0], step):
            _to_working(v[s:s + step], path, start + s, x[start + s:start + s + step])
    ids = None
    if id_column is not None:
        idc = table.column(id_column)
        if idc.null_count:
            bad = _first(idc.is_null().to_numpy(zero_copy_only=False))
            raise FormatError(f"{path}: row {bad} of id column {id_column!r} is null")
        ids = idc.to_pylist()
        if pa.types.is_string(idc.type) or pa.types.is_large_string(idc.type):
            for i, v in enumerate(ids):
                if "\n" in v or "\r" in v:
                    raise FormatError(f"{path}: row {i} of id column {id_column!r} contains a "
                                      "line break, which a one-id-per-line output can not hold")
    return Embeddings(x, ids, notes)


def read_embeddings(path: str, *, column: str | None = None,
                    id_column: str | None = None) -> Embeddings:
    """Read an (n, d) matrix of embeddings from a ``.npy`` or ``.parquet`` file.

    Raises :class:`~thrifty.FormatError` for a malformed file, unsupported dtype, ragged
    or null rows, :class:`~thrifty.InvalidInputError` for NaN/inf rows or a missing
    column, and ``OSError`` (``FileNotFoundError``...) when the file can not be read.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"input file not found: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"input is a directory: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".parquet":
        return _read_parquet(path, "embedding" if column is None else column, id_column)
    if ext == ".npy":
        if column is not None or id_column is not None:
            opt = "--column" if column is not None else "--id-column"
            raise InvalidInputError(f"{opt} applies to parquet input only; {path} is a .npy file")
        return _read_npy(path)
    raise FormatError(f"{path}: unsupported input format {ext or '(no extension)'}; "
                      "expected .npy or .parquet")


# ----------------------------------------------------------------------------- outputs

_OUT_KINDS = {".npy": "npy", ".txt": "txt", ".parquet": "parquet"}


def output_kind(path: str) -> str:
    """``"npy"``, ``"txt"`` or ``"parquet"`` from the output's extension; anything else is
    refused, and so is ``.parquet`` without pyarrow."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in _OUT_KINDS:
        raise InvalidInputError(
            f"-o {path}: unsupported output format {ext or '(no extension)'}; use .npy "
            "(int64 indices), .txt (one index or id per line) or .parquet")
    if ext == ".parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise InvalidInputError("parquet output needs pyarrow: pip install pyarrow (or the "
                                    "'parquet' extra of thrifty)") from None
    return _OUT_KINDS[ext]


def write_parquet(f: BinaryIO, indices: np.ndarray, ids: list[Any] | None,
                  id_column: str | None) -> None:
    """Write the kept ``indices`` (column ``index``, int64) and, when given, their ids
    (column ``id_column``) as a parquet table to the open file ``f``."""
    kept = (None if ids is None or id_column is None
            else [ids[i] for i in indices.tolist()])
    _write_kept_parquet(f, indices, kept, id_column)


def _write_kept_parquet(f: BinaryIO, indices: np.ndarray, kept_ids: list[Any] | None,
                        id_column: str | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, Any] = {"index": pa.array(indices, pa.int64())}
    if kept_ids is not None and id_column is not None:
        cols[id_column] = pa.array(kept_ids)
    pq.write_table(pa.table(cols), f)


#: pyarrow's default row group size: ``write_table`` cuts a table into groups of this
#: many rows, so writing groups of exactly this size one by one gives the same bytes
PARQUET_ROW_GROUP = 1 << 20


def write_npy_chunks(f: BinaryIO, n: int, chunks: Iterator[np.ndarray]) -> None:
    """Write the int64 ``chunks`` (``n`` values in all) to ``f`` as one ``.npy`` file,
    byte for byte what ``np.save`` writes for their concatenation, holding one chunk."""
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.int64)), "fortran_order": False,
            "shape": (n,)})
    done = 0
    for c in chunks:
        f.write(np.ascontiguousarray(c, dtype=np.int64).data)
        done += c.size
    if done != n:
        raise ValueError(f"write_npy_chunks: got {done} values, the header says {n}")


class _TypeChanged(Exception):
    """The ids of a later row group infer another arrow type than the first ones."""


def write_parquet_chunks(f: BinaryIO, chunks: Callable[[], Iterator[tuple[np.ndarray,
                                                                            list[Any] | None]]],
                         id_column: str | None) -> None:
    """:func:`write_parquet` of the concatenated ``(indices, ids)`` chunks, byte for byte,
    holding one row group (:data:`PARQUET_ROW_GROUP` rows) at a time.

    ``chunks`` is called to iterate them. The ids' arrow type is inferred per row group
    as ``pa.array`` infers it for the whole list; a group of only None waits (as its
    indices) for the first typed group. Should two groups infer different types (e.g.
    decimals of different precision), the file is rewritten from the start in one
    piece, exactly as :func:`write_parquet` would write it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        _parquet_groups(f, chunks(), id_column, pa, pq)
    except _TypeChanged as e:
        e.args[0].close()  # finished now, so that it never writes again
        f.seek(0)
        f.truncate()
        idx, ids = [], []
        for i, d in chunks():
            idx.append(i)
            if d is not None:
                ids.extend(d)
        _write_kept_parquet(f, np.concatenate(idx) if idx else np.zeros(0, np.int64),
                            ids if id_column is not None else None, id_column)


def _parquet_groups(f: BinaryIO, chunks: Iterator[tuple[np.ndarray, list[Any] | None]],
                    id_column: str | None, pa: Any, pq: Any) -> None:
    writer: Any = None
    id_type: Any = None
    waiting: list[np.ndarray] = []  # groups whose ids are all None, before any type

    def table(idx: np.ndarray, ids: Any) -> Any:
        cols: dict[str, Any] = {"index": pa.array(idx, pa.int64())}
        if id_column is not None:
            cols[id_column] = ids
        return pa.table(cols)

    def put(idx: np.ndarray, ids: list[Any] | None) -> None:
        nonlocal writer, id_type
        arr = None
        if id_column is not None:
            arr = pa.array(ids)
            if pa.types.is_null(arr.type) and id_type is None:
                waiting.append(idx)
                return
            if id_type is None:
                id_type = arr.type
            elif pa.types.is_null(arr.type):
                arr = pa.nulls(len(arr), id_type)
            elif arr.type != id_type:  # the writer exists since the first typed group
                raise _TypeChanged(writer)
        if writer is None:
            t = table(idx, arr)
            writer = pq.ParquetWriter(f, t.schema)
            for w in waiting:
                writer.write_table(table(w, pa.nulls(w.size, id_type)))
            waiting.clear()
            writer.write_table(t)
        else:
            writer.write_table(table(idx, arr))

    buf_i: list[np.ndarray] = []
    buf_d: list[Any] = []
    have = 0
    for i, d in chunks:
        at = 0
        while at < i.size:
            take = min(PARQUET_ROW_GROUP - have, i.size - at)
            buf_i.append(i[at:at + take])
            if d is not None:
                buf_d.extend(d[at:at + take])
            have += take
            at += take
            if have == PARQUET_ROW_GROUP:
                put(np.concatenate(buf_i), buf_d if id_column is not None else None)
                buf_i, buf_d, have = [], [], 0
    if have or (writer is None and not waiting):
        put(np.concatenate(buf_i) if buf_i else np.zeros(0, np.int64),
            buf_d if id_column is not None else None)
    if writer is None:  # every id None: the type is null
        id_type = pa.null()
        writer = pq.ParquetWriter(f, table(waiting[0], pa.nulls(waiting[0].size)).schema)
        for w in waiting:
            writer.write_table(table(w, pa.nulls(w.size)))
    writer.close()


@dataclass
class OutputSpec:
    """One output file: its path and what it is called in messages."""

    path: str
    option: str


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def _same(a: str, b: str) -> bool:
    if _real(a) == _real(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _probe_dir(directory: str) -> None:
    """Create and remove a temporary file in ``directory`` (is it writable?)."""
    tmp = os.path.join(directory, f"{TEMP_PREFIX}{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except PermissionError:
        raise PermissionError(f"can not write to directory {directory}: permission denied") from None
    except OSError as e:
        raise InvalidInputError(f"can not create files in {directory}: {e.strerror}") from None
    os.close(fd)
    os.unlink(tmp)


def check_outputs(outputs: list[OutputSpec], inputs: list[str], *, force: bool) -> None:
    """Everything that can be known about the outputs before the work starts.

    Refuses: an output that is an input or another output (compared after resolving
    symbolic links, ``..`` and hard links), a name too long for the file system, a
    directory, a missing or read-only directory, and an existing name (a dangling
    symbolic link included) unless ``force``.
    """
    for i, o in enumerate(outputs):
        for src in inputs:
            if _same(o.path, src):
                raise InvalidInputError(f"{o.option} {o.path} is the input file; "
                                        "choose another output name")
        for other in outputs[:i]:
            if _same(o.path, other.path):
                raise InvalidInputError(f"{other.option} and {o.option} name the same file "
                                        f"({o.path}); give them different names")
    for o in outputs:
        try:
            st: os.stat_result | None = os.lstat(o.path)
        except FileNotFoundError:
            st = None
        except OSError as e:
            if e.errno == errno.ENAMETOOLONG:
                raise InvalidInputError(f"{o.option} {o.path}: file name too long") from None
            if e.errno == errno.ENOTDIR:
                raise NotADirectoryError(f"{o.option} {o.path}: a parent is not a directory") from None
            raise
        if os.path.isdir(o.path):
            raise IsADirectoryError(f"{o.option} {o.path} is a directory")
        if st is not None and not force:
            what = " (a dangling symbolic link)" if not os.path.exists(o.path) else ""
            raise FileExistsError(f"{o.path} exists{what}; pass --force to overwrite it")
        parent = os.path.dirname(os.path.abspath(o.path))
        if not os.path.isdir(parent):
            raise FileNotFoundError(f"{o.option} {o.path}: directory {parent} does not exist")
        _probe_dir(parent)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems can not sync a directory
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[list[bool]]:
    """Hold Ctrl-C while the block runs; it is raised when the block ends."""
    hit: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield hit
        return
    old = signal.getsignal(signal.SIGINT)
    if old is None or old == signal.SIG_IGN:  # ignored, or installed outside Python
        yield hit
        return
    signal.signal(signal.SIGINT, lambda *_: hit.append(True))
    try:
        yield hit
    finally:
        signal.signal(signal.SIGINT, old)
    if hit:
        raise KeyboardInterrupt


_NO_LINK = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS,
            errno.EXDEV, errno.EACCES}


def _publish_no_replace(tmp: str, final: str) -> None:
    """Give ``tmp`` the name ``final`` unless ``final`` exists (FileExistsError)."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in _NO_LINK:
            raise
        # no hard links here: reserve the name exclusively, then move the file onto it
        fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        os.replace(tmp, final)
        return
    os.unlink(tmp)


class Outputs:
    """Stage output files as temporaries, then publish them all or none.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> with Outputs(force=False) as outs:
    ...     outs.stage(os.path.join(d, "a.txt"), lambda f: f.write(b"1\\n"))
    ...     outs.stage(os.path.join(d, "b.txt"), lambda f: f.write(b"2\\n"))
    ...     outs.publish()
    >>> sorted(os.listdir(d))
    ['a.txt', 'b.txt']
    """

    def __init__(self, *, force: bool) -> None:
        self.force = force
        self._staged: list[tuple[str, str]] = []

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, *exc: object) -> None:
        for tmp, _ in self._staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._staged.clear()

    def stage(self, path: str, write: Callable[[BinaryIO], Any]) -> None:
        """Write ``path``'s content to a temporary file beside it (mode 0644 minus the
        umask) and sync it to disk."""
        directory = os.path.dirname(os.path.abspath(path))
        tmp = os.path.join(directory, f"{TEMP_PREFIX}{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o644)
        self._staged.append((tmp, path))
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # name the output, not the temporary file
            raise OSError(e.errno, f"can not write {path}: {e.strerror or e}") from None

    def publish(self) -> None:
        """Give every staged file its final name, all or none (see the module docs).

        Without ``force``, a final name that appeared since :func:`check_outputs` raises
        ``FileExistsError`` and nothing is published. Ctrl-C is held until the step ends.
        """
        done: list[str] = []
        with _sigint_deferred():
            try:
                for tmp, final in self._staged:
                    if self.force:
                        os.replace(tmp, final)
                    else:
                        try:
                            _publish_no_replace(tmp, final)
                        except FileExistsError:
                            raise FileExistsError(
                                f"{final} was created by another program while this run "
                                "worked; nothing was written (pass --force to overwrite it)"
                            ) from None
                    done.append(final)
            except BaseException:
                if not self.force:
                    for final in done:
                        with contextlib.suppress(OSError):
                            os.unlink(final)
                raise
            finally:
                for d in {os.path.dirname(os.path.abspath(f)) for _, f in self._staged}:
                    _fsync_dir(d)
            self._staged.clear()
