"""Demo photos: the scikit-image sample photos, their object boxes and keypoints.

Each category is one photo bundled inside the scikit-image wheel (its ``skimage/data``
folder; nothing is fetched), with a hand-chosen box and up to 30 strong, spread-out
corners inside it; the motorbike is a stereo pair whose keypoints must also agree across
the two photos (see the package docstring).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from scotsearch.errors import DataError


_KPS_PER_CATEGORY = 30
_KPS_PER_PAIR = (8, 20)


@dataclass(frozen=True)
class _PhotoSpec:
    """One category's source photo, as bundled with scikit-image."""

    category: str
    file: str
    bbox: tuple[int, int, int, int]
    right_file: str | None = None
    disparity_file: str | None = None


# Boxes were drawn by eye on the full-size photos.
_PHOTOS = (
    _PhotoSpec("astronaut", "astronaut.png", (18, 12, 370, 511)),
    _PhotoSpec("cameraman", "camera.png", (0, 63, 332, 511)),
    _PhotoSpec("cat", "chelsea.png", (30, 0, 400, 299)),
    _PhotoSpec("coffee", "coffee.png", (75, 15, 480, 390)),
    _PhotoSpec(
        "motorbike",
        "motorcycle_left.png",
        (93, 85, 685, 450),
        right_file="motorcycle_right.png",
        disparity_file="motorcycle_disp.npz",
    ),
    _PhotoSpec("rocket", "rocket.jpg", (265, 125, 380, 426)),
)

#: Category names of the demo benchmark, sorted.
DEMO_CATEGORIES = tuple(sorted(p.category for p in _PHOTOS))


@dataclass(frozen=True)
class _Photo:
    """A loaded source photo.

    Attributes:
        spec: what it is.
        rgb: ``[H x W x 3]`` float32 in 0..255.
        right_rgb: the stereo partner, or None.
        disparity: ``[H x W]`` left-image disparity (inf where unknown), or None.
        kps: ``[K x 2]`` keypoints in (left) photo pixels, integer-valued.
        kps_right: the same points in the right photo, or None.
    """

    spec: _PhotoSpec
    rgb: np.ndarray
    right_rgb: np.ndarray | None
    disparity: np.ndarray | None
    kps: np.ndarray
    kps_right: np.ndarray | None

    @property
    def wh(self) -> tuple[int, int]:
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


