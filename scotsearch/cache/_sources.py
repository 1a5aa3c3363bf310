"""Feature sources the evaluator reads: the on-disk cache, or memory only (issue #3).

The backbone runs once per distinct image; every layer id's map, the raw multi-scale CAM,
the resize ratio and the sizes are stored in one entry per image (:mod:`._format`,
:mod:`._store`). Searches then read only the layers a candidate needs and never run the CNN
for a cached image.

:func:`open_source` returns the :class:`~scotsearch.features.FeatureSource` of the CLI
flags: a :class:`CachedSource` (builds missing entries on demand) or, without a cache
folder, a :class:`MemorySource`. Both round values through the entry format, so a run
scores the same with and without the cache.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from scotsearch.backbones import AnyBackbone
from scotsearch.backbones import extract_features
from scotsearch.backbones import load_backbone
from scotsearch.cache._digests import DigestBook
from scotsearch.cache._digests import weights_ref
from scotsearch.cache._format import CacheKey
from scotsearch.cache._format import EntryError
from scotsearch.cache._format import digests_path
from scotsearch.cache._format import features_dir_of
from scotsearch.cache._format import file_sha256
from scotsearch.cache._format import make_key
from scotsearch.cache._format import roundtrip
from scotsearch.cache._store import FeatureCache
from scotsearch.config import Profile
from scotsearch.data.images import load_image
from scotsearch.errors import DataError
from scotsearch.errors import ScotsearchError
from scotsearch.features import ImageFeatures


logger = logging.getLogger(__name__)


def _nbytes(f: ImageFeatures) -> int:
    n = sum(t.numel() * t.element_size() for t in f.layers.values())
    return n + (0 if f.cam is None else f.cam.numel() * f.cam.element_size())


class _Memo:
    """Recently used images' features, bounded in bytes (least recently used goes first)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, ImageFeatures] = OrderedDict()
        self._bytes = 0

    def peek(self, key: str) -> ImageFeatures | None:
        f = self._items.get(key)
        if f is not None:
            self._items.move_to_end(key)
        return f

    def store(self, key: str, f: ImageFeatures) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= _nbytes(old)
        self._items[key] = f
        self._bytes += _nbytes(f)
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= _nbytes(dropped)

    @property
    def nbytes(self) -> int:
        return self._bytes


def _subset(f: ImageFeatures, layer_ids: tuple[int, ...], need_cam: bool) -> ImageFeatures:
    return ImageFeatures(layers={l: f.layers[l] for l in layer_ids}, image_size=f.image_size,
                         ratio=f.ratio, orig_size=f.orig_size, cam=f.cam if need_cam else None)


class MemorySource:
    """Features extracted on demand and kept in memory only (``--no-cache``).

    Values go through the same float16 rounding as cache entries, so a run without the
    cache scores exactly as one with it. Recently used images stay in memory (bounded by
    ``max_bytes``) so a pair's images, and images shared between pairs, are not
    extracted again while they are remembered.
    """

    def __init__(self, model: AnyBackbone, profile: Profile, device: torch.device, *,
                 max_bytes: int = 1 << 30) -> None:
        self.model = model
        self.backbone = model.name
        self.profile = profile
        self.device = device
        self._memo = _Memo(max_bytes)
        self.extractions = 0

    def get(self, path: Path, layer_ids: tuple[int, ...], *, need_cam: bool) -> ImageFeatures:
        """The image's ``layer_ids`` (and CAM), extracted unless remembered."""
        key = str(Path(path))
        f = self._memo.peek(key)
        if f is None or (need_cam and f.cam is None):
            f = roundtrip(extract_features(self.model, load_image(Path(path)), self.profile,
                                           with_cam=need_cam, device=self.device))
            self.extractions += 1
            self._memo.store(key, f)
        return _subset(f, tuple(layer_ids), need_cam)

    def describe(self) -> dict[str, str]:
        """Backbone, weights, weights digest and profile; no cache key."""
        return {**self.model.describe(), "profile": self.profile.name, "cache_key": ""}


