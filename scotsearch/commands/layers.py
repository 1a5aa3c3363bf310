"""``scotsearch layers``: a backbone's candidate layers with their geometry."""

from __future__ import annotations

import argparse


HELP = ("list a backbone's candidate layers: id, module, channels, stride, receptive field "
        "and grid size")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="resnet101", metavar="NAME",
                   help="resnet50, resnet101 (default), fcn-resnet101, timm:NAME or "
                        "torchvision:NAME")
    p.add_argument("--image-side", type=int, default=300,
                   help="side of the square image the grid sizes are given for (default 300; "
                        "ViT inputs are padded to a multiple of the patch)")


def run(args: argparse.Namespace) -> int:
    from scotsearch.errors import ConfigError
    from scotsearch.layers import layer_specs
    from scotsearch.zoo import GLOBAL_BOX_CELLS
    from scotsearch.zoo import grid_sizes

    if args.image_side < 32:
        raise ConfigError(f"--image-side must be at least 32 pixels, got {args.image_side}")
    specs = layer_specs(args.backbone)
    grids = grid_sizes(args.backbone, args.image_side)
    rows = [("id", "module", "channels", "stride", "receptive field", "grid")]
    for spec, (h, w) in zip(specs, grids):
        rf = f"global (box {spec.rf})" if spec.global_rf else str(spec.rf)
        rows.append((str(spec.id), spec.name, str(spec.channels), str(spec.stride), rf,
                     f"{h}x{w}"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(widths[c]) if c == 1 else v.rjust(widths[c])
                        for c, v in enumerate(r)).rstrip())
    if any(s.global_rf for s in specs):
        print(f"global: the layer sees the whole image; keypoint transfer uses a box of "
              f"{GLOBAL_BOX_CELLS} x {GLOBAL_BOX_CELLS} cells around each cell")
    return 0
