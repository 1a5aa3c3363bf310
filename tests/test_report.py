"""Per-pair results of ``evaluate --output``, the TPS warp, figures and ``scotsearch report``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import use_synthetic_features
from PIL import Image

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
        # recorded to 1e-4 px
        assert np.allclose(np.array(p["pred_kps"]) * p["ratio"]["trg"], p["pred_kps_resized"],
                           atol=2e-4)
        assert p["trg_kps"] == pair.trg_kps.tolist() and p["src_image"] == str(pair.src_path)
        dist = np.linalg.norm(np.array(p["pred_kps"]) - pair.trg_kps, axis=1)
        assert p["distance"] == pytest.approx(dist.tolist(), abs=2e-4)
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


# --- scotsearch report on demo pairs ---------------------------------------------------------

def _fake_result(root: Path, n_pairs: int = 6) -> dict:
    """An evaluation result over demo test pairs, the k-th pair's predictions further off."""
    from scotsearch.data import load_dataset
    from scotsearch.data.images import image_size
    from scotsearch.details import split_statistics as stats

    ds = load_dataset("demo", root, "test")
    rng = np.random.default_rng(0)
    details = []
    for k, pair in enumerate(ds.pairs[:n_pairs]):
        geo = {p: ImageGeometry(0.5, image_size(p)) for p in (pair.src_path, pair.trg_path)}
        angle = rng.uniform(0, 2 * np.pi, size=pair.n_kps)
        thr = float(max(pair.trg_bbox[2:] - pair.trg_bbox[:2]))
        off = thr * rng.uniform(0, 0.06 * (k + 1), size=(pair.n_kps, 1))  # more wrong with k
        pred = pair.trg_kps + off * np.stack([np.cos(angle), np.sin(angle)], 1)
        details.append(pair_details(pair, pred * 0.5, geo[pair.src_path], geo[pair.trg_path],
                                    thres="bbox", alphas=(0.1,)))
    return {
        "kind": "scotsearch-evaluation", "scotsearch_version": "test",
        "produced_by": {"backbone": "resnet50", "weights": "random", "weights_digest": "ab" * 32,
                        "device": "cpu"},
        "dataset": {"name": "demo", "split": "test", "root": str(ds.root)},
        "layers": [0, 11, 12, 13], "match": {"variant": "ot-rhm-stair"}, "compat": "scot",
        "image_side": 300, "thres": "bbox", "alphas": [0.1],
        "statistics": stats(details, (0.1,), "bbox"), "pairs": details,
    }


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    from scotsearch.data.demo import ensure_demo

    base = tmp_path_factory.mktemp("report")
    ensure_demo(base / "demo", seed=0)
    result = _fake_result(base / "demo")
    (base / "eval.json").write_text(json.dumps(result))
    assert cli.main(["-q", "report", str(base / "eval.json"), "-o", str(base / "out")]) == 0
    return result, base / "out"


