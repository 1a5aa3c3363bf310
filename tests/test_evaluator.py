from __future__ import annotations

import numpy as np
import pytest

from scotsearch.config import VARIANTS
from scotsearch.config import MatchConfig
from scotsearch.errors import ConfigError
from scotsearch.evaluate import Evaluator
from scotsearch.presets import get_profile
from scotsearch.testing import SyntheticSource
from scotsearch.testing import synthetic_dataset


def _evaluator(
    variant: str = "ot-rhm", device: str = "cpu", profile: str = "scot", **kw
) -> Evaluator:
    ds = synthetic_dataset(6, seed=1, image_hw=(64, 80))
    return Evaluator(
        ds, SyntheticSource(informative=(0, 2, 5), image_hw=(64, 80)),
        match=MatchConfig.from_variant(variant, **kw), profile=get_profile(profile),
        alphas=(0.05, 0.1, 0.2), device=device,
    )


@pytest.mark.parametrize("profile", ["scot", "hpf"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_many_subsets_in_one_call_equal_one_at_a_time(variant: str, profile: str) -> None:
    ev = _evaluator(variant, profile=profile)
    subsets = [(0,), (0, 2), (1, 2, 3), (0, 2, 5), (4, 9), (2,), (0, 7, 12)]
    together = ev.score(subsets)
    for k, s in enumerate(subsets):
        alone = ev.score([s])
        np.testing.assert_array_equal(together.n_correct[k], alone.n_correct[0])


def test_informative_layers_beat_noise_layers() -> None:
    ev = _evaluator("ot-rhm")
    res = ev.score([(0, 2, 5), (0, 1, 3), (1, 3)]).mean()[:, 1]
    assert res[0] > res[1] and res[0] > res[2]
    assert res[0] >= 90.0


def test_pair_subsets_and_per_pair_consistency() -> None:
    ev = _evaluator("cos-rhm", exp1=3.0)
    full = ev.score([(0, 2)])
    part = ev.score([(0, 2)], pair_index=[4, 1])
    np.testing.assert_array_equal(part.n_correct[0], full.n_correct[0][:, [4, 1]])
    assert full.pck.shape == (1, 3, 6)
    assert (full.mean() >= 0).all() and (full.mean() <= 100).all()
    # larger alpha can only admit more keypoints
    assert (np.diff(full.n_correct[0], axis=0) >= 0).all()


@pytest.mark.gpu
def test_cpu_and_gpu_agree() -> None:
    subsets = [(0,), (0, 2), (0, 2, 5), (3, 8)]
    for variant in ("ot-rhm-stair", "cos-rhm"):
        a = _evaluator(variant, "cpu").score(subsets).n_correct
        b = _evaluator(variant, "cuda").score(subsets).n_correct
        # identical maths in float32; allow one keypoint of disagreement per subset from
        # reduction-order differences on near-ties
        assert np.abs(a - b).sum(axis=(1, 2)).max() <= 1


def test_bad_arguments() -> None:
    ds = synthetic_dataset(2)
    with pytest.raises(ConfigError):
        Evaluator(ds, SyntheticSource(), match=MatchConfig(), profile=get_profile(None),
                  alphas=(0.0,))
    ev = _evaluator()
    with pytest.raises(ConfigError):
        ev.score([(0, 99)])
    with pytest.raises(ConfigError):
        MatchConfig(eps=0)
    with pytest.raises(ConfigError):
        MatchConfig(beta=(0.5, 0.4, 0.6, 0.7))


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_reduced_precision_terms_keep_the_ranking(precision: str) -> None:
    ds = synthetic_dataset(6, seed=1, image_hw=(64, 80))
    src = SyntheticSource(informative=(0, 2, 5), image_hw=(64, 80))
    subsets = [(0,), (0, 2), (0, 2, 5), (1, 3), (0, 7, 12), (2, 5)]
    kw = dict(match=MatchConfig.from_variant("ot-rhm"), profile=get_profile("scot"), alphas=(0.1,))
    full = Evaluator(ds, src, **kw).score(subsets).mean()[:, 0]
    low = Evaluator(ds, src, precision=precision, **kw).score(subsets).mean()[:, 0]
    assert np.argmax(low) == np.argmax(full)
    assert np.abs(low - full).max() <= 5.0


class _WatchedSource:
    """Records the order of reads, and how many run at once; fails on one chosen image."""

    def __init__(self, inner: SyntheticSource, fail_on: str | None = None) -> None:
        import threading

        self.inner, self.backbone, self.fail_on = inner, inner.backbone, fail_on
        self.order: list[str] = []
        self.busy = 0
        self.most = 0
        self.lock = threading.Lock()

    def get(self, path, layer_ids, *, need_cam):
        import time

        from scotsearch.errors import DataError

        with self.lock:
            self.busy += 1
            self.most = max(self.most, self.busy)
        try:
            time.sleep(0.002)  # give a second reader, if there were one, time to overlap
            self.order.append(str(path))
            if self.fail_on is not None and str(path) == self.fail_on:
                raise DataError(f"cannot decode {path}")
            return self.inner.get(path, layer_ids, need_cam=need_cam)
        finally:
            with self.lock:
                self.busy -= 1

    def describe(self):
        return self.inner.describe()


def test_prefetched_reads_keep_pair_order_one_reader_and_raise_errors() -> None:
    from scotsearch.errors import DataError

    ev = _evaluator("ot-rhm")
    plain = ev.score([(0, 2), (5,)], pair_index=[3, 0, 5, 1])
    watched = _WatchedSource(ev.source)
    ev.source = watched
    again = ev.score([(0, 2), (5,)], pair_index=[3, 0, 5, 1])
    np.testing.assert_array_equal(plain.n_correct, again.n_correct)
    expected = [str(x) for p in (3, 0, 5, 1) for x in (ev.pairs[p].src_path, ev.pairs[p].trg_path)]
    assert watched.order == expected and watched.most == 1
    ev.source = _WatchedSource(watched.inner, fail_on=str(ev.pairs[5].trg_path))
    with pytest.raises(DataError, match="cannot decode"):
        ev.score([(0, 2)], pair_index=[3, 0, 5, 1])
