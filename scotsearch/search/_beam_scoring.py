"""Scoring the stored beam search's candidates: every pair in chunks, or raced block by block.

The beam algorithm (:mod:`scotsearch.search.beam`) asks for the scores of a list of index
subsets. :class:`CandidateScorer` answers with validation PCK from the evaluator and keeps,
per candidate, what its trial records besides the score (pooled PCK, per-category PCK, wall
time and, for a raced-out candidate, its partial mean).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import numpy as np

from scotsearch.errors import first_line
from scotsearch.errors import is_out_of_memory
from scotsearch.evaluate import Evaluator
from scotsearch.evaluate import Scores
from scotsearch.layers import format_layers
from scotsearch.memory import release_after_out_of_memory
from scotsearch.metrics import mean_pck
from scotsearch.metrics import pooled_pck
from scotsearch.search._beam_progress import BeamProgress
from scotsearch.search.beam import Subset
from scotsearch.search.race import out_of_beam


log = logging.getLogger(__name__)


class CandidateScorer:
    """The score function of the stored beam search (call it with a depth's subsets).

    Without ``race`` each call scores its subsets on every pair in one evaluator call (the
    beam algorithm hands over one chunk at a time). With ``race`` a call gets a whole depth
    and scores it block by block of pairs, dropping the candidates that the racing rule
    (:func:`scotsearch.search.race.out_of_beam`) puts out of the beam; a dropped candidate
    scores NaN and ranks last.

    An evaluator call that runs out of memory (host or GPU) fails its candidates only: they
    score NaN, their attrs say ``failed`` with the ``error``, and the search goes on.

    Args:
        evaluator: scores layer subsets (first alpha = the objective).
        ids: maps an index subset to its layer ids.
        pairs: indices of the pairs to score on.
        progress: receives chunk and pair counts.
        beam: the beam width (for the racing rule).
        chunk: candidates per evaluator call while racing.
        race: racing z, or ``None`` to score every candidate on every pair.
        race_block: pairs per racing block.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        *,
        ids: Callable[[Subset], tuple[int, ...]],
        pairs: Sequence[int],
        progress: BeamProgress,
        beam: int,
        chunk: int,
        race: float | None = None,
        race_block: int = 64,
    ) -> None:
        self.evaluator = evaluator
        self.ids = ids
        self.pairs = list(pairs)
        self.progress = progress
        self.beam = beam
        self.chunk = chunk
        self.race = race
        self.race_block = race_block
        cats = [evaluator.pairs[i].category for i in self.pairs]
        #: category -> positions in ``pairs``
        self.cat_index = {
            c: np.array([k for k, x in enumerate(cats) if x == c]) for c in sorted(set(cats))
        }
        #: resumed full-split scores of the current depth (they take part in racing)
        self.known: list[float] = []
        #: candidates whose scoring ran out of memory so far (scored NaN, attrs ``failed``)
        self.n_failed = 0
        self._extras: dict[Subset, dict[str, Any]] = {}

    def depth_start(self, known: Sequence[float]) -> None:
        """A new depth begins; ``known`` are its candidates' stored full-split scores."""
        self.known[:] = known

    def pop_extra(self, subset: Subset) -> dict[str, Any]:
        """The trial attrs of a scored ``subset`` besides its score (each is handed out once)."""
        return self._extras.pop(subset)

    def __call__(self, subsets: list[Subset]) -> list[float]:
        """Validation PCK x 100 of each subset (NaN for a raced-out or failed one)."""
        return self._full(subsets) if self.race is None else self._raced(subsets)

    def _failed(self, subsets: Sequence[Subset], error: str) -> None:
        """Record ``subsets`` as failed because scoring them ran out of memory (``error``)."""
        log.warning(
            "%d candidate(s) ran out of memory (%s); stored as failed, the search goes on "
            "without them and a re-run retries them (or lower --chunk or --image-side)",
            len(subsets), " ".join(f"[{format_layers(self.ids(s))}]" for s in subsets),
        )
        for s in subsets:
            self._extras[s] = {"failed": True, "error": error}
        self.n_failed += len(subsets)

    def _full(self, subsets: list[Subset]) -> list[float]:
        bar = self.progress
        bar.chunk_start(len(subsets))
        t0 = time.perf_counter()
        try:
            scores = self.evaluator.score([self.ids(s) for s in subsets], pair_index=self.pairs,
                                          progress=bar.pair_done)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            release_after_out_of_memory()
            self._failed(subsets, f"out of memory: {first_line(exc)}")
            return [math.nan] * len(subsets)
        wall = (time.perf_counter() - t0) / len(subsets)
        return self._record(subsets, scores, [wall] * len(subsets),
                            [self.evaluator.engine_used] * len(subsets))

    def _record(self, subsets: Sequence[Subset], scores: Scores, walls: Sequence[float],
                engines: Sequence[str | None]) -> list[float]:
        # Scores of every pair, in ``pairs`` order: the trial's attrs and its value.
        pck = scores.pck[:, 0, :]  # [S x P]
        mean = scores.mean()[:, 0]
        pooled = scores.pooled()[:, 0]
        for k, s in enumerate(subsets):
            self._extras[s] = {
                "pooled_pck": float(pooled[k]),
                "per_category": {c: mean_pck(pck[k, ix]) for c, ix in self.cat_index.items()},
                "wall_time": float(walls[k]),
                "engine": engines[k],
            }
        return [float(v) for v in mean]

    def score_block(self, subsets: list[Subset], block: Sequence[int]) -> list[dict[str, Any]]:
        """Score ``subsets`` on the pairs at positions ``block`` of ``pairs`` (one evaluator
        call): each subset's partial result, a JSON-able record for :meth:`assemble`.

        Running out of memory gives records that say ``failed`` with the ``error``.
        """
        self.progress.chunk_start(len(subsets))
        t0 = time.perf_counter()
        try:
            scores = self.evaluator.score([self.ids(s) for s in subsets],
                                          pair_index=[self.pairs[p] for p in block],
                                          progress=self.progress.pair_done)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            release_after_out_of_memory()
            return [{"failed": True, "error": f"out of memory: {first_line(exc)}"}] * len(subsets)
        wall = (time.perf_counter() - t0) / len(subsets)
        n_kps = scores.n_kps.tolist()
        return [{"correct": scores.n_correct[k, 0, :].tolist(), "n_kps": n_kps, "wall": wall,
                 "engine": self.evaluator.engine_used} for k in range(len(subsets))]

    def assemble(self, subset: Subset, blocks: Sequence[Sequence[int]],
                 parts: Sequence[dict[str, Any]]) -> float:
        """The score of ``subset`` from its partial results ``parts`` on the pair positions
        ``blocks`` (together every pair once), with the same arithmetic as an evaluator
        call on every pair, so the value and attrs equal the unsplit scoring's to the bit."""
        failed = [p for p in parts if p.get("failed")]
        if failed:
            self._failed([subset], str(failed[0]["error"]))
            return math.nan
        n = len(self.pairs)
        correct = np.zeros((1, 1, n), dtype=np.int64)
        n_kps = np.zeros(n, dtype=np.int64)
        for pos, part in zip(blocks, parts):
            correct[0, 0, list(pos)] = part["correct"]
            n_kps[list(pos)] = part["n_kps"]
        scores = Scores(subsets=[self.ids(subset)], alphas=self.evaluator.alphas[:1],
                        pair_index=self.pairs, n_correct=correct, n_kps=n_kps)
        engines = sorted({str(p["engine"]) for p in parts})
        return self._record([subset], scores, [sum(float(p["wall"]) for p in parts)],
                            ["+".join(engines)])[0]

    def _raced(self, subsets: list[Subset]) -> list[float]:
        assert self.race is not None
        bar, pairs, chunk = self.progress, self.pairs, self.chunk
        n_pairs = len(pairs)
        pck = np.zeros((len(subsets), n_pairs))  # per-pair PCK x 100
        correct = np.zeros((len(subsets), n_pairs))
        n_kps = np.zeros(n_pairs)
        seen = np.zeros(len(subsets), dtype=np.int64)
        walls = np.zeros(len(subsets))
        alive = list(range(len(subsets)))
        failed: set[int] = set()
        for start in range(0, n_pairs, self.race_block):
            stop = min(start + self.race_block, n_pairs)
            for c0 in range(0, len(alive), chunk):
                part = alive[c0 : c0 + chunk]
                bar.chunk_start(len(part))
                t0 = time.perf_counter()
                try:
                    sc = self.evaluator.score([self.ids(subsets[i]) for i in part],
                                              pair_index=pairs[start:stop],
                                              progress=bar.pair_done)
                except Exception as exc:
                    if not is_out_of_memory(exc):
                        raise
                    release_after_out_of_memory()
                    self._failed([subsets[i] for i in part], f"out of memory: {first_line(exc)}")
                    failed.update(part)
                    continue
                walls[part] += (time.perf_counter() - t0) / len(part)
                pck[part, start:stop] = sc.pck[:, 0, :] * 100.0
                correct[part, start:stop] = sc.n_correct[:, 0, :]
                n_kps[start:stop] = sc.n_kps
            alive = [i for i in alive if i not in failed]
            seen[alive] = stop
            if stop < n_pairs and alive:
                drop = out_of_beam(pck[alive, :stop], self.beam, self.race, known=self.known)
                alive = [i for i, d in zip(alive, drop) if not d]
        out = []
        for k, s in enumerate(subsets):
            if k in failed:
                out.append(math.nan)
                continue
            n = int(seen[k])
            # the same arithmetic as Scores.mean(), so a finished candidate's score equals
            # the unraced search's to the last bit
            mean = mean_pck(correct[k, :n] / n_kps[:n])
            raced = n < n_pairs
            self._extras[s] = {
                "pooled_pck": pooled_pck(correct[k, :n], n_kps[:n]),
                # the mean of the racing rule's per-pair PCK x 100 (not mean_pck of the
                # fractions: the two can differ in the last bit, and stored studies keep theirs)
                "per_category": {
                    c: float(pck[k, ix[ix < n]].mean())
                    for c, ix in self.cat_index.items() if (ix < n).any()
                },
                "wall_time": float(walls[k]),
                "engine": self.evaluator.engine_used,
            }
            if raced:
                self._extras[s].update(pruned=True, pck_partial=mean, pairs=n)
            out.append(float("nan") if raced else mean)
        return out
