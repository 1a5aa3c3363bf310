"""Caltech-101 reader: HPF's fifth benchmark, scored by masks (reference-behaviour.md §9.5).

Layout under ``root`` (the ``Caltech-101`` folder of HPF's ``Datasets_HPF``)::

    test_pairs_caltech_with_category.csv    one row per pair (see below)
    101_ObjectCategories/<category>/<name>.jpg

Facts from HPF (juhongm999/hpf at 5a72968: ``data/caltech.py``, ``data/dataset.py``):

* the pair file is ``test_pairs_caltech_with_category.csv``, read with ``pandas.read_csv``
  (first line a header) and the same file whatever split is asked for;
* columns by position: 0 source image, 1 target image, 2 class id (1-based), 3 source x,
  4 source y, 5 target x, 6 target y. Each coordinate cell is one string of
  comma-separated numbers, ``"x1,x2,...,xV"`` (quoted in the CSV), the object's outline
  polygon in original image pixels;
* an image path's first component is dropped and the rest is joined to
  ``101_ObjectCategories``;
* there is no PCK threshold; the polygons are what is transferred and scored
  (:mod:`scotsearch.masks`), and HPF does not prune margin hyperpixels here (§2).

Our own decisions:

* only the ``test`` split exists (HPF reads the one file for any split name; we refuse the
  others rather than let a search run on the test pairs under another name);
* the category is the image's folder, and both images of a pair must share it; the class
  id must be a positive integer but is not otherwise used;
* a header row is detected (as for PF-PASCAL and PF-WILLOW) rather than assumed;
* a polygon needs at least 3 vertices, finite numbers, as many x as y values and a
  non-zero area (a zero-area target would make every IoU meaningless); anything else is
  refused with the file and line named;
* vertices are not required to lie inside the image: rasterisation drops outside pixels.

Each :class:`~scotsearch.data.pairs.Pair` carries the source polygon as ``src_kps`` (the
points the matcher transfers) and the target polygon as ``trg_kps``; the two may differ in
length, so these pairs are validated here instead of by ``check_pair``, and the dataset is
marked ``metric="mask"``.
"""

from __future__ import annotations

from pathlib import Path
from pathlib import PurePosixPath

import numpy as np

from scotsearch.data.pairs import Dataset
from scotsearch.data.pairs import Pair
from scotsearch.data.pfpascal import test_split_rows
from scotsearch.errors import DataError


CSV_NAME = "test_pairs_caltech_with_category.csv"
IMAGES_DIR = "101_ObjectCategories"
_N_COLS = 7


def read_caltech(root: Path, split: str = "test") -> Dataset:
    """Read HPF's Caltech-101 pairs (a single ``test`` split).

    Args:
        root: the ``Caltech-101`` folder.
        split: must be ``test``.

    Returns:
        The pairs in CSV order, ``metric="mask"``.

    Raises:
        DataError: another split was asked for, or a file is missing or malformed.
    """
    root = Path(root)
    csv_path, rows = test_split_rows(root, split, label="Caltech-101", csv_name=CSV_NAME)
    images = root / IMAGES_DIR
    if not images.is_dir():
        raise DataError(f"Caltech-101 images folder not found: {images}")
    pairs = [_make_pair(f"{csv_path}:{n}", n, row, images) for n, row in rows]
    if not pairs:
        raise DataError(f"Caltech-101 pair file lists no pairs: {csv_path}")
    return Dataset(
        name="caltech",
        split="test",
        root=root,
        pairs=tuple(pairs),
        default_thres="img",
        metric="mask",
    )


def parse_polygon(x_text: str, y_text: str) -> np.ndarray:
    """``"x1,...,xV"``, ``"y1,...,yV"`` -> ``[V x 2]`` float64 polygon.

    Raises:
        ValueError: not numbers, unequal counts, fewer than 3 vertices, non-finite values
            or zero area (the message says which).

    Examples:
        >>> parse_polygon("0, 4,4", "0,0,3").tolist()
        [[0.0, 0.0], [4.0, 0.0], [4.0, 3.0]]
    """
    cols = []
    for axis, text in (("x", x_text), ("y", y_text)):
        try:
            cols.append(np.array([float(v) for v in text.split(",")], dtype=np.float64))
        except ValueError:
            raise ValueError(f"{axis} coordinates {_short(text)!r} are not comma-separated "
                             "numbers") from None
    xs, ys = cols
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} x but {len(ys)} y coordinates")
    if len(xs) < 3:
        raise ValueError(f"a polygon needs at least 3 vertices, got {len(xs)}")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError("non-finite coordinates")
    # Shoelace formula: twice the signed area.
    if np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1)) == 0:
        raise ValueError("the polygon has zero area")
    return np.stack([xs, ys], axis=1)


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _make_pair(where: str, n: int, row: list[str], images: Path) -> Pair:
    if len(row) < _N_COLS:
        raise DataError(f"{where}: expected {_N_COLS} columns (source, target, class, source "
                        f"x, source y, target x, target y), got {len(row)}")
    src_rel, trg_rel = (_relative(where, p) for p in row[:2])
    category = src_rel.parts[0]
    if trg_rel.parts[0] != category:
        raise DataError(f"{where}: source category {category!r} differs from target category "
                        f"{trg_rel.parts[0]!r}")
    try:
        class_id = int(row[2])
    except ValueError:
        class_id = 0
    if class_id < 1:
        raise DataError(f"{where}: class id {row[2]!r} is not a positive integer")
    polygons = []
    for side, (x_text, y_text) in (("source", row[3:5]), ("target", row[5:7])):
        try:
            polygons.append(parse_polygon(x_text, y_text))
        except ValueError as e:
            raise DataError(f"{where}: {side} polygon: {e}") from None
    return Pair(
        pair_id=f"{n:05d}-{category}-{src_rel.stem}-{trg_rel.stem}",
        category=category,
        src_path=images.joinpath(*src_rel.parts),
        trg_path=images.joinpath(*trg_rel.parts),
        src_kps=polygons[0],
        trg_kps=polygons[1],
        thres_kind="img",
    )


def _relative(where: str, path: str) -> PurePosixPath:
    """``101_ObjectCategories/Faces/image_0001.jpg`` -> ``Faces/image_0001.jpg``."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if len(parts) < 3 or ".." in parts:
        raise DataError(f"{where}: image path {path!r} is not '<top>/<category>/<file>'")
    return PurePosixPath(*parts[1:])
