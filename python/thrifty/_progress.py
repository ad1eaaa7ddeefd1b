"""Progress display for long-running calls into the Rust core.

Every long-running function takes ``progress``:

* ``None`` (default): show a bar only when stderr is a terminal;
* ``True`` / ``False``: always / never show it;
* a callable ``f(done, total)``: called instead of drawing a bar.

The callback contract:

* it is called on the thread that made the call (with the GIL held), about every 0.1 s
  while the Rust core works, and once more when the work ends;
* ``done`` is an ``int`` of finished units (rows, blocks, pairs...), ``0 <= done``;
* ``total`` is an ``int > 0`` once the work knows its size, or ``None`` while it does
  not (a phase that has not declared its size yet): never ``0``, so ``done / total`` is
  safe whenever ``total is not None``;
* a call may declare a new ``total`` (a new phase), after which ``done`` restarts;
* if the callback raises, the work is cancelled and the exception propagates.

The built-in bars draw an unknown total as a spinner with the count so far.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Optional, Union

from ._errors import InvalidInputError

__all__ = ["ProgressArg", "progress_callback"]

ProgressArg = Union[bool, None, Callable[[int, Optional[int]], Any]]

_SPIN = "|/-\\"


class _TextBar:
    """A one-line bar for when tqdm is not installed."""

    def __init__(self, desc: str, unit: str) -> None:
        self.desc, self.unit, self.drawn, self.ticks, self.width = desc, unit, False, 0, 0

    def __call__(self, done: int, total: int | None) -> None:
        if total is None:
            self.ticks += 1
            line = f"{self.desc}: {_SPIN[self.ticks % 4]} ({done} {self.unit})"
        else:
            line = f"{self.desc}: {100.0 * done / total:5.1f}% ({done}/{total} {self.unit})"
        self.width = max(self.width, len(line))
        sys.stderr.write(f"\r{line.ljust(self.width)}")
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

    def __call__(self, done: int, total: int | None) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            # total=None: tqdm shows a count and rate without a percentage (a spinner)
            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, dynamic_ncols=True)
        if self.bar.total != total:
            self.bar.total = total
            self.bar.refresh()
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _known_totals(f: Callable[[int, int | None], Any]) -> Callable[[int, int], Any]:
    """Adapt a user callback to the core's reports, where ``total == 0`` means "not
    known yet": it reaches the callback as ``None``."""

    def report(done: int, total: int) -> Any:
        return f(int(done), int(total) if total > 0 else None)

    return report


class progress_callback:
    """Context manager turning a ``progress`` argument into the callback the core calls
    with ``(done, total)`` (or ``None`` for no progress); see the module docs for the
    contract the user's callable gets.

    Examples
    --------
    >>> seen = []
    >>> with progress_callback(lambda d, t: seen.append((d, t)), desc="demo") as cb:
    ...     cb(1, 2)
    ...     cb(5, 0)  # the core's "total not known yet"
    >>> seen
    [(1, 2), (5, None)]
    >>> with progress_callback(False, desc="demo") as cb:
    ...     cb is None
    True
    """

    def __init__(self, progress: ProgressArg, *, desc: str, unit: str = "it") -> None:
        self._sink: Any = None
        if callable(progress) and not isinstance(progress, bool):
            self._callback: Callable[[int, int], Any] | None = _known_totals(progress)
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
        self._callback = _known_totals(self._sink)

    def __enter__(self) -> Callable[[int, int], Any] | None:
        return self._callback

    def __exit__(self, *exc: object) -> None:
        if self._sink is not None:
            self._sink.close()
