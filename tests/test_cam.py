"""CAM, staircase weights and grid sampling against hand values and brute-force loops."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scotsearch.backbones import load_backbone
from scotsearch.cam import multiscale_cam
from scotsearch.cam import multiscale_cams
from scotsearch.cam import sample_on_grid
from scotsearch.cam import staircase
from scotsearch.config import DEFAULT_BETA
from scotsearch.config import DEFAULT_GAMMA


class StandIn:
    """A fake network returning fixed ``last``/``logits`` and recording its inputs."""

    def __init__(
        self, last: torch.Tensor, logits: torch.Tensor, weight: torch.Tensor, bias: float
    ) -> None:
        self.last, self.logits = last, logits
        self.fc = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            self.fc.bias.fill_(bias)
        self.inputs: list[torch.Tensor] = []

    def forward_layers(
        self, x: torch.Tensor, layer_ids: Iterable[int] | None = None, *, need_logits: bool = True
    ) -> tuple[dict[int, torch.Tensor], torch.Tensor, torch.Tensor]:
        self.inputs.append(x.clone())
        return {}, self.last, self.logits


def _hand_case() -> StandIn:
    # channel 0 = [[1, 2], [3, 4]], channel 1 = [[4, 1], [2, 2]]
    last = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 1.0], [2.0, 2.0]]]])
    logits = torch.tensor([[3.0, 0.0, 2.0]])  # top-2 classes: 0 and 2 (class 1 is not used)
    weight = torch.tensor([[1.0, 0.0], [5.0, 5.0], [0.0, 1.0]])
    return StandIn(last, logits, weight, bias=10.0)  # the bias must not enter the CAM


def test_multiscale_cam_hand_computed() -> None:
    net = _hand_case()
    x = torch.randn(1, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    cam = multiscale_cam(net, x)
    # class 0: 2x2 -> 3x3 (align_corners=True) = [[1,1.5,2],[2,2.5,3],[3,3.5,4]];
    #   (cam - min) / max = (cam - 1) / 4  (max, NOT max - min: the reference quirk)
    c0 = torch.tensor([[0.0, 0.125, 0.25], [0.25, 0.375, 0.5], [0.5, 0.625, 0.75]])
    # class 2: [[4,2.5,1],[3,2.25,1.5],[2,2,2]] -> (cam - 1) / 4
    c2 = torch.tensor([[0.75, 0.375, 0.0], [0.5, 0.3125, 0.125], [0.25, 0.25, 0.25]])
    per_scale = torch.maximum(c0, c2)
    expected = 3 * per_scale / (3 * 0.75 + 1e-5)  # same map at the 3 scales, summed
    torch.testing.assert_close(cam, expected)
    assert len(net.inputs) == 3 and torch.equal(net.inputs[0], x)


def test_multiscale_cam_reuses_base_and_chains_the_upsampling() -> None:
    net = _hand_case()
    x = torch.randn(1, 3, 5, 7, generator=torch.Generator().manual_seed(1))
    with_base = multiscale_cam(net, x, base=(net.last, net.logits))
    assert [tuple(t.shape[-2:]) for t in net.inputs] == [(7, 10), (10, 14)]
    up15 = F.interpolate(x, size=(7, 10), mode="bilinear", align_corners=True)
    up20 = F.interpolate(up15, size=(10, 14), mode="bilinear", align_corners=True)
    torch.testing.assert_close(net.inputs[0], up15, rtol=0, atol=0)
    # the 2.0 image comes from the 1.5 image (reference quirk), not straight from x
    torch.testing.assert_close(net.inputs[1], up20, rtol=0, atol=0)
    direct = F.interpolate(x, size=(10, 14), mode="bilinear", align_corners=True)
    assert not torch.allclose(net.inputs[1], direct)
    torch.testing.assert_close(with_base, multiscale_cam(net, x))


def _brute_force_cam(net: nn.Module, img: torch.Tensor, sz: tuple[int, int]) -> torch.Tensor:
    """The reference's get_CAM_multi, loop by loop, with torchvision's forward as the network."""
    trunk = nn.Sequential(*list(net.children())[:-2])  # conv1 .. layer4 (post-ReLU)
    maps = []
    for scale in [1.0, 1.5, 2.0]:
        if scale > 1.0:
            size = (int(scale * sz[0]), int(scale * sz[1]))
            img = F.interpolate(img, size, None, "bilinear", True)
        feat_map, fc = trunk(img), net(img)
        pred_labels = torch.topk(F.softmax(fc, dim=1), k=2, dim=1)[1][0]
        _, nc, h, w = feat_map.size()
        output_cam = []
        for label in pred_labels:
            cam = net.fc.weight[label, :].unsqueeze(0).mm(feat_map.view(nc, h * w))
            cam = F.interpolate(cam.view(1, 1, h, w), (sz[0], sz[1]), None, "bilinear", True)[0, 0]
            output_cam.append((cam - cam.min()) / cam.max())
        maps.append(torch.stack(output_cam).max(dim=0)[0])
    total = torch.stack(maps).sum(0)
    return total / (total.max() + 1e-5)


def test_multiscale_cam_matches_brute_force_on_a_real_resnet() -> None:
    bb = load_backbone("resnet50", "random", seed=2)
    x = torch.randn(1, 3, 40, 56, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = _brute_force_cam(bb.net, x, (40, 56))
        _, last, logits = bb.forward_layers(x)
    assert last is not None and logits is not None
    torch.testing.assert_close(multiscale_cam(bb, x), expected, rtol=1e-4, atol=1e-5)
    reused = multiscale_cam(bb, x, base=(last, logits))
    torch.testing.assert_close(reused, expected, rtol=1e-4, atol=1e-5)


def test_batched_cams_are_each_images_own() -> None:
    # each image's top-k classes and max normalisation are its own, as if it ran alone
    bb = load_backbone("resnet50", "random", seed=3)
    x = torch.randn(3, 3, 40, 56, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, last, logits = bb.forward_layers(x)
    assert last is not None and logits is not None
    batched = multiscale_cams(bb, x, base=(last, logits))
    assert batched.shape == (3, 40, 56)
    for i in range(3):
        alone = multiscale_cam(bb, x[i : i + 1])
        torch.testing.assert_close(batched[i], alone, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="one image"):
        multiscale_cam(bb, x)


# ------------------------------------------------------------------------------- staircase


VALUES = [0.0, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 1.0, -0.1]


def test_staircase_defaults_hand_values() -> None:
    v = torch.tensor(VALUES)
    code = staircase(v, DEFAULT_BETA, DEFAULT_GAMMA, first_always=True)
    paper = staircase(v, DEFAULT_BETA, DEFAULT_GAMMA, first_always=False)
    # strict '>' at every stair; float32 0.4 / 0.6 are not above themselves
    assert torch.equal(code, torch.tensor([0.5, 0.5, 0.5, 0.8, 0.8, 0.9, 0.9, 1.0, 1.0, 0.5]))
    assert torch.equal(paper, torch.tensor([0.0, 0.5, 0.5, 0.8, 0.8, 0.9, 0.9, 1.0, 1.0, 0.0]))
    v = torch.tensor([0.3, 0.45, 0.55, 0.7])
    at = staircase(v, DEFAULT_BETA, DEFAULT_GAMMA, first_always=True)
    assert torch.equal(at, torch.tensor([0.5, 0.8, 0.9, 1.0]))


def test_staircase_equals_the_reference_assignments() -> None:
    g = torch.Generator().manual_seed(5)
    edges = torch.tensor([0.0, 0.4, 0.5, 0.6, float("nan")])
    mask = torch.cat([torch.rand(1000, generator=g), edges])
    weights = 0.5 * torch.ones(len(mask))
    weights[mask > 0.4] = 0.8
    weights[mask > 0.5] = 0.9
    weights[mask > 0.6] = 1.0
    assert torch.equal(staircase(mask, DEFAULT_BETA, DEFAULT_GAMMA, first_always=True), weights)


def test_staircase_shape_dtype_and_custom_stairs() -> None:
    v = torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    beta, gamma = (0.1, 0.2, 0.7), (0.2, 0.5, 0.25)
    out = staircase(v, beta, gamma, first_always=False)
    assert out.shape == v.shape and out.dtype == torch.float64
    brute = torch.zeros_like(v)
    for idx in torch.cartesian_prod(*(torch.arange(n) for n in v.shape)):
        i = tuple(idx.tolist())
        brute[i] = sum(gm for bt, gm in zip(beta, gamma) if v[i].item() > bt)
    torch.testing.assert_close(out, brute)
    with pytest.raises(ValueError):
        staircase(v, (0.1,), (0.2, 0.3), first_always=True)


# ------------------------------------------------------------------------------ grid sampling


@pytest.mark.parametrize(
    ("shape", "h", "w", "stride"),
    [((23, 31), 6, 8, 4), ((20, 30), 4, 5, 8), ((9, 9), 3, 3, 4)],
)
def test_sample_on_grid_matches_naive_loop(
    shape: tuple[int, int], h: int, w: int, stride: int
) -> None:
    cam = torch.rand(*shape, generator=torch.Generator().manual_seed(7))
    out = sample_on_grid(cam, h, w, stride)
    expected = torch.empty(h * w)
    for i in range(h):
        for j in range(w):
            y, x = min(i * stride, shape[0] - 1), min(j * stride, shape[1] - 1)
            expected[i * w + j] = cam[y, x]
    assert torch.equal(out, expected)
