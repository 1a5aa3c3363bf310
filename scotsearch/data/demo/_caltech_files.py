"""A small Caltech-101-layout copy made from scikit-image's bundled photos.

:func:`write_caltech_fixture` writes, under ``<root>/Caltech-101``, the layout HPF's
Caltech-101 reader expects (reference-behaviour.md §9.5, :mod:`scotsearch.data.caltech`)::

    test_pairs_caltech_with_category.csv
    101_ObjectCategories/<category>/image_0001.jpg, image_0002.jpg

Three categories, each one photo with an object outline drawn by eye (a rough polygon in
photo pixels, not a careful annotation): ``Faces`` (the astronaut's head), ``cup`` (the
coffee cup on its saucer) and ``wild_cat`` (the cat's head). Each category has two images:
``image_0001`` the whole photo scaled down, ``image_0002`` a window of it scaled down by
another factor, so both outlines are exact affine images of the photo's outline. The pair
file holds both directions of each category's pair: 6 pairs. Class ids are the categories'
positions (1-based) in HPF's class list, which is the sorted list of the 101 category
folders.

Deterministic and small (longer sides 120 and 100 px), for tests and for trying
``--dataset caltech`` without the real archive; it is not a benchmark.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from scotsearch.data.demo._photos import _data_dir
from scotsearch.data.demo._photos import _read_rgb


CALTECH_FIXTURE_CATEGORIES = ("Faces", "cup", "wild_cat")


@dataclass(frozen=True)
class _Outline:
    category: str
    class_id: int  # 1-based position in HPF's class list
    file: str
    window: tuple[int, int, int, int]  # x1, y1, x2, y2 of image_0002 in photo pixels
    polygon: tuple[tuple[int, int], ...]  # (x, y) photo pixels, drawn by eye


_OUTLINES = (
    _Outline("Faces", 1, "astronaut.png", (110, 0, 350, 240),
             ((155, 75), (180, 30), (230, 15), (280, 35), (300, 80), (295, 130), (270, 160),
              (230, 180), (190, 165), (160, 130))),
    _Outline("cup", 31, "coffee.png", (60, 0, 500, 400),
             ((80, 180), (110, 110), (175, 70), (240, 25), (330, 20), (400, 60), (450, 110),
              (478, 200), (470, 290), (420, 350), (340, 385), (240, 385), (150, 350),
              (95, 290))),
    _Outline("wild_cat", 98, "chelsea.png", (0, 0, 420, 300),
             ((30, 40), (90, 5), (360, 5), (400, 60), (380, 200), (330, 270), (260, 295),
              (150, 290), (60, 250), (20, 150))),
)

#: Longer side of image_0001 and image_0002.
_SIDES = (120, 100)


def write_caltech_fixture(root: Path) -> Path:
    """Write the fixture under ``root`` and return its ``Caltech-101`` folder.

    Existing files of the fixture are overwritten.
    """
    base = Path(root) / "Caltech-101"
    rows = []
    for outline in _OUTLINES:
        photo = _read_rgb(_data_dir() / outline.file).astype(np.uint8)
        h, w = photo.shape[:2]
        names, polygons = [], []
        for k, (window, side) in enumerate(zip(((0, 0, w, h), outline.window), _SIDES), 1):
            name = f"101_ObjectCategories/{outline.category}/image_{k:04d}.jpg"
            polygons.append(_write_view(base / name, photo, window, side, outline.polygon))
            names.append(name)
        for a, b in ((0, 1), (1, 0)):
            rows.append([names[a], names[b], outline.class_id,
                         _coords(polygons[a][:, 0]), _coords(polygons[a][:, 1]),
                         _coords(polygons[b][:, 0]), _coords(polygons[b][:, 1])])
    with open(base / "test_pairs_caltech_with_category.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source_image", "target_image", "class", "XA", "YA", "XB", "YB"])
        writer.writerows(rows)
    return base


def _write_view(path: Path, photo: np.ndarray, window: tuple[int, int, int, int], side: int,
                polygon: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Crop ``window``, scale its longer side to ``side``, save; the outline in the view."""
    x1, y1, x2, y2 = window
    crop = Image.fromarray(photo[y1:y2, x1:x2])
    scale = side / max(crop.size)
    size = (max(1, round(crop.size[0] * scale)), max(1, round(crop.size[1] * scale)))
    path.parent.mkdir(parents=True, exist_ok=True)
    crop.resize(size, Image.Resampling.BILINEAR).save(path, format="JPEG", quality=90)
    # PIL maps pixel centres: view x + 0.5 = (photo x + 0.5 - x1) * (view width / crop width).
    sx, sy = size[0] / crop.size[0], size[1] / crop.size[1]
    pts = np.asarray(polygon, dtype=np.float64)
    return np.stack([(pts[:, 0] + 0.5 - x1) * sx - 0.5, (pts[:, 1] + 0.5 - y1) * sy - 0.5], 1)


def _coords(values: np.ndarray) -> str:
    return ",".join(f"{v:.2f}" for v in values)
