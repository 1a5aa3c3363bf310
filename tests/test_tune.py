"""``scotsearch tune``: space, staircase, budget, resume, workers, crashes, identity, export."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from optuna.trial import FixedTrial
from optuna.trial import TrialState

from scotsearch.cam import staircase
from scotsearch.config import DEFAULT_BETA
from scotsearch.config import DEFAULT_GAMMA
from scotsearch.config import MatchConfig
from scotsearch.config import RunConfig
from scotsearch.errors import ConfigError
from scotsearch.evaluate import Evaluator
from scotsearch.presets import get_profile
from scotsearch.search.objective import TuneObjective
from scotsearch.search.objective import _surplus
from scotsearch.search.objective import pair_order
from scotsearch.search.space import HEIGHT_PARAMS
from scotsearch.search.space import WIDTH_PARAMS
from scotsearch.search.space_file import load_space
from scotsearch.search.space_file import space_from_dict
from scotsearch.search.tune import COUNTED
from scotsearch.search.tune import run_config
from scotsearch.search.tune import run_tune
from scotsearch.study import best_layers_of
from scotsearch.study import open_storage
from scotsearch.testing import SyntheticSource
from scotsearch.testing import synthetic_dataset


ROOT = Path(__file__).resolve().parents[1]

#: A small space that keeps trials fast (few Sinkhorn iterations, no log-domain eps).
FAST_SPACE = {
    "eps": {"low": 0.02, "high": 0.5, "log": True},
    "n_iter": {"low": 1, "high": 8, "log": True},
}

#: Layers 1 and 3 are noise in the synthetic source: the paper's settings are mediocre there
#: and the transport settings matter (PCK ranges over roughly 8..35 at alpha 0.05).
LAYERS = (1, 2, 3)


def _evaluator(n_pairs: int = 16, seed: int = 1, delay: float = 0.0) -> Evaluator:
    source: Any = SyntheticSource(informative=(0, 2, 5), noise_scale=1.0)
    if delay:
        source = _SlowSource(source, delay)
    return Evaluator(
        synthetic_dataset(n_pairs, seed=seed), source,
        match=MatchConfig.from_variant("ot-rhm-stair"), profile=get_profile("scot"),
        alphas=(0.05,),
    )


class _SlowSource:
    """Wraps a source with a per-image delay, so that trials overlap and can be killed."""

    def __init__(self, inner: SyntheticSource, delay: float) -> None:
        self.inner, self.delay, self.backbone = inner, delay, inner.backbone

    def get(self, path: Any, layer_ids: tuple[int, ...], *, need_cam: bool) -> Any:
        time.sleep(self.delay)
        return self.inner.get(path, layer_ids, need_cam=need_cam)

    def describe(self) -> dict[str, str]:
        return self.inner.describe()


def _counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=COUNTED)


@pytest.fixture(autouse=True)
def _quiet_single_threaded() -> Any:
    # The synthetic maps are tiny: with several threads on a busy 2-core machine torch spends
    # far more time synchronising than computing (seen: 80x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ the space
def test_default_space_file_is_the_builtin_space() -> None:
    from_file = load_space(ROOT / "studies" / "default_space.toml")
    assert from_file.to_dict() == load_space(None).to_dict()


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"bogus": {}}, "unknown section"),
        ({"eps": {"low": 0.5, "high": 0.1}}, "low < high"),
        ({"eps": {"low": 0.0, "high": 0.1, "log": True}}, "log scale"),
        ({"n_iter": {"low": 1.5, "high": 4}}, "integers"),
        ({"stair": {"heights": [0.2, 1.5]}}, "0 <= low < high <= 1"),
        ({"stair": {"first_height": 0.3, "heights": [0.2, 0.9]}}, "first_height"),
        ({"cam": {"choices": ["stairs"]}}, "choices"),
        ({"exp2": {"lo": 1}}, "unknown key"),
    ],
)
def test_bad_space_files_are_refused(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        space_from_dict(spec)


def test_space_fixed_settings_and_file(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[n_iter]\nvalue = 3\n[eps]\nfixed = true\n[cam]\nchoices = ["stair"]\n')
    space = load_space(f)
    dists = space.distributions()
    assert "n_iter" not in dists and "eps" not in dists and "cam" not in dists
    base = MatchConfig.from_variant("ot-rhm", eps=0.07)
    match, layers = space.suggest(FixedTrial(space.params_of(base)), base)
    assert layers is None
    assert (match.n_iter, match.eps, match.cam) == (3, 0.07, "stair")
    assert space.digest() != load_space(None).digest()
    with pytest.raises(ConfigError, match="does not exist"):
        load_space(tmp_path / "missing.toml")


def test_stair_heights_are_ordered_and_invertible() -> None:
    space = load_space(None)
    rng = np.random.default_rng(0)
    base = MatchConfig.from_variant("ot-rhm-stair")
    for _ in range(200):
        fracs = rng.uniform(0, 1, 3)
        values = {
            **dict(zip(HEIGHT_PARAMS, fracs)),
            **dict(zip(WIDTH_PARAMS, rng.uniform(0, 1, 4))),
            "cam": "stair",
        }
        m = space.match_of(values, base)
        assert m.beta[0] == 0.0 and list(m.beta) == sorted(m.beta) and m.beta[-1] <= 1.0
        # the same settings come back from their parameters (what enqueueing relies on)
        assert space.match_of({**values, **space.params_of(m)}, base) == m
    # the paper's staircase survives the reparametrisation exactly
    params = space.params_of(base)
    assert space.match_of(params, base).beta == DEFAULT_BETA
    assert space.match_of(params, base).gamma == DEFAULT_GAMMA


@pytest.mark.parametrize("first_always", [False, True])
def test_trial_stair_parameters_give_the_weights_of_eq8(first_always: bool) -> None:
    space = load_space(None)
    base = MatchConfig.from_variant("ot-rhm-stair")
    cam = torch.linspace(0, 1, 1001)
    cam = torch.cat([cam, torch.tensor([0.0, 0.4, 0.5, 0.6])])
    rng = np.random.default_rng(3)
    trials = [FixedTrial(space.params_of(base))]
    for _ in range(20):
        p = dict(space.params_of(base))
        p.update(zip(HEIGHT_PARAMS, rng.uniform(0, 1, 3).tolist()))
        p.update(zip(WIDTH_PARAMS, rng.uniform(0, 1, 4).tolist()))
        trials.append(FixedTrial(p))
    for k, trial in enumerate(trials):
        match, _ = space.suggest(trial, base)
        beta, gamma = np.array(match.beta), np.array(match.gamma)
        a = cam.double().numpy()[:, None]
        # Eq. 8: A(x) = sum_i gamma_i [A(x) > beta_i]  (first stair always on in SCOT's code)
        passed = a > beta[None, :]
        if first_always:
            passed[:, 0] = True
        expected = (passed * gamma[None, :]).sum(1)
        got = staircase(cam.double(), match.beta, match.gamma, first_always=first_always)
        np.testing.assert_array_equal(got.numpy(), expected)
        if k == 0:
            levels = sorted(set(np.round(got.numpy(), 12)))
            assert levels == ([0.5, 0.8, 0.9, 1.0] if first_always else [0.0, 0.5, 0.8, 0.9, 1.0])


def test_non_stair_trials_record_the_base_staircase() -> None:
    space = load_space(None)
    base = MatchConfig.from_variant("ot-rhm-stair")
    p = dict(space.params_of(base))
    p.update(cam="raw", beta1_frac=0.9, gamma0=0.01)
    match, _ = space.suggest(FixedTrial(p), base)
    assert match.cam == "raw" and match.beta == base.beta and match.gamma == base.gamma


def test_pair_order_is_a_fixed_permutation_of_pair_ids() -> None:
    ds = synthetic_dataset(20, seed=4)
    order = pair_order(ds)
    assert sorted(order) == list(range(20)) and order != list(range(20))
    assert order == pair_order(synthetic_dataset(20, seed=4))


# ------------------------------------------------------------------------------ budget, resume
def test_resume_reaches_exactly_the_requested_total(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    ev = _evaluator(12)
    space = space_from_dict(FAST_SPACE)
    kw = dict(study_name="t", storage=url, space=space, layers=LAYERS, seed=0, batch_pairs=4)
    r1 = run_tune(ev, n_trials=4, **kw)
    assert (r1.n_trials, r1.n_run) == (4, 4)
    r2 = run_tune(ev, n_trials=9, **kw)
    assert (r2.n_trials, r2.n_run) == (9, 5)
    r3 = run_tune(ev, n_trials=9, **kw)
    assert (r3.n_trials, r3.n_run) == (9, 0)
    study = optuna.load_study(study_name="t", storage=url)
    assert len(_counted(study)) == 9
    assert len(study.trials) == 9  # nothing failed, nothing dropped
    baselines = [t for t in study.trials if t.user_attrs.get("baseline")]
    assert len(baselines) == 1 and baselines[0].number == 0
    assert r3.baseline is not None and r3.baseline.number == 0
    assert r3.best is not None and r3.best.value >= r3.baseline.value
    for t in _counted(study):
        assert t.user_attrs["search"] == "tune" and t.user_attrs["layers"] == "1,2,3"
        MatchConfig.from_dict(t.user_attrs["match"])
        json.dumps(t.user_attrs)  # plain JSON-safe values only
    assert study.user_attrs["identity"]["kind"] == "tune"


def test_a_resume_under_another_identity_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    space = space_from_dict(FAST_SPACE)
    run_tune(_evaluator(8), study_name="t", n_trials=2, storage=url, space=space, layers=LAYERS)
    with pytest.raises(ConfigError, match="layers: stored 1,2,3, now 0,1,2"):
        run_tune(_evaluator(8), study_name="t", n_trials=3, storage=url, space=space,
                 layers=(0, 1, 2))
    with pytest.raises(ConfigError, match="space"):
        run_tune(_evaluator(8), study_name="t", n_trials=3, storage=url, space=load_space(None),
                 layers=LAYERS)
    with pytest.raises(ConfigError, match="n_pairs"):
        run_tune(_evaluator(6), study_name="t", n_trials=3, storage=url, space=space,
                 layers=LAYERS)
    # the refused runs added nothing
    assert len(optuna.load_study(study_name="t", storage=url).trials) == 2


def test_surplus_trials_are_dropped_not_counted() -> None:
    study = optuna.create_study(direction="maximize")
    for v in (1.0, 2.0):
        study.add_trial(optuna.trial.create_trial(value=v))
    t = study.ask()
    assert not _surplus(study, t.number, 3)
    assert _surplus(study, t.number, 2)
    ev = _evaluator(4)
    obj = TuneObjective(ev, space_from_dict(FAST_SPACE), layers=LAYERS, n_total=2)
    assert math.isnan(obj(t)) and t.user_attrs["surplus"] and obj.trials_run == 0


def test_joint_mode_uses_the_beam_layer_parameters() -> None:
    space = space_from_dict({**FAST_SPACE, "layers": {"candidates": [0, 1, 2, 3, 5]}})
    storage = optuna.storages.InMemoryStorage()
    res = run_tune(_evaluator(8), study_name="j", n_trials=4, storage=storage, space=space,
                   layers=None, baseline_layers=LAYERS, seed=1, batch_pairs=4)
    assert res.baseline is not None and res.baseline.user_attrs["layers"] == "1,2,3"
    study = optuna.load_study(study_name="j", storage=storage)
    assert study.user_attrs["identity"]["layers"] == "joint"
    for t in study.trials:
        bits = {k: v for k, v in t.params.items() if k.startswith("L")}
        assert set(bits) == {"L00", "L01", "L02", "L03", "L05"}
        if t.state == TrialState.COMPLETE:
            chosen = [str(int(k[1:])) for k, v in sorted(bits.items()) if v]
            assert t.user_attrs["layers"] == ",".join(chosen)
    assert set(best_layers_of(study)) <= {0, 1, 2, 3, 5}


def test_from_beam_takes_the_best_subset_of_the_beam_study(tmp_path: Path) -> None:
    from scotsearch.search.tune import layers_from_beam as _layers_from_beam
    from scotsearch.study import add_layer_trial
    from scotsearch.study import open_study

    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    beam = open_study("beam", storage)
    beam.set_user_attr("identity",
                       {"kind": "beam", "backbone": "resnet50", "dataset": "synthetic"})
    for layers, value in (((0, 2), 61.0), ((0, 2, 5), 70.5), ((1,), 12.0)):
        add_layer_trial(beam, layers=layers, n_layers=17, value=value,
                        user_attrs={"search": "beam", "layers": ",".join(map(str, layers))})
    assert _layers_from_beam("beam", storage, "resnet50", "synthetic") == (0, 2, 5)
    with pytest.raises(ConfigError, match="resnet50"):
        _layers_from_beam("beam", storage, "resnet101", "synthetic")
    open_study("empty", storage)
    with pytest.raises(ConfigError, match="no completed trial"):
        _layers_from_beam("empty", storage, "resnet50", "synthetic")


# ------------------------------------------------------------------------------ export
def test_an_exported_config_reevaluates_to_its_stored_value(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    # cam fixed to the staircase so that the exported row carries tuned heights and widths
    space = space_from_dict({**FAST_SPACE, "cam": {"value": "stair"}})
    run_tune(_evaluator(10), study_name="t", n_trials=6, storage=url, space=space, layers=LAYERS,
             seed=2, sampler="random", pruner="none")
    study = optuna.load_study(study_name="t", storage=url)
    export = pytest.importorskip("scotsearch.export")
    rows = export.export_rows(study)
    assert len(rows) == 6 and rows[0]["trial"] == study.best_trial.number
    csv = tmp_path / "best.csv"
    export.write_csv(rows, csv)
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)  # as `evaluate --config` reads it
    for k in range(len(table)):
        cfg = RunConfig.from_row(table.iloc[k].to_dict())
        trial = study.trials[int(table.iloc[k]["trial"])]
        assert cfg == run_config(study, trial)
        assert cfg.match.beta != DEFAULT_BETA or trial.user_attrs.get("baseline")
        # a fresh evaluator built from the row alone, as `scotsearch evaluate --config` does
        ev = Evaluator(
            synthetic_dataset(10, seed=1), SyntheticSource(informative=(0, 2, 5), noise_scale=1.0),
            match=cfg.match, profile=get_profile(cfg.compat), alphas=(cfg.alpha,),
            thres=cfg.thres,
        )
        again = float(ev.score([cfg.layers]).mean()[0, 0])
        assert again == float(table.iloc[k]["pck"]) == trial.value


# ------------------------------------------------------------------------------ pruning
@pytest.fixture(scope="module")
def demo_evaluator(tmp_path_factory: pytest.TempPathFactory) -> Evaluator:
    """The embedded demo's val split through a real (random-weight) ResNet-50 at side 96."""
    import dataclasses

    from scotsearch.cache import open_source
    from scotsearch.data import load_dataset

    profile = dataclasses.replace(get_profile("scot"), image_side=96)
    ds = load_dataset("demo", tmp_path_factory.mktemp("demo"), "val")
    src = open_source(backbone="resnet50", weights="random", seed=0, profile=profile,
                      cache_dir=None, device=torch.device("cpu"), allow_random_fallback=False)
    return Evaluator(ds, src, match=MatchConfig.from_variant("ot-rhm-stair"), profile=profile)


