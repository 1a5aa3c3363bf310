"""``scotsearch tune``: Optuna studies over the staircase and the transport settings.

The objective is validation PCK computed from cached features (the CAM is cached raw, so the
staircase is applied per trial; the CNN never runs). Each trial scores the pairs in batches
and in one fixed order, reporting after every batch so that a pruner can stop it early:

* ``wilcoxon`` (default): Optuna's ``WilcoxonPruner`` on per-pair PCK, step = the pair's
  index in the split. A trial it stops returns its running mean (ecosystem.md §1.4) so the
  sampler still learns from it; such a trial is COMPLETE with ``user_attrs["pruned"]`` true
  and ``pck`` NaN (its running mean is in ``pck_partial``), so exports skip it.
* ``median`` / ``halving``: ``MedianPruner`` / ``SuccessiveHalvingPruner`` on the running mean,
  step = pairs scored so far. A stopped trial is PRUNED.
* ``none``.

Budget, resume and several workers: ``n_trials`` is the total number of COMPLETE + PRUNED
trials the study should hold, not a number to add. After each trial a worker stops
(``MaxTrialsCallback``) once the finished trials, or the finished plus other workers'
running ones, reach the total. That alone still overshoots when workers finish at the same
moment (up to one trial per extra worker), so each trial also checks, as its first action,
how many non-failed trials precede it by trial number (which the storage hands out
atomically, so all workers agree). When the budget is already taken the trial is dropped
before it picks any setting (FAIL, ``user_attrs["surplus"]``), and the study ends with
exactly the requested total.

Crashed workers: RDB storages opened with a heartbeat (``open_storage(heartbeat=True)``) let
Optuna fail a trial whose worker went silent and re-queue its parameters
(``RetryHeartbeatStaleTrialCallback``). Journal storages have no heartbeat, so scotsearch
keeps its own: the running trial refreshes a system attribute every few seconds, and every
worker sweeps, at start and before each trial, RUNNING trials silent for ``stale_after``
seconds: FAIL, then re-queue with the same parameters (the same Optuna callback).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.exceptions import ExperimentalWarning
from optuna.exceptions import UpdateFinishedTrialError
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.storages import InMemoryStorage
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from scotsearch._version import __version__
from scotsearch.config import MatchConfig
from scotsearch.config import RunConfig
from scotsearch.data.pairs import Dataset
from scotsearch.errors import ConfigError
from scotsearch.errors import ScotsearchError
from scotsearch.evaluate import Evaluator
from scotsearch.layers import format_layers as layers_key
from scotsearch.study import check_identity
from scotsearch.study import evaluator_identity
from scotsearch.study import environment
from scotsearch.study import open_storage
from scotsearch.study import plain
from scotsearch.tune_space import TuneSpace
from scotsearch.tune_space import load_space


log = logging.getLogger(__name__)

PRUNERS = ("wilcoxon", "median", "halving", "none")
SAMPLERS = ("tpe", "random")

#: Trial states that use up the budget.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)

#: System attribute a running trial refreshes on storages without Optuna's heartbeat.
HEARTBEAT_ATTR = "scotsearch:heartbeat"


# -------------------------------------------------------------------------- pairs, identity
def pair_order(dataset: Dataset) -> list[int]:
    """The fixed order in which every trial scores the pairs.

    A pseudo-random permutation derived from the pair ids alone (sha256), so it is the same
    in every worker and every run and needs no stored seed, while consecutive pairs of one
    category do not come first together (which would bias early pruning decisions).
    """
    keys = [
        (hashlib.sha256(p.pair_id.encode()).hexdigest(), i) for i, p in enumerate(dataset.pairs)
    ]
    return [i for _, i in sorted(keys)]


def pairs_digest(dataset: Dataset) -> str:
    """Short hash of the split's pairs (ids and images): a changed split is a new objective."""
    h = hashlib.sha256()
    for p in dataset.pairs:
        h.update(f"{p.pair_id}|{p.src_path}|{p.trg_path}\n".encode())
    return h.hexdigest()[:16]


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
            "layers": "joint" if layers is None else layers_key(layers),
            "cache_key": str(desc.get("cache_key", desc.get("key", ""))),
            "space": space.digest(),
            "fixed": fixed,
            "n_pairs": len(evaluator.dataset.pairs),
            "pairs_digest": pairs_digest(evaluator.dataset),
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


