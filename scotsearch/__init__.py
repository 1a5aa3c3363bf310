"""scotsearch: fast, resumable layer and hyper-parameter search for SCOT / HPF.

The ``scotsearch`` command is a thin layer over this API (README, "Python API"):

* settings: :class:`MatchConfig`, :class:`Profile`, :class:`RunConfig`, and the compat presets
  table with its resolvers (:func:`resolve_match`, :func:`resolve_profile`);
* data: :func:`load_dataset` gives a :class:`Dataset` of :class:`Pair` records;
* features: :func:`open_source` (the on-disk :class:`FeatureCache` or memory only);
* scoring: :class:`Evaluator` scores many layer subsets at once into :class:`Scores`;
* search: :func:`beam_search`, the references' beam search as a pure algorithm;
* the matching maths: :func:`sinkhorn`, :func:`hough_space` and :mod:`rhm` (regularised
  Hough matching), :func:`transfer_keypoints` and PCK (:func:`pck`, :func:`mean_pck`, ...).

``import scotsearch`` is cheap: each name is imported from its module on first use, so the
command line, which imports the package for every command, pays for torch, torchvision or
Optuna only where a command needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING
from typing import Any

from scotsearch._version import __version__


if TYPE_CHECKING:
    from scotsearch import rhm
    from scotsearch.cache import CachedSource
    from scotsearch.cache import FeatureCache
    from scotsearch.cache import MemorySource
    from scotsearch.cache import open_source
    from scotsearch.config import VARIANTS
    from scotsearch.config import MatchConfig
    from scotsearch.config import Profile
    from scotsearch.config import RunConfig
    from scotsearch.data import Dataset
    from scotsearch.data import Pair
    from scotsearch.data import load_dataset
    from scotsearch.errors import ConfigError
    from scotsearch.errors import DataError
    from scotsearch.errors import ScotsearchError
    from scotsearch.evaluate import Evaluator
    from scotsearch.evaluate import Scores
    from scotsearch.features import FeatureSource
    from scotsearch.features import ImageFeatures
    from scotsearch.layers import format_layers
    from scotsearch.layers import layer_specs
    from scotsearch.layers import parse_layers
    from scotsearch.metrics import batch_mean_pck
    from scotsearch.metrics import batch_pooled_pck
    from scotsearch.metrics import correct_keypoints
    from scotsearch.metrics import mean_pck
    from scotsearch.metrics import pck
    from scotsearch.metrics import pooled_pck
    from scotsearch.ot import sinkhorn
    from scotsearch.presets import COMPAT_PRESETS
    from scotsearch.presets import DATASET_PRESETS
    from scotsearch.presets import PUBLISHED_LAYERS
    from scotsearch.presets import get_profile
    from scotsearch.presets import published_layers
    from scotsearch.presets import reference_algorithm
    from scotsearch.presets import resolve_match
    from scotsearch.presets import resolve_profile
    from scotsearch.report import summarize
    from scotsearch.rhm import hough_space
    from scotsearch.search.beam import BeamResult
    from scotsearch.search.beam import Candidate
    from scotsearch.search.beam import beam_search
    from scotsearch.transfer import transfer_keypoints


#: Public name -> the module that defines it (``rhm`` is the module itself: a function of
#: that name bound here would hide the submodule).
_EXPORTS: dict[str, str] = {
    "rhm": "scotsearch.rhm",
    "CachedSource": "scotsearch.cache",
    "FeatureCache": "scotsearch.cache",
    "MemorySource": "scotsearch.cache",
    "open_source": "scotsearch.cache",
    "VARIANTS": "scotsearch.config",
    "MatchConfig": "scotsearch.config",
    "Profile": "scotsearch.config",
    "RunConfig": "scotsearch.config",
    "Dataset": "scotsearch.data",
    "Pair": "scotsearch.data",
    "load_dataset": "scotsearch.data",
    "ConfigError": "scotsearch.errors",
    "DataError": "scotsearch.errors",
    "ScotsearchError": "scotsearch.errors",
    "Evaluator": "scotsearch.evaluate",
    "Scores": "scotsearch.evaluate",
    "FeatureSource": "scotsearch.features",
    "ImageFeatures": "scotsearch.features",
    "format_layers": "scotsearch.layers",
    "layer_specs": "scotsearch.layers",
    "parse_layers": "scotsearch.layers",
    "batch_mean_pck": "scotsearch.metrics",
    "batch_pooled_pck": "scotsearch.metrics",
    "correct_keypoints": "scotsearch.metrics",
    "mean_pck": "scotsearch.metrics",
    "pck": "scotsearch.metrics",
    "pooled_pck": "scotsearch.metrics",
    "sinkhorn": "scotsearch.ot",
    "COMPAT_PRESETS": "scotsearch.presets",
    "DATASET_PRESETS": "scotsearch.presets",
    "PUBLISHED_LAYERS": "scotsearch.presets",
    "get_profile": "scotsearch.presets",
    "published_layers": "scotsearch.presets",
    "reference_algorithm": "scotsearch.presets",
    "resolve_match": "scotsearch.presets",
    "resolve_profile": "scotsearch.presets",
    "summarize": "scotsearch.report",
    "hough_space": "scotsearch.rhm",
    "BeamResult": "scotsearch.search.beam",
    "Candidate": "scotsearch.search.beam",
    "beam_search": "scotsearch.search.beam",
    "transfer_keypoints": "scotsearch.transfer",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562), then keep it here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    imported = importlib.import_module(module)
    value = imported if module == f"{__name__}.{name}" else getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "COMPAT_PRESETS",
    "DATASET_PRESETS",
    "PUBLISHED_LAYERS",
    "VARIANTS",
    "BeamResult",
    "CachedSource",
    "Candidate",
    "ConfigError",
    "DataError",
    "Dataset",
    "Evaluator",
    "FeatureCache",
    "FeatureSource",
    "ImageFeatures",
    "MatchConfig",
    "MemorySource",
    "Pair",
    "Profile",
    "RunConfig",
    "Scores",
    "ScotsearchError",
    "__version__",
    "batch_mean_pck",
    "batch_pooled_pck",
    "beam_search",
    "correct_keypoints",
    "format_layers",
    "get_profile",
    "hough_space",
    "layer_specs",
    "load_dataset",
    "mean_pck",
    "open_source",
    "parse_layers",
    "pck",
    "pooled_pck",
    "published_layers",
    "reference_algorithm",
    "resolve_match",
    "resolve_profile",
    "rhm",
    "sinkhorn",
    "summarize",
    "transfer_keypoints",
]
