"""Command-line interface: ``scotsearch <command> ...`` (argparse, one module per command)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from scotsearch._version import __version__
from scotsearch.errors import ScotsearchError
from scotsearch.errors import first_line
from scotsearch.errors import is_out_of_memory


#: command name -> module under scotsearch.commands exposing HELP, add_arguments(parser)
#: and run(args) -> int.
COMMANDS = {
    "evaluate": "evaluate",
    "cache": "cache",
    "beam": "beam",
    "tune": "tune",
    "studies": "studies",
    "export": "export",
    "datasets": "datasets",
    "layers": "layers",
    "report": "report",
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
    # The command line as given, for commands that start copies of themselves (--workers).
    args._argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("scotsearch: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one error boundary; bugs are re-raised
        line = user_error(exc)
        if line is None:
            raise
        if args.verbose:
            traceback.print_exc()
        print(f"scotsearch: error: {line}", file=sys.stderr)
        return 2


def user_error(exc: BaseException) -> str | None:
    """The one line a user sees for ``exc``, or ``None`` for a bug (its traceback is shown).

    Our own errors say what is wrong already; the system's and the libraries' are turned
    into one line naming the file or resource: a full disk, a read-only folder, a database
    server that is down, memory that ran out. ``-v`` adds the traceback, for bug reports.
    """
    if isinstance(exc, ScotsearchError):
        # One line, whatever a message quoted (a library's multi-line error text).
        return " ".join(str(exc).split())
    if isinstance(exc, OSError):
        what = exc.strerror or str(exc) or type(exc).__name__
        names = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
        return f"{what}: {' -> '.join(names)}" if names else what
    if is_out_of_memory(exc):
        return (
            "out of memory: lower --image-side, --chunk or the number of candidates per pass "
            f"({first_line(exc)})"
        )
    if type(exc).__module__.split(".")[0] in ("sqlalchemy", "sqlite3", "psycopg2", "psycopg"):
        return f"study storage failed: {first_line(exc)}"
    if type(exc).__name__ == "StorageInternalError":
        return f"study storage failed: {first_line(exc.__cause__ or exc)}"
    if isinstance(exc, UnicodeError):
        return f"a file or folder name is not valid text in this locale: {exc}"
    return None
