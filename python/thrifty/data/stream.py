"""Streaming loaders: shuffled mini-batches of arrays, ``.npy`` files and token files.

:class:`ArrayLoader` streams mini-batches of a 2-D numpy array or a ``.npy`` file;
:class:`TokenLoader` streams fixed-length windows of a flat binary token file. A Rust
background thread plans and gathers each batch into a fresh buffer (handed to numpy
without a copy) with the GIL released, up to ``prefetch`` batches ahead, so the gather
overlaps with the training step.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import _core, _npy
from .._errors import FormatError, InvalidInputError
from .._validation import check_int
from ._common import MAX_SEED, check_seed

__all__ = ["ArrayLoader", "TokenLoader", "permutation", "read_npy_header"]

_KINDS = {"b": "boolean", "i": "signed integer", "u": "unsigned integer", "f": "floating"}
_READS = ("auto", "mmap", "pread")
# With read="auto", files up to _MAP_BUDGET bytes are memory-mapped (later epochs read
# resident pages without system calls: several times faster for small shuffled rows).
# Larger files are read with positional reads (pread): mapped pages of a shuffled file
# would accumulate in the process's RSS, reads into the batch buffer keep it at the
# batches in flight.
_MAP_BUDGET = 1 << 30


def _check_read(read: Any, nbytes: int) -> bool:
    """Whether to memory-map a file of ``nbytes`` data bytes for ``read``."""
    if read not in _READS:
        raise InvalidInputError(f"read must be one of {_READS}, got {read!r}")
    return read == "mmap" or (read == "auto" and nbytes <= _MAP_BUDGET)


def _check_dtype(dt: np.dtype, what: str) -> np.dtype:
    if dt.kind not in _KINDS or dt.itemsize not in (1, 2, 4, 8) or dt.fields is not None:
        raise InvalidInputError(
            f"{what} has unsupported dtype {dt}; supported are boolean, integer and "
            "floating dtypes of 1, 2, 4 or 8 bytes"
        )
    return dt


def read_npy_header(path: str | os.PathLike[str]) -> tuple[np.dtype, tuple[int, ...], int]:
    """Read the header of a ``.npy`` file without reading its data.

    Returns ``(dtype, shape, data_offset)``. Raises :class:`~thrifty.FormatError` if the
    file is not a ``.npy`` file, its header is malformed (truncated, over-long, nested,
    a negative, boolean or too large dimension, an object dtype), it is Fortran-ordered,
    or it is shorter than its header says.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.zeros((3, 2), dtype=np.float32))
    >>> dtype, shape, offset = read_npy_header(path)
    >>> dtype, shape, offset % 64
    (dtype('float32'), (3, 2), 0)
    """
    path = os.fspath(path)
    try:
        h = _npy.read_header(path)  # strict: every malformed header is a FormatError
    except OSError as e:
        raise InvalidInputError(f"cannot read {path}: {e.strerror or e}") from None
    if h.fortran_order and len(h.shape) > 1:
        raise FormatError(f"{path} is stored in Fortran order; only C order can be streamed")
    return h.dtype, h.shape, h.offset


def _npy_matrix(path: str | os.PathLike[str]) -> tuple[str, np.dtype, tuple[int, int], int]:
    """``(path, dtype, shape, data_offset)`` of a 2-D ``.npy`` file that can be streamed."""
    dtype, shape, offset = read_npy_header(path)
    path = os.fspath(path)
    if len(shape) != 2:
        raise InvalidInputError(
            f"{path} holds a {len(shape)}-D array of shape {shape}; "
            "ArrayLoader needs a 2-D array (n_samples, n_features)"
        )
    _check_dtype(dtype, path)
    if shape[1] == 0:
        raise InvalidInputError(f"{path} has no columns (shape {shape})")
    return path, dtype, (shape[0], shape[1]), offset


def _as_array(source: Any) -> np.ndarray:
    if not isinstance(source, np.ndarray):
        if type(source).__module__.startswith("torch"):
            raise InvalidInputError("source must be a numpy array or a .npy path; "
                                    "use tensor.numpy() for a CPU tensor")
        try:
            source = np.asarray(source)
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"source could not be read as an array: {e}") from None
    if source.ndim != 2:
        raise InvalidInputError(
            f"source must be 2-D (n_samples, n_features), got {source.ndim}-D shape {source.shape}"
        )
    _check_dtype(source.dtype, "source")
    if source.shape[1] == 0:
        raise InvalidInputError(f"source has no columns (shape {source.shape})")
    if not source.flags.c_contiguous:
        source = np.ascontiguousarray(source)  # one documented copy
    return source


def _bytes(a: np.ndarray) -> np.ndarray:
    """A flat uint8 view of a C-contiguous array (no copy)."""
    return a.reshape(-1).view(np.uint8)


def _as_keep(keep: Any, n_rows: int) -> np.ndarray | None:
    if keep is None:
        return None
    k = np.asarray(keep)
    if k.ndim != 1:
        raise InvalidInputError(f"keep must be 1-D (a mask or row indices), got shape {k.shape}")
    if k.dtype == np.bool_:
        if k.shape[0] != n_rows:
            raise InvalidInputError(
                f"keep is a boolean mask of length {k.shape[0]} but the source has {n_rows} rows"
            )
        return np.flatnonzero(k).astype(np.uint64)
    if k.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if k.dtype.kind not in "iu":
        raise InvalidInputError(f"keep must be a boolean mask or integer indices, got dtype {k.dtype}")
    if k.dtype.kind == "i" and (k < 0).any():
        bad = int(k[np.argmax(k < 0)])
        raise InvalidInputError(f"keep index {bad} is negative; indices must be in [0, {n_rows})")
    k = np.ascontiguousarray(k, dtype=np.uint64)
    _core.data_check_keep(k, n_rows)
    return k


def _refuse_torch_worker() -> None:
    """Refuse to run inside a ``torch.utils.data.DataLoader`` worker process.

    A worker holds a copy of the loader: the parent's epoch and position never
    advance, so every epoch would repeat one order and ``state_dict()`` would stay at
    its start. thrifty already batches, shuffles and prefetches in its own thread.
    """
    data = sys.modules.get("torch.utils.data")
    info = data.get_worker_info() if data is not None else None
    if info is not None:
        raise InvalidInputError(
            f"thrifty loaders cannot run in DataLoader worker processes (this is worker "
            f"{info.id} of num_workers={info.num_workers}): each worker would replay the "
            "same epoch and the loader's epoch and state_dict() would never advance. "
            "Use DataLoader(..., batch_size=None, num_workers=0); thrifty prefetches "
            "batches in its own background thread"
        )


class _StreamLoader:
    """Epoch, resume point and iteration bookkeeping shared by the loaders."""

    _n_rows: int
    _keep: np.ndarray | None
    _batch_size: int
    _shuffle: bool
    _seed: int
    _rank: int
    _world_size: int
    _drop_last: bool
    _prefetch: int

    def _init_common(self, batch_size: Any, seed: Any, rank: Any, world_size: Any,
                     prefetch: Any) -> None:
        self._batch_size = check_int(batch_size, "batch_size", low=1)
        self._seed = check_seed(seed)
        self._world_size = check_int(world_size, "world_size", low=1)
        self._rank = check_int(rank, "rank", low=0)
        if self._rank >= self._world_size:
            raise InvalidInputError(
                f"rank must be < world_size, got rank {self._rank} with world_size {self._world_size}"
            )
        self._prefetch = check_int(prefetch, "prefetch", low=1, high=1024)
        self._epoch = 0
        self._position = 0  # batches of the current epoch the live iterator yielded
        self._resume: int | None = None  # where the next iter() starts (load_state_dict)
        self._live: object | None = None  # token of the iterator whose batches count

    def _n_items(self) -> int:
        return self._n_rows if self._keep is None else int(self._keep.shape[0])

    def __len__(self) -> int:
        """Batches per epoch for this rank (the same on every rank)."""
        return _core.data_num_batches(self._n_items(), self._batch_size, self._rank,
                                      self._world_size, self._drop_last)

    @property
    def epoch(self) -> int:
        """The epoch the next ``iter()`` runs."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (its order depends on ``(seed, epoch)``).

        A different epoch starts from its first batch at the next ``iter()``; the
        current epoch keeps a resume point loaded by :meth:`load_state_dict`, so
        ``set_epoch(e)`` after ``load_state_dict`` still resumes.
        """
        epoch = check_seed(epoch, "epoch")
        if epoch != self._epoch:
            self._epoch = epoch
            self._position = 0
            self._resume = None
            self._live = None

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batch", "seed"}``: batches of ``epoch`` yielded so far (not prefetched).

        Counts the batches of the most recent ``iter()``; after
        :meth:`load_state_dict` and before the next ``iter()``, the loaded position.
        """
        batch = self._resume if self._resume is not None else self._position
        return {"epoch": self._epoch, "batch": batch, "seed": self._seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume from :meth:`state_dict`: the next ``iter()`` yields the batches that would have come."""
        if not isinstance(state, dict) or not {"epoch", "batch"} <= set(state):
            raise InvalidInputError("state must be a dict with 'epoch' and 'batch' (from state_dict())")
        if "seed" in state and state["seed"] != self._seed:
            raise InvalidInputError(
                f"state was saved with seed {state['seed']} but this loader uses seed {self._seed}"
            )
        epoch = check_seed(state["epoch"], "state['epoch']")
        batch = check_int(state["batch"], "state['batch']", low=0, high=len(self))
        self._epoch, self._position, self._resume, self._live = epoch, batch, batch, None

    def epoch_indices(self) -> np.ndarray:
        """Row (or window) indices of this rank's current epoch, in yield order."""
        return _core.data_epoch_rows(
            self._n_rows, keep=self._keep, batch_size=self._batch_size, shuffle=self._shuffle,
            seed=self._seed, epoch=self._epoch, rank=self._rank, world_size=self._world_size,
            drop_last=self._drop_last)

    def _stream(self, start: int) -> Any:
        raise NotImplementedError

    def _convert(self, x: np.ndarray, y: np.ndarray | None) -> Any:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        """One epoch from its first batch (or from the loaded resume point).

        As with a ``torch.utils.data.DataLoader``, every ``iter()`` starts the epoch
        anew: peeking with ``next(iter(loader))`` does not consume a batch of the
        next full pass. Only the most recent iterator advances ``state_dict()``.
        """
        _refuse_torch_worker()
        start = self._resume if self._resume is not None else 0
        stream = self._stream(start)
        self._resume = None
        self._position = start
        token = object()
        self._live = token
        return _LoaderIterator(self, stream, token)


class _LoaderIterator:
    """Iterator over one (rest of an) epoch; counts what it yields on its loader."""

    def __init__(self, loader: _StreamLoader, stream: Any, token: object) -> None:
        self._loader = loader
        self._stream = stream
        self._token = token

    def __iter__(self) -> _LoaderIterator:
        return self

    def __len__(self) -> int:
        return len(self._stream) if self._stream is not None else 0

    def __next__(self) -> Any:
        if self._stream is None:
            raise StopIteration
        loader = self._loader
        try:
            x, y = next(self._stream)
        except StopIteration:
            self._stream = None
            if loader._live is self._token:  # the epoch ran to its end: move on
                loader._epoch += 1
                loader._position = 0
                loader._live = None
            raise
        if loader._live is self._token:
            loader._position += 1
        return loader._convert(x, y)

    def close(self) -> None:
        """Stop the background thread now (also happens when the iterator is dropped)."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class ArrayLoader(_StreamLoader):
    """Shuffled mini-batches of a 2-D array or a ``.npy`` file.

    Parameters
    ----------
    source : ndarray of shape (n_samples, n_features) or path to a ``.npy`` file
        Boolean, integer or floating dtype of 1, 2, 4 or 8 bytes. A path is never read
        as a whole (see ``read``). An array (including a ``np.memmap``) is read in
        place; a non-contiguous one is copied once.
    labels : array of shape (n_samples,) or (n_samples, k), optional
        Gathered with the same rows; batches are then ``(X_batch, y_batch)``.
    batch_size : int
        Rows per batch (>= 1).
    shuffle : bool, default=True
        Shuffle with the keyed permutation of ``(seed, epoch)``; otherwise row order.
    seed : int, default=0
    drop_last : bool, default=False
        As ``DistributedSampler(drop_last=...)`` together with
        ``DataLoader(drop_last=...)``: with ``True`` every rank gets
        ``floor(n / world_size)`` rows of the epoch's order (the tail is cut) and
        drops its last incomplete batch; with ``False`` the order is padded by
        wrapping around to ``ceil(n / world_size)`` rows per rank. Either way every
        rank yields the same number of batches.
    rank, world_size : int, default 0 and 1
        Split every epoch over ``world_size`` processes (positions ``rank``,
        ``rank + world_size``, ... of the epoch's order).
    keep : bool mask of shape (n_samples,) or integer indices, optional
        Only these rows (e.g. a ``thrifty.prune`` result). Indices must be unique.
    prefetch : int, default=2
        Batches prepared ahead by the background thread.
    read : {"auto", "mmap", "pread"}, default="auto"
        How a ``.npy`` path is read. ``"mmap"`` memory-maps it (fastest for small
        shuffled rows); ``"pread"`` reads each batch with positional reads (the
        resident memory stays at the batches in flight); ``"auto"`` maps files up to
        1 GiB and reads larger ones. Both check the file's size before every batch
        and raise :class:`~thrifty.FormatError` if it shrank. Only ``"pread"`` is
        immune to a file truncated *while* a batch is copied, which kills a process
        reading a memory map with ``SIGBUS``: use it when other processes may rewrite
        the file in place.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.arange(20, dtype=np.float32).reshape(10, 2)
    >>> y = np.arange(10)
    >>> loader = ArrayLoader(X, labels=y, batch_size=4, seed=1)
    >>> len(loader)
    3
    >>> seen = np.concatenate([yb for _, yb in loader])
    >>> sorted(seen.tolist()) == list(range(10))
    True
    >>> loader.state_dict()["epoch"]   # the completed epoch advanced the loader
    1
    """

    def __init__(self, source: Any, *, labels: Any = None, batch_size: int, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 keep: Any = None, prefetch: int = 2, read: str = "auto") -> None:
        self._init_common(batch_size, seed, rank, world_size, prefetch)
        # rows come from an array in memory, a memory-mapped .npy file (both _x and
        # _file set: the file's size is checked before every batch), or a .npy file
        # read with pread (_x None)
        self._x: np.ndarray | None = None
        self._file: tuple[str, int] | None = None
        if isinstance(source, (str, os.PathLike)):
            path, self._dtype, shape, offset = _npy_matrix(source)
            self._file = (path, offset)
            if _check_read(read, shape[0] * shape[1] * self._dtype.itemsize) and shape[0]:
                self._x = np.memmap(path, dtype=self._dtype, mode="r", offset=offset,
                                    shape=shape)
        else:
            _check_read(read, 0)
            self._x = _as_array(source)
            self._dtype, shape = self._x.dtype, self._x.shape
        self._n_rows, self._width = int(shape[0]), int(shape[1])
        self._shuffle = bool(shuffle)
        self._drop_last = bool(drop_last)
        self._y: np.ndarray | None = None
        if labels is not None:
            y = np.asarray(labels)
            if y.ndim not in (1, 2) or y.shape[0] != self._n_rows:
                raise InvalidInputError(
                    f"labels must have shape ({self._n_rows},) or ({self._n_rows}, k) "
                    f"to match the source, got {y.shape}"
                )
            _check_dtype(y.dtype, "labels")
            if y.ndim == 2 and y.shape[1] == 0:
                raise InvalidInputError("labels has no columns")
            self._y = np.ascontiguousarray(y)
        self._keep = _as_keep(keep, self._n_rows)

    @property
    def n_samples(self) -> int:
        """Rows in the source (before ``keep``)."""
        return self._n_rows

    def _stream(self, start: int) -> Any:
        y = self._y
        path, offset = self._file if self._file is not None else (None, 0)
        return _core.BatchStream(
            None if self._x is None else _bytes(self._x), self._dtype.itemsize, self._width,
            self._width, self._n_rows, path=path, offset=offset,
            labels=None if y is None else _bytes(y),
            label_elem_size=1 if y is None else y.dtype.itemsize,
            label_width=1 if y is None or y.ndim == 1 else y.shape[1],
            keep=self._keep, batch_size=self._batch_size, shuffle=self._shuffle,
            seed=self._seed, epoch=self._epoch, rank=self._rank,
            world_size=self._world_size, drop_last=self._drop_last,
            start_batch=start, prefetch=self._prefetch)

    def _convert(self, x: np.ndarray, y: np.ndarray | None) -> Any:
        xb = x.view(self._dtype)
        if self._y is None:
            return xb
        assert y is not None
        yb = y.view(self._y.dtype)
        if self._y.ndim == 1:
            yb = yb.reshape(-1)
        return xb, yb


class TokenLoader(_StreamLoader):
    """Batches of token windows from a flat binary token file.

    The file is a raw array of ``uint16`` or ``uint32`` tokens (no header), the usual
    pre-tokenised format. Window ``w`` holds tokens ``w * seq_len`` to
    ``w * seq_len + seq_len`` inclusive (``seq_len + 1`` tokens: inputs and shifted
    targets), so consecutive windows share one token and there are
    ``(n_tokens - 1) // seq_len`` of them. An epoch visits every window once in a
    seeded order, split over ranks as :class:`ArrayLoader` does.

    Parameters
    ----------
    path : str or PathLike
        The token file, never read as a whole (see ``read``).
    dtype : {"uint16", "uint32"}, default="uint16"
    seq_len : int
        Tokens per training sequence (>= 1).
    batch_size : int
    seed : int, default=0
    rank, world_size : int, default 0 and 1
    shuffle : bool, default=True
    drop_last : bool, default=True
        ``True``: every rank gets ``floor(n_windows / world_size)`` windows and every
        batch has shape ``(batch_size, seq_len + 1)``. ``False``: the order is padded
        by wrapping to ``ceil(n_windows / world_size)`` windows per rank and the last
        batch may be shorter. Every rank yields the same number of batches.
    prefetch : int, default=2
    read : {"auto", "mmap", "pread"}, default="auto"
        As for :class:`ArrayLoader`: memory-mapped up to 1 GiB with ``"auto"``,
        positional reads beyond; only ``"pread"`` is immune to ``SIGBUS`` when the
        file is truncated while a batch is copied.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "tokens.bin")
    >>> np.arange(101, dtype=np.uint16).tofile(path)
    >>> loader = TokenLoader(path, seq_len=10, batch_size=3)
    >>> len(loader)  # 10 windows, 3 per batch
    3
    >>> batch = next(iter(loader))
    >>> batch.shape, batch.dtype
    ((3, 11), dtype('uint16'))
    >>> bool((batch[:, 1:] - batch[:, :-1] == 1).all())
    True
    """

    def __init__(self, path: str | os.PathLike[str], *, dtype: str = "uint16", seq_len: int,
                 batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, drop_last: bool = True, prefetch: int = 2,
                 read: str = "auto") -> None:
        self._init_common(batch_size, seed, rank, world_size, prefetch)
        if dtype not in ("uint16", "uint32"):
            raise InvalidInputError(f"dtype must be 'uint16' or 'uint32', got {dtype!r}")
        self._dtype = np.dtype(dtype)
        self._seq_len = check_int(seq_len, "seq_len", low=1)
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidInputError(f"path must be a file path, got {type(path).__name__}")
        path = os.fspath(path)
        try:
            size = os.path.getsize(path)
        except OSError as e:
            raise InvalidInputError(f"cannot read {path}: {e}") from None
        if size % self._dtype.itemsize:
            raise FormatError(
                f"{path} has {size} bytes, not a multiple of the {dtype} token size "
                f"({self._dtype.itemsize} bytes); wrong dtype or truncated file?"
            )
        n_tokens = size // self._dtype.itemsize
        if n_tokens < self._seq_len + 1:
            raise InvalidInputError(
                f"{path} holds {n_tokens} tokens; seq_len={self._seq_len} needs at least "
                f"{self._seq_len + 1}"
            )
        self._path = path
        self._tokens = (np.memmap(path, dtype=self._dtype, mode="r")
                        if _check_read(read, size) else None)
        self._n_rows = (n_tokens - 1) // self._seq_len
        self._keep = None
        self._shuffle = bool(shuffle)
        self._drop_last = bool(drop_last)

    @property
    def n_windows(self) -> int:
        """Windows in the file (over all ranks)."""
        return self._n_rows

    def _stream(self, start: int) -> Any:
        return _core.BatchStream(
            None if self._tokens is None else _bytes(self._tokens), self._dtype.itemsize,
            self._seq_len, self._seq_len + 1, self._n_rows,
            path=self._path, keep=None, batch_size=self._batch_size, shuffle=self._shuffle,
            seed=self._seed, epoch=self._epoch, rank=self._rank,
            world_size=self._world_size, drop_last=self._drop_last, start_batch=start,
            prefetch=self._prefetch)

    def _convert(self, x: np.ndarray, y: np.ndarray | None) -> Any:
        return x.view(self._dtype)


def permutation(n: int, *, seed: int = 0, epoch: int = 0, start: int = 0,
                count: int | None = None) -> np.ndarray:
    """Positions ``start .. start + count`` of the keyed permutation of ``0..n``.

    The permutation the loaders shuffle with, computed position by position in O(1)
    memory (so a slice of a permutation of billions costs only the slice).

    Examples
    --------
    >>> p = permutation(10, seed=3)
    >>> sorted(p.tolist()) == list(range(10))
    True
    >>> bool((permutation(10, seed=3, start=4, count=3) == p[4:7]).all())
    True
    """
    n = check_int(n, "n", low=0, high=MAX_SEED)
    start = check_int(start, "start", low=0, high=n)
    count = n - start if count is None else check_int(count, "count", low=0, high=n - start)
    return _core.data_permutation(n, check_seed(seed), check_seed(epoch, "epoch"), start, count)
