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
from scotsearch.testing_tss import FIXTURE_PAIRS
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


# ----------------------------------------------------------------------------- flow PCK
def test_flow_pck_counts_foreground_pixels_by_hand() -> None:
    from scotsearch.flowpck import flow_correct

    gt = np.zeros((2, 3, 2))
    gt[..., 0] = 1.0  # every pixel moves 1 px right ...
    gt[1, 2] = [1e10, 1e10]  # ... except one whose flow is unknown (Middlebury > 1e9)
    mask = np.array([[True, True, True], [True, False, True]])
    pred = gt.copy()
    pred[0, 1] = [1 + 3, 4]  # error exactly 5: on the threshold, correct (<=)
    pred[0, 2] = [1 + 5.01, 0]  # error 5.01: wrong at alpha 0.05
    pred[1, 0] = [np.nan, np.nan]  # no receptive field covered it: wrong
    pred[1, 1] = [50, 50]  # background: not scored however wrong
    # scored: (0,0) (0,1) (0,2) (1,0); correct at 0.05 * 100 = 5 px: (0,0) (0,1)
    assert flow_correct(pred, gt, mask, thr=100, alpha=0.05) == (2, 4)
    # at 10 px (0,2) is correct too; the NaN never is
    assert flow_correct(pred, gt, mask, thr=100, alpha=0.1) == (3, 4)
    assert flow_correct(pred, gt, np.zeros((2, 3), bool), thr=100, alpha=0.1) == (0, 0)


def test_group_means_average_pairs_then_groups() -> None:
    from scotsearch.flowpck import group_means

    table = group_means([0.5, 1.0, 0.2, float("nan"), 0.6],
                        ["FG3DCar", "FG3DCar", "PASCAL", "PASCAL", "JODS"],
                        ("FG3DCar", "JODS", "PASCAL"))
    # FG3DCar (50 + 100) / 2, JODS 60, PASCAL 20 (its NaN pair is left out); the mean is
    # of the three groups, not of the pairs (as Table 5's Avg.)
    assert list(table) == ["FG3DCar", "JODS", "PASCAL", "mean"]
    assert table["FG3DCar"] == pytest.approx(75.0) and table["JODS"] == pytest.approx(60.0)
    assert table["PASCAL"] == pytest.approx(20.0)
    assert table["mean"] == pytest.approx((75 + 60 + 20) / 3)


# ------------------------------------------------------------------------- dense flow
def _feats(world: torch.Tensor, di: int, dj: int, h: int, w: int, ratio: float):
    from scotsearch.features import ImageFeatures

    layer = world[:, di : di + h, dj : dj + w].clone()
    size = (4 * h, 4 * w)  # stride-4 grid of layer 0
    orig = (round(size[0] / ratio), round(size[1] / ratio))
    return ImageFeatures(layers={0: layer}, image_size=size, ratio=ratio, orig_size=orig)


@pytest.mark.parametrize("variant", ["cos-nn", "ot-rhm"])
@pytest.mark.parametrize(("ratio_a", "ratio_b"), [(1.0, 1.0), (0.5, 0.5), (0.25, 0.5)])
def test_dense_flow_lives_on_the_target_and_points_into_the_source(
    variant: str, ratio_a: float, ratio_b: float
) -> None:
    from scotsearch.config import MatchConfig
    from scotsearch.dense import pixel_grid
    from scotsearch.dense import predict_flow
    from scotsearch.layers import layer_specs
    from scotsearch.presets import resolve_profile

    # Target B's hyperpixel (i, j) carries the source A's features at (i + 1, j + 2): every
    # B pixel maps 8 px right and 4 px down in A's resized image.
    world = torch.randn(16, 8, 10, generator=torch.Generator().manual_seed(0))
    a = _feats(world, 0, 0, 8, 10, ratio_a)
    b = _feats(world, 1, 2, 6, 7, ratio_b)  # smaller than A: the flow must take B's size
    flow = predict_flow(a, b, [0], layer_specs("resnet50"), MatchConfig.from_variant(variant),
                        resolve_profile(None))
    H, W = b.orig_size
    assert flow.shape == (H, W, 2) and flow.dtype == np.float32
    grid = pixel_grid(H, W).numpy().reshape(H, W, 2)
    want = (grid * ratio_b + np.array([8.0, 4.0])) / ratio_a - grid  # 1-based, as SCOT
    np.testing.assert_allclose(flow, want, atol=1e-4)


