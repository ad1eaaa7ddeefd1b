"""The ``thrifty`` command line.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds
its parser and sets ``func`` to a callable taking the parsed arguments and returning an
exit code. Usage errors print one line on stderr and exit with code 2; errors about the
user's input (``thrifty.InvalidInputError``, ``thrifty.FormatError``, missing files)
also exit with code 2; other errors (out of memory, a failed write, a thrifty error)
exit with code 1, Ctrl-C with 130 and SIGTERM with 143. Every error is one line, prefixed with the command
(``thrifty prune: error: ...``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

__all__ = ["main", "build_parser"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
EXIT_SIGPIPE = 141


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, exit code 2.

    A sub-command may pass ``normalise`` (a function rewriting its argument list before
    parsing) and ``intermixed=True`` (positionals may come before, between and after the
    options, collected in the order given).
    """

    def __init__(self, *args: Any, normalise: Callable[[list[str]], list[str]] | None = None,
                 intermixed: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._normalise = normalise
        self._intermixed = intermixed
        self._in_intermixed = False

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        argv = list(sys.argv[1:] if args is None else args)
        if self._normalise is not None:
            argv = self._normalise(argv)
        if self._intermixed and not self._in_intermixed:
            # parse_known_intermixed_args calls parse_known_args itself (twice)
            self._in_intermixed = True
            try:
                return super().parse_known_intermixed_args(argv, namespace)
            finally:
                self._in_intermixed = False
        return super().parse_known_args(argv, namespace)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser for ``thrifty`` and all its sub-commands."""
    from .. import __version__
    from . import info, prune

    parser = _Parser(
        prog="thrifty",
        description="Train with less: prune datasets of embeddings, inspect the build.",
    )
    parser.add_argument("--version", action="version", version=f"thrifty {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in (info, prune):
        module.register(sub)
    parser.set_defaults(_commands=sub.choices)
    return parser


def _stdout_gone() -> None:
    """stdout's reader went away (``thrifty info | head -1``): send the rest of the
    output, and the interpreter's final flush, to /dev/null instead of a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``thrifty`` console script; returns the exit code."""
    from .._errors import FormatError, InvalidInputError, ThriftyError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the command's own parser: "thrifty prune: error: ..."
        parser = args._commands.get(getattr(args, "command", None), parser)
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "func", None) is None:
        parser.print_usage(sys.stderr)
        print("thrifty: error: a command is required (see 'thrifty --help')", file=sys.stderr)
        return EXIT_USAGE
    prog = f"thrifty {args.command}"
    try:
        with _terminate_as_exception():
            rc = int(args.func(args))
        sys.stdout.flush()  # a closed pipe is reported here, not at interpreter exit
        return rc
    except BrokenPipeError:
        _stdout_gone()
        return EXIT_SIGPIPE
    except (InvalidInputError, FormatError, FileNotFoundError, FileExistsError,
            IsADirectoryError, NotADirectoryError, PermissionError) as e:
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError as e:
        print(f"{prog}: error: out of memory{': ' + _one_line(e) if str(e) else ''}",
              file=sys.stderr)
        return EXIT_FAILURE
    except OSError as e:
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_FAILURE
    except ThriftyError as e:
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        return EXIT_TERMINATED


class _Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C, so temporary files are removed."""


@contextlib.contextmanager
def _terminate_as_exception() -> Iterator[None]:
    """Turn SIGTERM into :class:`_Terminated` while a command runs (main thread only);
    long work in the Rust core notices it within 0.1 s, as it does Ctrl-C."""
    old = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or old in (None, signal.SIG_IGN):
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise _Terminated

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _one_line(e: BaseException) -> str:
    """An exception's message on one line (the CLI's errors are one line each)."""
    text = str(e)
    if isinstance(e, OSError) and e.strerror:  # not "[Errno 13] Permission denied: '...'"
        text = f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