# -------------------------------------------------------------------------- storage
class _DropJournalHeartbeatWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "journal storages have no trial heartbeat" not in record.getMessage()


@contextlib.contextmanager
def _quiet_journal_warning() -> Iterator[None]:
    # open_storage warns that journal storages have no heartbeat; tune keeps its own
    # (sweep_stale_trials), so the warning would be wrong here.
    study_log = logging.getLogger("scotsearch.study")
    filt = _DropJournalHeartbeatWarning()
    study_log.addFilter(filt)
    try:
        yield
    finally:
        study_log.removeFilter(filt)


def open_tune_storage(url: str | None, *, attempts: int = 5) -> BaseStorage:
    """:func:`scotsearch.study.open_storage` with the heartbeat, tolerant of a racing creator.

    Several workers started together on a new SQLite file all try to create Optuna's tables;
    SQLAlchemy's ``create_all`` is not atomic across processes, so all but the first can fail
    with "table ... already exists" (or a unique-key clash on the version row). Opening again
    finds the finished schema.
    """
    for attempt in range(attempts):
        try:
            with _quiet_journal_warning():
                return open_storage(url, heartbeat=True)
        except ScotsearchError as exc:
            text = str(exc)
            racing = "already exists" in text or "UNIQUE constraint" in text
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


# -------------------------------------------------------------------------- crash handling
def _has_optuna_heartbeat(storage: BaseStorage) -> bool:
    get = getattr(storage, "get_heartbeat_interval", None)
    return callable(get) and get() is not None


class _Heartbeat:
    """Refreshes :data:`HEARTBEAT_ATTR` of a running trial from a daemon thread."""

    def __init__(self, storage: BaseStorage, trial_id: int, interval: float) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scotsearch-heartbeat", daemon=True)

    def _beat(self) -> bool:
        try:
            self._storage.set_trial_system_attr(self._trial_id, HEARTBEAT_ATTR, time.time())
            return True
        except Exception:  # noqa: BLE001 - a finished (or swept) trial simply stops beating
            return False

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if not self._beat():
                return

    def __enter__(self) -> _Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _last_sign_of_life(t: FrozenTrial) -> float:
    start = t.datetime_start.timestamp() if t.datetime_start is not None else 0.0
    beat = t.system_attrs.get(HEARTBEAT_ATTR)
    # A retried trial inherits its predecessor's system attrs, old heartbeat included: only a
    # beat after this trial started counts.
    return max(start, float(beat)) if isinstance(beat, (int, float)) else start


def sweep_stale_trials(
    study: optuna.Study, *, stale_after: float, max_retry: int = 3
) -> list[int]:
    """Fail RUNNING trials silent for ``stale_after`` seconds and re-queue their parameters.

    For storages without Optuna's heartbeat (journal files): a trial's sign of life is the
    later of its start and its last :data:`HEARTBEAT_ATTR`. Safe to run from several workers:
    only the worker whose FAIL update lands re-queues the trial.

    Returns:
        Numbers of the trials failed by this call.
    """
    now = time.time()
    failed = []
    retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if now - _last_sign_of_life(t) < stale_after:
            continue
        try:
            study.tell(trial=t.number, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, RuntimeError):
            # Another worker swept it first, or its owner finished it meanwhile: only the
            # worker whose FAIL landed re-queues it.
            continue
        log.warning(
            "trial %d was running for %.0f s without a sign of life: marked failed, its "
            "settings are queued again", t.number, now - _last_sign_of_life(t),
        )
        # The retry copies params, distributions and attrs; the state of `t` is not read.
        retry(study, t)
        failed.append(t.number)
    return failed


