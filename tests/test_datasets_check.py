"""``scotsearch datasets check`` on a generated PF-WILLOW copy and damaged copies of it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scotsearch import cli


IMAGES = ("car(G)/Cars_006a.png", "car(G)/Cars_007a.png", "duck(S)/Duck_001.png",
          "duck(S)/Duck_002.png")


@pytest.fixture
def willow(tmp_path: Path) -> Path:
    root = tmp_path / "PF-WILLOW"
    for name in IMAGES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(root / name)
    header = ["imageA", "imageB", *[f"{a}{i}" for a in ("XA", "YA", "XB", "YB")
                                    for i in range(1, 11)]]
    xs, ys = list(range(10, 110, 10)), list(range(5, 55, 5))
    rows = [[f"PF-dataset/{IMAGES[0]}", f"PF-dataset/{IMAGES[1]}", *xs, *ys, *xs, *ys],
            [f"PF-dataset/{IMAGES[2]}", f"PF-dataset/{IMAGES[3]}", *xs, *ys, *xs, *ys]]
    with open(root / "test_pairs.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return root


def _check(root: Path, capsys) -> tuple[int, str, list[str]]:
    rc = cli.main(["datasets", "check", "--dataset", "pfwillow", "--datapath", str(root)])
    out, err = capsys.readouterr()
    return rc, out, err.strip().splitlines()


def test_a_complete_copy_is_usable(willow: Path, capsys) -> None:
    rc, out, err = _check(willow, capsys)
    assert rc == 0 and err == []
    assert "test        2 pairs       4 images    2 categories  ok" in out
    assert "car(G) 1, duck(S) 1" in out and out.rstrip().endswith("usable")
    # the parent folder is accepted as everywhere else
    assert _check(willow.parent, capsys)[0] == 0


def test_damaged_copies_name_the_file(willow: Path, capsys) -> None:
    (willow / IMAGES[3]).unlink()
    rc, out, err = _check(willow, capsys)
    assert rc == 2 and len(err) == 1
    assert f"image not found: {willow / IMAGES[3]}" in err[0]
    assert "1 of 4 images missing" in out and "Proposal Flow" in out  # where it comes from

    csv_path = willow / "test_pairs.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([lines[0], lines[1].rsplit(",", 1)[0], lines[2]]) + "\n")
    rc, out, err = _check(willow, capsys)
    assert rc == 2 and len(err) == 1 and f"{csv_path}:2" in err[0]  # malformed row, file:line

    csv_path.unlink()
    rc, out, err = _check(willow, capsys)
    assert rc == 2 and len(err) == 1 and str(csv_path) in err[0]  # missing CSV named


def test_commands_that_open_a_split_fail_on_a_missing_image(willow: Path, capsys) -> None:
    (willow / IMAGES[0]).unlink()
    rc = cli.main(["evaluate", "--dataset", "pfwillow", "--datapath", str(willow),
                   "--backbone", "resnet50", "--weights", "random", "--layers", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert f"image not found: {willow / IMAGES[0]}" in err[0]


def test_unknown_split_is_refused(willow: Path, capsys) -> None:
    rc = cli.main(["datasets", "check", "--dataset", "pfwillow", "--datapath", str(willow),
                   "--split", "val"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "has no split 'val'" in err[0]
