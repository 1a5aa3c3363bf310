"""How much scoring does racing save, and does it change the result?

Runs the beam search twice on the same synthetic benchmark, without racing and with
``--race Z``, and prints the candidate-pairs each scored, the best subset and its PCK. The
benchmark is small synthetic images (scotsearch.testing) whose features make a few layers
informative and the rest noise, so candidates differ the way real layers do, some clearly
and some barely.

Usage: python benchmarks/bench_race.py [--pairs 200] [--z 3] [--block 32] [--beam 4]
       [--max-layers 6]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch

from scotsearch.config import MatchConfig
from scotsearch.evaluate import Evaluator
from scotsearch.presets import get_profile
from scotsearch.search.beam_study import run_beam
from scotsearch.testing import SyntheticSource
from scotsearch.testing import synthetic_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--z", type=float, default=3.0)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--max-layers", type=int, default=6)
    args = ap.parse_args()

    print(f"machine: {platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.pairs} synthetic pairs, ResNet-50 layer "
          f"shapes, informative layers 1,3,8; beam {args.beam}, up to {args.max_layers} layers")
    with tempfile.TemporaryDirectory() as tmp:
        for race in (None, args.z):
            ds = synthetic_dataset(args.pairs, image_hw=(32, 48), n_kps=6, seed=3)
            src = SyntheticSource("resnet50", informative=(1, 3, 8), image_hw=(32, 48),
                                  noise_scale=1.0)
            ev = Evaluator(ds, src, match=MatchConfig(similarity="cos", rhm=False),
                           profile=get_profile("scot"), alphas=(0.05,))
            count = [0]
            inner = ev.score

            def counting(subsets, _inner=inner, _count=count, **kw):
                _count[0] += len(subsets) * len(kw["pair_index"])
                return _inner(subsets, **kw)

            ev.score = counting  # type: ignore[method-assign]
            t0 = time.perf_counter()
            out = run_beam(ev, study="b", storage=f"sqlite:///{tmp}/{race}.db", beam=args.beam,
                           max_layers=args.max_layers, race=race, race_block=args.block)
            wall = time.perf_counter() - t0
            label = "no racing" if race is None else f"race z={race:g}"
            print(f"{label:12s} best {out.result.best.key:14s} PCK {out.result.best.score:.3f}  "
                  f"{count[0]:8,d} candidate-pairs  {wall:6.1f} s")


if __name__ == "__main__":
    main()
