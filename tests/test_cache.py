"""The on-disk feature cache: keys, atomic writes, corruption, concurrency, parity."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scotsearch.backbones import extract_features
from scotsearch.backbones import load_backbone
from scotsearch.cache import CachedSource
from scotsearch.cache import EntryError
from scotsearch.cache import FeatureCache
from scotsearch.cache import MemorySource
from scotsearch.cache import build_cache
from scotsearch.cache import extract_batch
from scotsearch.cache import make_key
from scotsearch.cache import open_source
from scotsearch.cache import prune
from scotsearch.cache import verify
from scotsearch.cache._format import FP16_MAX
from scotsearch.cache._format import decode_layer
from scotsearch.cache._format import encode_layer
from scotsearch.cache._format import roundtrip
from scotsearch.cache._sources import _Memo
from scotsearch.config import MatchConfig
from scotsearch.data.images import load_image
from scotsearch.data.pairs import Dataset
from scotsearch.data.pairs import Pair
from scotsearch.evaluate import Evaluator
from scotsearch.presets import get_profile


ROOT = Path(__file__).resolve().parents[1]
#: Small network inputs keep every test fast: 64x48 images stay 64x48.
PROFILE = dataclasses.replace(get_profile("scot"), image_side=64)
CPU = torch.device("cpu")
N_LAYERS = 17  # resnet50


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny convolutions: one intra-op thread is fastest, and immune to busy-waiting OpenMP
    threads fighting other processes for the cores (10-40x slower on a loaded 2-core box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _images(folder: Path, n: int, seed: int = 0, hw: tuple[int, int] = (48, 64)) -> list[Path]:
    """Smooth random JPEGs (upsampled noise, so the JPEG codec keeps their structure)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        small = rng.integers(0, 256, size=(hw[0] // 8, hw[1] // 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((hw[1] - 4 * (i % 2), hw[0]), Image.BILINEAR)
        path = folder / f"img{seed}_{i}.jpg"
        img.save(path, quality=95)
        out.append(path)
    return out


def _source(cache_dir: Path | None, *, weights: str = "random", seed: int = 0, profile=PROFILE):
    return open_source(backbone="resnet50", weights=weights, seed=seed, profile=profile,
                       cache_dir=cache_dir, device=CPU, allow_random_fallback=False)


def _dataset(paths: list[Path], n_pairs: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    pairs = []
    for k in range(n_pairs):
        src, trg = paths[k % len(paths)], paths[(k + 1) % len(paths)]
        (ws, hs), (wt, ht) = Image.open(src).size, Image.open(trg).size
        skp = rng.uniform([4, 4], [ws - 4, hs - 4], size=(5, 2))
        tkp = np.clip(skp + rng.normal(0, 3, size=(5, 2)), 1, [wt - 2, ht - 2])
        box = np.array([tkp[:, 0].min(), tkp[:, 1].min(), tkp[:, 0].max(), tkp[:, 1].max()])
        pairs.append(Pair(pair_id=str(k), category="x", src_path=src, trg_path=trg, src_kps=skp,
                          trg_kps=tkp, src_bbox=box, trg_bbox=box))
    return Dataset(name="tiny", split="val", root=paths[0].parent, pairs=tuple(pairs),
                   default_thres="bbox")


def _run_py(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# A writer in another process: caches the images named on the command line.
WRITER = """
    import sys, dataclasses, torch
    from pathlib import Path
    from scotsearch.cache import build_cache
    from scotsearch.cache import open_source
    from scotsearch.presets import get_profile
    {patch}
    profile = dataclasses.replace(get_profile("scot"), image_side=64)
    src = open_source(backbone="resnet50", weights="random", seed=0, profile=profile,
                      cache_dir=Path(sys.argv[1]), device=torch.device("cpu"),
                      allow_random_fallback=False)
    stats = build_cache([Path(p) for p in sys.argv[2:]], src, workers=2, progress=False)
    print("DONE", stats.built, flush=True)
"""


# ---------------------------------------------------------------------------------- keys
def test_key_changes_with_weights_preprocessing_compat_and_image(tmp_path: Path) -> None:
    base = make_key("resnet50", "a" * 64, PROFILE)
    assert make_key("resnet50", "a" * 64, PROFILE) == base
    others = [
        make_key("resnet50", "b" * 64, PROFILE),  # weights
        # preprocessing
        make_key("resnet50", "a" * 64, dataclasses.replace(PROFILE, image_side=96)),
        make_key("resnet50", "a" * 64, dataclasses.replace(PROFILE, upsample_small=False)),
        make_key("resnet50", "a" * 64, dataclasses.replace(PROFILE, name="paper")),  # compat mode
        make_key("resnet101", "a" * 64, PROFILE),
    ]
    assert len({k.digest for k in [base, *others]}) == 1 + len(others)

    cache = tmp_path / "c"
    s0 = _source(cache)
    assert isinstance(s0, CachedSource) and isinstance(s0.cache, FeatureCache)
    keys = {
        s0.describe()["cache_key"],
        _source(cache, seed=1).describe()["cache_key"],
        _source(
            cache, profile=dataclasses.replace(PROFILE, image_side=72)
        ).describe()["cache_key"],
        _source(
            cache, profile=dataclasses.replace(get_profile("hpf"), image_side=64)
        ).describe()["cache_key"],
    }
    assert len(keys) == 4

    # The image enters by content: changed bytes under the same path are a miss, not a hit.
    [img] = _images(tmp_path / "img", 1)
    a = s0.get(img, (0,), need_cam=False).layers[0].clone()
    sha_a = s0.image_sha(img)
    Image.fromarray(np.full((48, 64, 3), 200, np.uint8)).save(img)
    os.utime(img, ns=(time.time_ns() + 10**9,) * 2)  # a new mtime even on coarse clocks
    b = s0.get(img, (0,), need_cam=False).layers[0]
    assert s0.image_sha(img) != sha_a and s0.builds == 2 and not torch.equal(a, b)


def test_weights_digest_is_recorded_and_files_are_keyed_by_content(tmp_path: Path) -> None:
    cache = tmp_path / "c"
    wfile = tmp_path / "w.pth"
    torch.save(load_backbone("resnet50", "random", seed=5).net.state_dict(), wfile)
    first = _source(cache, weights=str(wfile))
    assert first._model is not None  # digest unknown: loaded once ...
    again = _source(cache, weights=str(wfile))
    assert again._model is None  # ... then known from the digest book without loading
    assert again.describe() == first.describe()
    # Same weights under another name share the key (content digest, not the name).
    assert _source(cache, seed=5).describe()["cache_key"] == first.describe()["cache_key"]
    # Rewritten file: other size/mtime -> loaded again -> new digest -> new key.
    torch.save(load_backbone("resnet50", "random", seed=6).net.state_dict(), wfile)
    os.utime(wfile, ns=(time.time_ns() + 10**9,) * 2)
    changed = _source(cache, weights=str(wfile))
    assert changed._model is not None
    assert changed.describe()["cache_key"] != first.describe()["cache_key"]


def test_imagenet_weights_resolve_from_the_hub_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    def offline(*a: object, **k: object) -> None:
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    cache = tmp_path / "c"
    # No checkpoint and the demo's random fallback: loaded, and not recorded as ImageNet.
    with pytest.warns(RuntimeWarning):
        fb = open_source(backbone="resnet50", weights=None, seed=0, profile=PROFILE,
                         cache_dir=cache, device=CPU, allow_random_fallback=True)
    assert fb.describe()["weights"] == "random:seed0"
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(load_backbone("resnet50", "random", seed=2).net.state_dict(),
               hub / "checkpoints" / "resnet50-19c8e357.pth")
    a = _source(cache, weights="IMAGENET1K_V1")
    b = _source(cache, weights=None)
    assert a._model is not None and b._model is None
    assert b.describe()["weights"] == "IMAGENET1K_V1"
    assert b.describe()["cache_key"] == a.describe()["cache_key"] != fb.describe()["cache_key"]


# -------------------------------------------------------------------------- values, format
def test_float16_storage_with_power_of_two_exponent() -> None:
    x = torch.tensor([[1.0, -3.25, 7e4, 2.5e5, -1e-3]])
    stored, k = encode_layer(x)
    assert stored.dtype == torch.float16 and k == 2
    back = decode_layer(stored, k)
    assert back.dtype == torch.float32
    assert torch.allclose(back, x, rtol=1e-3)
    small = torch.tensor([0.5, FP16_MAX, -100.0])
    stored, k = encode_layer(small)
    assert k == 0 and decode_layer(stored, k).dtype == torch.float16
    with pytest.raises(ValueError):
        encode_layer(torch.tensor([1.0, float("nan")]))


def test_cached_features_equal_freshly_computed_ones(tmp_path: Path) -> None:
    paths = _images(tmp_path / "img", 2)
    src = _source(tmp_path / "c")
    model = src.model()
    for p in paths:
        fresh = roundtrip(extract_features(model, load_image(p), PROFILE, with_cam=True))
        src.get(p, (0,), need_cam=False)  # builds the entry
        # A new source reads the entry from disk (and never loads the network).
        cold = _source(tmp_path / "c")
        got = cold.get(p, tuple(range(N_LAYERS)), need_cam=True)
        assert cold._model is None
        assert sorted(got.layers) == list(range(N_LAYERS))
        for l in range(N_LAYERS):
            assert got.layers[l].dtype == fresh.layers[l].dtype
            assert torch.equal(got.layers[l], fresh.layers[l])
        assert torch.equal(got.cam, fresh.cam) and got.cam.dtype == torch.float32
        assert (got.ratio, got.image_size, got.orig_size) == (
            fresh.ratio, fresh.image_size, fresh.orig_size
        )
        # Only the requested layers come back.
        part = cold.get(p, (3, 9), need_cam=False)
        assert sorted(part.layers) == [3, 9] and part.cam is None


def test_batched_extraction_matches_one_image_at_a_time() -> None:
    model = load_backbone("resnet50", "random")
    rng = np.random.default_rng(1)
    imgs = [torch.from_numpy(rng.integers(0, 256, (3, 48, 64), dtype=np.uint8)) for _ in range(3)]
    batched = extract_batch(model, imgs, PROFILE, CPU)
    for img, b in zip(imgs, batched):
        one = extract_features(model, img, PROFILE, with_cam=True)
        for l in range(N_LAYERS):
            # Batched convolutions may sum in another order: equal up to float32 rounding.
            scale = float(one.layers[l].abs().max())
            assert float((b.layers[l] - one.layers[l]).abs().max()) <= 1e-5 * scale
        assert float((b.cam - one.cam).abs().max()) <= 1e-5
        assert (b.ratio, b.image_size, b.orig_size) == (one.ratio, one.image_size, one.orig_size)


# ---------------------------------------------------------------------- corruption, kills
def test_truncated_entry_is_detected_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    [img] = _images(tmp_path / "img", 1)
    src = _source(tmp_path / "c")
    want = src.get(img, (0, 16), need_cam=True)
    path = src.cache.path_for(src.image_sha(img))
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    fresh = _source(tmp_path / "c")
    with caplog.at_level(logging.WARNING, logger="scotsearch.cache"):
        got = fresh.get(img, (0, 16), need_cam=True)
    assert str(path) in caplog.text and "rebuilding" in caplog.text
    assert fresh.builds == 1 and path.stat().st_size == size
    assert torch.equal(got.layers[16], want.layers[16]) and torch.equal(got.cam, want.cam)
    assert verify(tmp_path / "c" / "features").ok


def test_one_layer_is_read_without_touching_the_others(tmp_path: Path) -> None:
    [img] = _images(tmp_path / "img", 1)
    src = _source(tmp_path / "c")
    src.get(img, (0,), need_cam=False)
    sha = src.image_sha(img)
    path = src.cache.path_for(sha)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        header_len = int.from_bytes(path.read_bytes()[:8], "little")
        import json as _json

        start, end = _json.loads(path.read_bytes()[8 : 8 + header_len])["layer_05"]["data_offsets"]
        assert "layer_05" in fh.keys()
    raw = bytearray(path.read_bytes())
    pos = 8 + header_len + (start + end) // 2
    raw[pos] ^= 0xFF  # a flipped byte inside layer 5 only
    path.write_bytes(bytes(raw))
    cache = src.cache
    assert sorted(cache.get(sha, (0, 4, 6), need_cam=True).layers) == [0, 4, 6]  # never reads 5
    with pytest.raises(EntryError, match="checksum mismatch in layer_05"):
        cache.get(sha, (5,), need_cam=False)
    report = verify(tmp_path / "c" / "features")
    assert [p for p, _ in report.bad] == [path]


def test_killed_writer_leaves_no_readable_entry_and_a_rerun_completes(tmp_path: Path) -> None:
    paths = _images(tmp_path / "img", 3)
    cache_dir = tmp_path / "c"
    # The writer stops for good between writing its temporary file and renaming it.
    patch = textwrap.dedent("""
        import os, time
        _real = os.replace
        def _stall(a, b):
            if str(b).endswith(".safetensors"):
                print("STALLED", a, flush=True)
                time.sleep(600)
            _real(a, b)
        os.replace = _stall
    """)
    proc = _run_py(WRITER.replace("    {patch}", textwrap.indent(patch, "    ")),
                   str(cache_dir), *map(str, paths))
    line = proc.stdout.readline()
    assert line.startswith("STALLED"), proc.stderr.read()
    tmp = Path(line.split()[1])
    assert tmp.is_file() and tmp.stat().st_size > 0  # written completely, not yet renamed
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    src = _source(cache_dir)
    assert not any(src.cache.has(src.image_sha(p)) for p in paths)
    assert list(src.cache.folder.glob("??/*.safetensors")) == []
    stats = build_cache(paths, src, workers=2, progress=False)
    assert stats.built == 3 and stats.present == 0
    assert build_cache(paths, src, progress=False).built == 0  # only what is missing
    report = verify(cache_dir / "features")
    assert report.ok and report.checked == 3 and tmp in report.temporaries
    pruned = prune(cache_dir / "features")
    assert [p for p, _ in pruned.removed] == [tmp] and not tmp.exists()


def test_writer_killed_at_a_random_moment_leaves_only_valid_entries(tmp_path: Path) -> None:
    paths = _images(tmp_path / "img", 8, seed=3)
    cache_dir = tmp_path / "c"
    proc = _run_py(WRITER.replace("{patch}", ""), str(cache_dir), *map(str, paths))
    deadline = time.time() + 60
    while time.time() < deadline and len(list(cache_dir.glob("features/*/??/*.safetensors"))) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    written = list(cache_dir.glob("features/*/??/*.safetensors"))
    assert 2 <= len(written) < 8
    report = verify(cache_dir / "features")
    assert report.ok and report.checked == len(written)
    src = _source(cache_dir)
    stats = build_cache(paths, src, progress=False)
    assert stats.present == len(written) and stats.built == 8 - len(written)
    assert verify(cache_dir / "features").checked == 8


def test_two_processes_caching_one_split_end_with_valid_entries(tmp_path: Path) -> None:
    paths = _images(tmp_path / "img", 5, seed=4)
    cache_dir = tmp_path / "c"
    procs = [_run_py(WRITER.replace("{patch}", ""), str(cache_dir), *map(str, paths))
             for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and "DONE" in out, err
    report = verify(cache_dir / "features")
    assert report.ok and report.checked == 5
    src = _source(cache_dir)
    assert src._model is None
    assert build_cache(paths, src, progress=False).built == 0


# --------------------------------------------------------------------------- evaluation
def test_evaluating_from_the_cache_gives_the_same_pck(tmp_path: Path) -> None:
    paths = _images(tmp_path / "img", 4, seed=7)
    ds = _dataset(paths, 5)
    subsets = [(0, 4, 9), (2, 8, 13, 14), (1,), (3, 15, 16)]
    results = []
    for match in (MatchConfig.from_variant("ot-rhm-stair"),
                  MatchConfig.from_variant("cos-rhm", exp1=3.0)):
        mem = _source(None)
        assert isinstance(mem, MemorySource)
        a = Evaluator(ds, mem, match=match, profile=PROFILE, alphas=(0.1, 0.3)).score(subsets)
        assert mem.extractions <= 4 + 4 * (match.cam != "none")  # each image once (plus CAM)
        cached = _source(tmp_path / "c")
        b = Evaluator(ds, cached, match=match, profile=PROFILE, alphas=(0.1, 0.3)).score(subsets)
        cold = _source(tmp_path / "c")  # everything on disk now: the CNN is never built
        c = Evaluator(ds, cold, match=match, profile=PROFILE, alphas=(0.1, 0.3)).score(subsets)
        assert cold._model is None and cold.builds == 0
        np.testing.assert_array_equal(a.n_correct, b.n_correct)
        np.testing.assert_array_equal(a.n_correct, c.n_correct)
        results.append(a.n_correct)
    assert cached.builds == 0  # the first match config built all four entries already


def test_memory_of_recent_images_is_bounded() -> None:
    from scotsearch.features import ImageFeatures

    memo = _Memo(max_bytes=3 * 400)
    for k in range(10):
        memo.store(str(k), ImageFeatures(layers={0: torch.zeros(100)}, image_size=(1, 1),
                                         ratio=1.0, orig_size=(1, 1)))
        assert memo.nbytes <= 3 * 400
    assert memo.peek("9") is not None and memo.peek("0") is None


# ----------------------------------------------------------------------------- the command
def _cli(args: list[str]) -> argparse.Namespace:
    from scotsearch.commands import cache as cache_cmd

    p = argparse.ArgumentParser()
    cache_cmd.add_arguments(p)
    ns = p.parse_args(args)
    ns.quiet = True
    return ns


def test_cache_command_builds_then_info_verify_prune(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from scotsearch.commands import cache as cache_cmd
    from scotsearch.commands import common

    paths = _images(tmp_path / "img", 3, seed=9)
    ds = _dataset(paths, 3)
    monkeypatch.setattr(common, "open_dataset", lambda args: ds)
    cache_dir = tmp_path / "c"
    base = ["--backbone", "resnet50", "--weights", "random", "--image-side", "64",
            "--cache-dir", str(cache_dir), "--workers", "2"]
    assert cache_cmd.run(_cli(base)) == 0
    out = capsys.readouterr().out
    assert "3 images cached (0 already there, 3 built" in out
    assert cache_cmd.run(_cli(base)) == 0
    assert "(3 already there, 0 built)" in capsys.readouterr().out

    assert cache_cmd.run(_cli(["--info", "--cache-dir", str(cache_dir)])) == 0
    out = capsys.readouterr().out
    assert "resnet50" in out and "random:seed0" in out and "3 entries" in out

    # A stale folder (old schema) and one corrupt entry.
    src = _source(cache_dir)
    entry = src.cache.path_for(src.image_sha(paths[0]))
    entry.write_bytes(entry.read_bytes()[:1000])
    old = cache_dir / "features" / "0123456789abcdef"
    (old / "ab").mkdir(parents=True)
    fields = dict(src.key.fields, schema=0)
    (old / "manifest.json").write_text(
        json.dumps({"key": "0123456789abcdef" + "0" * 48, "fields": fields})
    )
    (old / "ab" / ("ab" * 32 + ".safetensors")).write_bytes(b"x" * 100)
    assert cache_cmd.run(_cli(["--verify", "--cache-dir", str(cache_dir)])) == 1
    out = capsys.readouterr().out
    assert f"BAD  {entry}" in out and "1 bad" not in out  # folder + entry
    assert cache_cmd.run(_cli(["--prune", "--dry-run", "--cache-dir", str(cache_dir)])) == 0
    assert old.exists() and entry.exists()
    assert cache_cmd.run(_cli(["--prune", "--cache-dir", str(cache_dir)])) == 0
    out = capsys.readouterr().out
    assert not old.exists() and not entry.exists()
    assert cache_cmd.run(_cli(["--verify", "--cache-dir", str(cache_dir)])) == 0
    # The pruned entry is rebuilt by the next run, and only it.
    assert cache_cmd.run(_cli(base)) == 0
    assert "(2 already there, 1 built" in capsys.readouterr().out


def test_cache_command_refuses_bad_flags(tmp_path: Path) -> None:
    from scotsearch.commands import cache as cache_cmd
    from scotsearch.errors import ConfigError

    for bad in (["--workers", "0"], ["--batch-size", "0"], ["--dry-run"], ["--no-cache"]):
        with pytest.raises(ConfigError):
            cache_cmd.run(_cli([*bad, "--cache-dir", str(tmp_path)]))
    with pytest.raises(SystemExit):
        _cli(["--info", "--verify"])
