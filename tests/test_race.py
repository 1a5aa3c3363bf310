"""Racing in the beam search: the elimination rule, and a raced search against a full one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scotsearch.search.race import out_of_beam


def brute_force(values: np.ndarray, k: int, z: float, known=()) -> np.ndarray:
    """The rule of scotsearch.search.race written as plain loops."""
    S, n = values.shape
    out = np.zeros(S, dtype=bool)
    if n < 2 or S + len(known) <= k:
        return out
    for i in range(S):
        better = 0
        for j in range(S):
            if j == i:
                continue
            d = [values[j, p] - values[i, p] for p in range(n)]
            mean = sum(d) / n
            var = sum((v - mean) ** 2 for v in d) / (n - 1)
            if mean > z * math.sqrt(var / n):
                better += 1
        xi = values[i]
        mi = sum(xi) / n
        se = math.sqrt(sum((v - mi) ** 2 for v in xi) / (n - 1) / n)
        better += sum(1 for s in known if s > mi + z * se)
        out[i] = better >= k
    return out


@pytest.mark.parametrize("seed", range(6))
def test_rule_equals_brute_force_loops(seed: int) -> None:
    rng = np.random.default_rng(seed)
    S, n = 7, 12
    difficulty = rng.uniform(0, 100, size=n)  # shared by every candidate, as pair difficulty
    skill = rng.normal(0, 6, size=S)
    values = np.clip(difficulty[None, :] + skill[:, None] + rng.normal(0, 4, (S, n)), 0, 100)
    known = [float(v) for v in rng.uniform(30, 70, size=seed % 3)]
    for k in (1, 2, 4):
        for z in (1.0, 2.5):
            got = out_of_beam(values, k, z, known=known)
            assert got.tolist() == brute_force(values, k, z, known).tolist()


def test_hand_worked_case() -> None:
    # Candidate 0 beats 1 and 2 on every pair by exactly 10 (zero variance of the paired
    # differences: confident at any z); 1 and 2 are identical. With k = 1 the two losers are
    # out; with k = 2 nobody has two confident winners over it.
    base = np.array([50.0, 20.0, 80.0, 40.0])
    values = np.stack([base + 10, base, base])
    assert out_of_beam(values, 1, 3.0).tolist() == [False, True, True]
    assert out_of_beam(values, 2, 3.0).tolist() == [False, False, False]
    # an exact score of 100 from a resumed candidate counts as a second winner over 1 and 2,
    # whose means (47.5) are far below it even with their unpaired spread
    assert out_of_beam(values, 2, 1.0, known=[100.0]).tolist() == [False, True, True]
    # fewer candidates than the beam: nothing can be out
    assert not out_of_beam(values, 3, 0.1).any()


def test_pairing_separates_what_unpaired_means_cannot() -> None:
    # Pair difficulty dominates the spread; candidate 1 is 2 points worse on every pair
    # except noise. Unpaired, its mean is within one standard error; paired, it is far out.
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(0, 100, size=40)
    values = np.stack([difficulty, difficulty - 2 + rng.normal(0, 0.5, 40)])
    assert out_of_beam(values, 1, 3.0).tolist() == [False, True]
    se = values[1].std(ddof=1) / math.sqrt(40)
    assert values[0].mean() - values[1].mean() < se


def _evaluator(n_pairs: int):
    from scotsearch.config import MatchConfig
    from scotsearch.evaluate import Evaluator
    from scotsearch.presets import get_profile
    from scotsearch.testing import SyntheticSource
    from scotsearch.testing import synthetic_dataset

    ds = synthetic_dataset(n_pairs, image_hw=(32, 48), n_kps=6, seed=3)
    src = SyntheticSource("resnet50", informative=(1, 3), image_hw=(32, 48), noise_scale=1.0)
    return Evaluator(ds, src, match=MatchConfig(similarity="cos", rhm=False),
                     profile=get_profile("scot"), alphas=(0.05,))


def test_raced_search_keeps_the_result_and_scores_fewer_pairs(tmp_path) -> None:
    from scotsearch.export import export_rows
    from scotsearch.search.beam_study import run_beam
    from scotsearch.study import completed_trials

    kw = dict(beam=2, max_layers=3, layers=range(6), chunk=8)
    evals: dict[str, int] = {}
    outs = {}
    for name, race in (("full", None), ("raced", 2.0)):
        ev = _evaluator(24)
        calls = []
        inner = ev.score

        def counting(subsets, **k):
            calls.append(len(subsets) * len(k["pair_index"]))
            return inner(subsets, **k)

        ev.score = counting  # type: ignore[method-assign]
        outs[name] = run_beam(ev, study=name, storage=f"sqlite:///{tmp_path}/{name}.db",
                              race=race, race_block=6, **kw)
        evals[name] = sum(calls)
    full, raced = outs["full"], outs["raced"]
    assert raced.result.best.key == full.result.best.key
    assert raced.result.best.score == full.result.best.score
    assert evals["raced"] < evals["full"]
    # every candidate is stored once; the raced-out ones as pruned, with a partial mean
    trials = completed_trials(raced.study)
    assert len(trials) == len(completed_trials(full.study))
    cut = [t for t in trials if t.user_attrs.get("pruned")]
    assert cut and all(math.isnan(t.user_attrs["pck"]) and t.user_attrs["pairs"] < 24
                       for t in cut)
    # a finished candidate's score equals the full search's score for it
    full_scores = {t.user_attrs["layers"]: t.value for t in completed_trials(full.study)}
    for t in trials:
        if not t.user_attrs.get("pruned"):
            assert t.value == full_scores[t.user_attrs["layers"]]
    # nothing raced out is exported; a rerun re-scores nothing
    exported = {r["layers"] for r in export_rows(raced.study)}
    assert not exported & {t.user_attrs["layers"] for t in cut}
    again = run_beam(_evaluator(24), study="raced", storage=f"sqlite:///{tmp_path}/raced.db",
                     race=2.0, race_block=6, **kw)
    assert again.result.n_scored == 0 and again.result.best.key == full.result.best.key


def test_race_is_refused_with_the_reference_algorithm_and_bad_values(tmp_path) -> None:
    from scotsearch.errors import ConfigError
    from scotsearch.search.beam_study import run_beam

    url = f"sqlite:///{tmp_path}/s.db"
    with pytest.raises(ConfigError, match="reference algorithm"):
        run_beam(_evaluator(4), study="s", storage=url, reference=True, race=3.0)
    with pytest.raises(ConfigError, match="--race must be a positive"):
        run_beam(_evaluator(4), study="s", storage=url, race=-1.0)
    with pytest.raises(ConfigError, match="--race-block"):
        run_beam(_evaluator(4), study="s", storage=url, race=3.0, race_block=1)
