"""Backbones: HPF layer numbering, weights handling, preprocessing, feature extraction.

Random weights only; the network is never reached (downloads are replaced by a failing stub).
"""

from __future__ import annotations

import math
import os
import urllib.error
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.transforms import Normalize

from scotsearch.backbones import Backbone
from scotsearch.backbones import extract_features
from scotsearch.backbones import load_backbone
from scotsearch.backbones import state_dict_digest
from scotsearch.config import Profile
from scotsearch.errors import ConfigError
from scotsearch.errors import DataError
from scotsearch.errors import ScotsearchError
from scotsearch.preprocess import IMAGENET_MEAN
from scotsearch.preprocess import IMAGENET_STD
from scotsearch.preprocess import prepare_image
from scotsearch.preprocess import resize_plan
from scotsearch.presets import get_profile
from scotsearch.weights import IMAGENET_WEIGHTS


NAMES = ("resnet50", "resnet101")
_MODELS: dict[str, Backbone] = {}


def _model(name: str) -> Backbone:
    """One random backbone per architecture for the whole module (building costs ~1 s)."""
    if name not in _MODELS:
        _MODELS[name] = load_backbone(name, "random", seed=0)
    return _MODELS[name]


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, h, w, generator=g)


# ----------------------------------------------------------------------------- layer numbering


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(224, 224), (65, 97)])
def test_every_id_has_the_channels_and_stride_of_its_spec(
    name: str, size: tuple[int, int]
) -> None:
    bb = _model(name)
    with torch.no_grad():
        feats, last, logits = bb.forward_layers(_image(*size))
    assert sorted(feats) == list(range(len(bb.specs))) == [s.id for s in bb.specs]
    for spec in bb.specs:
        # every conv/pool of a ResNet maps n -> ceil(n / 2), so a stride s map is ceil(n / s)
        rows, cols = (math.ceil(n / spec.stride) for n in size)
        expected = (1, spec.channels, rows, cols)
        assert tuple(feats[spec.id].shape) == expected, spec
    if size == (224, 224):
        assert feats[0].shape[-2:] == (56, 56)
        assert all(feats[s.id].shape[-2:] == (7, 7) for s in bb.specs if s.stage == 4)
    assert last is not None and logits is not None
    assert last.shape[1] == 2048 and tuple(logits.shape) == (1, 1000)


@pytest.mark.parametrize("name", NAMES)
def test_ids_are_pre_relu_block_outputs_of_torchvisions_own_forward(name: str) -> None:
    """Oracle: hooks on torchvision's forward (net(x)), not on our manual forward."""
    bb = _model(name)
    net = bb.net
    x = _image(64, 80, seed=1)
    relu_inputs: dict[int, list[torch.Tensor]] = {}
    block_inputs: dict[int, torch.Tensor] = {}
    pooled: list[torch.Tensor] = []
    handles = [net.maxpool.register_forward_hook(lambda m, a, out: pooled.append(out.clone()))]
    for k, block in enumerate(bb.blocks, start=1):
        relu_inputs[k] = []

        def on_relu(m, args, k=k):  # type: ignore[no-untyped-def]
            relu_inputs[k].append(args[0].clone())  # clone: torchvision's ReLU is in-place

        def on_block(m, args, k=k):  # type: ignore[no-untyped-def]
            block_inputs[k] = args[0].clone()

        handles.append(block.relu.register_forward_pre_hook(on_relu))
        handles.append(block.register_forward_pre_hook(on_block))
    try:
        with torch.no_grad():
            ref_logits = net(x)
    finally:
        for h in handles:
            h.remove()

    with torch.no_grad():
        feats, last, logits = bb.forward_layers(x)
    n = len(bb.specs)
    # id 0: the max-pool output, i.e. what layer1[0] receives
    torch.testing.assert_close(feats[0], pooled[0], rtol=0, atol=0)
    torch.testing.assert_close(feats[0], block_inputs[1], rtol=0, atol=0)
    for k in range(1, n):
        # Bottleneck.forward calls self.relu three times; the third input is bn3 + identity
        assert len(relu_inputs[k]) == 3
        torch.testing.assert_close(feats[k], relu_inputs[k][2])
        assert (feats[k] < 0).any(), f"id {k} should be pre-ReLU"
        if k + 1 < n:
            torch.testing.assert_close(F.relu(feats[k]), block_inputs[k + 1])
            assert not (block_inputs[k + 1] < 0).any()
    assert last is not None and logits is not None
    torch.testing.assert_close(last, F.relu(feats[n - 1]))
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(bb(x), ref_logits)