def recover_crashed_trials(
    study: optuna.Study, storage: BaseStorage, *, stale_after: float
) -> list[int]:
    """Fail and re-queue the trials of crashed workers, whatever the storage.

    RDB storages with a heartbeat use Optuna's ``fail_stale_trials`` (which runs the retry
    callback configured on the storage); other persistent storages use
    :func:`sweep_stale_trials`; in-memory storages cannot outlive a crash.

    Returns:
        Numbers of the trials failed (only known for the sweep; empty for Optuna's path).
    """
    if isinstance(storage, InMemoryStorage):
        return []
    if _has_optuna_heartbeat(storage):
        optuna.storages.fail_stale_trials(study)
        return []
    return sweep_stale_trials(study, stale_after=stale_after)


# -------------------------------------------------------------------------- objective
def _surplus(study: optuna.Study, number: int, n_total: int) -> bool:
    """Whether ``n_total`` non-failed trials already precede trial ``number``.

    Trial numbers are unique and increasing across workers, so every worker reaches the same
    verdict about the same trial; WAITING trials count because a queued trial (the baseline,
    a retry) is popped before any new one is created.
    """
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    ahead = sum(1 for t in study.get_trials(deepcopy=False, states=states) if t.number < number)
    return ahead >= n_total


class TuneObjective:
    """Validation PCK of one trial's settings, scored batch by batch with pruning checks.

    Args:
        evaluator: scores pairs (its ``match`` is the base the space modifies).
        space: the search space.
        layers: the fixed layer subset, or ``None`` for the joint mode.
        pruner: one of :data:`PRUNERS` (how intermediate values are reported).
        batch_pairs: pairs between two reports.
        n_total: the study's trial budget (checked by the surplus guard; ``None`` skips it).
        heartbeat: refresh interval in seconds of scotsearch's own heartbeat (``None``: off).
        stale_after: sweep RUNNING trials silent this long before each trial (``None``: off).
    """

    def __init__(
        self,
        evaluator: Evaluator,
        space: TuneSpace,
        *,
        layers: Sequence[int] | None,
        pruner: str = "wilcoxon",
        batch_pairs: int = 8,
        n_total: int | None = None,
        heartbeat: float | None = None,
        stale_after: float | None = None,
    ) -> None:
        if pruner not in PRUNERS:
            raise ConfigError(f"unknown pruner {pruner!r}; choose one of {', '.join(PRUNERS)}")
        if batch_pairs < 1:
            raise ConfigError(f"batch size must be >= 1 pair, got {batch_pairs}")
        self.evaluator = evaluator
        self.space = space
        self.layers = None if layers is None else tuple(sorted(set(int(l) for l in layers)))
        self.joint_backbone = evaluator.source.backbone if layers is None else None
        self.pruner = pruner
        self.batch_pairs = batch_pairs
        self.n_total = n_total
        self.heartbeat = heartbeat
        self.stale_after = stale_after
        self.order = pair_order(evaluator.dataset)
        #: pairs scored by this objective over all its trials (to measure what pruning saves)
        self.pairs_scored = 0
        #: trials this objective evaluated (surplus trials excluded)
        self.trials_run = 0

    def __call__(self, trial: optuna.trial.BaseTrial) -> float:
        live = isinstance(trial, optuna.trial.Trial)
        if live and self.stale_after is not None:
            sweep_stale_trials(trial.study, stale_after=self.stale_after)
        if live and self.n_total is not None and _surplus(trial.study, trial.number, self.n_total):
            # Another worker took the last slot between our budget check and this trial's
            # creation. NaN makes Optuna mark the trial FAIL without stopping the loop.
            trial.set_user_attr("surplus", True)
            with contextlib.suppress(RuntimeError):  # raised outside study.optimize only
                trial.study.stop()
            log.info("trial %d dropped: the study already has its %d trials", trial.number,
                     self.n_total)
            return float("nan")
        if live and self.heartbeat is not None:
            with _Heartbeat(trial.storage, trial._trial_id, self.heartbeat):
                return self._evaluate(trial)
        return self._evaluate(trial)

    def _evaluate(self, trial: optuna.trial.BaseTrial) -> float:
        t0 = time.perf_counter()
        match, joint_layers = self.space.suggest(
            trial, self.evaluator.match, joint_backbone=self.joint_backbone
        )
        layers = self.layers if joint_layers is None else joint_layers
        self.trials_run += 1
        trial.set_user_attr("search", "tune")
        trial.set_user_attr("layers", layers_key(layers))
        trial.set_user_attr("match", plain(match.to_dict()))
        if not layers:
            trial.set_user_attr("note", "no layer selected")
            raise optuna.TrialPruned("no layer selected")
        if match.cam == "stair" and sum(match.gamma) <= 0:
            trial.set_user_attr("note", "all stair widths are 0")
            raise optuna.TrialPruned("all stair widths are 0")
        baseline = bool(trial.user_attrs.get("baseline", False))
        n_correct: dict[int, int] = {}  # pair index -> correct keypoints (first alpha)
        n_kps: dict[int, int] = {}
        pck: list[float] = []  # per-pair PCK x 100, in scoring order
        pruned = False
        for start in range(0, len(self.order), self.batch_pairs):
            batch = self.order[start : start + self.batch_pairs]
            scores = self.evaluator.score([layers], pair_index=batch, match=match)
            values = (scores.pck[0, 0, :] * 100.0).tolist()
            for k, i in enumerate(batch):
                n_correct[i] = int(scores.n_correct[0, 0, k])
                n_kps[i] = int(scores.n_kps[k])
            self.pairs_scored += len(batch)
            pck += values
            if self.pruner == "wilcoxon":
                for i, v in zip(batch, values):
                    trial.report(float(v), step=int(i))
            elif self.pruner != "none":
                trial.report(float(np.mean(pck)), step=len(pck))
            # The baseline is never stopped: it is the reference every result is compared to.
            last = start + self.batch_pairs >= len(self.order)
            if not baseline and not last and trial.should_prune():
                pruned = True
                break
        # Averaged in dataset order exactly as Scores.mean() does, so that re-evaluating the
        # exported configuration gives the stored value to the last bit.
        idx = sorted(n_correct)
        nc = np.array([n_correct[i] for i in idx], dtype=np.int64)
        nk = np.array([n_kps[i] for i in idx], dtype=np.int64)
        per_pair = nc / nk
        mean = float(per_pair.mean() * 100.0)
        per_cat: dict[str, list[int]] = {}
        for k, i in enumerate(idx):
            per_cat.setdefault(self.evaluator.dataset.pairs[i].category, []).append(k)
        trial.set_user_attr("pruned", pruned)
        trial.set_user_attr("pairs", len(idx))
        # An early-stopped trial has no full-split PCK: NaN keeps it out of exports (which
        # skip NaN) while its running mean stays visible.
        trial.set_user_attr("pck", float("nan") if pruned else mean)
        if pruned:
            trial.set_user_attr("pck_partial", mean)
        else:
            trial.set_user_attr("pooled_pck", float(nc.sum() / nk.sum() * 100.0))
        trial.set_user_attr(
            "per_category",
            {c: float(per_pair[ix].mean() * 100.0) for c, ix in sorted(per_cat.items())},
        )
        trial.set_user_attr("wall_time", time.perf_counter() - t0)
        if pruned and self.pruner != "wilcoxon":
            raise optuna.TrialPruned(f"stopped after {len(idx)} pairs at {mean:.2f}")
        return mean


