"""Keypoint transfer from a confidence matrix (reference-behaviour.md §6)."""

from __future__ import annotations

import torch


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
