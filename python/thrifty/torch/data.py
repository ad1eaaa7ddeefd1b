"""The thrifty loaders as ``torch.utils.data.IterableDataset`` objects.

Each dataset yields whole batches as CPU tensors that share memory with the numpy
batches of :mod:`thrifty.data` (``torch.from_numpy``, no copy). Batching, shuffling,
prefetching and rank splitting already happen in thrifty's background thread, so wrap
them in a ``DataLoader`` with ``batch_size=None`` and ``num_workers=0`` (or iterate
them directly). ``num_workers >= 1`` is refused with :class:`thrifty.InvalidInputError`:
a worker process holds a copy of the loader, so every epoch would repeat one order and
``state_dict()`` would never advance.

Token windows keep their file dtype (``torch.uint16`` / ``torch.uint32``); call
``.long()`` on the batch (on the device, after ``.to(device)``) for embedding lookups.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

try:
    import torch
    from torch.utils.data import IterableDataset
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError("thrifty.torch.data needs PyTorch: pip install 'thrifty[torch]'") from e

from ..data import ArrayLoader, TokenLoader

__all__ = ["ArrayDataset", "TokenDataset"]


class _Wrapped(IterableDataset):  # type: ignore[type-arg]
    loader: ArrayLoader | TokenLoader

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        """See :meth:`thrifty.data.ArrayLoader.set_epoch`."""
        self.loader.set_epoch(epoch)

    def state_dict(self) -> dict[str, int]:
        """See :meth:`thrifty.data.ArrayLoader.state_dict`."""
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        """See :meth:`thrifty.data.ArrayLoader.load_state_dict`."""
        self.loader.load_state_dict(state)


class ArrayDataset(_Wrapped):
    """:class:`thrifty.data.ArrayLoader` yielding tensors (``X`` or ``(X, y)``).

    Takes the same arguments as :class:`~thrifty.data.ArrayLoader`.

    Examples
    --------
    >>> import numpy as np
    >>> ds = ArrayDataset(np.ones((10, 3), dtype=np.float32), batch_size=4)
    >>> [tuple(b.shape) for b in ds]
    [(4, 3), (4, 3), (2, 3)]
    """

    def __init__(self, source: Any, **kwargs: Any) -> None:
        super().__init__()
        self.loader = ArrayLoader(source, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:  # refuses to run in a DataLoader worker
            if isinstance(batch, tuple):
                yield tuple(torch.from_numpy(a) for a in batch)
            else:
                yield torch.from_numpy(batch)


class TokenDataset(_Wrapped):
    """:class:`thrifty.data.TokenLoader` yielding ``(batch_size, seq_len + 1)`` tensors.

    Takes the same arguments as :class:`~thrifty.data.TokenLoader`.
    """

    def __init__(self, path: Any, **kwargs: Any) -> None:
        super().__init__()
        self.loader = TokenLoader(path, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:  # refuses to run in a DataLoader worker
            yield torch.from_numpy(batch)
