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

Importing the package loads torch, but not Optuna, pandas or SQLAlchemy: the study and
tuning machinery (:mod:`scotsearch.search.tune`, :mod:`scotsearch.study`) is imported on use.
"""

from __future__ import annotations

# The module, not its function of the same name: binding the function here would hide the
# submodule (``import scotsearch.rhm as m`` would give the function).
from scotsearch import rhm
from scotsearch._version import __version__
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
