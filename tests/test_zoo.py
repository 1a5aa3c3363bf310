"""Zoo backbones (timm:, torchvision:, fcn-resnet101): layers, receptive fields, weights,
foreground maps, cache and the CLI. Random weights only; nothing is downloaded."""

from __future__ import annotations

import csv as _csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from scotsearch.backbones import extract_features
from scotsearch.backbones import load_backbone
from scotsearch.backbones import state_dict_digest
from scotsearch.config import Profile
from scotsearch.errors import ConfigError
from scotsearch.errors import ScotsearchError
from scotsearch.layers import layer_specs
from scotsearch.netgraph import trace_layers
from scotsearch.zoo import GLOBAL_BOX_CELLS
from scotsearch.zoo import grid_sizes
from scotsearch.zoo import net_info
from scotsearch.zoonet import ZooBackbone


VIT = "timm:vit_small_patch14_dinov2"
ATTO = "timm:convnext_atto"
TV_CONVNEXT = "torchvision:convnext_tiny"
FCN = "fcn-resnet101"
_MODELS: dict[str, ZooBackbone] = {}

# reference-behaviour.md §2: the references' tables for ids 0..9
JSZ = [4, 4, 4, 4, 8, 8, 8, 8, 16, 16]
RFSZ = [11, 19, 27, 35, 43, 59, 75, 91, 107, 139]
FCN_JSZ = [4, 4, 4, 4, 8, 8, 8, 8, 8, 8]  # SCOT's fcn101 table (dilated layer3/4)


def _model(name: str) -> ZooBackbone:
    """One random network per name for the whole module (building FCN costs ~1 s)."""
    if name not in _MODELS:
        model = load_backbone(name, "random", seed=0)
        assert isinstance(model, ZooBackbone)
        _MODELS[name] = model
    return _MODELS[name]


def _image(h: int, w: int) -> torch.Tensor:
    return (torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)


# --------------------------------------------------------------------------- receptive fields
@pytest.mark.parametrize("arch", ["resnet50", "resnet101"])
def test_computed_resnet_fields_equal_the_references_table(arch: str) -> None:
    with torch.device("meta"):
        net = getattr(torchvision.models, arch)(weights=None)
    traced = trace_layers(net, 224)
    assert [l.field.rf for l in traced[:10]] == RFSZ
    assert [l.field.jump for l in traced[:10]] == JSZ
    # ...and every id equals the HPF table scotsearch uses for these names
    assert [(int(l.field.rf), int(l.field.jump)) for l in traced] == [
        (s.rf, s.stride) for s in layer_specs(arch)]


def test_fcn_resnet101_fields_follow_scots_dilated_table() -> None:
    specs = layer_specs(FCN)
    assert len(specs) == 34
    assert [s.stride for s in specs[:10]] == FCN_JSZ
    assert [s.rf for s in specs[:10]] == RFSZ
    assert {s.stride for s in specs[8:]} == {8}  # layer3/4 dilated: stride 8 to the end
    # a dilation-2 bottleneck adds 2 * 2 * 8 px, a dilation-4 one 2 * 4 * 8
    assert specs[10].rf - specs[9].rf == 32 and specs[-1].rf - specs[-2].rf == 64


class _Block(nn.Module):
    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _plain_stack() -> nn.Module:
    return nn.Sequential(
        _Block(nn.Conv2d(3, 4, 3, padding=1)),
        _Block(nn.Conv2d(4, 4, 5, stride=2, padding=2)),
        _Block(nn.AvgPool2d(3, stride=2, padding=1), nn.Conv2d(4, 4, 3, padding=2, dilation=2)),
    )


