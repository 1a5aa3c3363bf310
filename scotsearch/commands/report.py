"""``scotsearch report``: an HTML page with figures for an ``evaluate --output`` result."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from scotsearch.errors import ConfigError


HELP = "an HTML page with keypoint-transfer and TPS-warp figures for an evaluation result"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("result", type=Path, nargs="?", default=None,
                   help="a JSON written by 'scotsearch evaluate --output'")
    p.add_argument("--study", default=None,
                   help="report a beam or tune study instead (see `scotsearch studies`); "
                        "with RESULT.json and --artifact-dir: upload the result's report to "
                        "this study")
    p.add_argument("--storage", default=None,
                   help="study storage of --study: SQLAlchemy URL, journal:FILE or FILE.log "
                        "(default: $SCOTSEARCH_STORAGE, else sqlite:///studies/scotsearch.db)")
    p.add_argument("--artifact-dir", type=Path, default=None,
                   help="with --study: also save a note and upload the figures and candidate "
                        "CSVs as Optuna artifacts here, for optuna-dashboard --artifact-dir")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="report folder (index.html and its PNG figures; default: the "
                        "result's name without .json, or the study's name, plus '-report')")
    p.add_argument("--pairs", default="best,median,worst",
                   help="pairs to draw: pair ids and/or best, median, worst (by PCK at the "
                        "first alpha), comma-separated (default: best,median,worst)")


def run(args: argparse.Namespace) -> int:
    # Here, not at the top: matplotlib is imported by this command only, not by every CLI call.
    import matplotlib

    matplotlib.use("Agg")  # Optuna's plots go through pyplot: never a window
    if args.result is None and args.study is None:
        raise ConfigError("give an evaluation result (RESULT.json) or --study NAME")
    if args.result is not None and args.study is not None and args.artifact_dir is None:
        raise ConfigError("RESULT.json with --study publishes the result's report on the "
                          "study: give --artifact-dir too (else not both)")
    if args.artifact_dir is not None and args.study is None:
        raise ConfigError("--artifact-dir goes with --study (Optuna artifacts belong to a study)")
    say = lambda msg: log.info("drew %s", msg)  # noqa: E731
    study = None
    if args.study is not None:
        from scotsearch.study import open_study

        if args.artifact_dir is not None:
            from scotsearch.dashboard import check_dashboard

            check_dashboard()  # before the report is built, not after
        study = open_study(args.study, args.storage, create=False)
    if args.result is None:
        from scotsearch.study_report import write_study_report

        assert study is not None  # checked above: a result or a study

        out = args.output or Path(f"{args.study}-report")
        page = write_study_report(study, out, progress=say)
        if args.artifact_dir is not None:
            from scotsearch.dashboard import publish_to_dashboard
            from scotsearch.study_report import study_kind

            ids = publish_to_dashboard(study, study_kind(study), out, args.artifact_dir,
                                       args.storage or "(default)")
            print(f"uploaded {len(ids)} artifact(s) to {args.artifact_dir} and a note: "
                  f"optuna-dashboard STORAGE --artifact-dir {args.artifact_dir}")
    else:
        from scotsearch.report_page import write_report

        out = args.output or args.result.with_name(args.result.stem + "-report")
        page = write_report(args.result, out, pairs=args.pairs, progress=say)
        if study is not None:
            from scotsearch.dashboard import upload_folder

            ids = upload_folder(study, out, args.artifact_dir)
            print(f"uploaded {len(ids)} artifact(s) of the evaluation (figures, pairs.csv) "
                  f"to study '{args.study}' in {args.artifact_dir}")
    print(f"wrote {page}")
    return 0
