"""Dataset readers and image decoding.

The readers run on real annotation files from ``shared/data`` (SPair-71k pair JSONs, the
NCNet PF-PASCAL pair CSVs) laid out in a temporary dataset tree; expected values were read
by hand from those files. No image of the real benchmarks is available, so images are small
generated files of the annotated size. Tests needing the real files skip without them.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from scotsearch.data import DEFAULT_DEMO_ROOT
from scotsearch.data import check_keypoints_inside
from scotsearch.data import image_size
from scotsearch.data import load_dataset
from scotsearch.data import load_image
from scotsearch.data import read_pfpascal
from scotsearch.data import read_pfwillow
from scotsearch.data import read_spair
from scotsearch.data import threshold_base
from scotsearch.data.pfpascal import CLASSES
from scotsearch.errors import ConfigError
from scotsearch.errors import DataError


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SPAIR_SRC = SHARED / "spair71k-annotation-sample" / "SPair-71k"
PFP_SRC = SHARED / "pf-pascal-pairs-ncnet" / "image_pairs"
FCN_MASKS = SHARED / "scot-fcn-masks" / "Datasets_SCOT" / "PF-PASCAL-FCN"

needs_spair = pytest.mark.skipif(not SPAIR_SRC.is_dir(), reason=f"no real files at {SPAIR_SRC}")
needs_pfp = pytest.mark.skipif(not PFP_SRC.is_dir(), reason=f"no real files at {PFP_SRC}")

AEROPLANE = "000001-2008_002719-2008_004100:aeroplane"
BICYCLE = "000718-2008_002515-2008_003395:bicycle"


def raises_data_error(fn, *args, names: tuple[str, ...] = (), match: str = "") -> str:
    """Call ``fn``; assert a one-line DataError that names every string in ``names``."""
    with pytest.raises(DataError) as info:
        fn(*args)
    msg = str(info.value)
    assert "\n" not in msg
    for name in names:
        assert name in msg, f"{name!r} not in {msg!r}"
    assert match in msg, f"{match!r} not in {msg!r}"
    return msg


# ----------------------------------------------------------------------------- SPair-71k


@pytest.fixture
def spair_root(tmp_path: Path) -> Path:
    """SPair-71k layout holding the 7 real test JSONs; no images, no Segmentation/."""
    if not SPAIR_SRC.is_dir():
        pytest.skip(f"no real files at {SPAIR_SRC}")
    root = tmp_path / "SPair-71k"
    ann = root / "PairAnnotation" / "test"
    ann.mkdir(parents=True)
    names = sorted(p.stem for p in (SPAIR_SRC / "PairAnnotation" / "test").glob("*.json"))
    for name in names:
        shutil.copy(SPAIR_SRC / "PairAnnotation" / "test" / f"{name}.json", ann)
        (root / "JPEGImages" / name.rsplit(":", 1)[1]).mkdir(parents=True, exist_ok=True)
    layout = root / "Layout" / "large"
    layout.mkdir(parents=True)
    # The official files end with an empty line; a blank line in the middle is skipped too.
    lines = names[:3] + [""] + names[3:]
    (layout / "test.txt").write_text("\n".join(lines) + "\n\n")
    return root


def edit_json(root: Path, name: str, **changes) -> Path:
    path = root / "PairAnnotation" / "test" / f"{name}.json"
    ann = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del ann[key]
        else:
            ann[key] = value
    path.write_text(json.dumps(ann))
    return path


def test_spair_reads_real_pairs(spair_root: Path) -> None:
    ds = read_spair(spair_root, "test")
    assert (ds.name, ds.split, ds.default_thres, ds.default_exp2) == ("spair", "test", "bbox", 1.0)
    assert len(ds.pairs) == 7
    assert ds.categories == ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car"]
    assert [p.pair_id for p in ds.pairs][:2] == [AEROPLANE, BICYCLE]  # layout order

    p = ds.pairs[0]
    assert p.category == "aeroplane"
    assert p.src_path == spair_root / "JPEGImages" / "aeroplane" / "2008_002719.jpg"
    assert p.trg_path == spair_root / "JPEGImages" / "aeroplane" / "2008_004100.jpg"
    assert p.n_kps == 3
    np.testing.assert_array_equal(p.src_kps, [[212, 153], [300, 130], [330, 127]])
    np.testing.assert_array_equal(p.trg_kps, [[39, 145], [364, 171], [416, 173]])
    np.testing.assert_array_equal(p.src_bbox, [210, 34, 475, 250])
    np.testing.assert_array_equal(p.trg_bbox, [36, 92, 500, 200])
    assert p.src_kps.dtype == np.float64 and p.src_kps.shape == (3, 2)
    assert (p.src_size, p.trg_size) == ((500, 333), (500, 332))
    assert p.thres_kind == "bbox"
    assert p.variation == {
        "viewpoint_variation": 0, "scale_variation": 0, "truncation": 2, "occlusion": 2,
    }  # fmt: skip
    # 'bbox' threshold: longer side of the target box, 500 - 36.
    assert threshold_base(p, "bbox", (500, 332)) == 464.0

    b = ds.pairs[1]
    assert b.n_kps == 2 and b.trg_size == (375, 500)
    assert b.variation == {
        "viewpoint_variation": 0, "scale_variation": 2, "truncation": 1, "occlusion": 3,
    }  # fmt: skip
    counts = {p.category: p.n_kps for p in ds.pairs}
    assert counts == {"aeroplane": 3, "bicycle": 2, "bird": 6, "boat": 5, "bottle": 10,
                      "bus": 6, "car": 5}  # fmt: skip


def test_spair_imsize_is_width_height(spair_root: Path) -> None:
    """Every keypoint and box fits the (W, H) read from ``*_imsize``; swapped, some do not."""
    ds = read_spair(spair_root, "test")
    for p in ds.pairs:
        check_keypoints_inside(p, p.src_size, p.trg_size)
        for box, (w, h) in ((p.src_bbox, p.src_size), (p.trg_bbox, p.trg_size)):
            assert box[2] <= w and box[3] <= h
    bicycle = ds.pairs[1]  # target is portrait, [375, 500, 3], with a keypoint at y = 452
    with pytest.raises(DataError, match="outside"):
        check_keypoints_inside(bicycle, bicycle.src_size, bicycle.trg_size[::-1])


@needs_spair
def test_spair_agrees_with_image_annotation(spair_root: Path) -> None:
    """The pair keypoints are the ImageAnnotation keypoints selected by ``kps_ids``."""
    img_ann = json.loads((SPAIR_SRC / "ImageAnnotation/aeroplane/2008_002719.json").read_text())
    pair_ann = json.loads((spair_root / "PairAnnotation/test" / f"{AEROPLANE}.json").read_text())
    p = read_spair(spair_root, "test").pairs[0]
    expected = [img_ann["kps"][i] for i in pair_ann["kps_ids"]]
    np.testing.assert_array_equal(p.src_kps, expected)
    np.testing.assert_array_equal(p.src_bbox, img_ann["bndbox"])
    assert p.src_size == (img_ann["image_width"], img_ann["image_height"])


def test_spair_train_alias_and_decoding(spair_root: Path) -> None:
    (spair_root / "PairAnnotation" / "trn").mkdir()
    shutil.copy(spair_root / "PairAnnotation" / "test" / f"{AEROPLANE}.json",
                spair_root / "PairAnnotation" / "trn")  # fmt: skip
    (spair_root / "Layout" / "large" / "trn.txt").write_text(AEROPLANE + "\n")
    ds = read_spair(spair_root, "train")
    assert ds.split == "trn" and len(ds.pairs) == 1
    p = ds.pairs[0]
    Image.new("RGB", p.src_size, (1, 2, 3)).save(p.src_path)
    img = load_image(p.src_path)
    assert img.shape == (3, 333, 500) and img.dtype == torch.uint8
    assert image_size(p.src_path) == p.src_size
    # A missing image is reported when decoded, naming the file.
    raises_data_error(load_image, p.trg_path, names=(str(p.trg_path),))


def test_spair_missing_files(spair_root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    raises_data_error(read_spair, missing, "test", names=(str(missing),))
    raises_data_error(read_spair, spair_root, "val", names=("val.txt",))
    raises_data_error(read_spair, spair_root, "dev", match="trn, val, test")
    (spair_root / "PairAnnotation" / "test" / f"{BICYCLE}.json").unlink()
    raises_data_error(read_spair, spair_root, "test", names=(f"{BICYCLE}.json",))
    shutil.rmtree(spair_root / "JPEGImages")
    raises_data_error(read_spair, spair_root, "test", names=("JPEGImages",))


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"trg_kps": None}, "missing field 'trg_kps'"),
        ({"trg_kps": [[39, 145], [364, 171]]}, "3 source keypoints but 2 target"),
        ({"src_kps": [], "trg_kps": []}, "no keypoint"),
        ({"src_kps": [[212, "a"], [300, 130], [330, 127]]}, "not a numeric array"),
        ({"src_kps": [[212, None], [300, 130], [330, 127]]}, "non-finite"),
        ({"src_kps": [[1, 2, 3]]}, "must be K x 2"),
        ({"trg_bndbox": [36, 92, 500]}, "'trg_bndbox' must be 4"),
        ({"truncation": 7}, "'truncation' must be an integer in 0..3"),
        ({"src_imsize": "500x333"}, "'src_imsize'"),
        ({"src_imname": "2009_000001.jpg"}, "split file says"),
    ],
)
def test_spair_malformed_json(spair_root: Path, changes: dict, match: str) -> None:
    path = edit_json(spair_root, AEROPLANE, **changes)
    raises_data_error(read_spair, spair_root, "test", names=(path.name,), match=match)


def test_spair_malformed_files(spair_root: Path) -> None:
    path = spair_root / "PairAnnotation" / "test" / f"{BICYCLE}.json"
    path.write_text(path.read_text()[:-20])  # truncated JSON
    raises_data_error(read_spair, spair_root, "test", names=(path.name,), match="malformed JSON")
    layout = spair_root / "Layout" / "large" / "test.txt"
    layout.write_text(f"{AEROPLANE}\n2008_002719-2008_004100\n")
    raises_data_error(read_spair, spair_root, "test", names=(f"{layout}:2",))


def test_spair_optional_fields_absent(spair_root: Path) -> None:
    """Only keypoints and boxes are required (e.g. for a generated dataset)."""
    edit_json(spair_root, AEROPLANE, src_imsize=None, trg_imsize=None, occlusion=None)
    p = read_spair(spair_root, "test").pairs[0]
    assert p.src_size is None and "occlusion" not in p.variation and len(p.variation) == 3


# ----------------------------------------------------------------------------- PF-PASCAL


def ncnet_rows(name: str = "test_pairs.csv") -> list[list[str]]:
    """Data rows (no header) of a real NCNet pair CSV."""
    with open(PFP_SRC / name, newline="") as f:
        return list(csv.reader(f))[1:]


@pytest.fixture
def ncnet_root(tmp_path: Path) -> Path:
    """PF-PASCAL root with the real NCNet ``image_pairs/`` CSVs and an empty image folder."""
    if not PFP_SRC.is_dir():
        pytest.skip(f"no real files at {PFP_SRC}")
    root = tmp_path / "PF-PASCAL"
    shutil.copytree(PFP_SRC, root / "image_pairs")
    (root / "JPEGImages").mkdir()
    return root


def test_pfpascal_ncnet_layout(ncnet_root: Path) -> None:
    ds = read_pfpascal(ncnet_root, "test")
    assert (ds.name, ds.split, ds.default_thres) == ("pfpascal", "test", "img")
    assert ds.default_exp2 == 0.5
    assert len(ds.pairs) == 299
    assert len(ds.image_paths()) == 506
    p = ds.pairs[0]
    assert p.category == "aeroplane" and p.thres_kind == "img"
    assert p.src_path == ncnet_root / "JPEGImages" / "2011_001407.jpg"
    assert p.trg_path == ncnet_root / "JPEGImages" / "2010_004184.jpg"
    assert p.n_kps == 11
    np.testing.assert_allclose(p.src_kps[0], [253.631662222222, 58.1813333333333])
    np.testing.assert_allclose(p.trg_kps[0], [272.801888, 65.2755428571429])
    np.testing.assert_allclose(p.trg_kps[-1], [231.41072, 86.1214285714286])
    assert p.src_bbox is None and p.trg_bbox is None
    last = ds.pairs[-1]
    assert last.category == "tvmonitor" and last.n_kps == 4
    # Keypoint count of every pair = number of ';'-separated values in its XA cell.
    assert [q.n_kps for q in ds.pairs] == [len(r[3].split(";")) for r in ncnet_rows()]
    assert sum(q.category == "aeroplane" for q in ds.pairs) == 15
    assert len({q.pair_id for q in ds.pairs}) == 299
    # The NCNet layout has no boxes: the 'bbox' threshold says so; 'img' works.
    raises_data_error(threshold_base, p, "bbox", (500, 375), match="no target box")
    assert threshold_base(p, "img", (500, 375)) == 500.0


@pytest.mark.skipif(not FCN_MASKS.is_dir(), reason=f"no real files at {FCN_MASKS}")
def test_pfpascal_test_images_match_scot_masks(ncnet_root: Path) -> None:
    """SCOT ships one FCN mask per PF-PASCAL test image: the same 506 names."""
    stems = {p.stem for p in read_pfpascal(ncnet_root, "test").image_paths()}
    assert stems == {p.stem for p in FCN_MASKS.glob("*.jpg")}


def test_pfpascal_ncnet_csv_at_root(ncnet_root: Path) -> None:
    shutil.move(ncnet_root / "image_pairs" / "test_pairs.csv", ncnet_root / "test_pairs.csv")
    assert len(read_pfpascal(ncnet_root, "test").pairs) == 299


def test_pfpascal_ncnet_splits_without_keypoints_need_annotations(ncnet_root: Path) -> None:
    # The NCNet val/train CSVs carry no keypoints: they are HPF-style and need Annotations/.
    raises_data_error(read_pfpascal, ncnet_root, "val", names=("val_pairs.csv", "Annotations"))
    raises_data_error(read_pfpascal, ncnet_root, "trn", names=("train_pairs.csv",))


def write_mat(path: Path, kps: np.ndarray, bbox: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"kps": kps, "bbox": np.array([bbox], dtype=np.float64)})


@pytest.fixture
def hpf_root(tmp_path: Path) -> tuple[Path, list[list[str]]]:
    """HPF layout built from real NCNet test rows whose images occur once each.

    Each ``.mat`` gets two extra keypoint rows that are NaN in one image of the pair (one
    of them only in x), so the reader must drop exactly those and keep the real ones in order.
    """
    if not PFP_SRC.is_dir():
        pytest.skip(f"no real files at {PFP_SRC}")
    root = tmp_path / "PF-PASCAL"
    (root / "JPEGImages").mkdir(parents=True)
    seen: set[str] = set()
    rows = []
    for r in ncnet_rows():
        if r[0] in seen or r[1] in seen:
            continue
        seen.update(r[:2])
        rows.append(r)
        if len(rows) == 25:
            break
    with open(root / "test_pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source_image", "target_image", "class"])
        for r in rows:
            w.writerow(r[:3])
            xa, ya, xb, yb = (np.array(c.split(";"), dtype=float) for c in r[3:7])
            src, trg = np.stack([xa, ya], 1), np.stack([xb, yb], 1)
            src = np.vstack([src[:1], [[np.nan, 5.0]], src[1:], [[1.0, 2.0]]])
            trg = np.vstack([trg[:1], [[3.0, 4.0]], trg[1:], [[np.nan, np.nan]]])
            cls = CLASSES[int(r[2]) - 1]
            for p, k in ((r[0], src), (r[1], trg)):
                x1, y1 = np.nanmin(k, 0)
                mat = root / "Annotations" / cls / f"{Path(p).stem}.mat"
                write_mat(mat, k, [x1, y1, 400, 300])
    return root, rows


def test_pfpascal_hpf_layout(hpf_root: tuple[Path, list[list[str]]]) -> None:
    root, rows = hpf_root
    ds = read_pfpascal(root, "test")
    assert len(ds.pairs) == len(rows) == 25
    for p, r in zip(ds.pairs, rows):
        xa, ya, xb, yb = (np.array(c.split(";"), dtype=float) for c in r[3:7])
        np.testing.assert_array_equal(p.src_kps, np.stack([xa, ya], 1))
        np.testing.assert_array_equal(p.trg_kps, np.stack([xb, yb], 1))
        assert p.category == CLASSES[int(r[2]) - 1]
        assert p.trg_bbox.shape == (4,) and p.trg_bbox[2:].tolist() == [400, 300]
    p = ds.pairs[0]
    assert threshold_base(p, "bbox", (500, 375)) == max(400 - p.trg_bbox[0], 300 - p.trg_bbox[1])


@needs_pfp
def test_pfpascal_hpf_real_val_csv(tmp_path: Path) -> None:
    """The real val CSV (header ``source_image,target_image,class,flip``) has 308 pairs."""
    root = tmp_path / "PF-PASCAL"
    (root / "JPEGImages").mkdir(parents=True)
    shutil.copy(PFP_SRC / "val_pairs.csv", root)
    kps = np.array([[10.0, 20.0], [np.nan, np.nan], [30.0, 40.0]])
    for r in ncnet_rows("val_pairs.csv"):
        for p in r[:2]:
            write_mat(root / "Annotations" / CLASSES[int(r[2]) - 1] / f"{Path(p).stem}.mat",
                      kps, [1, 2, 50, 60])  # fmt: skip
    ds = read_pfpascal(root, "val")
    assert len(ds.pairs) == 308 and ds.split == "val"
    assert [p.category for p in ds.pairs[:2]] == ["cat", "pottedplant"]  # class ids 8, 16
    assert all(p.n_kps == 2 for p in ds.pairs)
    np.testing.assert_array_equal(ds.pairs[0].src_bbox, [1, 2, 50, 60])


def test_pfpascal_missing_files(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    raises_data_error(read_pfpascal, missing, "test", names=(str(missing),))
    raises_data_error(read_pfpascal, tmp_path, "dev", match="trn, val, test")
    # Neither layout: the message lists what was looked for.
    raises_data_error(
        read_pfpascal, tmp_path, "test",
        names=(str(tmp_path / "test_pairs.csv"), str(tmp_path / "image_pairs" / "test_pairs.csv")),
    )  # fmt: skip
    (tmp_path / "test_pairs.csv").write_text("source_image,target_image,class\na.jpg,b.jpg,1\n")
    raises_data_error(read_pfpascal, tmp_path, "test", names=("JPEGImages",))
    (tmp_path / "JPEGImages").mkdir()
    raises_data_error(read_pfpascal, tmp_path, "test", names=("Annotations",))
    (tmp_path / "Annotations").mkdir()
    raises_data_error(read_pfpascal, tmp_path, "test", names=("aeroplane/a.mat",))


def ncnet_csv(root: Path, *rows: str) -> Path:
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    path = root / "test_pairs.csv"
    path.write_text("source_image,target_image,class,XA,YA,XB,YB\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(
    "row, match",
    [
        ("x/a.jpg,x/b.jpg,abc,1;2,3;4,5;6,7;8", "class id 'abc'"),
        ("x/a.jpg,x/b.jpg,21,1;2,3;4,5;6,7;8", "class id 21 is outside 1..20"),
        ("x/a.jpg,x/b.jpg,1,1;2,3;4,5;6", "expected 7 columns"),
        ("x/a.jpg,x/b.jpg,1,1;2,3;oops,5;6,7;8", "column YA has a non-numeric value"),
        ("x/a.jpg,x/b.jpg,1,1;2,3;4,5;6,7", "mismatched keypoint counts XA/YA/XB/YB = 2/2/2/1"),
        ("x/a.jpg,x/b.jpg,1,nan;nan,3;4,5;6,7;8", "no keypoint"),
        ("x/a.jpg,x/b.jpg,1,,,,", "no keypoint"),
    ],
)
def test_pfpascal_bad_ncnet_row(tmp_path: Path, row: str, match: str) -> None:
    path = ncnet_csv(tmp_path, "x/c.jpg,x/d.jpg,2,1,2,3,4", row)
    raises_data_error(read_pfpascal, tmp_path, "test", names=(f"{path}:3",), match=match)


def test_pfpascal_ncnet_drops_partial_keypoints(tmp_path: Path) -> None:
    ncnet_csv(tmp_path, "x/a.jpg,x/b.jpg,3,1;nan;5,2;3;6,7;8;9,nan;1;2")
    p = read_pfpascal(tmp_path, "test").pairs[0]
    assert p.category == "bird"
    np.testing.assert_array_equal(p.src_kps, [[5, 6]])
    np.testing.assert_array_equal(p.trg_kps, [[9, 2]])


def hpf_tree(root: Path, src: dict | None = None, trg: dict | None = None) -> Path:
    """One-pair HPF tree; ``src``/``trg`` replace the .mat contents when given."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "test_pairs.csv").write_text("source_image,target_image,class\na.jpg,b.jpg,5\n")
    good = {"kps": np.array([[1.0, 2.0], [3.0, 4.0]]), "bbox": np.array([[0.0, 0, 9, 9]])}
    folder = root / "Annotations" / "bottle"
    folder.mkdir(parents=True)
    scipy.io.savemat(str(folder / "a.mat"), src if src is not None else good)
    scipy.io.savemat(str(folder / "b.mat"), trg if trg is not None else good)
    return folder


