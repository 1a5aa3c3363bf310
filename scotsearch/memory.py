"""How much memory one pair needs at a given image side, and what this machine has free.

Everything ``[n x m]`` dominates: at the base stride 4 a pair of images whose longer side
is ``S`` has up to ``ceil(S / 4)^2`` hyperpixels each, and the least any engine holds at once
is three such float32 matrices (the fused chain's working buffer, the current parent sum,
one base-resolution layer term). The Hough histograms add ``ncells`` floats per thread.
A run that cannot fit this is refused before it starts, with the largest side that would.
"""

from __future__ import annotations

import gc
import math

import torch

from scotsearch.errors import ConfigError


#: Base-grid stride (ResNet stage 1) and the ``[n x m]`` float32 matrices held at once.
_STRIDE = 4
_MATRICES = 3


def pair_bytes(image_side: int, ncells: int, threads: int) -> int:
    """Least bytes one pair needs: three ``[n x m]`` float32 matrices and the histograms.

    >>> pair_bytes(300, 8192, 2) // 2**20   # 75 x 75 = 5,625 hyperpixels per image
    362
    """
    cells = math.ceil(image_side / _STRIDE) ** 2
    return _MATRICES * cells * cells * 4 + ncells * 4 * (threads + 2)


def largest_side(available: int, ncells: int, threads: int) -> int:
    """The largest image side whose :func:`pair_bytes` fits in ``available`` bytes."""
    room = available - ncells * 4 * (threads + 2)
    if room <= 0:
        return 0
    side = int(_STRIDE * (room / (_MATRICES * 4)) ** 0.25)
    while side > 0 and pair_bytes(side, ncells, threads) > available:
        side -= 1
    return side


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` now: CUDA's free bytes, Linux's MemAvailable, else ``None``."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_fits(image_side: int, ncells: int, device: torch.device) -> None:
    """Refuse settings whose smallest working set exceeds the device's free memory.

    Raises:
        ConfigError: naming the need, what is free, and the largest side that fits.
    """
    threads = max(1, torch.get_num_threads())
    need = pair_bytes(image_side, ncells, threads)
    free = available_bytes(device)
    if free is None or need <= free:
        return
    gib = 2**30
    fits = largest_side(free, ncells, threads)
    hint = (f"the largest --image-side that fits is about {fits}" if fits >= 32
            else f"--ncells {ncells} alone does not fit; use fewer Hough cells (default 8192)")
    raise ConfigError(
        f"--image-side {image_side} with --ncells {ncells} needs at least "
        f"{need / gib:.1f} GiB per pair but {device.type} has {free / gib:.1f} GiB free; {hint}"
    )


def release_after_out_of_memory() -> None:
    """Give back what a failed allocation's call held, before the search's next step asks
    for it: Python's garbage and, on CUDA, the caching allocator's unused blocks."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
