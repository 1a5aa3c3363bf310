"""The stored beam search: which hyperpixel layers give the best validation PCK.

:func:`run_beam` wires the pure algorithm (:func:`scotsearch.search.beam.beam_search`) to the
evaluator and a study. Every scored candidate is stored in the study the moment its chunk
completes, so a re-run resumes: the beam is re-derived from the stored scores (``done``) and
nothing stored is scored again. A chunk that runs out of memory is stored as FAIL trials and
the search goes on without it; a re-run scores those candidates again.

Any number of processes running the same search on the same storage cooperate (a *team*,
:mod:`scotsearch.search._beam_team`): each depth's pairs are dealt into one block per
worker, each worker scores every candidate on its own block, claimed through the study, the
candidates' trials are assembled from the blocks' per-pair counts, the blocks of a worker
that died are taken over, and each worker derives the next depth from the stored scores. A
racing search (``race``) runs in one process per study.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage

from scotsearch.errors import ConfigError
from scotsearch.errors import ScotsearchError
from scotsearch.evaluate import Evaluator
from scotsearch.layers import format_layers
from scotsearch.search._beam_progress import BeamProgress
from scotsearch.search._beam_scoring import CandidateScorer
from scotsearch.search._beam_team import TeamScorer
from scotsearch.search.beam import BeamResult
from scotsearch.search.beam import Candidate
from scotsearch.search.beam import DepthResult
from scotsearch.search.beam import NothingScoredError
from scotsearch.search.beam import Subset
from scotsearch.search.beam import beam_search
from scotsearch.search.beam import check_beam_counts
from scotsearch.search.beam import expand
from scotsearch.study import BeamLease
from scotsearch.study import BeamTeam
from scotsearch.study import add_failed_layer_trial
from scotsearch.study import add_layer_trial
from scotsearch.study import check_identity
from scotsearch.study import completed_trials
from scotsearch.study import environment
from scotsearch.study import evaluator_identity
from scotsearch.study import open_storage
from scotsearch.study import open_study
from scotsearch.study import pairs_digest


log = logging.getLogger(__name__)


@dataclass
class BeamOutcome:
    """What :func:`run_beam` did.

    Attributes:
        result: the search result (indices translated to layer ids).
        study: the study holding every candidate.
        layer_ids: the layer ids searched over.
        failed: candidates of this run whose scoring ran out of memory (stored as FAIL
            trials, left out of the beam, scored again by a re-run).
        scored_here: candidates this process scored (the others of ``result.n_scored`` were
            scored by the other workers of its team).
    """

    result: BeamResult
    study: optuna.Study
    layer_ids: tuple[int, ...]
    failed: int = 0
    scored_here: int = 0

    @property
    def best_layers(self) -> tuple[int, ...]:
        """The layer ids of the search's best candidate."""
        return self.result.best.layers

    @property
    def best_pck(self) -> float:
        """The validation PCK x 100 of the search's best candidate."""
        return self.result.best.score


def beam_identity(
    evaluator: Evaluator,
    *,
    beam: int,
    reference: bool,
    layer_ids: Sequence[int],
    pair_index: Sequence[int],
    race: float | None = None,
) -> dict[str, Any]:
    """What a beam study's stored scores and candidates depend on (checked on resume).

    ``max_layers`` and ``chunk`` are left out on purpose: the beam of the first depths does
    not depend on them, so a finished study may be continued deeper.

    Args:
        evaluator: the split, features and matching settings.
        beam: the beam width.
        reference: whether the references' algorithm runs.
        layer_ids: the layer ids searched over.
        pair_index: the pairs scored on.
        race: racing z, or ``None``.

    Returns:
        The identity as plain values.
    """
    return {
        "kind": "beam",
        **evaluator_identity(evaluator),
        "match": evaluator.match.to_dict(),
        "algorithm": "reference" if reference else "fixed",
        "beam": int(beam),
        "search_layers": format_layers(layer_ids),
        "n_pairs": len(pair_index),
        "pairs_digest": pairs_digest(evaluator.pairs[i] for i in pair_index),
        "race": race,
    }


def _check_race(race: float | None, *, reference: bool, race_block: int) -> None:
    if race is None:
        return
    if not (race > 0 and math.isfinite(race)):
        raise ConfigError(f"--race must be a positive number of standard errors, got {race}")
    if reference:
        raise ConfigError("--race is not available with the reference algorithm, which "
                          "scores every candidate on every pair")
    if race_block < 2:
        raise ConfigError(f"--race-block must be >= 2 pairs, got {race_block}")


