"""Dense flow by keypoint transfer, SCOT's TSS procedure (reference-behaviour.md §6, §9.4).

On TSS, SCOT turns its matcher around (``evaluate_map_TSS_CAM.py``): the *target* image B is
matched to the source image A (``model(trg_img, src_img, ...)``), and every pixel of B, as a
1-based grid ``(1..W_B) x (1..H_B)`` scaled into the resized image, is transferred to A by
the keypoint transfer of §6 (SCOT does it in chunks of 10 000 points, to bound memory; so do
we, with :func:`~scotsearch.transfer.transfer_on_grid`, which gives the same numbers as the
keypoint path without testing every box for every pixel). The prediction, divided by A's
resize ratio, minus the 1-based grid is the flow: on B's pixels, in A's original pixels.
Receptive fields reaching more than 10 px outside their image are pruned on TSS
(``prune_margin(..., 10)`` in SCOT's ``scot_CAM.py``, §2), on both images, before the
transport.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from scotsearch.config import MatchConfig
from scotsearch.config import Profile
from scotsearch.features import ImageFeatures
from scotsearch.geometry import Grid
from scotsearch.geometry import make_grid
from scotsearch.layerspec import LayerSpec
from scotsearch.matching import layer_terms
from scotsearch.matching import marginal
from scotsearch.matching import match_scores
from scotsearch.matching import subset_cosine
from scotsearch.rhm import hough_space
from scotsearch.transfer import transfer_on_grid


#: SCOT's TSS margin: receptive fields reaching further outside the image are pruned (§2).
TSS_MARGIN = 10

#: Points transferred per call, as SCOT's TSS script (bounds the ``[points x n]`` masks).
CHUNK_POINTS = 10_000


def pixel_grid(height: int, width: int) -> torch.Tensor:
    """``[H*W x 2]`` float32 1-based pixel coordinates ``(x, y)``, row-major.

    Examples:
        >>> pixel_grid(2, 3)[:4].tolist()
        [[1.0, 1.0], [2.0, 1.0], [3.0, 1.0], [1.0, 2.0]]
    """
    yy, xx = torch.meshgrid(
        torch.arange(1, height + 1, dtype=torch.float32),
        torch.arange(1, width + 1, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def _grid(feats: ImageFeatures, spec: LayerSpec, base: int, device: torch.device) -> Grid:
    h, w = feats.layers[base].shape[-2:]
    return make_grid(int(h), int(w), stride=spec.stride, rf=spec.rf,
                     image_size=feats.image_size, prune_margin=True, margin=TSS_MARGIN,
                     device=device)


def predict_flow(
    src: ImageFeatures,
    trg: ImageFeatures,
    layers: Sequence[int],
    specs: Sequence[LayerSpec],
    match: MatchConfig,
    profile: Profile,
    *,
    device: torch.device | str = "cpu",
    chunk: int = CHUNK_POINTS,
) -> np.ndarray:
    """Flow on every pixel of the target (image B) into the source (image A).

    Args:
        src: features of image A (already mirrored for a flipped pair).
        trg: features of image B.
        layers: the hyperpixel layer ids (sorted; the lowest is the grid's base).
        specs: the backbone's layer specs (stride and receptive field per id).
        match: matching settings.
        profile: the compat profile (its staircase convention).
        device: where the maths runs.
        chunk: target pixels transferred per call.

    Returns:
        ``[H_B x W_B x 2]`` float32 flow ``(u, v)`` in image A's original pixels; NaN where
        no receptive field covers the pixel (the references have no fallback).
    """
    device = torch.device(device)
    ids = sorted(int(l) for l in layers)
    base = ids[0]
    # Roles reversed (SCOT on TSS): B is the matcher's source, A its target.
    g_b, g_a = _grid(trg, specs[base], base, device), _grid(src, specs[base], base, device)
    # One layer set: its per-layer terms are summed as they come, so memory holds one
    # n x m matrix however many layers there are (the searches keep them apart instead).
    dots = torch.zeros(1, g_b.n, g_a.n, device=device)
    sq_b = torch.zeros(1, g_b.n, device=device)
    sq_a = torch.zeros(1, g_a.n, device=device)
    for l in ids:
        d, nb, na = layer_terms(trg.layers[l].to(device), src.layers[l].to(device),
                                (g_b.h, g_b.w), (g_a.h, g_a.w))
        dots[0] += d
        sq_b[0] += nb
        sq_a[0] += na
        del d
    cos = subset_cosine(dots, sq_b, sq_a, torch.ones(1, 1, device=device))
    del dots
    space = None
    if match.rhm:
        space = hough_space(g_b.centres, g_a.centres, trg.image_size, src.image_size,
                            ncells=match.ncells)
    conf = match_scores(
        cos, marginal(g_b, trg.cam, match, profile), marginal(g_a, src.cam, match, profile),
        space, match, src_valid=g_b.valid, trg_valid=g_a.valid,
    )[0]
    # Each B hyperpixel's best A hyperpixel, over the unpruned ones: once, for all chunks.
    best = conf.masked_fill(~g_a.valid, float("-inf")).argmax(dim=-1)
    del conf
    height, width = trg.orig_size
    grid = pixel_grid(height, width).to(device)
    points = grid * trg.ratio
    pred = torch.empty_like(points)
    for start in range(0, len(points), max(1, chunk)):
        part = points[start : start + chunk]
        pred[start : start + len(part)] = transfer_on_grid(best, part, g_b, g_a.centres)
    flow = pred / src.ratio - grid
    return flow.reshape(height, width, 2).cpu().numpy().astype(np.float32)