# -------------------------------------------------------------------------- progress
class _ProgressBar:
    """A tqdm bar over the study's total (all workers), showing the best value so far."""

    def __init__(self, *, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="tune", unit="trial", disable=None)

    def update(self, study: optuna.Study) -> None:
        if self.bar is None:
            return
        self.bar.n = len(study.get_trials(deepcopy=False, states=COUNTED))
        best = _best_trial(study)
        if best is not None:
            self.bar.set_postfix_str(f"best {best.value:.2f} (trial {best.number})", refresh=False)
        self.bar.refresh()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.update(study)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -------------------------------------------------------------------------- results
def _best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


@dataclass
class TuneResult:
    """What a tune run leaves behind.

    Attributes:
        study_name: the study.
        n_trials: COMPLETE + PRUNED trials in the study now (all workers, all runs).
        n_requested: the requested total.
        n_run: trials this call ran (including pruned ones).
        pairs_scored: pairs this call scored (all trials).
        best: the best trial (``None`` without a completed trial).
        baseline: the trial of the paper's settings (``None`` if missing or not finished).
        running: trials still RUNNING (other workers, or crashed ones awaiting a retry).
    """

    study_name: str
    n_trials: int
    n_requested: int
    n_run: int
    pairs_scored: int
    best: FrozenTrial | None
    baseline: FrozenTrial | None
    running: int = 0

    @property
    def improvement(self) -> float | None:
        """Best PCK minus the baseline's, in PCK points (``None`` if either is missing)."""
        if self.best is None or self.baseline is None or self.baseline.value is None:
            return None
        return float(self.best.value) - float(self.baseline.value)

    def summary(self) -> str:
        """Human-readable verdict: best vs the paper's settings."""
        lines = [f"study '{self.study_name}': {self.n_trials}/{self.n_requested} trials"]
        if self.running:
            lines.append(
                f"  {self.running} trial(s) still running (another worker, or a crashed one that "
                "will be retried by the next run)"
            )
        if self.best is None:
            lines.append("  no trial has finished")
            return "\n".join(lines)
        attrs = self.best.user_attrs
        lines.append(
            f"  best: {self.best.value:.2f} PCK (trial {self.best.number}), layers "
            f"{attrs.get('layers', '?')}, {_short(attrs.get('match'))}"
        )
        if self.baseline is None:
            lines.append(
                "  the paper's settings were not scored in this study (outside the space?)"
            )
        else:
            gain = self.improvement
            assert gain is not None
            if gain > 0:
                lines.append(
                    f"  improved by {gain:+.2f} PCK points over the paper's settings "
                    f"({self.baseline.value:.2f}, trial {self.baseline.number})"
                )
            else:
                lines.append(
                    f"  could not improve on the paper's settings ({self.baseline.value:.2f}, "
                    f"trial {self.baseline.number}) in {self.n_trials} trials"
                )
        return "\n".join(lines)