def _stored_scores(
    study: optuna.Study, to_index: dict[int, int]
) -> dict[str | Subset, float]:
    # The study's beam candidates as index subsets, for the algorithm's `done`; candidates
    # with a layer outside the searched ids are not this search's.
    done: dict[str | Subset, float] = {}
    for t in completed_trials(study, search="beam"):
        assert t.value is not None  # completed_trials keeps valued trials only
        sub = tuple(int(v) for v in str(t.user_attrs["layers"]).split(","))
        if all(v in to_index for v in sub):
            # A raced-out candidate has no full-split score: it ranks last (NaN).
            value = float("nan") if t.user_attrs.get("pruned") else float(t.value)
            done.setdefault(tuple(to_index[v] for v in sub), value)
    return done


class _Store:
    """Stores one scored candidate as its trial (COMPLETE, or FAIL when it ran out of memory)
    with the attrs the scorer kept for it."""

    def __init__(self, study: optuna.Study, scorer: CandidateScorer, bar: BeamProgress, *,
                 ids: Callable[[Subset], tuple[int, ...]], n_layers: int,
                 match: dict[str, Any]) -> None:
        self.study, self.scorer, self.bar = study, scorer, bar
        self.ids, self.n_layers, self.match = ids, n_layers, match

    def __call__(self, c: Candidate) -> None:
        ids = self.ids
        extra = self.scorer.pop_extra(c.layers)
        attrs = {
            "search": "beam", "layers": format_layers(ids(c.layers)), "depth": c.depth,
            "parent": "" if c.parent is None else format_layers(ids(c.parent)),
            "match": self.match,
        }
        if extra.get("failed"):
            # out of memory: stored as FAIL (no value), so a re-run scores it again
            add_failed_layer_trial(self.study, layers=ids(c.layers), n_layers=self.n_layers,
                                   user_attrs={**attrs, "error": extra["error"]})
        else:
            # a raced-out candidate keeps its partial mean as the trial's value; its "pck"
            # stays NaN and "pruned" keeps it out of results and exports
            add_layer_trial(self.study, layers=ids(c.layers), n_layers=self.n_layers,
                            value=extra.get("pck_partial", c.score),
                            user_attrs={**attrs, "pck": c.score, **extra})
        self.bar.scored(1)


