"""The objective of ``scotsearch tune``: validation PCK of one trial's settings.

The objective is validation PCK computed from cached features (the CAM is cached raw, so the
staircase is applied per trial; the CNN never runs). Each trial scores the pairs in batches
and in one fixed order (:func:`pair_order`), reporting after every batch so that a pruner can
stop it early:

* ``wilcoxon``: per-pair PCK, step = the pair's index in the split. A trial Optuna's
  ``WilcoxonPruner`` stops returns its running mean (ecosystem.md §1.4) so the sampler still
  learns from it; such a trial is COMPLETE with ``user_attrs["pruned"]`` true and ``pck`` NaN
  (its running mean is in ``pck_partial``), so exports skip it.
* ``median`` / ``halving``: the running mean, step = pairs scored so far. A stopped trial is
  PRUNED.
* ``none``: nothing is reported.

Before it picks any setting, a trial checks that the study's budget is not already taken by
the trials that precede it (:func:`_surplus`; see :mod:`scotsearch.search.tune`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence

import numpy as np
import optuna
from optuna.trial import TrialState

from scotsearch.data.pairs import Dataset
from scotsearch.errors import ConfigError
from scotsearch.errors import first_line
from scotsearch.errors import is_out_of_memory
from scotsearch.evaluate import Evaluator
from scotsearch.layers import format_layers
from scotsearch.memory import release_after_out_of_memory
from scotsearch.metrics import mean_pck
from scotsearch.metrics import pooled_pck
from scotsearch.search.space import TuneSpace
from scotsearch.study import Heartbeat
from scotsearch.study import mark_worker
from scotsearch.study import plain
from scotsearch.study import sweep_stale_trials


log = logging.getLogger(__name__)

#: ``--pruner`` values: how a trial reports its intermediate values.
PRUNERS = ("wilcoxon", "median", "halving", "none")


class TrialOutOfMemory(MemoryError):
    """A trial's scoring ran out of memory (host or GPU); its error is in the trial."""


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
        self.layers = None if layers is None else tuple(sorted(set(int(i) for i in layers)))
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
        #: trials of this objective that ran out of memory (failed, with an ``error`` attr)
        self.out_of_memory = 0

    def _out_of_memory(self, trial: optuna.trial.BaseTrial, exc: Exception) -> TrialOutOfMemory:
        # The trial fails (study.optimize catches MemoryError) with its error kept in the
        # trial, and the search goes on; run_tune replaces it with another trial.
        error = f"out of memory: {first_line(exc)}"
        trial.set_user_attr("error", error)
        self.out_of_memory += 1
        log.warning("trial %d ran out of memory (%s); stored as failed, the search goes on",
                    trial.number, first_line(exc))
        release_after_out_of_memory()
        return TrialOutOfMemory(error)

    def __call__(self, trial: optuna.trial.BaseTrial) -> float:
        """Score one trial (a live trial of a study, or a ``FixedTrial``): its mean PCK x 100."""
        if isinstance(trial, optuna.trial.Trial):
            return self._run_live(trial)
        return self._evaluate(trial)

    def _run_live(self, trial: optuna.trial.Trial) -> float:
        # A trial of a study: sweep crashed trials, check the budget, beat while scoring.
        mark_worker(trial.storage, trial._trial_id)
        if self.stale_after is not None:
            sweep_stale_trials(trial.study, stale_after=self.stale_after)
        if self.n_total is not None and _surplus(trial.study, trial.number, self.n_total):
            # Another worker took the last slot between our budget check and this trial's
            # creation. NaN makes Optuna mark the trial FAIL without stopping the loop.
            trial.set_user_attr("surplus", True)
            with contextlib.suppress(RuntimeError):  # raised outside study.optimize only
                trial.study.stop()
            log.info("trial %d dropped: the study already has its %d trials", trial.number,
                     self.n_total)
            return float("nan")
        if self.heartbeat is not None:
            with Heartbeat(trial.storage, trial._trial_id, self.heartbeat):
                return self._evaluate(trial)
        return self._evaluate(trial)

    def _evaluate(self, trial: optuna.trial.BaseTrial) -> float:
        t0 = time.perf_counter()
        match, joint_layers = self.space.suggest(
            trial, self.evaluator.match, joint_backbone=self.joint_backbone
        )
        layers = self.layers if joint_layers is None else joint_layers
        assert layers is not None  # fixed subset, or the joint mode's draw
        self.trials_run += 1
        trial.set_user_attr("search", "tune")
        trial.set_user_attr("layers", format_layers(layers))
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
            try:
                scores = self.evaluator.score([layers], pair_index=batch, match=match)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                raise self._out_of_memory(trial, exc) from None
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
        mean = mean_pck(per_pair)
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
            trial.set_user_attr("pooled_pck", pooled_pck(nc, nk))
        trial.set_user_attr(
            "per_category", {c: mean_pck(per_pair[ix]) for c, ix in sorted(per_cat.items())}
        )
        trial.set_user_attr("wall_time", time.perf_counter() - t0)
        trial.set_user_attr("engine", self.evaluator.engine_used)
        if pruned and self.pruner != "wilcoxon":
            raise optuna.TrialPruned(f"stopped after {len(idx)} pairs at {mean:.2f}")
        return mean
