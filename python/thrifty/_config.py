"""Thread control and build information."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Any, TextIO

from . import _core
from ._errors import InvalidInputError
from ._validation import check_int

__all__ = ["set_num_threads", "get_num_threads", "threads", "show_config", "config"]

_ENV = "THRIFTY_NUM_THREADS"
# Where the current thread count came from, as `thrifty info` words it.
_source = "the default: all cores"


def _thread_count(n: Any) -> int:
    """A validated thread count: a positive integer up to 4096 (``None``: 0, all cores)."""
    return 0 if n is None else check_int(n, "n_threads", low=1, high=4096)


def set_num_threads(n: int | None) -> None:
    """Set how many threads thrifty's Rust core uses from the next call on.

    Parameters
    ----------
    n : int or None
        A positive thread count, or ``None`` for all cores (the default).
        May be called any number of times; results never depend on it.

    Raises
    ------
    InvalidInputError
        If ``n`` is not a positive integer (or ``None``).

    Examples
    --------
    >>> import thrifty
    >>> thrifty.set_num_threads(1)
    >>> thrifty.get_num_threads()
    1
    >>> thrifty.set_num_threads(None)
    """
    global _source
    _core.set_num_threads(_thread_count(n))
    _source = "the default: all cores" if n is None else "set by thrifty.set_num_threads"


def get_num_threads() -> int:
    """Number of threads the next call into the Rust core from this thread will use
    (inside :class:`threads`, its count).

    Examples
    --------
    >>> import thrifty
    >>> thrifty.get_num_threads() >= 1
    True
    """
    return int(_core.get_num_threads())


class threads(contextlib.ContextDecorator):
    """Use ``n`` threads for thrifty's calls made from this thread, inside a ``with``.

    The count applies to the calling Python thread only and is restored on exit (also
    on an exception), so two threads can each run thrifty with their own count at the
    same time; the process-wide :func:`set_num_threads` setting is never changed.
    Blocks nest; a decorated function runs with the count. Results never depend on it.

    Parameters
    ----------
    n : int or None
        A positive thread count, or ``None`` for all cores.

    Raises
    ------
    InvalidInputError
        If ``n`` is not a positive integer (or ``None``).

    Notes
    -----
    The count belongs to the OS thread, not to an ``asyncio`` task: do not ``await``
    inside the block if other tasks on the same loop call thrifty meanwhile.

    Examples
    --------
    >>> import thrifty
    >>> with thrifty.threads(1):
    ...     thrifty.get_num_threads()
    1
    """

    def __init__(self, n: int | None) -> None:
        count = _thread_count(n)
        self._n = count if count else int(_core.build_info()["available_threads"])
        self._saved: list[int] = []

    def __enter__(self) -> threads:
        self._saved.append(_core._set_local_threads(self._n))
        return self

    def __exit__(self, *exc: object) -> None:
        _core._set_local_threads(self._saved.pop())


def _init_from_env() -> None:
    global _source
    raw = os.environ.get(_ENV)
    if raw is None or raw.strip() == "":
        return
    try:
        n = int(raw)
        if n < 1:
            raise ValueError
    except ValueError:
        _source = f"the default: all cores; {_ENV}={raw!r} was ignored, not a positive integer"
        warnings.warn(
            f"ignoring {_ENV}={raw!r}: expected a positive integer; using all cores",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    set_num_threads(min(n, 4096))
    _source = f"set by {_ENV}" + (f" (capped from {n})" if n > 4096 else "")


def config() -> dict[str, Any]:
    """Build and runtime configuration as a dict (what :func:`show_config` prints)."""
    import numpy

    info = dict(_core.build_info())
    info["num_threads"] = get_num_threads()
    info["num_threads_source"] = _source
    info["python"] = sys.version.split()[0]
    info["numpy"] = numpy.__version__
    return info


def show_config(file: TextIO | None = None) -> None:
    """Print thrifty's version, Rust compiler, CPU features and thread count.

    Examples
    --------
    >>> import thrifty
    >>> thrifty.show_config()  # doctest: +ELLIPSIS
    thrifty ...
    """
    out = file if file is not None else sys.stdout
    c = config()
    simd = ", ".join(c["simd"]) or "none detected"
    kernels = c["isa"]
    if c["isa_setting"] is not None:
        kernels += (f" (THRIFTY_ISA={c['isa_setting']!r} was ignored: use scalar, avx2, avx512 or native)"
                    if c["isa_setting_ignored"] else f" (capped by THRIFTY_ISA={c['isa_setting']!r};"
                    f" the CPU supports {c['isa_detected']})")
    lines = [
        f"thrifty {c['version']}",
        f"  rust compiler:   {c['rustc']} ({c['profile']} build, {c['target']})",
        f"  cpu features:    {simd}",
        f"  kernels:         {kernels}",
        f"  threads:         {c['num_threads']} of {c['available_threads']} available"
        f" ({c['num_threads_source']}; change with thrifty.set_num_threads)",
        f"  python:          {c['python']}",
        f"  numpy:           {c['numpy']}",
    ]
    print("\n".join(lines), file=out)
