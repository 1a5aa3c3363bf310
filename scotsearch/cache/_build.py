"""Filling the feature cache for a dataset split (``scotsearch cache``).

One forward pass (plus the CAM's two up-scaled passes) per distinct image. Image files are
hashed, decoded and resized by a thread pool ahead of the network, entries are encoded
and written by the same pool behind it, so the device only waits for the network itself.
Images whose network input has the same size can go through the backbone as one batch.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from scotsearch.backbones import AnyBackbone
from scotsearch.backbones import extract_features
from scotsearch.cache._estimate import check_free_space
from scotsearch.cache._estimate import entry_bytes
from scotsearch.cache._sources import CachedSource
from scotsearch.config import Profile
from scotsearch.data.images import image_size
from scotsearch.data.images import load_image
from scotsearch.data.pairs import Dataset
from scotsearch.features import ImageFeatures
from scotsearch.preprocess import prepare_image
from scotsearch.preprocess import resize_plan


logger = logging.getLogger(__name__)


@dataclass
class BuildStats:
    """What a build did.

    Attributes:
        images: distinct image files of the split.
        unique: distinct image contents (files with equal bytes share an entry).
        present: entries that were already valid.
        built: entries computed and written now.
        seconds: wall time of the network part (decoding, extraction, writing).
    """

    images: int
    unique: int
    present: int
    built: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        """Entries built per second of network time (0 when nothing was built)."""
        return self.built / self.seconds if self.seconds > 0 else 0.0


def default_batch_size(device: torch.device) -> int:
    """Images per backbone batch: 1 on the CPU (batching gains ~10 % there, see the
    benchmark, and batch 1 is bit-identical to on-demand builds), 8 on a GPU."""
    return 8 if torch.device(device).type == "cuda" else 1


@torch.no_grad()
def extract_batch(
    model: AnyBackbone, imgs: list[torch.Tensor], profile: Profile, device: torch.device
) -> list[ImageFeatures]:
    """All layers and the CAM of images whose network inputs have one size, in one batch.

    Equal, up to float rounding of batched convolutions, to ``extract_features(...,
    with_cam=True)`` per image: the same preprocessing, then SCOT's multi-scale top-2 CAM
    (``cam.multiscale_cam``) with each scale's forward pass batched; a backbone without a
    foreground map (a ViT) stores none.
    """
    model.to(device)
    mean, std, multiple = model.normalisation
    prepared = [prepare_image(img.to(device), profile, mean=mean, std=std, multiple=multiple)
                for img in imgs]
    x = torch.cat([p[0] for p in prepared])
    with_cam = model.marginal is not None
    feats, last, logits = model.forward_layers(x, None, need_logits=with_cam)
    n, h, w = x.shape[0], int(x.shape[2]), int(x.shape[3])
    total = model.foreground(x, last, logits, compat=profile.name) if with_cam else None
    return [
        ImageFeatures(
            layers={k: v[i].float().cpu() for k, v in sorted(feats.items())},
            image_size=(h, w),
            ratio=prepared[i][1],
            orig_size=(int(imgs[i].shape[1]), int(imgs[i].shape[2])),
            cam=None if total is None else total[i].float().cpu(),
        )
        for i in range(n)
    ]


@dataclass
class _Decoded:
    sha: str
    path: Path
    img: torch.Tensor
    size: tuple[int, int]


def build_cache(
    dataset: Dataset | Iterable[Path],
    source: CachedSource,
    *,
    workers: int = 4,
    batch_size: int | None = None,
    progress: bool = True,
) -> BuildStats:
    """Make sure every distinct image of ``dataset`` has a valid entry.

    Entries that pass the quick check are skipped, so re-running after an interruption
    completes only what is missing. The backbone is loaded only if something is missing.

    Args:
        dataset: a split (its distinct images) or image paths.
        source: the cached source (its key, profile, device and lazily loaded backbone).
        workers: threads for hashing, decoding and writing.
        batch_size: images per backbone batch (``None``: :func:`default_batch_size`).
        progress: show a progress bar with images/s.
    """
    paths = dataset.image_paths() if isinstance(dataset, Dataset) else list(dict.fromkeys(dataset))
    batch = batch_size or default_batch_size(source.device)
    workers = max(1, int(workers))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scotsearch-cache")
    try:
        unique, todo = _missing(paths, source, pool)
        stats = BuildStats(images=len(paths), unique=len(unique), present=len(unique) - len(todo),
                           built=0, seconds=0.0)
        if not todo:
            return stats
        check_free_space(source.cache.folder, estimate_bytes([p for _, p in todo], source),
                         len(todo))
        model = source.model()
        t0 = time.perf_counter()
        stats.built = _run(todo, source, model, pool, workers=workers, batch=batch,
                           progress=progress)
        stats.seconds = time.perf_counter() - t0
        return stats
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _missing(paths: list[Path], source: CachedSource, pool: ThreadPoolExecutor
             ) -> tuple[dict[str, Path], list[tuple[str, Path]]]:
    """``({content sha: first path}, [(sha, path) without a valid entry])``."""
    shas = list(pool.map(source.image_sha, paths))
    unique = dict(zip(reversed(shas), reversed(paths)))  # first path of each content
    unique = {s: unique[s] for s in dict.fromkeys(shas)}
    valid = list(pool.map(source.cache.has, unique))
    return unique, [(s, p) for (s, p), ok in zip(unique.items(), valid) if not ok]


def estimate_bytes(paths: Iterable[Path], source: CachedSource) -> int:
    """Estimated bytes of the entries of these images (their headers give their sizes)."""
    total = 0
    for path in paths:
        w, h = image_size(path)
        size, _ = resize_plan(h, w, source.profile)
        total += entry_bytes(source.backbone, size)
    return total


def check_cache_space(dataset: Dataset, source: CachedSource, *, workers: int = 4) -> int:
    """Refuse in one line when the split's missing entries would not fit on the disk.

    For the commands that build entries on demand; returns the number of missing entries.
    """
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scotsearch-cache") as pool:
        _, todo = _missing(dataset.image_paths(), source, pool)
    if todo:
        check_free_space(source.cache.folder, estimate_bytes([p for _, p in todo], source),
                         len(todo))
    return len(todo)


def _run(todo: list[tuple[str, Path]], source: CachedSource, model: AnyBackbone,
         pool: ThreadPoolExecutor, *, workers: int, batch: int, progress: bool) -> int:
    profile = source.profile

    def decode(item: tuple[str, Path]) -> _Decoded:
        sha, path = item
        img = load_image(path)
        size, _ = resize_plan(int(img.shape[1]), int(img.shape[2]), profile)
        return _Decoded(sha, path, img, size)

    ahead = max(2 * workers, 2 * batch)
    pending: deque[Future[_Decoded]] = deque()
    writes: deque[Future[ImageFeatures]] = deque()
    buckets: dict[tuple[int, int], list[_Decoded]] = {}
    items = iter(todo)
    built = 0
    bar = tqdm(total=len(todo), desc="cache", unit="img", disable=not progress or None,
               leave=False)

    def refill() -> None:
        while len(pending) < ahead:
            nxt = next(items, None)
            if nxt is None:
                return
            pending.append(pool.submit(decode, nxt))

    def flush(group: list[_Decoded]) -> None:
        nonlocal built
        if len(group) == 1:
            feats = [extract_features(model, group[0].img, profile, with_cam=True,
                                      device=source.device)]
        else:
            feats = extract_batch(model, [d.img for d in group], profile, source.device)
        for d, f in zip(group, feats):
            # Bound the entries waiting to be written (tens of MB each).
            while len(writes) > workers + batch:
                writes.popleft().result()
            writes.append(pool.submit(source.cache.put, d.sha, f, source=str(d.path)))
        built += len(group)
        bar.update(len(group))

    try:
        refill()
        while pending:
            d = pending.popleft().result()
            refill()
            buckets.setdefault(d.size, []).append(d)
            if len(buckets[d.size]) >= batch:
                flush(buckets.pop(d.size))
            elif sum(len(b) for b in buckets.values()) > 4 * batch:
                # Many distinct sizes: do not hold images back for long.
                flush(buckets.pop(max(buckets, key=lambda s: len(buckets[s]))))
        for size in list(buckets):
            flush(buckets.pop(size))
        while writes:
            writes.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        bar.close()
    source.builds += built
    return built
