"""``scotsearch export``: write a study's best configurations as CSV (``evaluate --config``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scotsearch._io import check_destination
from scotsearch.errors import ScotsearchError
from scotsearch.export import export_rows
from scotsearch.export import select_rows
from scotsearch.export import write_csv
from scotsearch.study import open_study


HELP = "export a study's best configurations as CSV rows that `evaluate --config` reads"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", required=True, help="study name (see `scotsearch studies`)")
    p.add_argument("--storage", default=None,
                   help="study storage: SQLAlchemy URL, journal:FILE or FILE.log (default: "
                        "$SCOTSEARCH_STORAGE, $OPTUNA_STORAGE, sqlite:///studies/scotsearch.db)")
    p.add_argument("--format", default="csv", choices=("csv",), help="output format (csv)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--top", type=int, default=1,
                       help="export the K best configurations (default 1)")
    which.add_argument("--all", action="store_true", help="export every scored candidate")
    p.add_argument("--output", "-o", type=Path, default=None,
                   help="CSV file to write (default: standard output)")


def run(args: argparse.Namespace) -> int:
    if args.output is not None and str(args.output) != "-":
        check_destination(args.output, "--output/-o")
    study = open_study(args.study, args.storage, create=False)
    rows = export_rows(study)
    if not rows:
        raise ScotsearchError(f"study '{args.study}' has no completed configuration yet")
    chosen = select_rows(rows, top=args.top, all_rows=args.all)
    write_csv(chosen, args.output)
    if args.output is not None:
        print(f"wrote {len(chosen)} configuration(s) of study '{args.study}' to {args.output}",
              file=sys.stderr)
    return 0
