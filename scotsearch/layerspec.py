"""The record of one candidate hyperpixel layer, shared by every backbone family."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerSpec:
    """One candidate hyperpixel layer.

    Attributes:
        id: layer id (0..L-1 in forward order).
        stage: 0 for the stem, then one more at every stride change (ResNets: layer1..4).
        block: index of the block inside its stage (0 for the stem).
        channels: feature channels.
        stride: pixels per feature cell (the reference's "jump", ``jsz``).
        rf: receptive-field size in pixels (the reference's ``rfsz``); for a layer that sees
            the whole image (``global_rf``), the side of the box keypoint transfer uses.
        name: the module whose output the layer is (empty for the HPF ResNets' scheme).
        global_rf: the true receptive field is the whole image (attention, squeeze-excite).
    """

    id: int
    stage: int
    block: int
    channels: int
    stride: int
    rf: int
    name: str = ""
    global_rf: bool = False