def test_report_draws_the_asked_pairs_at_their_size(demo_report):
    from scotsearch.figures import CURVE_SIZE
    from scotsearch.figures import TRANSFER_SIZE
    from scotsearch.figures import WARP_SIZE

    result, out = demo_report
    pck = [p["pck"][0] for p in result["pairs"]]
    assert len(set(pck)) > 3  # best, median and worst are three different pairs
    pngs = sorted(f.name for f in out.iterdir() if f.suffix == ".png")
    assert len(pngs) == 1 + 2 * 3, pngs  # the curve, then transfer + warp per pair
    order = np.argsort(-np.array(pck), kind="stable")
    for k in (order[0], order[(len(order) - 1) // 2], order[-1]):
        stem = "pair_" + re.sub(r"[^0-9A-Za-z_-]", "_", result["pairs"][k]["pair_id"])
        with Image.open(out / f"{stem}_transfer.png") as im:
            assert im.size == TRANSFER_SIZE
        with Image.open(out / f"{stem}_warp.png") as im:
            assert im.size == WARP_SIZE
            assert np.asarray(im.convert("L")).std() > 10  # a picture, not a blank frame
    with Image.open(out / "alpha_curve.png") as im:
        assert im.size == CURVE_SIZE


def _linked_images(page: Path) -> list[str]:
    return re.findall(r"<img [^>]*src=\"([^\"]+)\"", page.read_text(encoding="utf-8"))


def test_report_page_links_only_existing_local_images(demo_report):
    result, out = demo_report
    page = out / "index.html"
    text = page.read_text(encoding="utf-8")
    links = _linked_images(page)
    assert len(links) == 7 and all((out / src).is_file() for src in links)
    assert "http://" not in text and "https://" not in text and "<script" not in text
    hrefs = re.findall(r"<a [^>]*href=\"([^\"]+)\"", text)
    assert hrefs == ["pairs.csv"] and (out / "pairs.csv").is_file()
    rows = (out / "pairs.csv").read_text().splitlines()
    assert rows[0].startswith("pair_id,category,n_kps,") and len(rows) == 1 + len(result["pairs"])
    assert "ab" * 32 in text and "resnet50" in text  # what produced it
    for cat in result["statistics"]["per_category"]:
        assert f"<td>{cat}</td>" in text
    assert not [f for f in out.parent.iterdir() if f.name.startswith(".")]  # no temporaries


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_page_renders_in_headless_chromium(demo_report, tmp_path):
    _, out = demo_report
    shot = tmp_path / "shot.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1000,1600", "--hide-scrollbars",
           (out / "index.html").resolve().as_uri()]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HOME": str(tmp_path)})
    assert shot.is_file(), run.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size[0] >= 800 and im.size[1] >= 1000  # the window (scaled on HiDPI)
        pixels = np.asarray(im.convert("RGB"))
    # not blank: text, tables and photographs give many colours and a real spread
    assert pixels.std() > 20
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500


# --- bad input: one line, exit 2, nothing written --------------------------------------------

def _no_leftovers(folder: Path, before: set[str]) -> bool:
    return {f.name for f in folder.iterdir()} == before


@pytest.mark.parametrize("case", ["missing", "not-json", "wrong-kind", "old-evaluate",
                                  "unknown-pair", "missing-image", "malformed",
                                  "output-under-a-file", "output-holds-other-files",
                                  "output-read-only"])
def test_report_bad_input_is_one_line_and_writes_nothing(case, tmp_path, capsys, demo_report):
    result, _ = demo_report
    src = tmp_path / "eval.json"
    out = tmp_path / "rep"
    argv = ["report", str(src), "-o", str(out)]
    expect = {"missing": "does not exist", "not-json": "not a JSON file",
              "wrong-kind": "not a result of 'scotsearch evaluate --output'",
              "old-evaluate": "not a result of", "unknown-pair": "no pair 'nope'",
              "missing-image": "is missing", "output-under-a-file": "cannot be written",
              "output-holds-other-files": "holds something else", "malformed": "malformed",
              "output-read-only": "not writable"}[case]
    if case == "output-read-only" and os.geteuid() == 0:
        pytest.skip("root writes to read-only folders")
    if case != "missing":
        src.write_text(json.dumps(result))
    if case == "not-json":
        src.write_text("{not json")
    elif case == "wrong-kind":
        src.write_text(json.dumps({"kind": "beam-study", "pairs": []}))
    elif case == "old-evaluate":  # an evaluate --output of before this version
        src.write_text(json.dumps({"summary": {}, "pairs": [{"pair_id": "1", "pck": [1.0]}]}))
    elif case == "unknown-pair":
        argv += ["--pairs", "best,nope"]
    elif case == "missing-image":
        broken = json.loads(json.dumps(result))
        broken["pairs"][-1]["trg_image"] = str(tmp_path / "gone.jpg")
        broken["pairs"][-1]["pck"] = [-1.0]  # the worst: drawn by default
        src.write_text(json.dumps(broken))
    elif case == "output-under-a-file":
        (tmp_path / "f").write_text("x")
        argv[-1] = str(tmp_path / "f" / "rep")
    elif case == "output-holds-other-files":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif case == "malformed":
        broken = json.loads(json.dumps(result))
        del broken["statistics"]["alpha_curve"]
        src.write_text(json.dumps(broken))
    elif case == "output-read-only":
        (tmp_path / "ro").mkdir()
        argv[-1] = str(tmp_path / "ro" / "rep")
        os.chmod(tmp_path / "ro", 0o500)
    before = {f.name for f in tmp_path.iterdir()}
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("scotsearch: error: ") and expect in err, err
    assert _no_leftovers(tmp_path, before)
    if case == "output-holds-other-files":
        assert [f.name for f in out.iterdir()] == ["notes.txt"]
    elif case != "output-under-a-file":
        assert not out.exists()


def test_report_replaces_an_earlier_report(demo_report, tmp_path):
    result, _ = demo_report
    src = tmp_path / "eval.json"
    src.write_text(json.dumps(result))
    out = tmp_path / "rep"
    out.mkdir()
    (out / "index.html").write_text("old")
    (out / "stale.png").write_text("old")
    pair = result["pairs"][0]["pair_id"]
    assert cli.main(["-q", "report", str(src), "-o", str(out), "--pairs", pair]) == 0
    assert not (out / "stale.png").exists() and len(_linked_images(out / "index.html")) == 3
    assert sorted(f.name for f in tmp_path.iterdir()) == ["eval.json", "rep"]


# --- scotsearch report --study ---------------------------------------------------------------

@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """A real beam study on synthetic pairs and a tune-like study written through Optuna."""
    import optuna

    from scotsearch.config import MatchConfig
    from scotsearch.evaluate import Evaluator
    from scotsearch.presets import get_profile
    from scotsearch.search.beam_study import run_beam
    from scotsearch.testing import SyntheticSource
    from scotsearch.testing import synthetic_dataset

    url = f"sqlite:///{tmp_path_factory.mktemp('studies')}/s.db"
    ds = synthetic_dataset(3, image_hw=(32, 48), n_kps=5, seed=2)
    ev = Evaluator(ds, SyntheticSource("resnet50", informative=(1, 3), image_hw=(32, 48)),
                   match=MatchConfig.from_variant("ot-rhm", eps=0.05, exp2=0.5),
                   profile=get_profile("scot"))
    run_beam(ev, study="b", storage=url, beam=2, max_layers=3, layers=range(5), chunk=4)
    tune = optuna.create_study(study_name="t", storage=url, direction="maximize")
    rng = np.random.default_rng(0)
    for k in range(12):
        eps, it = float(rng.uniform(0.01, 0.5)), int(rng.integers(1, 50))
        pruned = k == 5
        tune.add_trial(optuna.trial.create_trial(
            params={"eps": eps, "n_iter": it},
            distributions={"eps": optuna.distributions.FloatDistribution(0.005, 0.5, log=True),
                           "n_iter": optuna.distributions.IntDistribution(1, 100)},
            value=50 + 10 * np.sin(eps * 10) + it / 10,
            user_attrs={"search": "tune", "layers": "1,3", "pruned": pruned,
                        "pck": float("nan") if pruned else 50 + 10 * np.sin(eps * 10) + it / 10},
        ))
    return url


def test_report_of_a_beam_study(studies, tmp_path):
    from scotsearch.study_report import BEAM_SIZE

    out = tmp_path / "beam"
    assert cli.main(["-q", "report", "--study", "b", "--storage", studies, "-o", str(out)]) == 0
    links = _linked_images(out / "index.html")
    assert links == ["beam_depths.png"] and (out / links[0]).is_file()
    with Image.open(out / "beam_depths.png") as im:
        assert im.size == BEAM_SIZE
    text = (out / "index.html").read_text()
    assert "Lineage of the best" in text and "<td>3</td>" in text  # a row for depth 3


def test_report_of_a_tune_study(studies, tmp_path):
    out = tmp_path / "tune"
    assert cli.main(["-q", "report", "--study", "t", "--storage", studies, "-o", str(out)]) == 0
    links = _linked_images(out / "index.html")
    assert links == ["history.png", "importances.png", "slices.png"]
    assert all((out / name).is_file() for name in links)
    assert "<td>n_iter</td>" not in (out / "index.html").read_text()  # a header, not a cell


@pytest.mark.parametrize("argv, expect", [
    (["--study", "nope"], "nope"),
    ([], "or --study NAME"),
    (["x.json", "--study", "b"], "not both"),
    (["x.json", "--artifact-dir", "a"], "goes with --study"),
])
def test_report_study_bad_input(argv, expect, studies, tmp_path, capsys):
    full = ["report", *argv, "--storage", studies, "-o", str(tmp_path / "r")]
    assert cli.main(full) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expect in err, err
    assert not (tmp_path / "r").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> bytes:
    from urllib.request import urlopen

    with urlopen(url, timeout=5) as resp:  # noqa: S310 - a localhost server of this test
        return bytes(resp.read())


def test_optuna_dashboard_serves_the_beam_study_and_its_artifacts(studies, demo_report,
                                                                   tmp_path):
    """A real optuna-dashboard, started on a free port, shows the note, trials and artifacts."""
    import sys
    import time

    pytest.importorskip("optuna_dashboard")
    exe = Path(sys.executable).parent / "optuna-dashboard"
    if not exe.is_file():
        pytest.skip("the optuna-dashboard script is not installed next to this Python")
    art = tmp_path / "artifacts"
    assert cli.main(["-q", "report", "--study", "b", "--storage", studies, "-o",
                     str(tmp_path / "r"), "--artifact-dir", str(art)]) == 0
    # an evaluation's report (per-pair CSV, pair figures) published on the same study
    _, evaluated = demo_report
    assert cli.main(["-q", "report", str(evaluated.parent / "eval.json"), "--study", "b",
                     "--storage", studies, "-o", str(tmp_path / "e"),
                     "--artifact-dir", str(art)]) == 0
    port = _free_port()
    server = subprocess.Popen([str(exe), studies, "--artifact-dir", str(art), "--port",
                               str(port), "--host", "127.0.0.1", "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                listing = json.loads(_get(f"{base}/api/studies"))
                break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                time.sleep(0.2)
        else:
            pytest.fail("optuna-dashboard did not answer within 20 s")
        sid = next(s["study_id"] for s in listing["study_summaries"]
                   if s["study_name"] == "b")
        detail = json.loads(_get(f"{base}/api/studies/{sid}"))
        assert len(detail["trials"]) == 17  # every beam candidate
        assert "scotsearch beam study" in detail["note"]["body"]
        names = sorted(a["filename"] for a in detail["artifacts"])
        best = sorted(detail["best_trials"], key=lambda t: t["number"])[0]["number"]
        assert names[:2] == ["alpha_curve.png", "beam_depths.png"] and len(names) == 5 + 8
        assert "pairs.csv" in names and "candidates.csv" in names
        assert f"trial-{best}-metrics.csv" in names
        arts = {a["filename"]: a["artifact_id"] for a in detail["artifacts"]}
        png = _get(f"{base}/artifacts/{sid}/{arts['beam_depths.png']}")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        rows = _get(f"{base}/artifacts/{sid}/{arts['candidates.csv']}").decode().splitlines()
        assert rows[0].startswith("trial,value,") and len(rows) == 1 + 17
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_beam_command_leaves_a_note_with_its_command_line(tmp_path, monkeypatch):
    """`scotsearch beam` saves the command line and configuration as the study's note."""
    pytest.importorskip("optuna_dashboard")
    import optuna
    from optuna_dashboard import get_note

    monkeypatch.setattr(cli, "COMMANDS", {"beam": "beam", "report": "report"})
    use_synthetic_features(monkeypatch, dataset=True)
    url = f"sqlite:///{tmp_path}/n.db"
    argv = ["-q", "beam", "--backbone", "resnet50", "--layers", "0-2", "--beam", "1",
            "--max-layers", "2", "--sim", "cos", "--storage", url, "--study", "noted"]
    assert cli.main(argv) == 0
    note = get_note(optuna.load_study(study_name="noted", storage=url))
    assert "scotsearch -q beam --backbone resnet50 --layers 0-2" in note
    assert "| backbone | `resnet50` |" in note and "**Best**: layers" in note
    # a report published to the dashboard keeps the command line in its note
    assert cli.main(["-q", "report", "--study", "noted", "--storage", url, "-o",
                     str(tmp_path / "r"), "--artifact-dir", str(tmp_path / "a")]) == 0
    note = get_note(optuna.load_study(study_name="noted", storage=url))
    assert "scotsearch -q beam --backbone resnet50" in note and "Report: `scotsearch" in note