def _gradient_support(net: nn.Module, x: torch.Tensor, out_of: nn.Module) -> int:
    """Width in pixels of the input region one central output cell of ``out_of`` depends on."""
    grabbed: list[torch.Tensor] = []
    handle = out_of.register_forward_hook(lambda _m, _a, out: grabbed.append(out))
    x = x.clone().requires_grad_(True)
    try:
        net(x)
    finally:
        handle.remove()
    out = grabbed[0]  # [1 x C x h x w]
    h, w = out.shape[-2:]
    out[..., h // 2, w // 2].sum().backward()
    assert x.grad is not None
    cols = (x.grad.abs().sum(dim=(0, 1, 2)) > 0).nonzero().flatten()
    return int(cols.max() - cols.min() + 1)


def test_plain_conv_stack_equals_hand_computed_fields_and_gradient_support() -> None:
    # by hand: 3x3 -> rf 3, jump 1; 5x5/2 -> 3 + 4*1 = 7, jump 2;
    # avg-pool 3/2 -> 7 + 2*2 = 11, jump 4; 3x3 dilation 2 -> 11 + 2*2*4 = 27, jump 4
    net = _plain_stack()
    traced = trace_layers(net, 64)
    assert [(l.name, l.field.rf, l.field.jump) for l in traced] == [
        ("<stem>", 1, 1), ("0", 3, 1), ("1", 7, 2), ("2", 27, 4)]
    # measured: positive weights, no cancellation, so the support is exactly the field
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(p.abs() + 0.1)
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    net = net.double()
    assert [_gradient_support(net, x, net[i]) for i in range(3)] == [3, 7, 27]


class _PerPositionBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)  # element-wise max and norms over channels keep the field
        return torch.max(y, x) + F.normalize(y, dim=1) + y.norm(2, 1, keepdim=True)


class _SqueezeBlock(_PerPositionBlock):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y * y.mean((2, 3), keepdim=True)  # squeeze-excitation: the whole image


def test_per_position_ops_keep_the_field_and_global_pooling_makes_it_global() -> None:
    traced = trace_layers(nn.Sequential(_PerPositionBlock(), _SqueezeBlock()), 32)
    assert [l.field.rf for l in traced] == [1, 3, math.inf]


def test_convnext_fields_match_the_gradient_support_of_the_real_network() -> None:
    model = _model(ATTO)
    net = model.net.double()
    try:
        x = torch.rand(1, 3, 160, 160, dtype=torch.float64)
        blocks = dict(net.named_modules())
        for spec in model.specs[1:4]:  # the first stage's blocks and the next one
            assert _gradient_support(net, x, blocks[spec.name]) == spec.rf, spec
    finally:
        net.float()
    assert [s.rf for s in model.specs[:3]] == [4, 28, 52]  # stem 4x4/4, then + 6 * 4 per block


def test_vit_layers_are_global_with_a_three_cell_box() -> None:
    specs = layer_specs(VIT)
    assert len(specs) == 12 and [s.name for s in specs] == [f"blocks.{i}" for i in range(12)]
    assert all(s.global_rf and s.stride == 14 and s.channels == 384 for s in specs)
    assert all(s.rf == GLOBAL_BOX_CELLS * 14 for s in specs)
    info = net_info(VIT)
    assert info.prefix == 1 and info.multiple == 14 and info.marginal == "attn"
    assert net_info("timm:vit_small_patch14_reg4_dinov2").prefix == 5  # class + 4 registers


