"""Layer numbering of every backbone, and the text form of layer subsets.

HPF ResNets (``resnet50``, ``resnet101``): id 0 is the stem after max-pool; id k >= 1 is the
k-th bottleneck (counted over layer1..layer4) after the residual add and before its ReLU
(reference-behaviour.md §1.2). Other backbones (:mod:`scotsearch.zoo`): every block output
in forward order, strides and receptive fields computed from the network's graph.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from scotsearch.errors import ConfigError
from scotsearch.layerspec import LayerSpec


#: Bottlenecks per stage.
BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
STAGE_CHANNELS = (256, 512, 1024, 2048)


def layer_specs(backbone: str) -> tuple[LayerSpec, ...]:
    """All layer ids of ``backbone`` with channels, stride and receptive field.

    Zoo backbones (``timm:NAME``, ``torchvision:NAME``, ``fcn-resnet101``) get theirs from
    :func:`scotsearch.zoo.net_info` (computed, see :mod:`scotsearch.netgraph`). For the HPF
    ResNets the table below is kept as the layer scheme the references define; the
    computation gives the same values (``tests/test_zoo.py``).

    The receptive fields follow the v1.5 ResNet arithmetic (3x3 conv carries the stride):
    a stride-1 bottleneck adds ``2 * jump``; the first bottleneck of a stage adds
    ``2 * jump`` and doubles the jump. This reproduces the references' hard-coded table for
    ids 0..9 (11, 19, 27, 35, 43, 59, 75, 91, 107, 139) and extends it to every id.
    """
    if backbone not in BLOCKS:
        from scotsearch import zoo

        if not zoo.is_zoo(backbone):
            zoo.check_name(backbone)  # raises the one-line "unknown backbone"
        return zoo.net_info(backbone).specs
    # stem: conv 7x7/2 (rf 7, jump 2) then max-pool 3x3/2 (rf 11, jump 4)
    rf, jump = 11, 4
    specs = [LayerSpec(id=0, stage=0, block=0, channels=64, stride=jump, rf=rf, name="maxpool")]
    for stage, (n_blocks, channels) in enumerate(zip(BLOCKS[backbone], STAGE_CHANNELS), start=1):
        for block in range(n_blocks):
            rf += 2 * jump
            if block == 0 and stage > 1:
                jump *= 2
            specs.append(
                LayerSpec(
                    id=len(specs), stage=stage, block=block, channels=channels, stride=jump,
                    rf=rf, name=f"layer{stage}.{block}",
                )
            )
    return tuple(specs)


def layer_names(backbone: str, ids: Iterable[int]) -> str:
    """The module names of layer ids, in id order, joined by ``;`` (what outputs record
    next to the ids); empty for a backbone this version does not know.

    Examples:
        >>> layer_names("resnet101", (0, 19, 30))
        'maxpool;layer3.11;layer3.22'
    """
    try:
        specs = layer_specs(backbone)
    except ConfigError:
        return ""
    return ";".join(specs[int(i)].name for i in sorted(ids) if 0 <= int(i) < len(specs))


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
