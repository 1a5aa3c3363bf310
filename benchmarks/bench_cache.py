"""Feature-cache figures: build speed, read speed, bytes per image, and the format choice.

1. Build: images/s of ``build_cache`` (decode, one forward pass + the CAM's two up-scaled
   passes, float16 encode, fsync'ed atomic write) for ~400x300 JPEGs (network input
   300x225), random weights, per batch size.
2. Bytes per image for ResNet-50 and ResNet-101 (one entry of each; 300x300 by formula).
3. Reads: pairs/s for reading all layers (and the CAM) of a random pair, and for the 7
   layers of SCOT's PF-PASCAL set, from the page cache ("warm") and after evicting the
   files with ``posix_fadvise(DONTNEED)`` ("cold": from the disk), for

   * one safetensors file per image (the cache's format; with and without the CRC check),
   * one ``.npy`` file per (image, layer), memory-mapped with ``np.load(mmap_mode="r")``
     (the alternative of ecosystem.md §3.2).

Usage: python benchmarks/bench_cache.py [--backbone resnet101] [--images 6] [--pairs 30]
       [--batch 1,4] [--workers 2] [--device cpu] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scotsearch.cache import FeatureCache
from scotsearch.cache import build_cache
from scotsearch.cache import open_source
from scotsearch.cache._format import layer_name
from scotsearch.layers import layer_specs
from scotsearch.presets import get_profile


SCOT_PFPASCAL = (2, 22, 24, 25, 27, 28, 29)


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """~400x300 JPEGs with smooth random content (SCOT resizes them to 300x225)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        small = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
        path = folder / f"img{i:03d}.jpg"
        Image.fromarray(small).resize((400, 300), Image.BICUBIC).save(path, quality=90)
        out.append(path)
    return out