def _data_dir() -> Path:
    """scikit-image's bundled data folder, located without importing scikit-image."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the demo dataset needs scikit-image's bundled photos; install scikit-image"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _read_rgb(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"scikit-image sample photo not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float32)
    except OSError as e:
        raise DataError(f"cannot read scikit-image sample photo {path}: {e}") from e


def _load_photo(spec: _PhotoSpec, rng: np.random.Generator) -> _Photo:
    folder = _data_dir()
    rgb = _read_rgb(folder / spec.file)
    right = disp = valid = None
    if spec.right_file is not None and spec.disparity_file is not None:
        right = _read_rgb(folder / spec.right_file)
        path = folder / spec.disparity_file
        try:
            with np.load(path) as z:
                disp = np.asarray(z[z.files[0]], dtype=np.float64)
        except (OSError, ValueError, IndexError) as e:
            raise DataError(f"cannot read scikit-image disparity map {path}: {e}") from e
        if disp.shape != rgb.shape[:2] or right.shape != rgb.shape:
            raise DataError(f"scikit-image stereo pair {spec.file}: sizes do not match")
        valid = _stereo_valid(disp)
    kps = _photo_keypoints(rgb, spec.bbox, rng, valid)
    kps_right = None
    if disp is not None and right is not None:
        kps, kps_right = _stereo_consistent(kps, disp, rgb, right)
    if len(kps) < _KPS_PER_PAIR[0]:
        raise DataError(f"demo generator: only {len(kps)} keypoints found on {spec.file}")
    return _Photo(spec, rgb, right, disp, kps, kps_right)


def _photo_keypoints(
    rgb: np.ndarray,
    bbox: tuple[int, int, int, int],
    rng: np.random.Generator,
    valid: np.ndarray | None,
) -> np.ndarray:
    """Up to 30 spread-out corner-like pixels inside ``bbox``, ``[K x 2]`` as (x, y)."""
    gray = rgb.mean(axis=2).astype(np.float64)
    smooth = ndimage.gaussian_filter(gray, 1.0)
    ix = ndimage.sobel(smooth, axis=1)
    iy = ndimage.sobel(smooth, axis=0)
    sxx = ndimage.gaussian_filter(ix * ix, 2.0)
    syy = ndimage.gaussian_filter(iy * iy, 2.0)
    sxy = ndimage.gaussian_filter(ix * iy, 2.0)
    # Smaller eigenvalue of the structure tensor: large only where the texture pins a
    # point down in both directions, so the keypoint is well defined, not sliding on an edge.
    lam = 0.5 * (sxx + syy) - np.sqrt(0.25 * (sxx - syy) ** 2 + sxy**2)

    h, w = gray.shape
    x1, y1, x2, y2 = bbox
    margin = 8
    mask = np.zeros((h, w), dtype=bool)
    rows = slice(max(y1, margin), min(y2, h - 1 - margin) + 1)
    cols = slice(max(x1, margin), min(x2, w - 1 - margin) + 1)
    mask[rows, cols] = True
    if valid is not None:
        mask &= valid
    if not mask.any():
        raise DataError("demo generator: empty keypoint region")
    mask &= lam >= np.percentile(lam[mask], 70)
    ys, xs = np.nonzero(mask)
    weight = lam[ys, xs] / lam[ys, xs].max() + 1e-6
    # Weighted sampling without replacement (Efraimidis-Spirakis keys): stronger corners
    # tend to come first, but the set varies with the seed.
    order = np.argsort(-(rng.random(len(xs)) ** (1.0 / weight)), kind="stable")
    d_min2 = (0.07 * max(x2 - x1, y2 - y1)) ** 2
    chosen: list[tuple[int, int]] = []
    for i in order:
        x, y = int(xs[i]), int(ys[i])
        if all((x - cx) ** 2 + (y - cy) ** 2 >= d_min2 for cx, cy in chosen):
            chosen.append((x, y))
            if len(chosen) == _KPS_PER_CATEGORY:
                break
    return np.array(chosen, dtype=np.float64).reshape(-1, 2)


def _stereo_valid(disp: np.ndarray) -> np.ndarray:
    """Left pixels whose disparity is known, smooth and not occluded in the right image."""
    finite = np.isfinite(disp)
    # Known over a 5x5 window and varying by at most 1.5 px in it: rounding the keypoint
    # then never jumps across a depth edge.
    known = ndimage.minimum_filter(finite, size=5)
    filled = np.where(finite, disp, 0.0)
    spread = ndimage.maximum_filter(filled, size=5) - ndimage.minimum_filter(filled, size=5)
    h, w = disp.shape
    xs = np.arange(w, dtype=np.float64)[None, :]
    xr = np.where(finite, xs - filled, np.inf)
    # A left pixel is hidden in the right view when a pixel further right (hence nearer,
    # with a larger disparity) lands on (nearly) the same right-image column.
    suffix_min = np.minimum.accumulate(xr[:, ::-1], axis=1)[:, ::-1]
    further = np.concatenate([suffix_min[:, 1:], np.full((h, 1), np.inf)], axis=1)
    visible = further > xr + 0.5
    inside = (xr >= 8) & (xr <= w - 9)
    return known & (spread <= 1.5) & visible & inside


def _stereo_consistent(
    kps: np.ndarray, disp: np.ndarray, left: np.ndarray, right: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Keep keypoints whose 7x7 patch looks alike in both photos; also return right points."""
    xs, ys = kps[:, 0].astype(int), kps[:, 1].astype(int)
    right_pts = np.stack([kps[:, 0] - disp[ys, xs], kps[:, 1]], axis=1)
    lg, rg = left.mean(axis=2), right.mean(axis=2)
    off = np.arange(-3, 4, dtype=np.float64)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    keep = []
    for i, (x, y) in enumerate(kps):
        a = lg[int(y) - 3 : int(y) + 4, int(x) - 3 : int(x) + 4]
        b = ndimage.map_coordinates(rg, [right_pts[i, 1] + oy, right_pts[i, 0] + ox], order=1)
        keep.append(np.abs(a - b).mean() < 10.0)
    k = np.array(keep, dtype=bool)
    return kps[k], right_pts[k]