@pytest.mark.parametrize(
    "data, pruner", [("synthetic", "wilcoxon"), ("synthetic", "median"), ("demo", "wilcoxon")]
)
def test_pruning_keeps_the_best_within_noise_and_scores_fewer_pairs(
    data: str, pruner: str, request: pytest.FixtureRequest
) -> None:
    if data == "demo":
        ev = request.getfixturevalue("demo_evaluator")
        layers, batch, n_trials = (0, 11, 12, 13), 6, 12  # SCOT's SPair set for ResNet-50
    else:
        ev, layers, batch, n_trials = _evaluator(32), LAYERS, 8, 14
    n_pairs = len(ev.dataset.pairs)
    space = space_from_dict(FAST_SPACE)
    results, storages = {}, {}
    for name in ("none", pruner):
        storages[name] = optuna.storages.InMemoryStorage()
        # A random sampler draws the same settings whatever the pruner does, so both runs see
        # the same candidates and differ only in what pruning cuts.
        results[name] = run_tune(
            ev, study_name=name, n_trials=n_trials, storage=storages[name],
            space=space, layers=layers, sampler="random", seed=5, pruner=name, batch_pairs=batch,
        )
    full, pruned = results["none"], results[pruner]
    assert full.pairs_scored == n_trials * n_pairs
    assert pruned.pairs_scored < 0.85 * full.pairs_scored
    assert pruned.n_trials == full.n_trials == n_trials
    # noise: two standard errors of the mean of the best trial's per-pair PCK
    best_match = MatchConfig.from_dict(full.best.user_attrs["match"])
    pck = ev.score([layers], match=best_match).pck[0, 0] * 100
    noise = 2 * pck.std(ddof=1) / math.sqrt(len(pck))
    assert abs(pruned.best.value - full.best.value) <= noise
    # an early-stopped trial never becomes the best, and keeps out of exports
    assert not pruned.best.user_attrs["pruned"]
    export = pytest.importorskip("scotsearch.export")
    study = optuna.load_study(study_name=pruner, storage=storages[pruner])
    stopped = [t for t in study.trials if t.user_attrs.get("pruned")]
    assert stopped
    exported = {r["trial"] for r in export.export_rows(study)}
    assert exported and not exported & {t.number for t in stopped}


