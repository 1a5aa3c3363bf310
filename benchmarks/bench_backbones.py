"""Zoo-backbone figures: cache bytes per image and extraction speed (issue #11).

For each backbone and square image side: the bytes of one cache entry (every layer in
float16, as ``scotsearch cache`` writes it; no CAM for ViTs) and the seconds of
``extract_features`` for one image (preprocessing and one forward pass collecting every
layer), the median of ``--repeat`` runs after one warm-up. Random weights (the time and size
do not depend on the values).

Usage: python benchmarks/bench_backbones.py [--backbones timm:vit_small_patch14_dinov2,...]
       [--sides 224,448,518] [--repeat 3] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from scotsearch.backbones import extract_features
from scotsearch.backbones import load_backbone
from scotsearch.cache._format import encode_entry
from scotsearch.cache._format import make_key
from scotsearch.config import Profile


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones",
                   default="timm:vit_small_patch14_dinov2,timm:vit_base_patch14_dinov2")
    p.add_argument("--sides", default="224,448,518")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}")
    print("backbone | side | grid | layers | MB per image | s per image")
    for name in args.backbones.split(","):
        model = load_backbone(name, "random")
        model.to(device)
        for side in (int(s) for s in args.sides.split(",")):
            img = (torch.rand(3, side, side) * 255).to(torch.uint8)
            profile = Profile("scot", image_side=side)
            times = []
            for k in range(args.repeat + 1):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                feats = extract_features(model, img, profile, with_cam=True)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if k:  # the first run warms up
                    times.append(time.perf_counter() - t0)
            key = make_key(name, model.weights_digest, profile)
            data, _ = encode_entry(feats, key, "0" * 64)
            h, w = feats.layers[0].shape[-2:]
            print(f"{name} | {side} | {h}x{w} | {len(feats.layers)} | "
                  f"{len(data) / 2**20:.1f} | {statistics.median(times):.2f}")


if __name__ == "__main__":
    main()
