"""``scotsearch cache``: build the feature cache of a split, or inspect, check and prune it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from scotsearch.commands import common
from scotsearch.errors import ConfigError


HELP = "extract every layer's features (and the CAM) of a split once, into the on-disk cache"


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_data_args(p, split="val")
    common.add_backbone_args(p)
    g = p.add_argument_group("cache")
    what = g.add_mutually_exclusive_group()
    what.add_argument("--info", action="store_true",
                      help="list the cache's key folders (key fields, entries, size) and exit")
    what.add_argument("--verify", action="store_true",
                      help="read every entry completely (lengths, checksums); "
                           "exit 1 if any is bad")
    what.add_argument("--prune", action="store_true",
                      help="remove entries no current key uses, bad entries and dead temporaries")
    g.add_argument("--dry-run", action="store_true", help="with --prune: only list what would go")
    g.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="threads for hashing, decoding, writing and checking "
                        "(default: CPUs, max 8)")
    g.add_argument("--batch-size", type=int, default=None,
                   help="images of equal network-input size per backbone batch "
                        "(default: 1 on the CPU, 8 on a GPU)")


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _print_info(cache_dir: Path) -> int:
    from scotsearch.cache import features_dir_of
    from scotsearch.cache import info

    data = info(features_dir_of(cache_dir))
    if not data["keys"]:
        print(f"{data['features_dir']}: no cached features")
        return 0
    for k in data["keys"]:
        print(f"{k['folder']}  {k['backbone']}  weights {k['weights']} "
              f"(digest {str(k['weights_digest'])[:12]})  compat {k['compat']}  "
              f"side {k['image_side']}  upsample_small {k['upsample_small']}  "
              f"schema {k['schema']}")
        est = k.get("estimated_bytes")
        print(f"    {k['entries']} entries, {_human(k['bytes'])}"
              + (f" (estimated {_human(est)})" if est else "")
              + (f", {_human(k['bytes'] / k['entries'])} per image" if k["entries"] else "")
              + f", created {k['created']}")
    print(f"total: {data['entries']} entries, {_human(data['bytes'])} in {data['features_dir']}"
          + (f"; {data['temporaries']} temporary file(s)" if data["temporaries"] else ""))
    return 0


def _verify(cache_dir: Path, workers: int) -> int:
    from scotsearch.cache import features_dir_of
    from scotsearch.cache import verify

    report = verify(features_dir_of(cache_dir), workers=workers)
    for path, reason in report.bad:
        print(f"BAD  {path}: {reason}")
    print(f"checked {report.checked} entries: {len(report.bad)} bad"
          + (f"; {len(report.temporaries)} temporary file(s)" if report.temporaries else ""))
    if report.bad:
        print("bad entries are rebuilt when read; `scotsearch cache --prune` removes them now")
        return 1
    return 0


def _prune(cache_dir: Path, dry_run: bool) -> int:
    from scotsearch.cache import features_dir_of
    from scotsearch.cache import prune

    report = prune(features_dir_of(cache_dir), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for path, reason in report.removed:
        print(f"{verb} {path}: {reason}")
    print(f"{verb} {len(report.removed)} item(s), {_human(report.freed)}; "
          f"{report.kept_keys} key folder(s) kept")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.dry_run and not args.prune:
        raise ConfigError("--dry-run goes with --prune")
    cache_dir = Path(args.cache_dir)
    if args.info:
        return _print_info(cache_dir)
    if args.verify:
        return _verify(cache_dir, args.workers)
    if args.prune:
        return _prune(cache_dir, args.dry_run)
    if args.no_cache:
        raise ConfigError("--no-cache makes no sense for the cache command")

    from scotsearch.cache import CachedSource
    from scotsearch.cache import build_cache

    device = common.resolve_device(args.device)
    dataset = common.open_dataset(args)
    source = common.feature_source(args, device)
    assert isinstance(source, CachedSource)
    stats = build_cache(dataset, source, workers=args.workers, batch_size=args.batch_size,
                        progress=not getattr(args, "quiet", False))
    desc = source.describe()
    speed = f" in {stats.seconds:.1f} s ({stats.images_per_s:.2f} images/s)" if stats.built else ""
    print(f"{dataset.name}/{dataset.split}: {stats.unique} images cached "
          f"({stats.present} already there, {stats.built} built{speed})")
    print(f"key {desc['cache_key'][:16]}  {desc['backbone']}  weights {desc['weights']} "
          f"(digest {desc['weights_digest'][:12]})  compat {desc['profile']}  "
          f"folder {source.cache.folder}")
    return 0
