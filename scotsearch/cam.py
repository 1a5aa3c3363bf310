"""Class activation maps and the staircase weights of SCOT (reference-behaviour.md §4).

The CAM depends only on the image (never on the hyperpixel layer subset), so it is computed
once per image and stored before any staircase; ``staircase`` and ``sample_on_grid`` turn it
into per-hyperpixel OT marginal weights at matching time.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F


#: SCOT's scales; the 300-px image is re-run at 1.5x and 2x.
CAM_SCALES = (1.0, 1.5, 2.0)


class CamBackbone(Protocol):
    """What ``multiscale_cam`` needs from a network (``scotsearch.backbones.Backbone``)."""

    @property
    def fc(self) -> torch.nn.Linear: ...

    def forward_layers(
        self, x: torch.Tensor, layer_ids: Iterable[int] | None = None, *, need_logits: bool = True
    ) -> tuple[dict[int, torch.Tensor], torch.Tensor | None, torch.Tensor | None]: ...


def _topk_cam(
    fc_weight: torch.Tensor,
    last: torch.Tensor,
    logits: torch.Tensor,
    size: tuple[int, int],
    top_k: int,
) -> torch.Tensor:
    """One scale of SCOT's ``get_CAM``: ``[H x W]`` max over the top-k class maps."""
    probs = F.softmax(logits, dim=1)
    labels = torch.topk(probs, k=top_k, dim=1).indices[0]  # predicted classes, not GT
    _, channels, h, w = last.shape
    # W_fc[c] . F for each class: no fc bias and no ReLU, as in the reference.
    cams = fc_weight[labels].to(last.dtype) @ last[0].reshape(channels, h * w)  # [k x hw]
    cams = F.interpolate(
        cams.view(1, top_k, h, w), size=size, mode="bilinear", align_corners=True
    )[0]
    lo = cams.flatten(1).min(dim=1).values.view(top_k, 1, 1)
    hi = cams.flatten(1).max(dim=1).values.view(top_k, 1, 1)
    # Reference quirk (§4.1, §12.8): (cam - min) / max, NOT (cam - min) / (max - min). The
    # result is not in [0, 1] in general (and flips sign if max < 0); kept for parity.
    cams = (cams - lo) / hi
    return cams.max(dim=0).values


