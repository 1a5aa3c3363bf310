"""``--dask-scheduler``: beam and tune workers as tasks on a dask.distributed cluster.

A ``LocalCluster`` of two worker processes stands in for the cluster; the features come from
one cache folder the parent fills before the tasks start, as on a shared file system.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from scotsearch import cli
from scotsearch.search.tune import COUNTED


pytest.importorskip("distributed", reason="dask.distributed is not installed")

#: The demo with random weights at a tiny side: a real network, seconds per search.
DEMO = ["--backbone", "resnet50", "--weights", "random", "--image-side", "64",
        "--max-pairs", "4"]


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def beam_trials(url: str, name: str) -> dict[str, float]:
    study = optuna.load_study(study_name=name, storage=url)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    keys = [t.user_attrs["layers"] for t in done]
    assert len(keys) == len(set(keys)), "a candidate was scored twice"
    return {t.user_attrs["layers"]: t.value for t in done}


def test_beam_on_a_dask_cluster_equals_one_process(tmp_path: Path, scheduler: str,
                                                   capsys) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    common = ["beam", "--layers", "0-3", "--beam", "2", "--max-layers", "2", "--chunk", "2",
              "--storage", url, "--cache-dir", str(tmp_path / "cache"), *DEMO]
    assert cli.main([*common, "--study", "one"]) == 0
    one = capsys.readouterr().out
    assert cli.main([*common, "--study", "dask", "--dask-scheduler", scheduler]) == 0
    out = capsys.readouterr().out
    assert "searched by 2 workers" in out
    assert out.splitlines()[0] == one.splitlines()[0]  # the same best line
    assert beam_trials(url, "dask") == beam_trials(url, "one")


def test_tune_on_a_dask_cluster_gives_exactly_the_trials(tmp_path: Path, scheduler: str,
                                                         capsys) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    argv = ["tune", "--study", "t", "--trials", "4", "--layers", "2,3", "--storage", url,
            "--pruner", "none", "--sampler", "random", "--cache-dir", str(tmp_path / "cache"),
            *DEMO]
    assert cli.main([*argv, "--dask-scheduler", scheduler]) == 0
    assert "4/4 trials by 2 workers" in capsys.readouterr().out
    study = optuna.load_study(study_name="t", storage=url)
    assert len(study.get_trials(deepcopy=False, states=COUNTED)) == 4
    # The cluster's best configuration scores the same when this process evaluates it.
    csv = tmp_path / "best.csv"
    assert cli.main(["export", "--study", "t", "--storage", url, "-o", str(csv)]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", "--config", str(csv), "--dataset", "demo", "--split", "val",
                     "--cache-dir", str(tmp_path / "cache"), *DEMO]) == 0
    line = capsys.readouterr().out
    assert f"{study.best_value:.2f}" in line, (study.best_value, line)


def test_an_unreachable_scheduler_is_one_line(tmp_path: Path, capsys) -> None:
    rc = cli.main(["beam", "--study", "x", "--storage", f"sqlite:///{tmp_path}/s.db",
                   "--layers", "0,1", "--cache-dir", str(tmp_path / "cache"), *DEMO,
                   "--dask-scheduler", "tcp://127.0.0.1:1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in err[-1]