@pytest.mark.parametrize(
    "trg, match",
    [
        ({"kps": np.ones((2, 2))}, "missing variable 'bbox'"),
        ({"bbox": np.ones((1, 4))}, "missing variable 'kps'"),
        ({"kps": np.ones((2, 3)), "bbox": np.ones((1, 4))}, "'kps' must be K x 2"),
        ({"kps": np.ones((2, 2)), "bbox": np.ones((1, 3))}, "'bbox' must be 1 x 4"),
        ({"kps": np.array(["ab", "cd"]), "bbox": np.ones((1, 4))}, "'kps' is not numeric"),
    ],
)
def test_pfpascal_bad_mat(tmp_path: Path, trg: dict, match: str) -> None:
    folder = hpf_tree(tmp_path, trg=trg)
    raises_data_error(read_pfpascal, tmp_path, "test", names=(str(folder / "b.mat"),), match=match)


def test_pfpascal_bad_mat_pairs(tmp_path: Path) -> None:
    bbox = np.array([[0.0, 0, 9, 9]])
    folder = hpf_tree(tmp_path, trg={"kps": np.ones((3, 2)), "bbox": bbox})
    raises_data_error(read_pfpascal, tmp_path, "test", names=("a.mat", "b.mat"), match="has 3")
    shutil.rmtree(tmp_path)
    folder = hpf_tree(tmp_path, trg={"kps": np.full((2, 2), np.nan), "bbox": bbox})
    raises_data_error(
        read_pfpascal, tmp_path, "test", names=(f"{tmp_path / 'test_pairs.csv'}:2",),
        match="no keypoint",
    )  # fmt: skip
    (folder / "b.mat").write_bytes(b"not a mat file at all")
    raises_data_error(read_pfpascal, tmp_path, "test", names=(str(folder / "b.mat"),))


