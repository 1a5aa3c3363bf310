"""Time the evaluator per pair and per candidate subset on SPair-size synthetic features.

A pair of ~300x225 / 300x200 images gives 57x75 = 4,275 source and 50x75 = 3,750 target
hyperpixels on the stride-4 grid; the layer set (2,22,24,25,27,28,29) of ResNet-101 has
256 + 6 x 1024 = 6,400 channels. Features are random (timing does not depend on values).

Prints, in one run on one machine, the ms per candidate-pair of the eager and the fused
engine (numba kernels on the CPU, Triton kernels on a CUDA device), the ms of one add pass
over an ``[n x m]`` float32 matrix, the ratios, the largest difference between the two
engines' predicted keypoints, and the peak memory.

Usage: python benchmarks/bench_evaluator.py [--device cpu|cuda] [--pairs 2] [--subsets 16]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from scotsearch.config import MatchConfig
from scotsearch.data.pairs import Dataset
from scotsearch.data.pairs import Pair
from scotsearch.evaluate import Evaluator
from scotsearch.features import ImageFeatures
from scotsearch.fused import warm_up
from scotsearch.layers import layer_specs
from scotsearch.presets import get_profile


class RandomSource:
    """Random float16 features of ResNet-101 shapes, generated once per image."""

    def __init__(self, sizes: dict[str, tuple[int, int]], device: torch.device) -> None:
        self.backbone = "resnet101"
        self.specs = layer_specs("resnet101")
        self.sizes = sizes
        self.store: dict[str, ImageFeatures] = {}
        self.device = device

    def get(self, path: Path, layer_ids: tuple[int, ...], *, need_cam: bool) -> ImageFeatures:
        key = str(path)
        if key not in self.store:
            H, W = self.sizes[key]
            g = torch.Generator().manual_seed(hash(key) % 2**31)
            layers = {}
            for s in self.specs:
                h = math.ceil(math.ceil(H / 2) / 2) if s.stride == 4 else math.ceil(H / s.stride)
                w = math.ceil(math.ceil(W / 2) / 2) if s.stride == 4 else math.ceil(W / s.stride)
                layers[s.id] = torch.randn(s.channels, h, w, generator=g).half().to(self.device)
            cam = torch.rand(H, W, generator=g)
            self.store[key] = ImageFeatures(layers=layers, image_size=(H, W), ratio=1.0,
                                            orig_size=(H, W), cam=cam)
        f = self.store[key]
        return ImageFeatures(layers={l: f.layers[l] for l in layer_ids}, image_size=f.image_size,
                             ratio=1.0, orig_size=f.orig_size, cam=f.cam)

    def describe(self) -> dict[str, str]:
        return {"backbone": self.backbone, "weights": "random-bench"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def add_pass_ms(n: int, m: int, device: torch.device, repeat: int = 5) -> float:
    """Best time of one out-of-place add over two ``[n x m]`` float32 matrices."""
    x = torch.rand(n, m, device=device)
    y = torch.rand(n, m, device=device)
    out = torch.empty_like(x)
    best = math.inf
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        torch.add(x, y, out=out)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


#: The base set of the candidates: SCOT's PF-PASCAL layers of ResNet-101.
BASE_SET = (2, 22, 24, 25, 27, 28, 29)


def spair_size_setup(n_pairs: int, n_subsets: int, device: torch.device
                     ) -> tuple[Dataset, RandomSource, list[tuple[int, ...]]]:
    """``n_pairs`` SPair-size pairs (12 keypoints each), their random features, and
    ``n_subsets`` candidates as at a beam depth: :data:`BASE_SET` plus one more layer each."""
    rng = np.random.default_rng(0)
    sizes, pairs = {}, []
    for k in range(n_pairs):
        sizes[f"s{k}"] = (225, 300)
        sizes[f"t{k}"] = (200, 300)
        kps = rng.uniform(20, 190, size=(12, 2))
        pairs.append(Pair(pair_id=str(k), category="x", src_path=Path(f"s{k}"),
                          trg_path=Path(f"t{k}"), src_kps=kps, trg_kps=kps,
                          trg_bbox=np.array([0, 0, 200, 150.0])))
    ds = Dataset(name="bench", split="val", root=Path("."), pairs=tuple(pairs),
                 default_thres="bbox")
    many = [tuple(sorted(set(BASE_SET) | {c})) for c in range(3, 34) if c not in BASE_SET]
    return ds, RandomSource(sizes, device), many[:n_subsets]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--subsets", type=int, default=16, help="candidate subsets per call")
    ap.add_argument("--variant", default="ot-rhm-stair")
    ap.add_argument("--engines", default="eager,fused", help="comma-separated engines to time")
    args = ap.parse_args()
    device = torch.device(args.device)
    ds, source, many = spair_size_setup(args.pairs, args.subsets, device)
    match = MatchConfig.from_variant(args.variant)
    for k in range(args.pairs):  # generate the features outside the timed region
        source.get(Path(f"s{k}"), (0,), need_cam=False)
        source.get(Path(f"t{k}"), (0,), need_cam=False)

    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    n, m = 57 * 75, 50 * 75
    add = add_pass_ms(n, m, device)
    print(f"machine: {name} ({device.type}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)")
    print(f"grid: {n} x {m} hyperpixels, {256 + 6 * 1024} channels in the base set, "
          f"variant {args.variant}, {len(many)} candidates, {args.pairs} pairs")
    print(f"one add pass over [n x m] float32: {add:.1f} ms")
    times: dict[str, float] = {}
    preds: dict[str, list[list[np.ndarray]]] = {}
    for engine in args.engines.split(","):
        ev = Evaluator(ds, source, match=match, profile=get_profile("scot"), device=device,
                       engine=engine)
        if engine == "fused":
            print(f"fused kernels compiled or loaded in {warm_up(device):.1f} s "
                  f"(not timed below)")
        ev.score(many[:4], pair_index=[0])  # warm-up: first calls, parents and children
        sync(device)
        t0 = time.perf_counter()
        _, preds[engine] = ev.predict(many)
        sync(device)
        times[engine] = (time.perf_counter() - t0) / args.pairs / len(many) * 1000
        print(f"{engine:>6}: {times[engine]:8.1f} ms per candidate-pair "
              f"= {times[engine] / add:5.1f} add passes")
    if "eager" in times and "fused" in times:
        diff = max(float(np.nanmax(np.abs(a - b))) if np.isfinite(a).any() else 0.0
                   for ra, rb in zip(preds["eager"], preds["fused"]) for a, b in zip(ra, rb))
        print(f"fused vs eager: {times['eager'] / times['fused']:.1f}x faster; "
              f"largest keypoint difference {diff:.2e} px")
    print(f"peak memory: {peak_memory_mb(device):.0f} MB ({device.type})")


if __name__ == "__main__":
    main()