# ------------------------------------------------------------------------------ layer listing
def _oracle_outputs(name: str, net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every candidate layer computed without hooks, by each library's own structure."""
    if name == VIT:
        return net.forward_intermediates(x, intermediates_only=True, output_fmt="NCHW")
    outs = []
    if name == ATTO:
        y = net.stem(x)
        outs.append(y)
        for stage in net.stages:
            y = stage.downsample(y)
            for blk in stage.blocks:
                y = blk(y)
                outs.append(y)
        return outs
    if name == TV_CONVNEXT:
        y = x
        for i, part in enumerate(net.features):
            if i % 2 == 1:  # stages of CNBlocks
                for blk in part:
                    y = blk(y)
                    outs.append(y)
            else:
                y = part(y)
                if i == 0:
                    outs.append(y)
        return outs
    b = net.backbone
    y = b.maxpool(b.relu(b.bn1(b.conv1(x))))
    outs.append(y)
    for stage in (b.layer1, b.layer2, b.layer3, b.layer4):
        for blk in stage:
            y = blk(y)
            outs.append(y)
    return outs


@pytest.mark.parametrize("name,side", [(VIT, 112), (ATTO, 128), (TV_CONVNEXT, 96), (FCN, 96)])
def test_layer_listing_matches_a_forward_pass(name: str, side: int) -> None:
    model = _model(name)
    specs = model.specs
    assert [s.id for s in specs] == list(range(len(specs)))
    x = torch.randn(1, 3, side, side)
    with torch.no_grad():
        feats, _, _ = model.forward_layers(x, None, need_logits=False)
        oracle = _oracle_outputs(name, model.net, x)
    assert sorted(feats) == list(range(len(specs))) and len(oracle) == len(specs)
    grids = grid_sizes(name, side)
    for spec, (h, w), ref in zip(specs, grids, oracle):
        f = feats[spec.id]
        assert tuple(f.shape) == (1, spec.channels, h, w), spec
        assert h * spec.stride == side and w * spec.stride == side, spec  # sides divide
        torch.testing.assert_close(f, ref, msg=lambda m, s=spec: f"{s.name}: {m}")


def test_partial_requests_stop_early_and_return_only_those_ids() -> None:
    model = _model(ATTO)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        some, last, logits = model.forward_layers(x, [2, 5], need_logits=False)
        every, _, _ = model.forward_layers(x, None, need_logits=False)
    assert sorted(some) == [2, 5] and last is None and logits is None
    torch.testing.assert_close(some[5], every[5])
    with pytest.raises(ConfigError, match="do not exist"):
        model.forward_layers(x, [len(model.specs)])


def test_vit_input_is_padded_to_the_patch_and_normalised_with_the_models_statistics() -> None:
    model = _model(VIT)
    f = extract_features(model, _image(100, 130), Profile("scot", image_side=112),
                         with_cam=True)
    # 130 -> 112 wide, 100 -> 86 high, padded to 98 (7 patches); the ratio is untouched
    assert f.image_size == (98, 112) and f.ratio == pytest.approx(112 / 130)
    assert all(tuple(t.shape) == (384, 7, 8) for t in f.layers.values())
    clip = net_info("timm:vit_base_patch16_clip_224")
    assert clip.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073)) and clip.multiple == 16


# ---------------------------------------------------------------------------- foreground maps
def test_convnext_cam_shape_range_and_logits_are_the_networks() -> None:
    for name in (ATTO, TV_CONVNEXT):
        model = _model(name)
        assert model.marginal == "cam"
        x = torch.randn(1, 3, 64, 96)
        with torch.no_grad():
            _, last, logits = model.forward_layers(x, (), need_logits=True)
            torch.testing.assert_close(logits, model.net(x))
        assert last is not None and last.shape[-2:] == (2, 3)
        f = extract_features(model, _image(64, 96), Profile("scot", image_side=96),
                             with_cam=True)
        assert f.cam is not None and tuple(f.cam.shape) == f.image_size == (64, 96)
        assert bool(torch.isfinite(f.cam).all()) and f.cam.min() >= -1e-6
        assert f.cam.max() <= 1 + 1e-6 and f.cam.max() > 0.9


def test_which_networks_give_a_cam() -> None:
    """Average pooling + one linear layer (norms allowed): CAM; MLP heads and ViTs: none."""
    assert net_info("torchvision:efficientnet_b0").marginal == "cam"
    assert net_info("torchvision:swin_t").marginal == "cam"  # head: a Linear after avgpool
    assert net_info("timm:resnet50").marginal == "cam"
    assert net_info("torchvision:mobilenet_v3_small").marginal is None  # Linear-act-Linear
    assert net_info("timm:vit_base_patch16_224").marginal == "attn"  # class token
    assert net_info("timm:vit_medium_patch16_gap_256").marginal is None  # no class token
    # squeeze-excitation sees the whole image: global after the first SE block
    eff = layer_specs("timm:efficientnet_b0")
    assert not eff[0].global_rf and eff[0].rf == 3 and all(s.global_rf for s in eff[1:])


