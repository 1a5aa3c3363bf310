"""PF-PASCAL reader (reference-behaviour.md §9.2), in two on-disk layouts.

(a) HPF/SCOT layout under ``root`` (the ``PF-PASCAL`` folder)::

    {trn,val,test}_pairs.csv         src path, trg path, 1-based class id[, flip]
    Annotations/<class>/<name>.mat   kps (K x 2, NaN rows = absent part), bbox (1 x 4)
    JPEGImages/<name>.jpg

(b) NCNet/WeakAlign layout: ``image_pairs/test_pairs.csv`` (or ``test_pairs.csv``) with
header ``source_image,target_image,class,XA,YA,XB,YB``, each coordinate cell a
``;``-separated list. Keypoints come from the CSV and there are no boxes, so the ``bbox``
PCK threshold needs layout (a).

The layout is chosen per split: a pair CSV whose header has the ``XA,YA,XB,YB`` columns is
read as (b); any other pair CSV needs ``Annotations/``. Only the basename of the image
paths in the CSV is used, looked up in ``root/JPEGImages/``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from pathlib import PurePosixPath

import numpy as np
import scipy.io

from scotsearch.data.pairs import Dataset
from scotsearch.data.pairs import Pair
from scotsearch.data.pairs import check_pair
from scotsearch.errors import DataError


#: The 20 PASCAL VOC classes in alphabetical order; CSV class ids index this list from 1.
CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

#: Split name -> CSV stems tried in order (HPF names the training split ``trn``, NCNet ``train``).
SPLITS = {
    "trn": ("trn", "train"),
    "train": ("trn", "train"),
    "val": ("val",),
    "test": ("test",),
}

_NCNET_COLUMNS = ("XA", "YA", "XB", "YB")


def read_pfpascal(root: Path, split: str) -> Dataset:
    """Read one split of PF-PASCAL.

    Args:
        root: the ``PF-PASCAL`` folder.
        split: ``trn`` (alias ``train``), ``val`` or ``test``.

    Returns:
        The split's pairs in CSV order; threshold basis ``img``, ``exp2`` 0.5. Keypoints are
        those finite in both images, in annotation order.

    Raises:
        DataError: a file is missing or malformed, or a pair has no usable keypoints.
    """
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"unknown PF-PASCAL split {split!r}; choose one of trn, val, test")
    if not root.is_dir():
        raise DataError(f"PF-PASCAL root folder not found: {root}")
    csv_path = _find_csv(root, split)
    images = root / "JPEGImages"
    if not images.is_dir():
        raise DataError(f"PF-PASCAL images folder not found: {images}")

    header, rows = read_csv_rows(csv_path, numeric_col=2)
    if header is not None and all(c in header for c in _NCNET_COLUMNS):
        cols = [header.index(c) for c in _NCNET_COLUMNS]
        pairs = [_ncnet_pair(csv_path, n, row, cols, images) for n, row in rows]
    else:
        annotations = root / "Annotations"
        if not annotations.is_dir():
            raise DataError(
                f"{csv_path} has no keypoint columns (XA,YA,XB,YB) and the annotations "
                f"folder {annotations} is missing"
            )
        mats = _MatReader(annotations)
        pairs = [_hpf_pair(csv_path, n, row, images, mats) for n, row in rows]
    if not pairs:
        raise DataError(f"PF-PASCAL pair file lists no pairs: {csv_path}")
    return Dataset(
        name="pfpascal",
        split=SPLITS[split][0],
        root=root,
        pairs=tuple(pairs),
        default_thres="img",
    )


def read_csv_rows(
    path: Path, numeric_col: int
) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """Rows of a pair CSV with their 1-based line numbers, blank rows skipped.

    The references read these files with ``pandas.read_csv`` (first line = header). We
    detect the header instead, so a header-less file does not silently lose its first pair:
    the first row is a header when its ``numeric_col`` cell is not a number.

    Returns:
        ``(header or None, [(line number, cells), ...])``.
    """
    try:
        # utf-8-sig: tolerate a BOM; newline="" lets csv handle CRLF files (one copy of
        # the NCNet test_pairs.csv circulates with CRLF endings).
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            rows = [(reader.line_num, [c.strip() for c in r]) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read CSV {path}: {e}") from e
    rows = [(n, r) for n, r in rows if any(r)]
    header = None
    if rows and not _is_number(rows[0][1][numeric_col] if len(rows[0][1]) > numeric_col else ""):
        header = rows.pop(0)[1]
    return header, rows


def test_split_rows(
    root: Path, split: str, *, label: str, csv_name: str
) -> tuple[Path, list[tuple[int, list[str]]]]:
    """The pair CSV of a benchmark that has only a ``test`` split (TSS, Caltech-101): its
    path and rows (:func:`read_csv_rows`, the class column numeric).

    Raises:
        DataError: another split, or the root folder or the CSV is missing or unreadable.
    """
    if split != "test":
        raise DataError(f"{label} has only a 'test' split, not {split!r}")
    if not root.is_dir():
        raise DataError(f"{label} root folder not found: {root}")
    csv_path = root / csv_name
    if not csv_path.is_file():
        raise DataError(f"{label} pair file not found: {csv_path}")
    return csv_path, read_csv_rows(csv_path, numeric_col=2)[1]


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _find_csv(root: Path, split: str) -> Path:
    tried = []
    for folder in (root, root / "image_pairs"):
        for stem in SPLITS[split]:
            p = folder / f"{stem}_pairs.csv"
            if p.is_file():
                return p
            tried.append(str(p))
    raise DataError(f"PF-PASCAL pair file not found; looked for {', '.join(tried)}")


def _common(csv_path: Path, n: int, row: list[str], images: Path) -> tuple[str, str, Path, Path]:
    """``(pair id, category, src path, trg path)`` from the columns both layouts share."""
    if len(row) < 3:
        raise DataError(f"{csv_path}:{n}: expected at least 3 columns, got {len(row)}")
    try:
        cls = int(row[2])
    except ValueError:
        raise DataError(f"{csv_path}:{n}: class id {row[2]!r} is not an integer") from None
    if not 1 <= cls <= len(CLASSES):
        raise DataError(f"{csv_path}:{n}: class id {cls} is outside 1..{len(CLASSES)}")
    # CSV paths look like PF-dataset-PASCAL/JPEGImages/2011_001407.jpg; only the name counts.
    src, trg = (PurePosixPath(p.replace("\\", "/")).name for p in row[:2])
    if not src or not trg:
        raise DataError(f"{csv_path}:{n}: empty image path")
    # The CSV line number keeps ids unique and stable even if a pair is listed twice.
    pair_id = f"{n:05d}-{Path(src).stem}-{Path(trg).stem}"
    return pair_id, CLASSES[cls - 1], images / src, images / trg


def _ncnet_pair(csv_path: Path, n: int, row: list[str], cols: list[int], images: Path) -> Pair:
    pair_id, category, src_path, trg_path = _common(csv_path, n, row, images)
    if len(row) <= max(cols):
        raise DataError(f"{csv_path}:{n}: expected {max(cols) + 1} columns, got {len(row)}")
    xa, ya, xb, yb = (_coords(csv_path, n, name, row[c]) for name, c in zip(_NCNET_COLUMNS, cols))
    counts = "/".join(str(len(v)) for v in (xa, ya, xb, yb))
    if not len(xa) == len(ya) == len(xb) == len(yb):
        raise DataError(f"{csv_path}:{n}: mismatched keypoint counts XA/YA/XB/YB = {counts}")
    pair = _visible_pair(pair_id, category, src_path, trg_path,
                         np.stack([xa, ya], 1), np.stack([xb, yb], 1))
    return _checked(pair, f"{csv_path}:{n}")


def _coords(csv_path: Path, n: int, name: str, cell: str) -> np.ndarray:
    """``'253.6;234.3;288.3'`` -> float array; an empty cell is zero keypoints."""
    if not cell:
        return np.zeros(0)
    try:
        return np.array([float(v) for v in cell.split(";")], dtype=np.float64)
    except ValueError:
        raise DataError(f"{csv_path}:{n}: column {name} has a non-numeric value") from None


def _hpf_pair(csv_path: Path, n: int, row: list[str], images: Path, mats: _MatReader) -> Pair:
    # Column 3 (flip, trn only) is a training augmentation and is ignored here.
    pair_id, category, src_path, trg_path = _common(csv_path, n, row, images)
    src_kps, src_bbox, src_mat = mats.read(category, src_path.stem)
    trg_kps, trg_bbox, trg_mat = mats.read(category, trg_path.stem)
    if src_kps.shape != trg_kps.shape:
        raise DataError(
            f"{csv_path}:{n}: {src_mat} has {len(src_kps)} keypoints but {trg_mat} has "
            f"{len(trg_kps)}"
        )
    pair = _visible_pair(pair_id, category, src_path, trg_path, src_kps, trg_kps,
                         src_bbox=src_bbox, trg_bbox=trg_bbox)
    return _checked(pair, f"{csv_path}:{n}")


def _visible_pair(
    pair_id: str, category: str, src_path: Path, trg_path: Path,
    src_kps: np.ndarray, trg_kps: np.ndarray,
    src_bbox: np.ndarray | None = None, trg_bbox: np.ndarray | None = None,
) -> Pair:
    # NaN marks a part invisible in that image; keep the parts visible in both, in order.
    # Only NaN: an infinite coordinate is a damaged file, not an invisible part, and is left
    # for check_pair to refuse. PF-PASCAL's PCK threshold is the image size (both references).
    keep = ~np.isnan(src_kps).any(1) & ~np.isnan(trg_kps).any(1)
    return Pair(
        pair_id=pair_id, category=category, src_path=src_path, trg_path=trg_path,
        src_kps=src_kps[keep], trg_kps=trg_kps[keep], src_bbox=src_bbox, trg_bbox=trg_bbox,
        thres_kind="img",
    )


def _checked(pair: Pair, where: str) -> Pair:
    try:
        return check_pair(pair)
    except DataError as e:
        raise DataError(f"{where}: {e}") from None


class _MatReader:
    """Reads ``Annotations/<class>/<name>.mat`` once per image (images recur across pairs)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._cache: dict[Path, tuple[np.ndarray, np.ndarray]] = {}

    def read(self, category: str, stem: str) -> tuple[np.ndarray, np.ndarray, Path]:
        """``(kps [K x 2], bbox [4], path)``; kps may hold NaN rows."""
        path = self.folder / category / f"{stem}.mat"
        if path not in self._cache:
            self._cache[path] = self._load(path)
        kps, bbox = self._cache[path]
        return kps, bbox, path

    @staticmethod
    def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
        if not path.is_file():
            raise DataError(f"PF-PASCAL annotation not found: {path}")
        try:
            mat = scipy.io.loadmat(str(path))
        except Exception as e:  # scipy raises ValueError, TypeError, OSError, MatReadError...
            msg = " ".join(str(e).split()) or type(e).__name__
            raise DataError(f"{path}: not a readable .mat file ({msg})") from e
        out = []
        for key, want in (("kps", "K x 2"), ("bbox", "1 x 4")):
            if key not in mat:
                raise DataError(f"{path}: missing variable {key!r}")
            try:
                a = np.asarray(mat[key], dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError(f"{path}: variable {key!r} is not numeric") from None
            if key == "kps":
                # MATLAB saves an empty matrix as 0 x 0.
                a = a.reshape(0, 2) if a.size == 0 else a
                ok = a.ndim == 2 and a.shape[1] == 2
            else:
                a = a.reshape(-1) if a.size == 4 else a
                ok = a.shape == (4,) and bool(np.isfinite(a).all())
            if not ok:
                raise DataError(f"{path}: variable {key!r} must be {want}, got shape {a.shape}")
            out.append(a)
        return out[0], out[1]