def test_early_exit_stops_after_the_largest_requested_id() -> None:
    bb = _model("resnet50")
    x = _image(64, 64, seed=2)
    calls: list[int] = []
    handle = bb.blocks[5].conv1.register_forward_hook(lambda m, a, o: calls.append(1))  # id 6
    try:
        with torch.no_grad():
            part, last, logits = bb.forward_layers(x, (5, 2), need_logits=False)
            assert calls == []
            full, _, _ = bb.forward_layers(x, None)
    finally:
        handle.remove()
    assert sorted(part) == [2, 5] and last is None and logits is None
    for k in part:
        torch.testing.assert_close(part[k], full[k], rtol=0, atol=0)
    assert bb.forward_layers(x, (), need_logits=False) == ({}, None, None)
    with pytest.raises(ConfigError):
        bb.forward_layers(x, (17,))


# --------------------------------------------------------------------------------- weights


def test_random_weights_are_deterministic_by_seed_and_leave_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(4)
    torch.manual_seed(123)
    a = load_backbone("resnet50", "random", seed=7)
    assert torch.equal(torch.rand(4), expected_next)
    b = load_backbone("resnet50", "random:seed7")
    c = load_backbone("resnet50", "random", seed=8)
    assert a.weights == b.weights == "random:seed7"
    assert c.weights == "random:seed8"
    assert a.weights_digest == b.weights_digest != c.weights_digest
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.weight"], c.net.state_dict()["conv1.weight"])
    assert not a.training and not a.net.training
    with pytest.raises(ConfigError):
        load_backbone("resnet50", "random:seedX")


def test_digest_is_stable_and_sensitive_to_any_weight() -> None:
    bb = _model("resnet50")
    state = {k: v.clone() for k, v in bb.net.state_dict().items()}
    assert len(bb.weights_digest) == 64
    assert state_dict_digest(state) == bb.weights_digest
    # key order and the batch counters do not matter
    reordered = dict(reversed(list(state.items())))
    reordered["bn1.num_batches_tracked"] = torch.tensor(99)
    assert state_dict_digest(reordered) == bb.weights_digest
    state["layer3.2.conv2.weight"][0, 0, 0, 0] += 1e-3
    assert state_dict_digest(state) != bb.weights_digest
    state = {k: v.clone() for k, v in bb.net.state_dict().items()}
    state["fc.bias"] = state["fc.bias"].double()
    assert state_dict_digest(state) != bb.weights_digest


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model+module"])
def test_weights_file_round_trip(tmp_path: Path, layout: str) -> None:
    src = _model("resnet50")
    state = src.net.state_dict()
    if layout == "state_dict":
        obj: object = {"state_dict": state, "epoch": 3}
    elif layout == "model+module":
        obj = {"model": {f"module.{k}": v for k, v in state.items()}}
    else:
        obj = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "weights.pth"
    torch.save(obj, path)
    bb = load_backbone("resnet50", str(path), seed=5)  # the seed must not matter
    assert bb.weights == f"file:{path.resolve()}"
    assert bb.weights_digest == src.weights_digest
    tensors = list(bb.net.parameters()) + list(bb.net.buffers())
    assert all(t.device.type == "cpu" for t in tensors)
    assert not bb.training


def test_half_precision_file_loads_as_float32(tmp_path: Path) -> None:
    state = _model("resnet50").net.state_dict()
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    path = tmp_path / "half.pt"
    torch.save(half, path)
    bb = load_backbone("resnet50", str(path))
    assert all(p.dtype == torch.float32 for p in bb.net.parameters())
    as_float = {k: v.float() if v.is_floating_point() else v for k, v in half.items()}
    assert bb.weights_digest == state_dict_digest(as_float) != _model("resnet50").weights_digest


def test_weights_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(ScotsearchError, match="nope.pth"):
        load_backbone("resnet50", str(missing))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ScotsearchError, match="corrupt.pth") as err:
        load_backbone("resnet50", str(corrupt))
    assert "\n" not in str(err.value)
    other = tmp_path / "r50.pth"
    torch.save(_model("resnet50").net.state_dict(), other)
    with pytest.raises(ScotsearchError, match="r50.pth.*resnet101") as err:
        load_backbone("resnet101", str(other))
    assert "\n" not in str(err.value)
    extra = tmp_path / "extra.pth"
    torch.save({**_model("resnet50").net.state_dict(), "head.weight": torch.zeros(2)}, extra)
    with pytest.raises(ScotsearchError, match="extra.pth.*unexpected"):
        load_backbone("resnet50", str(extra))
    with pytest.raises(ConfigError, match="vgg16"):
        load_backbone("vgg16", "random")


