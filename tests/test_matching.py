from __future__ import annotations

import torch
import torch.nn.functional as F

from scotsearch.config import MatchConfig
from scotsearch.geometry import make_grid
from scotsearch.matching import layer_terms
from scotsearch.matching import marginal
from scotsearch.matching import members_matrix
from scotsearch.matching import subset_cosine
from scotsearch.presets import get_profile


def _reference_cosine(
    src: dict[int, torch.Tensor], trg: dict[int, torch.Tensor], ids: tuple[int, ...]
) -> torch.Tensor:
    # HPF/SCOT: upsample every map to the first (lowest) layer's size, concatenate, cosine.
    def hyper(feats: dict[int, torch.Tensor]) -> torch.Tensor:
        base = feats[ids[0]].shape[-2:]
        maps = [
            F.interpolate(feats[i][None], size=base, mode="bilinear", align_corners=True)[0]
            if feats[i].shape[-2:] != base else feats[i]
            for i in ids
        ]
        cat = torch.cat(maps).flatten(1).T  # [n x C]
        return cat / cat.norm(dim=1, keepdim=True)

    return hyper(src) @ hyper(trg).T


def test_layer_terms_sum_to_reference_cosine() -> None:
    g = torch.Generator().manual_seed(0)
    shapes = {0: (4, 9, 11), 3: (6, 9, 11), 5: (5, 5, 6), 9: (7, 3, 3)}
    tshapes = {0: (4, 8, 12), 3: (6, 8, 12), 5: (5, 4, 6), 9: (7, 2, 3)}
    src = {k: torch.randn(*s, generator=g, dtype=torch.float64) for k, s in shapes.items()}
    trg = {k: torch.randn(*s, generator=g, dtype=torch.float64) for k, s in tshapes.items()}
    layers = sorted(shapes)
    terms = [layer_terms(src[l], trg[l], (9, 11), (8, 12)) for l in layers]
    dots = torch.stack([t[0] for t in terms]).double()
    sq_s = torch.stack([t[1] for t in terms]).double()
    sq_t = torch.stack([t[2] for t in terms]).double()
    subsets = [(0,), (0, 3), (0, 5, 9), (0, 3, 5, 9)]
    A = members_matrix(subsets, layers, "cpu").double()
    cos = subset_cosine(dots, sq_s, sq_t, A)
    for s, ids in enumerate(subsets):
        ref = _reference_cosine(src, trg, ids)
        # layer_terms works in float32, the reference here in float64
        torch.testing.assert_close(cos[s], ref, atol=2e-5, rtol=1e-4)


def test_marginals_uniform_pruned_and_staircase() -> None:
    grid = make_grid(8, 9, stride=4, rf=19, image_size=(30, 34), prune_margin=True)
    assert 0 < int(grid.valid.sum()) < grid.n
    mu = marginal(grid, None, MatchConfig(), get_profile("hpf"))
    assert torch.isclose(mu.sum(), torch.tensor(1.0))
    assert (mu[~grid.valid] == 0).all() and (mu[grid.valid] == 1 / grid.valid.sum()).all()
    tiny = make_grid(3, 4, stride=4, rf=19, image_size=(12, 16), prune_margin=True)
    assert not tiny.valid.any()
    assert (marginal(tiny, None, MatchConfig(), get_profile("hpf")) == 0).all()  # no NaN

    cam = torch.zeros(12, 16)
    cam[0, 0] = 0.0   # exactly zero at cell (0, 0)
    cam[0, 4] = 0.45  # cell (0, 1) -> 0.8
    cam[4, 8] = 0.7   # cell (1, 2) -> 1.0
    plain = make_grid(3, 4, stride=4, rf=19, image_size=(12, 16), prune_margin=False)
    stair = MatchConfig(cam="stair")
    w_code = marginal(plain, cam, stair, get_profile("scot")) * 1.0
    w_paper = marginal(plain, cam, stair, get_profile("paper"))
    # SCOT's code: every cell at least 0.5; paper Eq. 8: exactly-zero CAM -> weight 0.
    raw_code = torch.full((12,), 0.5)
    raw_code[1], raw_code[6] = 0.8, 1.0
    torch.testing.assert_close(w_code, raw_code / raw_code.sum())
    raw_paper = torch.zeros(12)
    raw_paper[1], raw_paper[6] = 0.8, 1.0
    torch.testing.assert_close(w_paper, raw_paper / raw_paper.sum())
