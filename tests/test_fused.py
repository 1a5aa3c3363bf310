"""The fused CPU chain against the eager reference chain, pair by pair."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from scotsearch.config import VARIANTS
from scotsearch.config import MatchConfig
from scotsearch.errors import ConfigError
from scotsearch.evaluate import Evaluator
from scotsearch.fused import TermStore
from scotsearch.fused import plan_parents
from scotsearch.fused._kernels import _exp_row
from scotsearch.matching import layer_terms
from scotsearch.matching import native_term
from scotsearch.matching import source_taps
from scotsearch.matching import upsampled_sq_norms
from scotsearch.matching import upsampled_sq_norms_separable
from scotsearch.presets import get_profile
from scotsearch.testing import SyntheticSource
from scotsearch.testing import synthetic_dataset


SETTINGS = [{}, {"n_iter": 50}, {"exp2": 0.5}, {"n_iter": 50, "exp2": 0.5}]


def _engines_agree(ds, source, subsets, match, profile, *, alphas=(0.05, 0.1, 0.2),
                   min_close: float = 1.0) -> None:
    """Identical per-pair correct counts, and predicted keypoints within 1e-3 px.

    ``min_close`` < 1 admits that fraction of keypoints to differ: with real features a
    source row's best two targets can be one float32 ulp apart in the eager chain itself
    (seen on the demo: 0.99334943 against 0.99334937), and any other order of the same
    float32 sums may then pick the other one. Synthetic pairs have no such ties.
    """
    out = {}
    for engine in ("eager", "fused"):
        ev = Evaluator(ds, source, match=match, profile=profile, alphas=alphas, engine=engine)
        out[engine] = ev.predict(subsets)
    (s_e, p_e), (s_f, p_f) = out["eager"], out["fused"]
    np.testing.assert_array_equal(s_f.n_correct, s_e.n_correct)  # identical per-pair PCK
    close = total = 0
    for row_e, row_f in zip(p_e, p_f):
        for a, b in zip(row_e, row_f):
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
            ok = ~np.isnan(a[:, 0])
            close += int((np.abs(a[ok] - b[ok]).max(1) <= 1e-3).sum())
            total += int(ok.sum())
    assert total > 0 and close >= min_close * total, f"{total - close} of {total} keypoints differ"


@pytest.mark.parametrize("profile", ["scot", "hpf"])
@pytest.mark.parametrize(
    "settings", SETTINGS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "default"
)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fused_equals_eager_on_synthetic_pairs(variant: str, settings: dict, profile: str) -> None:
    ds = synthetic_dataset(6, seed=1, image_hw=(64, 80))
    src = SyntheticSource(informative=(0, 2, 5), image_hw=(64, 80))
    # Beam-like candidates (shared parents) next to unrelated subsets and singletons; the
    # bases cover stride-4, stride-8 and stride-16 grids.
    subsets = [(0,), (2,), (0, 2), (0, 2, 5), (0, 2, 7), (0, 2, 12), (1, 2, 3), (4, 9), (8,),
               (0, 7, 12)]
    match = MatchConfig.from_variant(variant, exp1=3.0 if variant.startswith("cos") else 1.0,
                                     **settings)
    _engines_agree(ds, src, subsets, match, get_profile(profile))


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant, settings",
    [("ot-rhm-stair", {}), ("ot-rhm", {"n_iter": 50, "exp2": 0.5}), ("cos-rhm", {})],
)
def test_fused_equals_eager_at_spair_size(variant: str, settings: dict) -> None:
    # 300 x 225 images: the 57 x 75 stride-4 grid of an SPair-71k pair at the references'
    # side (4,275 x 4,275 hyperpixels).
    ds = synthetic_dataset(1, seed=3, image_hw=(225, 300), n_kps=10)
    src = SyntheticSource(informative=(0, 2, 5), image_hw=(225, 300))
    match = MatchConfig.from_variant(variant, **settings)
    _engines_agree(ds, src, [(0, 2, 5), (2, 5, 9)], match, get_profile("scot"))


@pytest.fixture(scope="module")
def demo_source(tmp_path_factory: pytest.TempPathFactory):
    """12 pairs of the embedded demo through a real (random-weight) ResNet-50 at side 128."""
    from scotsearch.cache import open_source
    from scotsearch.data import load_dataset

    profile = dataclasses.replace(get_profile("scot"), image_side=128)
    ds = load_dataset("demo", tmp_path_factory.mktemp("demo"), "val")
    src = open_source(backbone="resnet50", weights="random", seed=0, profile=profile,
                      cache_dir=None, device=torch.device("cpu"), allow_random_fallback=False)
    return dataclasses.replace(ds, pairs=ds.pairs[:12]), _Memo(src), profile


class _Memo:
    """Runs the network once per image for the whole module (all layers, with the CAM)."""

    def __init__(self, source) -> None:
        self.source = source
        self.backbone = source.backbone
        self.memo: dict = {}

    def get(self, path: Path, layer_ids: tuple[int, ...], *, need_cam: bool):
        if path not in self.memo:
            self.memo[path] = self.source.get(path, tuple(range(17)), need_cam=True)
        return self.memo[path]

    def describe(self) -> dict[str, str]:
        return self.source.describe()


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant, settings",
    [(v, {}) for v in sorted(VARIANTS)] + [("ot-rhm-stair", {"n_iter": 50, "exp2": 0.5})],
)
def test_fused_equals_eager_on_the_demo(demo_source, variant: str, settings: dict) -> None:
    ds, src, profile = demo_source
    _engines_agree(ds, src, [(2, 3), (2, 3, 8), (2, 3, 12), (5, 9)],
                   MatchConfig.from_variant(variant, **settings), profile, min_close=0.99)


def test_fused_engine_refuses_what_it_does_not_cover() -> None:
    ds = synthetic_dataset(1, image_hw=(32, 32))
    src = SyntheticSource(image_hw=(32, 32))
    cases = [
        (MatchConfig(eps=0.01), "float32"),  # log-domain Sinkhorn
        (MatchConfig(), "float16"),  # half-precision terms
    ]
    for match, precision in cases:
        ev = Evaluator(ds, src, match=match, profile=get_profile("scot"), engine="fused",
                       precision=precision)
        with pytest.raises(ConfigError, match="--engine fused"):
            ev.score([(0,)])
        # auto falls back to the eager chain, which covers every setting
        auto = Evaluator(ds, src, match=match, profile=get_profile("scot"), engine="auto",
                         precision=precision)
        assert auto.score([(0,)]).n_correct.shape == (1, 1, 1)
    with pytest.raises(ConfigError, match="engine"):
        Evaluator(ds, src, match=MatchConfig(), profile=get_profile("scot"), engine="turbo")


def test_plan_parents_shares_the_beam_entries() -> None:
    beam = [(0, 4), (2, 4), (4, 9)]
    children = sorted({tuple(sorted(set(b) | {l})) for b in beam for l in range(12) if l not in b})
    plan = plan_parents(children)
    for s, (parent, added) in zip(children, plan):
        assert tuple(sorted(parent + (added,))) == s and added not in parent
    # every child of a beam entry is formed from a beam entry
    assert {p for p, _ in plan} <= set(beam)
    assert plan_parents([(3,)]) == [((), 3)]


@pytest.mark.parametrize("native, base", [((15, 19), (57, 75)), ((1, 7), (4, 25)),
                                          ((5, 1), (17, 3)), ((6, 6), (6, 6)), ((2, 2), (9, 5))])
def test_source_taps_and_separable_norms_reproduce_the_eager_terms(native, base) -> None:
    g = torch.Generator().manual_seed(0)
    fs = torch.randn(16, *native, generator=g).half()
    ft = torch.randn(16, 3, 4, generator=g).half()
    trg_hw = (7, 9)
    dot, sq_s, _ = layer_terms(fs, ft, base, trg_hw)
    dt = native_term(fs, ft, trg_hw)
    rows, w = source_taps(native, base)
    rec = w[:, 2:3] * (w[:, 0:1] * dt[rows[:, 0]] + w[:, 1:2] * dt[rows[:, 1]]) + w[:, 3:4] * (
        w[:, 0:1] * dt[rows[:, 2]] + w[:, 1:2] * dt[rows[:, 3]]
    )
    torch.testing.assert_close(rec, dot, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(upsampled_sq_norms_separable(fs, base), sq_s, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(upsampled_sq_norms(fs, base), sq_s)


def test_vector_exp_is_float32_accurate() -> None:
    x = np.concatenate(
        [np.linspace(-87, 87, 20001), np.linspace(-50, 1e-5, 20001)]
    ).astype(np.float32)
    row = x.copy()
    _exp_row(row, np.empty(len(x), np.int32))
    ref = np.exp(x.astype(np.float64))
    assert np.max(np.abs(row - ref) / ref) < 3e-7  # a few float32 ulps
    assert np.array_equal(row[x == 0], np.ones((x == 0).sum(), np.float32))


def test_term_store_keeps_terms_up_to_its_budget() -> None:
    from scotsearch.fused._terms import layer_term

    f, big = torch.randn(4, 3, 3), torch.randn(4, 12, 12)
    term = layer_term(big, big, (12, 12), (12, 12))  # base resolution
    up = layer_term(f, f, (12, 12), (12, 12))  # upsampled on both sides
    assert term.identity and not up.identity and up.nbytes < term.nbytes
    store = TermStore(budget=2 * term.nbytes)
    for k in range(3):
        store.put(("pair", k), term)
    assert store.get(("pair", 0)) is term and store.get(("pair", 1)) is term
    assert store.get(("pair", 2)) is None and store.used == 2 * term.nbytes  # full is full
    store.put(("up", 0), up)
    assert store.get(("up", 0)) is None  # full: an upsampled term is not admitted
    # an expensive base-resolution term may push out cheap upsampled ones, never the reverse
    mixed = TermStore(budget=term.nbytes + up.nbytes)
    mixed.put(("up", 0), up)
    mixed.put(("up", 1), up)
    mixed.put(("base", 0), term)
    assert mixed.get(("base", 0)) is term and mixed.used <= mixed.budget
    assert [mixed.get(("up", k)) is None for k in range(2)].count(True) >= 1
    assert math.isclose(float(up.sq_src.sum()), float(upsampled_sq_norms(f, (12, 12)).sum()),
                        rel_tol=1e-5)


def test_the_term_store_budget_can_be_capped_by_the_environment(monkeypatch) -> None:
    from scotsearch.fused import TERM_BUDGET_ENV
    from scotsearch.fused._terms import default_budget

    monkeypatch.setenv(TERM_BUDGET_ENV, "1.5")
    assert default_budget() == 3 << 19  # 1.5 MB
    monkeypatch.setenv(TERM_BUDGET_ENV, "0")
    assert default_budget() == 0
    monkeypatch.setenv(TERM_BUDGET_ENV, "lots")  # not a number: the memory-based default
    monkeypatch.delenv(TERM_BUDGET_ENV)
    unset = default_budget()
    monkeypatch.setenv(TERM_BUDGET_ENV, "lots")
    assert abs(default_budget() - unset) < 1 << 28  # free memory moves a little between reads


def test_fused_sums_do_not_depend_on_the_thread_count(monkeypatch) -> None:
    """A study scored by workers pinned to one thread each, or resumed on a machine with more
    cores, holds what one process with every core would: the kernels' column sums and Hough
    histograms are accumulated per fixed block of rows, not per thread, so every sum is
    the same to the bit. (With one block per thread, 1 and 2 threads moved one keypoint of
    6,365 on the demo at side 300.)"""
    import numba

    from scotsearch.fused import _kernels

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba runs one thread here")
    seen: list[np.ndarray] = []
    for name in ("gibbs", "plan_votes_hist"):
        real = getattr(_kernels, name)

        def record(*args, _real=real):  # the partial sums are the last argument
            _real(*args)
            seen.append(args[-1].sum(0))

        monkeypatch.setattr(_kernels, name, record)
    ds = synthetic_dataset(3, seed=2, image_hw=(64, 80))
    src = SyntheticSource(informative=(0, 2, 5), image_hw=(64, 80))
    subsets = [(0,), (2,), (0, 2), (0, 2, 5), (4, 9)]
    runs = []
    before = numba.get_num_threads()
    try:
        for n in (1, 2):
            numba.set_num_threads(n)
            seen.clear()
            ev = Evaluator(ds, src, match=MatchConfig.from_variant("ot-rhm"),
                           profile=get_profile("scot"), alphas=(0.1,), engine="fused")
            _, pred = ev.predict(subsets)
            runs.append((list(seen), pred))
    finally:
        numba.set_num_threads(before)
    (sums_1, pred_1), (sums_2, pred_2) = runs
    assert len(sums_1) == len(sums_2) == 2 * len(subsets) * len(ds.pairs)
    for a, b in zip(sums_1, sums_2):
        np.testing.assert_array_equal(a, b)
    for row_1, row_2 in zip(pred_1, pred_2):
        for a, b in zip(row_1, row_2):
            np.testing.assert_array_equal(a, b)
