"""TSS: the .flo format, the reader on a generated TSS-layout copy, damaged copies, dense
flow prediction, flow PCK by hand, and ``scotsearch evaluate --dataset tss`` end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scotsearch import cli
from scotsearch.data import load_dataset
from scotsearch.data.flo import FLO_MAGIC
from scotsearch.data.flo import check_flo_header
from scotsearch.data.flo import encode_flo
from scotsearch.data.flo import read_flo
from scotsearch.data.flo import write_flo
from scotsearch.data.images import load_image
from scotsearch.data.images import mirrored_copy
from scotsearch.data.tss import flow_relpath
from scotsearch.data.tss import read_mask
from scotsearch.data.tss import read_tss
from scotsearch.errors import DataError
from scotsearch.testing_tss import FIXTURE_HW
from scotsearch.testing_tss import write_tss_fixture


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated TSS copy, written once; tests that damage it work on a copy."""
    return write_tss_fixture(tmp_path_factory.mktemp("tss"))


@pytest.fixture
def tss(fixture_root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(fixture_root, tmp_path / "TSS"))


# --------------------------------------------------------------------------------- .flo
def test_flo_round_trip_keeps_every_value(tmp_path: Path) -> None:
    flow = np.random.default_rng(0).normal(size=(3, 5, 2)).astype(np.float32)
    flow[1, 2] = [np.nan, 1e10]  # unknown-flow markers survive as they are
    path = tmp_path / "deep" / "flow1.flo"
    write_flo(path, flow)
    back = read_flo(path)
    assert back.shape == (3, 5, 2) and back.dtype == np.float32
    np.testing.assert_array_equal(back, flow)
    assert check_flo_header(path) == (5, 3)  # (W, H)


def test_flo_layout_is_middlebury(tmp_path: Path) -> None:
    # magic float32 202021.25 ("PIEH"), int32 width, int32 height, then u, v per pixel
    flow = np.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]], dtype=np.float32)  # H 1, W 3
    raw = encode_flo(flow)
    assert raw[:4] == b"PIEH"
    assert np.frombuffer(raw[:4], "<f4")[0] == FLO_MAGIC
    assert np.frombuffer(raw[4:12], "<i4").tolist() == [3, 1]
    assert np.frombuffer(raw[12:], "<f4").tolist() == [1, 2, 3, 4, 5, 6]


def test_flo_bad_magic_short_and_missing_files_name_the_file(tmp_path: Path) -> None:
    good = encode_flo(np.zeros((2, 2, 2), np.float32))
    bad = tmp_path / "bad.flo"
    bad.write_bytes(np.float32(1.5).tobytes() + good[4:])
    for reader in (read_flo, check_flo_header):
        with pytest.raises(DataError, match=r"bad\.flo is not a Middlebury \.flo file"):
            reader(bad)
    short = tmp_path / "short.flo"
    short.write_bytes(good[:-4])
    with pytest.raises(DataError, match=r"short\.flo has 40 bytes; a 2x2 flow needs 44"):
        read_flo(short)
    with pytest.raises(DataError, match=r"flow file not found: .*nothere\.flo"):
        read_flo(tmp_path / "nothere.flo")


# ------------------------------------------------------------------------------- reader
def test_reader_on_the_generated_copy(fixture_root: Path) -> None:
    ds = load_dataset("tss", fixture_root.parent, "test")  # the parent folder works too
    assert (ds.name, ds.split, ds.default_thres, ds.root) == ("tss", "test", "img", fixture_root)
    assert len(ds.pairs) == 6 and ds.categories == ["FG3DCar", "JODS", "PASCAL"]
    first, second = ds.pairs[0], ds.pairs[1]
    folder = fixture_root / "FG3DCar" / "001_cat"
    assert (first.src_path, first.trg_path) == (folder / "image1.png", folder / "image2.png")
    # flow<dir>.flo next to image A, and the mask of the image the flow lives on (B)
    assert (first.flow_path, first.trg_mask_path) == (folder / "flow2.flo", folder / "mask2.png")
    assert (second.flow_path, second.trg_mask_path) == (folder / "flow1.flo",
                                                         folder / "mask1.png")
    assert flow_relpath(second, ds.root) == Path("FG3DCar/001_cat/flow1.flo")
    assert first.n_kps == 0 and first.thres_kind == "img"
    # the flipped pair: both PASCAL rows mirror their image A, the others none
    assert [p.flip_src for p in ds.pairs] == [False, False, False, False, True, True]
    assert [p.category for p in ds.pairs] == ["FG3DCar"] * 2 + ["JODS"] * 2 + ["PASCAL"] * 2
    with pytest.raises(DataError, match="only a 'test' split"):
        read_tss(fixture_root, "val")


def test_fixture_ground_truth_is_the_crop_offset(fixture_root: Path) -> None:
    # Image B's pixel p + flow(p) in (mirrored) image A shows the same colour: the fixture's
    # flow files are right, for the flipped pair too.
    ds = read_tss(fixture_root)
    h, w = FIXTURE_HW
    for p in ds.pairs:
        a = load_image(p.src_path).numpy()
        if p.flip_src:
            a = a[:, :, ::-1]
        b = load_image(p.trg_path).numpy()
        flow = read_flo(p.flow_path)
        u, v = int(flow[0, 0, 0]), int(flow[0, 0, 1])
        assert (flow == flow[0, 0]).all()
        ys, xs = np.mgrid[max(0, -v) : min(h, h - v), max(0, -u) : min(w, w - u)]
        np.testing.assert_array_equal(b[:, ys, xs], a[:, ys + v, xs + u], err_msg=p.pair_id)
    mask = read_mask(ds.pairs[0].trg_mask_path)
    assert mask.shape == (h, w) and 0 < mask.mean() < 1


