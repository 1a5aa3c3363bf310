"""Flags shared by several commands, and turning them into objects."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from scotsearch.config import SIM_NAMES
from scotsearch.config import VARIANTS
from scotsearch.config import MatchConfig
from scotsearch.config import Profile
from scotsearch.errors import ConfigError
from scotsearch.presets import PROFILES
from scotsearch.presets import default_variant
from scotsearch.presets import resolve_match
from scotsearch.presets import resolve_profile


if TYPE_CHECKING:
    import torch

    from scotsearch.cache import CachedSource
    from scotsearch.cache import MemorySource
    from scotsearch.data.pairs import Dataset


log = logging.getLogger(__name__)

DATASETS = ("demo", "spair", "pfpascal", "pfwillow", "tss", "caltech")


def add_data_args(p: argparse.ArgumentParser, *, split: str | None) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="demo", choices=DATASETS,
                   help="benchmark (default: demo, the embedded one, written on first use)")
    g.add_argument("--datapath", type=Path, default=None,
                   help="dataset root (e.g. .../SPair-71k, .../PF-PASCAL); "
                        "demo: where to write it")
    g.add_argument("--split", default=split,
                   help=f"split to use (default: {split or 'test, or the --config row'})")
    g.add_argument("--thres", default="auto", choices=("auto", "bbox", "img", "kps"),
                   help="PCK threshold basis (auto: the dataset's convention)")
    g.add_argument("--alpha", default="0.1",
                   help="PCK alpha, or a comma-separated list (default: 0.1)")
    g.add_argument("--max-pairs", type=int, default=None, help="use only the first N pairs")
    g.add_argument("--per-category", type=int, default=None, metavar="N",
                   help="a quick subset: N pairs of every category, drawn with --subset-seed "
                        "(the same on every run; recorded in the study identity and outputs, "
                        "so a subset study never resumes as a full one)")
    g.add_argument("--subset-seed", type=int, default=0,
                   help="seed of the --per-category draw (default 0)")


def add_backbone_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("features")
    g.add_argument("--backbone", default="resnet101", metavar="NAME",
                   help="resnet50, resnet101 (default), fcn-resnet101, timm:NAME (e.g. "
                        "timm:vit_small_patch14_dinov2) or torchvision:NAME (e.g. "
                        "torchvision:convnext_tiny); `scotsearch layers` lists a backbone's "
                        "layers")
    g.add_argument("--weights", default=None,
                   help="default: the pretrained weights (ResNets: IMAGENET1K_V1 from the torch "
                        "hub cache or a download; other backbones: from the local torch-hub / "
                        "Hugging Face cache only), 'random' (seeded random init) or a "
                        "checkpoint FILE (.pth or .safetensors)")
    g.add_argument("--seed", type=int, default=0, help="seed for random weights and the demo data")
    g.add_argument("--device", default="auto",
                   help="auto (CUDA when available), cpu, cuda, cuda:N")
    g.add_argument("--compat", default=None, choices=tuple(PROFILES),
                   help="reproduce one reference's quirks exactly (see README, 'Compatibility')")
    g.add_argument("--image-side", type=int, default=None,
                   help="longer image side fed to the network (default 300, as the references; "
                        "smaller is faster and less accurate)")
    g.add_argument("--cache-dir", type=Path, default=Path("cache"),
                   help="feature cache folder (default: cache/)")
    g.add_argument("--no-cache", action="store_true",
                   help="keep features in memory only, write nothing to the cache")


def add_match_args(p: argparse.ArgumentParser, *, command: str) -> None:
    """Matching flags; ``command`` (``evaluate``, ``beam``, ``tune``) picks the defaults."""
    g = p.add_argument_group("matching")
    g.add_argument("--variant", default=None, choices=sorted(VARIANTS),
                   help=f"the paper's ablation variants (default: "
                        f"{default_variant(None, command)})")
    g.add_argument("--sim", default=None, choices=sorted(SIM_NAMES),
                   help="SCOT's --sim names (cos, cosGeo, OT, OTGeo); overrides --variant")
    g.add_argument("--cam", default=None, choices=("none", "raw", "stair"),
                   help="transport marginals: uniform, raw CAM or staircase")
    g.add_argument("--eps", type=float, default=0.05, help="entropic regularisation (0.05)")
    g.add_argument("--precision", default="auto",
                   choices=("auto", "float32", "float16", "bfloat16"),
                   help="dtype of the per-layer similarity terms summed per candidate "
                        "(auto: float32; half precision moved demo PCK by up to 2.8 points, "
                        "see README); transport, Hough and PCK always run in float32")
    g.add_argument("--engine", default="auto", choices=("auto", "eager", "fused"),
                   help="how candidates are scored: eager = the reference chain (any device "
                        "and precision); fused = the fused incremental chain (float32, eps >= "
                        "0.02): numba kernels on the CPU (several times faster; they compile "
                        "once per machine, about 40 s, then load from numba's cache in about "
                        "1 s), Triton kernels on a CUDA GPU (1.6x the eager chain's scoring "
                        "rate in a beam search on an H200 with --chunk 64; compiled once per "
                        "machine, about 15 s); auto (default) = fused where it covers the "
                        "settings and the work exceeds about 20 s of eager scoring (on a GPU: "
                        "also at least 32 candidates per call, e.g. beam with --chunk 64), "
                        "else eager")
    g.add_argument("--n-iter", type=int, default=None,
                   help="Sinkhorn iterations (default 1 as SCOT's code; 50 with --compat paper)")
    g.add_argument("--exp1", type=float, default=None,
                   help="cosine exponent for cos matching (default 1; 3 with --compat hpf)")
    g.add_argument("--exp2", type=float, default=None,
                   help="plan exponent (default: 0.5 PF-PASCAL/PF-WILLOW, 1.0 otherwise)")
    g.add_argument("--beta", default=None, help="stair heights, e.g. 0,0.4,0.5,0.6")
    g.add_argument("--gamma", default=None, help="stair widths, e.g. 0.5,0.3,0.1,0.1")
    g.add_argument("--ncells", type=int, default=8192, help="Hough cells (8192)")
    p.set_defaults(_command=command)


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(t) for t in str(text).replace(" ", "").split(",") if t != "")
    except ValueError:
        raise ConfigError(
            f"cannot read {what} from {text!r}; write numbers separated by commas"
        ) from None
    if not vals:
        raise ConfigError(f"no value given for {what}")
    return vals


def alphas_from_args(args: argparse.Namespace) -> tuple[float, ...]:
    alphas = parse_floats(args.alpha, "--alpha")
    for a in alphas:
        if not a > 0:
            raise ConfigError(f"--alpha must be positive, got {a:g}")
    return alphas


def profile_from_args(args: argparse.Namespace) -> Profile:
    """The ``--compat`` profile (:func:`scotsearch.presets.resolve_profile`)."""
    side = getattr(args, "image_side", None)
    if side is not None and side < 32:
        raise ConfigError(f"--image-side must be at least 32 pixels, got {side}")
    return resolve_profile(args.compat, image_side=side)


def match_from_args(args: argparse.Namespace, dataset: Dataset) -> MatchConfig:
    """Resolve matching flags against the presets (:func:`scotsearch.presets.resolve_match`).

    A backbone that gives no foreground map (e.g. a ViT without a class token, an MLP
    classifier head) refuses an explicit ``--cam raw|stair``
    and turns a preset's CAM marginals into uniform ones (``none``).
    """
    match = resolve_match(
        args.compat, dataset.name, args._command,
        variant=args.variant, sim=args.sim, cam=args.cam, eps=args.eps, n_iter=args.n_iter,
        exp1=args.exp1, exp2=args.exp2, ncells=args.ncells,
        beta=None if args.beta is None else parse_floats(args.beta, "--beta"),
        gamma=None if args.gamma is None else parse_floats(args.gamma, "--gamma"),
    )
    backbone = getattr(args, "backbone", "resnet101")
    if match.cam != "none" and not has_foreground(backbone):
        if args.cam is not None:
            raise ConfigError(
                f"--cam {args.cam} needs a foreground map, and {backbone} gives none (no "
                "global-pooling linear classifier, segmentation head or class token); use "
                "--cam none")
        log.info("%s gives no foreground map: uniform marginals (--cam none)", backbone)
        match = dataclasses.replace(match, cam="none")
    return match


def has_foreground(backbone: str) -> bool:
    """The backbone gives a CAM or segmentation foreground map (``--cam raw|stair`` work)."""
    from scotsearch import zoo

    return not zoo.is_zoo(backbone) or zoo.net_info(backbone).marginal is not None


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return dev


def resolve_precision(name: str, device: torch.device) -> str:
    """``--precision auto``: float32 on every device.

    Half-precision terms would halve a GPU's memory traffic, but on the demo they moved
    single candidates' PCK by up to 2.8 points (benchmarks/precision_demo.py, README): the
    cosine's float16 rounding is amplified 1/eps-fold by the transport kernel. So they are
    opt-in. ``device`` is kept for a future rule that depends on it.
    """
    del device
    return "float32" if name == "auto" else name


def _check_sizes(args: argparse.Namespace) -> None:
    # Every command opens its dataset first, before the demo data, the weights or the cache
    # are touched: the one place to refuse an image side and Hough size whose smallest
    # working set cannot fit in the device's free memory.
    ncells = getattr(args, "ncells", None)
    if ncells is not None and ncells < 1:
        raise ConfigError(f"--ncells must be positive, got {ncells}")
    side = profile_from_args(args).image_side
    from scotsearch.memory import check_fits

    check_fits(side, ncells or 8192, resolve_device(getattr(args, "device", "auto")))


#: Benchmarks scored by masks, not PCK (:mod:`scotsearch.masks`): evaluate only.
MASK_DATASETS = ("caltech",)

#: Benchmarks a layer search cannot run on, and why (their refusal's text after the
#: command's name). The library refuses them too (``Dataset.require_keypoint_pck``), but only
#: once the split is read; these lines come before anything is read.
_NOT_SEARCHABLE = {
    # Caltech-101 has neither keypoints nor a validation split (HPF evaluated it with its
    # PF-PASCAL layers), so a search there would fit the test pairs.
    "caltech": "does not search on --dataset caltech: it has only a test split and no "
               "keypoints (HPF reused its PF-PASCAL layers); search on another benchmark and "
               "score the layers with 'scotsearch evaluate --dataset caltech'",
    # TSS is scored by dense flow (scotsearch.tss_eval), one layer set at a time.
    "tss": "searches by keypoint PCK and cannot run on --dataset tss (dense flow); search on "
           "spair or pfpascal and score the layers with 'scotsearch evaluate --dataset tss "
           "--layers ...'",
}


def refuse_unsearchable(args: argparse.Namespace, command: str) -> None:
    """Refuse ``beam`` or ``tune`` on a benchmark not scored by keypoint PCK, in one line,
    before anything is read.

    Raises:
        ConfigError: ``--dataset`` is Caltech-101 or TSS.
    """
    why = _NOT_SEARCHABLE.get(getattr(args, "dataset", None) or "")
    if why is not None:
        raise ConfigError(f"{command} {why}")


def open_dataset(args: argparse.Namespace) -> Dataset:
    """Load the split named by the flags (writing the demo data on first use)."""
    from scotsearch.data import DATASETS
    from scotsearch.data import load_dataset

    _check_sizes(args)
    if args.dataset not in DATASETS:
        # argparse checks the flag; a --config row's dataset arrives here unchecked.
        raise ConfigError(
            f"unknown dataset {args.dataset!r}; choose one of {', '.join(sorted(DATASETS))}")
    root = args.datapath
    if args.dataset == "demo" and root is None:
        root = Path(args.cache_dir) / "demo-data"
    if args.dataset != "demo" and root is None:
        raise ConfigError(f"--dataset {args.dataset} needs --datapath pointing at its root folder")
    if getattr(args, "per_category", None) is not None and args.per_category < 1:
        # before the split is read (or the demo written)
        raise ConfigError(f"--per-category must be >= 1, got {args.per_category}")
    ds = load_dataset(args.dataset, root, args.split)
    if args.dataset != "demo":
        # The first missing image in one line now, not mid-search (datasets check lists all).
        from scotsearch.data.check import check_images

        check_images(ds)
    if getattr(args, "per_category", None) is not None:
        from scotsearch.data.subsets import per_category

        ds = per_category(ds, args.per_category, args.subset_seed)
    if args.max_pairs is not None:
        if args.max_pairs < 1:
            raise ConfigError(f"--max-pairs must be >= 1, got {args.max_pairs}")
        ds = dataclasses.replace(ds, pairs=ds.pairs[: args.max_pairs])
    return ds


def check_cache_space(dataset: Dataset, source: object) -> None:
    """Before any work: refuse in one line when the split's missing cache entries would not
    fit on the disk (the commands build entries on demand)."""
    from scotsearch.cache import CachedSource
    from scotsearch.cache import check_cache_space as check

    if isinstance(source, CachedSource):
        check(dataset, source)


def feature_source(
    args: argparse.Namespace, device: torch.device
) -> MemorySource | CachedSource:
    """Features for the flags: the on-disk cache (default) or memory only (--no-cache)."""
    from scotsearch.cache import open_source

    return open_source(
        backbone=args.backbone,
        weights=args.weights,
        seed=args.seed,
        profile=profile_from_args(args),
        cache_dir=None if args.no_cache else Path(args.cache_dir),
        device=device,
        # The demo must run offline from the README's first command (issue #2).
        allow_random_fallback=args.dataset == "demo",
    )
