"""Backbones beyond the HPF ResNets: ``timm:NAME``, ``torchvision:NAME`` and ``fcn-resnet101``.

What this module knows about such a network, without its weights: how to build it, its
candidate layers (:mod:`scotsearch.netgraph`: every block output in forward order, the stem
first when it is a feature map), each layer's layout, channels, stride and receptive field,
the input normalisation it was trained with, the side multiple its input needs, and which
foreground map it can give (:data:`MARGINALS`). All of it comes from two forward passes on
the ``meta`` device (224 and 448 px), so it costs a fraction of a second and no memory.

Layouts: ``nchw`` (CNN maps), ``nhwc`` (Swin) and ``tokens`` (ViTs: ``[B x N x C]`` with
class / register tokens first; the count of those *prefix* tokens and the patch stride are
solved from the token counts at the two sides, the prefix tokens are dropped and the patch
tokens reshaped to the patch grid). ViT inputs are padded (bottom / right, after
normalisation, with zeros: the mean colour) to a multiple of the patch; timm ViTs are built
with ``dynamic_img_size=True`` so their position embeddings are interpolated to any grid.

Receptive fields of layers that see the whole image (attention, squeeze-excitation) are
infinite; keypoint transfer then uses a box of :data:`GLOBAL_BOX_CELLS` cells per side
around each cell (``rf = 3 * stride``): the cell and its eight neighbours.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from scotsearch.errors import ConfigError
from scotsearch.layerspec import LayerSpec
from scotsearch.netgraph import TracedLayer
from scotsearch.netgraph import trace_layers


#: Names handled by :mod:`scotsearch.backbones` itself (the HPF layer scheme).
RESNETS = ("resnet50", "resnet101")
FCN = "fcn-resnet101"
TIMM = "timm:"
TORCHVISION = "torchvision:"
#: Box side, in cells, used by keypoint transfer for a layer with a global receptive field.
GLOBAL_BOX_CELLS = 3
#: Foreground maps: ``cam`` (global average pooling + linear classifier: SCOT's multi-scale
#: top-2 CAM), ``fcn`` (1 - the background probability of a segmentation head), ``attn``
#: (a ViT's class token: its last block's attention to the patches, averaged over the
#: heads, min-max scaled; our choice, after DINO's attention maps), ``None``.
MARGINALS = ("cam", "fcn", "attn", None)

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_SIDES = (224, 448)


def is_zoo(name: str) -> bool:
    """``name`` is a backbone of this module (not one of the HPF ResNets)."""
    return name == FCN or name.startswith((TIMM, TORCHVISION))


def check_name(name: str) -> None:
    """Raise ``ConfigError`` (one line) unless ``name`` is a backbone this version builds."""
    if name in RESNETS or name == FCN:
        return
    for prefix in (TIMM, TORCHVISION):
        if name.startswith(prefix):
            arch = name[len(prefix):]
            # timm names may carry a pretrained tag (vit_small_patch14_dinov2.lvd142m)
            base = arch.split(".", 1)[0] if prefix == TIMM else arch
            if base and base in _available(prefix):
                return
            raise ConfigError(
                f"unknown {prefix[:-1]} model {arch!r} (see `{_list_hint(prefix)}`)")
    raise ConfigError(
        f"unknown backbone {name!r}; choose resnet50, resnet101, {FCN}, timm:NAME or "
        "torchvision:NAME")


def _list_hint(prefix: str) -> str:
    if prefix == TIMM:
        return "python -c 'import timm; print(timm.list_models())'"
    return "python -c 'import torchvision; print(torchvision.models.list_models())'"


@functools.lru_cache(maxsize=2)
def _available(prefix: str) -> frozenset[str]:
    if prefix == TIMM:
        import timm

        return frozenset(timm.list_models())
    import torchvision

    return frozenset(torchvision.models.list_models(module=torchvision.models))


def build(name: str, *, device: str | torch.device = "cpu") -> nn.Module:
    """The network of ``name`` with freshly initialised weights, in eval mode.

    ``device="meta"`` builds the architecture only (no memory, no initialisation work).
    Random initialisation draws from the global RNG: callers seed it.
    """
    check_name(name)
    with torch.device(device):
        if name == FCN:
            from torchvision.models.segmentation import fcn_resnet101

            net: nn.Module = fcn_resnet101(weights=None, weights_backbone=None, aux_loss=False)
        elif name.startswith(TIMM):
            import timm

            arch = name[len(TIMM):]
            try:
                # ViTs: interpolate the position embeddings to any patch grid.
                net = timm.create_model(arch, pretrained=False, dynamic_img_size=True)
            except TypeError:
                net = timm.create_model(arch, pretrained=False)
        else:
            import torchvision

            net = torchvision.models.get_model(name[len(TORCHVISION):], weights=None)
    return net.eval()


@dataclass(frozen=True)
class NetInfo:
    """What scotsearch needs to know about a network, independent of its weights.

    Attributes:
        name: the backbone name.
        modules: module path of each layer id (``<stem>``: the first block's input).
        layouts: ``nchw``, ``nhwc`` or ``tokens`` per id.
        prefix: class / register tokens before the patch tokens (token layouts).
        specs: channels, stride and receptive field per id.
        mean, std: input normalisation (the model's own).
        multiple: input sides are padded to a multiple of this (the ViT patch; 1 otherwise).
        marginal: the foreground map the network gives (:data:`MARGINALS`).
    """

    name: str
    modules: tuple[str, ...]
    layouts: tuple[str, ...]
    prefix: int
    specs: tuple[LayerSpec, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    multiple: int
    marginal: str | None

    def describe(self) -> dict[str, object]:
        """Cache-key fields: the layer scheme, the preprocessing and the marginal."""
        return {
            "layers": [f"{m}:{l}" for m, l in zip(self.modules, self.layouts)],
            "prefix_tokens": self.prefix,
            "mean": list(self.mean),
            "std": list(self.std),
            "pad_to_multiple": self.multiple,
            "marginal": self.marginal,
        }


def _layout(a: TracedLayer, b: TracedLayer) -> str:
    changed = [d for d, (x, y) in enumerate(zip(a.shape, b.shape)) if x != y]
    if len(a.shape) == 4 and changed == [2, 3]:
        return "nchw"
    if len(a.shape) == 4 and changed == [1, 2]:
        return "nhwc"
    if len(a.shape) == 3 and changed == [1]:
        return "tokens"
    raise ConfigError(f"cannot read block output {a.name} of shape {list(a.shape)} as a map")


def _token_grid(a: TracedLayer, b: TracedLayer) -> tuple[int, int]:
    """``(stride, prefix)`` from the token counts at the two trace sides."""
    cells = (_SIDES[1] ** 2 - _SIDES[0] ** 2) / (b.shape[1] - a.shape[1])
    stride = int(round(math.sqrt(cells)))
    prefix = a.shape[1] - (_SIDES[0] // stride) ** 2
    if stride * stride != round(cells) or prefix < 0:
        raise ConfigError(f"cannot find the patch grid of {a.name} ({a.shape[1]} tokens)")
    return stride, prefix


def _normalisation(name: str, net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = getattr(net, "pretrained_cfg", None)
    if name.startswith(TIMM) and isinstance(cfg, dict) and "mean" in cfg and "std" in cfg:
        return tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])
    return _IMAGENET


@functools.lru_cache(maxsize=16)
def net_info(name: str) -> NetInfo:
    """The :class:`NetInfo` of a zoo backbone (cached per process)."""
    net = build(name, device="meta")
    try:
        small, large = (trace_layers(net, side) for side in _SIDES)
    except (AssertionError, RuntimeError, ValueError, TypeError) as exc:
        # e.g. torchvision's ViTs accept their training size only
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"{name} cannot run on images of {_SIDES[0]} and {_SIDES[1]} px ({reason}); "
            "scotsearch needs networks that take any image size (for ViTs use timm:NAME)"
        ) from exc
    if [l.name for l in small] != [l.name for l in large]:
        raise ConfigError(f"{name}: the blocks run in a different order at another image size")
    modules: list[str] = []
    layouts: list[str] = []
    specs: list[LayerSpec] = []
    prefix, multiple = 0, 1
    for a, b in zip(small, large):
        layout = _layout(a, b)
        if layout == "tokens":
            if a.name == "<stem>":
                continue  # a ViT's patch embedding: only transformer blocks are layers
            stride, prefix = _token_grid(a, b)
            multiple, channels = stride, a.shape[2]
        else:
            h = a.shape[2] if layout == "nchw" else a.shape[1]
            channels = a.shape[1] if layout == "nchw" else a.shape[3]
            stride = int(round(_SIDES[0] / h))
        rf = a.field.rf
        is_global = not math.isfinite(rf)
        stage = 0 if not specs else specs[-1].stage + int(stride != specs[-1].stride)
        block = 0 if not specs or stage != specs[-1].stage else specs[-1].block + 1
        specs.append(LayerSpec(
            id=len(specs), stage=stage, block=block, channels=int(channels), stride=stride,
            rf=GLOBAL_BOX_CELLS * stride if is_global else int(rf), name=a.name,
            global_rf=is_global,
        ))
        modules.append(a.name)
        layouts.append(layout)
    mean, std = _normalisation(name, net)
    return NetInfo(
        name=name, modules=tuple(modules), layouts=tuple(layouts), prefix=prefix,
        specs=tuple(specs), mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]),
        multiple=multiple, marginal=_marginal(name, net),
    )


def _marginal(name: str, net: nn.Module) -> str | None:
    if name == FCN:
        return "fcn"
    if cam_head(net) is not None:
        return "cam"
    return "attn" if class_attention(net) is not None else None


def class_attention(net: nn.Module) -> nn.Module | None:
    """The last block's attention module of a timm ViT with a class token (``None``
    otherwise): its ``qkv``, ``q_norm``, ``k_norm``, ``num_heads`` give the class token's
    attention map."""
    blocks = getattr(net, "blocks", None)
    if getattr(net, "cls_token", None) is None or not isinstance(blocks, nn.Sequential):
        return None
    attn = getattr(blocks[-1], "attn", None)
    if not all(hasattr(attn, a) for a in ("qkv", "q_norm", "k_norm", "num_heads")):
        return None
    return attn


@dataclass(frozen=True)
class CamHead:
    """How to read a class activation map out of a network ending in global average pooling
    and a linear classifier.

    Attributes:
        pool: the pooling module; its input is the map the classifier sees, pooled.
        norm: a per-position norm between the pooling and the classifier (ConvNeXt's
            LayerNorm2d), applied to the map at every position; ``None`` if there is none.
        fc: the linear classifier.
    """

    pool: nn.Module
    norm: Callable[[torch.Tensor], torch.Tensor] | None
    fc: nn.Linear


def cam_head(net: nn.Module) -> CamHead | None:
    """The :class:`CamHead` of ``net``, or ``None`` when it does not end in average pooling
    plus a linear classifier (ViTs, networks without a classifier, MLP heads)."""
    head = getattr(net, "head", None)
    if type(head).__name__ in ("ClassifierHead", "NormMlpClassifierHead"):
        pool, fc = getattr(head, "global_pool", None), getattr(head, "fc", None)
        pre = getattr(head, "pre_logits", nn.Identity())
        norm = getattr(head, "norm", None)
        if not isinstance(pre, nn.Identity) or not isinstance(pool, nn.Module) or \
                not _is_avg(pool) or not isinstance(fc, nn.Linear):
            return None
        return CamHead(pool, None if isinstance(norm, (nn.Identity, type(None))) else norm, fc)
    for pool_name in ("global_pool", "avgpool"):
        pool = getattr(net, pool_name, None)
        if pool is None or not _is_avg(pool):
            continue
        tail = next((getattr(net, a) for a in ("fc", "classifier", "head")
                     if isinstance(getattr(net, a, None), nn.Module)), None)
        mods = list(tail) if isinstance(tail, nn.Sequential) else [tail]
        if not mods or not isinstance(mods[-1], nn.Linear):
            return None
        norms = [m for m in mods[:-1] if not isinstance(m, (nn.Flatten, nn.Dropout, nn.Identity))]
        if any("LayerNorm" not in type(m).__name__ for m in norms) or len(norms) > 1:
            return None
        return CamHead(pool, norms[0] if norms else None, mods[-1])
    return None


def _is_avg(pool: object) -> bool:
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        return True
    is_select = type(pool).__name__ == "SelectAdaptivePool2d"
    return is_select and getattr(pool, "pool_type", "") == "avg"


def grid_sizes(name: str, side: int) -> list[tuple[int, int]]:
    """Feature-map size ``(h, w)`` of every layer id for a square image of ``side`` pixels
    (after the ViT patch padding), from a pass on the ``meta`` device."""
    if name in RESNETS:
        import torchvision

        with torch.device("meta"):
            net = getattr(torchvision.models, name)(weights=None)
        return [(l.shape[2], l.shape[3]) for l in trace_layers(net, side)]
    info = net_info(name)
    padded = side + (-side % info.multiple)
    traced = {l.name: l for l in trace_layers(build(name, device="meta"), padded)}
    sizes = []
    for module, layout, spec in zip(info.modules, info.layouts, info.specs):
        shape = traced[module].shape
        if layout == "tokens":
            sizes.append((padded // spec.stride, padded // spec.stride))
        else:
            sizes.append((shape[2], shape[3]) if layout == "nchw" else (shape[1], shape[2]))
    return sizes
