"""``scotsearch tune``: search the staircase, eps, iterations, exp2 and CAM use with Optuna.

Examples::

    scotsearch tune --study tune-demo --from-beam beam-demo-val-resnet101-ot-rhm --trials 40
    scotsearch tune --study tune-spair --dataset spair --datapath data/SPair-71k \\
        --layers 0,19,27,28,29,30 --trials 200 --storage journal:studies/spair.log

Run the same command in several processes (or on several machines against one PostgreSQL
URL, ``postgresql+psycopg2://user:pw@host/db``) and they share the study. ``--trials`` is the
total the study should reach; running the command again continues where it stopped.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from scotsearch.commands import common
from scotsearch.commands._workers import add_worker_args
from scotsearch.commands._workers import check_worker_args
from scotsearch.errors import ConfigError
from scotsearch.layers import format_layers
from scotsearch.layers import parse_layers
from scotsearch.presets import published_layers
from scotsearch.study import describe_storage
from scotsearch.study import open_shared_storage


# torch (~1.3 s) is imported where the study begins: `--help` does not need it.
if TYPE_CHECKING:
    from scotsearch.data.pairs import Dataset

HELP = "tune the staircase, eps, Sinkhorn iterations, exp2 and CAM use with Optuna (resumable)"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("study")
    g.add_argument("--study", required=True, help="study name (created, resumed or joined)")
    g.add_argument("--trials", type=int, required=True,
                   help="total number of trials the study should hold (a rerun continues up "
                        "to it; it is not N more)")
    g.add_argument("--storage", default=None,
                   help="SQLAlchemy URL (sqlite:///FILE.db, postgresql+psycopg2://...), "
                        "journal:FILE or FILE.log (default: $SCOTSEARCH_STORAGE, "
                        "$OPTUNA_STORAGE, sqlite:///studies/scotsearch.db). Several processes "
                        "on one machine: SQLite (WAL) or a journal file; several machines: "
                        "PostgreSQL")
    which = g.add_mutually_exclusive_group()
    which.add_argument("--layers", "--hyperpixel", dest="layers", default=None,
                       help="layer subset to tune on, e.g. 0,19,27,28,29,30 (default: SCOT's "
                            "published set; with --joint: the baseline trial's subset)")
    which.add_argument("--from-beam", default=None, metavar="STUDY",
                       help="tune on the best layer subset of this beam study (same storage)")
    g.add_argument("--joint", action="store_true",
                   help="search the layer subset too (one on/off parameter per layer)")
    g.add_argument("--space", type=Path, default=None,
                   help="search space TOML file (default: the built-in space, written out in "
                        "studies/default_space.toml)")
    g.add_argument("--pruner", default="wilcoxon",
                   choices=("wilcoxon", "median", "halving", "none"),
                   help="stop hopeless trials early: Wilcoxon test on per-pair PCK (default), "
                        "median or successive halving on the running mean, or none")
    g.add_argument("--sampler", default="tpe", choices=("tpe", "random"),
                   help="Optuna sampler (default: multivariate TPE)")
    g.add_argument("--sampler-seed", type=int, default=None,
                   help="sampler seed (give each worker its own, or none)")
    g.add_argument("--startup-trials", type=int, default=10,
                   help="random trials before TPE models the space (default 10)")
    g.add_argument("--batch-pairs", type=int, default=8,
                   help="pairs scored between two pruning checks (default 8)")
    add_worker_args(g, what="the study")
    g.add_argument("--stale-after", type=float, default=120.0,
                   help="journal storages: seconds without a heartbeat after which a running "
                        "trial counts as crashed and is retried (default 120)")
    common.add_data_args(p, split="val")
    common.add_backbone_args(p)
    common.add_match_args(p, command="tune")


def run(args: argparse.Namespace) -> int:
    from scotsearch.evaluate import Evaluator
    from scotsearch.search.space_file import load_space
    from scotsearch.search.tune import layers_from_beam
    from scotsearch.search.tune import run_tune

    common.refuse_unsearchable(args, "tune")
    if args.trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {args.trials}")
    if args.batch_pairs < 1:
        raise ConfigError(f"--batch-pairs must be >= 1, got {args.batch_pairs}")
    if args.stale_after <= 0:
        raise ConfigError(f"--stale-after must be positive, got {args.stale_after:g}")
    many = check_worker_args(args)
    space = load_space(args.space)
    alphas = common.alphas_from_args(args)
    if len(alphas) != 1:
        raise ConfigError("tune optimises PCK at one alpha; give a single --alpha")
    dataset = common.open_dataset(args)
    match = common.match_from_args(args, dataset)
    if match.similarity != "ot":
        raise ConfigError("tune searches transport settings; use an OT variant "
                          "(--variant ot-rhm-stair, ot-rhm, ...)")
    profile = common.profile_from_args(args)
    storage = open_shared_storage(args.storage)

    if args.from_beam is not None:
        layers = layers_from_beam(args.from_beam, storage, args.backbone, dataset.name)
        log.info("layers %s from beam study '%s'", format_layers(layers), args.from_beam)
    elif args.layers is not None:
        layers = parse_layers(args.layers, args.backbone)
    else:
        layers = parse_layers(published_layers(dataset.name, args.backbone), args.backbone)

    device = common.resolve_device(args.device)
    source = common.feature_source(args, device)
    common.check_cache_space(dataset, source)
    if many:
        return _run_workers(args, dataset, source, storage)
    evaluator = Evaluator(dataset, source, match=match, profile=profile, alphas=alphas,
                          thres=args.thres, device=device,
                          precision=common.resolve_precision(args.precision, device),
                          engine=args.engine)
    # Optuna's per-trial INFO lines would tear the progress bar; the bar shows the best.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    mode = "layers jointly" if args.joint else f"layers {format_layers(layers)}"
    log.info("tune '%s' (%s) on %s %s, %d pairs, %s pruner, space %s", args.study, mode,
             dataset.name, dataset.split, len(dataset.pairs), args.pruner, space.source)
    result = run_tune(
        evaluator,
        study_name=args.study,
        n_trials=args.trials,
        storage=storage,
        space=space,
        layers=None if args.joint else layers,
        baseline_layers=layers,
        pruner=args.pruner,
        sampler=args.sampler,
        seed=args.sampler_seed,
        n_startup_trials=args.startup_trials,
        batch_pairs=args.batch_pairs,
        stale_after=args.stale_after,
        progress=not args.quiet,
    )
    print(result.summary())
    if result.n_run:
        total = result.n_run * len(dataset.pairs)
        print(f"  this run: {result.n_run} trial(s), {result.pairs_scored}/{total} pair "
              f"evaluations ({100.0 * result.pairs_scored / max(total, 1):.0f}%; the rest pruned)")
    storage_flag = f" --storage {args.storage}" if args.storage else ""
    print(f"study '{args.study}' in {describe_storage(storage)}")
    print(f"export: scotsearch export --study {args.study}{storage_flag} --format csv")
    from scotsearch.dashboard import save_run_note  # the command line, for optuna-dashboard

    save_run_note(storage, args.study, "tune", getattr(args, "_argv", None))
    return 0


def _run_workers(args: argparse.Namespace, dataset: Dataset, source: object,
                 storage: optuna.storages.BaseStorage) -> int:
    """--workers N / --dask-scheduler: N copies of this command share the study."""
    from scotsearch.commands._workers import launch_workers
    from scotsearch.search.tune import COUNTED
    from scotsearch.search.tune_result import summary_best

    def counted() -> int:
        study = optuna.load_study(study_name=args.study, storage=storage)
        return len(study.get_trials(deepcopy=False, states=COUNTED))

    n = launch_workers(args, dataset, source, progress=counted, total=args.trials)
    study = optuna.load_study(study_name=args.study, storage=storage)
    best = summary_best(study)
    best_text = "none yet" if best is None else f"{best.value:.2f} (trial {best.number})"
    print(f"study '{args.study}': {counted()}/{args.trials} trials by {n} workers; "
          f"best {best_text}")
    print(f"study '{args.study}' in {describe_storage(storage)}")
    return 0
