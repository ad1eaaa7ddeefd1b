"""Data pipelines: deterministic streaming loaders, temperature sampling, loss filtering.

Loaders
    :class:`ArrayLoader` streams shuffled mini-batches of a 2-D numpy array or a
    memory-mapped ``.npy`` file; :class:`TokenLoader` streams fixed-length windows of a
    flat binary token file. A Rust background thread gathers each batch into a fresh
    buffer (handed to numpy without a copy) with the GIL released, up to ``prefetch``
    batches ahead, so the gather overlaps with the training step.

    Shuffling uses a keyed bijective permutation (a Feistel network with cycle
    walking) of the kept rows: no permutation array is ever allocated, so datasets of
    billions of rows shuffle in constant memory, and the order depends only on
    ``(seed, epoch)`` — never on the thread count or the prefetch depth. Rank ``r`` of
    ``world_size`` takes positions ``r, r + world_size, ...`` of that order: ranks never
    overlap, together they see every kept row exactly once per epoch, and their lengths
    differ by at most one row.

    ``state_dict()`` records the epoch and the number of batches *yielded* (not
    prefetched); ``load_state_dict()`` resumes with exactly the batches that would have
    come next. When an iteration runs to its end the loader moves to the next epoch by
    itself; :meth:`ArrayLoader.set_epoch` with a different epoch starts that epoch
    from its first batch (with the same epoch it keeps a resumed position).

Sampling
    :class:`TemperatureSampler` mixes domains with probabilities ``∝ n_i^(1/T)`` and
    an optional Cooldown of the temperature, and gives the equivalent loss weights
    (up-weighting) for comparison; :class:`LossFilter` skips the backward pass on
    examples whose loss falls below an automatically chosen threshold.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import _core, _npy
from ._errors import FormatError, InvalidInputError
from ._validation import check_float, check_int

__all__ = [
    "ArrayLoader",
    "TokenLoader",
    "TemperatureSampler",
    "LossFilter",
    "loss_filter",
    "permutation",
    "read_npy_header",
]

_KINDS = {"b": "boolean", "i": "signed integer", "u": "unsigned integer", "f": "floating"}
_MAX_SEED = 2**64 - 1
# Files up to _MAP_BUDGET bytes are memory-mapped (later epochs read resident pages
# without system calls). Larger files are read row by row with positional reads
# (pread) from the Rust thread: mapped pages of a shuffled file would accumulate in the
# process's RSS, reads into the batch buffer keep it at the batches in flight.
_MAP_BUDGET = 1 << 30


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


def _open_npy(path: str | os.PathLike[str]) -> np.ndarray:
    dtype, shape, offset = read_npy_header(path)
    if len(shape) != 2:
        raise InvalidInputError(
            f"{os.fspath(path)} holds a {len(shape)}-D array of shape {shape}; "
            "ArrayLoader needs a 2-D array (n_samples, n_features)"
        )
    _check_dtype(dtype, os.fspath(path))
    if 0 in shape:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def _as_source(source: Any) -> np.ndarray:
    if isinstance(source, (str, os.PathLike)):
        return _open_npy(source)
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


def _check_seed(seed: Any) -> int:
    return check_int(seed, "seed", low=0, high=_MAX_SEED)


class _StreamLoader:
    """Shared epoch / resume bookkeeping of the loaders."""

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
        self._seed = _check_seed(seed)
        self._world_size = check_int(world_size, "world_size", low=1)
        self._rank = check_int(rank, "rank", low=0)
        if self._rank >= self._world_size:
            raise InvalidInputError(
                f"rank must be < world_size, got rank {self._rank} with world_size {self._world_size}"
            )
        self._prefetch = check_int(prefetch, "prefetch", low=1, high=1024)
        self._epoch = 0
        self._position = 0  # batches of the current epoch already yielded

    def _n_items(self) -> int:
        return self._n_rows if self._keep is None else int(self._keep.shape[0])

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        return _core.data_num_batches(self._n_items(), self._batch_size, self._rank,
                                      self._world_size, self._drop_last)

    @property
    def epoch(self) -> int:
        """The epoch the next batch belongs to."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (its order depends on ``(seed, epoch)``).

        A different epoch starts from its first batch; the current epoch keeps its
        position, so calling ``set_epoch(e)`` after ``load_state_dict`` resumes.
        """
        epoch = check_int(epoch, "epoch", low=0, high=_MAX_SEED)
        if epoch != self._epoch:
            self._epoch = epoch
            self._position = 0

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batch", "seed"}``: where the stream stands (batches yielded)."""
        return {"epoch": self._epoch, "batch": self._position, "seed": self._seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume from :meth:`state_dict`: the next batches are those that would have come."""
        if not isinstance(state, dict) or not {"epoch", "batch"} <= set(state):
            raise InvalidInputError("state must be a dict with 'epoch' and 'batch' (from state_dict())")
        if "seed" in state and state["seed"] != self._seed:
            raise InvalidInputError(
                f"state was saved with seed {state['seed']} but this loader uses seed {self._seed}"
            )
        epoch = check_int(state["epoch"], "state['epoch']", low=0, high=_MAX_SEED)
        batch = check_int(state["batch"], "state['batch']", low=0, high=len(self))
        self._epoch, self._position = epoch, batch

    def epoch_indices(self) -> np.ndarray:
        """Row (or window) indices of this rank's current epoch, in yield order."""
        return _core.data_epoch_rows(
            self._n_rows, keep=self._keep, batch_size=self._batch_size, shuffle=self._shuffle,
            seed=self._seed, epoch=self._epoch, rank=self._rank, world_size=self._world_size,
            drop_last=self._drop_last)

    def _stream(self) -> Any:
        raise NotImplementedError

    def _convert(self, x: np.ndarray, y: np.ndarray | None) -> Any:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        return _LoaderIterator(self, self._stream())


class _LoaderIterator:
    """Iterator over one (rest of an) epoch; counts what it yields on its loader."""

    def __init__(self, loader: _StreamLoader, stream: Any) -> None:
        self._loader = loader
        self._stream = stream
        self._epoch = loader._epoch

    def __iter__(self) -> _LoaderIterator:
        return self

    def __len__(self) -> int:
        return len(self._stream) if self._stream is not None else 0

    def __next__(self) -> Any:
        if self._stream is None:
            raise StopIteration
        try:
            x, y = next(self._stream)
        except StopIteration:
            self._stream = None
            loader = self._loader
            if loader._epoch == self._epoch:  # the epoch ran to its end: move on
                loader._epoch += 1
                loader._position = 0
            raise
        if self._loader._epoch == self._epoch:
            self._loader._position += 1
        return self._loader._convert(x, y)

    def close(self) -> None:
        """Stop the background thread now (also happens when the iterator is dropped)."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class ArrayLoader(_StreamLoader):
    """Shuffled mini-batches of a 2-D array or a memory-mapped ``.npy`` file.

    Parameters
    ----------
    source : ndarray of shape (n_samples, n_features) or path to a ``.npy`` file
        Boolean, integer or floating dtype of 1, 2, 4 or 8 bytes. A path is never read
        as a whole: up to 1 GiB it is memory-mapped, larger files are read row by row
        with positional reads so that the resident memory stays at the batches in
        flight. A non-contiguous array is copied once.
    labels : array of shape (n_samples,) or (n_samples, k), optional
        Gathered with the same rows; batches are then ``(X_batch, y_batch)``.
    batch_size : int
        Rows per batch (>= 1).
    shuffle : bool, default=True
        Shuffle with the keyed permutation of ``(seed, epoch)``; otherwise row order.
    seed : int, default=0
    drop_last : bool, default=False
        Drop this rank's last incomplete batch.
    rank, world_size : int, default 0 and 1
        Split every epoch over ``world_size`` processes without overlap.
    keep : bool mask of shape (n_samples,) or integer indices, optional
        Only these rows (e.g. a ``thrifty.prune`` result). Indices must be unique.
    prefetch : int, default=2
        Batches prepared ahead by the background thread.

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
                 keep: Any = None, prefetch: int = 2) -> None:
        self._init_common(batch_size, seed, rank, world_size, prefetch)
        self._x = _as_source(source)
        # a large .npy is read with pread instead of through its memory map
        self._file: tuple[str, int] | None = None
        x = self._x
        if isinstance(source, (str, os.PathLike)) and isinstance(x, np.memmap):
            if x.nbytes > _MAP_BUDGET:
                self._file = (os.fspath(source), int(x.offset))
        self._n_rows = int(self._x.shape[0])
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

    def _stream(self) -> Any:
        x = self._x
        y = self._y
        path, offset = self._file if self._file is not None else (None, 0)
        return _core.BatchStream(
            _bytes(x) if path is None else None, x.dtype.itemsize, x.shape[1], x.shape[1],
            self._n_rows, path=path, offset=offset,
            labels=None if y is None else _bytes(y),
            label_elem_size=1 if y is None else y.dtype.itemsize,
            label_width=1 if y is None or y.ndim == 1 else y.shape[1],
            keep=self._keep, batch_size=self._batch_size, shuffle=self._shuffle,
            seed=self._seed, epoch=self._epoch, rank=self._rank,
            world_size=self._world_size, drop_last=self._drop_last,
            start_batch=self._position, prefetch=self._prefetch)

    def _convert(self, x: np.ndarray, y: np.ndarray | None) -> Any:
        xb = x.view(self._x.dtype)
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
    seeded order; incomplete last batches are dropped so every batch has shape
    ``(batch_size, seq_len + 1)``.

    Parameters
    ----------
    path : str or PathLike
        The token file, never read as a whole (memory-mapped up to 1 GiB, read with
        positional reads beyond).
    dtype : {"uint16", "uint32"}, default="uint16"
    seq_len : int
        Tokens per training sequence (>= 1).
    batch_size : int
    seed : int, default=0
    rank, world_size : int, default 0 and 1
    shuffle : bool, default=True
    prefetch : int, default=2

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
                 shuffle: bool = True, prefetch: int = 2) -> None:
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
        self._tokens = np.memmap(path, dtype=self._dtype, mode="r")
        self._file = path if size > _MAP_BUDGET else None
        self._n_rows = (n_tokens - 1) // self._seq_len
        self._keep = None
        self._shuffle = bool(shuffle)
        self._drop_last = True

    @property
    def n_windows(self) -> int:
        """Windows in the file (over all ranks)."""
        return self._n_rows

    def _stream(self) -> Any:
        return _core.BatchStream(
            _bytes(self._tokens) if self._file is None else None, self._dtype.itemsize,
            self._seq_len, self._seq_len + 1, self._n_rows, path=self._file, keep=None,
            batch_size=self._batch_size, shuffle=self._shuffle,
            seed=self._seed, epoch=self._epoch, rank=self._rank,
            world_size=self._world_size, drop_last=True, start_batch=self._position,
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
    n = check_int(n, "n", low=0, high=_MAX_SEED)
    start = check_int(start, "start", low=0, high=n)
    count = n - start if count is None else check_int(count, "count", low=0, high=n - start)
    return _core.data_permutation(n, _check_seed(seed),
                                  check_int(epoch, "epoch", low=0, high=_MAX_SEED), start, count)


def _as_losses(losses: Any) -> np.ndarray:
    if type(losses).__module__.startswith("torch") and hasattr(losses, "detach"):
        losses = losses.detach().cpu().numpy()
    a = np.asarray(losses)
    if a.ndim != 1:
        raise InvalidInputError(f"losses must be 1-D (one loss per example), got shape {a.shape}")
    if a.dtype.kind not in "fiu":
        raise InvalidInputError(f"losses must be numeric, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float64)


class TemperatureSampler:
    """Draw ``(domain, index)`` pairs with domain probabilities ``∝ n_i^(1/T)``.

    ``T = 1`` samples in proportion to domain size; larger ``T`` up-samples small
    domains (``T → ∞`` is uniform over domains). Following "Upsample or Upweight?"
    (Li et al.), temperature sampling converges faster than up-weighting the loss but
    over-fits small domains; their Cooldown starts hot and lowers the temperature
    during training. Here ``cooldown=(T_end, start, end)`` keeps ``temperature`` until
    step ``start``, moves linearly to ``T_end`` at step ``end`` and stays there
    (``start == end`` switches at once).

    Inside a domain, examples come in a keyed random order, each once per pass. Draw
    ``s`` depends only on ``(seed, s)`` and the per-domain counts, so
    :meth:`state_dict` / :meth:`load_state_dict` resume the stream exactly.

    Parameters
    ----------
    sizes : sequence of int
        Examples per domain (at least one positive).
    temperature : float
        Initial temperature (> 0).
    seed : int, default=0
    cooldown : tuple (T_end, start_step, end_step), optional

    Examples
    --------
    >>> s = TemperatureSampler([900, 100], temperature=2.0)
    >>> s.probabilities().round(3).tolist()
    [0.75, 0.25]
    >>> domains, indices = s.sample(5)
    >>> domains.shape, indices.shape
    ((5,), (5,))
    >>> s.loss_weights().round(3).tolist()  # weights for proportional sampling
    [0.833, 2.5]
    """

    def __init__(self, sizes: Sequence[int], *, temperature: float, seed: int = 0,
                 cooldown: tuple[float, int, int] | None = None) -> None:
        arr = np.asarray(sizes)
        if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
            raise InvalidInputError(f"sizes must be a non-empty 1-D sequence of integers, got {sizes!r}")
        if (arr < 0).any():
            raise InvalidInputError(f"sizes must be >= 0, got {arr.tolist()}")
        self.sizes = [int(v) for v in arr]
        self.temperature = check_float(temperature, "temperature", low=0.0, low_inclusive=False)
        self.seed = _check_seed(seed)
        if cooldown is not None:
            if not isinstance(cooldown, (tuple, list)) or len(cooldown) != 3:
                raise InvalidInputError("cooldown must be a tuple (T_end, start_step, end_step)")
            t_end = check_float(cooldown[0], "cooldown T_end", low=0.0, low_inclusive=False)
            start = check_int(cooldown[1], "cooldown start_step", low=0)
            end = check_int(cooldown[2], "cooldown end_step", low=start)
            cooldown = (t_end, start, end)
        self.cooldown = cooldown
        # validates the combination (e.g. all-zero sizes)
        _core.data_temperature_probabilities(self.sizes, self.temperature, self.cooldown, 0)
        self._step = 0
        self._counts = np.zeros(len(self.sizes), dtype=np.uint64)

    @property
    def step(self) -> int:
        """Draws made so far."""
        return self._step

    def temperature_at(self, step: int | None = None) -> float:
        """The temperature at ``step`` (default: the current step)."""
        step = self._step if step is None else check_int(step, "step", low=0)
        return _core.data_temperature_probabilities(self.sizes, self.temperature, self.cooldown, step)[0]

    def probabilities(self, step: int | None = None) -> np.ndarray:
        """Domain probabilities at ``step`` (default: the current step)."""
        step = self._step if step is None else check_int(step, "step", low=0)
        return _core.data_temperature_probabilities(self.sizes, self.temperature, self.cooldown, step)[1]

    def loss_weights(self, domains: Any = None, *, step: int | None = None) -> np.ndarray:
        """Loss weights of the up-weighting (scalarization) alternative.

        For data drawn in proportion to domain size (``q_i = n_i / N``), weighting the
        loss of domain ``i`` by ``p_i(T) / q_i`` gives the same expected loss as
        temperature sampling. Returns the per-domain weights, or with ``domains`` (an
        array of domain ids) one weight per example.
        """
        step = self._step if step is None else check_int(step, "step", low=0)
        w = _core.data_temperature_loss_weights(self.sizes, self.temperature, self.cooldown, step)
        if domains is None:
            return w
        d = np.asarray(domains)
        if d.dtype.kind not in "iu" or ((d < 0) | (d >= len(self.sizes))).any():
            raise InvalidInputError(f"domains must be integer ids in [0, {len(self.sizes)})")
        return w[d]

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw the next ``n`` pairs: ``(domains, indices)`` arrays, advancing the state."""
        n = check_int(n, "n", low=0)
        d, i, c = _core.data_temperature_sample(self.sizes, self.temperature, self.cooldown,
                                                self.seed, self._step, self._counts.tolist(), n)
        self._counts = c
        self._step += n
        return d, i

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Endless ``(domain, index)`` pairs (drawn in chunks)."""
        while True:
            d, i = self.sample(1024)
            for pair in zip(d.tolist(), i.tolist()):
                yield pair

    def state_dict(self) -> dict[str, Any]:
        """``{"step", "counts"}``: enough to resume the exact stream."""
        return {"step": self._step, "counts": self._counts.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`."""
        try:
            step = check_int(state["step"], "state['step']", low=0)
            counts = np.asarray(state["counts"], dtype=np.uint64)
        except (KeyError, TypeError, ValueError, OverflowError):
            raise InvalidInputError("state must come from TemperatureSampler.state_dict()") from None
        if counts.shape != (len(self.sizes),):
            raise InvalidInputError(f"state has {counts.size} counts for {len(self.sizes)} domains")
        self._step, self._counts = step, counts


def loss_filter(losses: Any, *, threshold: float | None = None) -> np.ndarray:
    """Which examples of a batch to back-propagate: those with loss >= threshold.

    Stateless form of :class:`LossFilter`: without ``threshold`` the batch's own mean
    loss is used (the paper's rule applied to a single window).

    Examples
    --------
    >>> loss_filter([0.1, 2.0, 0.5, 1.4]).tolist()
    [False, True, False, True]
    >>> loss_filter([0.1, 2.0], threshold=0.05).tolist()
    [True, True]
    """
    a = _as_losses(losses)
    if threshold is None:
        if a.size == 0:
            return np.zeros(0, dtype=bool)
        if not np.isfinite(a).all():
            return _core.data_loss_mask(a, 0.0)  # raises with the position
        threshold = float(a.mean())
    else:
        threshold = check_float(threshold, "threshold")
    return _core.data_loss_mask(a, threshold)


class LossFilter:
    """Skip the backward pass on examples the model already fits (online filtering).

    The automatic threshold of "Efficient NLP Model Finetuning via Multistage Data
    Filtering" (Ouyang et al.): for the first ``warmup_steps`` batches every example
    is back-propagated and the threshold tracks the **mean of the most recent
    ``window`` per-example losses**; then it is frozen, and an example is
    back-propagated only if its loss is at least the threshold. The paper's code uses
    a window of 16 batches.

    Parameters
    ----------
    warmup_steps : int
        Batches of warm-up (>= 0; with 0 the first batch still sets the threshold).
    window : int, default=128
        Number of recent losses averaged into the threshold.

    Attributes
    ----------
    threshold_ : float or None
        Current threshold.
    skipped_fraction : float
        Fraction of all examples seen so far that were skipped.

    Examples
    --------
    >>> f = LossFilter(warmup_steps=1, window=4)
    >>> f([1.0, 2.0, 3.0, 4.0]).tolist()    # warm-up: threshold = 2.5
    [True, True, True, True]
    >>> f([0.5, 3.0]).tolist()
    [False, True]
    >>> f.skipped_fraction
    0.16666666666666666
    """

    def __init__(self, *, warmup_steps: int, window: int = 128) -> None:
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", low=0)
        self.window = check_int(window, "window", low=1)
        self._core = _core.LossFilterCore(self.warmup_steps, self.window)

    def __call__(self, losses: Any) -> np.ndarray:
        """Feed one batch of per-example losses; returns the boolean keep-mask."""
        return self._core.update(_as_losses(losses))

    loss_filter = __call__

    @property
    def threshold_(self) -> float | None:
        return self._core.stats()[0]

    @property
    def steps(self) -> int:
        """Batches fed so far."""
        return self._core.stats()[1]

    @property
    def skipped_fraction(self) -> float:
        _, _, seen, skipped = self._core.stats()
        return skipped / seen if seen else 0.0
