"""Mask metrics of HPF's Caltech-101 benchmark: polygon rasterisation, LT-ACC and IoU.

Caltech-101 has no keypoints; HPF scores a pair by its object masks
(reference-behaviour.md §9.5). Facts taken from HPF (juhongm999/hpf, ``model/evaluation.py``
``Evaluator.eval_caltech`` and its helpers, and ``evaluate.py`` at commit 5a72968):

* the *vertices* of the source polygon are transferred like keypoints (the ordinary
  keypoint transfer, §6); nothing else of the source mask is transferred;
* the transferred vertices, in the given order, are the predicted polygon; it and the
  target polygon are rasterised at the size of the *resized* target image (the network
  input, §1.3), in resized target pixels;
* rasterisation is scikit-image's ``draw.polygon`` (``pts2mask``). In the scikit-image of
  HPF's time (up to 0.17; checked in scikit-image's history, ``skimage/_shared/geometry.pyx``
  before commit 61f037c, released in 0.18, Oct. 2020) pixel (row r, column c) belongs to the
  mask when the point ``(x=c, y=r)`` is inside the polygon by the even-odd (crossing) rule
  with edges taken half-open in y; pixels outside the image are dropped. From 0.18 on,
  points exactly on an edge or vertex count as inside too, which changes the masks;
* LT-ACC (label-transfer accuracy) = the fraction of all pixels of the image whose
  foreground/background label agrees between the two masks (background counts as much as
  foreground);
* IoU = ``|pred & gt| / |pred | gt|``. HPF computes a "weighted" IoU over mask channels,
  each weighted by its share of the ground-truth foreground; a Caltech mask has a single
  channel, whose weight is 1, so it is this plain IoU;
* both are averaged over pairs; HPF prints only the two averages.

Our own decisions (HPF's code leaves these cases undefined: they give NaN or an error):

* a transferred vertex that no receptive field covers (NaN, §6 step 4) is left out of the
  predicted polygon; with fewer than 3 vertices left the predicted mask is empty;
* IoU of two empty masks is 1 (they agree everywhere), so no pair's IoU is NaN.

The rasteriser is therefore written here (vectorised over pixels) with the rule HPF ran,
rather than imported from whatever scikit-image is installed; the tests compare it with a
plain point-in-polygon loop.
"""

from __future__ import annotations

import math

import numpy as np


def polygon_mask(polygon: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Rasterise a polygon: the pixels whose integer coordinates lie inside it.

    Args:
        polygon: ``[V x 2]`` vertices ``(x, y)`` in pixels, in drawing order; the last
            vertex joins the first. Rows with a NaN coordinate are skipped.
        size_hw: ``(H, W)`` of the mask.

    Returns:
        ``[H x W]`` bool mask; empty for fewer than 3 usable vertices.

    Examples:
        >>> polygon_mask(np.array([[1, 1], [3, 1], [3, 3], [1, 3]]), (4, 5)).astype(int)
        array([[0, 0, 0, 0, 0],
               [0, 1, 1, 0, 0],
               [0, 1, 1, 0, 0],
               [0, 0, 0, 0, 0]])
    """
    h, w = size_hw
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    poly = poly[np.isfinite(poly).all(axis=1)]
    mask = np.zeros((h, w), dtype=bool)
    if len(poly) < 3 or h <= 0 or w <= 0:
        return mask
    xs = np.arange(w, dtype=np.float64)[None, :]  # [1 x W]
    # Even-odd rule: toggle every pixel whose rightward ray crosses edge (a -> b). An edge
    # counts for the rows y in [min, max) of its end points, so a ray through a shared
    # vertex crosses exactly one of its two edges, and horizontal edges never count. Only
    # those rows are touched: an outline of many short edges costs little.
    for (xa, ya), (xb, yb) in zip(poly, np.roll(poly, -1, axis=0)):
        if ya == yb:
            continue
        r0 = min(max(math.ceil(min(ya, yb)), 0), h)
        r1 = min(max(math.ceil(max(ya, yb)), 0), h)
        if r0 >= r1:
            continue
        ys = np.arange(r0, r1, dtype=np.float64)[:, None]  # the edge's rows
        x_cross = (xb - xa) * (ys - ya) / (yb - ya) + xa  # [rows x 1]
        mask[r0:r1] ^= xs < x_cross
    return mask


def label_transfer_accuracy(pred: np.ndarray, gt: np.ndarray) -> float:
    """Fraction of pixels whose foreground/background label agrees (HPF's LT-ACC).

    Examples:
        >>> pred, gt = np.array([[1, 0], [0, 0]], bool), np.array([[1, 1], [0, 0]], bool)
        >>> label_transfer_accuracy(pred, gt)
        0.75
    """
    if pred.shape != gt.shape or pred.size == 0:
        raise ValueError(f"masks of shapes {pred.shape} and {gt.shape} cannot be compared")
    return float(np.mean(pred == gt))


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two bool masks; 1 when both are empty (our decision).

    Examples:
        >>> pred, gt = np.array([[1, 0], [0, 0]], bool), np.array([[1, 1], [0, 0]], bool)
        >>> mask_iou(pred, gt)
        0.5
    """
    if pred.shape != gt.shape:
        raise ValueError(f"masks of shapes {pred.shape} and {gt.shape} cannot be compared")
    union = int(np.count_nonzero(pred | gt))
    return float(np.count_nonzero(pred & gt)) / union if union else 1.0


def transferred_mask_scores(
    pred_vertices: np.ndarray, trg_polygon: np.ndarray, size_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """LT-ACC and IoU of predicted polygons against one target polygon.

    Args:
        pred_vertices: ``[S x V x 2]`` transferred source vertices of S candidates, in
            resized target pixels (NaN where a vertex could not be transferred).
        trg_polygon: ``[V' x 2]`` target polygon in resized target pixels.
        size_hw: ``(H, W)`` of the resized target image.

    Returns:
        ``(lt_acc [S], iou [S])``.
    """
    gt = polygon_mask(trg_polygon, size_hw)
    lt_acc = np.empty(len(pred_vertices))
    iou = np.empty(len(pred_vertices))
    for s, vertices in enumerate(pred_vertices):
        pred = polygon_mask(vertices, size_hw)
        lt_acc[s] = label_transfer_accuracy(pred, gt)
        iou[s] = mask_iou(pred, gt)
    return lt_acc, iou
