"""Image decoding: any file PIL can read becomes an RGB ``uint8`` tensor.

EXIF orientation is deliberately NOT applied: the benchmarks' keypoints are in the stored
pixel grid, and HPF/SCOT decode with PIL without ``exif_transpose`` (reference-behaviour.md
§9), so rotating the pixels would silently misalign every annotation.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scotsearch._io import atomic_write
from scotsearch.errors import DataError


# PIL raises these for unreadable, truncated or unsupported files (UnidentifiedImageError is
# an OSError); DecompressionBombError derives from Exception only.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

# Integer/float modes whose samples may exceed 255: ``convert("RGB")`` would clip them.
_WIDE_MODES = ("I", "F")


def load_image(path: Path) -> torch.Tensor:
    """Decode an image file as RGB.

    Grayscale, palette, alpha, CMYK (including Adobe's inverted CMYK JPEGs, which PIL
    recognises by their APP14 marker) and 16-bit images are all converted; alpha is dropped,
    as the references do.

    Args:
        path: image file.

    Returns:
        ``[3 x H x W]`` ``uint8`` tensor.

    Raises:
        DataError: the file is missing or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            rgb = _to_rgb_array(img)
    except _DECODE_ERRORS as e:
        raise DataError(f"cannot decode image {path}: {_one_line(e)}") from e
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def image_size(path: Path) -> tuple[int, int]:
    """``(W, H)`` of an image file, read from its header only (no pixel decoding).

    Raises:
        DataError: the file is missing or is not an image PIL recognises.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        # Image.open is lazy: it parses the header and leaves the pixel data unread.
        with Image.open(path) as img:
            w, h = img.size
    except _DECODE_ERRORS as e:
        raise DataError(f"cannot read image header {path}: {_one_line(e)}") from e
    return int(w), int(h)


def mirrored_copy(path: Path, folder: Path) -> Path:
    """A left-right mirrored copy of an image, written once as a lossless PNG in ``folder``.

    TSS flips some source images before matching (§9.4). Features are cached per image
    file, by content; a mirrored file of its own gets an entry of its own, so the flip needs
    no special case in the cache or the extractors. The name holds the original's content
    digest: an edited original gets a new copy.

    Returns:
        The copy's path; decoding it gives exactly the mirrored pixels of :func:`load_image`.

    Raises:
        DataError: the original is missing or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    out = Path(folder) / f"{path.stem}-{digest}-mirrored.png"
    if not out.is_file():
        rgb = load_image(path).permute(1, 2, 0).numpy()[:, ::-1]
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
        atomic_write(out, buf.getvalue(), fsync=False)
    return out


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """``[H x W x 3]`` uint8 array of a loaded PIL image of any mode."""
    if img.mode.startswith("I;16") or img.mode in _WIDE_MODES:
        gray = np.asarray(img, dtype=np.float64)
        # 16-bit data (PNG/TIFF) spans 0..65535; rescale rather than clip to white.
        if img.mode.startswith("I;16") or (gray.size and gray.max() > 255):
            gray = gray / 257.0
        gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    # np.array copies: np.asarray on a PIL image can be read-only, which torch warns about.
    return np.array(img, dtype=np.uint8)


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return msg or type(e).__name__