def test_swin_cam_reads_its_channels_last_map() -> None:
    model = load_backbone("timm:swin_tiny_patch4_window7_224", "random")
    assert isinstance(model, ZooBackbone) and model.info.layouts[1] == "nhwc"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats, last, logits = model.forward_layers(x, [1], need_logits=True)
        torch.testing.assert_close(logits, model.net(x))
    assert last is not None and tuple(last.shape) == (1, 768, 2, 2)
    assert tuple(feats[1].shape) == (1, 96, 16, 16)


def test_fixed_size_networks_are_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="cannot run on images of 224 and 448 px") as info:
        layer_specs("torchvision:vit_b_16")
    assert "\n" not in str(info.value) and "timm:NAME" in str(info.value)


def test_vit_foreground_is_the_class_tokens_last_attention() -> None:
    model = _model(VIT)
    x = torch.randn(1, 3, 56, 70)
    # oracle: timm's own (unfused) attention, its softmax recorded
    attn = model.net.blocks[-1].attn
    seen: list[torch.Tensor] = []
    softmax = torch.Tensor.softmax

    def recording(self: torch.Tensor, *args: object, **kw: object) -> torch.Tensor:
        out = softmax(self, *args, **kw)
        seen.append(out)
        return out

    with torch.no_grad():
        _, last, logits = model.forward_layers(x, (), need_logits=True)
        fused, attn.fused_attn = attn.fused_attn, False
        try:
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(torch.Tensor, "softmax", recording)
                model.net(x)
        finally:
            attn.fused_attn = fused
    assert logits is None and last is not None and tuple(last.shape) == (1, 4, 5)
    torch.testing.assert_close(last, seen[-1][:, :, 0, 1:].mean(dim=1).reshape(1, 4, 5))
    f = extract_features(model, _image(50, 60), Profile("scot", image_side=70), with_cam=True)
    assert f.cam is not None and tuple(f.cam.shape) == f.image_size == (70, 70)
    assert f.cam.min() == 0 and f.cam.max() == 1


def test_fcn_foreground_is_a_probability_map_at_image_size() -> None:
    model = _model(FCN)
    assert model.marginal == "fcn"
    img = _image(60, 80)
    f = extract_features(model, img, Profile("hpf", image_side=80), with_cam=True)
    assert f.cam is not None and tuple(f.cam.shape) == (60, 80)
    assert f.cam.min() >= 0 and f.cam.max() <= 1
    # --compat scot: SCOT's rule, the arg-max class index map (label - min) / max (§4.1)
    x = torch.randn(1, 3, 60, 80)
    with torch.no_grad():
        _, _, logits = model.forward_layers(x, (), need_logits=True)
        assert logits is not None
        label = logits.argmax(dim=1).float()
        got = model.foreground(x, None, logits, compat="scot")
    want = (label - label.min()) / label.max() if label.max() > 0 else torch.zeros_like(label)
    torch.testing.assert_close(got, want)
    scot = extract_features(model, img, Profile("scot", image_side=80), with_cam=True)
    assert scot.cam is not None and tuple(scot.cam.shape) == (60, 80)


# -------------------------------------------------------------------------------------- weights
def test_weights_files_load_pth_and_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    ref = load_backbone(ATTO, "random:seed3")
    state = {k: v.contiguous() for k, v in ref.net.state_dict().items()}
    torch.save(state, tmp_path / "w.pth")
    save_file(state, str(tmp_path / "w.safetensors"))
    for fname in ("w.pth", "w.safetensors"):
        got = load_backbone(ATTO, str(tmp_path / fname))
        assert got.weights_digest == ref.weights_digest == state_dict_digest(state)
        assert got.weights == f"file:{(tmp_path / fname).resolve()}"
    assert load_backbone(ATTO, "random:seed4").weights_digest != ref.weights_digest
    with pytest.raises(ScotsearchError, match="does not fit"):
        load_backbone(TV_CONVNEXT, str(tmp_path / "w.safetensors"))


