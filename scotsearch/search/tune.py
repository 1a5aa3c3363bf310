"""``scotsearch tune``: Optuna studies over the staircase and the transport settings.

The trials are scored by :class:`~scotsearch.search.objective.TuneObjective` over the space of
:mod:`scotsearch.search.space`; this module runs a worker: it opens (or creates, or joins) the
study, enqueues the paper's settings as the baseline trial, and optimises up to the budget.

Budget, resume and several workers: ``n_trials`` is the total number of COMPLETE + PRUNED
trials the study should hold, not a number to add. After each trial a worker stops
(``MaxTrialsCallback``) once the finished trials, or the finished plus other workers'
running ones, reach the total. That alone still overshoots when workers finish at the same
moment (up to one trial per extra worker), so each trial also checks, as its first action,
how many non-failed trials precede it by trial number (which the storage hands out
atomically, so all workers agree). When the budget is already taken the trial is dropped
before it picks any setting (FAIL, ``user_attrs["surplus"]``), and the study ends with
exactly the requested total.

Crashed workers: see :mod:`scotsearch.study._heartbeat` (Optuna's heartbeat on RDB storages,
scotsearch's own on journal files; every worker sweeps at start and before each trial).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any

import optuna
import torch
from optuna.exceptions import ExperimentalWarning
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from scotsearch._version import __version__
from scotsearch.config import MatchConfig
from scotsearch.config import RunConfig
from scotsearch.errors import ConfigError
from scotsearch.evaluate import Evaluator
from scotsearch.layers import format_layers
from scotsearch.search.objective import PRUNERS
from scotsearch.search.objective import TrialOutOfMemory
from scotsearch.search.objective import TuneObjective
from scotsearch.search.space import TuneSpace
from scotsearch.search.space_file import load_space
from scotsearch.search.tune_result import TuneResult
from scotsearch.search.tune_result import baseline_trial
from scotsearch.search.tune_result import summary_best
from scotsearch.study import best_layers_of
from scotsearch.study import check_identity
from scotsearch.study import environment
from scotsearch.study import evaluator_identity
from scotsearch.study import join_study
from scotsearch.study import needs_own_heartbeat
from scotsearch.study import open_shared_storage
from scotsearch.study import open_study
from scotsearch.study import pairs_digest
from scotsearch.study import plain
from scotsearch.study import recover_crashed_trials


log = logging.getLogger(__name__)

#: ``--sampler`` values.
SAMPLERS = ("tpe", "random")

#: Trial states that use up the budget.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


# -------------------------------------------------------------------------- identity
def tune_identity(
    evaluator: Evaluator, *, layers: Sequence[int] | None, space: TuneSpace
) -> dict[str, Any]:
    """What a tune study's scores depend on (stored on the study, checked on every resume).

    Args:
        evaluator: dataset, feature source, profile, alphas and the base settings.
        layers: the fixed layer subset, or ``None`` in the joint mode.
        space: the search space (by digest).
    """
    desc = evaluator.source.describe()
    base = evaluator.match
    searched = {"cam", "eps", "n_iter", "exp2", "beta", "gamma"}
    # Settings the space does not search are fixed at the command-line values for the whole
    # study: they belong to the objective's identity.
    fixed = {k: v for k, v in base.to_dict().items() if k not in searched}
    for name in ("cam", "eps", "n_iter", "exp2"):
        if getattr(space, name) is None:
            fixed[name] = getattr(base, name)
    if space.heights is None or space.widths is None:
        fixed["beta"], fixed["gamma"] = list(base.beta), list(base.gamma)
    return plain(
        {
            "kind": "tune",
            **evaluator_identity(evaluator),
            "layers": "joint" if layers is None else format_layers(layers),
            "cache_key": str(desc.get("cache_key", desc.get("key", ""))),
            "space": space.digest(),
            "fixed": fixed,
            "n_pairs": len(evaluator.dataset.pairs),
            "pairs_digest": pairs_digest(evaluator.dataset.pairs),
            "version": __version__,
        }
    )


# -------------------------------------------------------------------------- sampler, pruner
def make_pruner(name: str, *, batch_pairs: int, p_threshold: float = 0.1) -> BasePruner:
    """The pruner for ``--pruner``.

    Args:
        name: one of :data:`PRUNERS`.
        batch_pairs: pairs scored between two pruning checks; no trial is stopped before
            its first batch.
        p_threshold: WilcoxonPruner's significance level.

    Note:
        Per-pair PCK takes few distinct values, so the Wilcoxon test sees ties; SciPy then
        uses a permutation test while fewer than ~50 pairs are compared (a few tenths of a
        second per check on a CPU). Checks at 8-pair batches keep that small next to the
        scoring itself; much smaller batches make the pruner dominate on fast objectives.
    """
    if name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(
            p_threshold=p_threshold, n_startup_steps=max(2, batch_pairs)
        )
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=batch_pairs)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=batch_pairs, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")


def make_sampler(name: str, *, seed: int | None, n_startup_trials: int = 10) -> BaseSampler:
    """The sampler for ``--sampler``: multivariate TPE with constant liar (several workers)."""
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, constant_liar=True, n_startup_trials=n_startup_trials
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


# -------------------------------------------------------------------------- progress
class _ProgressBar:
    """A tqdm bar over the study's total (all workers), showing the best value so far."""

    def __init__(self, *, total: int, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="tune", unit="trial", disable=None)

    def update(self, study: optuna.Study) -> None:
        if self.bar is None:
            return
        self.bar.n = len(study.get_trials(deepcopy=False, states=COUNTED))
        best = summary_best(study)
        if best is not None:
            self.bar.set_postfix_str(f"best {best.value:.2f} (trial {best.number})", refresh=False)
        self.bar.refresh()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.update(study)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -------------------------------------------------------------------------- export
