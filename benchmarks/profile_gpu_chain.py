"""Where the fused GPU chain's time goes, at SPair size (a GPU is needed).

1. Each Triton kernel alone on a batch of ``--subsets`` candidates of one SPair-size pair
   (4,275 x 3,750 hyperpixels), timed with CUDA events (median of repeats): the Gibbs pass,
   the row scalings, the Hough histogram by atomic adds and by the displacement histogram.
2. The whole evaluator call per candidate-pair with each histogram method, as
   bench_evaluator.py times it, and the CUDA kernels that took the most time in one call
   (torch.profiler).

Usage: python benchmarks/profile_gpu_chain.py [--subsets 24] [--pairs 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from scotsearch.config import MatchConfig
from scotsearch.evaluate import Evaluator
from scotsearch.fused import _device_chain
from scotsearch.fused import _triton as kern
from scotsearch.fused import warm_up
from scotsearch.geometry import make_grid
from scotsearch.presets import get_profile
from scotsearch.rhm import hough_tables


sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_evaluator import spair_size_setup  # noqa: E402


def device_ms(fn, dev: torch.device, repeat: int = 10) -> float:  # noqa: ANN001
    """Median milliseconds of ``fn()`` over ``repeat`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        if dev.type != "cuda":
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def kernels_alone(S: int, dev: torch.device, hs: int = 57, ws: int = 75, ht: int = 50,
                  wt: int = 75, repeat: int = 10) -> None:
    n, m = hs * ws, ht * wt
    g = torch.Generator(device=dev).manual_seed(0)
    sg = make_grid(hs, ws, stride=4, rf=35, image_size=(4 * hs, 4 * ws), prune_margin=False)
    tg = make_grid(ht, wt, stride=4, rf=35, image_size=(4 * ht, 4 * wt), prune_margin=False)
    tables = hough_tables(sg.centres, tg.centres, sg.image_size, tg.image_size)
    geo = _device_chain._geometry(sg, tg, tables, dev)
    parent = torch.randn(n, m, device=dev, generator=g)
    dt = torch.randn(n, m, device=dev, generator=g)
    rows = torch.zeros(1, 4, dtype=torch.int32, device=dev)
    wts = torch.zeros(1, 4, device=dev)
    inv_s = torch.rand(n, device=dev, generator=g) * 0.1
    inv_t = torch.rand(m, device=dev, generator=g) * 0.1
    a0 = torch.full((n,), 1.0 / n, device=dev)
    work = torch.empty(S, n, m, device=dev)
    colpart = torch.empty(S, kern.colpart_rows(n), m, device=dev)
    mu = torch.full((n,), 1.0 / n, device=dev)
    b = torch.rand(S, m, device=dev, generator=g)
    a = torch.empty(S, n, device=dev)
    hist = torch.zeros(S, geo.shape[0] * geo.shape[1], device=dev)

    def gibbs() -> None:
        for q in range(S):
            kern.gibbs(parent, dt, rows, wts, inv_s, inv_t, a0, 0.05, work[q], colpart[q],
                       identity=True)

    def rows_only() -> None:
        kern.plan_hist(work, mu, b, a, float(n), 1.0, geo.src_valid, geo.trg_valid, None,
                       geo.tables, geo.nx, geo.wt, masked=False)

    def atomic() -> None:
        hist.zero_()
        kern.plan_hist(work, mu, b, a, float(n), 1.0, geo.src_valid, geo.trg_valid, hist,
                       geo.tables, geo.nx, geo.wt, masked=False)

    def shift() -> None:
        _device_chain._bins_from_offsets(
            kern.shift_hist(work, a, b, float(n), 1.0, geo.src_valid, geo.trg_valid, (hs, ws),
                            (ht, wt), masked=False), geo)

    spare = torch.empty(n, m, device=dev)

    def copy() -> None:
        for q in range(S):
            spare.copy_(work[q])

    work.copy_(torch.rand(S, n, m, device=dev, generator=g))

    print(f"kernels alone, {S} candidates of one {n} x {m} pair, ms per candidate:")
    for name, fn in (("gibbs (parent + base-resolution term)", gibbs),
                     ("row scalings a = mu / (K b)", rows_only),
                     ("row scalings + histogram by atomic adds", atomic),
                     ("histogram from displacement histogram", shift),
                     ("one copy of [n x m] (read + write)", copy)):
        print(f"  {name:45s} {device_ms(fn, dev, repeat) / S:8.3f}")
    work.copy_(torch.rand(S, n, m, device=dev, generator=g))
    atomic()
    atomic_hist = hist.clone()
    hist.copy_(_device_chain._bins_from_offsets(
        kern.shift_hist(work, a, b, float(n), 1.0, geo.src_valid, geo.trg_valid, (hs, ws),
                        (ht, wt), masked=False), geo))
    rel = float((hist - atomic_hist).abs().max() / atomic_hist.abs().max())
    print(f"  displacement vs atomic histogram: largest difference {rel:.2e} of the peak")


def evaluator_calls(S: int, n_pairs: int) -> None:
    dev = torch.device("cuda")
    ds, source, many = spair_size_setup(n_pairs, S, dev)
    warm_up(dev)
    for variant in ("ot-rhm-stair", "ot-rhm"):
        for method in ("atomic", "shift"):
            _device_chain.HISTOGRAM = method
            ev = Evaluator(ds, source, match=MatchConfig.from_variant(variant),
                           profile=get_profile("scot"), device=dev, engine="fused")
            ev.score(many, pair_index=[0])
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            ev.score(many)
            torch.cuda.synchronize()
            ms = (time.perf_counter() - t0) / n_pairs / len(many) * 1000
            print(f"evaluator, {variant}, histogram {method}: {ms:.3f} ms per candidate-pair")
    _device_chain.HISTOGRAM = "shift"
    ev = Evaluator(ds, source, match=MatchConfig.from_variant("ot-rhm-stair"),
                   profile=get_profile("scot"), device=dev, engine="fused")
    ev.score(many, pair_index=[0])
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        ev.score(many, pair_index=[1])
        torch.cuda.synchronize()
    averages = prof.key_averages()
    for key in ("self_device_time_total", "self_cuda_time_total"):
        try:
            print(averages.table(sort_by=key, row_limit=18, max_name_column_width=60))
            break
        except (AttributeError, KeyError, ValueError):
            continue


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--subsets", type=int, default=24)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--dry-run", action="store_true",
                    help="no GPU: the kernels alone on a tiny pair under Triton's interpreter")
    args = ap.parse_args()
    if args.dry_run:
        kernels_alone(2, torch.device("cpu"), 6, 7, 5, 6, repeat=1)
        return
    print(f"gpu: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    kernels_alone(args.subsets, torch.device("cuda"))
    evaluator_calls(args.subsets, args.pairs)


if __name__ == "__main__":
    main()
