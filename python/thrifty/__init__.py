"""thrifty: train with less.

Fewer samples (dataset dedup and pruning), fewer bits (low-bit formats and packing),
no training at all (compression kNN, nearest-mean and kNN classifiers on embeddings)
and leaner optimisation (PyTorch optimizers and losses), with a Rust core.

``import thrifty`` never imports torch or CuPy; ``thrifty.torch`` imports them when it
is used (its CUDA kernels are a private backend it picks by the tensors' device).

Conventions shared by every module:

* Threads: :func:`set_num_threads` / ``THRIFTY_NUM_THREADS`` for the process,
  ``with threads(n):`` for one thread of it; results never depend on the count, and
  nothing takes ``n_jobs``.
* ``progress=`` on every call or estimator that runs long work: ``None`` (default)
  draws a bar only when stderr is a terminal, ``True`` / ``False`` always / never, a
  callable ``f(done, total)`` is called instead (on the calling thread, about every
  0.1 s and once at the end; ``total`` is ``None`` while a phase does not know its
  size and never 0; raising from it cancels the work).
* Neighbour counts are ``n_neighbors``; the estimators are scikit-learn estimators.
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
