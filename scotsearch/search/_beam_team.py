"""Scoring a depth of the stored beam search together with the other workers on its study.

Every worker runs the same pure algorithm (:func:`scotsearch.search.beam.beam_search`) and
so derives the same candidates from the same stored scores. The first worker to reach a
depth splits its pairs between the live workers (:meth:`~scotsearch.study.BeamTeam.split`):
with one worker the unit of work is a candidate on every pair; with several, the pairs are
dealt into one block per worker (every k-th pair, so each block holds every category and
about the same work) and the unit is one candidate on one block.

Why blocks and not whole candidates: an engine that keeps each pair's layer terms in memory
(the fused CPU chain) forms a term once per pair and process. Workers that split a depth's
candidates each formed nearly every term of every pair (measured: 0.77x for two workers on
two cores, ``benchmarks/bench_workers.py``); workers that keep to their own pairs form each
term once in the team and hold half the memory each.

A worker claims batches of free units of its own block (at most ``chunk`` candidates per
evaluator call), stores each unit's per-pair counts in its claim when done, and assembles
the candidates designated to it (every n-th of the depth) once all their blocks are done:
the trial gets the value and attrs of one call on every pair, to the bit
(:meth:`~scotsearch.search._beam_scoring.CandidateScorer.assemble`). The units of a dead
worker's block and its candidates to assemble are claimed by the others (with the claim's
wait); a worker that joined after the split owns no block and helps wherever units are free.
With none left to do a worker waits for the others, then reads their scores from the study;
the depth is then complete for every worker, and each ranks it and grows the next one.

A candidate's per-pair counts do not depend on which candidates and pairs share its
evaluator call (checked bit for bit in the tests on both CPU engines), so the team's scores
equal a single process's. With ``--engine auto`` the engine is chosen by the call's size,
and two engines agree to 1e-3 px, not to the bit; fix ``--engine`` where bits matter.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

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

#: Seconds between two looks at the other workers' units while waiting for them. Each depth
#: ends with two such waits (for the other blocks, then for the candidates the others
#: assemble), half a poll each on average; a look reads the study's attrs once (a few kB
#: per candidate of the depth).
POLL_S = 0.2


def unit_key(depth: int, key: str) -> str:
    """A candidate's claim key: its depth and layer ids.

    >>> unit_key(1, "0,2")
    'd1:0,2'
    """
    return f"d{depth}:{key}"


def block_unit(depth: int, key: str, block: int) -> str:
    """A claim key of one candidate on one block of pairs.

    >>> block_unit(1, "0,2", 3)
    'd1:0,2:b3'
    """
    return f"{unit_key(depth, key)}:b{block}"


def block_positions(n_pairs: int, n_blocks: int) -> list[list[int]]:
    """Positions (into the split's pairs) of each block: every ``n_blocks``-th pair, so that
    each block holds pairs of every category and about the same work.

    >>> block_positions(5, 2)
    [[0, 2, 4], [1, 3]]
    """
    return [list(range(b, n_pairs, n_blocks)) for b in range(n_blocks)]


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
        owners = self.team.split(self._depth, len(self.scorer.pairs))
        mine = self._by_block(todo, owners) if len(owners) > 1 else self._by_candidate(todo)
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

    def _by_candidate(self, todo: list[Subset]) -> dict[Subset, float]:
        # Units are whole candidates; any worker claims any free one (with the wait).
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
        return mine

    def _by_block(self, todo: list[Subset], owners: list[str]) -> dict[Subset, float]:
        me, n_blocks = self.team.token, len(owners)
        blocks = block_positions(len(self.scorer.pairs), n_blocks)
        order = {s: k for k, s in enumerate(self._subsets)}
        left = list(todo)
        mine: dict[Subset, float] = {}
        t_start, t_scoring, t_waiting = time.perf_counter(), 0.0, 0.0
        while left:
            attrs = self.team.attrs()
            live = self.team.live(attrs)
            # A worker that joined after the split may claim any unit: then even a block's
            # owner claims with the wait.
            helpers = any(t not in owners for t in live if t != me)
            owner = me in owners
            assemble: list[Subset] = []  # designated to me
            orphans: list[Subset] = []  # designated to a dead worker
            own: list[tuple[int, Subset]] = []  # (block, candidate) units of my block
            other: dict[int, list[Subset]] = {}  # units of a dead owner's block, or a helper's
            still = []
            for s in left:
                state = self.team.state(self._unit(s), attrs, live)
                if state == "done":
                    self.progress.scored(1)
                    continue
                still.append(s)
                if state == "taken":  # another worker assembles it now
                    continue
                states = [self._block_state(s, b, attrs, live) for b in range(n_blocks)]
                if all(x == "done" for x in states):
                    designated = owners[order[s] % n_blocks]
                    if designated == me:
                        assemble.append(s)
                    elif designated not in live:
                        orphans.append(s)
                    continue
                for b, x in enumerate(states):
                    if x in ("free", "mine"):
                        if owners[b] == me:
                            own.append((b, s))
                        elif owners[b] not in live or not owner:
                            other.setdefault(b, []).append(s)
            left = still
            if assemble or orphans:
                mine.update(self._assemble(assemble, orphans, attrs, blocks))
                left = [s for s in left if s not in mine]
                continue
            if own:
                b = own[0][0]
                batch = [s for bb, s in own if bb == b][:self.chunk]
                contended = helpers
            elif other:
                b = max(other, key=lambda k: len(other[k]))
                free = other[b]
                batch = free[:min(self.chunk, math.ceil(len(free) / self.team.size(live)))]
                contended = True
            else:
                if left:
                    time.sleep(POLL_S)
                    t_waiting += POLL_S
                continue
            units = [self._bunit(s, b) for s in batch]
            won = set(self.team.claim(units, attrs, contended=contended))
            batch = [s for s in batch if self._bunit(s, b) in won]
            if batch:
                self.team.unit = (f"depth {self._depth + 1}: {len(batch)} candidates, "
                                  f"block {b + 1}/{n_blocks}")
                t0 = time.perf_counter()
                results = self.scorer.score_block(batch, blocks[b])
                t_scoring += time.perf_counter() - t0
                self.team.finish([self._bunit(s, b) for s in batch], results, count=False)
                self.team.unit = ""
        log.debug("depth %d, %d blocks: %.1f s, of which scoring %.1f s, waiting for the "
                  "others %.1f s", self._depth + 1, n_blocks, time.perf_counter() - t_start,
                  t_scoring, t_waiting)
        return mine

    def _block_state(self, s: Subset, block: int, attrs: Mapping[str, Any],
                     live: Mapping[str, Any]) -> str:
        state = self.team.state(self._bunit(s, block), attrs, live)
        if state == "done" and "result" not in attrs[CLAIM_PREFIX + self._bunit(s, block)]:
            return "free"  # done without its result (never written so): score it again
        return state

    def _assemble(self, assemble: list[Subset], orphans: list[Subset], attrs: Mapping[str, Any],
                  blocks: list[list[int]]) -> dict[Subset, float]:
        # The candidates designated to this worker nobody else assembles while it lives;
        # a dead worker's are claimed (with the wait) and may have been stored before it died.
        done: dict[Subset, float] = {}
        if orphans:
            won = set(self.team.claim([self._unit(s) for s in orphans], attrs))
            orphans = [s for s in orphans if self._unit(s) in won]
            done = self._already_stored(orphans)
        out: dict[Subset, float] = dict(done)
        self.progress.scored(len(done))
        stored = []
        for s in assemble + orphans:
            if s in done:
                continue
            parts = [attrs[CLAIM_PREFIX + self._bunit(s, b)]["result"]
                     for b in range(len(blocks))]
            out[s] = self.scorer.assemble(s, blocks, parts)
            self.store(Candidate(layers=s, score=out[s], depth=self._depth,
                                 parent=self._parents[s]))
            stored.append(s)
        self.n_scored_here += len(stored)
        self.team.finish([self._unit(s) for s in out])
        # The partial results are in the trials now: keep the study's attrs small.
        self.team.finish([self._bunit(s, b) for s in out for b in range(len(blocks))],
                         count=False)
        return out

    def _unit(self, s: Subset) -> str:
        return unit_key(self._depth, self._key(s))

    def _bunit(self, s: Subset, block: int) -> str:
        return block_unit(self._depth, self._key(s), block)

    def _already_stored(self, subs: list[Subset]) -> dict[Subset, float]:
        # Units claimed before by a worker that died (or in an earlier run) may have been
        # stored before the claim lapsed: their scores, not to be stored again.
        have = stored_results(self.study, {self._key(s) for s in subs})
        return {s: have[self._key(s)] for s in subs
                if self._key(s) in have and not math.isnan(have[self._key(s)])}

    def _score(self, batch: list[Subset], taken_over: bool) -> dict[Subset, float]:
        done = self._already_stored(batch) if taken_over else {}
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
