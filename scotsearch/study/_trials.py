"""Layer-subset trials: how a scored subset is stored, read back and ranked.

Every scored candidate of a search is one COMPLETE Optuna trial:

* params: one ``IntDistribution(0, 1)`` per backbone layer, ``L00`` .. ``L33`` (1 = in the
  subset), so samplers can later continue from a beam's trials (ecosystem.md §1.6);
* value: validation PCK x 100 (mean over pairs);
* user attrs: ``search`` (``beam``/``tune``), ``layers`` (``"0,19,27"``), ``match``
  (``MatchConfig.to_dict()``), ``pck``, ``per_category``, ``wall_time`` and, for the beam,
  ``depth`` and ``parent``. A trial stopped before the end of the split (a pruned tune trial,
  a raced-out beam candidate) has ``pruned`` true: its value is a mean over part of the split.

A beam candidate whose scoring ran out of memory is one FAIL trial with the same params and
an ``error`` attr instead (:func:`add_failed_layer_trial`); a re-run scores it again.

:func:`rank_key` is the one ranking of scored subsets; :func:`best_trial` applies it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from scotsearch.errors import ConfigError
from scotsearch.study._identity import plain


def layer_param(i: int) -> str:
    """The trial parameter name of layer ``i``: ``L00`` .. ``L33``.

    The tune search's joint mode names its layer bits the same way, so both kinds of study
    can share a database.
    """
    return f"L{int(i):02d}"


def layer_distributions(n_layers: int) -> dict[str, BaseDistribution]:
    """One 0/1 integer parameter per layer.

    Args:
        n_layers: layers of the backbone.

    Returns:
        ``L00`` .. ``L{n-1}`` -> ``IntDistribution(0, 1)``.
    """
    return {layer_param(i): IntDistribution(0, 1) for i in range(n_layers)}


def layer_params(layers: Iterable[int], n_layers: int) -> dict[str, int]:
    """The 0/1 parameters of a subset.

    Args:
        layers: the subset's layer ids.
        n_layers: layers of the backbone.

    Returns:
        One entry per backbone layer: 1 for the subset's layers, else 0.
    """
    members = {int(i) for i in layers}
    return {layer_param(i): int(i in members) for i in range(n_layers)}


def add_layer_trial(
    study: optuna.Study,
    *,
    layers: Iterable[int],
    n_layers: int,
    value: float,
    user_attrs: Mapping[str, Any],
) -> None:
    """Record a subset scored outside Optuna as one COMPLETE trial.

    Args:
        study: where the trial goes.
        layers: the subset's layer ids.
        n_layers: layers of the backbone (one parameter each).
        value: the trial's value (PCK x 100).
        user_attrs: the trial's user attrs (made plain first).
    """
    trial = optuna.trial.create_trial(
        params=layer_params(layers, n_layers),
        distributions=layer_distributions(n_layers),
        value=float(value),
        user_attrs=plain(dict(user_attrs)),
    )
    study.add_trial(trial)


def add_failed_layer_trial(
    study: optuna.Study,
    *,
    layers: Iterable[int],
    n_layers: int,
    user_attrs: Mapping[str, Any],
) -> None:
    """Record a subset whose scoring failed (ran out of memory) as one FAIL trial.

    It has no value, so no ranking, export or resume counts it: a re-run scores the subset
    again. ``user_attrs`` say why (``error``).

    Args:
        study: where the trial goes.
        layers: the subset's layer ids.
        n_layers: layers of the backbone (one parameter each).
        user_attrs: the trial's user attrs (made plain first).
    """
    trial = optuna.trial.create_trial(
        params=layer_params(layers, n_layers),
        distributions=layer_distributions(n_layers),
        user_attrs=plain(dict(user_attrs)),
        state=TrialState.FAIL,
    )
    study.add_trial(trial)


def completed_trials(study: optuna.Study, *, search: str | None = None) -> list[FrozenTrial]:
    """COMPLETE trials carrying a ``layers`` attr (of one ``search`` kind if given).

    Args:
        study: the study to read.
        search: ``beam`` or ``tune`` to keep one kind only; ``None`` keeps both.

    Returns:
        The trials in trial-number order.
    """
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if "layers" not in t.user_attrs or t.value is None:
            continue
        if search is not None and t.user_attrs.get("search") != search:
            continue
        out.append(t)
    return out


def rank_key(
    value: float, layers: str, number: int, *, prefer_fewer_layers: bool = True
) -> tuple[float, int, int]:
    """Sort key of a scored subset, best first: the one ranking of layer-subset trials.

    Higher value first; on a tie, fewer layers first (the beam search's own tie rule), then
    the earlier trial. The ``tune`` command's choices leave the layer count out
    (``prefer_fewer_layers=False``): they keep the earlier trial, as Optuna does.

    Args:
        value: the trial's PCK x 100.
        layers: the subset's text form, ``"0,19,27"``.
        number: the trial number.
        prefer_fewer_layers: whether a tie goes to the smaller subset before the earlier
            trial.

    Returns:
        A tuple that sorts ascending from best to worst.

    Examples:
        >>> rows = [(60.0, "1,2", 1), (60.0, "1", 2), (65.0, "0,1,2", 3)]
        >>> [r[2] for r in sorted(rows, key=lambda r: rank_key(*r))]
        [3, 2, 1]
        >>> [r[2] for r in sorted(rows, key=lambda r: rank_key(*r, prefer_fewer_layers=False))]
        [3, 1, 2]
    """
    size = len(str(layers).split(",")) if prefer_fewer_layers else 0
    return (-value, size, number)


def best_trial(
    study: optuna.Study,
    *,
    search: str | None = None,
    include_partial: bool = False,
    prefer_fewer_layers: bool = True,
) -> FrozenTrial | None:
    """The best completed layer-subset trial by :func:`rank_key`, or ``None``.

    Unlike ``study.best_trial`` this skips, by default, trials stopped before the end of the
    split (pruned tune trials and raced-out beam candidates: their value is a mean over part
    of the split) and breaks ties like the beam search: fewer layers, then the earlier trial.

    Args:
        study: the study to read.
        search: ``beam`` or ``tune`` to rank one kind only.
        include_partial: let stopped trials compete with their partial value (what Optuna's
            ``study.best_trial`` does; the ``tune`` summary keeps it).
        prefer_fewer_layers: see :func:`rank_key`.

    Returns:
        The best trial, or ``None`` when no trial qualifies.
    """
    best, best_key = None, None
    for t in completed_trials(study, search=search):
        assert t.value is not None  # completed_trials keeps valued trials only
        if math.isnan(t.value) or (t.user_attrs.get("pruned") and not include_partial):
            continue
        key = rank_key(
            t.value, t.user_attrs["layers"], t.number, prefer_fewer_layers=prefer_fewer_layers
        )
        if best_key is None or key < best_key:
            best, best_key = t, key
    return best


def best_layers_of(study: optuna.Study) -> tuple[int, ...]:
    """The layer subset of a study's best COMPLETE trial (for ``tune --from-beam``).

    Ties go to the earlier trial whatever the subset sizes (on a beam study, which stores
    its depths in order, that is also the smaller subset).

    Args:
        study: a beam (or tune) study.

    Returns:
        The subset's layer ids.

    Raises:
        ConfigError: the study has no completed trial with a layer subset.
    """
    best = best_trial(study, prefer_fewer_layers=False)
    if best is None:
        raise ConfigError(f"study '{study.study_name}' has no completed trial with a layer subset")
    text = str(best.user_attrs["layers"])
    return tuple(int(v) for v in text.split(",") if v)
