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

from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from scotsearch.search.beam import BeamResult
    from scotsearch.search.beam import Candidate
    from scotsearch.search.beam import DepthResult
    from scotsearch.search.beam import ScoreFn
    from scotsearch.search.beam import Subset
    from scotsearch.search.beam import beam_search
    from scotsearch.search.beam import expand
    from scotsearch.search.beam import initial_candidates
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

#: Each public name's module, imported on first use: a command's argument parser, and a
#: worker's checks before it starts the others, need :mod:`~scotsearch.search.beam` without
#: torch and optuna (about 1.5 s to import).
_HOME = {
    "BeamResult": "scotsearch.search.beam",
    "Candidate": "scotsearch.search.beam",
    "DepthResult": "scotsearch.search.beam",
    "ScoreFn": "scotsearch.search.beam",
    "Subset": "scotsearch.search.beam",
    "beam_search": "scotsearch.search.beam",
    "expand": "scotsearch.search.beam",
    "initial_candidates": "scotsearch.search.beam",
    "top_k": "scotsearch.search.beam",
    "BeamOutcome": "scotsearch.search.beam_study",
    "run_beam": "scotsearch.search.beam_study",
    "PRUNERS": "scotsearch.search.objective",
    "TuneObjective": "scotsearch.search.objective",
    "out_of_beam": "scotsearch.search.race",
    "Range": "scotsearch.search.space",
    "TuneSpace": "scotsearch.search.space",
    "DEFAULT_SPACE": "scotsearch.search.space_file",
    "load_space": "scotsearch.search.space_file",
    "space_from_dict": "scotsearch.search.space_file",
    "SAMPLERS": "scotsearch.search.tune",
    "run_tune": "scotsearch.search.tune",
    "TuneResult": "scotsearch.search.tune_result",
}


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
    "top_k",
]


def __getattr__(name: str) -> object:
    import importlib

    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
