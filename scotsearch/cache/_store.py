"""One key folder of the feature cache: reading and writing its entries.

A :class:`FeatureCache` knows where an image's entry lives, writes complete entries
atomically (and the folder's manifest with them) and reads back the layers a caller asks
for. Building entries is :mod:`._build`'s business, choosing between cache and network
:mod:`._sources`', and whole-cache maintenance :mod:`._admin`'s.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from scotsearch._io import atomic_write
from scotsearch._version import __version__
from scotsearch.cache._format import CacheKey
from scotsearch.cache._format import EntryError
from scotsearch.cache._format import encode_entry
from scotsearch.cache._format import entry_path
from scotsearch.cache._format import features_dir_of
from scotsearch.cache._format import manifest_path
from scotsearch.cache._format import quick_check
from scotsearch.cache._format import read_entry
from scotsearch.errors import ScotsearchError
from scotsearch.features import ImageFeatures
from scotsearch.weights import torchvision_version


log = logging.getLogger(__name__)


class FeatureCache:
    """One cache folder; bound to an extractor key for reads and writes.

    Args:
        cache_dir: the ``--cache-dir`` folder (entries live under its features folder,
            :attr:`features_dir`).
        key: the extractor key; ``None`` for a cache not bound to one (only
            :attr:`features_dir` is then usable).
        weights: description of the weights, recorded in the folder's manifest.
    """

    def __init__(self, cache_dir: Path, key: CacheKey | None = None, *, weights: str = "") -> None:
        self.cache_dir = Path(cache_dir)
        self.features_dir = features_dir_of(self.cache_dir)
        self.key = key
        self.weights = weights
        self._manifest_ok = False

    @property
    def folder(self) -> Path:
        """The key folder: where this key's entries and manifest live."""
        if self.key is None:
            raise ValueError("this FeatureCache has no key; pass one to read or write entries")
        return self.features_dir / self.key.short

    def path_for(self, image_sha: str) -> Path:
        """Entry file of an image (by the SHA-256 of its bytes)."""
        return entry_path(self.folder, image_sha)

    def _ensure_manifest(self) -> None:
        """Write the folder's manifest (full key, versions) once, or add a weights spelling."""
        if self._manifest_ok:
            return
        assert self.key is not None
        path = manifest_path(self.folder)
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            manifest = None
        rebuilt = not isinstance(manifest, dict) or manifest.get("key") != self.key.digest
        if rebuilt:
            if path.is_file():
                log.warning("cache manifest %s was unreadable or foreign; written again", path)
            manifest = {
                "key": self.key.digest,
                "fields": self.key.fields,
                "weights_seen": [],
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "versions": {"scotsearch": __version__, "torch": torch.__version__,
                             "torchvision": torchvision_version()},
            }
        else:
            manifest.setdefault("weights_seen", [])
        new_spelling = bool(self.weights) and self.weights not in manifest["weights_seen"]
        if new_spelling:
            manifest["weights_seen"].append(self.weights)
        if new_spelling or rebuilt:
            atomic_write(path, json.dumps(manifest, indent=1, sort_keys=True))
        self._manifest_ok = True

    def has(self, image_sha: str) -> bool:
        """A readable entry exists (header, length, key and image checked; no CRC)."""
        assert self.key is not None
        try:
            quick_check(self.path_for(image_sha), self.key.digest, image_sha)
            return True
        except (FileNotFoundError, EntryError):
            return False

    def get(
        self, image_sha: str, layer_ids: tuple[int, ...] | None = None, *, need_cam: bool = True,
        checked: set[str] | None = None,
    ) -> ImageFeatures | None:
        """Read an entry's requested layers (and CAM); ``None`` when there is no entry.

        Args:
            image_sha: the image's digest.
            layer_ids: layers to read (``None``: all).
            need_cam: read the CAM too.
            checked: tensors of this entry whose CRC was already verified (updated).

        Raises:
            EntryError: the entry exists but is truncated, corrupt or belongs elsewhere.
        """
        assert self.key is not None
        try:
            return read_entry(self.path_for(image_sha), key=self.key.digest, image_sha=image_sha,
                              layer_ids=layer_ids, need_cam=need_cam, checked=checked)
        except FileNotFoundError:
            return None

    def put(self, image_sha: str, feats: ImageFeatures, *, source: str = "") -> ImageFeatures:
        """Store a complete entry atomically; returns the features as reads will return them.

        Args:
            image_sha: the image's digest.
            feats: every layer and the CAM of the image.
            source: where the image came from (recorded in the entry, named in errors).

        Raises:
            ScotsearchError: the features are incomplete or not finite.
        """
        assert self.key is not None
        try:
            data, decoded = encode_entry(feats, self.key, image_sha, source=source)
        except ValueError as exc:
            raise ScotsearchError(
                f"cannot cache features of {source or image_sha}: {exc}") from None
        self._ensure_manifest()
        atomic_write(self.path_for(image_sha), data)
        return decoded

    def discard(self, path: Path) -> None:
        """Remove a bad entry (a concurrent rebuild may already have replaced it: harmless)."""
        Path(path).unlink(missing_ok=True)
