"""``scotsearch beam``: which hyperpixel layers give the best validation PCK (beam search).

The search itself is :func:`scotsearch.search.beam_study.run_beam`: every scored candidate is
stored in the study the moment its chunk completes, so a re-run of the same command resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scotsearch.commands._workers import add_worker_args
from scotsearch.commands._workers import check_worker_args
from scotsearch.commands.common import add_backbone_args
from scotsearch.commands.common import add_data_args
from scotsearch.commands.common import add_match_args
from scotsearch.errors import ConfigError
from scotsearch.presets import reference_algorithm
from scotsearch.search.beam import check_beam_counts


# torch and optuna (~1.5 s) are imported where the search begins: `--help` needs neither, and
# `--workers N` starts the other workers before this process imports them.
if TYPE_CHECKING:
    import optuna

    from scotsearch.commands._workers import TeamHelpers
    from scotsearch.search.beam_study import BeamOutcome

log = logging.getLogger(__name__)

HELP = "beam search over hyperpixel layer subsets by validation PCK (resumable)"

def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search")
    g.add_argument("--beam", type=int, default=4, help="beam width (default 4, as the references)")
    g.add_argument("--max-layers", type=int, default=8,
                   help="largest subset size = number of depths (default 8); raising it later "
                        "continues a finished study deeper")
    g.add_argument("--algorithm", default="auto", choices=("auto", "reference", "fixed"),
                   help="reference: HPF/SCOT's beamsearch.py exactly (initial beam 0..beam-1, "
                        "new layers above the base, `break` on duplicates); fixed: every layer "
                        "may start, duplicates skipped. auto (default): reference with "
                        "--compat scot|hpf, else fixed")
    g.add_argument("--layers", default=None,
                   help="search only among these layer ids, e.g. 0-3,8-30 (default: all)")
    g.add_argument("--study", default=None,
                   help="study name (default: beam-DATASET-SPLIT-BACKBONE-VARIANT[-COMPAT])")
    g.add_argument("--storage", default=None,
                   help="study storage: SQLAlchemy URL, journal:FILE or FILE.log "
                        "(default: $SCOTSEARCH_STORAGE, $OPTUNA_STORAGE, "
                        "sqlite:///studies/scotsearch.db)")
    g.add_argument("--chunk", type=int, default=16,
                   help="candidates scored per evaluator call and stored together (default 16); "
                        "a kill loses at most one chunk")
    g.add_argument("--race", type=float, default=None, metavar="Z",
                   help="racing: stop scoring a candidate once Z standard errors of paired "
                        "per-pair PCK differences put it out of the beam (e.g. 3; off by "
                        "default; not with the reference algorithm). A kill then loses the "
                        "current depth's unfinished work")
    g.add_argument("--race-block", type=int, default=64,
                   help="pairs scored between two racing checks (default 64)")
    add_worker_args(g, what="the search")
    add_data_args(p, split="val")
    add_backbone_args(p)
    add_match_args(p, command="beam")


def _parse_layer_ranges(text: str, n: int) -> tuple[int, ...]:
    ids: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                ids.update(range(lo, hi + 1))
            else:
                ids.add(int(part))
        except ValueError:
            raise ConfigError(f"cannot read layer ids from {text!r}; write e.g. 0-3,8,9") from None
    bad = sorted(i for i in ids if not 0 <= i < n)
    if bad:
        raise ConfigError(f"layer id(s) {bad} do not exist (ids 0..{n - 1})")
    if not ids:
        raise ConfigError("--layers names no layer")
    return tuple(sorted(ids))


def default_study_name(
    dataset: str, split: str, backbone: str, variant: str, compat: str | None, reference: bool
) -> str:
    """``beam-demo-val-resnet101-ot-rhm``, plus ``-COMPAT`` for ``--compat`` and
    ``-reference``/``-fixed`` when ``--algorithm`` departs from what the compat mode implies.
    """
    name = f"beam-{dataset}-{split}-{backbone}-{variant}"
    if compat:
        name += f"-{compat}"
    if reference != reference_algorithm(compat):
        name += "-reference" if reference else "-fixed"
    return name


def _run_workers(args: argparse.Namespace, dataset: object, source: object,
                 storage: optuna.storages.BaseStorage, name: str) -> int:
    """--dask-scheduler: N copies of this command search the study together (a team) on
    the cluster. Returns the number of workers."""
    from scotsearch.commands._workers import launch_workers
    from scotsearch.study import completed_trials
    from scotsearch.study import open_study

    def stored() -> int:
        return len(completed_trials(open_study(name, storage), search="beam"))

    # every worker on the study name this process derived
    extra = ["--study", name] if args.study is None else []
    return launch_workers(args, dataset, source, extra_argv=extra, progress=stored,
                          unit="cand")


def run(args: argparse.Namespace) -> int:
    from scotsearch.commands.common import alphas_from_args
    from scotsearch.commands.common import refuse_unsearchable
    from scotsearch.layers import n_layers

    refuse_unsearchable(args, "beam")
    reference = reference_algorithm(args.compat, args.algorithm)
    layer_ids = None
    if args.layers is not None:
        layer_ids = _parse_layer_ranges(args.layers, n_layers(args.backbone))
    # Check the cheap things before loading data and weights.
    check_beam_counts(beam=args.beam, max_layers=args.max_layers, chunk=args.chunk)
    many = check_worker_args(args)
    if many and args.race is not None:
        raise ConfigError("--race scores a depth in one process; drop --workers/--dask-scheduler "
                          "or --race")
    alphas = alphas_from_args(args)
    if len(alphas) != 1:
        raise ConfigError("the beam search optimises PCK at one alpha; give a single --alpha")

    helpers = None
    if many and args.dask_scheduler is None:
        # --workers N on this machine: this process is worker 0 of the team, the others
        # start now and do their imports while it reads the data (README, Several workers).
        from scotsearch.commands._workers import start_helpers

        helpers = start_helpers(args)
        if helpers.device is not None:
            args.device = helpers.device
    try:
        done = _search(args, reference=reference, layer_ids=layer_ids, alphas=alphas,
                       dask=many and helpers is None, helpers=helpers)
    except BaseException:
        if helpers is not None:
            helpers.stop()
        raise
    if helpers is not None:
        helpers.wait()
    _report(args, done)
    return 0


@dataclass
class _Searched:
    """What the summary reports of a search."""

    outcome: BeamOutcome
    workers: int  # 0: this process alone
    name: str
    storage: optuna.storages.BaseStorage
    backbone: str
    alpha: float
    where: str  # the split, backbone and variant


def _search(args: argparse.Namespace, *, reference: bool, layer_ids: tuple[int, ...] | None,
            alphas: Sequence[float], dask: bool, helpers: TeamHelpers | None) -> _Searched:
    from scotsearch.commands.common import check_cache_space
    from scotsearch.commands.common import feature_source
    from scotsearch.commands.common import match_from_args
    from scotsearch.commands.common import open_dataset
    from scotsearch.commands.common import profile_from_args
    from scotsearch.commands.common import resolve_device
    from scotsearch.commands.common import resolve_precision
    from scotsearch.evaluate import Evaluator
    from scotsearch.search.beam_study import run_beam
    from scotsearch.study import open_storage

    dataset = open_dataset(args)
    match = match_from_args(args, dataset)
    profile = profile_from_args(args)
    device = resolve_device(args.device)
    source = feature_source(args, device)
    check_cache_space(dataset, source)
    evaluator = Evaluator(
        dataset, source, match=match, profile=profile, alphas=alphas, thres=args.thres,
        device=device, precision=resolve_precision(args.precision, device),
        engine=args.engine,
    )
    name = args.study or default_study_name(
        dataset.name, dataset.split, source.backbone, match.variant, args.compat, reference
    )
    storage = open_storage(args.storage)
    import optuna

    # Optuna's own INFO lines ("A new study created ...") would tear the progress bars.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    mode = "reference (HPF/SCOT beamsearch.py)" if reference else "fixed"
    log.info("beam search '%s': %s algorithm, beam %d, up to %d layers, %d pairs",
             name, mode, args.beam, args.max_layers, len(dataset.pairs))
    from tqdm.contrib.logging import logging_redirect_tqdm

    workers = 0
    share: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if dask:
        # The workers search; this process then re-derives their result from the study
        # (every candidate is stored by then, so run_beam below scores nothing).
        workers = _run_workers(args, dataset, source, storage, name)
    elif helpers is not None:
        from scotsearch.cache import CachedSource
        from scotsearch.cache import build_cache
        from scotsearch.commands._worker_process import thread_share

        if isinstance(source, CachedSource):
            # Once, before the others begin: they would otherwise extract the same images.
            build_cache(dataset, source, progress=not args.quiet)
        helpers.go()
        workers, share = helpers.n, thread_share(helpers.threads)
    try:
        with share, logging_redirect_tqdm():  # log lines above the bars, not through them
            outcome = run_beam(
                evaluator, study=name, storage=storage, beam=args.beam,
                max_layers=args.max_layers, reference=reference, layers=layer_ids,
                chunk=args.chunk, progress=not args.quiet and not dask, race=args.race,
                race_block=args.race_block, team_size=helpers.n if helpers else None,
            )
    except KeyboardInterrupt:
        log.warning("stopped; every finished chunk is stored, run the same command to resume")
        raise
    where = (f"on {dataset.name} {dataset.split} ({len(dataset.pairs)} pairs, "
             f"{source.backbone}, {match.variant})")
    return _Searched(outcome, workers, name, storage, source.backbone, alphas[0], where)


def _report(args: argparse.Namespace, done: _Searched) -> None:
    from scotsearch.dashboard import save_run_note  # the command line, for optuna-dashboard
    from scotsearch.layers import layer_names
    from scotsearch.study import describe_storage

    outcome, name, storage = done.outcome, done.name, done.storage
    res = outcome.result
    best = res.best
    names = layer_names(done.backbone, best.layers).replace(";", ", ")
    print(f"best layers {best.key} [{names}] (depth {best.depth + 1}): "
          f"PCK@{done.alpha:g} = {best.score:.2f} {done.where}")
    failed = (f", {outcome.failed} of them failed (out of memory; run again to retry them)"
              if outcome.failed else "")
    if done.workers:
        print(f"study '{name}' in {describe_storage(storage)}: {len(res.candidates)} candidates "
              f"(searched by {done.workers} workers{failed})")
    else:
        print(
            f"study '{name}' in {describe_storage(storage)}: {len(res.candidates)} candidates "
            f"({res.n_scored} scored now{failed}, {res.n_reused} already stored)"
        )
    storage_flag = f" --storage {args.storage}" if args.storage else ""
    print(f"export: scotsearch export --study {name}{storage_flag} --format csv")
    save_run_note(storage, name, "beam", getattr(args, "_argv", None))