# ------------------------------------------------------------------- ImageNet weights offline


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """An empty hub cache under tmp_path and a download function that always fails."""
    hub = tmp_path / "hub"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    calls: list[str] = []

    def no_network(url: str, *args: object, **kwargs: object) -> object:
        calls.append(url)
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    return {"dir": hub / "checkpoints", "calls": calls}


def _v1_file(name: str) -> str:
    enum = {
        "resnet50": torchvision.models.ResNet50_Weights,
        "resnet101": torchvision.models.ResNet101_Weights,
    }
    v1 = os.path.basename(enum[name].IMAGENET1K_V1.url)
    assert v1 != os.path.basename(enum[name].DEFAULT.url)  # DEFAULT is V2: never use it
    return v1


@pytest.mark.parametrize("weights", [None, IMAGENET_WEIGHTS])
def test_offline_imagenet_weights_raise_naming_both_options(
    offline_hub: dict, weights: str | None
) -> None:
    with pytest.raises(ScotsearchError) as err:
        load_backbone("resnet50", weights)
    message = str(err.value)
    assert "\n" not in message
    assert _v1_file("resnet50") in message
    assert str(offline_hub["dir"]) in message
    assert "--weights FILE" in message and "--weights random" in message
    assert len(offline_hub["calls"]) == 1


def test_offline_imagenet_weights_fall_back_to_random_with_one_warning(offline_hub: dict) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bb = load_backbone("resnet50", allow_random_fallback=True, seed=3)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert "random" in str(caught[0].message)
    assert bb.weights == "random:seed3"
    assert bb.weights_digest == load_backbone("resnet50", "random", seed=3).weights_digest


@pytest.mark.parametrize("file_name", ["current", "legacy"])
def test_imagenet_weights_come_from_the_hub_cache(offline_hub: dict, file_name: str) -> None:
    folder: Path = offline_hub["dir"]  # type: ignore[assignment]
    folder.mkdir(parents=True)
    name = _v1_file("resnet50") if file_name == "current" else "resnet50-19c8e357.pth"
    src = load_backbone("resnet50", "random", seed=11)
    torch.save(src.net.state_dict(), folder / name)
    bb = load_backbone("resnet50", IMAGENET_WEIGHTS)
    assert bb.weights == IMAGENET_WEIGHTS
    assert bb.weights_digest == src.weights_digest
    assert offline_hub["calls"] == []


def test_corrupt_cached_checkpoint_is_reported(offline_hub: dict) -> None:
    folder: Path = offline_hub["dir"]  # type: ignore[assignment]
    folder.mkdir(parents=True)
    (folder / _v1_file("resnet50")).write_bytes(b"truncated")
    with pytest.raises(ScotsearchError, match=_v1_file("resnet50")):
        load_backbone("resnet50")


# ----------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(
    ("hw", "compat", "expected"),
    [
        ((375, 500), "scot", (225, 300)),
        ((375, 500), "hpf", (225, 300)),
        ((500, 375), "hpf", (300, 225)),
        ((150, 200), "scot", (225, 300)),
        ((150, 200), "hpf", (150, 200)),
        ((300, 120), "hpf", (300, 120)),
        ((300, 120), "scot", (300, 120)),
    ],
)
def test_resize_rule(hw: tuple[int, int], compat: str, expected: tuple[int, int]) -> None:
    img = torch.randint(0, 256, (3, *hw), dtype=torch.uint8)
    x, ratio = prepare_image(img, get_profile(compat))
    assert tuple(x.shape) == (1, 3, *expected)
    assert x.dtype == torch.float32 and x.device == img.device
    if expected == hw:
        assert ratio == 1.0
    else:
        assert ratio == pytest.approx(300 / max(hw), rel=1e-6)


def test_resize_size_uses_the_references_float32_arithmetic() -> None:
    # float64 would give int(281 * (300 / 281)) = 299; the references compute in float32 -> 300
    (h, w), ratio = resize_plan(2, 281, get_profile("scot"))
    assert (h, w) == (2, 300)
    assert ratio == float(torch.tensor(300.0) / torch.tensor(281.0))


