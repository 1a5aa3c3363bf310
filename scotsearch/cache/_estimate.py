"""How many bytes feature-cache entries will take, before they are written.

An entry holds every layer's map in float16 at its native resolution and the CAM in float32
at the network input's size (``_format``). A layer of stride ``s`` on an ``H x W`` input has
``ceil(H / s) x ceil(W / s)`` cells: exact for the ResNets (every downsampling step rounds
up), and for ViTs, whose input is padded to a multiple of the patch.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from scotsearch.errors import DataError


#: Per entry: the safetensors header with its metadata (measured: a few kB).
HEADER_BYTES = 8192


def entry_bytes(backbone: str, image_size: tuple[int, int]) -> int:
    """Estimated bytes of one entry for a network input of ``image_size`` = ``(H, W)``."""
    from scotsearch.layers import layer_specs

    H, W = image_size
    total = HEADER_BYTES + 4 * H * W  # the CAM (also counted for networks without one)
    for spec in layer_specs(backbone):
        total += 2 * spec.channels * math.ceil(H / spec.stride) * math.ceil(W / spec.stride)
    return total


def _existing(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_free_space(folder: Path, need: int, entries: int) -> None:
    """Refuse, in one line, a build whose ``need`` bytes the disk under ``folder`` lacks."""
    free = shutil.disk_usage(_existing(folder)).free
    if need > free:
        raise DataError(
            f"not enough disk space for the feature cache: {entries} new entries need about "
            f"{need / 1e9:.2f} GB, {free / 1e9:.2f} GB are free under {_existing(folder)} "
            "(free space, use another --cache-dir, a smaller --image-side, or --no-cache)"
        )
