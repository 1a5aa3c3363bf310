"""``scotsearch datasets check``: is a benchmark's copy complete and readable?"""

from __future__ import annotations

import argparse
from pathlib import Path

from scotsearch.errors import ConfigError
from scotsearch.errors import DataError


HELP = "check a benchmark's files: splits, annotations, images (exit 0 when usable)"

DATASETS = ("demo", "spair", "pfpascal", "pfwillow", "tss", "caltech")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("check",), help="check: read every split, find every image")
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--datapath", type=Path, default=None,
                   help="dataset root (e.g. .../SPair-71k) or its parent; demo: its folder")
    p.add_argument("--split", default=None,
                   help="check only these splits (comma-separated; default: all of them)")
    p.add_argument("--cache-dir", type=Path, default=Path("cache"),
                   help="demo: the cache folder holding demo-data/ (default cache)")


def run(args: argparse.Namespace) -> int:
    from scotsearch.data.check import check_dataset
    from scotsearch.data.check import format_report

    root = args.datapath
    if args.dataset == "demo" and root is None:
        root = Path(args.cache_dir) / "demo-data"
    if args.dataset != "demo" and root is None:
        raise ConfigError(f"--dataset {args.dataset} needs --datapath pointing at its root folder")
    splits = tuple(s.strip() for s in args.split.split(",")) if args.split else None
    report = check_dataset(args.dataset, root, splits)
    print(format_report(report))
    if not report.usable:
        first = report.problems(1)
        raise DataError(f"dataset {args.dataset} at {root} is not usable: "
                        f"{first[0] if first else 'no pairs'}")
    return 0
