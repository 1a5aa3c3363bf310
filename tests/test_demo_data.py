"""The embedded demo benchmark: SPair-71k layout, determinism, real correspondences, atomicity."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from scotsearch.data import demo
from scotsearch.data.demo import DEMO_VERSION
from scotsearch.data.demo import MANIFEST_NAME
from scotsearch.data.demo import _install
from scotsearch.data.demo import _photos
from scotsearch.data.demo import _render
from scotsearch.data.demo import _spair_files
from scotsearch.data.demo import _warps
from scotsearch.data.demo import ensure_demo
from scotsearch.errors import ConfigError
from scotsearch.errors import DataError


# Field names, in SPair-71k's order, and their JSON types (checked against a real
# PairAnnotation file, e.g. test/000001-2008_002719-2008_004100:aeroplane.json).
PAIR_FIELDS = {
    "pair_id": int,
    "filename": str,
    "src_imname": str,
    "trg_imname": str,
    "src_imsize": list,
    "trg_imsize": list,
    "src_bndbox": list,
    "trg_bndbox": list,
    "category": str,
    "src_pose": str,
    "trg_pose": str,
    "src_kps": list,
    "trg_kps": list,
    "kps_ids": list,
    "mirror": int,
    "viewpoint_variation": int,
    "scale_variation": int,
    "truncation": int,
    "occlusion": int,
}
IMAGE_FIELDS = ("filename", "image_width", "image_height", "category", "bndbox", "kps")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seed 0, generated once for the read-only tests."""
    return ensure_demo(tmp_path_factory.mktemp("demo"), seed=0)


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Seed 0 generated over the debris a killed run leaves: a partial tree, stale temps.

    Shared by the atomicity and determinism tests so seed 0 is generated only twice.
    """
    root = tmp_path_factory.mktemp("debris")
    partial = root / "seed0" / "SPair-71k"
    (partial / "Layout" / "large").mkdir(parents=True)
    (partial / "Layout" / "large" / "val.txt").write_text("000001-a-b:junk\n")
    (partial / "leftover.txt").write_text("from a half-written run")
    # A temporary tree of a process that no longer exists, and one of a live process.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = root / f".seed0.tmp-{_install._host()}-{dead.pid}-0123456789ab"
    (stale / "SPair-71k").mkdir(parents=True)
    (stale / "SPair-71k" / "junk.txt").write_text("x")
    live = root / f".seed0.tmp-{_install._host()}-{os.getpid()}-ba9876543210"
    live.mkdir()
    spair = ensure_demo(root, seed=0)
    return {"root": root, "spair": spair, "stale": stale, "live": live}


def _pair_files(spair: Path, split: str) -> list[Path]:
    lines = (spair / "Layout" / "large" / f"{split}.txt").read_text().splitlines()
    return [spair / "PairAnnotation" / split / f"{line}.json" for line in lines]


def _tree(spair: Path) -> dict[str, bytes]:
    files = (p for p in spair.rglob("*") if p.is_file())
    return {p.relative_to(spair).as_posix(): p.read_bytes() for p in files}


# ----------------------------------------------------------------------------------------
# Layout and fields


def test_layout_counts_and_names(demo_root: Path) -> None:
    assert demo_root.name == "SPair-71k" and demo_root.parent.name == "seed0"
    manifest = json.loads((demo_root / MANIFEST_NAME).read_text())
    assert manifest["version"] == DEMO_VERSION and manifest["seed"] == 0
    cats = sorted(p.name for p in (demo_root / "JPEGImages").iterdir())
    assert cats == list(demo.DEMO_CATEGORIES) and len(cats) == 6
    for split in demo.DEMO_SPLITS:
        text = (demo_root / "Layout" / "large" / f"{split}.txt").read_text()
        assert text.endswith("\n")
        lines = text.splitlines()
        assert len(lines) == 6 * demo.PAIRS_PER_CATEGORY <= 24
        assert manifest["pairs"][split] == len(lines)
        for i, line in enumerate(lines, 1):
            stem, category = line.split(":")
            pid, src, trg = stem.split("-")
            assert pid == f"{i:06d}" and category in cats
            prefix = f"{category}_{split}_"
            assert src == f"{prefix}00" and trg.startswith(prefix) and trg != src
            assert (demo_root / "JPEGImages" / category / f"{src}.jpg").is_file()
            assert (demo_root / "JPEGImages" / category / f"{trg}.jpg").is_file()
        per_cat = [line.split(":")[1] for line in lines]
        assert all(per_cat.count(c) == demo.PAIRS_PER_CATEGORY for c in cats)
    # val and test use different images.
    val = {n for f in _pair_files(demo_root, "val") for n in f.stem.split(":")[0].split("-")[1:]}
    test = {n for f in _pair_files(demo_root, "test") for n in f.stem.split(":")[0].split("-")[1:]}
    assert not val & test


def test_pair_json_fields_and_types(demo_root: Path) -> None:
    for split in demo.DEMO_SPLITS:
        for path in _pair_files(demo_root, split):
            raw = path.read_text()
            assert not raw.endswith("\n")  # single-line json.dumps, as SPair's files
            ann = json.loads(raw)
            assert list(ann) == list(PAIR_FIELDS)
            for key, typ in PAIR_FIELDS.items():
                assert type(ann[key]) is typ, (path.name, key)
            assert ann["filename"] == path.stem
            assert ann["pair_id"] == int(path.stem[:6])
            cat = ann["category"]
            assert cat == path.stem.split(":")[1]
            for side in ("src", "trg"):
                name = ann[f"{side}_imname"]
                assert name.endswith(".jpg")
                with Image.open(demo_root / "JPEGImages" / cat / name) as im:
                    w, h = im.size
                    assert im.mode == "RGB"
                assert ann[f"{side}_imsize"] == [w, h, 3]
                assert 240 <= max(w, h) <= 400
                box = ann[f"{side}_bndbox"]
                assert len(box) == 4 and all(type(v) is int for v in box)
                assert 0 <= box[0] < box[2] <= w - 1 and 0 <= box[1] < box[3] <= h - 1
                kps = ann[f"{side}_kps"]
                assert all(len(k) == 2 and all(type(v) is int for v in k) for k in kps)
            n = len(ann["kps_ids"])
            assert 5 <= n <= 20
            assert len(ann["src_kps"]) == len(ann["trg_kps"]) == n
            assert all(type(i) is str for i in ann["kps_ids"])
            assert len(set(ann["kps_ids"])) == n
            assert ann["src_pose"] == ann["trg_pose"] == "Unspecified"
            assert ann["viewpoint_variation"] in (0, 1, 2) and ann["scale_variation"] in (0, 1, 2)
            assert ann["mirror"] == ann["truncation"] == ann["occlusion"] == 0


def test_keypoints_inside_images(demo_root: Path) -> None:
    for split in demo.DEMO_SPLITS:
        for path in _pair_files(demo_root, split):
            ann = json.loads(path.read_text())
            for side in ("src", "trg"):
                w, h, _ = ann[f"{side}_imsize"]
                k = np.array(ann[f"{side}_kps"])
                assert (k >= 2).all() and (k[:, 0] <= w - 3).all() and (k[:, 1] <= h - 3).all()


def test_image_annotations_agree_with_pairs(demo_root: Path) -> None:
    for split in demo.DEMO_SPLITS:
        for path in _pair_files(demo_root, split):
            ann = json.loads(path.read_text())
            for side in ("src", "trg"):
                stem = ann[f"{side}_imname"][: -len(".jpg")]
                img_path = demo_root / "ImageAnnotation" / ann["category"] / f"{stem}.json"
                img = json.loads(img_path.read_text())
                assert all(k in img for k in IMAGE_FIELDS)
                assert img["filename"] == ann[f"{side}_imname"]
                assert [img["image_width"], img["image_height"], 3] == ann[f"{side}_imsize"]
                assert img["bndbox"] == ann[f"{side}_bndbox"]
                # kps_ids index the category's keypoint list, as in SPair.
                for kid, xy in zip(ann["kps_ids"], ann[f"{side}_kps"]):
                    assert img["kps"][kid] == xy


def test_variation_levels_all_present(demo_root: Path) -> None:
    for split in demo.DEMO_SPLITS:
        anns = [json.loads(p.read_text()) for p in _pair_files(demo_root, split)]
        for factor in ("viewpoint_variation", "scale_variation"):
            assert {a[factor] for a in anns} == {0, 1, 2}, (split, factor)


def test_read_by_the_spair_reader(demo_root: Path) -> None:
    from scotsearch.data import check_keypoints_inside
    from scotsearch.data import image_size
    from scotsearch.data import load_dataset
    from scotsearch.data import read_spair

    for split in demo.DEMO_SPLITS:
        ds = read_spair(demo_root, split, name="demo")
        assert len(ds.pairs) == 24 and ds.categories == list(demo.DEMO_CATEGORIES)
        for pair in ds.pairs:
            check_keypoints_inside(pair, image_size(pair.src_path), image_size(pair.trg_path))
            assert set(pair.variation) == {
                "viewpoint_variation",
                "scale_variation",
                "truncation",
                "occlusion",
            }
    # load_dataset("demo") reuses the tree under its root instead of generating another.
    ds = load_dataset("demo", demo_root.parent.parent, "val")
    assert ds.name == "demo" and ds.root == demo_root


# ----------------------------------------------------------------------------------------
# The keypoints really correspond


def _gray(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return ndimage.gaussian_filter(np.asarray(im.convert("L"), dtype=np.float64), 1.5)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = (a - a.mean()) / (a.std() + 1e-6)
    b = (b - b.mean()) / (b.std() + 1e-6)
    return float((a * b).mean())


def _patch(g: np.ndarray, x: int, y: int, r: int = 4) -> np.ndarray | None:
    if x < r or y < r or x >= g.shape[1] - r or y >= g.shape[0] - r:
        return None
    return g[y - r : y + r + 1, x - r : x + r + 1]


def _correspondence_scores(
    spair: Path, split: str, warp: str
) -> tuple[list[float], list[float]]:
    """Per-pair mean patch NCC at the annotated target keypoints and at offset positions."""
    manifest = json.loads((spair / MANIFEST_NAME).read_text())
    rng = np.random.default_rng(0)
    matched, offset = [], []
    for path in _pair_files(spair, split):
        ann = json.loads(path.read_text())
        if manifest["warps"][split][ann["filename"]]["target"]["warp"] != warp:
            continue
        src = _gray(spair / "JPEGImages" / ann["category"] / ann["src_imname"])
        trg = _gray(spair / "JPEGImages" / ann["category"] / ann["trg_imname"])
        m, o = [], []
        for (xs, ys), (xt, yt) in zip(ann["src_kps"], ann["trg_kps"]):
            a, b = _patch(src, xs, ys), _patch(trg, xt, yt)
            ang = rng.uniform(0, 2 * np.pi)
            c = _patch(trg, xt + round(15 * np.cos(ang)), yt + round(15 * np.sin(ang)))
            if a is None or b is None or c is None:
                continue
            m.append(_ncc(a, b))
            o.append(_ncc(a, c))
        if m:
            matched.append(float(np.mean(m)))
            offset.append(float(np.mean(o)))
    return matched, offset


@pytest.mark.parametrize("warp", ["homography", "tps", "stereo+homography", "stereo+tps"])
def test_keypoints_correspond(demo_root: Path, warp: str) -> None:
    matched, offset = [], []
    for split in demo.DEMO_SPLITS:
        m, o = _correspondence_scores(demo_root, split, warp)
        matched += m
        offset += o
    if not matched:
        pytest.skip(f"seed 0 has no {warp} pair")
    matched_a, offset_a = np.array(matched), np.array(offset)
    # Patches at the annotated keypoints look alike despite rotation, zoom and photometric
    # jitter; patches 15 px away do not. An error of a few pixels would already fail this.
    assert matched_a.min() > 0.5, matched
    assert matched_a.mean() > 0.75
    assert offset_a.mean() < 0.35
    assert (matched_a - offset_a).min() > 0.25


def test_homography_keypoints_exact_before_rounding() -> None:
    # A pure-homography view maps photo points exactly and back.
    g = _warps._view_homography((512, 512), (300, 240), 17.0, 1.3, (0.1, -0.12), (0.05, 0.0))
    view = _warps._View("v", (300, 240), g)
    q = np.random.default_rng(0).uniform(50, 450, (40, 2))
    p, ok = view.from_photo(q)
    back, ok2 = view.to_photo(p)
    assert ok.all() and ok2.all()
    np.testing.assert_allclose(back, q, atol=1e-9)


# ----------------------------------------------------------------------------------------
# Thin-plate spline


def test_tps_inverse_accuracy() -> None:
    rng = np.random.default_rng(3)
    made = 0
    for _ in range(20):
        wh = (int(rng.integers(240, 401)), int(rng.integers(180, 401)))
        tps = _warps._random_tps(rng, wh, 0.018)  # the strongest jitter the generator uses
        if tps is None:
            continue
        made += 1
        src = rng.uniform(0, 1, (200, 2)) * (np.array(wh) - 1)
        # Forward-solve the target keypoints, then map back with the spline itself.
        trg = tps.inverse(src)
        assert np.abs(tps(trg) - src).max() < 0.05
        assert np.abs(tps(trg) - src).max() < 1e-6  # in fact far tighter
        # The spline really moves points, so the check is not vacuous.
        assert np.abs(trg - src).max() > 1.0
        if made <= 3:
            # Image resampling uses an interpolated dense displacement: a small fraction
            # of a pixel off the exact spline (evaluated per pixel here, hence only thrice).
            dense = _render._dense_displacement(tps, wh)
            yy, xx = np.mgrid[0 : wh[1], 0 : wh[0]]
            p = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float64)
            assert np.abs(dense - (tps(p) - p)).max() < 0.05
    assert made >= 10


def test_tps_interpolates_control_points() -> None:
    rng = np.random.default_rng(0)
    ctrl = rng.uniform(0, 300, (16, 2))
    disp = rng.normal(0, 4, (16, 2))
    tps = _warps._Tps(ctrl, disp)
    np.testing.assert_allclose(tps(ctrl), ctrl + disp, atol=1e-8)
    # Analytic Jacobian against central differences.
    x = rng.uniform(0, 300, (10, 2))
    eps = 1e-4
    dx, dy = np.array([eps, 0.0]), np.array([0.0, eps])
    num = np.stack(
        [(tps(x + dx) - tps(x - dx)) / (2 * eps), (tps(x + dy) - tps(x - dy)) / (2 * eps)], axis=2
    )
    np.testing.assert_allclose(tps.jacobian(x), num, atol=1e-5)


# ----------------------------------------------------------------------------------------
# Determinism, reuse and atomic installation


def test_same_seed_identical_files(demo_root: Path, regenerated: dict[str, Path]) -> None:
    a, b = _tree(demo_root), _tree(regenerated["spair"])
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)


def test_different_seed_differs(demo_root: Path, tmp_path: Path) -> None:
    other = ensure_demo(tmp_path, seed=1)
    assert other == tmp_path / "seed1" / "SPair-71k"
    a, b = _tree(demo_root), _tree(other)
    assert a[MANIFEST_NAME] != b[MANIFEST_NAME]
    common = sorted(k for k in a.keys() & b.keys() if k.startswith("PairAnnotation/"))
    assert sum(a[k] != b[k] for k in common) > len(common) // 2 or not common
    jpgs = sorted(k for k in a.keys() & b.keys() if k.endswith(".jpg"))
    assert jpgs and all(a[k] != b[k] for k in jpgs)


def test_partial_tree_and_stale_temporaries(regenerated: dict[str, Path]) -> None:
    root, spair = regenerated["root"], regenerated["spair"]
    assert _install._is_complete(spair, 0)
    assert not (spair / "leftover.txt").exists()
    assert "junk" not in (spair / "Layout" / "large" / "val.txt").read_text()
    assert not regenerated["stale"].exists()  # its process is gone: removed
    assert regenerated["live"].exists()  # a live process's temp is left alone
    leftovers = [p.name for p in root.iterdir() if p.name.startswith(".seed0.t")]
    assert leftovers == [regenerated["live"].name]


def test_second_call_reuses(demo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = demo_root / MANIFEST_NAME
    before = manifest.stat().st_mtime_ns

    def fail(*args: object) -> None:
        raise AssertionError("regenerated a complete tree")

    monkeypatch.setattr(_install, "_write_dataset", fail)
    assert ensure_demo(demo_root.parent.parent, seed=0) == demo_root
    assert ensure_demo(demo_root.parent.parent, 0) == demo_root
    assert manifest.stat().st_mtime_ns == before


def test_incomplete_trees_are_rejected(demo_root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "SPair-71k"
    shutil.copytree(demo_root, copy)
    assert _install._is_complete(copy, 0)
    assert not _install._is_complete(copy, 1)  # another seed's tree

    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    jpg = next(k for k in manifest["files"] if k.endswith(".jpg"))
    data = (copy / jpg).read_bytes()
    (copy / jpg).write_bytes(data[: len(data) // 2])  # truncated file
    assert not _install._is_complete(copy, 0)
    (copy / jpg).write_bytes(data)
    assert _install._is_complete(copy, 0)

    (copy / jpg).unlink()  # missing file
    assert not _install._is_complete(copy, 0)
    (copy / jpg).write_bytes(data)

    old = dict(manifest, version=DEMO_VERSION - 1)  # older generator
    (copy / MANIFEST_NAME).write_text(json.dumps(old))
    assert not _install._is_complete(copy, 0)
    (copy / MANIFEST_NAME).write_text("{not json")
    assert not _install._is_complete(copy, 0)
    (copy / MANIFEST_NAME).unlink()
    assert not _install._is_complete(copy, 0)


def _fake_writer(barrier: threading.Barrier | None = None):  # type: ignore[no-untyped-def]
    """A stand-in generator: one data file plus a valid manifest naming its writer."""

    def write(spair: Path, seed: int) -> None:
        spair.mkdir(parents=True)
        (spair / "data.txt").write_text(threading.current_thread().name)
        if barrier is not None:
            barrier.wait(timeout=10)  # both callers are mid-generation together
        manifest = {
            "generator": _spair_files._GENERATOR,
            "version": DEMO_VERSION,
            "seed": seed,
            "files": {"data.txt": (spair / "data.txt").stat().st_size},
        }
        (spair / MANIFEST_NAME).write_text(json.dumps(manifest))

    return write


def test_concurrent_callers_end_with_one_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_install, "_write_dataset", _fake_writer(threading.Barrier(2)))
    results: dict[str, Path] = {}
    errors: list[BaseException] = []

    def call(name: str) -> None:
        try:
            results[name] = ensure_demo(tmp_path, seed=0)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=call, args=(n,), name=n) for n in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert results["A"] == results["B"] == tmp_path / "seed0" / "SPair-71k"
    assert (results["A"] / "data.txt").read_text() in ("A", "B")
    assert _install._is_complete(results["A"], 0)
    # The loser's temporary tree is gone; only the lock file remains beside seed0.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".seed0.lock", "seed0"]


def test_failed_generation_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(spair: Path, seed: int) -> None:
        (spair / "JPEGImages").mkdir(parents=True)
        (spair / "JPEGImages" / "half.jpg").write_bytes(b"\xff\xd8")
        raise KeyboardInterrupt

    monkeypatch.setattr(_install, "_write_dataset", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo(tmp_path, seed=0)
    assert list(tmp_path.iterdir()) == []
    # The next call generates normally.
    monkeypatch.setattr(_install, "_write_dataset", _fake_writer())
    spair = ensure_demo(tmp_path, seed=0)
    assert _install._is_complete(spair, 0)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed(tmp_path: Path, seed: object) -> None:
    with pytest.raises(ConfigError):
        ensure_demo(tmp_path, seed=seed)  # type: ignore[arg-type]


def test_missing_photo_is_a_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_photos, "_data_dir", lambda: tmp_path / "nowhere")
    with pytest.raises(DataError, match="sample photo not found"):
        ensure_demo(tmp_path / "out", seed=0)
    assert not (tmp_path / "out" / "seed0").exists()
