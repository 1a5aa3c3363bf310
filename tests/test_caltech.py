"""Caltech-101 (HPF's mask benchmark): the reader on a generated copy, its refusals, and
``datasets check`` on good and damaged copies."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from scotsearch import cli
from scotsearch.data import load_dataset
from scotsearch.data import read_caltech
from scotsearch.data.demo import CALTECH_FIXTURE_CATEGORIES
from scotsearch.data.demo import write_caltech_fixture
from scotsearch.errors import DataError


CSV = "test_pairs_caltech_with_category.csv"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_caltech_fixture(tmp_path_factory.mktemp("caltech"))


@pytest.fixture
def caltech(pristine: Path, tmp_path: Path) -> Path:
    """A copy of the generated Caltech-101 folder that a test may damage."""
    return Path(shutil.copytree(pristine, tmp_path / "Caltech-101"))


def _rewrite_row(root: Path, line: int, edit: Callable[[str], str]) -> None:
    lines = (root / CSV).read_text().splitlines()
    lines[line - 1] = edit(lines[line - 1])
    (root / CSV).write_text("\n".join(lines) + "\n")


def test_reader_on_the_generated_copy(caltech: Path) -> None:
    ds = read_caltech(caltech)
    assert (ds.name, ds.split, ds.metric, len(ds.pairs)) == ("caltech", "test", "mask", 6)
    assert ds.categories == sorted(CALTECH_FIXTURE_CATEGORIES)
    first = ds.pairs[0]
    # the CSV's first path component is dropped and the rest joined to 101_ObjectCategories
    assert first.src_path == caltech / "101_ObjectCategories" / "Faces" / "image_0001.jpg"
    assert first.trg_path == caltech / "101_ObjectCategories" / "Faces" / "image_0002.jpg"
    assert first.category == "Faces" and first.src_path.is_file()
    # columns 3/4 are the source outline's x and y strings, 5/6 the target's
    row = (caltech / CSV).read_text().splitlines()[1]
    xa = [float(v) for v in row.split('"')[1].split(",")]
    np.testing.assert_allclose(first.src_kps[:, 0], xa)
    assert first.src_kps.shape == (10, 2) and first.trg_kps.shape == (10, 2)
    # the reverse pair swaps the outlines
    np.testing.assert_array_equal(ds.pairs[1].src_kps, first.trg_kps)
    # the HPF parent folder (Datasets_HPF) is accepted like everywhere else
    assert len(load_dataset("caltech", caltech.parent, "test").pairs) == 6


def test_outlines_follow_the_image_scaling(caltech: Path) -> None:
    # image_0001 is the whole photo scaled to a 120 px longer side: the coffee photo
    # (600 x 400) by 0.2, so its outline lies in the 120 x 80 image, where the cup is.
    cup = next(p for p in read_caltech(caltech).pairs if p.category == "cup")
    assert cup.src_path.name == "image_0001.jpg"
    assert cup.src_kps[:, 0].min() > 10 and cup.src_kps[:, 0].max() < 100
    assert cup.src_kps[:, 1].min() > 0 and cup.src_kps[:, 1].max() < 80


def test_only_the_test_split_exists(caltech: Path) -> None:
    with pytest.raises(DataError, match="only a 'test' split"):
        read_caltech(caltech, "val")


@pytest.mark.parametrize("edit, says", [
    (lambda r: r.replace('"35.95,', '"35.95;', 1), "source polygon: x coordinates"),
    (lambda r: r.replace('"35.95,', '"abc,', 1), "source polygon: x coordinates"),
    (lambda r: r.replace('"35.95,', '"', 1), "source polygon: 9 x but 10 y coordinates"),
    (lambda r: r[: r.rindex(',"')] + ',"1,2"', "target polygon: 10 x but 2 y coordinates"),
    (lambda r: r.rsplit(',"', 1)[0], "expected 7 columns"),
    (lambda r: r.replace(",1,", ",x,", 1), "class id 'x' is not a positive integer"),
    (lambda r: r.replace("Faces/image_0002", "cup/image_0002", 1), "differs from target"),
    (lambda r: r.replace("101_ObjectCategories/Faces/", "Faces/", 1), "is not '<top>/"),
])
def test_malformed_rows_are_refused_with_file_and_line(
    caltech: Path, edit: Callable[[str], str], says: str
) -> None:
    _rewrite_row(caltech, 2, edit)
    with pytest.raises(DataError) as err:
        read_caltech(caltech)
    assert f"{caltech / CSV}:2: " in str(err.value) and says in str(err.value)


def test_a_zero_area_outline_is_refused(caltech: Path) -> None:
    _rewrite_row(caltech, 3, lambda r: r[: r.rindex(',"')] + ',"5,5,5,5,5,5,5,5,5,5"')
    with pytest.raises(DataError, match=r":3: target polygon: the polygon has zero area"):
        read_caltech(caltech)


def test_missing_files_are_named(caltech: Path) -> None:
    shutil.rmtree(caltech / "101_ObjectCategories")
    with pytest.raises(DataError, match="images folder not found: .*101_ObjectCategories"):
        read_caltech(caltech)
    (caltech / CSV).unlink()
    with pytest.raises(DataError, match=f"pair file not found: .*{CSV}"):
        read_caltech(caltech)
    with pytest.raises(DataError, match="root folder not found"):
        read_caltech(caltech / "nowhere")


def _check(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    rc = cli.main(["datasets", "check", "--dataset", "caltech", "--datapath", str(root)])
    out, err = capsys.readouterr()
    return rc, out, err.strip().splitlines()


def test_datasets_check_passes_the_generated_copy(
    caltech: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = _check(caltech, capsys)
    assert rc == 0 and err == []
    assert "test        6 pairs       6 images    3 categories  ok" in out
    assert "Faces 2, cup 2, wild_cat 2" in out and out.rstrip().endswith("usable")


def test_datasets_check_names_what_is_damaged(
    caltech: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = caltech / "101_ObjectCategories" / "cup" / "image_0002.jpg"
    image.unlink()
    rc, out, err = _check(caltech, capsys)
    assert rc == 2 and len(err) == 1 and f"image not found: {image}" in err[0]
    assert "1 of 6 images missing" in out and "1IV0E5sJ6xSdDyIvVSTdZjPHELMwGzsMn" in out

    _rewrite_row(caltech, 4, lambda r: r.replace('"', '"x', 1))
    rc, out, err = _check(caltech, capsys)
    assert rc == 2 and len(err) == 1 and f"{caltech / CSV}:4: source polygon" in err[0]

    (caltech / CSV).unlink()
    rc, out, err = _check(caltech, capsys)
    assert rc == 2 and len(err) == 1 and str(caltech / CSV) in err[0]