# ------------------------------------------------------------------------------ several workers
WORKER = r'''
import json, sys, time
import optuna
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from test_tune import _evaluator, FAST_SPACE, LAYERS
from scotsearch.search.space_file import space_from_dict
from scotsearch.search.tune import run_tune
from scotsearch.study import open_shared_storage as open_tune_storage
cfg = json.loads(sys.argv[1])
import torch; torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = open_tune_storage(cfg["url"])
if cfg.get("fast_heartbeat"):
    # RDBStorage reads these on every check: a 1 s heartbeat and 3 s grace keep the test short
    storage.heartbeat_interval, storage.grace_period = 1, 3
res = run_tune(_evaluator(cfg["pairs"], delay=cfg["delay"]), study_name="w", n_trials=cfg["n"],
               storage=storage, space=space_from_dict(FAST_SPACE), layers=LAYERS,
               seed=cfg.get("seed"), batch_pairs=4, stale_after=3.0, heartbeat_interval=0.5)
print(json.dumps({{"n_run": res.n_run, "n_trials": res.n_trials}}))
'''


def _start_worker(tmp_path: Path, cfg: dict[str, Any]) -> subprocess.Popen:
    script = tmp_path / "worker.py"
    if not script.exists():
        script.write_text(WORKER.format(root=str(ROOT), tests=str(ROOT / "tests")))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), json.dumps(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


def _storage_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'w.db'}"
    return f"journal:{tmp_path / 'w.log'}"


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_workers_share_one_study_exactly(tmp_path: Path, kind: str) -> None:
    url = _storage_url(kind, tmp_path)
    n = 10
    cfg = {"url": url, "n": n, "pairs": 8, "delay": 0.01}
    procs = [_start_worker(tmp_path, cfg) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "database is locked" not in err and "Traceback" not in err, err
    runs = [json.loads(out.strip().splitlines()[-1])["n_run"] for out, _ in outs]
    study = optuna.load_study(study_name="w", storage=open_storage(url))
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if t.state in COUNTED]
    assert len(counted) == n
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    # nothing lost: every other trial is one a worker dropped because the budget was taken
    others = [t for t in trials if t.state not in COUNTED]
    assert all(t.state == TrialState.FAIL and t.user_attrs.get("surplus") for t in others)
    assert len(others) <= 1  # at most one dropped per extra worker, and only on a photo finish
    assert sum(runs) == n and min(runs) >= 1, runs
    assert sum(1 for t in trials if t.user_attrs.get("baseline")) == 1