def test_tss_margin_prunes_at_10_px() -> None:
    from scotsearch.geometry import make_grid

    # 2 x 3 grid, stride 4, receptive field 27 (half 13), image 8 x 12: box x0 = 4j - 13,
    # x1 = 4j + 13; SCOT's TSS rule keeps x0 >= -10, x1 < 12 + 10 (and so for y, H = 8).
    g = make_grid(2, 3, stride=4, rf=27, image_size=(8, 12), prune_margin=True, margin=10)
    assert g.valid.tolist() == [False, False, False, False, True, True]
    # HPF's rule (one stride) prunes all of them; no pruning keeps all
    assert not make_grid(2, 3, stride=4, rf=27, image_size=(8, 12), prune_margin=True).valid.any()


# ------------------------------------------------------------------- scoring a TSS split
def test_evaluate_flow_scores_what_it_writes(fixture_root: Path, tmp_path: Path) -> None:
    import dataclasses

    from scotsearch.flowpck import flow_correct
    from scotsearch.presets import resolve_match
    from scotsearch.presets import resolve_profile
    from scotsearch.testing_tss import PixelSource
    from scotsearch.tss_eval import evaluate_flow

    ds = read_tss(fixture_root)
    source = PixelSource("resnet50")
    kw = dict(match=resolve_match(None, "tss", "evaluate"), profile=resolve_profile(None),
              alphas=(0.05, 0.2), mirror_dir=tmp_path / "mirrored")
    scores = evaluate_flow(ds, source, [0], flo_dir=tmp_path / "result_CAM", **kw)
    assert scores.pair_ids == [p.pair_id for p in ds.pairs]
    # the flipped pairs' image A was read mirrored, from the mirror folder
    mirrored = sorted(p.name for p in (tmp_path / "mirrored").iterdir())
    assert len(mirrored) == 2 and all(n.endswith("-mirrored.png") for n in mirrored)
    assert sum(p.parent == tmp_path / "mirrored" for p in source.paths) == 2
    # one .flo per pair at the ground truth's relative path; its PCK is the one reported
    for k, p in enumerate(ds.pairs):
        flow = read_flo(tmp_path / "result_CAM" / flow_relpath(p, ds.root))
        assert flow.shape == (*FIXTURE_HW, 2)
        got = flow_correct(flow, read_flo(p.flow_path), read_mask(p.trg_mask_path),
                           thr=max(FIXTURE_HW), alpha=0.05)
        assert got == (scores.n_correct[0, k], scores.n_scored[k])
    table = scores.table()
    assert list(table[0.05]) == ["FG3DCar", "JODS", "PASCAL", "mean"]
    assert all(0 <= v <= 100 for t in table.values() for v in t.values())
    assert all(table[0.2][g] >= table[0.05][g] for g in table[0.05])
    # the translation is found: a wider alpha scores most foreground pixels
    assert table[0.2]["mean"] > 80
    # ignoring the flip breaks the mirrored pairs: the flag is honoured
    unflipped = dataclasses.replace(
        ds, pairs=tuple(dataclasses.replace(p, flip_src=False) for p in ds.pairs))
    worse = evaluate_flow(unflipped, source, [0], **kw).table()
    assert worse[0.2]["PASCAL"] < table[0.2]["PASCAL"] - 20
    assert worse[0.2]["FG3DCar"] == table[0.2]["FG3DCar"]


