"""``--workers N``: N joblib worker processes on one study: exactly --trials tune trials, and
the single process's beam study."""

from __future__ import annotations

import os
from pathlib import Path

import optuna

from scotsearch import cli
from scotsearch.search.tune import COUNTED
from scotsearch.study import WORKER_ATTR


def test_two_workers_give_exactly_the_trials_asked_for(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    argv = ["tune", "--study", "w", "--trials", "6", "--workers", "2", "--layers", "2,3",
            "--backbone", "resnet50", "--weights", "random", "--image-side", "64",
            "--storage", url, "--max-pairs", "4", "--pruner", "none",
            "--cache-dir", str(tmp_path / "cache")]
    assert cli.main(argv) == 0
    assert "6/6 trials by 2 workers" in capsys.readouterr().out
    study = optuna.load_study(study_name="w", storage=url)
    counted = study.get_trials(deepcopy=False, states=COUNTED)
    assert len(counted) == 6
    # every trial ran in a worker process, none in this one
    pids = {t.system_attrs[WORKER_ATTR]["pid"] for t in counted}
    assert pids and os.getpid() not in pids
    # a rerun with the same total adds nothing
    assert cli.main(argv) == 0
    assert len(optuna.load_study(study_name="w", storage=url).get_trials(
        deepcopy=False, states=COUNTED)) == 6


def test_devices_without_workers_is_refused(tmp_path: Path, capsys) -> None:
    rc = cli.main(["tune", "--study", "w", "--trials", "2", "--devices", "cpu",
                   "--storage", f"sqlite:///{tmp_path}/s.db"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--devices goes with --workers" in err[0]


def test_beam_with_two_workers_equals_one_process(tmp_path: Path, capsys) -> None:
    from optuna.trial import TrialState

    url = f"sqlite:///{tmp_path}/s.db"
    common = ["beam", "--layers", "0-3", "--beam", "2", "--max-layers", "2", "--chunk", "2",
              "--backbone", "resnet50", "--weights", "random", "--image-side", "64",
              "--storage", url, "--max-pairs", "4", "--cache-dir", str(tmp_path / "cache")]
    assert cli.main([*common, "--study", "one"]) == 0
    one = capsys.readouterr().out.splitlines()[0]
    assert cli.main([*common, "--study", "two", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == one and "searched by 2 workers" in out

    def trials(name: str) -> dict[str, float]:
        study = optuna.load_study(study_name=name, storage=url)
        done = [t for t in study.trials if t.state == TrialState.COMPLETE]
        assert len({t.user_attrs["layers"] for t in done}) == len(done)  # none twice
        return {t.user_attrs["layers"]: t.value for t in done}

    assert trials("two") == trials("one")


def test_race_with_workers_is_refused(tmp_path: Path, capsys) -> None:
    rc = cli.main(["beam", "--study", "r", "--race", "3", "--workers", "2",
                   "--storage", f"sqlite:///{tmp_path}/s.db"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--race scores a depth in one process" in err[0]
