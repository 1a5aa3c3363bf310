"""Who works on a study now: the live workers of ``scotsearch studies``.

Beam workers keep a record in the study (:mod:`~scotsearch.study._team`); a tune worker is
known by the RUNNING trials it marked (:func:`~scotsearch.study.mark_worker`), whose last
sign of life is their heartbeat (:data:`~scotsearch.study.HEARTBEAT_ATTR`, kept on storages
without Optuna's own heartbeat) or else their start. A tune worker on this host whose process
is gone is left out; one elsewhere counts until its trial is swept.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from scotsearch._io import pid_alive
from scotsearch.study._heartbeat import HEARTBEAT_ATTR
from scotsearch.study._heartbeat import WORKER_ATTR
from scotsearch.study._team import live_workers


def study_workers(study: optuna.Study) -> list[dict[str, Any]]:
    """The live workers of ``study``, oldest beat first.

    Returns:
        One dict per worker: ``host``, ``pid``, ``beat`` (seconds since its last sign of
        life), ``doing`` (a beam unit or tune trial numbers) and ``scored`` (beam candidates
        it stored so far; ``None`` for tune).
    """
    now, host = time.time(), socket.gethostname()
    rows = []
    attrs = study._storage.get_study_system_attrs(study._study_id)
    for rec in live_workers(attrs, now=now, host=host).values():
        rows.append({"host": rec["host"], "pid": int(rec["pid"]),
                     "beat": max(0.0, now - float(rec["beat"])),
                     "doing": str(rec.get("unit") or "waiting"),
                     "scored": int(rec.get("scored", 0))})
    tune: dict[tuple[str, int], dict[str, Any]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        w = t.system_attrs.get(WORKER_ATTR)
        if not isinstance(w, dict):
            continue
        key = (str(w.get("host")), int(w.get("pid", 0)))
        if key[0] == host and not pid_alive(key[1]):
            continue
        beat = t.system_attrs.get(HEARTBEAT_ATTR)
        if not isinstance(beat, (int, float)):
            start = t.datetime_start
            beat = start.timestamp() if start is not None else now
        row = tune.setdefault(key, {"host": key[0], "pid": key[1], "beat": now - beat,
                                    "doing": "", "scored": None})
        row["beat"] = max(0.0, min(row["beat"], now - float(beat)))
        row["doing"] = (row["doing"] + " " if row["doing"] else "trial ") + str(t.number)
    rows.extend(tune.values())
    return sorted(rows, key=lambda r: -r["beat"])
