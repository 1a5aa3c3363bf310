"""The study database: storage URLs, SQLite settings, journal files, identity, trial format."""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages import RDBStorage
from optuna.storages import RetryHeartbeatStaleTrialCallback
from sqlalchemy import text

from scotsearch import study as st
from scotsearch.errors import ConfigError
from scotsearch.errors import ScotsearchError


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_env_storage(monkeypatch):
    for k in st.STORAGE_ENV:
        monkeypatch.delenv(k, raising=False)


def storage_urls(tmp_path: Path) -> dict[str, str]:
    return {
        "sqlite": f"sqlite:///{tmp_path}/db/s.db",
        "journal": f"journal:{tmp_path}/j/s.journal",
        "log": f"{tmp_path}/log/s.log",
        "jsonl": f"{tmp_path}/s.jsonl",
    }


def test_storage_url_defaults_and_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert st.storage_url(None) == st.DEFAULT_STORAGE == "sqlite:///studies/scotsearch.db"
    assert (tmp_path / "studies").is_dir()
    monkeypatch.setenv("OPTUNA_STORAGE", "sqlite:///o/o.db")
    assert st.storage_url(None) == "sqlite:///o/o.db"
    monkeypatch.setenv("SCOTSEARCH_STORAGE", "sqlite:///s/s.db")
    assert st.storage_url(None) == "sqlite:///s/s.db"
    assert (tmp_path / "s").is_dir()
    assert st.storage_url("sqlite:///given.db") == "sqlite:///given.db"
    assert st.storage_url("x/plain.db") == "sqlite:///x/plain.db"
    assert (tmp_path / "x").is_dir()
    assert st.storage_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert st.resolve_storage("y/plain.db") == "sqlite:///y/plain.db"
    assert not (tmp_path / "y").exists()


@pytest.mark.parametrize("mode", ["sqlite", "journal", "log", "jsonl"])
def test_trials_round_trip_through_each_storage(tmp_path, mode):
    url = storage_urls(tmp_path)[mode]
    storage = st.open_storage(url)
    assert isinstance(storage, RDBStorage if mode == "sqlite" else JournalStorage)
    study = st.open_study("s", storage)
    attrs = {"search": "beam", "layers": "0,19,27", "pck": np.float32(50.5), "depth": np.int64(2),
             "per_category": {"cat": np.float64(1.25)}, "parent": "0,19"}
    st.add_layer_trial(
        study, layers=(0, 19, 27), n_layers=34, value=np.float64(50.5), user_attrs=attrs
    )

    again = st.open_study("s", st.open_storage(url))  # a fresh connection sees the trial
    (t,) = st.completed_trials(again, search="beam")
    assert t.value == 50.5
    assert t.params == {f"L{i:02d}": int(i in (0, 19, 27)) for i in range(34)}
    assert t.user_attrs == {"search": "beam", "layers": "0,19,27", "pck": 50.5, "depth": 2,
                            "per_category": {"cat": 1.25}, "parent": "0,19"}
    assert st.completed_trials(again, search="tune") == []
    df = again.trials_dataframe()
    assert "params_L33" in df and "user_attrs_layers" in df


def test_sqlite_uses_wal_and_waits_for_locks(tmp_path):
    url = f"sqlite:///{tmp_path}/w.db"
    storage = st.open_storage(url)
    assert storage.engine.url.database == f"{tmp_path}/w.db"
    with storage.engine.connect() as con:
        assert con.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert con.execute(text("PRAGMA busy_timeout")).scalar() == 60000
    assert sqlite3.connect(tmp_path / "w.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


WRITER = """
import sys
from scotsearch import study as st
s = st.open_study("s", st.open_storage(sys.argv[1]))
for i in range(15):
    st.add_layer_trial(s, layers=(int(sys.argv[2]), i + 10), n_layers=34, value=float(i),
                       user_attrs={"search": "beam", "layers": f"{sys.argv[2]},{i + 10}"})
"""


def test_two_processes_write_one_sqlite_study(tmp_path):
    url = f"sqlite:///{tmp_path}/c.db"
    st.open_study("s", url)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, str(k)], env=env,
                         stderr=subprocess.PIPE, text=True)
        for k in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert len(st.completed_trials(st.open_study("s", url))) == 30


def test_heartbeat_settings(tmp_path):
    storage = st.open_storage(f"sqlite:///{tmp_path}/h.db", heartbeat=True)
    assert storage.heartbeat_interval == 10 and storage.grace_period == 30
    assert isinstance(storage.heartbeat_stale_trial_callback, RetryHeartbeatStaleTrialCallback)
    assert storage.heartbeat_stale_trial_callback._max_retry == 3
    plain = st.open_storage(f"sqlite:///{tmp_path}/h.db")
    assert plain.heartbeat_interval is None