# ----------------------------------------------------------------------------- PF-WILLOW


def willow_row(src: str, trg: str, sx: list, sy: list, tx: list, ty: list) -> list:
    return [src, trg, *sx, *sy, *tx, *ty]


@pytest.fixture
def willow_root(tmp_path: Path) -> Path:
    root = tmp_path / "PF-WILLOW"
    for cls in ("car(G)", "duck(S)"):
        (root / cls).mkdir(parents=True)
    coords = [f"{a}{i}" for a in ("XA", "YA", "XB", "YB") for i in range(1, 11)]
    header = ["imageA", "imageB", *coords]
    xs = list(range(10, 110, 10))  # 10..100
    ys = list(range(5, 55, 5))  # 5..50
    rows = [
        willow_row("PF-dataset/car(G)/Cars_006a.png", "PF-dataset/car(G)/Cars_007a.png",
                   xs, ys, [x + 1 for x in xs], [y * 2 for y in ys]),
        willow_row("PF-dataset/duck(S)/Duck_001.png", "PF-dataset/duck(S)/Duck_002.png",
                   ys, xs, xs, ys),
    ]  # fmt: skip
    with open(root / "test_pairs.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return root


def test_pfwillow_reads(willow_root: Path) -> None:
    ds = read_pfwillow(willow_root)
    assert (ds.name, ds.split, ds.default_thres) == ("pfwillow", "test", "kps")
    assert ds.default_exp2 == 0.5
    assert len(ds.pairs) == 2 and ds.categories == ["car(G)", "duck(S)"]
    p = ds.pairs[0]
    assert p.category == "car(G)" and p.thres_kind == "kps" and p.n_kps == 10
    assert p.src_path == willow_root / "car(G)" / "Cars_006a.png"  # 'PF-dataset/' dropped
    assert p.trg_path == willow_root / "car(G)" / "Cars_007a.png"
    # Columns are x1..x10 then y1..y10, not interleaved.
    np.testing.assert_array_equal(p.src_kps[0], [10, 5])
    np.testing.assert_array_equal(p.src_kps[9], [100, 50])
    np.testing.assert_array_equal(p.trg_kps[1], [21, 20])
    np.testing.assert_array_equal(p.src_bbox, [10, 5, 100, 50])
    np.testing.assert_array_equal(p.trg_bbox, [11, 10, 101, 100])
    # The 'kps' threshold is the target keypoints' longer extent.
    assert threshold_base(p, "kps", (640, 480)) == 90.0
    assert threshold_base(p, "bbox", (640, 480)) == 90.0


def test_pfwillow_errors(willow_root: Path, tmp_path: Path) -> None:
    raises_data_error(read_pfwillow, willow_root, "val", match="only a 'test' split")
    missing = tmp_path / "nowhere"
    raises_data_error(read_pfwillow, missing, names=(str(missing),))
    csv_path = willow_root / "test_pairs.csv"
    good = csv_path.read_text()
    lines = good.splitlines()
    for bad, match in (
        (lines[1].rsplit(",", 1)[0], "expected 42 columns, got 41"),
        (lines[1].replace(",10,", ",ten,", 1), "must be numbers"),
        (lines[1].replace("PF-dataset/car(G)/Cars_006a.png", "Cars_006a.png"), "is not"),
        (lines[1].replace("car(G)/Cars_007a", "car(M)/Cars_007a"), "differs from"),
        (lines[1].replace(",10,", ",nan,", 1), "non-finite"),
    ):
        csv_path.write_text("\n".join([lines[0], bad, lines[2]]) + "\n")
        raises_data_error(read_pfwillow, willow_root, names=(f"{csv_path}:2",), match=match)
    csv_path.write_text(good)
    shutil.rmtree(willow_root / "duck(S)")
    raises_data_error(read_pfwillow, willow_root, names=("duck(S)",))
    csv_path.unlink()
    raises_data_error(read_pfwillow, willow_root, names=(str(csv_path),))


# ----------------------------------------------------------------------------- registry


def test_load_dataset_registry(spair_root: Path, willow_root: Path) -> None:
    assert len(load_dataset("spair", spair_root, "test").pairs) == 7
    # HPF/SCOT users pass the parent folder holding SPair-71k/, PF-WILLOW/, ...
    assert load_dataset("spair", spair_root.parent, "test").root == spair_root
    assert load_dataset("pfwillow", willow_root.parent, "test").name == "pfwillow"
    with pytest.raises(ConfigError, match="unknown dataset 'cub'"):
        load_dataset("cub", spair_root, "test")
    with pytest.raises(ConfigError, match="needs its root folder"):
        load_dataset("spair", None, "test")


def test_load_dataset_demo_hook(spair_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'demo' generates SPair-layout data through demo.ensure_demo, then reads it."""
    calls: list[Path] = []

    def ensure_demo(root: Path, seed: int = 0) -> Path:
        calls.append(root)
        return spair_root

    fake = types.ModuleType("scotsearch.data.demo")
    fake.ensure_demo = ensure_demo  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "scotsearch.data.demo", fake)
    ds = load_dataset("demo", None, "test")
    assert ds.name == "demo" and len(ds.pairs) == 7
    ds = load_dataset("demo", Path("elsewhere"), "test")
    assert calls == [DEFAULT_DEMO_ROOT, Path("elsewhere")]
    assert DEFAULT_DEMO_ROOT == Path("cache") / "demo-data"


# ----------------------------------------------------------------------------- images


def _palette_image(w: int, h: int) -> Image.Image:
    img = Image.new("P", (w, h), 1)
    img.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    return img


@pytest.mark.parametrize(
    "make, suffix, expected, tol",
    [
        (lambda w, h: Image.new("L", (w, h), 77), "png", (77, 77, 77), 0),
        (lambda w, h: Image.new("1", (w, h), 1), "png", (255, 255, 255), 0),
        (_palette_image, "png", (200, 100, 50), 0),
        (lambda w, h: Image.new("RGBA", (w, h), (10, 20, 30, 0)), "png", (10, 20, 30), 0),
        (lambda w, h: Image.new("LA", (w, h), (90, 128)), "png", (90, 90, 90), 0),
        (lambda w, h: Image.new("RGB", (w, h), (255, 0, 0)), "jpg", (255, 0, 0), 8),
        (lambda w, h: Image.new("L", (w, h), 40), "jpg", (40, 40, 40), 2),
        # PIL writes CMYK JPEGs Adobe-style (inverted, APP14 marker); red must stay red.
        (lambda w, h: Image.new("RGB", (w, h), (255, 0, 0)).convert("CMYK"), "jpg",
         (255, 0, 0), 8),
        # 16-bit grey is rescaled, not clipped: 257 * 100 -> 100.
        (lambda w, h: Image.fromarray(np.full((h, w), 25700, np.uint16)), "png",
         (100, 100, 100), 0),
    ],
)  # fmt: skip
def test_load_image_converts_to_rgb(tmp_path: Path, make, suffix: str, expected, tol: int) -> None:
    path = tmp_path / f"img.{suffix}"
    make(24, 16).save(path)
    img = load_image(path)
    assert img.dtype == torch.uint8 and img.shape == (3, 16, 24) and img.is_contiguous()
    centre = img[:, 8, 12].to(torch.int32)
    assert (centre - torch.tensor(expected)).abs().max().item() <= tol, centre.tolist()
    assert image_size(path) == (24, 16)


def test_load_image_keeps_pixel_layout(tmp_path: Path) -> None:
    a = np.zeros((5, 7, 3), np.uint8)
    a[1, 4] = (9, 8, 7)
    path = tmp_path / "x.png"
    Image.fromarray(a).save(path)
    img = load_image(path)
    assert img[:, 1, 4].tolist() == [9, 8, 7] and img.sum().item() == 24


def test_load_image_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jpg"
    raises_data_error(load_image, missing, names=(str(missing),), match="not found")
    raises_data_error(image_size, missing, names=(str(missing),))
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not an image\n" * 10)
    raises_data_error(load_image, junk, names=(str(junk),), match="cannot decode")
    raises_data_error(image_size, junk, names=(str(junk),))
    # A truncated JPEG: its header is intact (image_size reads only that), its pixels are not.
    full = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), np.uint8)).save(full)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert image_size(cut) == (80, 64)
    raises_data_error(load_image, cut, names=(str(cut),))
