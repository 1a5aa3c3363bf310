"""Time the beam search on SPair-71k-size synthetic cached features (ResNet-101 shapes).

The search runs exactly as ``scotsearch beam`` does (``run_beam``: evaluator, chunked
pair-major scoring, every candidate stored in a SQLite study) over synthetic features that
stand in for the feature cache: real ResNet-101 channel counts and strides for ~300x225 and
~300x200 images (stride-4 grids of 57x75 and 50x75 hyperpixels), float16, already in memory
(cache reads are not timed here; the cache has its own benchmark). Feature values are random:
the timing of the matching does not depend on them.

It prints candidate-pairs per second, per depth and overall, and extrapolates to the full
search the references ran on SPair-71k val: 5,384 pairs x ~850 candidates
(reference-behaviour.md §8), the scoring time by candidate-pairs and the time spent storing
candidates by candidates.

Each engine (``--engines eager,fused``) runs the same search, and the ratio of their
throughputs is printed at the end.

Usage:
    python benchmarks/bench_beam.py                        # 500 pairs, the whole search
    python benchmarks/bench_beam.py --pairs 8 --max-candidates 32   # a quick look on a CPU
"""

from __future__ import annotations

import argparse
import math
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna
import torch

from scotsearch.config import MatchConfig
from scotsearch.data.pairs import Dataset
from scotsearch.data.pairs import Pair
from scotsearch.evaluate import Evaluator
from scotsearch.evaluate import Scores
from scotsearch.features import ImageFeatures
from scotsearch.fused import warm_up
from scotsearch.layers import layer_specs
from scotsearch.presets import get_profile
from scotsearch.search.beam_study import run_beam


#: SPair-71k val size and the references' candidate count for ResNet-101 (§8).
SPAIR_VAL_PAIRS = 5384
REFERENCE_CANDIDATES = 850

#: Resized (H, W) of the synthetic images: SPair images are mostly 4:3 / 3:2 landscapes.
IMAGE_SIZES = ((225, 300), (200, 300))


def _side(n: int, stride: int) -> int:
    # stem conv /2 then max-pool /2 (both ceil), then one halving per later stage (§1.2)
    side = math.ceil(math.ceil(n / 2) / 2)
    s = 4
    while s < stride:
        side = math.ceil(side / 2)
        s *= 2
    return side


class BankSource:
    """A FeatureSource over a bank of synthetic images, reused round-robin by path.

    SPair-71k pairs share images (~1,800 images for 70k pairs), and keeping every image of
    500 pairs at ~26 MB would not fit a laptop; a small bank of distinct images is enough for
    timing.
    """

    def __init__(self, *, bank: int, device: torch.device, seed: int = 0) -> None:
        self.backbone = "resnet101"
        self.specs = layer_specs("resnet101")
        g = torch.Generator().manual_seed(seed)
        self.bank: list[ImageFeatures] = []
        for k in range(bank):
            H, W = IMAGE_SIZES[k % len(IMAGE_SIZES)]
            layers = {
                s.id: torch.randn(s.channels, _side(H, s.stride), _side(W, s.stride), generator=g)
                .to(torch.float16)
                .to(device)
                for s in self.specs
            }
            cam = torch.rand(H, W, generator=g).to(device)
            self.bank.append(
                ImageFeatures(
                    layers=layers, image_size=(H, W), ratio=1.0, orig_size=(H, W), cam=cam
                )
            )

    def get(self, path: Path, layer_ids: tuple[int, ...], *, need_cam: bool) -> ImageFeatures:
        f = self.bank[int(Path(path).stem) % len(self.bank)]
        return ImageFeatures(
            layers={l: f.layers[l] for l in layer_ids}, image_size=f.image_size, ratio=1.0,
            orig_size=f.orig_size, cam=f.cam if need_cam else None,
        )

    def describe(self) -> dict[str, str]:
        return {"backbone": self.backbone, "weights": "synthetic-bench", "weights_digest": "none"}


def make_dataset(n_pairs: int, bank: int, seed: int = 0) -> Dataset:
    """``n_pairs`` pairs over ``bank`` images, 10 keypoints each, bbox threshold."""
    rng = np.random.default_rng(seed)
    pairs = []
    for k in range(n_pairs):
        a, b = (2 * k) % bank, (2 * k + 1) % bank
        (ha, wa), (hb, wb) = IMAGE_SIZES[a % 2], IMAGE_SIZES[b % 2]
        src = rng.uniform([10, 10], [wa - 10, ha - 10], size=(10, 2))
        trg = rng.uniform([10, 10], [wb - 10, hb - 10], size=(10, 2))
        box = np.array([trg[:, 0].min(), trg[:, 1].min(), trg[:, 0].max(), trg[:, 1].max()])
        pairs.append(
            Pair(
                pair_id=f"{k:05d}", category=f"c{k % 18}",
                src_path=Path(f"bench/{a}.jpg"), trg_path=Path(f"bench/{b}.jpg"),
                src_kps=src, trg_kps=trg, src_bbox=box, trg_bbox=box, thres_kind="bbox",
                src_size=(wa, ha), trg_size=(wb, hb),
            )
        )
    return Dataset(name="bench", split="val", root=Path("bench"), pairs=tuple(pairs),
                   default_thres="bbox")


class _Budget(Exception):
    """Raised to end the search after ``--max-candidates``."""


