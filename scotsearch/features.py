"""Per-image features: the record the backbone produces, the cache stores and matching reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch


@dataclass
class ImageFeatures:
    """Everything matching needs from one image, independent of the layer subset.

    Attributes:
        layers: layer id -> ``[C x h x w]`` map at the layer's native resolution (the cache
            stores float16; matching casts to float32).
        image_size: ``(H, W)`` of the resized network input.
        ratio: resize ratio (resized / original); keypoints and PCK thresholds scale by it.
        orig_size: ``(H, W)`` of the decoded original image.
        cam: ``[H x W]`` multi-scale top-2 class activation map at ``image_size``, values in
            about [0, 1], before any staircase (so staircase settings can be tuned later);
            ``None`` when not computed.
    """

    layers: dict[int, torch.Tensor]
    image_size: tuple[int, int]
    ratio: float
    orig_size: tuple[int, int]
    cam: torch.Tensor | None = None


class FeatureSource(Protocol):
    """Where the evaluator gets per-image features (an extractor or the on-disk cache)."""

    backbone: str

    def get(self, path: Path, layer_ids: tuple[int, ...], *, need_cam: bool) -> ImageFeatures:
        """Features of the image at ``path`` holding at least ``layer_ids`` (and the CAM)."""
        ...

    def describe(self) -> dict[str, str]:
        """What produced the features: backbone, weights, weights digest, profile."""
        ...