def _short(match: Mapping[str, Any] | None) -> str:
    if not match:
        return ""
    parts = [
        f"cam {match.get('cam')}",
        f"eps {match.get('eps'):.4g}",
        f"n_iter {match.get('n_iter')}",
        f"exp2 {match.get('exp2'):.3g}",
    ]
    if match.get("cam") == "stair":
        parts.append("beta " + ",".join(f"{v:g}" for v in match.get("beta", ())))
        parts.append("gamma " + ",".join(f"{v:g}" for v in match.get("gamma", ())))
    return ", ".join(parts)


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The finished trial of the enqueued paper settings (the first, if retried)."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("baseline") and not t.user_attrs.get("pruned"):
            return t
    return None


def run_config(study: optuna.Study, trial: FrozenTrial) -> RunConfig:
    """The exportable configuration of a tune trial (what ``scotsearch export`` writes)."""
    ident = study.user_attrs.get("identity") or {}
    return RunConfig.from_identity(
        ident,
        layers=tuple(int(v) for v in str(trial.user_attrs["layers"]).split(",")),
        match=MatchConfig.from_dict(trial.user_attrs["match"]),
    )


# -------------------------------------------------------------------------- the run
def _open(
    name: str, storage: BaseStorage, sampler: BaseSampler, pruner: BasePruner
) -> tuple[optuna.Study, bool]:
    # create_study without load_if_exists fails atomically on an existing name (unique key in
    # the database, first record in a journal): exactly one of several workers started
    # together learns that it created the study, and only that one enqueues the baseline.
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, direction="maximize", sampler=sampler,
            pruner=pruner, load_if_exists=False,
        )
        return study, True
    except DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        if study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise ConfigError(
                f"study '{name}' minimises; scotsearch studies maximise PCK"
            ) from None
        return study, False


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
        storage: a URL/path for :func:`open_tune_storage` (heartbeat on), a
            storage object, or ``None`` for the default.
        space: the search space (default: :func:`load_space` ``(None)``).
        layers: the fixed layer subset; ``None`` searches layer bits jointly.
        baseline_layers: joint mode: the subset of the baseline trial.
        pruner: one of :data:`PRUNERS`.
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
    if evaluator.match.similarity != "ot":
        raise ConfigError("scotsearch tune searches transport settings; use an OT variant "
                          "(e.g. --variant ot-rhm-stair)")
    if layers is not None and not layers:
        raise ConfigError("no layer given")
    space = space or load_space(None)
    if layers is not None:
        bad = [l for l in layers if not 0 <= int(l) < len(evaluator.specs)]
        if bad:
            raise ConfigError(f"layer(s) {bad} do not exist for {evaluator.source.backbone}")
    st = storage if isinstance(storage, BaseStorage) else open_tune_storage(storage)
    identity = tune_identity(evaluator, layers=layers, space=space)

    with warnings.catch_warnings():
        # WilcoxonPruner, multivariate TPE, the heartbeat helpers are experimental in Optuna;
        # they are used deliberately, so their warnings would only be noise.
        warnings.simplefilter("ignore", ExperimentalWarning)
        pruner_obj = make_pruner(pruner, batch_pairs=batch_pairs)
        sampler_obj = make_sampler(sampler, seed=seed, n_startup_trials=n_startup_trials)
        study, created = _open(study_name, st, sampler_obj, pruner_obj)
        check_identity(study, identity)
        if created or study.user_attrs.get("environment") is None:
            study.set_user_attr("environment", environment())
        if created:
            # Only the worker that created the study enqueues the baseline: enqueue_trial's
            # skip_if_exists does not de-duplicate across processes (ecosystem.md §1.5).
            _enqueue_baseline(study, space, evaluator, layers, baseline_layers)

        recover_crashed_trials(study, st, stale_after=stale_after)
        own_heartbeat = not isinstance(st, InMemoryStorage) and not _has_optuna_heartbeat(st)
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
            if done < n_trials:
                # n_trials caps this worker at what was missing when it started; the callback
                # and the surplus guard stop it earlier when other workers fill the study.
                study.optimize(objective, n_trials=n_trials - done, callbacks=callbacks)
        finally:
            bar.close()

    trials = study.get_trials(deepcopy=False)
    return TuneResult(
        study_name=study_name,
        n_trials=sum(1 for t in trials if t.state in COUNTED),
        n_requested=n_trials,
        n_run=objective.trials_run,
        pairs_scored=objective.pairs_scored,
        best=_best_trial(study),
        baseline=baseline_trial(study),
        running=sum(1 for t in trials if t.state == TrialState.RUNNING),
    )


def best_layers_of(study: optuna.Study) -> tuple[int, ...]:
    """The layer subset of a study's best COMPLETE trial (for ``--from-beam``).

    Raises:
        ConfigError: the study has no completed trial with a layer subset.
    """
    best = None
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if "layers" not in t.user_attrs or t.value is None or math.isnan(t.value):
            continue
        if t.user_attrs.get("pruned"):
            continue
        if best is None or t.value > best.value:
            best = t
    if best is None:
        raise ConfigError(f"study '{study.study_name}' has no completed trial with a layer subset")
    text = str(best.user_attrs["layers"])
    return tuple(int(v) for v in text.split(",") if v)


__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "TuneObjective",
    "TuneResult",
    "baseline_trial",
    "best_layers_of",
    "make_pruner",
    "make_sampler",
    "open_tune_storage",
    "pair_order",
    "recover_crashed_trials",
    "run_config",
    "run_tune",
    "sweep_stale_trials",
    "tune_identity",
]
