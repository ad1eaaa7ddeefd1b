"""Data pipelines: deterministic streaming loaders, temperature sampling, loss filtering.

The package mirrors the Rust core's ``data`` module:

:mod:`thrifty.data.stream`
    :class:`ArrayLoader` (a 2-D array or a ``.npy`` file) and :class:`TokenLoader`
    (windows of a flat token file) stream shuffled mini-batches gathered by a Rust
    background thread; :func:`permutation` is the keyed shuffle they use and
    :func:`read_npy_header` reads a ``.npy`` header without the data.
:mod:`thrifty.data.sampler`
    :class:`TemperatureSampler` mixes domains with probabilities ``∝ n_i^(1/T)``, with
    an optional Cooldown of the temperature, and gives the equivalent loss weights.
:mod:`thrifty.data.filter`
    :class:`LossFilter` / :func:`loss_filter` skip the backward pass on examples whose
    loss falls below an automatically chosen threshold.

Shuffling uses a keyed bijective permutation (a Feistel network with cycle walking) of
the kept rows: no permutation array is ever allocated, so datasets of billions of rows
shuffle in constant memory, and the order depends only on ``(seed, epoch)``, never on
the thread count or the prefetch depth.

Distributed training: rank ``r`` of ``world_size`` takes positions ``r``,
``r + world_size``, ... of the epoch's order, exactly as
``torch.utils.data.DistributedSampler`` does, and every rank yields the same number of
batches (so data-parallel ranks never wait on each other): with ``drop_last=True`` the
order is cut to ``world_size * floor(n / world_size)`` items, with ``drop_last=False``
it is padded by wrapping around to ``world_size * ceil(n / world_size)`` items (fewer
than ``world_size`` items are then seen twice in the epoch).

Iteration: each ``iter(loader)`` starts the current epoch from its first batch (or from
the point :meth:`~ArrayLoader.load_state_dict` loaded), as a ``DataLoader`` does;
``state_dict()`` records the epoch and the batches *yielded* (not prefetched) by the
most recent iterator. An iteration that runs to its end moves the loader to the next
epoch; :meth:`~ArrayLoader.set_epoch` selects one explicitly. The loaders refuse to run
inside ``DataLoader`` worker processes (``num_workers >= 1``): they prefetch in their
own thread.

Files: a ``.npy`` or token file is never read as a whole. By default (``read="auto"``)
files up to 1 GiB are memory-mapped and larger ones read with positional reads
(``pread``). Both check the file's size before every batch and raise
:class:`~thrifty.FormatError` when it shrank. A file truncated *while* a batch is being
copied from its memory map still kills the process with ``SIGBUS`` (the operating
system's rule for mappings); ``read="pread"`` is immune to that, at the cost of one
system call per shuffled row.
"""

from __future__ import annotations

from .filter import LossFilter, loss_filter
from .sampler import TemperatureSampler
from .stream import ArrayLoader, TokenLoader, permutation, read_npy_header

__all__ = [
    "ArrayLoader",
    "TokenLoader",
    "TemperatureSampler",
    "LossFilter",
    "loss_filter",
    "permutation",
    "read_npy_header",
]
