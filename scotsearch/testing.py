"""Small synthetic pairs and features for tests and examples (no images, no CNN).

The target of every synthetic pair shows the source's "world" shifted by a known offset.
*Informative* layers carry a smooth random field of world coordinates, identical in source
and target at corresponding points; *noise* layers carry an independent, stronger field per
image. Subsets of informative layers therefore match well and noise layers hurt: a layer
search has a known optimum.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch

from scotsearch.data.pairs import Dataset
from scotsearch.data.pairs import Pair
from scotsearch.features import ImageFeatures
from scotsearch.layers import layer_specs


def synthetic_dataset(
    n_pairs: int = 4,
    *,
    image_hw: tuple[int, int] = (48, 64),
    n_kps: int = 6,
    seed: int = 0,
    name: str = "synthetic",
) -> Dataset:
    """Pairs with target keypoints = source keypoints + a per-pair shift (pixels)."""
    rng = np.random.default_rng(seed)
    H, W = image_hw
    pairs = []
    for k in range(n_pairs):
        shift = rng.integers(-6, 7, size=2).astype(float)
        lo = np.array([8.0, 8.0])
        hi = np.array([W - 8.0, H - 8.0])
        src = rng.uniform(lo, hi, size=(n_kps, 2))
        trg = np.clip(src + shift, 0, [W - 1, H - 1])
        src = trg - shift
        box = np.array([trg[:, 0].min(), trg[:, 1].min(), trg[:, 0].max(), trg[:, 1].max()])
        pairs.append(
            Pair(
                pair_id=f"{k:04d}",
                category=("a", "b")[k % 2],
                src_path=Path(f"synthetic/{seed}/{k}/src+0+0.png"),
                trg_path=Path(f"synthetic/{seed}/{k}/trg{shift[0]:+.0f}{shift[1]:+.0f}.png"),
                src_kps=src,
                trg_kps=trg,
                src_bbox=box - np.r_[shift, shift],
                trg_bbox=box,
                thres_kind="bbox",
                variation={"viewpoint_variation": k % 3},
                src_size=(W, H),
                trg_size=(W, H),
            )
        )
    return Dataset(
        name=name, split="val", root=Path("synthetic"), pairs=tuple(pairs), default_thres="bbox"
    )


def _shift_of(path: Path) -> tuple[float, float]:
    # The file name encodes where the image's world origin lies: "trg+3-2.png".
    stem = path.stem
    nums = stem.lstrip("srctg")
    sign_pos = [i for i, c in enumerate(nums) if c in "+-"]
    dx = float(nums[sign_pos[0] : sign_pos[1]])
    dy = float(nums[sign_pos[1] :])
    return dx, dy


def _field(
    x: torch.Tensor, y: torch.Tensor, channels: int, seed: int, scale: float
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    freq = torch.rand(channels, 2, generator=g) * (2 * math.pi / 24.0)
    phase = torch.rand(channels, generator=g) * 2 * math.pi
    arg = freq[:, 0, None, None] * x + freq[:, 1, None, None] * y + phase[:, None, None]
    return scale * torch.cos(arg)


class SyntheticSource:
    """A FeatureSource over synthetic pairs: no images are read, no network is run.

    Args:
        backbone: whose layer numbering and strides to mimic.
        informative: layer ids whose features correspond between source and target.
        channels: channels per layer (small, for speed).
        image_hw: image size of every synthetic image.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        *,
        informative: tuple[int, ...] = (0, 2),
        channels: int = 8,
        image_hw: tuple[int, int] = (48, 64),
        noise_scale: float = 3.0,
    ) -> None:
        self.backbone = backbone
        self.informative = set(informative)
        self.channels = channels
        self.image_hw = image_hw
        self.noise_scale = noise_scale
        self.specs = layer_specs(backbone)
        self.calls = 0

    def get(self, path: Path, layer_ids: tuple[int, ...], *, need_cam: bool) -> ImageFeatures:
        self.calls += 1
        H, W = self.image_hw
        dx, dy = _shift_of(Path(path))
        key = int(hashlib.sha256(str(path).encode()).hexdigest()[:8], 16)
        layers = {}
        for l in layer_ids:
            s = self.specs[l].stride
            h, w = math.ceil(H / s), math.ceil(W / s)
            yy, xx = torch.meshgrid(
                torch.arange(h, dtype=torch.float32) * s,
                torch.arange(w, dtype=torch.float32) * s,
                indexing="ij",
            )
            if l in self.informative:
                f = _field(xx - dx, yy - dy, self.channels, seed=1000 + l, scale=1.0)
            else:
                f = _field(xx, yy, self.channels, seed=key + l, scale=self.noise_scale)
            layers[l] = f
        cam = None
        if need_cam:
            yy, xx = torch.meshgrid(
                torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                indexing="ij",
            )
            cam = torch.exp(-(((xx - W / 2 + dx) / W) ** 2 + ((yy - H / 2 + dy) / H) ** 2) * 4)
        return ImageFeatures(
            layers=layers, image_size=(H, W), ratio=1.0, orig_size=(H, W), cam=cam
        )

    def describe(self) -> dict[str, str]:
        return {"backbone": self.backbone, "weights": "synthetic", "weights_digest": "synthetic"}
