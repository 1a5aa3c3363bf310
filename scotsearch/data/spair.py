"""SPair-71k reader (reference-behaviour.md §9.1).

Layout under ``root`` (the ``SPair-71k`` folder)::

    Layout/large/{trn,val,test}.txt      <pair_id>-<src>-<trg>:<category>, one per line
    PairAnnotation/<split>/<line>.json   one JSON per pair
    JPEGImages/<category>/<name>.jpg

``ImageAnnotation/`` is not read. ``Segmentation/`` is not required either (SCOT's reader
loads it for every pair without using it; we do not).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from scotsearch.data.pairs import VARIATION_FACTORS
from scotsearch.data.pairs import Dataset
from scotsearch.data.pairs import Pair
from scotsearch.data.pairs import check_pair
from scotsearch.errors import DataError


#: Accepted split names and the file stem each maps to.
SPLITS = {"trn": "trn", "train": "trn", "val": "val", "test": "test"}


def read_spair(root: Path, split: str, name: str = "spair") -> Dataset:
    """Read one split of SPair-71k (or of a dataset in the same layout).

    Args:
        root: the ``SPair-71k`` folder.
        split: ``trn`` (alias ``train``), ``val`` or ``test``.
        name: dataset name recorded in the result (``demo`` reuses this reader).

    Returns:
        The split's pairs in layout-file order; threshold basis ``bbox``, ``exp2`` 1.0.

    Raises:
        DataError: a file is missing or malformed, or a pair has no usable keypoints.
    """
    root = Path(root)
    split = _split_name(split)
    if not root.is_dir():
        raise DataError(f"SPair-71k root folder not found: {root}")
    layout = root / "Layout" / "large" / f"{split}.txt"
    if not layout.is_file():
        raise DataError(f"SPair-71k split file not found: {layout}")
    images = root / "JPEGImages"
    if not images.is_dir():
        raise DataError(f"SPair-71k images folder not found: {images}")

    pairs = []
    for lineno, line in _layout_lines(layout):
        src, trg, category = _parse_layout_line(line, layout, lineno)
        ann_path = root / "PairAnnotation" / split / f"{line}.json"
        ann = _load_json(ann_path)
        pair = _make_pair(ann, ann_path, line, src, trg, category, images)
        pairs.append(pair)
    if not pairs:
        raise DataError(f"SPair-71k split file lists no pairs: {layout}")
    return Dataset(
        name=name,
        split=split,
        root=root,
        pairs=tuple(pairs),
        default_thres="bbox",
    )


def _split_name(split: str) -> str:
    try:
        return SPLITS[split]
    except KeyError:
        raise DataError(
            f"unknown SPair-71k split {split!r}; choose one of trn, val, test"
        ) from None


def _layout_lines(layout: Path) -> list[tuple[int, str]]:
    """Non-blank lines with 1-based line numbers (the official files end with a blank line)."""
    try:
        # utf-8-sig: a byte-order mark (as editors on Windows write) would otherwise become
        # part of the first pair's name, and that annotation would be "not found".
        text = layout.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read SPair-71k split file {layout}: {e}") from e
    return [(i, s.strip()) for i, s in enumerate(text.splitlines(), 1) if s.strip()]


def _parse_layout_line(line: str, layout: Path, lineno: int) -> tuple[str, str, str]:
    """``000001-2008_002719-2008_004100:aeroplane`` -> (src name, trg name, category)."""
    stem, sep, category = line.rpartition(":")
    parts = stem.split("-")
    # VOC image names contain '_' but never '-', so exactly three dash-separated fields.
    if not sep or not category or len(parts) != 3 or not all(parts):
        raise DataError(
            f"{layout}:{lineno}: expected '<pair_id>-<src>-<trg>:<category>', got {line!r}"
        )
    return parts[1], parts[2], category


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"SPair-71k pair annotation not found: {path}")
    try:
        with open(path, encoding="utf-8-sig") as f:
            ann = json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON ({e})") from e
    if not isinstance(ann, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(ann).__name__}")
    return ann


def _make_pair(
    ann: dict[str, Any],
    path: Path,
    pair_id: str,
    src: str,
    trg: str,
    category: str,
    images: Path,
) -> Pair:
    # The JSON repeats the names; a disagreement means files were copied into the wrong place.
    for key, want in (("src_imname", f"{src}.jpg"), ("trg_imname", f"{trg}.jpg")):
        if key in ann and ann[key] != want:
            raise DataError(f"{path}: {key} is {ann[key]!r} but the split file says {want!r}")
    if "category" in ann and ann["category"] != category:
        raise DataError(
            f"{path}: category is {ann['category']!r} but the split file says {category!r}"
        )
    src_kps = _array(ann, "src_kps", path, (-1, 2))
    trg_kps = _array(ann, "trg_kps", path, (-1, 2))
    if src_kps.shape != trg_kps.shape:
        raise DataError(
            f"{path}: {len(src_kps)} source keypoints but {len(trg_kps)} target keypoints"
        )
    pair = Pair(
        pair_id=pair_id,
        category=category,
        src_path=images / category / f"{src}.jpg",
        trg_path=images / category / f"{trg}.jpg",
        src_kps=src_kps,
        trg_kps=trg_kps,
        src_bbox=_array(ann, "src_bndbox", path, (4,)),
        trg_bbox=_array(ann, "trg_bndbox", path, (4,)),
        thres_kind="bbox",
        variation=_variation(ann, path),
        src_size=_imsize(ann, "src_imsize", path),
        trg_size=_imsize(ann, "trg_imsize", path),
    )
    try:
        return check_pair(pair)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None


def _array(ann: dict[str, Any], key: str, path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A required numeric field as float64 of ``shape`` (-1 = any length)."""
    if key not in ann:
        raise DataError(f"{path}: missing field {key!r}")
    try:
        a = np.asarray(ann[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: field {key!r} is not a numeric array") from None
    # An empty keypoint list decodes to shape (0,); give it the K x 2 shape it stands for.
    if a.size == 0 and len(shape) == 2:
        a = a.reshape(0, 2)
    ok = a.ndim == len(shape) and all(w in (-1, n) for w, n in zip(shape, a.shape))
    if not ok:
        want = " x ".join("K" if n == -1 else str(n) for n in shape)
        raise DataError(f"{path}: field {key!r} must be {want}, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DataError(f"{path}: field {key!r} has null or non-finite values")
    return a


def _variation(ann: dict[str, Any], path: Path) -> dict[str, int]:
    """The difficulty flags present in the annotation, validated against their levels."""
    flags = {}
    for factor, levels in VARIATION_FACTORS.items():
        if factor not in ann:
            continue
        v = ann[factor]
        # bool is an int subclass; JSON true/false is not a level index.
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < len(levels):
            raise DataError(
                f"{path}: field {factor!r} must be an integer in 0..{len(levels) - 1}, got {v!r}"
            )
        flags[factor] = v
    return flags


def _imsize(ann: dict[str, Any], key: str, path: Path) -> tuple[int, int] | None:
    """``[W, H, C]`` -> ``(W, H)``; optional field.

    The axis order was checked on real files: in ``000718-...:bicycle.json`` the target is
    ``[375, 500, 3]`` and its box reaches y = 497, so the second entry is the height.
    """
    if key not in ann:
        return None
    v = ann[key]
    if (
        not isinstance(v, list)
        or len(v) not in (2, 3)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in v)
    ):
        raise DataError(f"{path}: field {key!r} must be [W, H, C] positive integers, got {v!r}")
    return v[0], v[1]
