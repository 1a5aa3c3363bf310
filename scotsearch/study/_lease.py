"""One beam process per study: a lease kept in the study, renewed while the search runs.

Two ``scotsearch beam`` processes on one study would each run the whole search and store
every candidate twice (the beam is one sequential process; cooperating workers are a
separate feature). The first takes the lease; a second one finds it fresh and is refused
with a line naming the holder. A lease not renewed for :data:`STALE_S` seconds (its holder
was killed) or whose holder on this host is gone is taken over, so resuming after a crash
needs no clean-up.

Optuna's storages have no compare-and-set on study attributes, so taking the lease is
write, wait, read back: of processes starting together, the last writer holds it and every
other one reads back a foreign token and stops. The wait (:data:`SETTLE_S`) must exceed the
gap between one process's read and its write, which is one storage round trip.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Any

from optuna.storages import BaseStorage
from optuna.storages import InMemoryStorage

from scotsearch._io import pid_alive
from scotsearch.errors import ConfigError


#: Study system attribute holding the lease.
LEASE_ATTR = "scotsearch:beam_lease"
#: Seconds between renewals, and without one after which a lease is abandoned.
RENEW_S = 10.0
STALE_S = 60.0
#: Seconds between writing the lease and reading it back.
SETTLE_S = 0.5


def lease_holder(lease: Any, *, now: float, host: str) -> str | None:
    """Who holds ``lease`` (a stored value), or ``None`` when it is free or abandoned.

    >>> lease_holder({"host": "h", "pid": 1, "beat": 100.0, "token": "t"}, now=130.0, host="x")
    'pid 1 on h, renewed 30 s ago'
    >>> lease_holder({"host": "h", "pid": 1, "beat": 100.0, "token": "t"}, now=200.0, host="x")
    """
    if not isinstance(lease, dict) or lease.get("released"):
        return None
    try:
        beat, pid, owner = float(lease["beat"]), int(lease["pid"]), str(lease["host"])
    except (KeyError, TypeError, ValueError):
        return None
    if now - beat > STALE_S:
        return None
    if owner == host and not pid_alive(pid):
        return None
    return f"pid {pid} on {owner}, renewed {now - beat:.0f} s ago"


class BeamLease:
    """The lease of one study for this process (``with BeamLease(...):``)."""

    def __init__(self, storage: BaseStorage, study_name: str) -> None:
        self._storage = storage
        self._name = study_name
        self._study_id = storage.get_study_id_from_name(study_name)
        self._token = uuid.uuid4().hex
        self._host = socket.gethostname()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _value(self, **extra: Any) -> dict[str, Any]:
        return {"token": self._token, "host": self._host, "pid": os.getpid(),
                "beat": time.time(), **extra}

    def _current(self) -> Any:
        return self._storage.get_study_system_attrs(self._study_id).get(LEASE_ATTR)

    def _refuse(self, holder: str) -> ConfigError:
        return ConfigError(
            f"study '{self._name}' is being searched by another beam process ({holder}); "
            f"wait for it to finish, or give this search another --study name"
        )

    def acquire(self) -> None:
        """Take the lease, or raise :class:`ConfigError` naming its holder.

        An in-memory storage belongs to this process alone and needs none.
        """
        if isinstance(self._storage, InMemoryStorage):
            return
        holder = lease_holder(self._current(), now=time.time(), host=self._host)
        if holder is not None:
            raise self._refuse(holder)
        self._storage.set_study_system_attr(self._study_id, LEASE_ATTR, self._value())
        time.sleep(SETTLE_S)
        cur = self._current()
        if not isinstance(cur, dict) or cur.get("token") != self._token:
            raise self._refuse(lease_holder(cur, now=time.time(), host=self._host) or "just now")
        self._thread = threading.Thread(target=self._renew, name="beam-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                self._storage.set_study_system_attr(self._study_id, LEASE_ATTR, self._value())
            except Exception:  # noqa: BLE001 - a missed renewal is retried; never kill a search
                continue

    def release(self) -> None:
        """Stop renewing and mark the lease free (a resumed search need not wait)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self._storage.set_study_system_attr(
                self._study_id, LEASE_ATTR, self._value(released=True))

    def __enter__(self) -> BeamLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
