"""The exception hierarchy shared by every thrifty module.

Errors raised by the Rust core are mapped onto these classes by kind, so the same
``except thrifty.InvalidInputError`` works for every capability.
"""

from __future__ import annotations

__all__ = [
    "ThriftyError",
    "InvalidInputError",
    "FormatError",
    "ThriftyIOError",
    "OutOfMemoryError",
    "CancelledError",
    "InternalError",
]


class ThriftyError(Exception):
    """Base class of every exception thrifty raises on purpose."""


class InvalidInputError(ThriftyError, ValueError):
    """An argument is invalid: wrong dtype or shape, NaN/inf, empty, k > n, unknown label..."""


class FormatError(ThriftyError, ValueError):
    """Bytes that should follow a file or data format do not (truncated, bad header...)."""


class ThriftyIOError(ThriftyError, OSError):
    """The operating system refused: a file read or write, or starting worker threads.

    Threads are refused under a process limit (``ulimit -u``); a smaller
    ``thrifty.set_num_threads`` may then succeed.
    """


class OutOfMemoryError(ThriftyError, MemoryError):
    """A buffer whose size follows from the input could not be allocated.

    Raised instead of aborting the process (Rust's default on a failed allocation), so a
    too-large request under a memory limit is an ordinary, catchable ``MemoryError``.
    """


class CancelledError(ThriftyError):
    """Long-running work was cancelled before it finished."""


class InternalError(ThriftyError):
    """A bug in thrifty (for example a panic in the Rust core). Please report it."""
