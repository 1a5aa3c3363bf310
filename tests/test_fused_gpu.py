"""The fused device chain (Triton kernels) against the eager reference chain, pair by pair.

On a machine with CUDA the kernels run on the GPU; elsewhere (CI) they run under Triton's
interpreter on the CPU (``TRITON_INTERPRET``, set by ``conftest.py`` before any test module
is imported, since Triton reads it when its functions are defined).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scotsearch.config import VARIANTS
from scotsearch.config import MatchConfig
from scotsearch.evaluate import Evaluator
from scotsearch.fused import supports
from scotsearch.presets import get_profile
from scotsearch.testing import SyntheticSource
from scotsearch.testing import synthetic_dataset


CUDA = torch.cuda.is_available()
triton = pytest.importorskip("triton")


DEVICE = "cuda" if CUDA else "cpu"

# Beam-like candidates (shared parents, base resolution and upsampled children) next to
# unrelated subsets and singletons; the bases cover stride-4, -8 and -16 grids.
SUBSETS = [(0,), (2,), (0, 2), (0, 2, 5), (0, 2, 7), (0, 2, 12), (1, 2, 3), (4, 9), (8,)]


def _predict(ds, src, subsets, match, profile, engine: str):
    ev = Evaluator(ds, src, match=match, profile=profile, alphas=(0.05, 0.1, 0.2),
                   device=DEVICE, engine="eager" if engine == "eager" else "fused")
    if engine == "triton":
        ev._fused_kernels = "triton"  # the Triton chain, also on the CPU (interpreter)
    out = ev.predict(subsets)
    assert ev.engine_used == ("eager" if engine == "eager" else "fused")
    return out


def _agree(ds, src, subsets, match, profile) -> None:
    """Identical per-pair correct counts, predicted keypoints within 1e-3 px."""
    s_e, p_e = _predict(ds, src, subsets, match, profile, "eager")
    s_t, p_t = _predict(ds, src, subsets, match, profile, "triton")
    np.testing.assert_array_equal(s_t.n_correct, s_e.n_correct)
    total = 0
    for row_e, row_t in zip(p_e, p_t):
        for a, b in zip(row_e, row_t):
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
            ok = ~np.isnan(a[:, 0])
            np.testing.assert_allclose(b[ok], a[ok], rtol=0, atol=1e-3)
            total += int(ok.sum())
    assert total > 0


SETTINGS = [{}, {"n_iter": 50, "exp2": 0.5}]


# n_iter and exp2 are transport settings: the cosine variants take the defaults only, and
# the raw-CAM variant (marginals differ, the kernels do not) the second setting only.
CASES = [(v, st) for v in sorted(VARIANTS) for st in SETTINGS
         if not (v.startswith("cos") and st) and not (v == "ot-rhm-cam" and not st)]


@pytest.mark.parametrize("variant, settings", CASES,
                         ids=[f"{v}-{','.join(f'{k}={x}' for k, x in st.items()) or 'default'}"
                              for v, st in CASES])
def test_triton_chain_equals_eager(variant: str, settings: dict) -> None:
    ds = synthetic_dataset(1, seed=1, image_hw=(32, 40))
    src = SyntheticSource(informative=(0, 2, 5), image_hw=(32, 40))
    match = MatchConfig.from_variant(variant, exp1=3.0 if variant.startswith("cos") else 1.0,
                                     **settings)
    _agree(ds, src, SUBSETS, match, get_profile("scot"))


@pytest.mark.parametrize("variant, settings", [("ot-rhm-stair", {"n_iter": 1, "exp2": 1.0}),
                                               ("ot-rhm", {"n_iter": 50, "exp2": 0.7}),
                                               ("cos-rhm", {})])
def test_triton_chain_equals_eager_with_hpf_pruning(variant: str, settings: dict) -> None:
    # HPF's margin pruning: masked rows and columns, per-base grids; exp2 0.7 takes the
    # general power path of the kernels.
    ds = synthetic_dataset(1, seed=4, image_hw=(40, 32))
    src = SyntheticSource(informative=(0, 2, 5), image_hw=(40, 32))
    _agree(ds, src, SUBSETS[:6], MatchConfig.from_variant(variant, **settings),
           get_profile("hpf"))


def test_fused_covers_cuda_devices() -> None:
    match = MatchConfig()
    assert supports(match, torch.device("cuda"), torch.float32) is None  # Triton imports
    assert "float32" in supports(match, torch.device("cuda"), torch.float16)
    assert "log-domain" in supports(MatchConfig(eps=0.01), torch.device("cuda"), torch.float32)
    assert "mps" in supports(match, torch.device("mps"), torch.float32)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("variant, settings", [("ot-rhm-stair", {}),
                                               ("ot-rhm", {"n_iter": 50, "exp2": 0.5}),
                                               ("cos-rhm", {})])
def test_triton_chain_equals_eager_at_spair_size_on_cuda(variant: str, settings: dict) -> None:
    # 300 x 225 images: the 57 x 75 stride-4 grid of an SPair-71k pair at side 300.
    ds = synthetic_dataset(2, seed=3, image_hw=(225, 300), n_kps=10)
    src = SyntheticSource(informative=(0, 2, 5), image_hw=(225, 300))
    _agree(ds, src, [(0, 2, 5), (2, 5, 9), (0, 2), (0, 5)],
           MatchConfig.from_variant(variant, **settings), get_profile("scot"))


def test_histogram_by_atomic_adds_equals_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    # Grids from make_grid always have offset-only Hough bins, so the displacement
    # histogram is what the tests above run; the atomic-add histogram is the fallback for
    # any other geometry: force it here.
    from scotsearch.fused import _device_chain

    monkeypatch.setattr(_device_chain, "_displacement_bins", lambda *args: None)
    ds = synthetic_dataset(1, seed=2, image_hw=(32, 40))
    src = SyntheticSource(informative=(0, 2, 5), image_hw=(32, 40))
    for variant in ("ot-rhm-stair", "cos-rhm"):
        _agree(ds, src, SUBSETS[:6], MatchConfig.from_variant(variant, n_iter=3, exp2=0.5),
               get_profile("hpf"))


def test_hough_bins_of_a_grid_depend_on_the_offset_alone() -> None:
    from scotsearch.fused._device_chain import _displacement_bins
    from scotsearch.geometry import make_grid
    from scotsearch.rhm import hough_tables

    for (hs, ws), (ht, wt), stride in (((57, 75), (50, 75), 4), ((7, 5), (9, 12), 16)):
        sg = make_grid(hs, ws, stride=stride, rf=35, image_size=(hs * stride, ws * stride),
                       prune_margin=False)
        tg = make_grid(ht, wt, stride=stride, rf=35, image_size=(ht * stride, wt * stride),
                       prune_margin=False)
        tables = hough_tables(sg.centres, tg.centres, sg.image_size, tg.image_size)
        disp = _displacement_bins(tables, sg, tg, torch.device("cpu"))
        assert disp is not None
        by_d, bx_d = disp
        # brute force: every pair's bin equals the bin of its offset
        bins = tables.bins()
        i, j = torch.meshgrid(torch.arange(hs * ws), torch.arange(ht * wt), indexing="ij")
        dy = j // wt - i // ws + hs - 1
        dx = j % wt - i % ws + ws - 1
        assert torch.equal(bins, bx_d[dx] + tables.shape[1] * by_d[dy])
    # bins that are not a function of the offset (a target grid of another stride) are
    # refused, so that such a geometry takes the atomic-add histogram
    sg = make_grid(6, 6, stride=4, rf=11, image_size=(24, 24), prune_margin=False)
    tg = make_grid(6, 6, stride=7, rf=11, image_size=(42, 42), prune_margin=False)
    tables = hough_tables(sg.centres, tg.centres, sg.image_size, tg.image_size, ncells=64)
    assert _displacement_bins(tables, sg, tg, torch.device("cpu")) is None


def test_auto_takes_the_gpu_chain_for_large_calls_only() -> None:
    from types import SimpleNamespace

    from scotsearch.evaluate import FUSED_MIN_CANDIDATES_CUDA

    ds = synthetic_dataset(1, image_hw=(32, 32))
    ev = Evaluator(ds, SyntheticSource(image_hw=(32, 32)), match=MatchConfig(),
                   profile=get_profile("scot"), device="cuda", engine="auto")
    # an SPair-size pair: 57 x 75 source and 50 x 75 target cells
    prep = SimpleNamespace(src=SimpleNamespace(layers={0: torch.empty(1, 57, 75)}),
                           trg=SimpleNamespace(layers={0: torch.empty(1, 50, 75)}))
    many, few = FUSED_MIN_CANDIDATES_CUDA, FUSED_MIN_CANDIDATES_CUDA - 1
    assert ev._choose_fused(prep, MatchConfig(), many, 5000)  # a beam chunk over SPair val
    assert not ev._choose_fused(prep, MatchConfig(), few, 100_000)  # evaluate, tune trials
    assert not ev._choose_fused(prep, MatchConfig(), many, 10)  # too little work to compile
    assert not ev._choose_fused(prep, MatchConfig(eps=0.01), many, 5000)  # log domain: eager
