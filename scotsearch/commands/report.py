"""``scotsearch report``: an HTML page with figures for an ``evaluate --output`` result."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


HELP = "an HTML page with keypoint-transfer and TPS-warp figures for an evaluation result"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("result", type=Path, help="a JSON written by 'scotsearch evaluate --output'")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="report folder (index.html and its PNG figures; default: the "
                        "result's name without .json, plus '-report')")
    p.add_argument("--pairs", default="best,median,worst",
                   help="pairs to draw: pair ids and/or best, median, worst (by PCK at the "
                        "first alpha), comma-separated (default: best,median,worst)")


def run(args: argparse.Namespace) -> int:
    # Here, not at the top: matplotlib is imported by this command only, not by every CLI call.
    from scotsearch.report_page import write_report

    out = args.output
    if out is None:
        out = args.result.with_name(args.result.stem + "-report")
    page = write_report(args.result, out, pairs=args.pairs,
                        progress=lambda msg: log.info("drew %s", msg))
    print(f"wrote {page}")
    return 0