def run_config(study: optuna.Study, trial: FrozenTrial) -> RunConfig:
    """The exportable configuration of a tune trial (what ``scotsearch export`` writes)."""
    ident = study.user_attrs.get("identity") or {}
    return RunConfig.from_identity(
        ident,
        layers=tuple(int(v) for v in str(trial.user_attrs["layers"]).split(",")),
        match=MatchConfig.from_dict(trial.user_attrs["match"]),
    )


# -------------------------------------------------------------------------- the run
def _enqueue_baseline(
    study: optuna.Study, space: TuneSpace, evaluator: Evaluator, layers: Sequence[int] | None,
    baseline_layers: Sequence[int] | None,
) -> None:
    joint = evaluator.source.backbone if layers is None else None
    if joint is not None and not baseline_layers:
        log.warning("joint mode without a baseline layer subset: the paper's settings are not "
                    "enqueued as a baseline trial")
        return
    try:
        params = space.params_of(evaluator.match, layers=baseline_layers, joint_backbone=joint)
    except ConfigError as exc:
        log.warning("the paper's settings are not enqueued as a baseline trial: %s", exc)
        return
    study.enqueue_trial(params=params, user_attrs={"baseline": True}, skip_if_exists=True)


def run_tune(
    evaluator: Evaluator,
    *,
    study_name: str,
    n_trials: int,
    storage: str | BaseStorage | None = None,
    space: TuneSpace | None = None,
    layers: Sequence[int] | None = None,
    baseline_layers: Sequence[int] | None = None,
    pruner: str = "wilcoxon",
    sampler: str = "tpe",
    seed: int | None = None,
    n_startup_trials: int = 10,
    batch_pairs: int = 8,
    stale_after: float = 120.0,
    heartbeat_interval: float = 10.0,
    progress: bool = False,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> TuneResult:
    """Run (or continue, or join) a tune study until it holds ``n_trials`` trials.

    Args:
        evaluator: the validation split and features; ``evaluator.match`` holds the fixed
            settings and the paper's values of the searched ones (the baseline trial).
        study_name: study to create, resume or join.
        n_trials: total COMPLETE + PRUNED trials the study should hold (not "N more").
        storage: a URL/path for :func:`scotsearch.study.open_shared_storage` (heartbeat
            on), a storage object, or ``None`` for the default.
        space: the search space (default: :func:`~scotsearch.search.space_file.load_space`
            ``(None)``).
        layers: the fixed layer subset; ``None`` searches layer bits jointly.
        baseline_layers: joint mode: the subset of the baseline trial.
        pruner: one of :data:`~scotsearch.search.objective.PRUNERS`.
        sampler: one of :data:`SAMPLERS`.
        seed: sampler seed. It is offset by the number of trials already in the study, so a
            resumed run does not replay the first run's random draws; workers started together
            on an empty study should get different seeds (or none).
        n_startup_trials: TPE's random trials before it models the space.
        batch_pairs: pairs scored between two pruning checks.
        stale_after: storages without Optuna's heartbeat: seconds without a sign of life
            after which a RUNNING trial counts as crashed.
        heartbeat_interval: storages without Optuna's heartbeat: seconds between beats.
        progress: show a progress bar with the best value so far.
        on_trial: called after every trial of this worker (e.g. for logging).

    Returns:
        The study's state after this call.

    Raises:
        ConfigError: bad arguments, or the study exists with another identity.
    """
    if n_trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {n_trials}")
    evaluator.dataset.require_keypoint_pck("tune")
    if evaluator.match.similarity != "ot":
        raise ConfigError("scotsearch tune searches transport settings; use an OT variant "
                          "(e.g. --variant ot-rhm-stair)")
    if layers is not None and not layers:
        raise ConfigError("no layer given")
    space = space or load_space(None)
    if layers is not None:
        bad = [i for i in layers if not 0 <= int(i) < len(evaluator.specs)]
        if bad:
            raise ConfigError(f"layer(s) {bad} do not exist for {evaluator.source.backbone}")
    st = storage if isinstance(storage, BaseStorage) else open_shared_storage(storage)
    identity = tune_identity(evaluator, layers=layers, space=space)

    with warnings.catch_warnings():
        # WilcoxonPruner, multivariate TPE, the heartbeat helpers are experimental in Optuna;
        # they are used deliberately, so their warnings would only be noise.
        warnings.simplefilter("ignore", ExperimentalWarning)
        pruner_obj = make_pruner(pruner, batch_pairs=batch_pairs)
        sampler_obj = make_sampler(sampler, seed=seed, n_startup_trials=n_startup_trials)
        study, created = join_study(study_name, st, sampler=sampler_obj, pruner=pruner_obj)
        check_identity(study, identity)
        if created or study.user_attrs.get("environment") is None:
            study.set_user_attr("environment", environment())
        if created:
            # Only the worker that created the study enqueues the baseline: enqueue_trial's
            # skip_if_exists does not de-duplicate across processes (ecosystem.md §1.5).
            _enqueue_baseline(study, space, evaluator, layers, baseline_layers)

        recover_crashed_trials(study, st, stale_after=stale_after)
        own_heartbeat = needs_own_heartbeat(st)
        done = len(study.get_trials(deepcopy=False, states=COUNTED))
        if seed is not None and done:
            study.sampler = make_sampler(
                sampler, seed=seed + done, n_startup_trials=n_startup_trials
            )

        objective = TuneObjective(
            evaluator, space, layers=layers, pruner=pruner, batch_pairs=batch_pairs,
            n_total=n_trials,
            heartbeat=heartbeat_interval if own_heartbeat else None,
            stale_after=stale_after if own_heartbeat else None,
        )
        bar = _ProgressBar(total=n_trials, enabled=progress)
        bar.update(study)
        callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [
            MaxTrialsCallback(n_trials, states=COUNTED),
            # Also stop when the remaining budget is held by other workers' running trials,
            # instead of asking for a trial that the surplus guard would then drop.
            MaxTrialsCallback(n_trials, states=(*COUNTED, TrialState.RUNNING)),
            bar,
        ]
        if on_trial is not None:
            callbacks.append(on_trial)
        try:
            budget = n_trials - done
            while budget > 0:
                # n_trials caps this worker at what was missing when it started; the callback
                # and the surplus guard stop it earlier when other workers fill the study.
                # A trial that runs out of memory is marked FAIL with its error (the
                # objective's TrialOutOfMemory; no traceback) and the study goes on instead
                # of ending the whole run; failed trials are replaced by new ones below.
                failed = objective.out_of_memory
                with _no_traceback_for(TrialOutOfMemory):
                    study.optimize(objective, n_trials=budget, callbacks=callbacks,
                                   catch=(MemoryError, torch.OutOfMemoryError))
                failed = objective.out_of_memory - failed
                held = len(study.get_trials(deepcopy=False,
                                            states=(*COUNTED, TrialState.RUNNING)))
                # At most n_trials failures per worker: a study whose every trial runs out
                # of memory ends instead of trying forever.
                if objective.out_of_memory >= n_trials:
                    break
                budget = min(failed, n_trials - held)
        finally:
            bar.close()

    trials = study.get_trials(deepcopy=False)
    return TuneResult(
        study_name=study_name,
        n_trials=sum(1 for t in trials if t.state in COUNTED),
        n_requested=n_trials,
        n_run=objective.trials_run,
        pairs_scored=objective.pairs_scored,
        best=summary_best(study),
        baseline=baseline_trial(study),
        running=sum(1 for t in trials if t.state == TrialState.RUNNING),
    )


@contextlib.contextmanager
def _no_traceback_for(kind: type[BaseException]) -> Iterator[None]:
    """Drop the traceback Optuna logs with a failed trial whose error is a ``kind``.

    The error itself (one line, logged by Optuna and by the objective) is kept.
    """

    def strip(record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], kind):
            record.exc_info = None
            record.exc_text = None
        return True

    logger = logging.getLogger("optuna.study._optimize")
    logger.addFilter(strip)
    try:
        yield
    finally:
        logger.removeFilter(strip)


