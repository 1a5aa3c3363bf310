"""``--workers N``: N joblib worker processes on one study: exactly --trials tune trials, and
the single process's beam study."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import optuna

from scotsearch import cli
from scotsearch.commands import _worker_process as wp
from scotsearch.search.tune import COUNTED
from scotsearch.study import WORKER_ATTR
from scotsearch.study import WORKER_PREFIX


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
    # this process was worker 0 of the team, and both workers assembled candidates
    storage = optuna.storages.RDBStorage(url)
    attrs = storage.get_study_system_attrs(storage.get_study_id_from_name("two"))
    team = [r for k, r in attrs.items() if k.startswith(WORKER_PREFIX)]
    assert len(team) == 2 and all(r["left"] and r["scored"] > 0 for r in team)
    assert os.getpid() in {r["pid"] for r in team}
    assert len({r["pid"] for r in team}) == 2


def test_race_with_workers_is_refused(tmp_path: Path, capsys) -> None:
    rc = cli.main(["beam", "--study", "r", "--race", "3", "--workers", "2",
                   "--storage", f"sqlite:///{tmp_path}/s.db"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--race scores a depth in one process" in err[0]


def test_a_bad_input_with_workers_is_one_line_and_ends_the_workers(tmp_path: Path,
                                                                      capsys) -> None:
    # The other workers start before the data is read; a missing benchmark folder must
    # still be one line, and none of them may be left running.
    rc = cli.main(["beam", "--workers", "2", "--dataset", "spair", "--datapath",
                   str(tmp_path / "nowhere"), "--storage", f"sqlite:///{tmp_path}/s.db"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "nowhere" in err[0], err
    deadline = time.monotonic() + 10
    while _children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _children() == []
    assert not list(Path(tempfile.gettempdir()).glob(f"scotsearch-gate-*{os.getpid()}*"))


def _children(parent: int | None = None) -> list[int]:
    # the live (not zombie) loky worker processes of this process (or of ``parent``), from
    # /proc (loky's resource trackers, also children, live as long as their parent)
    out = []
    try:
        tasks = list(Path(f"/proc/{parent or os.getpid()}/task").iterdir())
    except OSError:
        return out  # the parent is gone
    for task in tasks:
        try:
            pids = (task / "children").read_text().split()
        except OSError:
            continue  # a thread that ended meanwhile
        for pid in pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                cmd = Path(f"/proc/{pid}/cmdline").read_text()
            except OSError:
                continue  # gone meanwhile
            if "popen_loky" in cmd and stat.rsplit(")", 1)[1].split()[0] != "Z":
                out.append(int(pid))
    return out


def test_a_gate_lets_its_workers_through_or_sends_them_home() -> None:
    import threading

    gate = wp.Gate()
    try:
        threading.Timer(0.2, gate.open).start()
        t0 = time.monotonic()
        assert wp.wait_gate(gate.path, gate.parent) is True
        assert time.monotonic() - t0 >= 0.19  # it waited for the opening
    finally:
        gate.remove()
    gate = wp.Gate()
    threading.Timer(0.1, gate.close).start()
    assert wp.wait_gate(gate.path, gate.parent) is False
    gate.remove()
    assert wp.wait_gate(gate.path, gate.parent) is False  # removed: the parent is done
    gate = wp.Gate()
    try:
        # a parent that died without a word: a pid no process has
        dead = max(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()) + 10_000
        assert wp.wait_gate(gate.path, dead) is False
    finally:
        gate.remove()


def test_worker_zero_shares_the_threads_and_gives_them_back() -> None:
    import numba
    import torch

    before = (torch.get_num_threads(), numba.get_num_threads())
    env = os.environ.get("NUMBA_NUM_THREADS")
    with wp.thread_share(1):
        assert (torch.get_num_threads(), numba.get_num_threads()) == (1, 1)
    assert (torch.get_num_threads(), numba.get_num_threads()) == before
    assert os.environ.get("NUMBA_NUM_THREADS") == env


def test_the_command_line_is_read_without_torch() -> None:
    # The other workers of `beam --workers N` start before this process imports torch (and
    # `--help` answers at once): building the parser must not import it.
    import subprocess
    import sys

    code = ("import sys; from scotsearch import cli; cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'pandas', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_ctrl_c_stops_every_worker_and_the_study_resumes(tmp_path: Path) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the parent (worker 0) and the
    # loky worker it started. Both must end, the parent with one line and status 130, and
    # the same command must then finish the study with the single process's scores.
    import signal
    import subprocess
    import sys

    from optuna.trial import TrialState

    url = f"sqlite:///{tmp_path}/s.db"
    common = ["beam", "--layers", "0-15", "--beam", "2", "--max-layers", "3", "--chunk", "2",
              "--backbone", "resnet50", "--weights", "random", "--image-side", "96",
              "--storage", url, "--max-pairs", "6", "--cache-dir", str(tmp_path / "cache")]
    assert cli.main(["-q", *common, "--study", "one"]) == 0  # also fills the cache
    cmd = [sys.executable, "-m", "scotsearch", "-q", *common, "--study", "two", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        kids: set[int] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            kids |= set(_children(proc.pid))
            if kids and _stored(url, "two") >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None and kids, (
            f"not interruptible: exit {proc.poll()}, workers {kids}, {_stored(url, 'two')} "
            "trials stored")
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "scotsearch: interrupted" in err, err
    deadline = time.monotonic() + 10
    while any(_running(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(k) for k in kids), [k for k in kids if _running(k)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "searched by 2 workers" in done.stdout

    def trials(name: str) -> dict[str, float]:
        study = optuna.load_study(study_name=name, storage=url)
        return {t.user_attrs["layers"]: t.value for t in study.trials
                if t.state == TrialState.COMPLETE}

    assert trials("two") == trials("one")


def _stored(url: str, name: str) -> int:
    try:
        return len(optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False))
    except Exception:  # noqa: BLE001 - the database or the study is not created yet
        return 0


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_failed_team_worker_fails_the_command_with_its_status(tmp_path: Path,
                                                                   capfd) -> None:
    # The other worker is given a command line it refuses (this process would have refused
    # it first; here the worker is started directly): its own error line goes to standard
    # error, and waiting for it reports its status.
    import pytest

    from scotsearch.commands import _workers
    from scotsearch.errors import ScotsearchError

    argv = ["beam", "--beam", "0", "--storage", f"sqlite:///{tmp_path}/s.db"]
    helpers = _workers.TeamHelpers(argv, 2, [])
    helpers.go()
    with pytest.raises(ScotsearchError, match=r"1 of the 1 other worker processes failed "
                                              r"\(exit status 2\)"):
        helpers.wait()
    assert not Path(helpers.gate.path).exists()
    assert "--beam must be >= 1, got 0" in capfd.readouterr().err
