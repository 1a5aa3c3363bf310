"""Scoring a depth of the stored beam search together with the other workers on its study.

Every worker runs the same pure algorithm (:func:`scotsearch.search.beam.beam_search`) and
so derives the same candidates from the same stored scores. The unit of work is one
candidate: a worker claims a batch of free candidates in generation order
(:class:`~scotsearch.study.BeamTeam`), at most ``chunk`` and at most its share of the free
ones (free / live workers, so that the last batches of a depth are spread over the team
instead of left to one worker), scores the batch in one evaluator call, stores the
candidates, marks them done and claims the next batch. With none left free it waits for the
candidates other workers hold, taking over any whose worker died, then reads their scores
from the study. The depth is then complete for every worker, and each ranks it and grows the
next one itself.

A candidate's score does not depend on which other candidates share its evaluator call
(checked bit for bit in the tests on both CPU engines), so the team's scores equal a single
process's. On a GPU with ``--engine auto`` the engine is chosen by the call's size, and two
engines agree to 1e-3 px, not to the bit; fix ``--engine`` where bits matter.
"""

from __future__ import annotations

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


def unit_key(depth: int, key: str) -> str:
    """A candidate's claim key: its depth and layer ids.

    >>> unit_key(1, "0,2")
    'd1:0,2'
    """
    return f"d{depth}:{key}"


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
        left = list(todo)
        mine: dict[Subset, float] = {}
        while left:
            attrs = self.team.attrs()
            # One liveness scan per read (it looks at /proc for this host's workers), not
            # one per candidate.
            live = self.team.live(attrs)
            free, busy = [], []
            for s in left:
                state = self.team.state(self._unit(s), attrs, live)
                if state == "done":
                    self.progress.scored(1)
                elif state == "taken":
                    busy.append(s)
                else:  # free, or mine from a call that failed
                    free.append(s)
            left = free + busy
            if not free:
                if left:
                    time.sleep(POLL_S)
                continue
            batch = free[:min(self.chunk, math.ceil(len(free) / self.team.size(live)))]
            taken_over = any(CLAIM_PREFIX + self._unit(s) in attrs for s in batch)
            won = set(self.team.claim([self._unit(s) for s in batch], attrs))
            batch = [s for s in batch if self._unit(s) in won]
            if batch:
                mine.update(self._score(batch, taken_over))
                left = [s for s in left if s not in mine]
        rest = {self._key(s) for s in todo if s not in mine}
        theirs = stored_results(self.study, rest) if rest else {}
        out = []
        for s in todo:
            if s in mine:
                out.append(mine[s])
                continue
            value = theirs.get(self._key(s))
            if value is None:
                # A candidate marked done is stored as a trial; a missing one is a storage
                # that lost a write: rank it last, say so.
                log.warning("candidate [%s] is marked scored but has no stored trial; it "
                            "ranks last in this run", self._key(s))
                value = math.nan
            out.append(value)
        return out

    def _unit(self, s: Subset) -> str:
        return unit_key(self._depth, self._key(s))

    def _score(self, batch: list[Subset], taken_over: bool) -> dict[Subset, float]:
        if taken_over:
            # Candidates claimed before (by a worker that died, or in an earlier run) may
            # have been stored before the claim lapsed: score only the others.
            have = stored_results(self.study, {self._key(s) for s in batch})
            done = {s: have[self._key(s)] for s in batch
                    if self._key(s) in have and not math.isnan(have[self._key(s)])}
        else:
            done = {}
        todo = [s for s in batch if s not in done]
        self.team.unit = f"depth {self._depth + 1}: {len(batch)} candidates"
        values = self.scorer(todo) if todo else []
        for s, v in zip(todo, values):
            self.store(Candidate(layers=s, score=v, depth=self._depth, parent=self._parents[s]))
        self.n_scored_here += len(todo)
        self.team.finish([self._unit(s) for s in batch])
        self.team.unit = ""
        self.progress.scored(len(done))
        return {**done, **dict(zip(todo, values))}
