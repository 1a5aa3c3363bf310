"""TSS reader (reference-behaviour.md §9.4): dense ground-truth flow, SCOT only.

Layout under ``root`` (the ``TSS`` folder; SCOT's ``Datasets_SCOT/TSS``)::

    test_pairs_tss.csv                 one row per pair (see below)
    FG3DCar/<pair>/image1.png          the three groups, one folder per image pair
    FG3DCar/<pair>/image2.png
    FG3DCar/<pair>/flow1.flo           ground-truth flow defined on image1's pixels
    FG3DCar/<pair>/flow2.flo           ... and on image2's
    FG3DCar/<pair>/mask1.png           foreground masks of image1 and image2
    JODS/<pair>/...  PASCAL/<pair>/...

Where each fact comes from:

* CSV columns by position (imageA, imageB, flow direction int, flip_img_A int, category
  int), paths relative to the TSS folder, the GT flow ``<dir of imageA>/flow<dir>.flo``,
  the horizontal flip of image A, grey images repeated to three channels, a single test
  split: SCOT's ``data/tss_dataset.py`` and ``evaluate_map_TSS_CAM.py`` (§9.4). SCOT reads
  the CSV with ``pandas.read_csv``, i.e. its first line is a header; like the PF readers we
  detect the header (the first row is one when its direction cell is not a number), so a
  header-less file does not lose its first pair.
* ``flow<k>.flo`` lives on the pixels of ``image<k>.png`` and points into the other image,
  and ``mask<k>.png`` is the foreground of ``image<k>.png``: GLU-Net/DenseMatching's TSS
  loader (PruneTruong/DenseMatching ``datasets/semantic_matching_datasets/tss.py``) pairs
  source image1 / target image2 with ``flow2.flo`` and takes the mask with the flow's
  number. SCOT predicts the flow on image B's pixels into image A, so image B is the
  target here: its mask is ``mask<dir>.png`` next to the flow file.
* The three groups FG3DCar, JODS and PASCAL: the SCOT paper (§4.1, Table 5) and
  DenseMatching's loader (the folder names).

Decisions of ours (not fixed by any source we found):

* A pair's group (its ``category``) is the first component of image A's path that names
  one of the three groups, else the path's first component. The CSV's integer category is
  checked to be an integer but not interpreted: no source documents its coding.
* The flip column must be 0 or 1, the direction a positive integer.
* The flow files' headers (magic number, size) and the masks' presence are checked when
  the split is read, so a damaged copy fails at once, naming the file.
* For a flipped pair the ground truth is taken to be in the *flipped* image A's pixels:
  SCOT writes its flow against the flipped image and the TSS kit scores that file as is.
"""

from __future__ import annotations

from pathlib import Path
from pathlib import PurePosixPath

import numpy as np
from PIL import Image

from scotsearch.data.flo import check_flo_header
from scotsearch.data.pairs import Dataset
from scotsearch.data.pairs import Pair
from scotsearch.data.pfpascal import test_split_rows
from scotsearch.errors import DataError


#: The TSS groups, in the order of the SCOT paper's Table 5.
GROUPS = ("FG3DCar", "JODS", "PASCAL")

#: The pair list's file name in the TSS folder.
CSV_NAME = "test_pairs_tss.csv"

_N_COLS = 5


def read_tss(root: Path, split: str = "test") -> Dataset:
    """Read TSS (a single ``test`` split).

    Args:
        root: the ``TSS`` folder.
        split: must be ``test``.

    Returns:
        Pairs in CSV order, without keypoints; each carries its flow file, the target's
        mask and the flip flag. Threshold basis ``img`` (of the flow's source image A).

    Raises:
        DataError: another split, or a missing or malformed CSV, row, flow file or mask.
    """
    root = Path(root)
    csv_path, rows = test_split_rows(root, split, label="TSS", csv_name=CSV_NAME)
    pairs = [_make_pair(f"{csv_path}:{n}", n, row, root) for n, row in rows]
    if not pairs:
        raise DataError(f"TSS pair file lists no pairs: {csv_path}")
    checked: set[Path] = set()
    for p in pairs:
        assert p.flow_path is not None and p.trg_mask_path is not None
        if p.flow_path not in checked:
            check_flo_header(p.flow_path)
            checked.add(p.flow_path)
        if not p.trg_mask_path.is_file():
            raise DataError(f"TSS foreground mask not found: {p.trg_mask_path}")
    return Dataset(name="tss", split="test", root=root, pairs=tuple(pairs), default_thres="img")


def _make_pair(where: str, n: int, row: list[str], root: Path) -> Pair:
    if len(row) < _N_COLS:
        raise DataError(f"{where}: expected {_N_COLS} columns (imageA, imageB, flow direction, "
                        f"flip_img_A, category), got {len(row)}")
    a_rel, b_rel = (_relative(where, p) for p in row[:2])
    direction, flip, _category = (_integer(where, name, v) for name, v in
                                  zip(("flow direction", "flip_img_A", "category"), row[2:5]))
    if direction < 1:
        raise DataError(f"{where}: flow direction must be a positive integer, got {direction}")
    if flip not in (0, 1):
        raise DataError(f"{where}: flip_img_A must be 0 or 1, got {flip}")
    folder = root.joinpath(*a_rel.parent.parts)
    group = next((part for part in a_rel.parts[:-1] if part in GROUPS), a_rel.parts[0])
    empty = np.zeros((0, 2))
    return Pair(
        pair_id=f"{n:04d}-{a_rel.parent.name}-flow{direction}",
        category=group,
        src_path=root.joinpath(*a_rel.parts),
        trg_path=root.joinpath(*b_rel.parts),
        src_kps=empty,
        trg_kps=empty.copy(),
        thres_kind="img",
        flow_path=folder / f"flow{direction}.flo",
        trg_mask_path=folder / f"mask{direction}.png",
        flip_src=bool(flip),
    )


def _relative(where: str, path: str) -> PurePosixPath:
    rel = PurePosixPath(path.replace("\\", "/"))
    if not path or rel.is_absolute() or ".." in rel.parts or len(rel.parts) < 2:
        raise DataError(f"{where}: image path {path!r} is not '<group>/<pair>/<file>' "
                        "relative to the TSS folder")
    return rel


def _integer(where: str, name: str, value: str) -> int:
    try:
        number = float(value)
    except ValueError:
        raise DataError(f"{where}: {name} must be an integer, got {value!r}") from None
    if not number.is_integer():
        raise DataError(f"{where}: {name} must be an integer, got {value!r}")
    return int(number)


def flow_relpath(pair: Pair, root: Path) -> Path:
    """The pair's flow file relative to the TSS folder: where SCOT writes its own result
    (``TSS/result_CAM/<this>``), and where ``--flo-dir`` puts ours."""
    if pair.flow_path is None:
        raise DataError(f"pair {pair.pair_id} has no flow file (not a TSS pair)")
    return Path(pair.flow_path).relative_to(root)


def read_mask(path: Path) -> np.ndarray:
    """A TSS foreground mask as bool ``[H x W]``: grey level above 127 (the masks are 0/255;
    DenseMatching keeps 255 only, which is the same on such masks; the cut is our choice).

    Raises:
        DataError: the file is missing or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"TSS foreground mask not found: {path}")
    try:
        with Image.open(path) as img:
            grey = np.asarray(img.convert("L"))
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot decode TSS foreground mask {path}: {e}") from e
    return grey > 127
