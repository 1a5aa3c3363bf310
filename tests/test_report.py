"""Per-pair results of ``evaluate --output``, the TPS warp, figures and ``scotsearch report``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scotsearch import cli
from scotsearch.data.pairs import Pair
from scotsearch.details import ImageGeometry
from scotsearch.details import pair_details
from scotsearch.details import split_statistics
from scotsearch.tps import fit_tps
from scotsearch.tps import warp_image


# --- statistics against a hand-computed example ---------------------------------------------

def _pair(pid: str, cat: str, trg: list[list[float]]) -> Pair:
    t = np.array(trg, dtype=np.float64)
    return Pair(pair_id=pid, category=cat, src_path=Path(f"{pid}s.jpg"),
                trg_path=Path(f"{pid}t.jpg"), src_kps=t.copy(), trg_kps=t,
                src_bbox=np.array([0.0, 0.0, 100.0, 50.0]),
                trg_bbox=np.array([0.0, 0.0, 100.0, 50.0]),  # longer side 100: threshold 100
                variation={"viewpoint_variation": 0 if cat == "x" else 2})


HALF = ImageGeometry(ratio=0.5, orig_wh=(200, 100))  # target shrunk by 2: resized = orig / 2
ONE = ImageGeometry(ratio=1.0, orig_wh=(200, 100))


def _example() -> list[dict]:
    # Predictions are given in original pixels here and passed halved (resized pixels).
    # alpha 0.1 -> 10 px, alpha 0.2 -> 20 px.
    a = _pair("A", "x", [[10, 10], [50, 40]])
    a_pred = [[10, 10], [66, 40]]  # distances 0, 16: alpha .1 1/2, alpha .2 2/2
    b = _pair("B", "x", [[10, 10], [20, 10], [30, 10], [40, 10]])
    b_pred = [[10, 10], [25, 10], [45, 10], [10, 10]]  # 0, 5, 15, 30: 2/4 and 3/4
    c = _pair("C", "y", [[70, 30]])
    c_pred = [[70, 30]]  # 0: 1/1 and 1/1
    return [
        pair_details(p, np.array(q) * 0.5, ONE, HALF, thres="bbox", alphas=(0.1, 0.2))
        for p, q in ((a, a_pred), (b, b_pred), (c, c_pred))
    ]


def test_statistics_match_a_hand_computed_example():
    details = _example()
    a, b, c = details
    assert a["correct"] == [[True, False], [True, True]]
    assert b["correct"] == [[True, True, False, False], [True, True, True, False]]
    assert b["distance"] == pytest.approx([0, 5, 15, 30])
    assert b["distance_rel"] == pytest.approx([0, 0.05, 0.15, 0.30])
    assert a["pred_kps"] == [[10, 10], [66, 40]]  # resized / ratio
    assert a["pred_kps_resized"] == [[5, 5], [33, 20]]
    assert a["threshold"] == 100.0 and a["pck"] == [0.5, 1.0]
    assert (b["n_src_points"], b["n_unique_matches"]) == (4, 3)  # two predictions coincide

    s = split_statistics(details, (0.1, 0.2), "bbox")
    # per image: mean of (1/2, 2/4, 1/1) and of (2/2, 3/4, 1/1)
    assert s["pck_per_image"] == pytest.approx([200 / 3, 275 / 3])
    # per point: (1 + 2 + 1) / 7 and (2 + 3 + 1) / 7
    assert s["pck_per_point"] == pytest.approx([400 / 7, 600 / 7])
    x, y = s["per_category"]["x"], s["per_category"]["y"]
    assert (x["n_pairs"], x["n_kps"], y["n_pairs"], y["n_kps"]) == (2, 6, 1, 1)
    assert x["pck_per_image"] == pytest.approx([50.0, 87.5])
    assert x["pck_per_point"] == pytest.approx([50.0, 500 / 6])
    assert y["pck_per_image"] == pytest.approx([100.0, 100.0])
    # categories equal: (50 + 100) / 2, (87.5 + 100) / 2; by pairs: (2 * 50 + 100) / 3, ...
    assert s["category_mean"]["unweighted"] == pytest.approx([75.0, 93.75])
    assert s["category_mean"]["weighted_by_pairs"] == pytest.approx([200 / 3, 275 / 3])
    assert s["per_factor"]["viewpoint_variation"]["easy"]["pck_per_image"] == \
        pytest.approx([50.0, 87.5])
    assert set(s["per_factor"]["viewpoint_variation"]) == {"easy", "hard"}
    curve = s["alpha_curve"]
    at = {round(al, 2): (i, p) for al, i, p in
          zip(curve["alphas"], curve["pck_per_image"], curve["pck_per_point"])}
    assert at[0.1] == pytest.approx((200 / 3, 400 / 7))
    assert at[0.01] == pytest.approx(((1 / 2 + 1 / 4 + 1) / 3 * 100, 300 / 7))  # zeros only
    assert at[0.25] == pytest.approx(((1 + 3 / 4 + 1) / 3 * 100, 600 / 7))
    assert s["table3"] == pytest.approx({"src_points": 7 / 3, "unique_matches": 2.0})
    assert s["protocol"]["threshold_basis"] == "bbox" and s["protocol"]["alphas"] == [0.1, 0.2]


def test_a_missing_prediction_is_null_and_wrong():
    p = _pair("D", "x", [[10, 10], [20, 20]])
    d = pair_details(p, np.array([[np.nan, np.nan], [10.0, 10.0]]), ONE, HALF, thres="bbox",
                     alphas=(0.1,))
    assert d["pred_kps"][0] == [None, None] and d["distance"][0] is None
    assert d["correct"] == [[False, True]] and d["n_unique_matches"] == 1
    json.dumps(d, allow_nan=False)  # valid JSON, no NaN


# --- evaluate --output through the command, on synthetic pairs -------------------------------

def test_evaluate_output_records_per_pair_and_split_fields(tmp_path, monkeypatch):
    from scotsearch.commands import common
    from scotsearch.testing import SyntheticSource
    from scotsearch.testing import synthetic_dataset

    ds = synthetic_dataset(4, image_hw=(32, 48), n_kps=5, seed=3)
    src = SyntheticSource("resnet50", informative=(1, 3), image_hw=(32, 48))
    monkeypatch.setattr(cli, "COMMANDS", {"evaluate": "evaluate"})
    monkeypatch.setattr(common, "open_dataset", lambda args: ds)
    monkeypatch.setattr(common, "feature_source", lambda args, device: src)
    out = tmp_path / "e.json"
    assert cli.main(["-q", "evaluate", "--layers", "1,3", "--backbone", "resnet50",
                     "--device", "cpu", "--alpha", "0.05,0.1", "--thres", "bbox",
                     "--engine", "eager", "--output", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["kind"] == "scotsearch-evaluation" and r["alphas"] == [0.05, 0.1]
    s = r["statistics"]
    assert s["pck_per_image"] == pytest.approx(r["summary"]["pck"])
    assert s["pck_per_point"] == pytest.approx(r["summary"]["pck_pooled"])
    assert s["protocol"]["threshold_basis"] == "bbox"
    for p, pair in zip(r["pairs"], ds.pairs):
        assert len(p["correct"]) == 2 and len(p["correct"][0]) == pair.n_kps
        assert p["pck"] == pytest.approx([np.mean(c) for c in p["correct"]])
        assert np.allclose(np.array(p["pred_kps"]) * p["ratio"]["trg"], p["pred_kps_resized"])
        assert p["trg_kps"] == pair.trg_kps.tolist() and p["src_image"] == str(pair.src_path)
        dist = np.linalg.norm(np.array(p["pred_kps"]) - pair.trg_kps, axis=1)
        assert p["distance"] == pytest.approx(dist.tolist())
        assert p["n_src_points"] == pair.n_kps and 1 <= p["n_unique_matches"] <= pair.n_kps


# --- thin-plate spline -----------------------------------------------------------------------

def _blobs(points: np.ndarray, hw: tuple[int, int], sigma: float = 1.5) -> np.ndarray:
    ys, xs = np.mgrid[0 : hw[0], 0 : hw[1]]
    img = np.zeros(hw)
    for x, y in points:
        img += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return img


def test_tps_maps_source_keypoints_onto_predictions():
    rng = np.random.default_rng(0)
    src = np.array([[20, 20], [80, 25], [50, 50], [25, 70], [75, 72], [50, 15]], dtype=float)
    pred = src + rng.uniform(-6, 6, size=src.shape) + [4, -3]
    assert np.abs(fit_tps(src, pred)(src) - pred).max() < 0.5
    # the image: a blob at each source keypoint is drawn at its predicted position
    warped, inside = warp_image(_blobs(src, (90, 100)), src, pred, (90, 100))
    ys, xs = np.mgrid[0:90, 0:100]
    for x, y in pred:
        win = (np.abs(xs - x) <= 3) & (np.abs(ys - y) <= 3)
        w = warped * win
        centre = np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()
        assert np.hypot(*(centre - [x, y])) < 0.5
    assert inside.any()


def test_tps_is_the_identity_for_identical_keypoints():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    kps = np.array([[5.0, 5.0], [50, 8], [30, 30], [10, 35], [55, 33]])
    warped, inside = warp_image(img, kps, kps, (40, 60))
    assert inside.all() and np.array_equal(warped, img)
    grid = np.stack(np.meshgrid(np.arange(60.0), np.arange(40.0)), -1).reshape(-1, 2)
    assert np.abs(fit_tps(kps, kps)(grid) - grid).max() < 1e-6


@pytest.mark.parametrize("src", [
    np.zeros((0, 2)),                                    # no point: identity
    np.array([[3.0, 4.0]]),                              # one: translation
    np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]),      # collinear
    np.array([[1.0, 1.0], [1.0, 1.0], [5.0, 2.0], [2.0, 7.0]]),  # a repeated point
    np.array([[1.0, 1.0], [np.nan, 2.0], [5.0, 2.0], [2.0, 7.0]]),  # a missing prediction
])
def test_tps_degenerate_points_give_a_finite_warp(src):
    dst = src + 2.0
    img = np.full((12, 12), 7, dtype=np.uint8)
    warped, _ = warp_image(img, src, dst, (12, 12))
    assert warped.shape == (12, 12) and warped.dtype == np.uint8
    f = fit_tps(src, dst)
    keep = np.isfinite(src).all(1)
    assert np.abs(f(src[keep]) - dst[keep]).max(initial=0) < 0.5
