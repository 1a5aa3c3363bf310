"""Dense flow PCK, TSS's measure (the SCOT paper's Table 5).

Definition used here (sources in brackets):

* A foreground pixel ``p`` of the image the flow lives on (image B, the target) is correct
  when ``||F_pred(p) - F_gt(p)||_2 <= alpha * max(H_A, W_A)`` [the TSS kit's "flow
  accuracy", which is the PCK of the SCOT/WeakAlign papers: ignacio-rocco/weakalign#14;
  the Euclidean distance, ``<=`` and ``alpha * max side`` as in GLU-Net/DenseMatching's
  ``correct_correspondences``, whose TSS loader takes ``max`` of the *source* image's size
  (image A, where the flow points) as the length; alpha = 0.05 in the SCOT paper].
* Only foreground pixels count [DenseMatching's TSS loader returns the target's mask as
  the pixels to score; a user reading the CNNGeometric/WeakAlign paper says the same in
  ignacio-rocco/cnngeometric_pytorch#23, "calculated from the points in mask"]. The TSS
  kit's own code was not available to us: this is its definition as those sources give it.
* Our decisions: pixels whose ground truth is unknown (Middlebury's > 1e9 convention, or
  not finite) are not scored; a predicted NaN (no receptive field covers the pixel, §6)
  counts as wrong, as a NaN keypoint does in §7; a pair's PCK is the fraction of its scored
  pixels; a group's PCK is the mean over its pairs (the per-pair convention of §7); the
  headline is the mean of the three group PCKs, which is how Table 5's "Avg." column
  relates to its group columns (e.g. SCOT res101: (95.3 + 81.3 + 57.7) / 3 = 78.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scotsearch.data.flo import UNKNOWN_FLOW


def scored_pixels(gt: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Bool ``[H x W]``: foreground pixels with a known ground-truth flow."""
    known = np.isfinite(gt).all(axis=-1) & (np.abs(gt) <= UNKNOWN_FLOW).all(axis=-1)
    return np.asarray(mask, dtype=bool) & known


def flow_correct(
    pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, thr: float, alpha: float
) -> tuple[int, int]:
    """``(correct, scored)`` pixel counts of one pair.

    Args:
        pred, gt: ``[H x W x 2]`` predicted and ground-truth flow, in image-A pixels.
        mask: ``[H x W]`` foreground of the image the flow lives on.
        thr: the length alpha scales (``max(H_A, W_A)``).
        alpha: PCK alpha.

    Examples:
        >>> gt = np.zeros((1, 3, 2)); pred = np.array([[[0, 0], [3, 4], [9, 9]]], float)
        >>> flow_correct(pred, gt, np.array([[True, True, False]]), thr=100, alpha=0.05)
        (2, 2)
    """
    valid = scored_pixels(gt, mask)
    dist = np.linalg.norm(pred.astype(np.float64) - gt.astype(np.float64), axis=-1)
    with np.errstate(invalid="ignore"):
        correct = (dist <= alpha * thr) & valid  # NaN <= x is False
    return int(correct.sum()), int(valid.sum())


def group_means(
    per_pair: Sequence[float], groups: Sequence[str], order: Sequence[str] = ()
) -> dict[str, float]:
    """Mean PCK x 100 per group, then ``mean``: the mean of the group means.

    Pairs whose PCK is NaN (nothing scored) are left out of their group's mean. Groups in
    ``order`` come first, in that order, the others after them sorted.

    Examples:
        >>> group_means([0.5, 1.0, 0.25], ["JODS", "JODS", "PASCAL"], ("FG3DCar", "JODS"))
        {'JODS': 75.0, 'PASCAL': 25.0, 'mean': 50.0}
    """
    values = np.asarray(per_pair, dtype=np.float64)
    names = [g for g in order if g in groups] + sorted(set(groups) - set(order))
    out: dict[str, float] = {}
    for g in names:
        v = values[[k for k, name in enumerate(groups) if name == g]]
        v = v[~np.isnan(v)]
        out[g] = float(v.mean() * 100.0) if len(v) else float("nan")
    finite = [v for v in out.values() if not np.isnan(v)]
    out["mean"] = float(np.mean(finite)) if finite else float("nan")
    return out
