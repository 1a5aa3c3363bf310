"""Image preprocessing exactly as the references do it (reference-behaviour.md §1.3).

The references' order: scale to [0, 1], ImageNet-normalise, *then* resize the normalised
tensor bilinearly (``align_corners=False``). In exact arithmetic the two orders agree (bilinear
weights sum to one and normalising is affine), but float32 rounding does not, and parity with
the references is kept down to the rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scotsearch.config import Profile
from scotsearch.errors import DataError


#: torchvision's ImageNet statistics, the ones both references normalise with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_plan(height: int, width: int, profile: Profile) -> tuple[tuple[int, int], float]:
    """Network-input size and resize ratio for an ``height x width`` image.

    The references compute this in **float32** (``imsize = torch.tensor(img.size()).float()``,
    ``ratio = side / imsize.max()``, ``int(imsize[2] * ratio)``), and float32 rounding differs
    from Python's float64 for many sizes (e.g. a 1x281 image: float64 gives a longer side of
    299, float32 gives 300), so the same arithmetic is reproduced here.

    Args:
        height: original image height ``H``.
        width: original image width ``W``.
        profile: ``image_side`` is the target longer side; with ``upsample_small`` (SCOT) every
            image is rescaled, otherwise (HPF) only images whose longer side exceeds it.

    Returns:
        ``((h, w), ratio)``: the resized size and the ratio (resized / original) as the
        Python float equal to the references' float32 ratio (1.0 when not resized).
    """
    if height < 1 or width < 1:
        raise DataError(f"image has no pixels ({height}x{width})")
    size = torch.tensor([float(height), float(width)], dtype=torch.float32)
    side_max = size.max()
    if not profile.upsample_small and not bool(side_max > profile.image_side):
        # HPF: `if side_max > side_thres` -- small images keep their size.
        return (height, width), 1.0
    ratio = profile.image_side / side_max  # float32 0-d tensor, as in the references
    new_size = (int(size[0] * ratio), int(size[1] * ratio))
    return new_size, float(ratio)


def prepare_image(
    img: torch.Tensor, profile: Profile, *, mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD, multiple: int = 1,
) -> tuple[torch.Tensor, float]:
    """Normalise and resize an RGB image into the network input.

    Pure and device-following: the result lives on ``img.device``.

    Args:
        img: ``[3 x H x W]`` uint8 RGB image (float input in 0..255 is accepted too).
        profile: image-size conventions (``image_side``, ``upsample_small``).
        mean, std: the network's input statistics (default: ImageNet's, the references').
        multiple: pad the normalised, resized image with zeros (the mean colour) at the
            bottom and right to a multiple of this in both sides (a ViT's patch); the
            geometry (ratio, pixel coordinates) is unchanged.

    Returns:
        ``(x, ratio)``: ``x`` is the ``[1 x 3 x h x w]`` float32 normalised network input and
        ``ratio`` the resize ratio (resized / original); keypoints scale by it.
    """
    if img.dim() != 3 or img.shape[0] != 3:
        raise DataError(f"expected an RGB image tensor [3, H, W], got shape {list(img.shape)}")
    height, width = int(img.shape[1]), int(img.shape[2])
    (new_h, new_w), ratio = resize_plan(height, width, profile)
    if new_h < 1 or new_w < 1:
        raise DataError(
            f"image of {height}x{width} pixels would shrink to {new_h}x{new_w}; it is too thin"
        )

    x = img.to(torch.float32) / 255.0
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    # Normalise first, resize second: the references' order (dataset transform, then resize).
    x = ((x - m) / s).unsqueeze(0)
    if (new_h, new_w) != (height, width):
        # SCOT also "resizes" when the size does not change; bilinear with
        # align_corners=False onto the same size is the identity, so skipping it is exact.
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    if multiple > 1:
        x = F.pad(x, (0, -new_w % multiple, 0, -new_h % multiple))
    return x, ratio