@pytest.mark.parametrize("kind", ["cuda", "cpu"])
def test_a_trial_out_of_memory_fails_and_the_search_goes_on(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    ev = _evaluator(8)
    real_score = ev.score
    calls = [0]

    def score(subsets: Any, **kw: Any) -> Any:
        calls[0] += 1
        if calls[0] == 3:  # the second trial's first batch
            if kind == "cuda":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: "
                               "can't allocate memory: you tried to allocate 21474836480 bytes.")
        return real_score(subsets, **kw)

    ev.score = score  # type: ignore[method-assign]
    url = f"sqlite:///{tmp_path}/t.db"
    # Optuna's logger does not propagate to pytest's: keep its records here.
    optuna_records: list[logging.LogRecord] = []
    keep = logging.Handler()
    keep.emit = optuna_records.append  # type: ignore[method-assign]
    logging.getLogger("optuna").addHandler(keep)
    try:
        with caplog.at_level(logging.WARNING):
            res = run_tune(ev, study_name="t", n_trials=3, storage=url,
                           space=space_from_dict(FAST_SPACE), layers=LAYERS, batch_pairs=4,
                           pruner="none")
    finally:
        logging.getLogger("optuna").removeHandler(keep)
    study = optuna.load_study(study_name="t", storage=url)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [1]
    assert failed[0].user_attrs["error"].startswith("out of memory: ")
    # replaced: the worker still ends with the trials asked for
    assert res.n_trials == 3 and len(_counted(study)) == 3
    # one line per failure, no traceback (Optuna logs it with the failed trial otherwise)
    assert any("Trial 1 failed" in r.getMessage() for r in optuna_records)
    assert not [r for r in [*caplog.records, *optuna_records] if r.exc_info]
    assert any("trial 1 ran out of memory" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_killed_workers_trial_is_failed_and_retried(tmp_path: Path, kind: str) -> None:
    url = _storage_url(kind, tmp_path)
    n = 4
    proc = _start_worker(
        tmp_path, {"url": url, "n": n, "pairs": 8, "delay": 0.15, "fast_heartbeat": True}
    )
    storage = open_storage(url)
    victim = None
    deadline = time.time() + 60
    while victim is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            study = optuna.load_study(study_name="w", storage=storage)
        except KeyError:
            continue
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        # wait until the trial has its parameters (it has started scoring pairs)
        victim = next((t for t in running if t.params and t.intermediate_values), None)
    if victim is None:
        pytest.fail(proc.communicate()[1] if proc.poll() is not None else "no running trial")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    study = optuna.load_study(study_name="w", storage=storage)
    assert study.trials[victim.number].state == TrialState.RUNNING
    time.sleep(3.5)  # past the grace period of the dead worker's heartbeat

    # a later run (any worker) fails the orphan, re-runs its settings and completes the study
    store = open_storage(url, heartbeat=True)
    if kind == "sqlite":
        store.heartbeat_interval, store.grace_period = 1, 3
    res = run_tune(_evaluator(8), study_name="w", n_trials=n, storage=store,
                   space=space_from_dict(FAST_SPACE), layers=LAYERS, batch_pairs=4,
                   stale_after=3.0)
    assert res.n_trials == n
    study = optuna.load_study(study_name="w", storage=storage)
    assert study.trials[victim.number].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1
    assert retries[0].state == TrialState.COMPLETE and retries[0].params == victim.params
    assert len(_counted(study)) == n


# ------------------------------------------------------------------------------ PostgreSQL
def test_postgresql_storage_shared_by_two_workers(tmp_path: Path, postgres_url: str) -> None:
    """Several machines share a study through PostgreSQL: two workers, one server."""
    procs = [_start_worker(tmp_path, {"url": postgres_url, "n": 8, "pairs": 8, "delay": 0.01})
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    study = optuna.load_study(study_name="w", storage=postgres_url)
    assert len(_counted(study)) == 8


# ------------------------------------------------------------------------------ command line
def test_cli_refuses_bad_arguments(tmp_path: Path) -> None:
    import argparse

    from scotsearch.commands import tune as tune_cmd

    parser = argparse.ArgumentParser()
    tune_cmd.add_arguments(parser)
    with pytest.raises(ConfigError, match="--trials must be >= 1"):
        tune_cmd.run(parser.parse_args(["--study", "x", "--trials", "0"]))
    bad = tmp_path / "bad.toml"
    bad.write_text("[eps]\nlow = 1\nhigh = 0.1\n")
    with pytest.raises(ConfigError, match="low < high"):
        tune_cmd.run(parser.parse_args(["--study", "x", "--trials", "3", "--space", str(bad)]))
    with pytest.raises(ConfigError, match="OT variant"):
        tune_cmd.run(parser.parse_args(["--study", "x", "--trials", "3", "--variant", "cos-rhm",
                                        "--cache-dir", str(tmp_path)]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--study", "x", "--trials", "3", "--layers", "0,1", "--from-beam", "b"])


def test_improvement_is_reported_against_the_paper_settings() -> None:
    res = run_tune(_evaluator(12), study_name="r", n_trials=10,
                   storage=optuna.storages.InMemoryStorage(), space=space_from_dict(FAST_SPACE),
                   layers=LAYERS, seed=0, batch_pairs=4, pruner="none")
    text = res.summary()
    assert res.baseline is not None and res.improvement is not None
    if res.improvement > 0:
        assert f"improved by {res.improvement:+.2f}" in text
    else:
        assert "could not improve" in text
