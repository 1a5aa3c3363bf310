"""Searches over layer subsets and matching settings.

* :mod:`~scotsearch.search.beam`: the pure beam-search algorithm (no storage, no I/O), and
  :mod:`~scotsearch.search.race`: the pure racing rule;
* :mod:`~scotsearch.search.beam_study`: :func:`run_beam`, the beam search over the evaluator,
  stored in a study and resumable;
* :mod:`~scotsearch.search.space` and :mod:`~scotsearch.search.space_file`: the search space
  of the tune search and its TOML form;
* :mod:`~scotsearch.search.objective`: one tune trial's validation PCK, with pruning;
* :mod:`~scotsearch.search.tune`: :func:`run_tune`, the Optuna study driver, and
  :mod:`~scotsearch.search.tune_result`: what it leaves behind.
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
from scotsearch.search.beam import subset_key
from scotsearch.search.beam import top_k
from scotsearch.search.beam_study import BeamOutcome
from scotsearch.search.beam_study import run_beam
from scotsearch.search.objective import PRUNERS
from scotsearch.search.objective import TuneObjective
from scotsearch.search.race import out_of_beam
from scotsearch.search.space import Range
from scotsearch.search.space import TuneSpace
from scotsearch.search.space_file import DEFAULT_SPACE
from scotsearch.search.space_file import load_space
from scotsearch.search.space_file import space_from_dict
from scotsearch.search.tune import SAMPLERS
from scotsearch.search.tune import run_tune
from scotsearch.search.tune_result import TuneResult


__all__ = [
    "DEFAULT_SPACE",
    "PRUNERS",
    "SAMPLERS",
    "BeamOutcome",
    "BeamResult",
    "Candidate",
    "DepthResult",
    "Range",
    "ScoreFn",
    "Subset",
    "TuneObjective",
    "TuneResult",
    "TuneSpace",
    "beam_search",
    "expand",
    "initial_candidates",
    "load_space",
    "out_of_beam",
    "run_beam",
    "run_tune",
    "space_from_dict",
    "subset_key",
    "top_k",
]
