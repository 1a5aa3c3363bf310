"""Summaries of per-pair PCK: overall, per category, per SPair-71k variation factor."""

from __future__ import annotations

from typing import Any

import numpy as np

from scotsearch.data.pairs import VARIATION_FACTORS
from scotsearch.data.pairs import Dataset
from scotsearch.evaluate import Scores
from scotsearch.metrics import batch_mean_pck
from scotsearch.metrics import batch_pooled_pck


def summarize(scores: Scores, dataset: Dataset, subset: int = 0) -> dict[str, Any]:
    """PCK x 100 for one scored subset, per alpha.

    Returns a dict with ``alphas``, ``pck`` (mean over pairs), ``pck_pooled`` (over
    keypoints), ``per_category`` {category: [per alpha]}, ``per_factor``
    {factor: {level: [per alpha]}} (pairs that carry variation flags only) and
    ``n_pairs``.
    """
    pck = scores.pck[subset]  # [A x P]
    correct = scores.n_correct[subset]
    pairs = [dataset.pairs[i] for i in scores.pair_index]
    cats = np.array([p.category for p in pairs])
    out: dict[str, Any] = {
        "alphas": list(scores.alphas),
        "n_pairs": len(pairs),
        "pck": batch_mean_pck(pck).tolist(),
        "pck_pooled": batch_pooled_pck(correct, scores.n_kps).tolist(),
        "per_category": {
            c: batch_mean_pck(pck[:, cats == c]).tolist() for c in sorted(set(cats.tolist()))
        },
    }
    factors: dict[str, dict[str, list[float]]] = {}
    for factor, levels in VARIATION_FACTORS.items():
        vals = np.array([p.variation.get(factor, -1) for p in pairs])
        if (vals < 0).all():
            continue
        factors[factor] = {
            levels[v] if 0 <= v < len(levels) else str(v):
                batch_mean_pck(pck[:, vals == v]).tolist()
            for v in sorted(set(vals.tolist()))
            if v >= 0
        }
    if factors:
        out["per_factor"] = factors
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table for the terminal."""
    alphas = summary["alphas"]
    head = "".join(f"{'PCK@' + format(a, 'g'):>11}" for a in alphas)
    lines = [f"{'':<24}{head}", "-" * (24 + 11 * len(alphas))]

    def row(name: str, vals: list[float]) -> str:
        return f"{name:<24}" + "".join(f"{v:>11.2f}" for v in vals)

    lines.append(row(f"all ({summary['n_pairs']} pairs)", summary["pck"]))
    lines.append(row("all, pooled keypoints", summary["pck_pooled"]))
    lines.append("")
    for cat, vals in summary["per_category"].items():
        lines.append(row(cat, vals))
    for factor, levels in summary.get("per_factor", {}).items():
        lines.append("")
        for level, vals in levels.items():
            lines.append(row(f"{factor.replace('_variation', '')}: {level}", vals))
    return "\n".join(lines)


def summarize_masks(scores: Scores, dataset: Dataset, subset: int = 0) -> dict[str, Any]:
    """LT-ACC and IoU (fractions in [0, 1]) of one scored subset on a mask dataset.

    Returns a dict with ``metric`` (``mask``), ``n_pairs``, ``lt_acc`` and ``iou`` (means
    over pairs, HPF's two reported numbers) and ``per_category`` {category: {``lt_acc``,
    ``iou``}} (our addition: HPF prints only the means).
    """
    if scores.lt_acc is None or scores.iou is None:
        raise ValueError("these scores carry no mask metrics (not a mask dataset)")
    lt, iou = scores.lt_acc[subset], scores.iou[subset]  # [P]
    cats = np.array([dataset.pairs[i].category for i in scores.pair_index])
    return {
        "metric": "mask",
        "n_pairs": len(cats),
        "lt_acc": float(np.mean(lt)),
        "iou": float(np.mean(iou)),
        "per_category": {
            c: {"lt_acc": float(np.mean(lt[cats == c])), "iou": float(np.mean(iou[cats == c]))}
            for c in sorted(set(cats.tolist()))
        },
    }


def format_mask_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of :func:`summarize_masks` for the terminal."""
    lines = [f"{'':<24}{'LT-ACC':>9}{'IoU':>9}", "-" * 42]

    def row(name: str, vals: dict[str, float]) -> str:
        return f"{name:<24}{vals['lt_acc']:>9.3f}{vals['iou']:>9.3f}"

    lines.append(row(f"all ({summary['n_pairs']} pairs)", summary))
    lines.append("")
    for cat, vals in summary["per_category"].items():
        lines.append(row(cat, vals))
    return "\n".join(lines)
