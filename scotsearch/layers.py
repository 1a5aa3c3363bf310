"""HPF layer numbering for torchvision ResNets, and the text form of layer subsets.

Id 0 is the stem after max-pool; id k >= 1 is the k-th bottleneck (counted over
layer1..layer4) after the residual add and before its ReLU (reference-behaviour.md §1.2).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from scotsearch.errors import ConfigError


#: Bottlenecks per stage.
BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
STAGE_CHANNELS = (256, 512, 1024, 2048)


@dataclass(frozen=True)
class LayerSpec:
    """One candidate hyperpixel layer.

    Attributes:
        id: HPF layer id.
        stage: 0 for the stem, 1..4 for layer1..layer4.
        block: index of the bottleneck inside its stage (0 for the stem).
        channels: feature channels.
        stride: pixels per feature cell (the reference's "jump", ``jsz``).
        rf: receptive-field size in pixels (the reference's ``rfsz``).
    """

    id: int
    stage: int
    block: int
    channels: int
    stride: int
    rf: int


def layer_specs(backbone: str) -> tuple[LayerSpec, ...]:
    """All layer ids of ``backbone`` with channels, stride and receptive field.

    The receptive fields follow the v1.5 ResNet arithmetic (3x3 conv carries the stride):
    a stride-1 bottleneck adds ``2 * jump``; the first bottleneck of a stage adds
    ``2 * jump`` and doubles the jump. This reproduces the references' hard-coded table for
    ids 0..9 (11, 19, 27, 35, 43, 59, 75, 91, 107, 139) and extends it to every id.
    """
    if backbone not in BLOCKS:
        raise ConfigError(f"unknown backbone {backbone!r}; choose one of {sorted(BLOCKS)}")
    # stem: conv 7x7/2 (rf 7, jump 2) then max-pool 3x3/2 (rf 11, jump 4)
    rf, jump = 11, 4
    specs = [LayerSpec(id=0, stage=0, block=0, channels=64, stride=jump, rf=rf)]
    for stage, (n_blocks, channels) in enumerate(zip(BLOCKS[backbone], STAGE_CHANNELS), start=1):
        for block in range(n_blocks):
            rf += 2 * jump
            if block == 0 and stage > 1:
                jump *= 2
            specs.append(
                LayerSpec(
                    id=len(specs), stage=stage, block=block, channels=channels, stride=jump, rf=rf
                )
            )
    return tuple(specs)


def n_layers(backbone: str) -> int:
    return len(layer_specs(backbone))


def parse_layers(value: str | Iterable[int], backbone: str) -> tuple[int, ...]:
    """Parse ``"2,22,24"``, ``"(2,22,24)"`` or a sequence into sorted unique layer ids.

    Unsorted and duplicate ids are normalised (the references take their grid constants
    from the first id as written, which is only right for sorted lists, §1.4).
    """
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[\s(\[]*\d+(\s*[,\s]\s*\d+)*[\s)\]]*,?", text):
            raise ConfigError(f"cannot read layer ids from {value!r}; write them like 0,19,27")
        ids = [int(t) for t in re.findall(r"\d+", text)]
    else:
        ids = [int(v) for v in value]
    if not ids:
        raise ConfigError("no layer id given")
    n = n_layers(backbone)
    bad = sorted({i for i in ids if not 0 <= i < n})
    if bad:
        raise ConfigError(
            f"layer id(s) {','.join(map(str, bad))} do not exist for {backbone} (ids 0..{n - 1})"
        )
    return tuple(sorted(set(ids)))


def format_layers(ids: Iterable[int]) -> str:
    """Canonical text form of a layer subset: sorted ids joined by commas.

    What every stored and printed subset is written as; :func:`parse_layers` reads it back.

    Examples:
        >>> format_layers((30, 0, 19))
        '0,19,30'
        >>> parse_layers(format_layers((30, 0, 19)), "resnet101")
        (0, 19, 30)
    """
    return ",".join(str(int(i)) for i in sorted(ids))
