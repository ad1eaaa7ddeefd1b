"""The ``thrifty`` command line.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds
its parser and sets ``func`` to a callable taking the parsed arguments and returning an
exit code. Usage errors print one line on stderr and exit with code 2; errors about the
user's input (``thrifty.InvalidInputError``, ``thrifty.FormatError``, missing files)
also exit with code 2; other thrifty errors exit with code 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main", "build_parser"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``thrifty`` console script; returns the exit code."""
    from .._errors import FormatError, InvalidInputError, ThriftyError

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_usage(sys.stderr)
        print("thrifty: error: a command is required (see 'thrifty --help')", file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except (InvalidInputError, FormatError, FileNotFoundError, FileExistsError,
            IsADirectoryError, NotADirectoryError, PermissionError) as e:
        print(f"thrifty: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ThriftyError as e:
        print(f"thrifty: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("thrifty: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