def layers_from_beam(
    study_name: str, storage: BaseStorage, backbone: str, dataset: str
) -> tuple[int, ...]:
    """The layer subset ``tune --from-beam`` takes: the best of a beam study.

    Args:
        study_name: the beam study (in ``storage``).
        storage: where it is stored.
        backbone: the tune run's backbone: the beam must have searched its layers.
        dataset: the tune run's dataset (another one is only warned about).

    Returns:
        The layer ids of the study's best trial (:func:`scotsearch.study.best_layers_of`).

    Raises:
        ConfigError: the beam study searched another backbone, or has no completed trial.
        ScotsearchError: there is no such study.
    """
    beam = open_study(study_name, storage, create=False)
    ident = beam.user_attrs.get("identity") or {}
    if ident.get("backbone") not in (None, backbone):
        raise ConfigError(
            f"beam study '{study_name}' searched {ident.get('backbone')} layers; this tune run "
            f"uses {backbone}"
        )
    if ident.get("dataset") not in (None, dataset):
        log.warning("beam study '%s' was run on %s, tuning on %s", study_name,
                    ident.get("dataset"), dataset)
    return best_layers_of(beam)


__all__ = [
    "COUNTED",
    "SAMPLERS",
    "layers_from_beam",
    "make_pruner",
    "make_sampler",
    "run_config",
    "run_tune",
    "tune_identity",
]