def test_offline_without_pretrained_weights_is_one_line_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ScotsearchError) as info:
        load_backbone(ATTO)
    msg = str(info.value)
    assert "\n" not in msg and "timm/convnext_atto" in msg and "model.safetensors" in msg
    assert "--weights" in msg
    with pytest.raises(ScotsearchError) as info:
        load_backbone(TV_CONVNEXT)
    msg = str(info.value)
    assert "convnext_tiny-983f1562.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    with pytest.warns(RuntimeWarning, match="random weights"):
        assert load_backbone(ATTO, allow_random_fallback=True).weights == "random:seed0"


def test_pretrained_weights_are_read_from_the_local_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """timm: the Hugging Face cache layout; torchvision: the torch-hub checkpoint folder."""
    import huggingface_hub.constants
    from safetensors.torch import save_file

    hf = tmp_path / "hf"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    ref = load_backbone(ATTO, "random:seed7")
    repo = hf / "models--timm--convnext_atto.d2_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in ref.net.state_dict().items()},
              str(repo / "snapshots" / "abc123" / "model.safetensors"))
    got = load_backbone(ATTO)
    assert got.weights == "pretrained:timm/convnext_atto.d2_in1k"
    assert got.weights_digest == ref.weights_digest
    # a pretrained tag in the name is accepted
    assert len(layer_specs("timm:convnext_atto.d2_in1k")) == len(layer_specs(ATTO))

    tv = load_backbone(TV_CONVNEXT, "random:seed7")
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(tv.net.state_dict(), checkpoints / "convnext_tiny-983f1562.pth")
    got_tv = load_backbone(TV_CONVNEXT)
    assert got_tv.weights == "pretrained:convnext_tiny-983f1562.pth"
    assert got_tv.weights_digest == tv.weights_digest


def test_unknown_names_are_refused_in_one_line() -> None:
    for name, text in (("timm:no_such_net", "unknown timm model"),
                       ("torchvision:nope", "unknown torchvision model"),
                       ("vgg", "unknown backbone")):
        with pytest.raises(ConfigError, match=text):
            layer_specs(name)


# -------------------------------------------------------------------------------------- cache
def test_cache_round_trip_without_building_again(tmp_path: Path) -> None:
    from PIL import Image

    from scotsearch.cache import open_source

    img = tmp_path / "a.png"
    Image.fromarray(_image(50, 70).permute(1, 2, 0).numpy()).save(img)
    profile = Profile("scot", image_side=56)
    kw = dict(weights="random", seed=0, profile=profile, cache_dir=tmp_path / "cache",
              device=torch.device("cpu"), allow_random_fallback=False)
    for name, with_cam in ((VIT, False), (ATTO, True)):
        first = open_source(backbone=name, **kw)
        built = first.get(img, (0, 3), need_cam=with_cam)
        assert first.builds == 1
        again = open_source(backbone=name, **kw)
        read = again.get(img, (0, 3), need_cam=with_cam)
        assert again.builds == 0 and again.key.digest == first.key.digest
        for l in (0, 3):
            assert torch.equal(read.layers[l], built.layers[l])
        assert (read.cam is None) == (not with_cam)
        if with_cam:
            assert built.cam is not None and read.cam is not None
            assert torch.equal(read.cam, built.cam)
        fields = again.key.fields
        assert fields["backbone"] == name and fields["n_layers"] == len(layer_specs(name))
    # a network without a foreground map writes entries without a CAM, and they verify
    plain = open_source(backbone="torchvision:mobilenet_v3_small", **kw)
    assert plain.key.fields["cam"] == {"stored": "none"}
    assert plain.get(img, (0, 1), need_cam=False).cam is None
    assert open_source(backbone="torchvision:mobilenet_v3_small", **kw).get(
        img, (0, 1), need_cam=True).cam is None
    from scotsearch.cache import features_dir_of
    from scotsearch.cache import verify

    report = verify(features_dir_of(tmp_path / "cache"))
    assert not report.bad and report.checked == 3
    vit_key = open_source(backbone=VIT, **kw).key.fields
    assert vit_key["preprocess"]["pad"].endswith("multiple of 14")
    assert vit_key["network"]["layers"][0] == "blocks.0:tokens"