# ------------------------------------------------------------------------ command line
@pytest.fixture
def pixel_features(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands read pooled pixels instead of running a network (see testing_tss)."""
    from scotsearch.commands import common
    from scotsearch.testing_tss import PixelSource

    monkeypatch.setattr(common, "feature_source", lambda args, dev: PixelSource(args.backbone))


def _evaluate(tss: Path, *extra: str) -> int:
    return cli.main(["evaluate", "--dataset", "tss", "--datapath", str(tss), "--backbone",
                     "resnet50", "--layers", "0,1", "--no-cache", *extra])


def test_evaluate_tss_end_to_end(tss: Path, tmp_path: Path, pixel_features, capsys) -> None:
    import json

    out_json = tmp_path / "res.json"
    rc = _evaluate(tss, "--alpha", "0.2", "--flo-dir", str(tss / "result_CAM"),
                   "--output", str(out_json))
    out, err = capsys.readouterr()
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("tss/test  resnet50  layers 0,1  ot-rhm-stair  exp2 1  (")
    # the benchmark's alpha 0.05 is always there, with the one asked for
    assert "flow PCK       pairs    a=0.05     a=0.2" in lines
    rows = {line.split()[0]: line for line in lines if line.split()[:1] in
            (["FG3DCar"], ["JODS"], ["PASCAL"], ["mean"])}
    assert sorted(rows) == ["FG3DCar", "JODS", "PASCAL", "mean"]
    assert rows["PASCAL"].split()[1] == "2" and rows["mean"].startswith("mean of groups")
    result = json.loads(out_json.read_text())
    assert result["kind"] == "scotsearch-flow-evaluation" and result["alphas"] == [0.05, 0.2]
    table = result["summary"]["0.2"]
    assert [f"{table[g]:.1f}" for g in ("FG3DCar", "JODS", "PASCAL")] == \
        [rows[g].split()[3] for g in ("FG3DCar", "JODS", "PASCAL")]
    assert table["mean"] == pytest.approx(np.mean([table[g] for g in ("FG3DCar", "JODS",
                                                                      "PASCAL")]))
    assert len(result["pairs"]) == 6 and result["match"]["exp2"] == 1.0  # SCOT's TSS exp2
    # SCOT's result layout: result_CAM/<group>/<pair>/flow<dir>.flo, one per pair
    written = sorted(p.relative_to(tss / "result_CAM").as_posix()
                     for p in (tss / "result_CAM").rglob("*.flo"))
    assert written == sorted(f"{g}/{folder}/flow{k}.flo" for g, (_, folder, _, _) in
                             FIXTURE_PAIRS.items() for k in (1, 2))
    assert f"wrote 6 .flo files under {tss / 'result_CAM'}" in out


def test_evaluate_tss_bad_input_is_one_line(tss: Path, pixel_features, capsys) -> None:
    flow = tss / "JODS" / "002_camera" / "flow2.flo"
    write_flo(flow, np.zeros((5, 7, 2), np.float32))  # a valid file of the wrong size
    assert _evaluate(tss) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"flow file {flow} is 7x5" in err[0]
    flow.unlink()
    assert _evaluate(tss) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"flow file not found: {flow}" in err[0]
    assert "Traceback" not in " ".join(err)
    # refused before the split is read (the missing flow file is not reached)
    assert _evaluate(tss, "--thres", "bbox") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--thres bbox does not apply" in err[0]


def test_searches_refuse_tss_and_flo_dir_needs_tss(tss: Path, tmp_path: Path, capsys) -> None:
    for command, extra in (("beam", []), ("tune", ["--study", "t", "--trials", "2"])):
        rc = cli.main([command, "--dataset", "tss", "--datapath", str(tss),
                       "--storage", f"sqlite:///{tmp_path / 's.db'}", *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, command
        assert f"{command} searches by keypoint PCK and cannot run on --dataset tss" in err[0]
    assert not (tmp_path / "s.db").exists()  # refused before any work
    rc = cli.main(["evaluate", "--dataset", "demo", "--cache-dir", str(tmp_path), "--flo-dir",
                   str(tmp_path / "flo"), "--backbone", "resnet50", "--weights", "random",
                   "--max-pairs", "1", "--layers", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "only --dataset tss" in err[0]


@pytest.mark.parametrize("seed", range(6))
def test_grid_transfer_equals_the_keypoint_transfer(seed: int) -> None:
    from scotsearch.geometry import make_grid
    from scotsearch.transfer import transfer_from_best
    from scotsearch.transfer import transfer_on_grid

    g = torch.Generator().manual_seed(seed)
    h, w = (int(v) for v in torch.randint(2, 10, (2,), generator=g))
    stride, rf = (4, 8, 16, 14, 4, 8)[seed], (11, 27, 35, 43, 19, 59)[seed]
    grid = make_grid(h, w, stride=stride, rf=rf, image_size=(h * stride, w * stride),
                     prune_margin=seed % 2 == 0, margin=10 if seed % 4 == 0 else None)
    trg_centres = (torch.randint(0, 50, (30, 2), generator=g) * 4).float()
    best = torch.randint(0, 30, (h * w,), generator=g)
    size = torch.tensor([w * stride + 20.0, h * stride + 20.0])
    points = torch.cat([
        torch.rand(300, 2, generator=g) * size - 10,  # inside and outside every box
        (torch.randint(-2, 12, (100, 2), generator=g) * stride + rf // 2).float(),  # on edges
        (torch.randint(-2, 12, (100, 2), generator=g) * stride - rf // 2).float(),
    ])
    want = transfer_from_best(best, points, grid.boxes, grid.centres, trg_centres,
                              src_valid=grid.valid)
    got = transfer_on_grid(best, points, grid, trg_centres)
    assert torch.isnan(want).any() and not torch.isnan(want).all()  # both kinds of points
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    assert torch.equal(got.nan_to_num(-1.0), want.nan_to_num(-1.0))  # bit for bit


def test_evaluate_tss_with_random_weights_caches_the_mirrored_images(
    tss: Path, tmp_path: Path, capsys
) -> None:
    # The real extraction path (a seeded random ResNet-50, tiny images): the two flipped
    # pairs' mirrored sources get cache entries of their own, next to the six originals.
    rc = cli.main(["evaluate", "--dataset", "tss", "--datapath", str(tss), "--backbone",
                   "resnet50", "--weights", "random", "--image-side", "32", "--layers", "0,4",
                   "--cache-dir", str(tmp_path / "cache")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "mean of groups" in out
    assert len(list((tmp_path / "cache" / "tss-mirrored").glob("*-mirrored.png"))) == 2
    assert len(list((tmp_path / "cache" / "features").rglob("*.safetensors"))) == 8


def test_headerless_csv_and_a_prefix_folder_keep_every_pair(tss: Path) -> None:
    # SCOT's pandas reader would take a header-less file's first pair for a header; the
    # group is found further down a path with an extra top folder.
    csv_path = tss / "test_pairs_tss.csv"
    rows = csv_path.read_text().splitlines()[1:]
    csv_path.write_text("\n".join(rows) + "\n")
    ds = read_tss(tss)
    assert len(ds.pairs) == 6 and ds.pairs[0].pair_id == "0001-001_cat-flow2"
    shutil.move(str(tss / "JODS"), str(tss / "old"))
    (tss / "TSS_CVPR2016").mkdir()
    shutil.move(str(tss / "old"), str(tss / "TSS_CVPR2016" / "JODS"))
    csv_path.write_text("\n".join(r.replace("JODS/", "TSS_CVPR2016/JODS/") for r in rows) + "\n")
    ds = read_tss(tss)
    assert [p.category for p in ds.pairs] == ["FG3DCar"] * 2 + ["JODS"] * 2 + ["PASCAL"] * 2
    assert ds.pairs[2].flow_path == tss / "TSS_CVPR2016" / "JODS" / "002_camera" / "flow2.flo"
