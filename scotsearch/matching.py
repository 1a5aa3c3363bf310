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

import functools
from collections.abc import Sequence

import torch

from scotsearch.cam import sample_on_grid
from scotsearch.cam import staircase
from scotsearch.config import MatchConfig
from scotsearch.config import Profile
from scotsearch.geometry import Grid
from scotsearch.ot import LOG_DOMAIN_EPS
from scotsearch.ot import sinkhorn
from scotsearch.ot import sinkhorn_kernel_
from scotsearch.rhm import HoughSpace
from scotsearch.rhm import rhm


def interp_matrix(n_out: int, n_in: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[n_out x n_in]`` 1-D bilinear weights with align_corners=True (as the references).

    Position ``k`` of the output samples input position ``k * (n_in - 1) / (n_out - 1)``.
    The result is memoised per sizes and device and shared between callers: read it, never
    write to it. (Every layer term needs several; built afresh, with their copies to a GPU,
    they were most of the CPU time of an evaluator call there.)
    """
    return _interp_matrix(int(n_out), int(n_in), str(torch.device(device)))


@functools.lru_cache(maxsize=1024)
def _interp_matrix(n_out: int, n_in: int, device: str) -> torch.Tensor:
    if n_in == 1:
        return torch.ones(n_out, 1, device=device)
    pos = torch.arange(n_out, dtype=torch.float64) * (n_in - 1) / max(n_out - 1, 1)
    lo = pos.floor().long().clamp(max=n_in - 2)
    frac = pos - lo
    U = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    U[rows, lo] = 1 - frac
    U[rows, lo + 1] += frac
    return U.to(device=device, dtype=torch.float32)


def _up_cols(x: torch.Tensor, hw_in: tuple[int, int], hw_out: tuple[int, int]) -> torch.Tensor:
    """Bilinearly upsample ``[k x h*w]`` (each row a row-major map) to ``[k x H*W]``.

    Applied separably (rows of the map, then columns): a bilinear upsampling matrix has at
    most four non-zeros per row, so two small dense products beat one Kronecker product.
    """
    if tuple(hw_in) == tuple(hw_out):
        return x
    (h, w), (H, W) = hw_in, hw_out
    uy = interp_matrix(H, h, device=x.device)
    ux = interp_matrix(W, w, device=x.device)
    k = x.shape[0]
    y = torch.matmul(uy, x.reshape(k, h, w))  # [k x H x w]
    return torch.matmul(y, ux.T).reshape(k, H * W)  # [k x H x W]


def _up_rows(x: torch.Tensor, hw_in: tuple[int, int], hw_out: tuple[int, int]) -> torch.Tensor:
    """Bilinearly upsample ``[h*w x k]`` (each column a map) to ``[H*W x k]``."""
    if tuple(hw_in) == tuple(hw_out):
        return x
    (h, w), (H, W) = hw_in, hw_out
    uy = interp_matrix(H, h, device=x.device)
    ux = interp_matrix(W, w, device=x.device)
    k = x.shape[1]
    y = (uy @ x.reshape(h, w * k)).reshape(H, w, k)  # rows of the map
    return torch.matmul(ux, y).reshape(H * W, k)  # columns: [H x W x k]


def upsampled_sq_norms(f: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``[h*w]`` squared norms of a ``[C x h' x w']`` map upsampled to ``hw``."""
    C, h, w = f.shape
    return _up_cols(f.float().reshape(C, h * w), (h, w), hw).pow(2).sum(0)


def upsampled_sq_norms_separable(f: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """:func:`upsampled_sq_norms` without forming the ``[C x H*W]`` upsampled map.

    Upsampling rows first gives ``g = [C x H x w]``; each output cell is then
    ``wx0 * g[x0] + wx1 * g[x1]``, whose squared norm needs only ``|g[x]|^2`` and the
    neighbour products ``<g[x], g[x+1]>``, about ``W / w`` times less work for a deep layer.
    Equal to :func:`upsampled_sq_norms` up to float32 rounding.
    """
    C, h, w = f.shape
    H, W = hw
    x = f.float()
    if (h, w) == (H, W):
        return x.reshape(C, h * w).pow(2).sum(0)
    g = torch.matmul(interp_matrix(H, h, device=f.device), x)  # [C x H x w]
    s0 = g.pow(2).sum(0)  # [H x w]
    ux = interp_matrix(W, w, device=f.device)  # [W x w], at most two non-zeros per row
    out = s0 @ ux.pow(2).T  # the two squared taps
    if w > 1:
        s1 = (g[:, :, :-1] * g[:, :, 1:]).sum(0)  # [H x (w - 1)] neighbour products
        cross = 2.0 * ux[:, :-1] * ux[:, 1:]  # [W x (w - 1)]: 2 wx0 wx1 at (X, x0)
        out = out + s1 @ cross.T
    return out.reshape(H * W)


def layer_terms(
    f_src: torch.Tensor,
    f_trg: torch.Tensor,
    src_hw: tuple[int, int],
    trg_hw: tuple[int, int],
    *,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer's contribution to the hyperpixel cosine on the base grids.

    Args:
        f_src: ``[C x h_s x w_s]`` source map at the layer's native resolution.
        f_trg: ``[C x h_t x w_t]`` target map.
        src_hw, trg_hw: base grid sizes ``(h, w)``.
        out: optional ``[n x m]`` float32 buffer for the dot products.

    Returns:
        ``dot [n x m]`` (n = h*w of the source grid, m of the target), ``sq_src [n]`` and
        ``sq_trg [m]``: dot products and squared norms of the upsampled features.
    """
    C, hs, ws = f_src.shape
    _, ht, wt = f_trg.shape
    fs = f_src.float().reshape(C, hs * ws)
    ft = f_trg.float().reshape(C, ht * wt)
    sq_src = upsampled_sq_norms(f_src, src_hw)
    sq_trg = upsampled_sq_norms(f_trg, trg_hw)
    if (hs, ws) == tuple(src_hw) and (ht, wt) == tuple(trg_hw):
        d = torch.mm(fs.T, ft, out=out) if out is not None else fs.T @ ft
        return d, sq_src, sq_trg
    # U_s (F^T G) U_t^T: dot products at native resolution, then upsampled on both sides.
    # Exact (upsampling is linear) and, for deep layers, several times cheaper than the
    # reference's dot products between upsampled features.
    d = _up_rows(_up_cols(fs.T @ ft, (ht, wt), trg_hw), (hs, ws), src_hw)
    if out is not None:
        out.copy_(d)
        d = out
    return d, sq_src, sq_trg


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
    # Reduced-precision terms are summed in their dtype (the GPU's fast path) and the sum
    # is widened to float32 for everything after.
    wide = torch.promote_types(dots.dtype, torch.float32)
    num = (members.to(dots.dtype) @ dots.reshape(L, n * m)).view(-1, n, m).to(wide)
    inv_s, inv_t = subset_inverse_norms(sq_src, sq_trg, members)
    # In place: these are the largest tensors of the search, fresh allocations cost more
    # than the arithmetic on a CPU.
    return num.mul_(inv_s.unsqueeze(-1)).mul_(inv_t.unsqueeze(-2))


def subset_inverse_norms(
    sq_src: torch.Tensor, sq_trg: torch.Tensor, members: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[S x n]`` and ``[S x m]`` inverse hyperpixel norms of every subset (0 for norm 0)."""
    ns = (members @ sq_src).clamp_min(0).sqrt()
    nt = (members @ sq_trg).clamp_min(0).sqrt()
    inv_s = torch.where(ns > 0, 1.0 / ns.clamp_min(1e-30), torch.zeros_like(ns))
    inv_t = torch.where(nt > 0, 1.0 / nt.clamp_min(1e-30), torch.zeros_like(nt))
    return inv_s, inv_t


@functools.lru_cache(maxsize=256)
def source_taps(
    hw_in: tuple[int, int], hw_out: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The bilinear taps of :func:`layer_terms`' source-side upsampling, per output cell.

    Returns:
        ``rows [H*W x 4]`` int64 input cells ``(y0,x0), (y1,x0), (y0,x1), (y1,x1)`` and
        ``weights [H*W x 4]`` float32 ``(wy0, wy1, wx0, wx1)``: output cell (Y, X) is
        ``wx0 * (wy0 * f[y0,x0] + wy1 * f[y1,x0]) + wx1 * (wy0 * f[y0,x1] + wy1 * f[y1,x1])``,
        the weights being those of :func:`interp_matrix` (so the fused chain upsamples with
        the eager path's float32 weights). Memoised (shared: read, never write).
    """
    (h, w), (H, W) = hw_in, hw_out

    def axis(n_out: int, n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        U = interp_matrix(n_out, n_in)
        lo = (U > 0).float().argmax(1)  # first non-zero: the lower tap
        hi = (lo + 1).clamp(max=n_in - 1)
        k = torch.arange(n_out)
        w_lo = U[k, lo]
        w_hi = torch.where(hi > lo, U[k, hi], torch.zeros_like(w_lo))
        return lo, hi, torch.stack([w_lo, w_hi], 1)

    y0, y1, wy = axis(H, h)
    x0, x1, wx = axis(W, w)
    Y = torch.arange(H).repeat_interleave(W)
    X = torch.arange(W).repeat(H)
    rows = torch.stack(
        [y0[Y] * w + x0[X], y1[Y] * w + x0[X], y0[Y] * w + x1[X], y1[Y] * w + x1[X]], 1
    )
    return rows, torch.cat([wy[Y], wx[X]], 1).contiguous()


def native_term(
    f_src: torch.Tensor, f_trg: torch.Tensor, trg_hw: tuple[int, int]
) -> torch.Tensor:
    """``[h_s*w_s x m]`` one layer's dot products, upsampled on the target side only.

    The fused chain applies the source side's bilinear taps on the fly
    (:func:`source_taps`), so the ``[n x m]`` upsampled term is never stored.
    """
    C, hs, ws = f_src.shape
    _, ht, wt = f_trg.shape
    fs = f_src.float().reshape(C, hs * ws)
    ft = f_trg.float().reshape(C, ht * wt)
    return _up_cols(fs.T @ ft, (ht, wt), trg_hw)


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
    S = cos.shape[0]
    sim = cos.clamp_min_(0)  # the cosine is not needed afterwards: work in place
    mask = src_valid.unsqueeze(-1) & trg_valid.unsqueeze(-2)
    if match.similarity == "cos":
        votes = sim if match.exp1 == 1 else sim.pow_(match.exp1)
    else:
        mu_b, nu_b = mu.expand(S, -1), nu.expand(S, -1)
        if match.eps >= LOG_DOMAIN_EPS:
            # K = exp(-(1 - sim) / eps) formed in place; with costs in [0, 1] and this eps
            # it stays far above float32's underflow, so no NaN guard is needed here.
            K = sim.sub_(1.0).div_(match.eps).exp_()
            T = sinkhorn_kernel_(K, mu_b, nu_b, n_iter=match.n_iter)
        else:
            T = sinkhorn(1.0 - sim, mu_b, nu_b, eps=match.eps, n_iter=match.n_iter)
        votes = T.mul_(float(src_valid.sum())).clamp_min_(0)
        if match.exp2 != 1:
            votes = votes.pow_(match.exp2)
    if not bool(mask.all()):
        votes = votes.mul_(mask)
    if match.rhm:
        assert space is not None
        return rhm(votes, space)
    return votes


def members_matrix(
    subsets: Sequence[tuple[int, ...]], layer_order: Sequence[int], device: torch.device | str
) -> torch.Tensor:
    """``[S x L]`` 0/1 membership of each subset over ``layer_order``."""
    pos = {l: k for k, l in enumerate(layer_order)}
    A = torch.zeros(len(subsets), len(layer_order), device=device)
    for s, subset in enumerate(subsets):
        for l in subset:
            A[s, pos[l]] = 1.0
    return A
