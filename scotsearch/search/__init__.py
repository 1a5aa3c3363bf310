"""Searches over layer subsets and matching settings.

:mod:`scotsearch.search.beam` is the pure beam-search algorithm (no storage, no I/O); the
``beam`` command (:mod:`scotsearch.commands.beam`) wires it to the evaluator and the study.
"""

from __future__ import annotations

from scotsearch.search.beam import BeamResult
from scotsearch.search.beam import Candidate
from scotsearch.search.beam import DepthResult
from scotsearch.search.beam import ScoreFn
from scotsearch.search.beam import Subset
from scotsearch.search.beam import beam_search
from scotsearch.search.beam import expand
from scotsearch.search.beam import initial_candidates
from scotsearch.search.beam import top_k


__all__ = [
    "BeamResult",
    "Candidate",
    "DepthResult",
    "ScoreFn",
    "Subset",
    "beam_search",
    "expand",
    "initial_candidates",
    "top_k",
]
