"""PF-WILLOW reader (reference-behaviour.md §9.3).

Layout under ``root`` (the ``PF-WILLOW`` folder)::

    test_pairs.csv             one row per pair, 42 columns (see below)
    <class>/<name>.png         e.g. car(G)/Cars_006a.png

Columns: 0/1 image paths such as ``PF-dataset/car(G)/Cars_006a.png`` (the first component
is the archive's old top folder and is dropped), 2-11 source x1..x10, 12-21 source
y1..y10, 22-31 target x1..x10, 32-41 target y1..y10.

PF-WILLOW has no object boxes: the boxes recorded here are the keypoints' extent, which is
also what the ``kps`` PCK threshold uses. HPF/SCOT read all 10 keypoints unpadded, so they do
not have the "-1 padding" threshold bug of later readers (§11).
"""

from __future__ import annotations

from pathlib import Path
from pathlib import PurePosixPath

import numpy as np

from scotsearch.data.pairs import Dataset
from scotsearch.data.pairs import Pair
from scotsearch.data.pairs import check_pair
from scotsearch.data.pfpascal import read_csv_rows
from scotsearch.errors import DataError


N_KPS = 10
_N_COLS = 2 + 4 * N_KPS


def read_pfwillow(root: Path, split: str = "test") -> Dataset:
    """Read PF-WILLOW (a single ``test`` split of 900 pairs).

    Args:
        root: the ``PF-WILLOW`` folder.
        split: must be ``test``.

    Returns:
        The pairs in CSV order; threshold basis ``kps``, ``exp2`` 0.5.

    Raises:
        DataError: another split was asked for, or a file is missing or malformed.
    """
    root = Path(root)
    if split != "test":
        raise DataError(f"PF-WILLOW has only a 'test' split, not {split!r}")
    if not root.is_dir():
        raise DataError(f"PF-WILLOW root folder not found: {root}")
    csv_path = root / "test_pairs.csv"
    if not csv_path.is_file():
        raise DataError(f"PF-WILLOW pair file not found: {csv_path}")

    _, rows = read_csv_rows(csv_path, numeric_col=2)
    pairs = [_make_pair(csv_path, n, row, root) for n, row in rows]
    if not pairs:
        raise DataError(f"PF-WILLOW pair file lists no pairs: {csv_path}")
    # Images live in one folder per class; check those exist now, the files when decoded.
    for folder in sorted({p.src_path.parent for p in pairs} | {p.trg_path.parent for p in pairs}):
        if not folder.is_dir():
            raise DataError(f"PF-WILLOW images folder not found: {folder}")
    return Dataset(
        name="pfwillow",
        split="test",
        root=root,
        pairs=tuple(pairs),
        default_thres="kps",
    )


def _make_pair(csv_path: Path, n: int, row: list[str], root: Path) -> Pair:
    where = f"{csv_path}:{n}"
    if len(row) < _N_COLS:
        raise DataError(f"{where}: expected {_N_COLS} columns, got {len(row)}")
    src_rel, trg_rel = (_relative(where, p) for p in row[:2])
    category = src_rel.parts[0]
    if trg_rel.parts[0] != category:
        raise DataError(
            f"{where}: source class {category!r} differs from target class {trg_rel.parts[0]!r}"
        )
    try:
        values = np.array([float(v) for v in row[2:_N_COLS]], dtype=np.float64)
    except ValueError:
        raise DataError(f"{where}: keypoint columns 2-{_N_COLS - 1} must be numbers") from None
    # Each 20-vector is x1..x10 then y1..y10: reshape to 2 x 10, transpose to 10 x 2.
    src_kps = values[: 2 * N_KPS].reshape(2, N_KPS).T.copy()
    trg_kps = values[2 * N_KPS :].reshape(2, N_KPS).T.copy()
    pair = Pair(
        pair_id=f"{n:04d}-{src_rel.stem}-{trg_rel.stem}",
        category=category,
        src_path=root.joinpath(*src_rel.parts),
        trg_path=root.joinpath(*trg_rel.parts),
        src_kps=src_kps,
        trg_kps=trg_kps,
        src_bbox=_extent(src_kps),
        trg_bbox=_extent(trg_kps),
        thres_kind="kps",
    )
    try:
        return check_pair(pair)
    except DataError as e:
        raise DataError(f"{where}: {e}") from None


def _relative(where: str, path: str) -> PurePosixPath:
    """``PF-dataset/car(G)/Cars_006a.png`` -> ``car(G)/Cars_006a.png``."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if len(parts) < 3:
        raise DataError(f"{where}: image path {path!r} is not '<top>/<class>/<file>'")
    return PurePosixPath(*parts[1:])


def _extent(kps: np.ndarray) -> np.ndarray:
    """Tight box ``[x1, y1, x2, y2]`` around the keypoints (NaN-free after check)."""
    if not np.isfinite(kps).all():
        # check_pair rejects the pair with a clearer message; avoid a NaN box warning first.
        return np.zeros(4)
    return np.concatenate([kps.min(0), kps.max(0)])
