"""Crashed workers: trial heartbeats and the sweep that fails and re-queues silent trials.

RDB storages opened with a heartbeat (``open_storage(heartbeat=True)``) let Optuna fail a
trial whose worker went silent and re-queue its parameters
(``RetryHeartbeatStaleTrialCallback``). Journal storages have no heartbeat, so scotsearch
keeps its own: the running trial refreshes a system attribute every few seconds
(:class:`Heartbeat`), and every worker sweeps, at start and before each trial, RUNNING trials
silent for ``stale_after`` seconds: FAIL, then re-queue with the same parameters (the same
Optuna callback; :func:`sweep_stale_trials`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.storages import InMemoryStorage
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from scotsearch._io import pid_alive


log = logging.getLogger(__name__)

#: System attribute a running trial refreshes on storages without Optuna's heartbeat.
HEARTBEAT_ATTR = "scotsearch:heartbeat"
#: System attribute naming the process (host, pid) that runs a trial.
WORKER_ATTR = "scotsearch:worker"


def _has_optuna_heartbeat(storage: BaseStorage) -> bool:
    get = getattr(storage, "get_heartbeat_interval", None)
    return callable(get) and get() is not None


def needs_own_heartbeat(storage: BaseStorage) -> bool:
    """Whether trials in ``storage`` must beat themselves (:class:`Heartbeat`).

    True for persistent storages without Optuna's heartbeat (journal files, RDB storages
    opened without it); in-memory storages cannot outlive a crash.
    """
    return not isinstance(storage, InMemoryStorage) and not _has_optuna_heartbeat(storage)


class Heartbeat:
    """Refreshes :data:`HEARTBEAT_ATTR` of a running trial from a daemon thread.

    Use as a context manager around the trial's work: it beats once on entry, then every
    ``interval`` seconds until the block ends (or the trial can no longer be written).

    Args:
        storage: the trial's storage.
        trial_id: the storage's id of the trial (``trial._trial_id``, not its number).
        interval: seconds between beats.
    """

    def __init__(self, storage: BaseStorage, trial_id: int, interval: float) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scotsearch-heartbeat", daemon=True)

    def _beat(self) -> bool:
        try:
            self._storage.set_trial_system_attr(self._trial_id, HEARTBEAT_ATTR, time.time())
            return True
        except Exception:  # noqa: BLE001 - a finished (or swept) trial simply stops beating
            return False

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if not self._beat():
                return

    def __enter__(self) -> Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _last_sign_of_life(t: FrozenTrial) -> float:
    start = t.datetime_start.timestamp() if t.datetime_start is not None else 0.0
    beat = t.system_attrs.get(HEARTBEAT_ATTR)
    # A retried trial inherits its predecessor's system attrs, old heartbeat included: only a
    # beat after this trial started counts.
    return max(start, float(beat)) if isinstance(beat, (int, float)) else start


def sweep_stale_trials(
    study: optuna.Study, *, stale_after: float, max_retry: int = 3
) -> list[int]:
    """Fail RUNNING trials silent for ``stale_after`` seconds and re-queue their parameters.

    For storages without Optuna's heartbeat (journal files): a trial's sign of life is the
    later of its start and its last :data:`HEARTBEAT_ATTR`. Safe to run from several workers:
    only the worker whose FAIL update lands re-queues the trial.

    Args:
        study: the study to sweep.
        stale_after: seconds without a sign of life after which a trial counts as crashed.
        max_retry: how often one trial's settings are re-queued at most.

    Returns:
        Numbers of the trials failed by this call.
    """
    now = time.time()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if now - _last_sign_of_life(t) < stale_after:
            continue
        why = f"was running for {now - _last_sign_of_life(t):.0f} s without a sign of life"
        if _fail_and_requeue(study, t, why, max_retry=max_retry):
            failed.append(t.number)
    return failed


def mark_worker(storage: BaseStorage, trial_id: int) -> None:
    """Record this process (host and pid) as the worker of a trial it is about to run."""
    storage.set_trial_system_attr(
        trial_id, WORKER_ATTR, {"host": socket.gethostname(), "pid": os.getpid()})


def fail_dead_workers_trials(study: optuna.Study, *, max_retry: int = 3) -> list[int]:
    """Fail and re-queue RUNNING trials whose worker, on this host, is gone.

    The heartbeat needs ``stale_after`` seconds to tell; a worker on this host can be asked
    directly. Without this, a run restarted right after a killed one counted the killed
    trial as another worker's running trial and ended one trial short of ``--trials``.
    """
    host = socket.gethostname()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        w = t.system_attrs.get(WORKER_ATTR)
        if not isinstance(w, dict) or w.get("host") != host:
            continue
        pid = int(w.get("pid", 0))
        if pid == os.getpid() or pid_alive(pid):
            continue
        if _fail_and_requeue(study, t, f"belonged to process {pid}, which is gone",
                             max_retry=max_retry):
            failed.append(t.number)
    return failed


def _fail_and_requeue(study: optuna.Study, t: FrozenTrial, why: str, *, max_retry: int) -> bool:
    try:
        study.tell(trial=t.number, state=TrialState.FAIL)
    except (UpdateFinishedTrialError, RuntimeError):
        # Another worker swept it first, or its owner finished it meanwhile: only the
        # worker whose FAIL landed re-queues it.
        return False
    log.warning("trial %d %s: marked failed, its settings are queued again", t.number, why)
    # The retry copies params, distributions and attrs; the state of `t` is not read.
    RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, t)
    return True


def recover_crashed_trials(
    study: optuna.Study, storage: BaseStorage, *, stale_after: float
) -> list[int]:
    """Fail and re-queue the trials of crashed workers, whatever the storage.

    RDB storages with a heartbeat use Optuna's ``fail_stale_trials`` (which runs the retry
    callback configured on the storage); other persistent storages use
    :func:`sweep_stale_trials`; in-memory storages cannot outlive a crash.

    Args:
        study: the study to clean up.
        storage: its storage.
        stale_after: see :func:`sweep_stale_trials`.

    Returns:
        Numbers of the trials failed of dead workers on this host and by the sweep (those
        Optuna's own path fails are not listed).
    """
    if isinstance(storage, InMemoryStorage):
        return []
    dead = fail_dead_workers_trials(study)
    if _has_optuna_heartbeat(storage):
        optuna.storages.fail_stale_trials(study)
        return dead
    return dead + sweep_stale_trials(study, stale_after=stale_after)
