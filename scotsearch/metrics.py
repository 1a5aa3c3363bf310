"""PCK: percentage of correct keypoints (reference-behaviour.md §7)."""

from __future__ import annotations

import numpy as np
import torch


def correct_keypoints(
    pred: torch.Tensor, gt: torch.Tensor, thr: torch.Tensor | float, alpha: float
) -> torch.Tensor:
    """Bool ``[... x K]``: ``||pred - gt|| <= alpha * thr`` (NaN predictions are wrong).

    Args:
        pred, gt: ``[... x K x 2]`` in the same (resized target) pixels.
        thr: threshold base in those pixels, broadcastable to ``[...]``.
        alpha: PCK alpha (> 0).

    Examples:
        >>> pred = torch.tensor([[0.0, 0.0], [3.0, 4.0], [float("nan"), 0.0]])
        >>> correct_keypoints(pred, torch.zeros(3, 2), 50.0, 0.1).tolist()
        [True, True, False]
    """
    dist = torch.linalg.vector_norm(pred - gt, dim=-1)
    thr_t = torch.as_tensor(thr, dtype=dist.dtype, device=dist.device)
    return dist <= alpha * thr_t.unsqueeze(-1)  # NaN <= x is False


def pck(
    pred: torch.Tensor, gt: torch.Tensor, thr: torch.Tensor | float, alpha: float
) -> torch.Tensor:
    """Per-pair PCK in [0, 1]: the fraction of a pair's keypoints that are correct."""
    return correct_keypoints(pred, gt, thr, alpha).float().mean(-1)


def batch_mean_pck(per_pair: np.ndarray) -> np.ndarray:
    """PCK x 100 averaged over the last (pair) axis: ``[... x P]`` -> ``[...]``.

    The headline number of HPF/SCOT: every pair counts the same, whatever its keypoints.

    Examples:
        >>> batch_mean_pck(np.array([[0.25, 1.0], [0.5, 0.5]])).tolist()
        [62.5, 50.0]
    """
    return np.mean(per_pair, axis=-1) * 100.0


def batch_pooled_pck(n_correct: np.ndarray, n_kps: np.ndarray) -> np.ndarray:
    """PCK x 100 pooled over the keypoints of all pairs: ``[... x P]``, ``[P]`` -> ``[...]``.

    DIFT's per-point convention: every keypoint counts the same.

    Examples:
        >>> batch_pooled_pck(np.array([[1, 3], [4, 0]]), np.array([4, 3])).tolist()
        [57.14285714285714, 57.14285714285714]
    """
    return np.sum(n_correct, axis=-1) / np.sum(n_kps) * 100.0


def mean_pck(per_pair: np.ndarray) -> float:
    """Headline PCK x 100: the mean over pairs of per-pair PCK (HPF/SCOT convention)."""
    return float(batch_mean_pck(per_pair)) if len(per_pair) else float("nan")


def pooled_pck(n_correct: np.ndarray, n_kps: np.ndarray) -> float:
    """PCK x 100 pooled over keypoints (DIFT's per-point convention)."""
    total = float(np.sum(n_kps))
    return float(np.sum(n_correct) / total * 100.0) if total else float("nan")
