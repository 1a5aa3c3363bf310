"""``scotsearch evaluate``: PCK of one layer subset and matching setting on a split."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from tqdm import tqdm

from scotsearch._io import atomic_write
from scotsearch._io import check_destination
from scotsearch._version import __version__
from scotsearch.commands import common
from scotsearch.config import RunConfig
from scotsearch.errors import ConfigError
from scotsearch.layers import format_layers
from scotsearch.layers import layer_names
from scotsearch.layers import parse_layers
from scotsearch.presets import published_layers


# torch and pandas (~1.5 s) are imported where the evaluation begins: `--help` needs neither.
if TYPE_CHECKING:
    import numpy as np


HELP = ("PCK of a layer subset and matching setting on a dataset split (Caltech-101: "
        "label-transfer accuracy and IoU of the transferred object masks)")
log = logging.getLogger(__name__)

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layers", "--hyperpixel", dest="layers", default=None,
                   help="layer ids, e.g. 0,19,27 or '(2,22,24)' (default: SCOT's published set)")
    p.add_argument("--config", type=Path, default=None,
                   help="a CSV written by 'scotsearch export': evaluate its first row (or --row)")
    p.add_argument("--row", type=int, default=0, help="row of --config to use (0-based)")
    p.add_argument("--output", type=Path, default=None,
                   help="write the results (with per-pair PCK) as JSON to this file")
    p.add_argument("--flo-dir", type=Path, default=None, metavar="DIR",
                   help="TSS only: write each pair's predicted flow as a Middlebury .flo file "
                        "under DIR at the ground truth's relative path (give <TSS>/result_CAM "
                        "for SCOT's layout, which the TSS evaluation kit reads)")
    # split None: "test", or the --config row's split
    common.add_data_args(p, split=None)
    common.add_backbone_args(p)
    common.add_match_args(p, command="evaluate")


def _apply_config(args: argparse.Namespace) -> RunConfig:
    import pandas as pd

    path = args.config
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if not 0 <= args.row < len(table):
        raise ConfigError(
            f"config file {path} has {len(table)} row(s); --row {args.row} is out of range"
        )
    cfg = RunConfig.from_row(table.iloc[args.row].to_dict())
    args.dataset, args.backbone, args.compat = cfg.dataset, cfg.backbone, cfg.compat
    # The row's split and image side reproduce its stored PCK; --split / --image-side given
    # on the command line evaluate the same configuration elsewhere (e.g. on test).
    if args.split is None:
        args.split = cfg.split
        log.info("evaluating on the config's split '%s' (give --split to choose another)",
                 cfg.split)
    if args.image_side is None:
        args.image_side = cfg.image_side
    if args.weights is None:
        args.weights = cfg.weights
    args.layers = format_layers(cfg.layers)
    args.alpha = str(cfg.alpha) if args.alpha == "0.1" else args.alpha
    args.thres = cfg.thres if args.thres == "auto" else args.thres
    return cfg


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    # json.dumps gives the bytes json.dump wrote (ASCII, so the locale's encoding never
    # mattered); the result file was never fsync'ed.
    atomic_write(path, json.dumps(payload, indent=1), fsync=False)


def run(args: argparse.Namespace) -> int:
    from scotsearch.commands._evaluate_tss import check_tss_args
    from scotsearch.commands._evaluate_tss import run_tss
    from scotsearch.details import RecordingSource
    from scotsearch.details import mask_pair_details
    from scotsearch.details import pair_details
    from scotsearch.details import split_statistics
    from scotsearch.evaluate import Evaluator
    from scotsearch.report import format_mask_summary
    from scotsearch.report import format_summary
    from scotsearch.report import summarize
    from scotsearch.report import summarize_masks
    from scotsearch.study import environment

    if args.output is not None:
        # Now, not after the evaluation: a result that cannot be written is a result lost.
        check_destination(args.output)
    cfg = _apply_config(args) if args.config is not None else None
    if args.split is None:
        args.split = "test"
    if args.dataset in common.MASK_DATASETS and (args.thres != "auto" or args.alpha != "0.1"):
        raise ConfigError(f"--thres and --alpha set PCK; {args.dataset} is scored by masks "
                          "(LT-ACC and IoU), which have neither")
    alphas = common.alphas_from_args(args)
    device = common.resolve_device(args.device)
    profile = common.profile_from_args(args)
    check_tss_args(args)
    dataset = common.open_dataset(args)
    match = cfg.match if cfg is not None else common.match_from_args(args, dataset)
    if args.layers is None:
        args.layers = format_layers(published_layers(dataset.name, args.backbone))
    layers = parse_layers(args.layers, args.backbone)
    if dataset.name == "tss":
        return run_tss(args, dataset, match, layers, profile)
    inner = common.feature_source(args, device)
    common.check_cache_space(dataset, inner)
    # The wrapper notes each image's resize ratio: predictions in original pixels need it.
    source = RecordingSource(inner)
    desc = source.describe()
    if cfg is not None and cfg.weights_digest and cfg.weights_digest != desc.get("weights_digest"):
        log.warning("the config was scored with weights %s…; these are %s…",
                    cfg.weights_digest[:12], str(desc.get("weights_digest"))[:12])
    evaluator = Evaluator(dataset, source, match=match, profile=profile, alphas=alphas,
                          thres=args.thres, device=device,
                          precision=common.resolve_precision(args.precision, device),
                          engine=args.engine)
    t0 = time.perf_counter()
    with tqdm(total=len(dataset.pairs), desc="evaluate", unit="pair", leave=False,
              disable=None) as bar:
        preds: list[list[np.ndarray | None]] = []
        scores = evaluator.score([layers], progress=bar.update, predictions=preds)
    elapsed = time.perf_counter() - t0
    # Caltech-101 is scored by masks (LT-ACC, IoU), not PCK: no threshold, no alphas.
    masks = dataset.metric == "mask"
    summary = summarize_masks(scores, dataset) if masks else summarize(scores, dataset)
    thres_note = "" if masks else f"  thres {evaluator.thres}"
    print(f"{dataset.name}/{dataset.split}  {args.backbone}  layers {format_layers(layers)}  "
          f"{match.variant}{thres_note}  ({elapsed:.1f} s)")
    names = layer_names(args.backbone, layers)
    print(f"layer modules: {names.replace(';', ', ')}")
    print(format_mask_summary(summary) if masks else format_summary(summary))
    if args.output is not None:
        geo = source.geometry
        scored = [dataset.pairs[i] for i in scores.pair_index]
        if masks:
            assert scores.lt_acc is not None and scores.iou is not None
            details = [
                mask_pair_details(p, pred, geo[str(p.src_path)], geo[str(p.trg_path)],
                                  lt_acc=scores.lt_acc[0, k], iou=scores.iou[0, k])
                for k, (p, pred) in enumerate(zip(scored, preds[0])) if pred is not None
            ]
        else:
            details = [
                pair_details(p, pred, geo[str(p.src_path)], geo[str(p.trg_path)],
                             thres=evaluator.thres, alphas=evaluator.alphas)
                for p, pred in zip(scored, preds[0])
                if pred is not None
            ]
        payload: dict[str, Any] = {
            "kind": "scotsearch-evaluation",
            "scotsearch_version": __version__,
            "produced_by": {**desc, "device": str(device)},
            "dataset": {"name": dataset.name, "split": dataset.split, "root": str(dataset.root),
                        "subset": dataset.subset},
            "layers": list(layers),
            "layer_names": names.split(";") if names else [],
            "match": match.to_dict(),
            "compat": profile.name,
            "image_side": profile.image_side,
            "precision": evaluator.precision,
            "engine": evaluator.engine_used or evaluator.engine,
            "environment": environment(),
        }
        if masks:
            # Its own kind: 'scotsearch report', which draws keypoints, refuses it.
            payload["kind"] = "scotsearch-mask-evaluation"
            payload.update(summary=summary, seconds=elapsed, pairs=details)
        else:
            payload.update(
                thres=evaluator.thres, alphas=list(evaluator.alphas), summary=summary,
                statistics=split_statistics(details, evaluator.alphas, evaluator.thres),
                seconds=elapsed, pairs=details,
            )
        _write_json_atomic(args.output, payload)
        print(f"wrote {args.output}")
    return 0
