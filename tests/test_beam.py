"""Beam search: the pure algorithm on synthetic objectives, and the stored, resumable search."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scotsearch.layers import format_layers as subset_key
from scotsearch.search.beam import Candidate
from scotsearch.search.beam import NothingScoredError
from scotsearch.search.beam import Subset
from scotsearch.search.beam import as_subset
from scotsearch.search.beam import beam_search
from scotsearch.search.beam import expand
from scotsearch.search.beam import initial_candidates
from scotsearch.search.beam import top_k


ROOT = Path(__file__).resolve().parents[1]


class Recorder:
    """A score function over a table or a callable that logs every call."""

    def __init__(self, f):
        self.f = f
        self.calls: list[list[Subset]] = []

    def __call__(self, subsets: list[Subset]) -> list[float]:
        self.calls.append(list(subsets))
        return [float(self.f(s)) for s in subsets]

    @property
    def scored(self) -> list[Subset]:
        return [s for call in self.calls for s in call]


def table(scores: dict[str, float]):
    """Score from a hand-written table; an unexpected candidate fails the test."""
    by_subset = {as_subset(k): v for k, v in scores.items()}

    def f(s: Subset) -> float:
        if s not in by_subset:
            raise AssertionError(f"candidate {s} should never be scored")
        return by_subset[s]

    return f


def pseudo_random(seed: int):
    """A fixed, arbitrary objective over subsets (hash-based, reproducible)."""

    def f(s: Subset) -> float:
        h = hashlib.sha256(f"{seed}:{subset_key(s)}".encode()).digest()
        return int.from_bytes(h[:4], "little") / 2**32 * 100

    return f


# ------------------------------------------------------------------------------------------
# the references' algorithm, worked by hand


# n_layers=5, beam=2, max_layers=3 (reference-behaviour.md §8):
#   depth 0: only [0], [1] (candidate_base = layers 0..beam-1)          -> beam [1], [0]
#   depth 1: from [1]: c > 1 -> [1,2] [1,3] [1,4]
#            from [0]: c > 0 -> [0,1] [0,2] [0,3] [0,4]                -> beam [0,2], [0,3]
#   depth 2: from [0,2]: [0,1,2] [0,2,3] [0,2,4]
#            from [0,3]: [0,1,3]; c=2 gives [0,2,3], already scored at this depth -> `break`,
#            so [0,3,4] (the best set of all, 99) is never tried.
#   The depth-2 best [0,2,3] scores 28.0, equal to the global best [0,2]: not strictly
#   greater, so the result stays the shallower [0,2].
REFERENCE_TABLE = {
    "0": 10.0, "1": 20.0,
    "1,2": 12.0, "1,3": 11.0, "1,4": 5.0, "0,1": 15.0, "0,2": 28.0, "0,3": 26.0, "0,4": 1.0,
    "0,1,2": 27.0, "0,2,3": 28.0, "0,2,4": 20.0, "0,1,3": 22.0,
}
REFERENCE_SEQUENCE = [
    "0", "1",
    "1,2", "1,3", "1,4", "0,1", "0,2", "0,3", "0,4",
    "0,1,2", "0,2,3", "0,2,4", "0,1,3",
]


def test_reference_mode_reproduces_hand_worked_sequence_with_break():
    fn = Recorder(table({**REFERENCE_TABLE, "0,3,4": 99.0}))
    res = beam_search(fn, n_layers=5, beam=2, max_layers=3, reference=True)
    assert [subset_key(s) for s in fn.scored] == REFERENCE_SEQUENCE
    # one score_fn call per depth: candidates of a depth are scored together
    assert [len(c) for c in fn.calls] == [2, 7, 4]
    beams = [[c.key for c in d.beam] for d in res.depths]
    assert beams == [["1", "0"], ["0,2", "0,3"], ["0,2,3", "0,1,2"]]
    assert res.best.layers == (0, 2) and res.best.score == 28.0 and res.best.depth == 1
    assert [c.parent for c in res.depths[2].candidates] == [(0, 2), (0, 2), (0, 2), (0, 3)]
    assert res.n_scored == len(REFERENCE_SEQUENCE) and res.n_reused == 0


def test_default_mode_same_scenario_uses_continue_and_all_single_layers():
    scores = {
        "0": 10.0, "1": 20.0, "2": 5.0, "3": 4.0, "4": 3.0,
        # from [1] any layer not in it (0 too); from [0], [0,1] is a duplicate -> continue
        "0,1": 15.0, "1,2": 12.0, "1,3": 11.0, "1,4": 5.0, "0,2": 28.0, "0,3": 26.0, "0,4": 1.0,
        "0,1,2": 27.0, "0,2,3": 28.0, "0,2,4": 20.0, "0,1,3": 22.0, "0,3,4": 99.0,
    }
    fn = Recorder(table(scores))
    res = beam_search(fn, n_layers=5, beam=2, max_layers=3, reference=False)
    assert [subset_key(s) for s in fn.scored] == [
        "0", "1", "2", "3", "4",
        "0,1", "1,2", "1,3", "1,4", "0,2", "0,3", "0,4",
        "0,1,2", "0,2,3", "0,2,4", "0,1,3", "0,3,4",
    ]
    assert res.best.layers == (0, 3, 4) and res.best.score == 99.0


def test_expand_rules_side_by_side():
    beam = [(0, 2), (0, 3)]
    assert expand(beam, n_layers=5, reference=True) == [
        ((0, 1, 2), (0, 2)), ((0, 2, 3), (0, 2)), ((0, 2, 4), (0, 2)), ((0, 1, 3), (0, 3)),
    ]
    assert [c for c, _ in expand(beam, n_layers=5, reference=False)] == [
        (0, 1, 2), (0, 2, 3), (0, 2, 4), (0, 1, 3), (0, 3, 4),
    ]
    # new layers above the base only in reference mode
    assert [c for c, _ in expand([(2,)], n_layers=5, reference=True)] == [(2, 3), (2, 4)]
    assert [c for c, _ in expand([(2,)], n_layers=5, reference=False)] == [
        (0, 2), (1, 2), (2, 3), (2, 4),
    ]
    assert initial_candidates(n_layers=34, beam=4, reference=True) == [(0,), (1,), (2,), (3,)]
    assert len(initial_candidates(n_layers=34, beam=4, reference=False)) == 34


def test_top_k_is_stable_and_ranks_nan_last():
    scores = [1.0, math.nan, 3.0, 1.0, 3.0]
    cands = [Candidate(layers=(i,), score=s, depth=0) for i, s in enumerate(scores)]
    assert [c.layers for c in top_k(cands, 5)] == [(2,), (4,), (0,), (3,), (1,)]


def test_nan_candidates_never_enter_the_beam():
    # A candidate without a score (its scoring failed) is not grown from, even where fewer
    # than `beam` candidates have a score; a depth with none ends the search.
    f = pseudo_random(3)
    res = beam_search(Recorder(lambda s: math.nan if s == (1,) else f(s)), n_layers=3,
                      beam=4, max_layers=3)
    assert [c.layers for c in res.depths[0].beam] == [c.layers for c in top_k(
        [c for c in res.depths[0].candidates if c.layers != (1,)], 4)]
    assert all(c.parent != (1,) for c in res.candidates)
    assert not math.isnan(res.best.score)
    res = beam_search(Recorder(lambda s: math.nan if len(s) == 2 else f(s)), n_layers=4,
                      beam=2, max_layers=4)
    assert len(res.depths) == 2 and res.depths[1].beam == [] and len(res.best.layers) == 1
    with pytest.raises(NothingScoredError):
        beam_search(Recorder(lambda s: math.nan), n_layers=3, beam=2)


# ------------------------------------------------------------------------------------------
# objectives with a known answer


def test_finds_known_optimum_of_additive_objective():
    good = {3, 11, 14, 27}
    f = lambda s: sum(1.0 if l in good else -0.6 for l in s)  # noqa: E731
    for reference in (False, True):
        res = beam_search(Recorder(f), n_layers=34, beam=4, max_layers=8, reference=reference)
        if reference:
            # the references can never reach a set whose lowest id is above beam - 1
            assert res.best.layers[0] in range(4)
        else:
            assert res.best.layers == (3, 11, 14, 27) and res.best.score == pytest.approx(4.0)


def test_wide_beam_is_exhaustive():
    n, max_layers = 7, 4
    f = pseudo_random(7)
    res = beam_search(Recorder(f), n_layers=n, beam=math.comb(n, 3), max_layers=max_layers)
    subsets = [s for k in range(1, max_layers + 1) for s in itertools.combinations(range(n), k)]
    assert res.best.score == max(f(s) for s in subsets)
    assert len(res.candidates) == len(subsets)


def greedy(f, n_layers: int, max_layers: int) -> tuple[list[Subset], Subset, float]:
    """Plain greedy forward selection, written independently of the beam code."""
    path: list[Subset] = []
    cur: Subset = ()
    best, best_score = None, -math.inf
    for _ in range(max_layers):
        options = [tuple(sorted((*cur, c))) for c in range(n_layers) if c not in cur]
        if not options:
            break
        scores = [f(o) for o in options]
        cur = options[scores.index(max(scores))]
        path.append(cur)
        if max(scores) > best_score:
            best, best_score = cur, max(scores)
    return path, best, best_score


@pytest.mark.parametrize("seed", range(5))
def test_beam_width_one_equals_greedy(seed):
    f = pseudo_random(seed)
    res = beam_search(Recorder(f), n_layers=12, beam=1, max_layers=6)
    path, best, best_score = greedy(f, 12, 6)
    assert [d.beam[0].layers for d in res.depths] == path
    assert res.best.layers == best and res.best.score == best_score


# ------------------------------------------------------------------------------------------
# resume and chunking


@pytest.mark.parametrize("reference", [False, True])
def test_resume_from_any_prefix_rescores_nothing(reference):
    f = pseudo_random(3)
    full_fn = Recorder(f)
    full = beam_search(full_fn, n_layers=10, beam=3, max_layers=5, reference=reference)
    order = full_fn.scored
    assert len(order) == len(set(order))
    for k in (0, 1, 9, 10, 17, len(order) - 1, len(order)):
        done = {subset_key(s): f(s) for s in order[:k]}
        fn = Recorder(f)
        res = beam_search(
            fn, n_layers=10, beam=3, max_layers=5, reference=reference, done=done, chunk=4
        )
        assert not set(fn.scored) & {as_subset(d) for d in done}
        assert fn.scored == order[k:]
        assert (res.best.layers, res.best.score) == (full.best.layers, full.best.score)
        assert [[c.layers for c in d.beam] for d in res.depths] == [
            [c.layers for c in d.beam] for d in full.depths
        ]
        assert res.n_reused == k and res.n_scored == len(order) - k


def test_chunks_are_scored_and_reported_one_by_one():
    events: list[tuple[str, object]] = []
    f = pseudo_random(1)

    def score(subsets):
        events.append(("call", len(subsets)))
        return [f(s) for s in subsets]

    beam_search(
        score, n_layers=6, beam=2, max_layers=3, chunk=4,
        on_scored=lambda c: events.append(("stored", c.depth)),
        on_depth_start=lambda d, subs, todo: events.append(("depth", d)),
    )
    # every call holds at most 4 candidates of one depth, stored right after it returns
    depth, pending = None, 0
    for kind, value in events:
        if kind == "depth":
            assert pending == 0
            depth = value
        elif kind == "call":
            assert pending == 0 and 1 <= value <= 4
            pending = value
        else:
            assert value == depth
            pending -= 1
    assert pending == 0


def test_stops_when_nothing_is_left_and_validates():
    res = beam_search(Recorder(pseudo_random(0)), n_layers=3, beam=2, max_layers=8)
    assert max(len(c.layers) for c in res.candidates) == 3
    with pytest.raises(ValueError):
        beam_search(Recorder(pseudo_random(0)), n_layers=3, beam=0)
    with pytest.raises(ValueError, match="returned 1 scores"):
        beam_search(lambda s: [1.0], n_layers=3, beam=2)


# ------------------------------------------------------------------------------------------
# the stored search (Evaluator over synthetic features, Optuna study)


WORKER = textwrap.dedent(
    """
    import json, os, signal, sys
    import torch
    sys.path.insert(0, {root!r})
    from tests.test_beam import small_evaluator, RUN_KW
    from scotsearch.search.beam_study import run_beam

    torch.set_num_threads(1)
    storage, out, kill_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ev = small_evaluator()
    calls = [0]
    real_score = ev.score

    def score(subsets, **kw):
        if kill_after >= 0 and calls[0] == kill_after:
            # SIGKILL halfway through a chunk: no cleanup, no exception handlers run
            def progress(n):
                os.kill(os.getpid(), signal.SIGKILL)
            kw["progress"] = progress
        calls[0] += 1
        return real_score(subsets, **kw)

    ev.score = score
    o = run_beam(ev, study="s", storage=storage, **RUN_KW)
    json.dump({{"best": o.result.best.key, "pck": o.result.best.score,
               "scored": o.result.n_scored, "reused": o.result.n_reused}}, open(out, "w"))
    """
)

#: A beam search small enough for the unit suite: 5 layers, 2 pairs, cosine matching.
RUN_KW = dict(beam=2, max_layers=3, layers=range(5), chunk=3)


def small_evaluator():
    from scotsearch.config import MatchConfig
    from scotsearch.evaluate import Evaluator
    from scotsearch.presets import get_profile
    from scotsearch.testing import SyntheticSource
    from scotsearch.testing import synthetic_dataset

    ds = synthetic_dataset(2, image_hw=(32, 48), n_kps=5, seed=1)
    src = SyntheticSource("resnet50", informative=(1, 3), image_hw=(32, 48))
    return Evaluator(
        ds, src, match=MatchConfig(similarity="cos", rhm=False), profile=get_profile("scot")
    )


def stored(storage: str) -> list[str]:
    from scotsearch.study import completed_trials
    from scotsearch.study import open_study

    study = open_study("s", storage, create=False)
    return [t.user_attrs["layers"] for t in completed_trials(study)]


def run_worker(tmp_path: Path, storage: str, kill_after: int) -> subprocess.CompletedProcess:
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=str(ROOT)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(script), storage, str(tmp_path / "out.json"), str(kill_after)],
        env=env, capture_output=True, text=True, timeout=300,
    )


def test_sigkill_mid_depth_then_resume_equals_uninterrupted_run(tmp_path):
    from scotsearch.search.beam_study import run_beam

    # uninterrupted reference run (in this process)
    clean = f"sqlite:///{tmp_path}/clean.db"
    ref = run_beam(small_evaluator(), study="s", storage=clean, **RUN_KW)
    ref_keys = stored(clean)
    n_total = len(ref.result.candidates)
    assert sorted(ref_keys) == sorted(c.key for c in ref.result.candidates)
    assert len(ref.result.depths[1].candidates) > RUN_KW["chunk"]  # depth 1 has several chunks

    # killed during its 4th evaluator call: depth 0 (5 candidates) took 2 chunks, depth 1's
    # first chunk is stored, its second is lost
    crashed = f"sqlite:///{tmp_path}/crashed.db"
    proc = run_worker(tmp_path, crashed, kill_after=3)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    partial = stored(crashed)
    assert len(partial) == 5 + RUN_KW["chunk"]

    proc = run_worker(tmp_path, crashed, kill_after=-1)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    final = stored(crashed)
    assert len(final) == len(set(final)), "a candidate was stored twice"
    assert sorted(final) == sorted(ref_keys)
    assert out["best"] == ref.result.best.key and out["pck"] == ref.result.best.score
    assert out["scored"] == n_total - len(partial) and out["reused"] == len(partial)


def _out_of_memory(kind: str) -> BaseException:
    import torch

    if kind == "torch":  # CUDA's
        return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    if kind == "cpu":  # torch's CPU allocator
        return RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can't "
                            "allocate memory: you tried to allocate 21474836480 bytes.")
    return MemoryError()


@pytest.mark.parametrize("kind, race", [("torch", None), ("memory", None), ("cpu", 3.0)])
def test_out_of_memory_fails_one_chunk_and_the_search_goes_on(tmp_path, kind, race):
    from optuna.trial import TrialState

    from scotsearch.search.beam_study import run_beam
    from scotsearch.study import completed_trials
    from scotsearch.study import open_study

    kw = {**RUN_KW, "race": race, "race_block": 2}
    clean = f"sqlite:///{tmp_path}/clean.db"
    ref = run_beam(small_evaluator(), study="s", storage=clean, **kw)
    ref_scores = {c.key: c.score for c in ref.result.candidates}

    ev = small_evaluator()
    real_score = ev.score
    calls, lost = [0], []

    def score(subsets, **kw):
        calls[0] += 1
        if calls[0] == 2:  # depth 0's second chunk: layers 3 and 4 (3 is informative)
            lost.extend(subset_key(s) for s in subsets)
            raise _out_of_memory(kind)
        return real_score(subsets, **kw)

    ev.score = score
    url = f"sqlite:///{tmp_path}/oom.db"
    out = run_beam(ev, study="s", storage=url, **kw)
    assert lost == ["3", "4"] and out.failed == 2
    study = open_study("s", url, create=False)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert sorted(t.user_attrs["layers"] for t in failed) == lost
    assert all(t.user_attrs["error"].startswith("out of memory: ") for t in failed)
    assert all(t.value is None and t.params["L03"] + t.params["L04"] == 1 for t in failed)
    # never grown from: no beam holds them, no candidate has them as parent
    assert not {c.key for d in out.result.depths for c in d.beam} & set(lost)
    assert not {c.parent for c in out.result.candidates} & {(3,), (4,)}
    # every other candidate has the score an uninterrupted run gives it
    got = {t.user_attrs["layers"]: t.value for t in completed_trials(study)}
    assert set(got) == {c.key for c in out.result.candidates} - set(lost)
    check = small_evaluator()
    for key, value in got.items():
        want = ref_scores.get(key)
        if want is None:  # grown from a beam the lost chunk changed: score it alone
            want = float(check.score([as_subset(key)], pair_index=[0, 1]).mean()[0, 0])
        assert value == want, key

    # a re-run scores the failed candidates again and ends where the clean run ended
    again = run_beam(small_evaluator(), study="s", storage=url, **kw)
    assert again.failed == 0
    assert (again.best_layers, again.best_pck) == (ref.best_layers, ref.best_pck)
    final = {t.user_attrs["layers"]: t.value for t in completed_trials(study)}
    assert all(final[k] == ref_scores[k] for k in ref_scores)


def test_out_of_memory_on_every_first_candidate_is_one_error(tmp_path):
    from optuna.trial import TrialState

    from scotsearch.errors import ScotsearchError
    from scotsearch.search.beam_study import run_beam
    from scotsearch.study import open_study

    ev = small_evaluator()

    def score(subsets, **kw):
        raise MemoryError()

    ev.score = score
    url = f"sqlite:///{tmp_path}/s.db"
    with pytest.raises(ScotsearchError, match=r"none of the first depth's candidates could be "
                                              r"scored \(5 ran out of memory"):
        run_beam(ev, study="s", storage=url, **RUN_KW)
    study = open_study("s", url, create=False)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 5


def test_resume_refuses_other_settings_and_continues_deeper(tmp_path):
    import dataclasses

    from scotsearch.errors import ConfigError
    from scotsearch.search.beam_study import run_beam

    url = f"sqlite:///{tmp_path}/s.db"
    ev = small_evaluator()
    kw = {**RUN_KW, "max_layers": 2}
    first = run_beam(ev, study="s", storage=url, **kw)
    assert first.result.n_scored == len(first.result.candidates)

    other = small_evaluator()
    other.match = dataclasses.replace(other.match, exp1=2.0)
    msg = r"study 's' was started with other settings: match\.exp1: stored 1\.0, now 2\.0"
    with pytest.raises(ConfigError, match=msg):
        run_beam(other, study="s", storage=url, **kw)
    with pytest.raises(ConfigError, match="beam: stored 2, now 3"):
        run_beam(ev, study="s", storage=url, **{**kw, "beam": 3})

    # a deeper search continues: the first two depths come from the study
    deeper = run_beam(ev, study="s", storage=url, **{**kw, "max_layers": 3})
    assert deeper.result.n_reused == len(first.result.candidates)
    assert deeper.result.n_scored == len(deeper.result.depths[2].candidates)
    trial = deeper.study.get_trials(deepcopy=False)[-1]
    attrs = trial.user_attrs
    layers = [int(v) for v in attrs["layers"].split(",")]
    assert attrs["search"] == "beam" and attrs["depth"] == 2 and len(layers) == 3
    assert attrs["parent"] in {c.key for c in deeper.result.depths[1].beam}
    assert set(attrs) >= {"match", "pck", "per_category", "wall_time", "pooled_pck"}
    assert set(attrs["per_category"]) == {"a", "b"}
    assert trial.params == {f"L{i:02d}": int(i in layers) for i in range(17)}
    ident = deeper.study.user_attrs["identity"]
    assert ident["kind"] == "beam" and ident["algorithm"] == "fixed" and ident["compat"] == "scot"


def test_beam_command_end_to_end(tmp_path, monkeypatch, capsys):
    """`scotsearch beam` through the CLI, with the synthetic data in place of a benchmark."""
    # Imported here, not at the top: the SIGKILL test's worker imports this module as
    # tests.test_beam, where pytest's conftest is not importable.
    from conftest import use_synthetic_features

    from scotsearch import cli

    monkeypatch.setattr(cli, "COMMANDS", {"beam": "beam", "studies": "studies"})
    use_synthetic_features(monkeypatch, dataset=True)
    url = f"sqlite:///{tmp_path}/cli.db"
    argv = ["-q", "beam", "--backbone", "resnet50", "--layers", "0-3", "--beam", "2",
            "--max-layers", "2", "--sim", "cos", "--storage", url]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "study 'beam-synthetic-val-resnet50-cos-nn'" in out
    # 4 singles, then 2 x 3 children of the beam minus their one shared child
    assert "(9 scored now, 0 already stored)" in out
    assert cli.main(argv) == 0
    assert "(0 scored now, 9 already stored)" in capsys.readouterr().out

    # --compat scot: the references' algorithm, in a study of its own
    assert cli.main(argv + ["--compat", "scot"]) == 0
    out = capsys.readouterr().out
    assert "study 'beam-synthetic-val-resnet50-cos-nn-scot'" in out
    # [0], [1]; then [0,1], [0,2], [0,3] from [0] and [1,2], [1,3] from [1] (layers above)
    assert "(7 scored now, 0 already stored)" in out
    assert cli.main(argv + ["--eps", "0.1", "--study", "beam-synthetic-val-resnet50-cos-nn"]) == 2
    assert "use another --study name" in capsys.readouterr().err
    assert cli.main(argv + ["--alpha", "0.05,0.1"]) == 2
    assert cli.main(["studies", "--storage", url]) == 0
    assert "beam-synthetic-val-resnet50-cos-nn-scot" in capsys.readouterr().out