def test_mirrored_copy_is_exact_and_reused(fixture_root: Path, tmp_path: Path) -> None:
    src = fixture_root / "PASCAL" / "003_coffee" / "image1.png"
    copy = mirrored_copy(src, tmp_path)
    assert torch.equal(load_image(copy), load_image(src).flip(-1))
    stamp = copy.stat().st_mtime_ns
    assert mirrored_copy(src, tmp_path) == copy and copy.stat().st_mtime_ns == stamp
    grey = fixture_root / "JODS" / "002_camera" / "image1.png"
    with Image.open(grey) as im:
        assert im.mode == "L"  # a grey TSS image: read as three equal channels
    assert torch.equal(load_image(mirrored_copy(grey, tmp_path)), load_image(grey).flip(-1))


def _damage_row(tss: Path, row: int, cells: list[str] | None) -> Path:
    csv_path = tss / "test_pairs_tss.csv"
    lines = csv_path.read_text().splitlines()
    if cells is None:
        del lines[row]
    else:
        lines[row] = ",".join(cells)
    csv_path.write_text("\n".join(lines) + "\n")
    return csv_path


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        (["FG3DCar/001_cat/image1.png", "FG3DCar/001_cat/image2.png", "2", "0"],
         "expected 5 columns"),
        (["FG3DCar/001_cat/image1.png", "FG3DCar/001_cat/image2.png", "2", "yes", "1"],
         "flip_img_A must be an integer"),
        (["FG3DCar/001_cat/image1.png", "FG3DCar/001_cat/image2.png", "2", "2", "1"],
         "flip_img_A must be 0 or 1"),
        (["FG3DCar/001_cat/image1.png", "FG3DCar/001_cat/image2.png", "0", "0", "1"],
         "flow direction must be a positive integer"),
        (["/abs/image1.png", "FG3DCar/001_cat/image2.png", "2", "0", "1"],
         "is not '<group>/<pair>/<file>'"),
    ],
)
def test_malformed_rows_name_file_and_line(tss: Path, cells: list[str], message: str) -> None:
    csv_path = _damage_row(tss, 2, cells)
    with pytest.raises(DataError) as exc:
        read_tss(tss)
    assert f"{csv_path}:3: " in str(exc.value) and message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_and_damaged_files_are_named(tss: Path) -> None:
    flow = tss / "JODS" / "002_camera" / "flow1.flo"
    flow.write_bytes(b"\x00" * 4 + flow.read_bytes()[4:])
    with pytest.raises(DataError, match=f"flow file {flow} is not a Middlebury"):
        read_tss(tss)
    flow.unlink()
    with pytest.raises(DataError, match=f"flow file not found: {flow}"):
        read_tss(tss)
    write_flo(flow, np.zeros((*FIXTURE_HW, 2), np.float32))
    mask = tss / "PASCAL" / "003_coffee" / "mask2.png"
    mask.unlink()
    with pytest.raises(DataError, match=f"TSS foreground mask not found: {mask}"):
        read_tss(tss)
    (tss / "test_pairs_tss.csv").unlink()
    with pytest.raises(DataError, match=f"TSS pair file not found: {tss / 'test_pairs_tss.csv'}"):
        read_tss(tss)


def _check(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    rc = cli.main(["datasets", "check", "--dataset", "tss", "--datapath", str(root)])
    out, err = capsys.readouterr()
    return rc, out, err.strip().splitlines()


def test_datasets_check_on_good_and_damaged_copies(tss: Path, capsys) -> None:
    rc, out, err = _check(tss, capsys)
    assert rc == 0 and err == []
    assert "test        6 pairs       6 images    3 categories  ok" in out
    assert "FG3DCar 2, JODS 2, PASCAL 2" in out and out.rstrip().endswith("usable")

    image = tss / "JODS" / "002_camera" / "image2.png"
    image.unlink()
    rc, out, err = _check(tss, capsys)
    assert rc == 2 and len(err) == 1 and f"image not found: {image}" in err[0]
    assert "taniai.space/projects/cvpr16_dccs" in out  # where the files come from

    flow = tss / "FG3DCar" / "001_cat" / "flow2.flo"
    flow.write_bytes(flow.read_bytes()[:-8])
    rc, out, err = _check(tss, capsys)
    assert rc == 2 and len(err) == 1 and f"flow file {flow} has" in err[0]

    flow.unlink()
    rc, out, err = _check(tss, capsys)
    assert rc == 2 and len(err) == 1 and f"flow file not found: {flow}" in err[0]

    csv_path = _damage_row(tss, 1, ["FG3DCar/001_cat/image1.png", "x", "2"])
    rc, out, err = _check(tss, capsys)
    assert rc == 2 and len(err) == 1 and f"{csv_path}:2" in err[0]

    csv_path.unlink()
    rc, out, err = _check(tss, capsys)
    assert rc == 2 and len(err) == 1 and str(csv_path) in err[0]
