"""What a ``scotsearch tune`` run leaves behind: the result, its best and baseline trials."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from scotsearch.study import best_trial


def summary_best(study: optuna.Study) -> FrozenTrial | None:
    """The trial the tune summary and progress bar call the best.

    The study's best by :func:`scotsearch.study.best_trial` with Optuna's ``study.best_trial``
    semantics, which tune has always shown: a trial the Wilcoxon pruner stopped competes with
    its running mean, and a tie goes to the earlier trial whatever the subset sizes.

    Args:
        study: a tune study.

    Returns:
        The trial, or ``None`` before any trial is COMPLETE.
    """
    return best_trial(study, include_partial=True, prefer_fewer_layers=False)


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
        if self.best is None or self.best.value is None:
            return None
        if self.baseline is None or self.baseline.value is None:
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


__all__ = ["TuneResult", "baseline_trial", "summary_best"]
