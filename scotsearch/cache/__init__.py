"""The on-disk feature cache, and the feature sources the evaluator reads (issue #3).

The backbone runs once per distinct image; every layer id's map (float16, native
resolution), the raw multi-scale CAM, the resize ratio and the sizes are stored in one
safetensors entry per image. Searches then read only the layers a candidate needs and
never run the CNN for a cached image.

* :func:`open_source` returns the :class:`~scotsearch.features.FeatureSource` of the CLI
  flags: a :class:`CachedSource` (builds missing entries on demand) or, without a cache
  folder, a :class:`MemorySource`.
* :class:`FeatureCache` is one key folder of a cache folder: entry paths, ``put``/``get``.
* :func:`build_cache` fills a cache for a dataset split.
* :func:`info`, :func:`verify` and :func:`prune` inspect, check and clean a whole features
  folder (:func:`features_dir_of` of the cache folder).
* :func:`weights_ref` and :class:`DigestBook` learn the weights digest without loading them.

Names: ``cache_dir`` is the folder the user passes (``--cache-dir``), ``features_dir`` its
``features`` sub-folder, a key folder ``features_dir/<key[:16]>``.

Inside the package each module imports only those before it: ``_format`` (layout names,
keys, entry encoding) <- ``_store`` (a key folder), ``_digests`` (weights identity) <-
``_sources`` (cache or memory) <- ``_build`` (batch extraction); ``_admin`` (maintenance)
uses ``_format`` and ``_digests``.
"""

from __future__ import annotations

from scotsearch.cache._admin import PruneReport
from scotsearch.cache._admin import VerifyReport
from scotsearch.cache._admin import info
from scotsearch.cache._admin import prune
from scotsearch.cache._admin import verify
from scotsearch.cache._build import BuildStats
from scotsearch.cache._build import build_cache
from scotsearch.cache._build import check_cache_space
from scotsearch.cache._build import estimate_bytes
from scotsearch.cache._estimate import entry_bytes
from scotsearch.cache._build import default_batch_size
from scotsearch.cache._build import extract_batch
from scotsearch.cache._digests import DigestBook
from scotsearch.cache._digests import WeightsRef
from scotsearch.cache._digests import weights_ref
from scotsearch.cache._format import FEATURE_SCHEMA_VERSION
from scotsearch.cache._format import CacheKey
from scotsearch.cache._format import EntryError
from scotsearch.cache._format import features_dir_of
from scotsearch.cache._format import make_key
from scotsearch.cache._sources import CachedSource
from scotsearch.cache._sources import MemorySource
from scotsearch.cache._sources import open_source
from scotsearch.cache._store import FeatureCache


__all__ = [
    "FEATURE_SCHEMA_VERSION",
    "BuildStats",
    "CacheKey",
    "CachedSource",
    "DigestBook",
    "EntryError",
    "FeatureCache",
    "MemorySource",
    "PruneReport",
    "VerifyReport",
    "WeightsRef",
    "build_cache",
    "check_cache_space",
    "entry_bytes",
    "estimate_bytes",
    "default_batch_size",
    "extract_batch",
    "features_dir_of",
    "info",
    "make_key",
    "open_source",
    "prune",
    "verify",
    "weights_ref",
]
