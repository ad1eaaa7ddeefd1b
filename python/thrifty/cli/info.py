"""``thrifty info``: print the build configuration (:func:`thrifty.show_config`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "info",
        help="show version, Rust compiler, CPU features and thread count",
        description="Show thrifty's version, Rust compiler, detected CPU features and thread count.",
    )
    p.add_argument("--json", action="store_true", help="print the configuration as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._config import config, show_config

    if args.json:
        print(json.dumps(config(), indent=2, sort_keys=True))
    else:
        show_config()
    return 0
