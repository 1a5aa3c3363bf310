"""Per-pair details and split statistics of an evaluation (``evaluate --output``).

The evaluator gives predicted keypoints in resized target pixels; this module turns them
into what a reader of a result needs: the predictions in original pixels too, every
keypoint's distance to the ground truth and its correctness at each alpha, the paper's
Table 3 counts, and the split's PCK under both protocols (mean over pairs, i.e. per image,
and pooled over keypoints, i.e. per point), per category with both category means, per
variation factor, and over a range of alphas.

Correctness is decided exactly as the evaluator decides it (float32, resized pixels,
``distance <= alpha * threshold``), so the counts here equal the evaluator's counts.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scotsearch.data.pairs import VARIATION_FACTORS
from scotsearch.data.pairs import Pair
from scotsearch.data.pairs import threshold_base
from scotsearch.features import FeatureSource
from scotsearch.features import ImageFeatures
from scotsearch.metrics import correct_keypoints


#: The alphas of the PCK curve every result records (0.01 .. 0.25).
ALPHA_CURVE = tuple(round(0.01 * k, 2) for k in range(1, 26))

#: Predicted keypoints closer than this (resized target pixels) count as one target match
#: in the Table 3 statistics.
UNIQUE_TOL = 1e-3


@dataclass(frozen=True)
class ImageGeometry:
    """What the evaluator used of one image: its resize ratio and original size ``(W, H)``."""

    ratio: float
    orig_wh: tuple[int, int]


class RecordingSource:
    """A :class:`~scotsearch.features.FeatureSource` that notes every image's geometry.

    Wrap the evaluator's source in it to learn the resize ratios the evaluator used, which
    turn its resized-pixel predictions into original pixels.
    """

    def __init__(self, inner: FeatureSource) -> None:
        self.inner = inner
        self.backbone = inner.backbone
        self.geometry: dict[str, ImageGeometry] = {}
        self._lock = threading.Lock()

    def get(self, path: Path, layer_ids: tuple[int, ...], *, need_cam: bool) -> ImageFeatures:
        feats = self.inner.get(path, layer_ids, need_cam=need_cam)
        geo = ImageGeometry(float(feats.ratio), (int(feats.orig_size[1]), int(feats.orig_size[0])))
        with self._lock:
            self.geometry[str(path)] = geo
        return feats

    def describe(self) -> dict[str, str]:
        return self.inner.describe()


def pair_details(
    pair: Pair,
    pred_resized: np.ndarray,
    src: ImageGeometry,
    trg: ImageGeometry,
    *,
    thres: str,
    alphas: Sequence[float],
) -> dict[str, Any]:
    """Everything ``evaluate --output`` records for one pair.

    Args:
        pair: the annotated pair.
        pred_resized: ``[K x 2]`` predicted target keypoints in resized target pixels.
        src, trg: the images' geometry as the evaluator used it.
        thres: threshold basis (``bbox``, ``img``, ``kps``).
        alphas: PCK alphas.

    Returns:
        A JSON-ready dict (see the README, "What every output records"); a NaN prediction
        (a keypoint no receptive field covers) is ``null`` and counts as wrong.
    """
    thr_orig = threshold_base(pair, thres, trg.orig_wh)
    thr = float(thr_orig * trg.ratio)  # what the evaluator compares against
    pred = torch.as_tensor(np.asarray(pred_resized), dtype=torch.float32)
    gt = torch.as_tensor(pair.trg_kps * trg.ratio, dtype=torch.float32)
    correct = [correct_keypoints(pred, gt, thr, a).tolist() for a in alphas]
    pred_orig = np.asarray(pred_resized, dtype=np.float64) / trg.ratio
    dist_orig = np.linalg.norm(pred_orig - pair.trg_kps, axis=1)
    finite = np.isfinite(pred_resized).all(axis=1)
    return {
        "pair_id": pair.pair_id,
        "category": pair.category,
        "src_image": str(pair.src_path),
        "trg_image": str(pair.trg_path),
        "n_kps": pair.n_kps,
        "pck": [float(np.mean(c)) for c in correct],
        "src_kps": _points(pair.src_kps, None),  # the annotation, as read
        "trg_kps": _points(pair.trg_kps, None),
        "pred_kps": _points(pred_orig),
        "pred_kps_resized": _points(np.asarray(pred_resized, dtype=np.float64)),
        "ratio": {"src": src.ratio, "trg": trg.ratio},
        "threshold": thr_orig,
        "distance": [_num(d) for d in dist_orig],
        "distance_rel": [_num(d / thr_orig, 6) for d in dist_orig],
        "correct": correct,
        "n_src_points": pair.n_kps,
        "n_unique_matches": unique_matches(np.asarray(pred_resized)[finite]),
        "variation": dict(pair.variation),
    }


def mask_pair_details(
    pair: Pair,
    pred_resized: np.ndarray,
    src: ImageGeometry,
    trg: ImageGeometry,
    *,
    lt_acc: float,
    iou: float,
) -> dict[str, Any]:
    """What ``evaluate --output`` records for one pair of a mask dataset (Caltech-101).

    Args:
        pair: the pair; ``src_kps`` / ``trg_kps`` are the source / target outlines.
        pred_resized: ``[V x 2]`` transferred source outline in resized target pixels.
        src, trg: the images' geometry as the evaluator used it.
        lt_acc, iou: the pair's scores (:mod:`scotsearch.masks`).

    Returns:
        A JSON-ready dict; an outline vertex that could not be transferred is ``null``.
    """
    pred = np.asarray(pred_resized, dtype=np.float64)
    return {
        "pair_id": pair.pair_id,
        "category": pair.category,
        "src_image": str(pair.src_path),
        "trg_image": str(pair.trg_path),
        "lt_acc": float(lt_acc),
        "iou": float(iou),
        "src_polygon": _points(pair.src_kps, None),  # the annotation, as read
        "trg_polygon": _points(pair.trg_kps, None),
        "pred_polygon": _points(pred / trg.ratio),
        "pred_polygon_resized": _points(pred),
        "ratio": {"src": src.ratio, "trg": trg.ratio},
    }


def unique_matches(points: np.ndarray, tol: float = UNIQUE_TOL) -> int:
    """Distinct points among ``[K x 2]`` (closer than ``tol`` in both coordinates = same).

    Examples:
        >>> unique_matches(np.array([[1.0, 2.0], [1.0, 2.0], [3.0, 2.0]]))
        2
    """
    if len(points) == 0:
        return 0
    return int(len(np.unique(np.round(np.asarray(points) / tol).astype(np.int64), axis=0)))


def split_statistics(
    pairs: Sequence[dict[str, Any]], alphas: Sequence[float], thres: str
) -> dict[str, Any]:
    """The split's statistics from per-pair details (:func:`pair_details` dicts).

    Returns a dict with ``protocol``, ``pck_per_image`` and ``pck_per_point`` (per alpha),
    ``per_category`` {category: {n_pairs, n_kps, pck_per_image, pck_per_point}},
    ``category_mean`` {unweighted, weighted_by_pairs}, ``per_factor``
    {factor: {level: {n_pairs, pck_per_image, pck_per_point}}}, ``alpha_curve`` and
    ``table3``. PCK is x 100.
    """
    if not pairs:
        raise ValueError("no pairs to summarise")
    n_alpha = len(alphas)
    correct = [np.asarray(p["correct"], dtype=bool).reshape(n_alpha, -1) for p in pairs]
    rel = [np.array([np.inf if d is None else d for d in p["distance_rel"]]) for p in pairs]
    cats = sorted({p["category"] for p in pairs})

    def stats(sel: list[int]) -> dict[str, Any]:
        return {
            "n_pairs": len(sel),
            "n_kps": int(sum(correct[i].shape[1] for i in sel)),
            "pck_per_image": per_image([correct[i] for i in sel]),
            "pck_per_point": per_point([correct[i] for i in sel]),
        }

    per_cat = {c: stats([i for i, p in enumerate(pairs) if p["category"] == c]) for c in cats}
    cat_pck = np.array([per_cat[c]["pck_per_image"] for c in cats])  # [C x A]
    weights = np.array([per_cat[c]["n_pairs"] for c in cats], dtype=np.float64)
    factors: dict[str, dict[str, Any]] = {}
    for factor, levels in VARIATION_FACTORS.items():
        vals = [p.get("variation", {}).get(factor, -1) for p in pairs]
        present = sorted({v for v in vals if v >= 0})
        if present:
            factors[factor] = {
                levels[v] if v < len(levels) else str(v): stats(
                    [i for i, x in enumerate(vals) if x == v]
                )
                for v in present
            }
    curve_rel = [np.stack([r <= a for a in ALPHA_CURVE]) for r in rel]
    return {
        "protocol": protocol(alphas, thres),
        "n_pairs": len(pairs),
        "n_kps": int(sum(c.shape[1] for c in correct)),
        "pck_per_image": per_image(correct),
        "pck_per_point": per_point(correct),
        "per_category": per_cat,
        "category_mean": {
            "unweighted": cat_pck.mean(axis=0).tolist(),
            "weighted_by_pairs": (weights @ cat_pck / weights.sum()).tolist(),
        },
        "per_factor": factors,
        "alpha_curve": {
            "alphas": list(ALPHA_CURVE),
            "pck_per_image": per_image(curve_rel),
            "pck_per_point": per_point(curve_rel),
        },
        "table3": {
            "src_points": float(np.mean([p["n_src_points"] for p in pairs])),
            "unique_matches": float(np.mean([p["n_unique_matches"] for p in pairs])),
        },
    }


def per_image(correct: Sequence[np.ndarray]) -> list[float]:
    """PCK x 100 per alpha, mean over pairs of each pair's fraction (HPF/SCOT's protocol).

    Args:
        correct: per pair, a bool ``[A x K]`` array.

    Examples:
        >>> per_image([np.array([[True, False]]), np.array([[True, True, True]])])
        [75.0]
    """
    return (np.mean([c.mean(axis=1) for c in correct], axis=0) * 100.0).tolist()


def per_point(correct: Sequence[np.ndarray]) -> list[float]:
    """PCK x 100 per alpha pooled over every keypoint of every pair (per-point protocol).

    Examples:
        >>> per_point([np.array([[True, False]]), np.array([[True, True, True]])])
        [80.0]
    """
    hits = np.sum([c.sum(axis=1) for c in correct], axis=0)
    return (hits / sum(c.shape[1] for c in correct) * 100.0).tolist()


def protocol(alphas: Sequence[float], thres: str) -> dict[str, Any]:
    """How the PCK of a result was computed, recorded next to every figure."""
    return {
        "headline": "pck_per_image",
        "pck_per_image": "mean over pairs of the fraction of a pair's keypoints that are correct",
        "pck_per_point": "correct keypoints over all keypoints of the split (pooled)",
        "correct_if": "distance(prediction, truth) <= alpha * threshold, in target pixels",
        "threshold_basis": thres,
        "alphas": [float(a) for a in alphas],
        "unique_match_tolerance_px": UNIQUE_TOL,
    }


#: Decimals kept of predicted coordinates and distances (0.1 milli-pixel): a result of
#: SPair-71k's 12,234 test pairs stays a few tens of MB instead of twice that in float64
#: digits. The annotated keypoints are kept as read.
DECIMALS = 4


def _points(a: np.ndarray, decimals: int | None = DECIMALS) -> list[list[float | None]]:
    return [[_num(x, decimals), _num(y, decimals)] for x, y in np.asarray(a, dtype=np.float64)]


def _num(v: float, decimals: int | None = DECIMALS) -> float | None:
    v = float(v)
    if not np.isfinite(v):
        return None
    return v if decimals is None else round(v, decimals)
