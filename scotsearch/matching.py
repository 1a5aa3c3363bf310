"""From per-layer features to confidence matrices, for many layer subsets at once.

The cosine over a concatenation of layers decomposes into per-layer terms
(reference-behaviour.md §13)::

    cos_S(i, j) = sum_l <f_l(i), g_l(j)> / sqrt(sum_l |f_l(i)|^2 * sum_l |g_l(j)|^2)

so each layer's dot-product matrix and squared norms are computed once per pair and any
subset's similarity is a sum (a 0/1 matrix product over the stacked terms). A deep layer's
dot products are taken at its native resolution and then upsampled on both sides: bilinear
upsampling is linear, so ``<U f, V g> = U (F^T G) V^T``, exact and far cheaper than the
reference's upsample-then-dot.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from scotsearch.cam import sample_on_grid
from scotsearch.cam import staircase
from scotsearch.config import MatchConfig
from scotsearch.config import Profile
from scotsearch.geometry import Grid
from scotsearch.ot import sinkhorn
from scotsearch.rhm import HoughSpace
from scotsearch.rhm import rhm


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[N x h x w]`` -> ``[N x H x W]``, bilinear with align_corners=True as the references."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x.unsqueeze(0), size=size, mode="bilinear", align_corners=True).squeeze(0)


def layer_terms(
    f_src: torch.Tensor, f_trg: torch.Tensor, src_hw: tuple[int, int], trg_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer's contribution to the hyperpixel cosine on the base grids.

    Args:
        f_src: ``[C x h_s x w_s]`` source map at the layer's native resolution.
        f_trg: ``[C x h_t x w_t]`` target map.
        src_hw, trg_hw: base grid sizes ``(h, w)``.

    Returns:
        ``dot [n x m]`` (n = h*w of the source grid, m of the target), ``sq_src [n]`` and
        ``sq_trg [m]``: dot products and squared norms of the upsampled features.
    """
    C, hs, ws = f_src.shape
    _, ht, wt = f_trg.shape
    f_src = f_src.float()
    f_trg = f_trg.float()
    native = f_src.reshape(C, hs * ws).T @ f_trg.reshape(C, ht * wt)  # [hs*ws x ht*wt]
    # Upsample the target side, then the source side, of the native dot products.
    d = _upsample(native.view(hs * ws, ht, wt), trg_hw).reshape(hs * ws, -1)  # [hs*ws x m]
    d = _upsample(d.T.reshape(-1, hs, ws), src_hw).reshape(d.shape[1], -1).T  # [n x m]
    sq_src = _upsample(f_src, src_hw).pow(2).sum(0).reshape(-1)
    sq_trg = _upsample(f_trg, trg_hw).pow(2).sum(0).reshape(-1)
    return d.contiguous(), sq_src, sq_trg


def subset_cosine(
    dots: torch.Tensor, sq_src: torch.Tensor, sq_trg: torch.Tensor, members: torch.Tensor
) -> torch.Tensor:
    """Cosine similarity of every subset from stacked per-layer terms.

    Args:
        dots: ``[L x n x m]`` per-layer dot products.
        sq_src: ``[L x n]``; sq_trg: ``[L x m]`` per-layer squared norms.
        members: ``[S x L]`` 0/1 float, row s marks the layers of subset s.

    Returns:
        ``[S x n x m]`` cosine (0 where a feature has zero norm).
    """
    L, n, m = dots.shape
    num = (members @ dots.reshape(L, n * m)).view(-1, n, m)
    ns = (members @ sq_src).clamp_min(0).sqrt()
    nt = (members @ sq_trg).clamp_min(0).sqrt()
    den = ns.unsqueeze(-1) * nt.unsqueeze(-2)
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num))


def marginal(
    grid: Grid, cam: torch.Tensor | None, match: MatchConfig, profile: Profile
) -> torch.Tensor:
    """``[n]`` transport marginal of one image: uniform, raw CAM or staircase (Eq. 8).

    Pruned hyperpixels get 0; the rest is normalised to sum 1. The weights are used only as
    marginals, nowhere else (§4.2).
    """
    if match.cam == "none" or cam is None:
        w = grid.valid.float()
    else:
        values = sample_on_grid(cam.to(grid.centres.device), grid.h, grid.w, grid.stride)
        if match.cam == "stair":
            w = staircase(values, match.beta, match.gamma, first_always=profile.first_stair_always)
        else:
            w = values.clamp_min(0)
        w = w.float() * grid.valid.float()
    total = w.sum()
    if not total > 0:
        # A map that is zero everywhere carries no preference: fall back to uniform rather
        # than dividing by zero.
        w = grid.valid.float()
        total = w.sum()
    if not total > 0:
        # Every hyperpixel pruned (an image smaller than a few receptive fields): nothing
        # can be matched, so no keypoint of the pair will be transferred.
        return w
    return w / total


def match_scores(
    cos: torch.Tensor,
    mu: torch.Tensor,
    nu: torch.Tensor,
    space: HoughSpace | None,
    match: MatchConfig,
    *,
    src_valid: torch.Tensor,
    trg_valid: torch.Tensor,
) -> torch.Tensor:
    """Confidence ``[S x n x m]`` for S candidates of one pair (the paper's variants).

    ``cos``: votes ``max(cos, 0) ** exp1`` (HPF uses exp1 = 3). ``ot``: cost
    ``1 - max(cos, 0)`` (SCOT hard-codes the cosine exponent to 1 in OT modes, §3.2),
    Sinkhorn plan scaled by the number of source hyperpixels, then ``max(T, 0) ** exp2``.
    With ``rhm`` the votes are multiplied by the smoothed Hough prior.
    """
    sim = cos.clamp_min(0)
    mask = src_valid.unsqueeze(-1) & trg_valid.unsqueeze(-2)
    if match.similarity == "cos":
        votes = sim if match.exp1 == 1 else sim.pow(match.exp1)
    else:
        cost = 1.0 - sim
        T = sinkhorn(cost, mu.expand(cos.shape[0], -1), nu.expand(cos.shape[0], -1),
                     eps=match.eps, n_iter=match.n_iter)
        T = T * float(src_valid.sum())
        votes = T.clamp_min(0)
        if match.exp2 != 1:
            votes = votes.pow(match.exp2)
    votes = votes * mask
    if match.rhm:
        assert space is not None
        return rhm(votes, space)
    return votes


def members_matrix(subsets: Sequence[tuple[int, ...]], layer_order: Sequence[int], device: torch.device | str) -> torch.Tensor:
    """``[S x L]`` 0/1 membership of each subset over ``layer_order``."""
    pos = {l: k for k, l in enumerate(layer_order)}
    A = torch.zeros(len(subsets), len(layer_order), device=device)
    for s, subset in enumerate(subsets):
        for l in subset:
            A[s, pos[l]] = 1.0
    return A
