"""Progress display for long-running calls into the Rust core.

Every long-running function takes ``progress``:

* ``None`` (default): show a bar only when stderr is a terminal;
* ``True`` / ``False``: always / never show it;
* a callable ``f(done, total)``: called instead of drawing a bar.

The Rust core counts finished work; while it runs, the interpreter's main thread is woken
every 0.1 s to pass ``(done, total)`` to the callback, and once more when the work ends.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Union

from ._errors import InvalidInputError

__all__ = ["ProgressArg", "progress_callback"]

ProgressArg = Union[bool, None, Callable[[int, int], Any]]


class _TextBar:
    """A one-line bar for when tqdm is not installed."""

    def __init__(self, desc: str, unit: str) -> None:
        self.desc, self.unit, self.drawn = desc, unit, False

    def __call__(self, done: int, total: int) -> None:
        pct = 100.0 * done / total if total else 100.0
        sys.stderr.write(f"\r{self.desc}: {pct:5.1f}% ({done}/{total} {self.unit})")
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


class _TqdmBar:
    def __init__(self, desc: str, unit: str) -> None:
        self.desc, self.unit = desc, unit
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, dynamic_ncols=True)
        if self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class progress_callback:
    """Context manager turning a ``progress`` argument into a callback (or ``None``).

    Examples
    --------
    >>> seen = []
    >>> with progress_callback(lambda d, t: seen.append((d, t)), desc="demo") as cb:
    ...     cb(1, 2)
    >>> seen
    [(1, 2)]
    >>> with progress_callback(False, desc="demo") as cb:
    ...     cb is None
    True
    """

    def __init__(self, progress: ProgressArg, *, desc: str, unit: str = "it") -> None:
        self._sink: Any = None
        if callable(progress) and not isinstance(progress, bool):
            self._callback: Callable[[int, int], Any] | None = progress
            return
        if progress is None:
            show = bool(getattr(sys.stderr, "isatty", lambda: False)())
        elif isinstance(progress, bool):
            show = progress
        else:
            raise InvalidInputError(
                f"progress must be True, False, None or a callable(done, total), got {progress!r}"
            )
        if not show:
            self._callback = None
            return
        try:
            import tqdm  # noqa: F401

            self._sink = _TqdmBar(desc, unit)
        except ImportError:
            self._sink = _TextBar(desc, unit)
        self._callback = self._sink

    def __enter__(self) -> Callable[[int, int], Any] | None:
        return self._callback

    def __exit__(self, *exc: object) -> None:
        if self._sink is not None:
            self._sink.close()
