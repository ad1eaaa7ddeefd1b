"""The ``thrifty`` command line.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds
its parser and sets ``func`` to a callable taking the parsed arguments and returning an
exit code. Usage errors print one line on stderr and exit with code 2; errors about the
user's input (``thrifty.InvalidInputError``, ``thrifty.FormatError``, missing files)
also exit with code 2; other errors (out of memory, a failed write, a thrifty error)
exit with code 1 and Ctrl-C with 130. Every error is one line, prefixed with the command
(``thrifty prune: error: ...``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main", "build_parser"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_SIGPIPE = 141


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, exit code 2."""

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
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_usage(sys.stderr)
        print("thrifty: error: a command is required (see 'thrifty --help')", file=sys.stderr)
        return EXIT_USAGE
    prog = f"thrifty {args.command}"
    try:
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


def _one_line(e: BaseException) -> str:
    """An exception's message on one line (the CLI's errors are one line each)."""
    text = str(e)
    if isinstance(e, OSError) and e.strerror and e.filename:
        text = f"{e.filename}: {e.strerror}"  # not "[Errno 13] Permission denied: '...'"
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