# ---------------------------------------------------------------------------------------- CLI
def test_layers_command_prints_every_id(capsys: pytest.CaptureFixture[str]) -> None:
    from scotsearch import cli

    assert cli.main(["layers", "--backbone", VIT, "--image-side", "224"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["id", "module", "channels", "stride"]
    assert out[1].split() == ["0", "blocks.0", "384", "14", "global", "(box", "42)", "16x16"]
    assert len(out) == 1 + 12 + 1 and "3 x 3 cells" in out[-1]
    assert cli.main(["layers", "--backbone", "resnet101", "--image-side", "300"]) == 0
    rows = [r.split() for r in capsys.readouterr().out.splitlines()[1:]]
    assert [int(r[4]) for r in rows[:10]] == RFSZ and [int(r[3]) for r in rows[:10]] == JSZ
    assert rows[0][1] == "maxpool" and rows[0][5] == "75x75" and rows[-1][5] == "10x10"
    assert cli.main(["layers", "--backbone", "timm:nope"]) == 2


def test_cam_is_refused_in_one_line_for_a_network_without_foreground_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scotsearch import cli

    argv = ["beam", "--backbone", "timm:vit_medium_patch16_gap_256", "--weights", "random",
            "--image-side", "64", "--max-pairs", "1", "--max-layers", "1", "--layers", "0",
            "--cache-dir", str(tmp_path / "cache"), "--storage", f"sqlite:///{tmp_path}/s.db"]
    assert cli.main(argv + ["--cam", "stair"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--cam stair needs a foreground map" in err
    assert "use --cam none" in err


@pytest.mark.slow
# ConvNeXt ids 1-4 mix strides 4 and 8: the base grid is the subset's finest layer
@pytest.mark.parametrize("name,side,ids", [(VIT, 70, "0-3"), (ATTO, 64, "1-4")])
def test_beam_on_the_demo_completes_and_exports(
    name: str, side: int, ids: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scotsearch import cli

    url = f"sqlite:///{tmp_path}/s.db"
    argv = ["-q", "beam", "--backbone", name, "--weights", "random", "--image-side", str(side),
            "--max-pairs", "2", "--max-layers", "3", "--beam", "2", "--layers", ids,
            "--cam", "stair", "--cache-dir", str(tmp_path / "cache"), "--storage", url]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    study = f"beam-demo-val-{name}-ot-rhm-stair"
    assert f"study '{study}'" in out and "scored now, 0 already stored)" in out, out
    csv = tmp_path / "best.csv"
    assert cli.main(["export", "--study", study, "--storage", url, "-o", str(csv)]) == 0
    with open(csv, newline="") as fh:
        cols = next(iter(_csv.DictReader(fh)))
    assert cols["backbone"] == name and cols["image_side"] == str(side)
    specs = layer_specs(name)
    ids = [int(i) for i in cols["layers"].split(",")]
    assert cols["layer_names"] == ";".join(specs[i].name for i in ids)  # names, not only ids
    assert f"best layers {cols['layers']} [" in out
    if name == ATTO:  # some scored subset mixes strides 4 and 8
        every = tmp_path / "all.csv"
        assert cli.main(["export", "--study", study, "--storage", url, "--all",
                         "-o", str(every)]) == 0
        with open(every, newline="") as fh:
            subsets = [[int(i) for i in r["layers"].split(",")] for r in _csv.DictReader(fh)]
        assert any({specs[i].stride for i in sub} == {4, 8} for sub in subsets)
    assert cols["cam"] == "stair"  # ConvNeXt: its CAM; the ViT: its class-token attention
    assert not math.isnan(float(cols["pck"]))
