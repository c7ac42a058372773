"""Helpers of the release tests."""

from __future__ import annotations

from pathlib import Path

import gitml.cli
from gitml.paths import Paths


def subcommand(root: Path, *argv: str) -> str:
    """`gitml ARGV` on `root`, parsed by gitml's own parser: the handler's line, or its GitmlError raised."""
    args = gitml.cli.build_parser().parse_args(["--root", str(root), *argv])
    handler = gitml.cli.COMMANDS[args.command][0]
    return str(handler(Paths(args.root), args))