class CachedSource:
    """Features read from a :class:`FeatureCache`, building missing entries on demand.

    The backbone is loaded only when an entry must be built (or was given, when loading it
    was needed to learn the weights digest). Corrupt or truncated entries are reported by
    file name and rebuilt.

    Args:
        cache: the key-bound cache.
        backbone: backbone name.
        weights, seed, allow_random_fallback: how to load the backbone (``load_backbone``).
        weights_description: what ``describe()`` reports for the weights.
        identity: digest-book identity of the weights (to correct a stale record).
        profile: preprocessing conventions.
        device: where the backbone runs.
        model: an already loaded backbone, if any.
        max_bytes: memory for recently read images (kept small: the cache may exceed RAM).
    """

    def __init__(
        self,
        cache: FeatureCache,
        *,
        backbone: str,
        weights: str | None,
        seed: int,
        allow_random_fallback: bool,
        weights_description: str,
        identity: dict[str, Any] | None,
        profile: Profile,
        device: torch.device,
        model: AnyBackbone | None = None,
        max_bytes: int = 256 << 20,
    ) -> None:
        self.cache = cache
        self.backbone = backbone
        self._load_args = (weights, seed, allow_random_fallback)
        self.weights_description = weights_description
        self._identity = identity
        self.profile = profile
        self.device = torch.device(device)
        self._model = model
        self._memo = _Memo(max_bytes)
        self._shas: dict[str, tuple[int, int, str]] = {}
        # sha -> (inode, mtime) of the entry file and its tensors whose CRC was verified.
        self._checked: dict[str, tuple[tuple[int, int], set[str]]] = {}
        self.builds = 0

    @property
    def key(self) -> CacheKey:
        assert self.cache.key is not None
        return self.cache.key

    def image_sha(self, path: Path) -> str:
        """SHA-256 of the image file, remembered while its size and mtime are unchanged."""
        name = str(Path(path))
        try:
            st = os.stat(name)
        except OSError:
            raise DataError(f"image not found: {path}") from None
        memo = self._shas.get(name)
        if memo is not None and memo[:2] == (st.st_size, st.st_mtime_ns):
            return memo[2]
        sha = file_sha256(Path(name))
        self._shas[name] = (st.st_size, st.st_mtime_ns, sha)
        return sha

    def model(self) -> AnyBackbone:
        """The backbone, loaded on first use; its digest must match the cache key's."""
        if self._model is None:
            weights, seed, fallback = self._load_args
            model = load_backbone(self.backbone, weights, seed=seed,
                                  allow_random_fallback=fallback)
            expected = self.key.fields["weights_digest"]
            if model.weights_digest != expected:
                DigestBook(digests_path(self.cache.features_dir)).put(
                    self._identity, model.weights_digest, model.weights)
                raise ScotsearchError(
                    f"the weights {model.weights} changed since their digest was recorded "
                    f"({expected[:12]}... -> {model.weights_digest[:12]}...); the record is "
                    "corrected, run the command again"
                )
            self._model = model
        return self._model

    def build(self, path: Path, image_sha: str | None = None,
              img: torch.Tensor | None = None) -> ImageFeatures:
        """Run the backbone on one image and store its complete entry (all layers, CAM)."""
        sha = image_sha or self.image_sha(path)
        image = load_image(Path(path)) if img is None else img
        feats = extract_features(self.model(), image, self.profile, with_cam=True,
                                 device=self.device)
        out = self.cache.put(sha, feats, source=str(path))
        self.builds += 1
        return out

    def _checked_set(self, sha: str) -> set[str]:
        """Verified tensor names of the entry file as it is now (a replaced file starts over)."""
        try:
            st = os.stat(self.cache.path_for(sha))
        except OSError:
            return set()
        ident = (st.st_ino, st.st_mtime_ns)
        memo = self._checked.get(sha)
        if memo is None or memo[0] != ident:
            memo = (ident, set())
            self._checked[sha] = memo
        return memo[1]

    def get(self, path: Path, layer_ids: tuple[int, ...], *, need_cam: bool) -> ImageFeatures:
        """The image's ``layer_ids`` (and CAM) from memory, the cache, or a build."""
        sha = self.image_sha(path)
        ids = tuple(int(i) for i in layer_ids)
        have = self._memo.peek(sha)
        missing = ids if have is None else tuple(l for l in ids if l not in have.layers)
        cam_missing = need_cam and (have is None or have.cam is None)
        if have is not None and not missing and not cam_missing:
            return _subset(have, ids, need_cam)
        try:
            part = self.cache.get(sha, missing, need_cam=cam_missing,
                                  checked=self._checked_set(sha))
        except EntryError as exc:
            logger.warning("cache entry %s is corrupt or truncated (%s); rebuilding it",
                           exc.path, exc.reason)
            self.cache.discard(exc.path)
            self._checked.pop(sha, None)
            part = None
        if part is None:
            full = self.build(path, sha)
            self._memo.store(sha, full)
            return _subset(full, ids, need_cam)
        if have is not None:
            part.layers = {**have.layers, **part.layers}
            part.cam = part.cam if part.cam is not None else have.cam
        self._memo.store(sha, part)
        return _subset(part, ids, need_cam)

    def describe(self) -> dict[str, str]:
        """Backbone, weights, weights digest, profile, cache key and cache folder."""
        return {
            "backbone": self.backbone,
            "weights": self.weights_description,
            "weights_digest": str(self.key.fields["weights_digest"]),
            "profile": self.profile.name,
            "cache_key": self.key.digest,
            "cache_dir": str(self.cache.cache_dir),
        }


def open_source(
    *,
    backbone: str,
    weights: str | None,
    seed: int,
    profile: Profile,
    cache_dir: Path | None,
    device: torch.device,
    allow_random_fallback: bool,
) -> MemorySource | CachedSource:
    """The feature source for the CLI flags.

    Args:
        backbone: ``resnet50`` or ``resnet101``.
        weights: ``--weights`` (``None``/``IMAGENET1K_V1``, ``random[:seedN]`` or a file).
        seed: seed of random weights.
        profile: preprocessing conventions (part of the cache key).
        cache_dir: ``--cache-dir``; ``None`` keeps features in memory only.
        device: where the backbone runs.
        allow_random_fallback: use random weights when the ImageNet ones are unavailable.

    Returns:
        A :class:`CachedSource` (the backbone loaded only if its weights digest is not on
        record) or, without ``cache_dir``, a :class:`MemorySource`.
    """
    if cache_dir is None:
        return MemorySource(load_backbone(backbone, weights, seed=seed,
                                          allow_random_fallback=allow_random_fallback),
                            profile, device)
    ref = weights_ref(backbone, weights, seed)
    book = DigestBook(digests_path(features_dir_of(Path(cache_dir))))
    digest = book.get(ref.identity)
    description = ref.description
    model: AnyBackbone | None = None
    if digest is None:
        model = load_backbone(backbone, weights, seed=seed,
                              allow_random_fallback=allow_random_fallback)
        digest, description = model.weights_digest, model.weights
        if description == ref.description:  # not a random fallback for missing weights
            book.put(ref.identity, digest, description)
    cache = FeatureCache(Path(cache_dir), make_key(backbone, digest, profile), weights=description)
    return CachedSource(
        cache, backbone=backbone, weights=weights, seed=seed,
        allow_random_fallback=allow_random_fallback, weights_description=description,
        identity=ref.identity, profile=profile, device=device, model=model,
    )
