"""Scoring a depth of the stored beam search together with the other workers on its study.

Every worker runs the same pure algorithm (:func:`scotsearch.search.beam.beam_search`) and
so derives the same candidates from the same stored scores. A depth's candidates are cut,
in generation order, into units of ``chunk``, the chunks a single process would score in one
fresh run, so a team's scores equal a single process's bit for bit. A worker claims a free
unit (:class:`~scotsearch.study.BeamTeam`), scores and stores its candidates, marks it done
and claims the next; with none left free it waits for the units other workers hold, taking
over any whose worker died, then reads their scores from the study. The depth is then
complete for every worker, and each ranks it and grows the next one itself.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from collections.abc import Mapping

import optuna
from optuna.trial import TrialState

from scotsearch.layers import format_layers
from scotsearch.search._beam_progress import BeamProgress
from scotsearch.search._beam_scoring import CandidateScorer
from scotsearch.search.beam import Candidate
from scotsearch.search.beam import Subset
from scotsearch.study import CLAIM_PREFIX
from scotsearch.study import BeamTeam


log = logging.getLogger(__name__)

#: Seconds between two looks at the other workers' units while waiting for them.
POLL_S = 0.5


def unit_key(depth: int, index: int, members: list[str]) -> str:
    """A unit's claim key: depth, position and a digest of its candidates, so that workers
    that derived different candidates (they never should) cannot mistake one for another.

    >>> unit_key(1, 0, ["0,1", "0,2"])
    'd1u0-82a2b35cb2'
    """
    digest = hashlib.sha256(";".join(members).encode()).hexdigest()[:10]
    return f"d{depth}u{index}-{digest}"


def stored_results(study: optuna.Study, keys: set[str]) -> dict[str, float]:
    """The stored score of each of ``keys`` (layer-id text) among the study's beam trials:
    a COMPLETE trial's value (the first one), else NaN for a FAIL one (its scoring ran out of
    memory). Keys with neither are left out."""
    out: dict[str, float] = {}
    failed: set[str] = set()
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if t.user_attrs.get("search") != "beam":
            continue
        key = str(t.user_attrs.get("layers"))
        if key not in keys:
            continue
        if t.state == TrialState.COMPLETE and t.value is not None:
            value = math.nan if t.user_attrs.get("pruned") else float(t.value)
            out.setdefault(key, value)
        else:
            failed.add(key)
    for key in failed - set(out):
        out[key] = math.nan
    return out


class TeamScorer:
    """The score function of a cooperating beam worker (one call per depth).

    Args:
        scorer: scores a list of candidates on every pair (one evaluator call).
        team: this worker's membership of the study's team.
        study: the study, read for the other workers' scores.
        store: stores one scored candidate (the trial, with the scorer's attrs).
        ids: maps an index subset to its layer ids.
        chunk: candidates per unit.
        progress: the depth's bar.
    """

    def __init__(
        self,
        scorer: CandidateScorer,
        team: BeamTeam,
        *,
        study: optuna.Study,
        store: Callable[[Candidate], None],
        ids: Callable[[Subset], tuple[int, ...]],
        chunk: int,
        progress: BeamProgress,
    ) -> None:
        self.scorer = scorer
        self.team = team
        self.study = study
        self.store = store
        self.ids = ids
        self.chunk = chunk
        self.progress = progress
        self._depth = 0
        self._subsets: list[Subset] = []
        self._parents: Mapping[Subset, Subset | None] = {}
        #: candidates this worker scored (in this process, all depths)
        self.n_scored_here = 0

    def depth_start(self, depth: int, subsets: list[Subset],
                    parents: Mapping[Subset, Subset | None]) -> None:
        """A depth begins: its candidates in generation order and each one's parent."""
        self._depth = depth
        self._subsets = list(subsets)
        self._parents = parents

    def _key(self, s: Subset) -> str:
        return format_layers(self.ids(s))

    def __call__(self, todo: list[Subset]) -> list[float]:
        """The scores of ``todo`` (this depth's candidates without a stored score)."""
        want = set(todo)
        units: dict[str, list[Subset]] = {}
        for k, start in enumerate(range(0, len(self._subsets), self.chunk)):
            part = self._subsets[start:start + self.chunk]
            members = [s for s in part if s in want]
            if members:
                units[unit_key(self._depth, k, [self._key(s) for s in part])] = members
        mine: dict[Subset, float] = {}
        while units:
            attrs = self.team.attrs()
            claimed = False
            for key in list(units):
                state = self.team.state(key, attrs)
                if state == "done":
                    self.progress.scored(len(units.pop(key)))
                    continue
                if state == "taken":
                    continue
                taken_over = CLAIM_PREFIX + key in attrs
                if not self.team.claim(key, attrs):
                    attrs = self.team.attrs()  # another worker won it: look again
                    continue
                mine.update(self._score_unit(key, units.pop(key), taken_over))
                claimed = True
                break  # look at the others' progress again before the next claim
            if units and not claimed:
                time.sleep(POLL_S)
        rest = {self._key(s) for s in todo if s not in mine}
        theirs = stored_results(self.study, rest) if rest else {}
        out = []
        for s in todo:
            if s in mine:
                out.append(mine[s])
                continue
            value = theirs.get(self._key(s))
            if value is None:
                # A unit marked done holds every one of its candidates as a trial; a
                # missing one is a storage that lost a write: rank it last, say so.
                log.warning("candidate [%s] is marked scored but has no stored trial; it "
                            "ranks last in this run", self._key(s))
                value = math.nan
            out.append(value)
        return out

    def _score_unit(self, key: str, members: list[Subset], taken_over: bool) -> dict[Subset,
                                                                                     float]:
        if taken_over:
            # A unit claimed before (by a worker that died, or in an earlier run) may hold
            # candidates that were stored before the claim lapsed: score only the others.
            have = stored_results(self.study, {self._key(s) for s in members})
            done = {s: have[self._key(s)] for s in members
                    if self._key(s) in have and not math.isnan(have[self._key(s)])}
        else:
            done = {}
        todo = [s for s in members if s not in done]
        self.team.unit = key
        values = self.scorer(todo) if todo else []
        for s, v in zip(todo, values):
            self.store(Candidate(layers=s, score=v, depth=self._depth, parent=self._parents[s]))
        self.n_scored_here += len(todo)
        self.team.finish(key, len(todo))
        self.team.unit = ""
        self.progress.scored(len(done))
        return {**done, **dict(zip(todo, values))}
