"""ImageNet ResNets with the HPF layer numbering, their weights, and per-image extraction.

Other backbones (``timm:NAME``, ``torchvision:NAME``, ``fcn-resnet101``) are
:class:`scotsearch.zoonet.ZooBackbone`; :func:`load_backbone` and :func:`extract_features`
take either (:data:`AnyBackbone`).

Layer ids (reference-behaviour.md §1.2, §12.5): id 0 is the stem after max-pool; id k >= 1 is
the k-th bottleneck (counted over layer1..layer4) after the residual add and *before* its
final ReLU. torchvision's block outputs (post-ReLU) are not the same features, so the
bottleneck forward is re-implemented here instead of hooking the blocks.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from scotsearch import zoo
from scotsearch.cam import multiscale_cams
from scotsearch.config import Profile
from scotsearch.errors import ConfigError
from scotsearch.errors import DataError
from scotsearch.errors import ScotsearchError
from scotsearch.features import ImageFeatures
from scotsearch.layers import layer_specs
from scotsearch.layerspec import LayerSpec
from scotsearch.preprocess import IMAGENET_MEAN
from scotsearch.preprocess import IMAGENET_STD
from scotsearch.preprocess import prepare_image
from scotsearch.weights import IMAGENET_WEIGHTS
from scotsearch.weights import WeightsSpec
from scotsearch.weights import describe_weights
from scotsearch.weights import hub_checkpoints
from scotsearch.weights import imagenet_checkpoint
from scotsearch.weights import imagenet_file_name
from scotsearch.weights import imagenet_url
from scotsearch.weights import parse_weights
from scotsearch.zoonet import ZooBackbone
from scotsearch.zoonet import load_zoo


if TYPE_CHECKING:
    from torchvision.models.resnet import Bottleneck
    from torchvision.models.resnet import ResNet


logger = logging.getLogger(__name__)

#: The ResNets built here. torchvision is imported when one is built, not with this module: it
#: costs about 2 s, and a command whose features are cached never builds a network.
_BUILDERS = ("resnet50", "resnet101")


def _torchvision_resnet(name: str) -> ResNet:
    import torchvision

    return getattr(torchvision.models, name)(weights=None)


def state_dict_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 hex digest identifying a set of weights, independent of the file it came from.

    Hashes, in sorted key order, each key, dtype, shape and the raw bytes of the contiguous
    CPU tensor. BatchNorm ``num_batches_tracked`` counters are skipped: they do not change an
    eval-mode network and old checkpoints lack them (``load_state_dict`` then fills in 0).
    """
    h = hashlib.sha256()
    for key in sorted(state):
        if key.endswith("num_batches_tracked"):
            continue
        t = state[key].detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Backbone(nn.Module):
    """A torchvision ResNet in eval mode, read out at the HPF layer ids.

    Attributes:
        name: ``resnet50`` or ``resnet101``.
        net: the wrapped torchvision ``ResNet``.
        weights: human description: ``IMAGENET1K_V1``, ``file:<path>`` or ``random:seed<N>``.
        weights_digest: ``state_dict_digest`` of the loaded weights (what caches key on).
        specs: ``layer_specs(name)``: channels, stride and receptive field per id.
    """

    def __init__(self, name: str, net: ResNet, *, weights: str, weights_digest: str) -> None:
        super().__init__()
        self.name = name
        self.net = net
        self.weights = weights
        self.weights_digest = weights_digest
        self.specs: tuple[LayerSpec, ...] = layer_specs(name)
        self.blocks: list[Bottleneck] = [
            block for stage in (net.layer1, net.layer2, net.layer3, net.layer4) for block in stage
        ]
        if len(self.blocks) != len(self.specs) - 1:
            raise ConfigError(
                f"{name}: network has {len(self.blocks)} bottlenecks, "
                f"expected {len(self.specs) - 1}"
            )
        # Batch-norm must use its running statistics (references call .eval()).
        self.eval()

    #: The foreground map it gives: SCOT's multi-scale CAM.
    marginal = "cam"

    @property
    def fc(self) -> nn.Linear:
        """The ImageNet classifier (``[1000 x 2048]`` weight), used by the CAM."""
        return self.net.fc

    @property
    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...], int]:
        """``(mean, std, multiple)`` of the network input: ImageNet's, no padding."""
        return IMAGENET_MEAN, IMAGENET_STD, 1

    def foreground(self, x: torch.Tensor, last: torch.Tensor | None,
                   logits: torch.Tensor | None, *, compat: str = "") -> torch.Tensor:
        """SCOT's multi-scale CAM ``[n x h x w]`` of ``x`` (``last``/``logits`` of its pass);
        the same in every compat mode."""
        del compat
        assert last is not None and logits is not None
        return multiscale_cams(self, x, base=(last, logits))

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def describe(self) -> dict[str, str]:
        """Identity of the network for caches and exports."""
        return {
            "backbone": self.name,
            "weights": self.weights,
            "weights_digest": self.weights_digest,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``[B x 1000]`` of ``x [B x 3 x h x w]`` (same as torchvision's)."""
        _, _, logits = self.forward_layers(x, (), need_logits=True)
        assert logits is not None
        return logits

    def forward_layers(
        self, x: torch.Tensor, layer_ids: Iterable[int] | None = None, *, need_logits: bool = True
    ) -> tuple[dict[int, torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        """Manual forward pass collecting the requested layer ids (reference-behaviour.md §1.2).

        Args:
            x: ``[B x 3 x h x w]`` normalised input.
            layer_ids: ids to return (``None``: all).
            need_logits: run the whole network and return ``last`` and ``logits`` (the CAM
                needs them, so SCOT never stops early); ``False`` stops after the largest
                requested id, as HPF does, and returns ``None`` for both.

        Returns:
            ``(features, last, logits)``: ``features`` maps id -> ``[B x C x h' x w']``
            (id 0 after max-pool, id k >= 1 pre-ReLU); ``last`` is the final layer4 output
            after its ReLU ``[B x 2048 x h/32 x w/32]``; ``logits`` = fc(avgpool(last))
            ``[B x 1000]``.
        """
        n = len(self.specs)
        wanted = set(range(n)) if layer_ids is None else {int(i) for i in layer_ids}
        bad = sorted(i for i in wanted if not 0 <= i < n)
        if bad:
            raise ConfigError(f"layer id(s) {bad} do not exist for {self.name} (ids 0..{n - 1})")
        stop = n - 1 if need_logits else max(wanted, default=-1)
        feats: dict[int, torch.Tensor] = {}
        if stop < 0:
            return feats, None, None

        net = self.net
        feat = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        if 0 in wanted:
            feats[0] = feat
        for k, block in enumerate(self.blocks[:stop], start=1):
            identity = feat if block.downsample is None else block.downsample(feat)
            out = block.relu(block.bn1(block.conv1(feat)))
            out = block.relu(block.bn2(block.conv2(out)))
            out = block.bn3(block.conv3(out)) + identity
            if k in wanted:
                feats[k] = out  # after the residual add, before the ReLU
            # Out of place: the stored pre-ReLU tensor must not be overwritten (torchvision's
            # block.relu is inplace=True).
            feat = F.relu(out)
        if not need_logits:
            return feats, None, None
        last = feat
        logits = net.fc(torch.flatten(net.avgpool(last), 1))
        return feats, last, logits


#: Either kind of loaded backbone.
AnyBackbone = Union[Backbone, ZooBackbone]


def _build(name: str, seed: int) -> ResNet:
    """A randomly initialised ResNet, deterministic in ``seed`` (global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _torchvision_resnet(name)


def _skeleton(name: str) -> ResNet:
    """The architecture without initialised weights (meta tensors), to be filled by a load."""
    with torch.device("meta"):
        return _torchvision_resnet(name)


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        zoo.check_name(name)
        raise ConfigError(f"unknown backbone {name!r}; choose one of {sorted(_BUILDERS)}")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: a plain state dict or one under 'state_dict'/'model'."""
    if not path.is_file():
        raise ScotsearchError(f"weights file {path} does not exist")
    try:
        # weights_only: never run pickled code from a checkpoint.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScotsearchError(f"cannot read weights file {path}: {reason}") from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ScotsearchError(f"weights file {path} holds no state dict")
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ScotsearchError(f"weights file {path}: entry {key!r} is not a tensor")
        # DataParallel / DistributedDataParallel checkpoints prefix every key with 'module.'.
        state[key[len("module.") :] if key.startswith("module.") else key] = value
    return state


def _load_into(net: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Strictly load ``state`` into ``net``; one-line error naming ``source`` on mismatch."""
    own = net.state_dict()
    # Checkpoints from before BatchNorm counted batches lack num_batches_tracked.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        problems.append(
            f"{len(wrong)} shape mismatch(es) "
            f"(e.g. {k}: {list(state[k].shape)} vs {list(own[k].shape)})"
        )
    if problems:
        raise ScotsearchError(f"{source} does not fit {_arch_of(net)}: " + "; ".join(problems))
    bad = [k for k in state if k in own and state[k].is_floating_point()
           and not bool(torch.isfinite(state[k]).all())]
    if bad:
        # Checked here, not left to the features: NaN weights would be reported later as
        # "CAM has non-finite values", which blames the image.
        raise ScotsearchError(
            f"{source} has non-finite values (NaN or inf) in {len(bad)} tensor(s), e.g. {bad[0]}"
        )
    # `net` may be a meta-device skeleton: assign the loaded tensors (cast to the model's own
    # dtypes, so a half-precision file still gives a float32 network) instead of copying.
    full = {
        k: state[k].to(v.dtype) if k in state else torch.zeros((), dtype=v.dtype)  # counters
        for k, v in own.items()
    }
    net.load_state_dict(full, strict=True, assign=True)


def _arch_of(net: nn.Module) -> str:
    from torchvision.models.resnet import ResNet

    if not isinstance(net, ResNet):
        return type(net).__name__
    n = sum(len(s) for s in (net.layer1, net.layer2, net.layer3, net.layer4))
    return {16: "resnet50", 33: "resnet101"}.get(n, "this ResNet")


def _wrap(name: str, net: ResNet, weights: str) -> Backbone:
    return Backbone(name, net, weights=weights, weights_digest=state_dict_digest(net.state_dict()))


def _random(name: str, seed: int) -> Backbone:
    return _wrap(name, _build(name, seed), describe_weights(WeightsSpec("random", seed=seed)))


def _imagenet_state(name: str) -> dict[str, torch.Tensor]:
    """The IMAGENET1K_V1 state dict from the hub cache or a download; ScotsearchError if none."""
    path = imagenet_checkpoint(name)
    if path is not None:
        return _read_state_dict(path)
    url = imagenet_url(name)
    file_name = imagenet_file_name(name)
    folder = hub_checkpoints()
    try:
        logger.info("downloading %s ImageNet weights from %s", name, url)
        # Looked up on torch.hub at call time so tests can replace it.
        state = torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=False, check_hash=True
        )
        return dict(state)
    except Exception as exc:  # URLError, HTTPError, hash mismatch, disk full, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScotsearchError(
            f"no {IMAGENET_WEIGHTS} weights for {name} (download failed: {reason}); place "
            f"{file_name} in {folder} or pass --weights FILE (or --weights random for an "
            "offline demo)"
        ) from exc


def load_backbone(
    name: str, weights: str | None = None, *, seed: int = 0, allow_random_fallback: bool = False
) -> AnyBackbone:
    """Build a backbone with the requested weights.

    Args:
        name: ``resnet50`` or ``resnet101``; or a zoo backbone (``timm:NAME``,
            ``torchvision:NAME``, ``fcn-resnet101``: :func:`scotsearch.zoonet.load_zoo`,
            whose default weights are the model's pretrained ones from a local cache).
        weights: ``None`` or ``"IMAGENET1K_V1"`` (torchvision's V1 ImageNet weights, what the
            references used), ``"random"`` / ``"random:seed<N>"`` (seeded random init), or a
            path to a checkpoint (plain state dict, or under ``state_dict``/``model``; a
            ``module.`` prefix is stripped).
        seed: seed of the random init (``"random"`` or the fallback).
        allow_random_fallback: when the ImageNet weights are neither cached nor downloadable,
            warn once and use random weights instead of raising.

    Returns:
        The backbone in eval mode, on the CPU.

    Raises:
        ConfigError: unknown backbone name.
        ScotsearchError: weights missing, unreadable or not matching the architecture.
    """
    if zoo.is_zoo(name):
        return load_zoo(name, weights, seed=seed, allow_random_fallback=allow_random_fallback)
    _check_name(name)
    spec = parse_weights(weights, seed)
    if spec.kind == "imagenet":
        try:
            state = _imagenet_state(name)
        except ScotsearchError as exc:
            if not allow_random_fallback:
                raise
            warnings.warn(
                f"{exc}; using random weights (seed {seed}) instead", RuntimeWarning, stacklevel=2
            )
            return _random(name, seed)
        net = _skeleton(name)
        _load_into(net, state, f"{IMAGENET_WEIGHTS} checkpoint")
        return _wrap(name, net, describe_weights(spec))
    if spec.kind == "random":
        if spec.seed is None:
            raise ConfigError(f"cannot read a seed from {weights!r}; write random:seed<N>")
        return _random(name, spec.seed)
    assert spec.path is not None
    path = spec.path
    state = _read_state_dict(path)
    net = _skeleton(name)
    _load_into(net, state, f"weights file {path}")
    return _wrap(name, net, describe_weights(spec))


def extract_features(
    backbone: AnyBackbone,
    img: torch.Tensor,
    profile: Profile,
    layer_ids: Iterable[int] | None = None,
    *,
    with_cam: bool,
    device: torch.device | str | None = None,
) -> ImageFeatures:
    """Prepare one image, run the backbone and collect its layers (and CAM).

    Args:
        backbone: the network; moved to ``device`` when one is given.
        img: ``[3 x H x W]`` uint8 RGB image.
        profile: preprocessing conventions.
        layer_ids: ids to keep (``None``: all of them).
        with_cam: also compute the foreground map (ResNets and other CAM networks: the
            multi-scale CAM, running the whole network at 3 scales; FCN: its foreground
            probability); ignored for a network that gives none (the map is then ``None``).
        device: where to compute (default: the backbone's device).

    Returns:
        ``ImageFeatures`` with float32 CPU tensors: layers id -> ``[C x h x w]``, CAM
        ``[H' x W']`` at the network-input size (``None`` without ``with_cam``). The network
        input is normalised with the backbone's own statistics and, for ViTs, padded to a
        multiple of the patch (``image_size`` is the padded size).
    """
    if img.dim() != 3 or img.shape[0] != 3:
        raise DataError(f"expected an RGB image tensor [3, H, W], got shape {list(img.shape)}")
    if device is not None:
        backbone.to(device)
    target = backbone.device
    ids = tuple(range(len(backbone.specs))) if layer_ids is None else tuple(layer_ids)
    with_cam = with_cam and backbone.marginal is not None
    mean, std, multiple = backbone.normalisation
    with torch.no_grad():
        x, ratio = prepare_image(img.to(target), profile, mean=mean, std=std, multiple=multiple)
        feats, last, logits = backbone.forward_layers(x, ids, need_logits=with_cam)
        cam = None
        if with_cam:
            cam = backbone.foreground(x, last, logits, compat=profile.name)[0].float().cpu()
    return ImageFeatures(
        layers={k: v[0].float().cpu() for k, v in sorted(feats.items())},
        image_size=(int(x.shape[2]), int(x.shape[3])),
        ratio=ratio,
        orig_size=(int(img.shape[1]), int(img.shape[2])),
        cam=cam,
    )
