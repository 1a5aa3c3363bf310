"""Does the beam search choose the same layers with reduced-precision similarity terms?

Runs the same beam search on the embedded demo benchmark (val split) three times, with the
per-layer similarity terms stored as float32, float16 and bfloat16, and prints the selected
layers, their PCK and the largest PCK difference over every candidate scored in all three.
Features come from one in-memory source (the backbone runs once per image), the studies
live in a temporary SQLite file.

Usage: python benchmarks/precision_demo.py [--backbone resnet50] [--image-side 160]
       [--beam 4] [--max-layers 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import tempfile
import time
from pathlib import Path

import torch

from scotsearch.cache import open_source
from scotsearch.config import MatchConfig
from scotsearch.data import load_dataset
from scotsearch.evaluate import Evaluator
from scotsearch.presets import get_profile
from scotsearch.search.beam_study import run_beam
from scotsearch.study import completed_trials


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet50", choices=("resnet50", "resnet101"))
    ap.add_argument("--image-side", type=int, default=160)
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--max-layers", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    profile = dataclasses.replace(get_profile("scot"), image_side=args.image_side)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = load_dataset("demo", Path(tmp) / "demo-data", "val")
        source = open_source(backbone=args.backbone, weights="random", seed=0, profile=profile,
                             cache_dir=None, device=torch.device(args.device),
                             allow_random_fallback=False)
        match = MatchConfig.from_variant("ot-rhm", exp2=dataset.default_exp2)
        url = f"sqlite:///{tmp}/p.db"
        print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
              f"device {args.device}, torch {torch.__version__}; demo val, {len(dataset.pairs)} "
              f"pairs, {args.backbone} random weights, side {args.image_side}, "
              f"beam {args.beam}, max {args.max_layers} layers, {match.variant}")
        scores: dict[str, dict[str, float]] = {}
        for precision in ("float32", "float16", "bfloat16"):
            ev = Evaluator(dataset, source, match=match, profile=profile, device=args.device,
                           precision=precision)
            t0 = time.perf_counter()
            out = run_beam(ev, study=f"p-{precision}", storage=url, beam=args.beam,
                           max_layers=args.max_layers)
            wall = time.perf_counter() - t0
            best = out.result.best
            scores[precision] = {str(t.user_attrs["layers"]): float(t.user_attrs["pck"])
                                 for t in completed_trials(out.study)}
            print(f"{precision:9s} best {best.key:20s} PCK {best.score:.4f}  "
                  f"({len(scores[precision])} candidates, {wall:.0f} s)")
        ref = scores["float32"]
        for precision in ("float16", "bfloat16"):
            common = set(ref) & set(scores[precision])
            diff = max((abs(ref[k] - scores[precision][k]) for k in common), default=math.nan)
            print(f"{precision}: {len(common)} candidates scored in both, largest PCK "
                  f"difference to float32 {diff:.4f}")


if __name__ == "__main__":
    main()
