"""Cooperating beam workers: several processes on one study give the single process's study.

Each worker is a real process running :func:`run_beam` on the small synthetic search of
``tests/test_beam.py``, slowed down so that the workers overlap; they wait for one go file,
so that they reach the storage together.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from scotsearch.study import CLAIM_PREFIX
from scotsearch.study import TEAM_SIZE_ENV
from scotsearch.study import WORKER_PREFIX
from scotsearch.study import unit_state


ROOT = Path(__file__).resolve().parents[1]

#: The team's search: 6 layers, at most 2 candidates per evaluator call.
TEAM_KW = dict(beam=2, max_layers=3, layers=range(6), chunk=2)

WORKER = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import torch
    sys.path.insert(0, {root!r})
    from tests.test_beam import small_evaluator
    from tests.test_beam_team import TEAM_KW
    from scotsearch.search.beam_study import run_beam

    torch.set_num_threads(1)
    storage, out, kill_at, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    ev = small_evaluator()
    calls = [0]
    real_score = ev.score

    def score(subsets, **kw):
        calls[0] += 1
        if calls[0] == kill_at:
            # SIGKILL halfway through a unit: nothing of it is stored
            def progress(n):
                os.kill(os.getpid(), signal.SIGKILL)
            kw["progress"] = progress
        time.sleep(0.1)  # so that the workers' batches overlap
        scores = real_score(subsets, **kw)
        with open(out + ".calls", "a") as f:  # what this worker scored (a finished call)
            f.write(json.dumps([[list(s) for s in subsets], kw.get("pair_index")]) + "\\n")
        return scores

    ev.score = score
    open(out + ".ready", "w").close()
    while not os.path.exists(go):
        time.sleep(0.01)
    o = run_beam(ev, study="s", storage=storage, **TEAM_KW)
    json.dump({{"best": o.result.best.key, "pck": o.result.best.score,
               "here": o.scored_here}}, open(out, "w"))
    """
)


def start_team(tmp_path: Path, storage: str, kill_at: list[int],
               launched: bool = False) -> list[subprocess.Popen]:
    """Start one worker per ``kill_at`` entry; ``launched``: told how many start together,
    as ``--workers`` tells its workers (else each is a worker started by hand)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=str(ROOT)))
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if launched:
        env[TEAM_SIZE_ENV] = str(len(kill_at))
    procs = [
        subprocess.Popen([sys.executable, str(script), storage, str(tmp_path / f"out{k}.json"),
                          str(kill), str(go)], env=env, stdout=subprocess.DEVNULL,
                         stderr=(tmp_path / f"err{k}.txt").open("w"))
        for k, kill in enumerate(kill_at)
    ]
    # every worker has imported torch and built its evaluator: go
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"out{k}.json.ready").exists() for k in range(len(procs))):
        assert time.monotonic() < deadline, "the workers did not start"
        for k, p in enumerate(procs):
            assert p.poll() is None, (tmp_path / f"err{k}.txt").read_text()
        time.sleep(0.05)
    go.touch()
    return procs


def trials(storage: str) -> tuple[dict[str, float], list[str], list[str]]:
    """The study's COMPLETE beam trials (layers -> value), their layer keys with repeats, and
    the keys of its FAIL trials."""
    from optuna.trial import TrialState

    from scotsearch.study import open_study

    study = open_study("s", storage, create=False)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    failed = [t.user_attrs.get("layers", "?") for t in study.trials
              if t.state == TrialState.FAIL]
    keys = [t.user_attrs["layers"] for t in done]
    return {t.user_attrs["layers"]: t.value for t in done}, keys, failed


def single_process(tmp_path: Path) -> tuple[dict[str, float], object]:
    from scotsearch.search.beam_study import run_beam
    from tests.test_beam import small_evaluator

    url = f"sqlite:///{tmp_path}/single.db"
    ref = run_beam(small_evaluator(), study="s", storage=url, **TEAM_KW)
    return trials(url)[0], ref


def check_team(tmp_path: Path, storage: str, kill_at: list[int],
               launched: bool = False) -> list[dict]:
    """Run a team; check its study is the single process's and each (candidate, pair) was
    scored once. Returns the finished workers' outputs, each with its ``calls``."""
    want, ref = single_process(tmp_path)
    procs = start_team(tmp_path, storage, kill_at, launched)
    # reap every worker as it ends (a killed one left unreaped would look alive)
    deadline = time.monotonic() + 300
    while any(p.poll() is None for p in procs):
        assert time.monotonic() < deadline, "the team did not finish"
        time.sleep(0.05)
    outs = []
    for k, (p, kill) in enumerate(zip(procs, kill_at)):
        err = (tmp_path / f"err{k}.txt").read_text()
        if kill > 0:
            assert p.returncode == -signal.SIGKILL, err
            continue
        assert p.returncode == 0, err
        outs.append(json.loads((tmp_path / f"out{k}.json").read_text()))
    got, keys, failed = trials(storage)
    assert len(keys) == len(set(keys)), "a candidate was stored twice"
    # Every candidate was scored on every pair by the team, each (candidate, pair) once
    # (a killed worker's unfinished call aside): the units partition the work.
    done: list[tuple[str, int]] = []
    calls = []
    for k in range(len(procs)):
        path = tmp_path / f"out{k}.json.calls"
        calls.append([json.loads(x) for x in path.read_text().splitlines()]
                     if path.exists() else [])
        for subsets, pair_index in calls[-1]:
            done += [(",".join(map(str, s)), p) for s in subsets for p in pair_index]
    assert len(done) == len(set(done)), "a candidate was scored twice on a pair"
    n_pairs = int(ref.study.user_attrs["identity"]["n_pairs"])
    assert sorted(done) == sorted((key, p) for key in got for p in range(n_pairs))
    assert not failed
    assert got == want  # the same candidates with the same scores, to the last bit
    for o in outs:  # every worker derived the single process's result
        assert (o["best"], o["pck"]) == (ref.result.best.key, ref.result.best.score)
    finished = [k for k, kill in enumerate(kill_at) if kill <= 0]
    return [{**o, "calls": calls[k]} for k, o in zip(finished, outs)]


