"""Scoring a layer set on TSS: dense flow per pair, flow PCK, optional ``.flo`` output.

SCOT itself only writes ``.flo`` files (``TSS/result_CAM/<relative path of the GT>``) and
leaves scoring to the TSS MATLAB kit (§9.4). Here the flow is scored in place by
:mod:`scotsearch.flowpck`, and the same files can still be written for the kit.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scotsearch.config import MatchConfig
from scotsearch.config import Profile
from scotsearch.data.flo import read_flo
from scotsearch.data.flo import write_flo
from scotsearch.data.images import mirrored_copy
from scotsearch.data.pairs import Dataset
from scotsearch.data.pairs import Pair
from scotsearch.data.tss import GROUPS
from scotsearch.data.tss import flow_relpath
from scotsearch.data.tss import read_mask
from scotsearch.dense import predict_flow
from scotsearch.errors import ConfigError
from scotsearch.errors import DataError
from scotsearch.features import FeatureSource
from scotsearch.flowpck import flow_correct
from scotsearch.flowpck import group_means
from scotsearch.layers import layer_specs
from scotsearch.layerspec import LayerSpec


#: The alpha TSS is reported at (SCOT paper, Table 5).
TSS_ALPHA = 0.05


@dataclass
class FlowScores:
    """Per-pair flow PCK counts of one layer set.

    Attributes:
        pair_ids, groups: per scored pair.
        alphas: PCK alphas.
        n_correct: ``[A x P]`` correct foreground pixels per alpha and pair.
        n_scored: ``[P]`` scored foreground pixels per pair.
    """

    pair_ids: list[str]
    groups: list[str]
    alphas: tuple[float, ...]
    n_correct: np.ndarray
    n_scored: np.ndarray

    @property
    def pck(self) -> np.ndarray:
        """``[A x P]`` per-pair PCK in [0, 1]; NaN for a pair with nothing to score."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.n_correct / self.n_scored

    def table(self) -> dict[float, dict[str, float]]:
        """alpha -> {group: PCK x 100, ..., "mean": mean of the group PCKs}."""
        return {a: group_means(self.pck[k], self.groups, GROUPS)
                for k, a in enumerate(self.alphas)}


def evaluate_flow(
    dataset: Dataset,
    source: FeatureSource,
    layers: Sequence[int],
    *,
    match: MatchConfig,
    profile: Profile,
    alphas: Sequence[float] = (TSS_ALPHA,),
    device: torch.device | str = "cpu",
    mirror_dir: Path,
    flo_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> FlowScores:
    """Predict and score the dense flow of every pair of a TSS split.

    Args:
        dataset: a TSS split (pairs with flow files).
        source: per-image features.
        layers: the hyperpixel layer set.
        match, profile: matching settings and compat profile.
        alphas: PCK alphas (threshold ``alpha * max(H_A, W_A)``).
        device: where the maths runs.
        mirror_dir: where mirrored copies of flipped source images are written.
        flo_dir: if given, each predicted flow is written to
            ``flo_dir/<the ground truth's path relative to the TSS folder>``.
        progress: called with 1 after each pair.

    Raises:
        ConfigError: an empty layer set or a non-positive alpha.
        DataError: a flow file, mask or image is missing, malformed, or of another size.
    """
    ids = tuple(sorted({int(l) for l in layers}))
    if not ids:
        raise ConfigError("no layer to score")
    if not alphas or any(not a > 0 for a in alphas):
        raise ConfigError(f"PCK alphas must be positive, got {list(alphas)}")
    specs = layer_specs(source.backbone)
    n_correct = np.zeros((len(alphas), len(dataset.pairs)), dtype=np.int64)
    n_scored = np.zeros(len(dataset.pairs), dtype=np.int64)
    with torch.no_grad():
        for k, pair in enumerate(dataset.pairs):
            flow, gt, mask, thr = _pair_flow(pair, source, ids, specs, match, profile,
                                             device, mirror_dir)
            for a, alpha in enumerate(alphas):
                n_correct[a, k], n_scored[k] = flow_correct(flow, gt, mask, thr, alpha)
            if flo_dir is not None:
                write_flo(Path(flo_dir) / flow_relpath(pair, dataset.root), flow)
            if progress is not None:
                progress(1)
    return FlowScores(
        pair_ids=[p.pair_id for p in dataset.pairs],
        groups=[p.category for p in dataset.pairs],
        alphas=tuple(float(a) for a in alphas),
        n_correct=n_correct,
        n_scored=n_scored,
    )


def _pair_flow(
    pair: Pair, source: FeatureSource, ids: tuple[int, ...], specs: Sequence[LayerSpec],
    match: MatchConfig, profile: Profile, device: torch.device | str, mirror_dir: Path,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``(predicted flow, GT flow, foreground mask, threshold length)`` of one pair."""
    if pair.flow_path is None or pair.trg_mask_path is None:
        raise DataError(f"pair {pair.pair_id} has no ground-truth flow (not a TSS pair)")
    need_cam = match.similarity == "ot" and match.cam != "none"
    src_path = mirrored_copy(pair.src_path, mirror_dir) if pair.flip_src else pair.src_path
    src = source.get(src_path, ids, need_cam=need_cam)
    trg = source.get(pair.trg_path, ids, need_cam=need_cam)
    gt = read_flo(pair.flow_path)
    mask = read_mask(pair.trg_mask_path)
    height, width = trg.orig_size
    for what, path, shape in (("flow", pair.flow_path, gt.shape[:2]),
                              ("mask", pair.trg_mask_path, mask.shape)):
        if tuple(shape) != (height, width):
            raise DataError(
                f"{what} file {path} is {shape[1]}x{shape[0]}, but its image "
                f"{pair.trg_path} is {width}x{height}"
            )
    flow = predict_flow(src, trg, ids, specs, match, profile, device=device)
    # The length alpha scales: the longer side of image A, where the flow points (flowpck).
    return flow, gt, mask, float(max(src.orig_size))


def format_flow_table(scores: FlowScores) -> str:
    """Per-group and mean flow PCK x 100, one column per alpha (the SCOT paper's Table 5)."""
    table = scores.table()
    counts = {g: scores.groups.count(g) for g in set(scores.groups)}
    head = "flow PCK       pairs" + "".join(f"  {'a=' + format(a, 'g'):>8s}" for a in table)
    lines = [head]
    for g in next(iter(table.values())):
        label = "mean of groups" if g == "mean" else g
        n = "" if g == "mean" else str(counts[g])
        lines.append(f"{label:14s} {n:>5s}" + "".join(f"  {t[g]:8.1f}" for t in table.values()))
    return "\n".join(lines)