def test_normalise_then_resize_matches_hand_computation() -> None:
    # 2 x 4 image, longer side 4 -> 2: bilinear (align_corners=False) halving = 2x2 block mean
    img = torch.tensor(
        [
            [[0, 50, 100, 150], [200, 250, 10, 20]],
            [[5, 5, 5, 5], [255, 255, 0, 0]],
            [[1, 2, 3, 4], [5, 6, 7, 8]],
        ],
        dtype=torch.uint8,
    )
    x, ratio = prepare_image(img, Profile(name="t", image_side=2))
    assert ratio == 0.5
    expected = torch.empty(1, 3, 1, 2, dtype=torch.float64)
    for c in range(3):
        for j in range(2):
            block = [img[c, i, 2 * j + d].item() for i in range(2) for d in range(2)]
            norm = [(v / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c] for v in block]
            expected[0, c, 0, j] = sum(norm) / 4
    torch.testing.assert_close(x.double(), expected, rtol=0, atol=1e-6)

    # upsampling 2x2 -> 4x4 (SCOT profile): align_corners=False weights 1, 3/4, 1/4, 0
    small = torch.tensor([[[0, 255], [255, 0]]] * 3, dtype=torch.uint8)
    x, ratio = prepare_image(small, Profile(name="t", image_side=4))
    assert ratio == 2.0
    wts = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]], dtype=torch.float64)
    for c in range(3):
        norm = (small[c].double() / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        torch.testing.assert_close(x[0, c].double(), wts @ norm @ wts.T, rtol=0, atol=1e-6)


def test_prepare_image_is_bitwise_the_reference_pipeline() -> None:
    g = torch.Generator().manual_seed(3)
    img = torch.randint(0, 256, (3, 97, 131), dtype=torch.uint8, generator=g)
    # the references: float tensor, /= 255, torchvision Normalize, then util.resize (float32 sizes)
    ref = img.float()
    ref /= 255.0
    ref = Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))(ref).unsqueeze(0)
    imsize = torch.tensor(ref.size()).float()
    inter_ratio = 300 / torch.max(imsize)
    ref = F.interpolate(
        ref,
        size=(int(imsize[2] * inter_ratio), int(imsize[3] * inter_ratio)),
        mode="bilinear",
        align_corners=False,
    )
    x, ratio = prepare_image(img, get_profile("scot"))
    assert torch.equal(x, ref)
    assert ratio == float(inter_ratio)


def test_prepare_image_rejects_non_rgb() -> None:
    with pytest.raises(DataError):
        prepare_image(torch.zeros(10, 10, dtype=torch.uint8), get_profile("scot"))


# ------------------------------------------------------------------------- extract_features


def test_extract_features_record() -> None:
    bb = _model("resnet50")
    g = torch.Generator().manual_seed(4)
    img = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8, generator=g)
    profile = Profile(name="small", image_side=96)
    out = extract_features(bb, img, profile, (12, 0, 5), with_cam=True)
    assert sorted(out.layers) == [0, 5, 12]
    assert out.image_size == (72, 96) and out.orig_size == (48, 64) and out.ratio == 1.5
    x, _ = prepare_image(img, profile)
    with torch.no_grad():
        feats, _, _ = bb.forward_layers(x, (0, 5, 12))
    for k, v in out.layers.items():
        assert v.dtype == torch.float32 and v.device.type == "cpu" and v.dim() == 3
        assert v.shape[0] == bb.specs[k].channels
        torch.testing.assert_close(v, feats[k][0])
    assert out.cam is not None and tuple(out.cam.shape) == out.image_size
    assert out.cam.dtype == torch.float32 and out.cam.max() <= 1.0
    plain = extract_features(bb, img, profile, None, with_cam=False)
    assert plain.cam is None and sorted(plain.layers) == list(range(17))


def test_written_out_imagenet_addresses_are_torchvisions() -> None:
    from scotsearch.weights import imagenet_url

    assert imagenet_url("resnet50") == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    assert imagenet_url("resnet101") == torchvision.models.ResNet101_Weights.IMAGENET1K_V1.url


def test_opening_cached_features_does_not_import_torchvision(tmp_path: Path) -> None:
    # torchvision's import costs about 2 s per process (every worker of a team pays it):
    # once the weights' digest is on record, a command opens its feature cache without it,
    # and records the same torchvision version (build tag included) the package reports.
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from scotsearch.cache import open_source\n"
        "from scotsearch.presets import get_profile\n"
        "import scotsearch.commands.beam, scotsearch.commands.tune\n"
        "src = open_source(backbone='resnet50', weights='random', seed=0,"
        f" profile=get_profile('scot'), cache_dir={str(tmp_path)!r}, device=torch.device('cpu'),"
        " allow_random_fallback=False)\n"
        "from scotsearch.cache._digests import weights_ref\n"
        "v = weights_ref('resnet50', 'random', 0).identity['torchvision']\n"
        "print('torchvision' in sys.modules, v)\n"
    )

    def run() -> list[str]:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    # the first opening builds the network for its digest (torchvision imported), the next
    # finds the digest on record
    assert run() == ["True", torchvision.__version__]
    assert run() == ["False", torchvision.__version__]