def evict(paths: list[Path]) -> None:
    """Drop the files from the page cache (clean pages only: entries are fsync'ed)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def write_npy_copy(
    cache: FeatureCache, shas: list[str], folder: Path, n_layers: int
) -> dict[str, list[Path]]:
    """The same float16 maps as one .npy per (image, layer)."""
    files: dict[str, list[Path]] = {}
    for sha in shas:
        f = cache.get(sha, tuple(range(n_layers)), need_cam=True)
        assert f is not None
        d = folder / sha
        d.mkdir(parents=True)
        files[sha] = []
        for l, t in f.layers.items():
            np.save(d / f"{layer_name(l)}.npy", t.to(torch.float16).numpy())
            files[sha].append(d / f"{layer_name(l)}.npy")
        np.save(d / "cam.npy", f.cam.numpy())
        files[sha].append(d / "cam.npy")
        for p in files[sha]:
            with open(p, "rb+") as fh:
                os.fsync(fh.fileno())
    return files


def time_pairs(read_pair, pairs: list[tuple[str, str]], files_of, cold: bool) -> float:
    """Pairs per second of ``read_pair`` over ``pairs``."""
    t = 0.0
    for a, b in pairs:
        if cold:
            evict(files_of(a) + files_of(b))
        t0 = time.perf_counter()
        read_pair(a, b)
        t += time.perf_counter() - t0
    return len(pairs) / t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet101", choices=("resnet50", "resnet101"))
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--batch", default="1,4", help="batch sizes to time, comma-separated")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = ap.parse_args()

    device = torch.device(args.device)
    scratch = Path(tempfile.mkdtemp(prefix="bench_cache_", dir=args.dir))
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), device {device}, "
          f"load average {os.getloadavg()[0]:.2f}")
    try:
        paths = make_images(scratch / "img", args.images)
        profile = get_profile("scot")
        n_layers = len(layer_specs(args.backbone))

        # -- 1. build
        src = None
        for b in [int(v) for v in args.batch.split(",")]:
            cache_dir = scratch / f"cache_b{b}"
            src = open_source(backbone=args.backbone, weights="random", seed=0, profile=profile,
                              cache_dir=cache_dir, device=device, allow_random_fallback=False)
            src.model()  # load outside the timed part
            stats = build_cache(paths, src, workers=args.workers, batch_size=b, progress=False)
            print(f"build {args.backbone} batch {b}: {stats.built} images in "
                  f"{stats.seconds:.1f} s = {stats.images_per_s:.2f} images/s "
                  "(with CAM, fsync'ed writes)")
        assert src is not None
        cache = src.cache
        shas = [src.image_sha(p) for p in paths]

        # -- 2. bytes per image
        per_image = np.mean([cache.path_for(s).stat().st_size for s in shas])
        sizes = {args.backbone: per_image}
        other = "resnet50" if args.backbone == "resnet101" else "resnet101"
        o = open_source(backbone=other, weights="random", seed=0, profile=profile,
                        cache_dir=scratch / "cache_other", device=device,
                        allow_random_fallback=False)
        o.get(paths[0], (0,), need_cam=False)
        sizes[other] = o.cache.path_for(o.image_sha(paths[0])).stat().st_size
        for name in ("resnet50", "resnet101"):
            full = sum(s.channels * -(-300 // s.stride) * -(-300 // s.stride) * 2
                       for s in layer_specs(name))
            print(f"bytes per image {name}: {sizes[name] / 1e6:.1f} MB at 300x225 (measured); "
                  f"~{(full + 300 * 300 * 4) / 1e6:.1f} MB at 300x300 (formula)")

        # -- 3. reads
        rng = random.Random(0)
        pairs = [tuple(rng.sample(shas, 2)) for _ in range(args.pairs)]
        npy = write_npy_copy(cache, shas, scratch / "npy", n_layers)
        every = tuple(range(n_layers))
        subset = SCOT_PFPASCAL if args.backbone == "resnet101" else (2, 7, 11, 12, 13)

        def st_reader(layers: tuple[int, ...], check: bool):
            from scotsearch.cache._format import read_entry

            def read(a: str, b: str) -> None:
                for s in (a, b):
                    read_entry(cache.path_for(s), key=cache.key.digest, image_sha=s,
                               layer_ids=layers, need_cam=True, check=check)
            return read

        def npy_reader(layers: tuple[int, ...]):
            def read(a: str, b: str) -> None:
                for s in (a, b):
                    d = npy[s][0].parent
                    for l in layers:
                        torch.from_numpy(
                            np.array(np.load(d / f"{layer_name(l)}.npy", mmap_mode="r"))
                        )
                    torch.from_numpy(np.array(np.load(d / "cam.npy", mmap_mode="r")))
            return read

        st_files = lambda s: [cache.path_for(s)]  # noqa: E731
        npy_files = lambda s: npy[s]  # noqa: E731
        print(f"reads ({args.pairs} random pairs of {len(shas)} entries), pairs/s:")
        print(f"  {'format':34s} {'all layers warm':>16s} {'all cold':>9s} "
              f"{'7 layers warm':>14s} {'7 cold':>7s}")
        rows = [
            ("safetensors per image, CRC check", lambda ls: st_reader(ls, True), st_files),
            ("safetensors per image, no check", lambda ls: st_reader(ls, False), st_files),
            (".npy per layer, mmap", npy_reader, npy_files),
        ]
        for name, make, files in rows:
            vals = []
            for layers in (every, subset):
                make(layers)(*pairs[0])  # warm the page cache
                vals += [time_pairs(make(layers), pairs, files, cold=False),
                         time_pairs(make(layers), pairs, files, cold=True)]
            print(f"  {name:34s} {vals[0]:16.1f} {vals[1]:9.1f} {vals[2]:14.1f} {vals[3]:7.1f}")
        # One layer must not load the others: reading layer 0 alone vs everything.
        t_one = time_pairs(st_reader((0,), True), pairs, st_files, cold=True)
        print(f"  safetensors, layer 0 only, cold: {t_one:.1f} pairs/s")
        n_files = len(shas) * (n_layers + 1)
        print(f"files: safetensors {len(shas)} (1 per image), "
              f"npy {n_files} ({n_layers + 1} per image)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
