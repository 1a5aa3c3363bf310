"""Loaded zoo backbones (``timm:NAME``, ``torchvision:NAME``, ``fcn-resnet101``) and their
weights.

:class:`ZooBackbone` has the interface of :class:`scotsearch.backbones.Backbone`
(``specs``, ``forward_layers``, ``fc``, ``describe``), so extraction, the cache, the CAM and
every search use either. Layers are read with forward hooks on the blocks
(:func:`scotsearch.netgraph.run_collecting`) and turned into ``[B x C x h x w]`` maps.

Weights: ``random[:seedN]`` (the library's own initialisation, seeded), a ``.pth`` /
``.safetensors`` FILE, or by default the model's pretrained weights when they are already on
this machine (timm: the Hugging Face cache; torchvision: the torch-hub cache). Nothing is
downloaded: without them the error says which file to fetch and where to put it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from scotsearch.errors import ConfigError
from scotsearch.errors import ScotsearchError
from scotsearch.layerspec import LayerSpec
from scotsearch.netgraph import block_modules
from scotsearch.netgraph import run_collecting
from scotsearch.zoo import FCN
from scotsearch.zoo import TIMM
from scotsearch.zoo import TORCHVISION
from scotsearch.zoo import build
from scotsearch.zoo import cam_head
from scotsearch.zoo import class_attention
from scotsearch.zoo import net_info


logger = logging.getLogger(__name__)


class ZooBackbone(nn.Module):
    """A zoo network in eval mode, read out at its block outputs.

    Attributes:
        name: the backbone name (``timm:convnext_atto``, ...).
        net: the wrapped network.
        weights: description (``pretrained:<source>``, ``file:<path>``, ``random:seed<N>``).
        weights_digest: ``state_dict_digest`` of the loaded weights.
        specs: the layer table (:func:`scotsearch.zoo.net_info`).
        marginal: ``cam``, ``fcn`` or ``None`` (see :data:`scotsearch.zoo.MARGINALS`).
    """

    def __init__(self, name: str, net: nn.Module, *, weights: str, weights_digest: str) -> None:
        super().__init__()
        self.name = name
        self.net = net
        self.weights = weights
        self.weights_digest = weights_digest
        self.info = net_info(name)
        self.specs: tuple[LayerSpec, ...] = self.info.specs
        self.marginal = self.info.marginal
        self._head = cam_head(net) if self.marginal == "cam" else None
        self._attn = class_attention(net) if self.marginal == "attn" else None
        self._blocks = block_modules(net)
        self.eval()

    @property
    def fc(self) -> nn.Linear:
        """The linear classifier the CAM reads (only for ``marginal == "cam"``)."""
        if self._head is None:
            raise ConfigError(f"{self.name} has no global-pooling linear classifier for a CAM")
        return self._head.fc

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...], int]:
        """``(mean, std, multiple)`` of the network input."""
        return self.info.mean, self.info.std, self.info.multiple

    def describe(self) -> dict[str, str]:
        return {"backbone": self.name, "weights": self.weights,
                "weights_digest": self.weights_digest}

    def forward_layers(
        self, x: torch.Tensor, layer_ids: Iterable[int] | None = None, *, need_logits: bool = True
    ) -> tuple[dict[int, torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        """Block outputs at ``layer_ids`` (``None``: all) as ``[B x C x h x w]`` maps.

        Returns:
            ``(features, last, logits)`` as :meth:`scotsearch.backbones.Backbone.
            forward_layers`; with ``need_logits``: for a CAM network ``last`` is the map
            entering the global pooling (per-position normalised when the head has a norm)
            and ``logits`` the class scores; for FCN ``last`` is ``None`` and ``logits`` the
            segmentation scores ``[B x K x H x W]``; for a class-token ViT ``last`` is the
            class token's attention map ``[B x gh x gw]`` and ``logits`` ``None``;
            otherwise both are ``None``.
        """
        n = len(self.specs)
        ids = set(range(n)) if layer_ids is None else {int(i) for i in layer_ids}
        bad = sorted(i for i in ids if not 0 <= i < n)
        if bad:
            raise ConfigError(f"layer id(s) {bad} do not exist for {self.name} (ids 0..{n - 1})")
        by_name = {self.info.modules[i]: i for i in ids}
        run_all = need_logits and self.marginal is not None
        pooled: list[torch.Tensor] = []
        handle = None
        if run_all and self._head is not None:
            handle = self._head.pool.register_forward_pre_hook(
                lambda _m, a: pooled.append(a[0]) if not pooled else None)
        if run_all and self._attn is not None:  # the tokens the last attention reads
            handle = self._attn.register_forward_pre_hook(
                lambda _m, a: pooled.append(a[0]) if not pooled else None)
        try:
            raw, result = run_collecting(self.net, x, self._blocks, set(by_name),
                                         stop_early=not run_all)
        finally:
            if handle is not None:
                handle.remove()
        feats = {by_name[k]: self._as_map(v, by_name[k], x) for k, v in raw.items()}
        if not run_all:
            return feats, None, None
        if self.marginal == "fcn":
            return feats, None, result["out"]
        if self.marginal == "attn":
            return feats, self._class_attention(pooled[0], x), None
        assert self._head is not None and pooled
        last = pooled[0] if self._head.norm is None else self._head.norm(pooled[0])
        channels = self._head.fc.in_features
        if last.shape[1] != channels and last.shape[-1] == channels:
            last = last.permute(0, 3, 1, 2)  # a channels-last map (timm's Swin)
        return feats, last, result

    def _class_attention(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``[B x gh x gw]``: the class token's attention to each patch in the last block,
        averaged over the heads (softmax over every token, as the block computes it)."""
        attn = self._attn
        assert attn is not None
        b, n, c = tokens.shape
        heads = int(getattr(attn, "num_heads"))
        qkv = getattr(attn, "qkv")(tokens).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q = getattr(attn, "q_norm")(qkv[0])  # [B x heads x N x d]
        k = getattr(attn, "k_norm")(qkv[1])
        scores = (q[:, :, :1] @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # [B x h x 1 x N]
        weights = scores.softmax(dim=-1)[:, :, 0, self.info.prefix :].mean(dim=1)
        stride = self.specs[-1].stride
        return weights.reshape(b, int(x.shape[2]) // stride, int(x.shape[3]) // stride)

    def foreground(self, x: torch.Tensor, last: torch.Tensor | None,
                   logits: torch.Tensor | None, *, compat: str = "") -> torch.Tensor:
        """``[n x h x w]`` foreground maps of the images ``x`` (values in [0, 1]).

        CAM networks: SCOT's multi-scale top-2 CAM (:func:`scotsearch.cam.multiscale_cams`).
        FCN: one minus the background probability of the segmentation head at scale 1; with
        ``compat="scot"`` SCOT's own rule instead (reference-behaviour.md §4.1): the arg-max
        class index map ``(label - min) / max`` (a class-index map, not a clean mask; an
        image with no foreground class, max 0, gives zeros where SCOT would divide by 0).
        ViTs with a class token: its last-block attention map, bilinearly upsampled to the
        input size and min-max scaled per image.
        """
        from scotsearch.cam import multiscale_cams

        if self.marginal == "cam":
            assert last is not None and logits is not None
            return multiscale_cams(self, x, base=(last, logits))
        if self.marginal == "fcn":
            assert logits is not None
            out = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
            if compat == "scot":
                label = out.argmax(dim=1).to(out.dtype)
                lo = label.flatten(1).min(dim=1).values.view(-1, 1, 1)
                hi = label.flatten(1).max(dim=1).values.view(-1, 1, 1)
                return torch.where(hi > 0, (label - lo) / hi.clamp_min(1), 0.0)
            return 1.0 - F.softmax(out, dim=1)[:, 0]
        if self.marginal == "attn":
            assert last is not None
            up = F.interpolate(last[:, None], size=x.shape[-2:], mode="bilinear",
                               align_corners=False)[:, 0]
            lo = up.flatten(1).min(dim=1).values.view(-1, 1, 1)
            hi = up.flatten(1).max(dim=1).values.view(-1, 1, 1)
            return (up - lo) / (hi - lo).clamp_min(1e-12)
        raise ConfigError(f"{self.name} gives no foreground map")

    def _as_map(self, t: torch.Tensor, i: int, x: torch.Tensor) -> torch.Tensor:
        layout = self.info.layouts[i]
        if layout == "nchw":
            return t
        if layout == "nhwc":
            return t.permute(0, 3, 1, 2).contiguous()
        stride = self.specs[i].stride
        gh, gw = int(x.shape[2]) // stride, int(x.shape[3]) // stride
        patches = t[:, self.info.prefix :]
        if patches.shape[1] != gh * gw:
            raise ScotsearchError(
                f"{self.name}: {patches.shape[1]} patch tokens for a {gh}x{gw} grid")
        return patches.reshape(t.shape[0], gh, gw, t.shape[2]).permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------------- weights
def pretrained_source(name: str) -> tuple[str, Path | None, str]:
    """Where the default pretrained weights of ``name`` would be on this machine.

    Returns:
        ``(description, path, advice)``: the weights' name, the local file (``None`` when
        absent) and the one-line advice naming the file and where to put it.
    """
    from scotsearch.weights import hub_checkpoints

    if name.startswith(TIMM):
        cfg = getattr(build(name, device="meta"), "pretrained_cfg", {}) or {}
        repo = cfg.get("hf_hub_id")
        if repo:
            from huggingface_hub import constants
            from huggingface_hub import try_to_load_from_cache

            for fname in ("model.safetensors", "pytorch_model.bin"):
                hit = try_to_load_from_cache(repo, fname)
                if isinstance(hit, str):
                    return f"pretrained:{repo}", Path(hit), ""
            return (f"pretrained:{repo}", None,
                    f"download model.safetensors of the Hugging Face repository {repo} into "
                    f"the Hugging Face cache ({constants.HF_HUB_CACHE}) or anywhere and pass "
                    "--weights FILE")
        url = cfg.get("url") or ""
    elif name == FCN:
        from torchvision.models.segmentation import FCN_ResNet101_Weights

        url = FCN_ResNet101_Weights.DEFAULT.url
    else:
        import torchvision

        try:
            url = torchvision.models.get_model_weights(name[len(TORCHVISION):]).DEFAULT.url
        except (ValueError, AttributeError, KeyError):
            url = ""
    if not url:
        return "pretrained", None, f"{name} has no published weights; pass --weights FILE"
    fname = os.path.basename(urlparse(url).path)
    path = hub_checkpoints() / fname
    advice = f"put {fname} (from {url}) in {hub_checkpoints()} or pass --weights FILE"
    return f"pretrained:{fname}", (path if path.is_file() else None), advice


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a torch checkpoint (``.pth``)."""
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # SafetensorError, OSError, ...
            raise ScotsearchError(f"cannot read weights file {path}: {exc}") from exc
    from scotsearch.backbones import _read_state_dict

    return _read_state_dict(path)


def load_zoo(name: str, weights: str | None, *, seed: int,
             allow_random_fallback: bool) -> ZooBackbone:
    """Build a zoo backbone with the weights ``--weights`` names (see the module docstring).

    Raises:
        ConfigError: unknown name, unreadable seed.
        ScotsearchError: weights missing offline, unreadable or not fitting the network.
    """
    import warnings

    from scotsearch.backbones import _load_into
    from scotsearch.backbones import state_dict_digest
    from scotsearch.weights import describe_weights
    from scotsearch.weights import parse_weights

    net_info(name)  # checks the name and the layer scheme before any weights work
    spec = parse_weights(weights, seed)
    if spec.kind == "random" and spec.seed is None:
        raise ConfigError(f"cannot read a seed from {weights!r}; write random:seed<N>")
    description: str
    if spec.kind == "imagenet":
        description, path, advice = pretrained_source(name)
        if path is None:
            msg = f"no pretrained weights for {name} on this machine: {advice}"
            if not allow_random_fallback:
                raise ScotsearchError(msg + " (or --weights random)")
            warnings.warn(f"{msg}; using random weights (seed {seed}) instead",
                          RuntimeWarning, stacklevel=2)
            spec = parse_weights("random", seed)
        else:
            state = read_weights_file(path)
    elif spec.kind == "file":
        assert spec.path is not None
        description = describe_weights(spec)
        state = read_weights_file(spec.path)
    if spec.kind == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(spec.seed or 0))
            net = build(name)
        description = describe_weights(spec)
    else:
        with torch.random.fork_rng(devices=[]):
            net = build(name)
        _load_into(net, state, f"weights for {name}")
    return ZooBackbone(name, net, weights=description,
                       weights_digest=state_dict_digest(net.state_dict()))
