"""Command-line interface: ``scotsearch <command> ...`` (argparse, one module per command)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from scotsearch._version import __version__
from scotsearch.errors import ScotsearchError


#: command name -> module under scotsearch.commands exposing HELP, add_arguments(parser)
#: and run(args) -> int.
COMMANDS = {
    "evaluate": "evaluate",
    "cache": "cache",
    "beam": "beam",
    "tune": "tune",
    "studies": "studies",
    "export": "export",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scotsearch",
        description=(
            "Fast, resumable layer and setting search for SCOT/HPF semantic correspondence."
        ),
    )
    parser.add_argument("--version", action="version", version=f"scotsearch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"scotsearch.commands.{module}")
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 runtime failure, 2 bad input, 130 Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except ScotsearchError as exc:
        print(f"scotsearch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scotsearch: interrupted", file=sys.stderr)
        return 130
