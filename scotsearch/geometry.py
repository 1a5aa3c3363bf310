"""Hyperpixel grid geometry: receptive-field boxes, centres and HPF's margin pruning."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Grid:
    """The hyperpixel grid of one image for one base layer.

    Attributes:
        h, w: grid rows and columns (the base layer's feature-map size).
        stride: pixels per cell (``jsz``).
        rf: receptive-field size (``rfsz``).
        image_size: ``(H, W)`` of the resized image.
        centres: ``[n x 2]`` float ``(x, y)`` receptive-field centres, row-major.
        boxes: ``[n x 4]`` float ``x0, y0, x1, y1`` receptive-field boxes.
        valid: ``[n]`` bool, False for hyperpixels pruned at the margin.
    """

    h: int
    w: int
    stride: int
    rf: int
    image_size: tuple[int, int]
    centres: torch.Tensor
    boxes: torch.Tensor
    valid: torch.Tensor

    @property
    def n(self) -> int:
        return self.h * self.w


def make_grid(
    h: int,
    w: int,
    *,
    stride: int,
    rf: int,
    image_size: tuple[int, int],
    prune_margin: bool,
    margin: float | None = None,
    device: torch.device | str = "cpu",
) -> Grid:
    """Receptive-field boxes of an ``h x w`` grid (reference-behaviour.md §2).

    The centre of cell (i, j) is pixel ``(j * stride, i * stride)``: the references add no
    half-stride offset, and keypoint transfer depends on it.

    With ``prune_margin``, boxes reaching more than ``margin`` pixels outside the image are
    dropped: ``margin`` defaults to the stride (HPF's rule); SCOT uses 10 px on TSS only.

    Examples:
        >>> g = make_grid(2, 3, stride=4, rf=11, image_size=(8, 12), prune_margin=False)
        >>> g.centres[4].tolist(), g.boxes[4].tolist()
        ([4.0, 4.0], [-1.0, -1.0, 9.0, 9.0])
    """
    ii, jj = torch.meshgrid(
        torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
    )
    cx = (jj.reshape(-1) * stride).float()
    cy = (ii.reshape(-1) * stride).float()
    half = rf // 2
    boxes = torch.stack([cx - half, cy - half, cx + half, cy + half], dim=1)
    valid = torch.ones(h * w, dtype=torch.bool, device=device)
    if prune_margin:
        # HPF keeps boxes reaching at most one stride outside the image (§2).
        H, W = image_size
        t = stride if margin is None else margin
        valid = (
            (boxes[:, 0] >= -t)
            & (boxes[:, 1] >= -t)
            & (boxes[:, 2] < W + t)
            & (boxes[:, 3] < H + t)
        )
    return Grid(
        h=h,
        w=w,
        stride=stride,
        rf=rf,
        image_size=image_size,
        centres=torch.stack([cx, cy], dim=1),
        boxes=boxes,
        valid=valid,
    )
