"""``tune --workers N``: N joblib worker processes on one study, exactly --trials trials."""

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