def test_three_workers_on_sqlite_give_the_single_process_study(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/team.db"
    # launched together, so that every depth is split between all three, however slowly
    # the machine starts them (workers started by hand: the journal and PostgreSQL tests)
    outs = check_team(tmp_path, storage, [-1, -1, -1], launched=True)
    here = [o["here"] for o in outs]
    n_total = len(trials(storage)[0])
    assert sum(here) == n_total, here  # each candidate stored by exactly one worker
    assert sum(h > 0 for h in here) >= 2, here  # and the work was shared
    # Started together, the workers split the pairs: two of them own a pair each (the
    # split has 2 pairs) and score it for every candidate; the third, left without a
    # block, helps where units are free.
    one_pair = [o for o in outs if o["calls"] and all(len(p) == 1 for _, p in o["calls"])]
    assert len(one_pair) >= 2, [o["calls"] for o in outs]


def test_three_workers_on_a_journal_file_one_killed(tmp_path: Path) -> None:
    storage = f"journal:{tmp_path}/team.log"
    # the second worker dies during its third evaluator call; its claims are taken over at
    # once (its process is gone) and the study ends as the single process's
    outs = check_team(tmp_path, storage, [-1, 3, -1])
    assert len(outs) == 2


def test_two_workers_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    outs = check_team(tmp_path, postgres_url, [-1, -1])
    assert sum(o["here"] for o in outs) == len(trials(postgres_url)[0])


def test_claims_of_an_earlier_epoch_or_a_dead_worker_are_free() -> None:
    live = {"a": {}}
    assert unit_state(None, epoch="e", live=live, me="b") == "free"
    assert unit_state({"token": "a", "epoch": "e"}, epoch="e", live=live, me="b") == "taken"
    assert unit_state({"token": "b", "epoch": "e"}, epoch="e", live=live, me="b") == "mine"
    assert unit_state({"token": "c", "epoch": "e"}, epoch="e", live=live, me="b") == "free"
    assert unit_state({"token": "a", "epoch": "e", "done": True}, epoch="f", live=live,
                      me="b") == "free"
    assert CLAIM_PREFIX != WORKER_PREFIX


def test_studies_lists_the_live_workers(tmp_path: Path, capsys) -> None:
    import socket

    import optuna

    from scotsearch import cli
    from scotsearch.study import WORKER_ATTR
    from scotsearch.study import BeamTeam
    from scotsearch.study import open_storage
    from scotsearch.study import open_study

    url = f"sqlite:///{tmp_path}/s.db"
    st = open_storage(url)
    open_study("b", st)
    sid = st.get_study_id_from_name("b")
    # a dead worker (its process on this host is gone) and a stale one are not listed
    st.set_study_system_attr(sid, WORKER_PREFIX + "dead", {
        "host": socket.gethostname(), "pid": 2**22 + 12345, "beat": time.time()})
    st.set_study_system_attr(sid, WORKER_PREFIX + "stale", {
        "host": "elsewhere", "pid": 1, "beat": time.time() - 3600})
    tune = open_study("t", st)
    trial = tune.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    st.set_trial_system_attr(trial._trial_id, WORKER_ATTR,
                             {"host": socket.gethostname(), "pid": os.getpid()})
    with BeamTeam(st, "b") as team:
        team.unit = "d0u1-abc"
        team.beat()
        assert cli.main(["studies", "--storage", url]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].split()[-1] == "workers"
    live = [re.sub(r"heartbeat \d s ago", "heartbeat N s ago", x)
            for x in lines[lines.index("live workers:") + 1:]]
    me = f"pid {os.getpid()} on {socket.gethostname()}, last heartbeat N s ago"
    assert sorted(live) == sorted([f"  b: {me}, d0u1-abc, 0 scored", f"  t: {me}, trial 0"])
    # gone: the team left, the trial ended
    tune.tell(trial, 0.5)
    assert cli.main(["studies", "--storage", url]) == 0
    assert "live workers:" not in capsys.readouterr().out


def test_a_candidates_counts_do_not_depend_on_the_call_that_scores_it() -> None:
    """What lets a team split a depth by candidates and by blocks of pairs and still store
    the single process's scores: per engine, each (candidate, pair) count is the same, to
    the bit, whichever candidates and pairs share the evaluator call."""
    import numpy as np

    from scotsearch.config import MatchConfig
    from scotsearch.evaluate import Evaluator
    from scotsearch.metrics import mean_pck
    from scotsearch.presets import get_profile
    from scotsearch.testing import SyntheticSource
    from scotsearch.testing import synthetic_dataset

    ds = synthetic_dataset(5, seed=3, image_hw=(64, 80))
    src = SyntheticSource(informative=(0, 2, 5), image_hw=(64, 80))
    # a beam's depth: children of two parents, and singletons
    subsets = [(0, 2), (0, 2, 5), (2, 5), (0, 2, 7), (4,), (2, 5, 9)]
    for engine in ("eager", "fused"):
        ev = Evaluator(ds, src, match=MatchConfig.from_variant("ot-rhm-stair"),
                       profile=get_profile("scot"), alphas=(0.1,), engine=engine)
        whole = ev.score(subsets)
        assert whole.n_correct.sum() > 0
        # two blocks of interleaved pairs, each scored with the candidates cut otherwise
        got = np.zeros_like(whole.n_correct)
        for pos, cut in (([0, 2, 4], 4), ([1, 3], 1)):
            for c0 in range(0, len(subsets), cut):
                part = ev.score(subsets[c0:c0 + cut], pair_index=pos)
                got[c0:c0 + cut, :, pos] = part.n_correct
        np.testing.assert_array_equal(got, whole.n_correct, err_msg=engine)
        # and the assembled row's mean is the whole call's, to the bit
        for k in range(len(subsets)):
            assert mean_pck(got[k, 0] / whole.n_kps) == whole.mean()[k, 0]


def test_the_first_worker_at_a_depth_splits_its_pairs_for_the_team(tmp_path: Path) -> None:
    from scotsearch.study import BeamTeam
    from scotsearch.study import open_storage
    from scotsearch.study import open_study

    st = open_storage(f"sqlite:///{tmp_path}/s.db")
    open_study("s", st)
    a, b = BeamTeam(st, "s"), BeamTeam(st, "s")
    a.join()
    b.join()
    try:
        assert a.epoch == b.epoch
        owners = a.split(0, 10)
        assert owners == sorted([a.token, b.token])  # one block per live worker
        assert b.split(0, 10) == owners  # read back, not split again
        assert a.split(1, 1) == [min(a.token, b.token)]  # never more blocks than pairs
        c = BeamTeam(st, "s")
        c.join()
        try:
            assert c.split(0, 10) == owners  # a late joiner keeps the depth's split
            assert c.split(2, 10) == sorted([a.token, b.token, c.token])  # and is in the next
        finally:
            c.leave()
    finally:
        a.leave()
        b.leave()
    # A new team (a re-run) has a new epoch: the old splits are not its own.
    d = BeamTeam(st, "s")
    d.join()
    try:
        assert d.epoch != a.epoch
        assert d.split(0, 10) == [d.token]
    finally:
        d.leave()
