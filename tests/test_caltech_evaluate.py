"""Scoring Caltech-101 by masks: the evaluator on synthetic features with hand-counted
masks, and ``scotsearch evaluate --dataset caltech`` end to end on the generated copy."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from scotsearch import cli
from scotsearch.data.demo import write_caltech_fixture
from scotsearch.data.pairs import Dataset
from scotsearch.data.pairs import Pair
from scotsearch.evaluate import Evaluator
from scotsearch.evaluate import Scores
from scotsearch.features import ImageFeatures
from scotsearch.presets import resolve_match
from scotsearch.presets import resolve_profile
from scotsearch.report import summarize_masks
from scotsearch.testing import SyntheticSource
from scotsearch.testing import synthetic_dataset


#: A 16 x 16 square outline inside the 48 x 32 synthetic images: 256 pixels.
SQUARE = np.array([[8, 8], [24, 8], [24, 24], [8, 24]], float)


def _pair(k: int, shift: int, trg: np.ndarray, category: str = "a") -> Pair:
    # SyntheticSource reads the target's shift from its file name: the target shows the
    # source's content moved right by `shift` pixels.
    return Pair(pair_id=str(k), category=category,
                src_path=Path(f"synthetic/0/{k}/src+0+0.png"),
                trg_path=Path(f"synthetic/0/{k}/trg+{shift}+0.png"),
                src_kps=SQUARE, trg_kps=trg, thres_kind="img")


def _masks_dataset() -> Dataset:
    pairs = (
        _pair(0, 4, SQUARE + [4, 0]),  # the annotation agrees with the image content
        _pair(1, 4, SQUARE + [8, 0], "b"),  # annotated 4 px further right than the content
        _pair(2, 8, SQUARE + [8, 0], "b"),
    )
    return Dataset("caltech", "test", Path("synthetic"), pairs, "img", metric="mask")


@pytest.mark.parametrize("compat, sim", [(None, "OTGeo"), ("hpf", "cosGeo")])
def test_masks_are_scored_from_the_transferred_outline(compat: str | None, sim: str) -> None:
    source = SyntheticSource("resnet50", informative=(1, 3), image_hw=(32, 48))
    match = resolve_match(compat, "caltech", "evaluate", sim=sim, cam="none")
    ev = Evaluator(_masks_dataset(), source, match=match, profile=resolve_profile(compat),
                   engine="eager")
    scores, preds = ev.predict([(1, 3)])
    # the outline's vertices move with the content, exactly
    np.testing.assert_allclose(preds[0][0], SQUARE + [4, 0])
    np.testing.assert_allclose(preds[0][2], SQUARE + [8, 0])
    # pair 1: prediction x 12..27, annotation x 16..31 (16 rows each): 12 shared columns,
    # intersection 192, union 320; 128 of the 32 x 48 = 1536 pixels differ
    assert scores.lt_acc is not None and scores.iou is not None
    np.testing.assert_allclose(scores.lt_acc[0], [1.0, 1 - 128 / 1536, 1.0])
    np.testing.assert_allclose(scores.iou[0], [1.0, 192 / 320, 1.0])
    assert not scores.n_correct.any()  # no PCK on a mask benchmark
    summary = summarize_masks(scores, ev.dataset)
    assert summary["lt_acc"] == pytest.approx((2 + 1 - 128 / 1536) / 3)
    assert summary["iou"] == pytest.approx((2 + 0.6) / 3)
    assert summary["per_category"]["a"] == {"lt_acc": 1.0, "iou": 1.0}
    assert summary["per_category"]["b"]["iou"] == pytest.approx(0.8)


class _HalvedTargets(SyntheticSource):
    """The synthetic images; targets as if decoded at twice the size and resized by 0.5."""

    def get(self, path: Path, layer_ids: tuple[int, ...], *, need_cam: bool) -> ImageFeatures:
        f = super().get(path, layer_ids, need_cam=need_cam)
        if not Path(path).name.startswith("trg"):
            return f
        h, w = f.image_size
        return dataclasses.replace(f, ratio=0.5, orig_size=(2 * h, 2 * w))


def test_outlines_are_scored_in_resized_target_pixels() -> None:
    # Target outlines in original target pixels (twice the network input): scaled by the
    # target's ratio and rasterised at the resized size, the numbers are those above.
    ds = _masks_dataset()
    pairs = tuple(dataclasses.replace(p, trg_kps=2 * p.trg_kps) for p in ds.pairs)
    source = _HalvedTargets("resnet50", informative=(1, 3), image_hw=(32, 48))
    match = resolve_match(None, "caltech", "evaluate", cam="none")
    ev = Evaluator(dataclasses.replace(ds, pairs=pairs), source, match=match,
                   profile=resolve_profile(None), engine="eager")
    scores = ev.score([(1, 3)])
    assert scores.lt_acc is not None and scores.iou is not None
    np.testing.assert_allclose(scores.lt_acc[0], [1.0, 1 - 128 / 1536, 1.0])
    np.testing.assert_allclose(scores.iou[0], [1.0, 192 / 320, 1.0])


def test_hpf_does_not_prune_margins_on_caltech() -> None:
    source = SyntheticSource("resnet50", informative=(1, 3), image_hw=(32, 48))
    hpf = resolve_profile("hpf")
    assert hpf.prune_margin
    match = resolve_match("hpf", "caltech", "evaluate")
    assert not Evaluator(_masks_dataset(), source, match=match, profile=hpf).profile.prune_margin
    keypoints = Evaluator(synthetic_dataset(1, image_hw=(32, 48)), source, match=match,
                          profile=hpf)
    assert keypoints.profile.prune_margin  # keypoint benchmarks keep HPF's pruning
    scores = keypoints.score([(1, 3)])
    assert scores.lt_acc is None and scores.iou is None


@pytest.fixture(scope="module")
def caltech_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_caltech_fixture(tmp_path_factory.mktemp("caltech"))


FAST = ("--backbone", "resnet50", "--weights", "random", "--image-side", "64",
        "--engine", "eager")


def test_evaluate_prints_lt_acc_and_iou_and_writes_them(
    caltech_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "caltech.json"
    rc = cli.main(["evaluate", "--dataset", "caltech", "--datapath", str(caltech_root), *FAST,
                   "--cache-dir", str(tmp_path / "cache"), "--output", str(out_json)])
    out = capsys.readouterr().out
    assert rc == 0
    # HPF's published Caltech-101 layers are the default for resnet50
    assert "caltech/test  resnet50  layers 2,7,11,12,13" in out and "PCK" not in out
    assert "LT-ACC" in out and "IoU" in out and "all (6 pairs)" in out
    for category in ("Faces", "cup", "wild_cat"):
        assert f"\n{category}" in out
    result = json.loads(out_json.read_text())
    assert result["kind"] == "scotsearch-mask-evaluation" and len(result["pairs"]) == 6
    lt = [p["lt_acc"] for p in result["pairs"]]
    iou = [p["iou"] for p in result["pairs"]]
    assert all(0 <= v <= 1 for v in lt + iou)
    assert result["summary"]["lt_acc"] == pytest.approx(np.mean(lt))
    assert result["summary"]["iou"] == pytest.approx(np.mean(iou))
    line = next(x for x in out.splitlines() if x.startswith("all (6 pairs)"))
    assert line.split()[-2:] == [f"{np.mean(lt):.3f}", f"{np.mean(iou):.3f}"]
    first = result["pairs"][0]
    assert len(first["pred_polygon"]) == len(first["src_polygon"]) == 10
    # 'scotsearch report' draws keypoint results; it refuses this one in one line
    rc = cli.main(["report", str(out_json), "-o", str(tmp_path / "rep")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "is not a result of" in err[0]


def test_evaluate_stops_at_a_missing_image(
    caltech_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    root = Path(shutil.copytree(caltech_root, tmp_path / "Caltech-101"))
    image = root / "101_ObjectCategories" / "Faces" / "image_0001.jpg"
    image.unlink()
    rc = cli.main(["evaluate", "--dataset", "caltech", "--datapath", str(root), *FAST,
                   "--no-cache"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"image not found: {image}" in err[0]


@pytest.mark.parametrize("flag", [("--thres", "bbox"), ("--alpha", "0.05")])
def test_pck_flags_are_refused_on_caltech(
    flag: tuple[str, str], caltech_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli.main(["evaluate", "--dataset", "caltech", "--datapath", str(caltech_root), *flag,
                   *FAST, "--no-cache"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "caltech is scored by masks" in err[0]


@pytest.mark.parametrize("command", ["beam", "tune"])
def test_searches_refuse_caltech_in_one_line(
    command: str, caltech_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = ["--study", "s", "--trials", "1"] if command == "tune" else []
    rc = cli.main([command, *study, "--dataset", "caltech", "--datapath", str(caltech_root),
                   "--storage", f"sqlite:///{tmp_path / 'studies.db'}", *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert f"{command} does not search on --dataset caltech" in err[0]
    assert not (tmp_path / "studies.db").exists()


def test_scores_of_keypoint_benchmarks_carry_no_masks() -> None:
    s = Scores(subsets=[(0,)], alphas=(0.1,), pair_index=[0], n_correct=np.ones((1, 1, 1)),
               n_kps=np.ones(1))
    assert s.lt_acc is None and s.mean().tolist() == [[100.0]]


def test_the_search_api_refuses_datasets_not_scored_by_keypoints(tmp_path) -> None:
    # The commands refuse them by name; a script calling the library directly must not get
    # a search over PCK 0 either.
    import dataclasses

    from scotsearch.errors import ConfigError
    from scotsearch.search.beam_study import run_beam
    from scotsearch.search.tune import run_tune
    from tests.test_beam import small_evaluator

    ev = small_evaluator()
    ev.dataset = dataclasses.replace(ev.dataset, metric="mask")
    with pytest.raises(ConfigError, match="scored by masks"):
        run_beam(ev, study="s", storage=f"sqlite:///{tmp_path}/s.db", beam=1, max_layers=1)
    with pytest.raises(ConfigError, match="tune maximises keypoint PCK"):
        run_tune(ev, study_name="t", n_trials=1, storage=f"sqlite:///{tmp_path}/s.db",
                 layers=[0])
