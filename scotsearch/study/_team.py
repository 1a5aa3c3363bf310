"""Cooperating beam workers: a registry of live workers and claims on units of work.

Any number of ``scotsearch beam`` processes with the same command and storage search one
study together. Each registers itself in the study (:data:`WORKER_PREFIX` + its token, a
record renewed every :data:`RENEW_S` seconds) and claims units of a depth's work (a
candidate, or a candidate on one block of pairs: :data:`CLAIM_PREFIX` + the unit's key)
before scoring them; a unit whose claim belongs to a
worker that stopped renewing (:data:`STALE_S`) or whose process on this host is gone is
claimed again by another worker.

Optuna's storages have no compare-and-set, so a claim is write, wait, read back (as the
racing-mode lease, :mod:`~scotsearch.study._lease`): of workers claiming one unit together,
the last writer holds it and the others read back a foreign token. The wait
(:data:`SETTLE_S`) must exceed one storage round trip, the gap between one worker's read and
its write. A worker that sees no other live worker skips the wait: a worker that joins later
waits :data:`SETTLE_S` after registering before it reads any claim, so it sees every claim
written by a worker that could not yet see it. A storage slower than :data:`SETTLE_S` per
round trip can let two workers score the same candidate: the result is a second trial with
the same value (a wasted evaluation; resume reads the first), never a wrong score.

Each depth is split once for the whole team (:data:`SPLIT_PREFIX` + the depth): the first
worker to reach it writes the live workers' tokens, sorted, as the owners of as many blocks
of the split's pairs (write, wait, read back, like a claim; the last writer's split holds).
A worker claims the units of its own block without the wait when every live worker owns a
block: nobody else claims them while it lives. Units of a dead owner's block, and any unit
claimed by a worker that joined after the split (it owns no block and helps wherever units
are free), go through the wait.

Workers started together agree on an *epoch*, the earliest ``epoch`` among the live workers
(a worker that finds none starts a new one). A claim belongs to its epoch: claims of an
earlier epoch (a search that was killed, or one that finished with failed candidates) are
ignored, so a re-run retries what they left undone, exactly as a single process does.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from optuna.storages import BaseStorage
from optuna.storages import InMemoryStorage

from scotsearch._io import pid_alive


#: Study system attribute prefix of the workers' records, then the worker's token.
WORKER_PREFIX = "scotsearch:beam_worker:"
#: Study system attribute prefix of the claims, then the unit's key.
CLAIM_PREFIX = "scotsearch:beam_claim:"
#: Study system attribute prefix of a depth's split of the pairs between workers.
SPLIT_PREFIX = "scotsearch:beam_split:"
#: Seconds between renewals of a worker's record, and without one after which it is dead.
RENEW_S = 10.0
STALE_S = 60.0
#: Seconds between writing a claim (or a registration) and reading it back.
SETTLE_S = 0.5
#: Environment variable by which a launcher (``--workers``, ``--dask-scheduler``) tells its
#: workers how many of them start together, so that the first to arrive does not claim a
#: whole depth before the others have registered.
TEAM_SIZE_ENV = "SCOTSEARCH_TEAM_SIZE"


def worker_alive(record: Any, *, now: float, host: str) -> bool:
    """Whether a worker record (a stored value) belongs to a live worker.

    Dead: left (``"left"``), not renewed for :data:`STALE_S`, or on this host with its
    process gone.

    >>> worker_alive({"host": "h", "pid": 1, "beat": 100.0}, now=130.0, host="x")
    True
    >>> worker_alive({"host": "h", "pid": 1, "beat": 100.0}, now=200.0, host="x")
    False
    >>> worker_alive({"host": "h", "pid": 1, "beat": 100.0, "left": True}, now=100.0, host="x")
    False
    """
    if not isinstance(record, dict) or record.get("left"):
        return False
    try:
        beat, pid, owner = float(record["beat"]), int(record["pid"]), str(record["host"])
    except (KeyError, TypeError, ValueError):
        return False
    if now - beat > STALE_S:
        return False
    return not (owner == host and not pid_alive(pid))


def live_workers(attrs: Mapping[str, Any], *, now: float, host: str) -> dict[str, dict]:
    """The live workers' records in a study's system attrs, by token."""
    out = {}
    for key, rec in attrs.items():
        if key.startswith(WORKER_PREFIX) and worker_alive(rec, now=now, host=host):
            out[key[len(WORKER_PREFIX):]] = rec
    return out


def unit_state(claim: Any, *, epoch: str, live: Mapping[str, Any], me: str) -> str:
    """What a unit's claim says: ``done``, ``mine``, ``taken`` (a live worker works on it)
    or ``free`` (no claim of this epoch, or its worker is dead).

    >>> unit_state({"token": "a", "epoch": "e", "done": True}, epoch="e", live={}, me="b")
    'done'
    >>> unit_state({"token": "a", "epoch": "e"}, epoch="e", live={"a": {}}, me="b")
    'taken'
    >>> unit_state({"token": "a", "epoch": "e"}, epoch="e", live={}, me="b")  # a is dead
    'free'
    >>> unit_state({"token": "a", "epoch": "old", "done": True}, epoch="e", live={}, me="b")
    'free'
    """
    if not isinstance(claim, dict) or claim.get("epoch") != epoch:
        return "free"
    if claim.get("done"):
        return "done"
    token = claim.get("token")
    if token == me:
        return "mine"
    return "taken" if token in live else "free"


def _env_team_size() -> int:
    try:
        return int(os.environ.get(TEAM_SIZE_ENV, "1"))
    except ValueError:
        return 1


class BeamTeam:
    """This process's membership in a study's team of beam workers.

    Use as a context manager (``with BeamTeam(storage, name) as team:``): entering
    registers the worker and agrees on the epoch; leaving marks it gone, so others need not
    wait :data:`STALE_S` for its claims (it holds none unfinished when it leaves normally).

    Args:
        storage: the study's storage.
        study_name: the study.
        expected: workers launched together with this one (this one included), waited for
            before the first depth is split; ``None``: :data:`TEAM_SIZE_ENV`, else 1.
    """

    def __init__(self, storage: BaseStorage, study_name: str, *,
                 expected: int | None = None) -> None:
        self._storage = storage
        self._study_id = storage.get_study_id_from_name(study_name)
        self.token = uuid.uuid4().hex[:16]
        self.host = socket.gethostname()
        #: the epoch this worker works in (set on entering)
        self.epoch = ""
        #: the unit being scored now, shown by ``scotsearch studies``
        self.unit = ""
        self.scored = 0
        self._started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # An in-memory storage belongs to this process alone: nobody to wait for.
        self._alone = isinstance(storage, InMemoryStorage)
        #: workers launched together with this one (this one included), at least 1
        self.expected = max(1, expected if expected is not None else _env_team_size())

    # -- storage ------------------------------------------------------------------------
    def attrs(self) -> dict[str, Any]:
        """The study's system attrs, read now."""
        return dict(self._storage.get_study_system_attrs(self._study_id))

    def live(self, attrs: Mapping[str, Any]) -> dict[str, dict]:
        """The live workers in ``attrs`` (this one included while it is registered)."""
        return live_workers(attrs, now=time.time(), host=self.host)

    def size(self, live: Mapping[str, Any]) -> int:
        """How many workers share the work: the ``live`` ones, or those launched together
        with this one while some have not registered yet."""
        return max(1, self.expected, len(live))

    def _record(self, **extra: Any) -> dict[str, Any]:
        return {"host": self.host, "pid": os.getpid(), "beat": time.time(),
                "started": self._started, "epoch": self.epoch, "unit": self.unit,
                "scored": self.scored, **extra}

    def beat(self) -> None:
        """Write this worker's record now."""
        self._storage.set_study_system_attr(self._study_id, WORKER_PREFIX + self.token,
                                            self._record())

    # -- membership ---------------------------------------------------------------------
    def join(self) -> None:
        """Register, agree on the epoch with the live workers, and start renewing."""
        others = self.live(self.attrs())
        epochs = sorted(str(r.get("epoch", "")) for r in others.values() if r.get("epoch"))
        # time first, so that the earliest epoch sorts first
        self.epoch = epochs[0] if epochs else f"{time.time():.6f}-{self.token}"
        self.beat()
        if not self._alone:
            # Workers that started together have each picked their own epoch; after the
            # wait every one of them sees all the others and takes the earliest.
            time.sleep(SETTLE_S)
            live = self.live(self.attrs())
            epochs = sorted(str(r.get("epoch", "")) for r in live.values() if r.get("epoch"))
            if epochs and epochs[0] != self.epoch:
                self.epoch = epochs[0]
                self.beat()
        self._thread = threading.Thread(target=self._renew, name="beam-team", daemon=True)
        self._thread.start()
        if not self._alone:
            self._await_launched()

    def _await_launched(self) -> None:
        # Workers launched together split the first depth between all of them: wait (at
        # most STALE_S, for a launched worker that failed to start) until they are live.
        deadline = time.monotonic() + STALE_S
        while (len(self.live(self.attrs())) < self.expected
               and time.monotonic() < deadline):
            time.sleep(SETTLE_S)

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - a missed renewal is retried; never kill a search
                continue

    def leave(self) -> None:
        """Stop renewing and mark this worker gone."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self._storage.set_study_system_attr(self._study_id, WORKER_PREFIX + self.token,
                                                self._record(left=True))

    def __enter__(self) -> BeamTeam:
        self.join()
        return self

    def __exit__(self, *exc: object) -> None:
        self.leave()

    # -- claims -------------------------------------------------------------------------
    def state(self, unit: str, attrs: Mapping[str, Any],
              live: Mapping[str, Any] | None = None) -> str:
        """:func:`unit_state` of ``unit`` in ``attrs`` for this worker (``live``: the live
        workers of the same read, to look at many units without scanning again)."""
        return unit_state(attrs.get(CLAIM_PREFIX + unit), epoch=self.epoch,
                          live=self.live(attrs) if live is None else live, me=self.token)

    def split(self, depth: int, n_blocks_max: int) -> list[str]:
        """The owners (worker tokens) of the blocks of ``depth``'s pairs, one per block.

        Read from the study, or, for the first worker at this depth, the live workers (at
        most ``n_blocks_max``, one block per pair at least) written as the split and read
        back after the wait: of workers that write together, the last writer's split holds.
        """
        key = SPLIT_PREFIX + f"d{depth}"
        attrs = self.attrs()
        rec = attrs.get(key)
        if isinstance(rec, dict) and rec.get("epoch") == self.epoch:
            return [str(t) for t in rec["owners"]]
        live = set(self.live(attrs))
        owners = sorted(live | {self.token})[:max(1, n_blocks_max)]
        self._storage.set_study_system_attr(
            self._study_id, key, {"epoch": self.epoch, "owners": owners, "by": self.token})
        if self._alone or live <= {self.token}:
            return owners
        time.sleep(SETTLE_S)
        rec = self._storage.get_study_system_attrs(self._study_id)[key]
        return [str(t) for t in rec["owners"]]

    def claim(self, units: Sequence[str], attrs: Mapping[str, Any], *,
              contended: bool = True) -> list[str]:
        """Try to claim ``units`` (free in ``attrs``, a fresh read); returns those now ours.

        One wait for all of them: the claims are written, then read back together. Without
        the wait where no other live worker or ``contended`` is false (units that only this
        worker may claim: its own block's while every live worker owns a block).
        """
        others = set(self.live(attrs)) - {self.token}
        for unit in units:
            self._storage.set_study_system_attr(
                self._study_id, CLAIM_PREFIX + unit,
                {"token": self.token, "epoch": self.epoch, "at": time.time()})
        if not others or self._alone or not contended:
            return list(units)
        time.sleep(SETTLE_S)
        now = self._storage.get_study_system_attrs(self._study_id)
        return [u for u in units
                if isinstance(now.get(CLAIM_PREFIX + u), dict)
                and now[CLAIM_PREFIX + u].get("token") == self.token]

    def finish(self, units: Sequence[str], results: Sequence[dict[str, Any]] | None = None,
               *, count: bool = True) -> None:
        """Mark ``units`` done, each with its entry of ``results`` (a block's partial result,
        read by the worker that assembles the candidate) or nothing (its candidate is
        stored). ``count``: the units count as this worker's work."""
        if count:
            self.scored += len(units)
        for k, unit in enumerate(units):
            rec: dict[str, Any] = {"token": self.token, "epoch": self.epoch,
                                   "at": time.time(), "done": True}
            if results is not None:
                rec["result"] = results[k]
            self._storage.set_study_system_attr(self._study_id, CLAIM_PREFIX + unit, rec)