class TimedEvaluator(Evaluator):
    """The real evaluator, timing each call and stopping after a candidate budget."""

    def __init__(self, *args, budget: int | None, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.budget = budget
        self.calls: list[tuple[int, int, float]] = []  # (candidates, pairs, seconds)
        self.depth_of_call: list[int] = []

    def score(self, subsets: Sequence[Sequence[int]], **kwargs) -> Scores:  # noqa: ANN003
        # Checked before a call: the last chunk may go past the budget by up to chunk - 1.
        if self.budget is not None and sum(c for c, _, _ in self.calls) >= self.budget:
            raise _Budget
        sync(self.device)
        t0 = time.perf_counter()
        out = super().score(subsets, **kwargs)
        sync(self.device)
        n_pairs = len(out.pair_index)
        self.calls.append((len(subsets), n_pairs, time.perf_counter() - t0))
        self.depth_of_call.append(len(out.subsets[0]) - 1)  # a call holds one depth only
        return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_engine(args: argparse.Namespace, engine: str, source: BankSource, dataset: Dataset,
               device: torch.device) -> float | None:
    """One search with one engine; prints its figures and returns candidate-pairs/s overall."""
    ev = TimedEvaluator(
        dataset, source, match=MatchConfig.from_variant(args.variant), profile=get_profile("scot"),
        device=device, budget=None, engine=engine,
    )
    if engine == "fused":
        print(f"[{engine}] kernels compiled or loaded in {warm_up(device):.1f} s (not timed)")
    ev.score([(0,)], pair_index=[0])  # warm-up: allocator, kernels
    ev.calls.clear()
    ev.depth_of_call.clear()
    ev.budget = args.max_candidates
    reference = args.algorithm == "reference"
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        t0 = time.perf_counter()
        finished = True
        try:
            out = run_beam(ev, study="bench", storage=url, beam=args.beam,
                           max_layers=args.max_layers, reference=reference, chunk=args.chunk,
                           progress=True)
        except _Budget:
            finished = False
        wall = time.perf_counter() - t0

    n_cand = sum(c for c, _, _ in ev.calls)
    cand_pairs = sum(c * p for c, p, _ in ev.calls)
    t_score = sum(t for _, _, t in ev.calls)
    if not n_cand:
        print(f"[{engine}] nothing scored")
        return None
    rate = cand_pairs / t_score
    for d in sorted(set(ev.depth_of_call)):
        part = [c for c, k in zip(ev.calls, ev.depth_of_call) if k == d]
        n = sum(c for c, _, _ in part)
        cp = sum(c * p for c, p, _ in part)
        t = sum(x for _, _, x in part)
        print(f"[{engine}]  depth {d + 1}: {n:4d} candidates, {cp:8,d} candidate-pairs in "
              f"{t:8.1f} s = {cp / t:8.1f} candidate-pairs/s")
    print(f"[{engine}] scored {n_cand} candidates x {args.pairs} pairs = {cand_pairs:,} "
          f"candidate-pairs in {wall:.1f} s ({t_score:.1f} s scoring, {wall - t_score:.1f} s "
          f"storing and search)")
    print(f"[{engine}] throughput: {rate:,.1f} candidate-pairs/s scoring, "
          f"{cand_pairs / wall:,.1f} overall = {1000 * wall / cand_pairs:.1f} ms per "
          f"candidate-pair")
    if finished:
        print(f"[{engine}] search finished: best {out.result.best.key} (random features: the "
              f"value is meaningless), {len(out.result.candidates)} candidates in all")
    full = SPAIR_VAL_PAIRS * REFERENCE_CANDIDATES
    # Scoring grows with candidate-pairs, storing and the search's bookkeeping with
    # candidates: extrapolate each by what it grows with.
    per_candidate = (wall - t_score) / n_cand
    seconds = full / rate + REFERENCE_CANDIDATES * per_candidate
    print(f"[{engine}] extrapolated full SPair-71k val search ({SPAIR_VAL_PAIRS:,} pairs x "
          f"~{REFERENCE_CANDIDATES} candidates = {full / 1e6:.2f} M candidate-pairs at "
          f"{rate:,.1f}/s, plus {per_candidate * 1000:.0f} ms storing per candidate): "
          f"{seconds / 3600:,.2f} h = {seconds / 60:,.1f} min on this machine")
    return cand_pairs / wall


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--pairs", type=int, default=500, help="validation pairs (default 500)")
    ap.add_argument("--bank", type=int, default=16, help="distinct synthetic images (default 16)")
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--max-layers", type=int, default=8)
    ap.add_argument("--max-candidates", type=int, default=None,
                    help="stop after scoring this many candidates (default: the whole search)")
    ap.add_argument("--chunk", type=int, default=16, help="candidates per evaluator call")
    ap.add_argument("--variant", default="ot-rhm", help="matching variant (default ot-rhm)")
    ap.add_argument("--algorithm", default="reference", choices=("reference", "fixed"))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--engines", default="eager,fused",
                    help="comma-separated engines, each runs the same search (default both)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    t0 = time.perf_counter()
    source = BankSource(bank=args.bank, device=device)
    dataset = make_dataset(args.pairs, args.bank)
    t_setup = time.perf_counter() - t0
    print(f"machine: {machine_name(device)} ({device.type}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads)")
    print(f"data: {args.pairs} pairs over {args.bank} synthetic images (stride-4 grids 57x75 and "
          f"50x75), ResNet-101 34 layers float16, variant {args.variant}; setup {t_setup:.1f} s")
    print(f"search: {args.algorithm} algorithm, beam {args.beam}, up to {args.max_layers} layers, "
          f"chunk {args.chunk}" + (f", at most {args.max_candidates} candidates"
                                   if args.max_candidates else ""))
    rates = {e: run_engine(args, e, source, dataset, device) for e in args.engines.split(",")}
    if rates.get("eager") and rates.get("fused"):
        print(f"fused vs eager (same search, same machine): "
              f"{rates['fused'] / rates['eager']:.1f}x the candidate-pairs per second")


if __name__ == "__main__":
    main()