def test_old_schema_asks_for_optuna_storage_upgrade(tmp_path):
    path = tmp_path / "old.db"
    st.open_study("s", f"sqlite:///{path}")
    con = sqlite3.connect(path)
    con.execute("UPDATE alembic_version SET version_num = 'v1.3.0.a'")
    con.commit()
    con.close()
    with pytest.raises(ScotsearchError, match=r"optuna storage upgrade --storage sqlite:///"):
        st.open_storage(f"sqlite:///{path}")


def test_bad_url_is_a_one_line_error(tmp_path):
    with pytest.raises(ScotsearchError, match="cannot open study storage"):
        st.open_storage("nosuchdialect://x/y")


def test_missing_storage_and_study(tmp_path):
    url = f"sqlite:///{tmp_path}/none/x.db"
    assert st.list_studies(url) == []
    with pytest.raises(ScotsearchError, match="no study storage"):
        st.open_study("s", url, create=False)
    assert not (tmp_path / "none").exists()
    st.open_study("a", url)
    with pytest.raises(ScotsearchError, match=r"no study named 'b' .*studies there: a"):
        st.open_study("b", url, create=False)


def test_check_identity_stores_then_refuses_changes():
    study = optuna.create_study(direction="maximize", study_name="exp")
    ident = {"kind": "beam", "dataset": "spair", "alpha": np.float32(0.1).item(),
             "beta": (0.0, 0.4), "match": {"eps": 0.05, "exp2": 1.0}}
    st.check_identity(study, ident)
    assert study.user_attrs["identity"]["beta"] == [0.0, 0.4]
    st.check_identity(study, dict(ident))  # same settings: fine, tuples equal lists
    changed = {**ident, "dataset": "pfpascal", "match": {"eps": 0.1, "exp2": 1.0}, "new": 1}
    with pytest.raises(ConfigError) as err:
        st.check_identity(study, changed)
    assert str(err.value) == (
        "study 'exp' was started with other settings: dataset: stored spair, now pfpascal; "
        "match.eps: stored 0.05, now 0.1; new: stored (none), now 1; use another --study name"
    )


def test_plain_rejects_objects_and_converts_numpy():
    assert st.plain({"a": np.float32(0.5), "b": np.arange(2), "c": (1, 2), "p": Path("x")}) == {
        "a": 0.5, "b": [0, 1], "c": [1, 2], "p": "x"}
    with pytest.raises(TypeError):
        st.plain({"x": object()})


def test_environment_names_versions_and_device():
    env = st.environment()
    assert set(env) == {"scotsearch", "torch", "torchvision", "optuna", "device"}
    assert env["optuna"] == optuna.__version__
    assert all(isinstance(v, str) for v in env.values())


def test_studies_command_lists_best(tmp_path, capsys):
    from scotsearch.commands import studies

    url = f"sqlite:///{tmp_path}/l.db"
    p = argparse.ArgumentParser()
    studies.add_arguments(p)
    assert studies.run(p.parse_args(["--storage", url])) == 0
    assert "no studies" in capsys.readouterr().out
    s = st.open_study("beam-x", url)
    ident = {"kind": "beam", "dataset": "demo", "split": "val", "backbone": "resnet101"}
    st.check_identity(s, ident)
    for layers, v in (((0, 2), 40.0), ((0, 5), 61.25)):
        st.add_layer_trial(s, layers=layers, n_layers=34, value=v,
                           user_attrs={"layers": ",".join(map(str, layers))})
    st.open_study("empty", url)
    assert studies.run(p.parse_args(["--storage", url])) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["study", "kind", "data", "trials", "best", "PCK", "best", "layers",
                              "workers"]
    assert out[2].split() == ["beam-x", "beam", "demo/val/resnet101", "2", "61.25", "0,5", "-"]
    assert out[3].split() == ["empty", "-", "-", "0", "-", "-", "-"]


def test_best_trial_skips_pruned_and_prefers_fewer_layers():
    study = optuna.create_study(direction="maximize")
    assert st.best_trial(study) is None
    for layers, v, extra in (((0, 1, 2), 70.0, {}), ((3,), 95.0, {"pruned": True}),
                             ((4, 5), 70.0, {}), ((6,), 70.0, {}), ((7,), 70.0, {})):
        attrs = {"layers": ",".join(map(str, layers)), **extra}
        st.add_layer_trial(study, layers=layers, n_layers=17, value=v, user_attrs=attrs)
    assert st.best_trial(study).user_attrs["layers"] == "6"