@torch.no_grad()
def multiscale_cam(
    backbone: CamBackbone, x: torch.Tensor, *, scales: Sequence[float] = CAM_SCALES,
    top_k: int = 2, base: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """SCOT's multi-scale top-k CAM of one image (``get_CAM_multi``, §4.1).

    :func:`multiscale_cams` for a batch of one: ``x`` is ``[1 x 3 x h x w]`` (and ``base``
    ``(last [1 x 2048 x h' x w'], logits [1 x 1000])``), the other arguments are the same.

    Returns:
        ``[h x w]`` CAM on ``x.device``, values in about [0, 1].
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"multiscale_cam expects one image [1, 3, h, w], got {list(x.shape)}")
    return multiscale_cams(backbone, x, scales=scales, top_k=top_k, base=base)[0]


@torch.no_grad()
def multiscale_cams(
    backbone: CamBackbone,
    x: torch.Tensor,
    *,
    scales: Sequence[float] = CAM_SCALES,
    top_k: int = 2,
    base: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """SCOT's multi-scale top-k CAM (``get_CAM_multi``, reference-behaviour.md §4.1) of a
    batch of images of one size, each scale's forward pass batched.

    Per scale s the (already normalised and resized) images are bilinearly upsampled
    (``align_corners=True``) to ``(int(s*h), int(s*w))`` and the network re-run; the top-k
    predicted ImageNet classes give ``W_fc[c] . last`` maps, each upsampled to ``(h, w)``,
    shifted by its min and divided by its max, then max-pooled over the classes. The per-scale
    maps are summed and divided by ``max + 1e-5``, per image.

    Args:
        backbone: the network; needs ``forward_layers`` and ``fc``.
        x: ``[n x 3 x h x w]`` normalised, resized network inputs.
        scales: image scales; a scale of exactly 1.0 uses ``x`` itself.
        top_k: number of predicted classes per scale.
        base: optional ``(last [n x 2048 x h' x w'], logits [n x 1000])`` of ``x`` from the
            feature-extraction pass, reused for scale 1.0 (as the reference does).

    Returns:
        ``[n x h x w]`` CAMs on ``x.device``, values in about [0, 1]. Each image's map is the
        one :func:`multiscale_cam` gives it alone, up to the float rounding of batched
        convolutions.
    """
    if x.dim() != 4:
        raise ValueError(f"multiscale_cams expects images [n, 3, h, w], got {list(x.shape)}")
    n, size = int(x.shape[0]), (int(x.shape[2]), int(x.shape[3]))
    fc_weight = backbone.fc.weight
    img = x
    total: torch.Tensor | None = None
    for scale in scales:
        if scale == 1.0 and base is not None:
            last, logits = base
        else:
            if scale != 1.0:
                # Reference quirk: `img` is overwritten at every scale, so the 2.0 input is
                # interpolated from the 1.5 image, not from the original (two resamplings).
                # Its 800x800 guard cannot trigger at 300 px (and is broken), so it is omitted.
                img = F.interpolate(
                    img,
                    size=(int(scale * size[0]), int(scale * size[1])),
                    mode="bilinear",
                    align_corners=True,
                )
            _, last_s, logits_s = backbone.forward_layers(img, (), need_logits=True)
            assert last_s is not None and logits_s is not None
            last, logits = last_s, logits_s
        # One image at a time: the top-k classes are each image's own.
        cam = torch.stack([
            _topk_cam(fc_weight, last[i : i + 1], logits[i : i + 1], size, top_k)
            for i in range(n)
        ])
        total = cam if total is None else total + cam
    if total is None:
        raise ValueError("multiscale_cam needs at least one scale")
    return total / (total.flatten(1).max(dim=1).values.view(n, 1, 1) + 1e-5)


def staircase(
    values: torch.Tensor,
    beta: Sequence[float] | torch.Tensor,
    gamma: Sequence[float] | torch.Tensor,
    *,
    first_always: bool,
) -> torch.Tensor:
    """Eq. 8 of the SCOT paper: ``sum_i gamma_i * [values > beta_i]`` elementwise.

    With the paper's defaults (beta 0/.4/.5/.6, gamma .5/.3/.1/.1) this gives the code's
    levels 0.5 / 0.8 / 0.9 / 1.0 (strict ``>`` at each stair).

    Args:
        values: CAM values, any shape.
        beta: stair heights (thresholds), one per stair.
        gamma: stair widths (increments), one per stair.
        first_always: SCOT's code starts every weight at ``gamma_0`` (0.5), so the first stair
            counts even where the CAM is exactly 0 (or NaN); the paper's ``A > beta_0`` gives 0
            there.

    Returns:
        Weights with the shape of ``values`` (its float dtype, float32 for integer input).
    """
    dtype = values.dtype if values.is_floating_point() else torch.float32
    b = torch.as_tensor(beta, dtype=torch.float64, device=values.device)
    g = torch.as_tensor(gamma, dtype=torch.float64, device=values.device)
    if b.dim() != 1 or b.shape != g.shape or b.numel() == 0:
        raise ValueError("beta and gamma must be 1-D with the same, non-zero length")
    # Compare in the values' own precision, as the reference does (`mask > 0.4` on a float32
    # tensor rounds 0.4 to float32): a float32 CAM value equal to float32(0.4) is not above it.
    passed = values.to(dtype).unsqueeze(-1) > b.to(dtype)  # [... x n_stairs]
    if first_always:
        passed[..., 0] = True
    # Summed in float64 and cast once, so the levels round to exactly the float32 constants
    # the reference writes (0.8, 0.9, 1.0) instead of accumulating float32 error.
    return (passed.to(torch.float64) * g).sum(dim=-1).to(dtype)


def sample_on_grid(cam: torch.Tensor, h: int, w: int, stride: int) -> torch.Tensor:
    """The CAM at every hyperpixel's receptive-field centre (reference-behaviour.md §4.2).

    Cell ``(i, j)`` has its centre at pixel ``(x, y) = (j * stride, i * stride)`` (no
    half-stride offset, §2); the CAM is read there by nearest pixel, without interpolation.
    Coordinates past the image border are clamped (cannot happen for the stride-4 grids of the
    published layer sets, but can for coarser base layers).

    Args:
        cam: ``[H x W]`` map at network-input resolution.
        h: grid rows.
        w: grid columns.
        stride: pixels per grid cell.

    Returns:
        ``[h * w]`` values, row-major (index ``i * w + j``).
    """
    if cam.dim() != 2:
        raise ValueError(f"cam must be [H, W], got {list(cam.shape)}")
    height, width = cam.shape
    ys = (torch.arange(h, device=cam.device) * stride).clamp_(max=height - 1)
    xs = (torch.arange(w, device=cam.device) * stride).clamp_(max=width - 1)
    return cam[ys[:, None], xs[None, :]].reshape(-1)
