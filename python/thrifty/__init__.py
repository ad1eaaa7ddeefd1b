"""thrifty: train with less.

Fewer samples (dataset dedup and pruning), fewer bits (low-bit formats and packing),
no training at all (compression kNN, nearest-mean and kNN classifiers on embeddings)
and leaner optimisation (PyTorch optimizers and losses), with a Rust core.

``import thrifty`` never imports torch or CuPy; ``thrifty.torch`` imports them when it
is used (its CUDA kernels are a private backend it picks by the tensors' device).
"""

from __future__ import annotations

from . import _core
from ._config import config, get_num_threads, set_num_threads, show_config, threads
from ._errors import (
    CancelledError,
    FormatError,
    InternalError,
    InvalidInputError,
    OutOfMemoryError,
    ThriftyError,
    ThriftyIOError,
)

__version__: str = _core.__version__

__all__ = [
    "__version__",
    "ThriftyError",
    "InvalidInputError",
    "FormatError",
    "ThriftyIOError",
    "OutOfMemoryError",
    "CancelledError",
    "InternalError",
    "set_num_threads",
    "get_num_threads",
    "threads",
    "show_config",
    "config",
]

from ._config import _init_from_env

_init_from_env()
del _init_from_env