def run_beam(
    evaluator: Evaluator,
    *,
    study: str,
    storage: BaseStorage | str | None = None,
    beam: int = 4,
    max_layers: int = 8,
    reference: bool = False,
    layers: Sequence[int] | None = None,
    chunk: int = 16,
    pair_index: Sequence[int] | None = None,
    progress: bool = False,
    race: float | None = None,
    race_block: int = 64,
    team_size: int | None = None,
) -> BeamOutcome:
    """Run (or resume) a beam search and store every scored candidate in a study.

    Args:
        evaluator: scores subsets on the split (its match, profile, alpha and threshold are
            the search's; the first alpha is the objective).
        study: study name; created on first use, resumed afterwards.
        storage: Optuna storage or URL (``None``: environment / default SQLite file).
        beam: beam width.
        max_layers: largest subset size.
        reference: the references' algorithm with its quirks (:mod:`scotsearch.search.beam`).
        layers: layer ids to search among (default: all of the backbone's).
        chunk: candidates per evaluator call; each chunk is stored as soon as it is scored.
        pair_index: pairs to score on (default: all of the split).
        progress: show a progress bar per depth.
        race: racing z (:mod:`scotsearch.search.race`); ``None``: every candidate is scored
            on every pair. A depth's candidates are then scored together, block by block,
            and stored when the depth ends.
        race_block: pairs per racing block.
        team_size: workers started together on this study, this process included, for the
            first depth to be split between all of them (``None``: the launcher's
            environment variable, :data:`scotsearch.study.TEAM_SIZE_ENV`, else 1).

    Returns:
        The search result with layer ids, and the study.

    Raises:
        ConfigError: bad parameters, or the study was started with other settings.
    """
    n_all = len(evaluator.specs)
    if layers is None:
        layer_ids = tuple(range(n_all))
    else:
        layer_ids = tuple(sorted({int(i) for i in layers}))
    if not layer_ids or layer_ids[0] < 0 or layer_ids[-1] >= n_all:
        raise ConfigError(f"layer ids must lie in 0..{n_all - 1}")
    check_beam_counts(beam=beam, max_layers=max_layers, chunk=chunk)
    if len(evaluator.alphas) != 1:
        raise ConfigError("the beam search optimises PCK at one alpha; give a single --alpha")
    if pair_index is None:
        pairs = list(range(len(evaluator.pairs)))
    else:
        pairs = [int(i) for i in pair_index]
    if not pairs:
        raise ConfigError("no pairs to score on")
    evaluator.dataset.require_keypoint_pck("the beam search")
    _check_race(race, reference=reference, race_block=race_block)

    st = storage if isinstance(storage, BaseStorage) else open_storage(storage)
    stud = open_study(study, st)
    check_identity(
        stud, beam_identity(evaluator, beam=beam, reference=reference, layer_ids=layer_ids,
                            pair_index=pairs, race=race)
    )
    stud.set_user_attr("environment", environment())

    # The algorithm works on indices 0..n-1 into layer_ids; the map is monotone, so "above
    # the base" and the candidate order mean the same on ids.
    to_index = {lid: i for i, lid in enumerate(layer_ids)}

    def ids(sub: Subset) -> tuple[int, ...]:
        return tuple(layer_ids[i] for i in sub)

    done = _stored_scores(stud, to_index)
    if done:
        log.info("study '%s': resuming with %d stored candidates", study, len(done))

    bar = BeamProgress(enabled=progress, max_layers=max_layers)
    scorer = CandidateScorer(evaluator, ids=ids, pairs=pairs, progress=bar, beam=beam,
                             chunk=chunk, race=race, race_block=race_block)
    store = _Store(stud, scorer, bar, ids=ids, n_layers=n_all, match=evaluator.match.to_dict())
    # Without racing any number of processes search the study together (a team); racing
    # needs a depth's candidates in one process, so it keeps one process per study.
    team = None if race is not None else BeamTeam(st, study, expected=team_size)
    team_scorer = None if team is None else TeamScorer(
        scorer, team, study=stud, store=store, ids=ids, chunk=chunk, progress=bar)
    prev_beam: list[Subset] = []

    def depth_start(depth: int, subsets: list[Subset], n_todo: int) -> None:
        scorer.depth_start([done[s] for s in subsets if s in done and not math.isnan(done[s])])
        bar.depth_start(depth, subsets, n_todo)
        if team_scorer is not None:
            # the same (child, parent) pairs beam_search grows, for the stored trials
            parents: dict[Subset, Subset | None] = (
                dict.fromkeys(subsets) if depth == 0 else
                dict(expand(prev_beam, n_layers=len(layer_ids), reference=reference)))
            team_scorer.depth_start(depth, subsets, parents)

    def depth_end(d: DepthResult, best: Candidate) -> None:
        prev_beam[:] = [c.layers for c in d.beam]
        bar.depth_end(d, best)

    guard: BeamLease | BeamTeam = BeamLease(st, study) if team is None else team
    guard.__enter__()
    try:
        result = beam_search(
            scorer if team_scorer is None else team_scorer,
            n_layers=len(layer_ids),
            beam=beam,
            max_layers=max_layers,
            reference=reference,
            done=done,
            # a team member is handed a depth at once and cuts it into units itself; racing
            # needs a depth's candidates together
            chunk=chunk if team is None and race is None else None,
            on_scored=store if team_scorer is None else None,
            on_depth_start=depth_start,
            on_depth_end=depth_end,
        )
    except NothingScoredError:
        raise ScotsearchError(
            f"none of the first depth's candidates could be scored ({scorer.n_failed} ran out "
            "of memory, stored as failed); lower --chunk or --image-side and run again"
        ) from None
    finally:
        bar.close()
        guard.__exit__(None, None, None)

    result = _to_ids(result, ids)
    stud.set_user_attr(
        "beam_result",
        {"layers": result.best.key, "pck": result.best.score, "depth": result.best.depth,
         "max_layers": max_layers, "candidates": len(result.candidates)},
    )
    if scorer.n_failed:
        log.warning("study '%s': %d candidate(s) ran out of memory and are stored as failed; "
                    "run the same command again to score them", study, scorer.n_failed)
    here = result.n_scored if team_scorer is None else team_scorer.n_scored_here
    return BeamOutcome(result=result, study=stud, layer_ids=layer_ids, failed=scorer.n_failed,
                       scored_here=here)


def _to_ids(result: BeamResult, ids: Callable[[Subset], tuple[int, ...]]) -> BeamResult:
    def conv(c: Candidate) -> Candidate:
        return Candidate(
            layers=ids(c.layers), score=c.score, depth=c.depth,
            parent=None if c.parent is None else ids(c.parent), reused=c.reused,
        )

    depths = [
        DepthResult(depth=d.depth, candidates=[conv(c) for c in d.candidates],
                    beam=[conv(c) for c in d.beam])
        for d in result.depths
    ]
    return BeamResult(best=conv(result.best), depths=depths, n_scored=result.n_scored,
                      n_reused=result.n_reused)


__all__ = ["BeamOutcome", "beam_identity", "check_beam_counts", "run_beam"]
