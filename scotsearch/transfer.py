"""Keypoint transfer from a confidence matrix (reference-behaviour.md §6)."""

from __future__ import annotations

import torch

from scotsearch.geometry import Grid


def transfer_keypoints(
    conf: torch.Tensor,
    src_kps: torch.Tensor,
    src_boxes: torch.Tensor,
    src_centres: torch.Tensor,
    trg_centres: torch.Tensor,
    *,
    src_valid: torch.Tensor | None = None,
    trg_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Predict target positions of source keypoints.

    Every source hyperpixel i takes its best target ``j*(i) = argmax_j C[i, j]``; a keypoint
    p is moved by the mean displacement ``c_t[j*(i)] - c_s[i]`` over the hyperpixels whose
    receptive-field box contains p (inclusive bounds). This equals the reference's mean of
    ``tl(j*) + (p - tl(i))`` because all boxes have one size. A keypoint no box contains
    gets NaN, which PCK counts as wrong: the references have no fallback.

    Args:
        conf: ``[... x n x m]`` confidence; leading dims are batch (pairs, candidates).
        src_kps: ``[... x K x 2]`` source keypoints in resized source pixels (broadcastable).
        src_boxes: ``[n x 4]`` source receptive-field boxes ``x0, y0, x1, y1``.
        src_centres: ``[n x 2]``; trg_centres: ``[m x 2]``.
        src_valid, trg_valid: ``[n]`` / ``[m]`` masks of kept (unpruned) hyperpixels.

    Returns:
        ``[... x K x 2]`` predicted target keypoints.
    """
    if trg_valid is not None and not bool(trg_valid.all()):
        conf = conf.masked_fill(~trg_valid, float("-inf"))
    best = conf.argmax(dim=-1)  # [... x n]
    return transfer_from_best(best, src_kps, src_boxes, src_centres, trg_centres,
                              src_valid=src_valid)


def transfer_from_best(
    best: torch.Tensor,
    src_kps: torch.Tensor,
    src_boxes: torch.Tensor,
    src_centres: torch.Tensor,
    trg_centres: torch.Tensor,
    *,
    src_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Keypoint transfer from each source hyperpixel's best target (see above).

    Args:
        best: ``[... x n]`` int64 best target of every source hyperpixel; only rows whose
            boxes contain a keypoint are read, so the fused chain fills just those.
        src_kps, src_boxes, src_centres, trg_centres, src_valid: as
            :func:`transfer_keypoints`.

    Returns:
        ``[... x K x 2]`` predicted target keypoints.
    """
    disp = trg_centres[best] - src_centres  # [... x n x 2]
    w = keypoint_rows(src_kps, src_boxes, src_valid).to(disp.dtype)  # [... x K x n]
    count = w.sum(-1, keepdim=True)
    mean_disp = (w @ disp) / count  # 0/0 -> NaN for keypoints outside every box
    return src_kps + mean_disp


def keypoint_rows(
    src_kps: torch.Tensor, src_boxes: torch.Tensor, src_valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Bool ``[... x K x n]``: source hyperpixel i's box contains keypoint k (inclusive)."""
    x, y = src_kps[..., 0:1], src_kps[..., 1:2]  # [... x K x 1]
    inside = (
        (src_boxes[:, 0] <= x) & (x <= src_boxes[:, 2])
        & (src_boxes[:, 1] <= y) & (y <= src_boxes[:, 3])
    )  # [... x K x n]
    if src_valid is not None:
        inside = inside & src_valid
    return inside


def transfer_on_grid(
    best: torch.Tensor, points: torch.Tensor, src: Grid, trg_centres: torch.Tensor
) -> torch.Tensor:
    """:func:`transfer_from_best` for many points on one regular grid, in O(points + n).

    The boxes that contain a point are a rectangle of grid cells (rows ``i`` with
    ``i * stride - rf // 2 <= y <= i * stride + rf // 2``, columns likewise), so the sum of
    their displacements and their count are read from 2-D prefix sums instead of testing
    every box for every point: dense flow (every pixel of an image) needs this. The sums are
    of whole-pixel displacements, exact in float64, and the division is float32, so the
    result equals :func:`transfer_from_best`'s bit for bit.

    Args:
        best: ``[n]`` int64 best target of every source hyperpixel.
        points: ``[K x 2]`` float32 source points (resized source pixels).
        src: the source grid (its boxes, centres and valid mask are used).
        trg_centres: ``[m x 2]`` target centres.

    Returns:
        ``[K x 2]`` predicted target points; NaN where no unpruned box contains the point.
    """
    h, w, s, half = src.h, src.w, src.stride, src.rf // 2
    valid = src.valid.to(torch.float64)
    disp = (trg_centres[best] - src.centres).to(torch.float64)  # [n x 2], as transfer_from_best
    cells = torch.cat([disp * valid[:, None], valid[:, None]], dim=1).view(h, w, 3)
    prefix = torch.zeros(h + 1, w + 1, 3, dtype=torch.float64, device=points.device)
    prefix[1:, 1:] = cells.cumsum(0).cumsum(1)
    x, y = points[:, 0].to(torch.float64), points[:, 1].to(torch.float64)
    # first and last cell whose box reaches the point (inclusive bounds), clipped to the grid
    j0 = torch.ceil((x - half) / s).clamp(0, w).long()
    j1 = torch.floor((x + half) / s).clamp(-1, w - 1).long() + 1
    i0 = torch.ceil((y - half) / s).clamp(0, h).long()
    i1 = torch.floor((y + half) / s).clamp(-1, h - 1).long() + 1
    empty = (j1 <= j0) | (i1 <= i0)
    j1, i1 = torch.maximum(j1, j0), torch.maximum(i1, i0)
    sums = prefix[i1, j1] - prefix[i0, j1] - prefix[i1, j0] + prefix[i0, j0]  # [K x 3]
    sums[empty] = 0.0
    count = sums[:, 2:].to(points.dtype)
    return points + sums[:, :2].to(points.dtype) / count  # 0/0 -> NaN, as the reference
