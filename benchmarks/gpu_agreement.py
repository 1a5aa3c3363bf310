"""GPU-vs-CPU agreement on demo pairs: the same candidates scored on both devices.

Runs the real (random-weight, offline) ResNet-50 on the embedded demo's val split, scores a
few layer subsets with the eager chain on the CPU (the reference) and, where CUDA is
present, with the eager and the fused (Triton) chains on the GPU (else the fused numba chain
on the CPU), and prints how many per-pair correct counts and predicted keypoints agree.

Usage: python benchmarks/gpu_agreement.py [--pairs 20] [--image-side 300] [--root DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch

from scotsearch.cache import open_source
from scotsearch.config import MatchConfig
from scotsearch.data import load_dataset
from scotsearch.evaluate import Evaluator
from scotsearch.features import FeatureSource
from scotsearch.features import ImageFeatures
from scotsearch.presets import get_profile


class _Memo:
    """A feature source that keeps each image's features after the first read."""

    def __init__(self, source: FeatureSource) -> None:
        self.source = source
        self.backbone = source.backbone
        self.memo: dict[tuple[Path, tuple[int, ...], bool], ImageFeatures] = {}

    def get(self, path: Path, layer_ids: tuple[int, ...], *, need_cam: bool) -> ImageFeatures:
        key = (path, layer_ids, need_cam)
        if key not in self.memo:
            self.memo[key] = self.source.get(path, layer_ids, need_cam=need_cam)
        return self.memo[key]

    def describe(self) -> dict[str, str]:
        return self.source.describe()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--image-side", type=int, default=300)
    ap.add_argument("--root", type=Path, default=None, help="where to write the demo")
    args = ap.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="scotsearch-demo-"))
    profile = dataclasses.replace(get_profile("scot"), image_side=args.image_side)
    ds = load_dataset("demo", root, "val")
    ds = dataclasses.replace(ds, pairs=ds.pairs[: args.pairs])
    subsets = [(2, 3), (0, 2, 3, 8), (2, 3, 12, 13), (5, 9)]
    runs: dict[str, tuple[np.ndarray, list[list[np.ndarray]]]] = {}
    cuda = torch.cuda.is_available()
    # With a GPU: the CPU's eager chain against both GPU chains; without one, the CPU chains.
    runs_to_do = ([("cuda-eager", "cuda", "eager"), ("cuda-fused", "cuda", "fused")] if cuda
                  else [("cpu-fused", "cpu", "fused")])
    # The network runs once, on the CPU: every run matches the same features, so what is
    # compared is the matching chain alone (cuDNN's TF32 convolutions would otherwise make
    # the GPU's features differ in the last bits).
    src = _Memo(open_source(backbone="resnet50", weights="random", seed=0, profile=profile,
                            cache_dir=None, device=torch.device("cpu"),
                            allow_random_fallback=False))
    for name, device, engine in [("cpu-eager", "cpu", "eager")] + runs_to_do:
        ev = Evaluator(ds, src, match=MatchConfig.from_variant("ot-rhm-stair"), profile=profile,
                       device=device, engine=engine)
        scores, preds = ev.predict(subsets)
        runs[name] = (scores.n_correct, preds)
    ref_counts, ref_preds = runs["cpu-eager"]
    print(f"demo val, {len(ds.pairs)} pairs, side {args.image_side}, {len(subsets)} subsets, "
          f"resnet50 random weights, ot-rhm-stair")
    for name, (counts, preds) in runs.items():
        if name == "cpu-eager":
            continue
        same = int((counts == ref_counts).all(axis=1).sum())
        diffs = [np.nanmax(np.abs(a - b)) for ra, rb in zip(ref_preds, preds)
                 for a, b in zip(ra, rb) if np.isfinite(a).any()]
        close = float(np.mean([d <= 1e-3 for d in diffs])) * 100
        print(f"{name} vs cpu-eager: per-pair correct counts equal on {same} of "
              f"{counts.shape[0] * counts.shape[2]} subset-pairs; keypoints within 1e-3 px on "
              f"{close:.1f}% of subset-pairs (largest difference {max(diffs):.3g} px)")


if __name__ == "__main__":
    main()
