"""Regularised Hough matching (HPF), shared by HPF and SCOT (reference-behaviour.md §5)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


#: Gaussian smoothing of the Hough space: 7x7 kernel, sigma = 7 / 2 / 2.354 bins
#: (FWHM 3.5 bins), normalised to sum 1, zero padding 3.
KERNEL_SIZE = 7
SIGMA = KERNEL_SIZE / 2 / 2.354


@dataclass(frozen=True)
class HoughSpace:
    """Where each (source, target) hyperpixel pair votes.

    Attributes:
        bins: ``[n x m]`` int64 flat bin index ``bx + by * nx``.
        shape: ``(ny, nx)`` bins.
        cell: bin side in pixels.
    """

    bins: torch.Tensor
    shape: tuple[int, int]
    cell: float


def gaussian_kernel(
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The 7x7 smoothing kernel, sum 1."""
    r = torch.arange(KERNEL_SIZE, device=device, dtype=dtype) - KERNEL_SIZE // 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * SIGMA**2))
    return g / g.sum()


@dataclass(frozen=True)
class HoughTables:
    """The separable form of a pair's Hough bins:
    ``bin(i, j) = bx[ix_i, jx_j] + nx * by[iy_i, jy_j]``.

    The x part of a vote depends only on the two centres' x coordinates and the y part only
    on their y coordinates, so two small tables over the distinct coordinates replace the
    ``[n x m]`` bin matrix (which the fused chain never forms).

    Attributes:
        bx: ``[X_s x X_t]`` int64 x bins over the distinct source / target x centres.
        by: ``[Y_s x Y_t]`` int64 y bins.
        ix, iy: ``[n]`` int64 index of each source centre's x / y in the tables.
        jx, jy: ``[m]`` int64 index of each target centre's x / y.
        shape: ``(ny, nx)`` bins.
        cell: bin side in pixels.
    """

    bx: torch.Tensor
    by: torch.Tensor
    ix: torch.Tensor
    iy: torch.Tensor
    jx: torch.Tensor
    jy: torch.Tensor
    shape: tuple[int, int]
    cell: float

    def bins(self) -> torch.Tensor:
        """``[n x m]`` flat bin index of every hyperpixel pair."""
        nx = self.shape[1]
        return self.bx[self.ix][:, self.jx] + self.by[self.iy][:, self.jy] * nx


def hough_tables(
    src_centres: torch.Tensor,
    trg_centres: torch.Tensor,
    src_size: tuple[int, int],
    trg_size: tuple[int, int],
    *,
    ncells: int = 8192,
) -> HoughTables:
    """The separable bin tables of every hyperpixel pair's translation vote.

    Args:
        src_centres: ``[n x 2]`` ``(x, y)`` receptive-field centres of the source.
        trg_centres: ``[m x 2]`` centres of the target.
        src_size, trg_size: ``(H, W)`` of the resized images.
        ncells: number of Hough cells the offset space is divided into.

    The offset space spans ``(W_s + W_t) x (H_s + H_t)`` pixels cut into square cells of
    side ``sqrt(area / ncells)``; pair (i, j) votes at ``(W_s - x_i + x_j, H_s - y_i + y_j)``.
    """
    Hs, Ws = src_size
    Ht, Wt = trg_size
    hs_w, hs_h = Ws + Wt, Hs + Ht
    cell = math.sqrt(hs_w * hs_h / ncells)
    nx, ny = int(hs_w / cell) + 1, int(hs_h / cell) + 1
    # floor((W_s - x_i + x_j) / cell) depends only on the column pair: tabulate it over the
    # distinct x (and y) centres instead of flooring n x m floats.
    sx, ix = torch.unique(src_centres[:, 0], return_inverse=True)
    tx, jx = torch.unique(trg_centres[:, 0], return_inverse=True)
    sy, iy = torch.unique(src_centres[:, 1], return_inverse=True)
    ty, jy = torch.unique(trg_centres[:, 1], return_inverse=True)
    # Centres lie inside their images, so votes fall inside the space; the clamp only
    # guards against float rounding at the far edge.
    bx = torch.floor(((Ws - sx).double().unsqueeze(1) + tx.double().unsqueeze(0)) / cell)
    by = torch.floor(((Hs - sy).double().unsqueeze(1) + ty.double().unsqueeze(0)) / cell)
    return HoughTables(
        bx=bx.long().clamp_(0, nx - 1), by=by.long().clamp_(0, ny - 1),
        ix=ix, iy=iy, jx=jx, jy=jy, shape=(ny, nx), cell=cell,
    )


def hough_space(
    src_centres: torch.Tensor,
    trg_centres: torch.Tensor,
    src_size: tuple[int, int],
    trg_size: tuple[int, int],
    *,
    ncells: int = 8192,
) -> HoughSpace:
    """Bin of every hyperpixel pair's translation vote (see :func:`hough_tables`)."""
    t = hough_tables(src_centres, trg_centres, src_size, trg_size, ncells=ncells)
    return HoughSpace(bins=t.bins(), shape=t.shape, cell=t.cell)


def smooth_histogram(hist: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``[S x ny*nx]`` Hough histograms smoothed by the 7x7 Gaussian (zero padding)."""
    S = hist.shape[0]
    ny, nx = shape
    kernel = gaussian_kernel(hist.device, hist.dtype).view(1, 1, KERNEL_SIZE, KERNEL_SIZE)
    smooth = F.conv2d(hist.view(S, 1, ny, nx), kernel, padding=KERNEL_SIZE // 2)
    return smooth.view(S, -1)


def rhm(votes: torch.Tensor, space: HoughSpace) -> torch.Tensor:
    """Confidence ``C = V * smooth(H)[bin]`` for a batch of vote matrices on one pair.

    Args:
        votes: ``[S x n x m]`` non-negative votes (S candidates sharing the pair's geometry);
            overwritten with the result.
        space: the pair's Hough bins.

    Returns:
        ``[S x n x m]`` confidence.
    """
    S, n, m = votes.shape
    ny, nx = space.shape
    flat_bins = space.bins.reshape(-1)
    hist = torch.zeros(S, ny * nx, device=votes.device, dtype=votes.dtype)
    # One weighted bincount per candidate: equal to the reference's n_src x nbins buffer
    # summed over sources.
    hist.index_add_(1, flat_bins, votes.reshape(S, n * m))
    prior = smooth_histogram(hist, space.shape).index_select(1, flat_bins).view(S, n, m)
    return votes.mul_(prior)  # in place: votes are not needed afterwards
