"""``scotsearch evaluate --dataset tss``: dense flow PCK per group, optional ``.flo`` files.

Kept apart from the keypoint evaluation: TSS is scored by :mod:`scotsearch.tss_eval`
(eager float32 chain, one layer set), not by the keypoint :class:`~scotsearch.evaluate.
Evaluator`.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from scotsearch._io import atomic_write
from scotsearch._version import __version__
from scotsearch.commands import common
from scotsearch.config import MatchConfig
from scotsearch.config import Profile
from scotsearch.data.pairs import Dataset
from scotsearch.errors import ConfigError
from scotsearch.layers import format_layers
from scotsearch.tss_eval import TSS_ALPHA
from scotsearch.tss_eval import evaluate_flow
from scotsearch.tss_eval import format_flow_table


log = logging.getLogger(__name__)


def check_tss_args(args: argparse.Namespace) -> None:
    """Refuse flags that do not apply, before the split is read."""
    if args.dataset != "tss":
        if args.flo_dir is not None:
            raise ConfigError("--flo-dir writes dense flow, which only --dataset tss predicts")
        return
    if args.thres not in ("auto", "img"):
        raise ConfigError(f"TSS is scored at alpha x the longer side of image A; --thres "
                          f"{args.thres} does not apply (leave --thres auto)")
    if args.flo_dir is not None and args.flo_dir.is_file():
        raise ConfigError(f"--flo-dir {args.flo_dir} is a file, not a folder")


def run_tss(args: argparse.Namespace, dataset: Dataset, match: MatchConfig,
            layers: tuple[int, ...], profile: Profile) -> int:
    if args.engine == "fused" or args.precision not in ("auto", "float32"):
        log.warning("TSS is scored by the eager float32 chain; --engine/--precision ignored")
    # The benchmark's alpha is always reported, with any other alpha asked for.
    alphas = tuple(sorted({TSS_ALPHA, *common.alphas_from_args(args)}))
    device = common.resolve_device(args.device)
    source = common.feature_source(args, device)
    common.check_cache_space(dataset, source)
    with tempfile.TemporaryDirectory(prefix="scotsearch-mirrored-") as tmp:
        # Mirrored copies of flipped sources: kept next to the cache (their features are
        # cached by content like any image's), or for this run only with --no-cache.
        mirror_dir = Path(tmp) if args.no_cache else Path(args.cache_dir) / "tss-mirrored"
        t0 = time.perf_counter()
        with tqdm(total=len(dataset.pairs), desc="evaluate", unit="pair", leave=False,
                  disable=None) as bar:
            scores = evaluate_flow(dataset, source, layers, match=match, profile=profile,
                                   alphas=alphas, device=device, mirror_dir=mirror_dir,
                                   flo_dir=args.flo_dir, progress=bar.update)
        elapsed = time.perf_counter() - t0
    print(f"{dataset.name}/{dataset.split}  {args.backbone}  layers {format_layers(layers)}  "
          f"{match.variant}  exp2 {match.exp2:g}  ({elapsed:.1f} s)")
    print("dense flow PCK over foreground pixels, threshold alpha x longer side of image A")
    print(format_flow_table(scores))
    if args.flo_dir is not None:
        print(f"wrote {len(dataset.pairs)} .flo files under {args.flo_dir}")
    if args.output is not None:
        payload = {
            "kind": "scotsearch-flow-evaluation",
            "scotsearch_version": __version__,
            "produced_by": {**source.describe(), "device": str(device)},
            "dataset": {"name": dataset.name, "split": dataset.split, "root": str(dataset.root),
                        "subset": dataset.subset},
            "layers": list(layers),
            "match": match.to_dict(),
            "compat": profile.name,
            "image_side": profile.image_side,
            "alphas": list(alphas),
            "summary": {str(a): t for a, t in scores.table().items()},
            "seconds": elapsed,
            "pairs": [
                {"pair_id": pid, "group": g, "scored_pixels": int(scores.n_scored[k]),
                 "pck": {str(a): float(scores.pck[i, k]) for i, a in enumerate(alphas)}}
                for k, (pid, g) in enumerate(zip(scores.pair_ids, scores.groups))
            ],
        }
        atomic_write(args.output, json.dumps(payload, indent=1), fsync=False)
        print(f"wrote {args.output}")
    return 0
