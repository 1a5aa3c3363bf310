"""Where studies live: storage URLs, the SQLite settings, journal files, opening studies.

``--storage`` takes any SQLAlchemy URL, ``journal:PATH`` or a bare ``.db``/``.log`` path.
SQLite files run in WAL mode with every transaction taking the write lock at ``BEGIN``, so
that several workers on one machine share a study safely; several workers starting together
on a new file, database or study race to create it, which :func:`open_shared_storage` and
:func:`join_study` absorb.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sqlite3
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.exceptions import ExperimentalWarning
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.storages import JournalStorage
from optuna.storages import RDBStorage
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from scotsearch.errors import ConfigError
from scotsearch.errors import ScotsearchError
from scotsearch.errors import first_line
from scotsearch.study._live import study_workers
from scotsearch.study._server_lock import schema_lock
from scotsearch.study._trials import best_trial


log = logging.getLogger(__name__)

#: Where studies go when neither ``--storage`` nor an environment variable says otherwise.
DEFAULT_STORAGE = "sqlite:///studies/scotsearch.db"

#: Environment variables consulted, in order, when no ``--storage`` is given.
STORAGE_ENV = ("SCOTSEARCH_STORAGE", "OPTUNA_STORAGE")

_JOURNAL_PREFIX = "journal:"
_JOURNAL_SUFFIXES = (".log", ".jsonl")
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def storage_url(url: str | None) -> str:
    """Resolve the storage to use and make sure a SQLite file's folder exists.

    Args:
        url: ``--storage`` as given: any SQLAlchemy URL, ``journal:PATH``, a path ending in
            ``.log``/``.jsonl`` (journal file) or ``.db``/``.sqlite`` (SQLite file), or
            ``None`` for ``$SCOTSEARCH_STORAGE``, then ``$OPTUNA_STORAGE``, then
            :data:`DEFAULT_STORAGE`.

    Returns:
        The URL (a bare ``.db`` path becomes ``sqlite:///PATH``).
    """
    url = resolve_storage(url)
    path = _sqlite_path(url) or _journal_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return url


def resolve_storage(url: str | None) -> str:
    """Like :func:`storage_url` but creates nothing (for read-only commands).

    Args:
        url: as for :func:`storage_url`.

    Returns:
        The URL to open.
    """
    if not url:
        url = next((os.environ[k] for k in STORAGE_ENV if os.environ.get(k)), DEFAULT_STORAGE)
    url = url.strip()
    _check_url_form(url)
    if "://" not in url and not url.startswith(_JOURNAL_PREFIX) and url.endswith(_SQLITE_SUFFIXES):
        url = f"sqlite:///{url}"
    return url


#: ``scheme:`` or ``dialect+driver:`` at the start of a URL (one letter is a drive, not one).
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def _check_url_form(url: str) -> None:
    """Refuse a URL whose scheme is not followed by ``//`` (``sqlite:/x.db``).

    SQLAlchemy would not see a URL there, the path check would, and the study would be
    written to a relative file literally named ``sqlite:/x.db``.
    """
    m = _SCHEME.match(url)
    if url.startswith(_JOURNAL_PREFIX) or m is None or url[m.end():].startswith("//"):
        return
    scheme = m.group(1)
    if scheme.split("+")[0].lower() == "sqlite":
        hint = "sqlite:///relative/path.db or sqlite:////absolute/path.db"
    else:
        hint = f"{scheme}://user:password@host:port/database"
    raise ConfigError(f"malformed storage URL {url!r}: expected {hint} (or journal:PATH)")


def _journal_path(url: str) -> Path | None:
    if url.startswith(_JOURNAL_PREFIX):
        return Path(url[len(_JOURNAL_PREFIX) :])
    if "://" not in url and url.endswith(_JOURNAL_SUFFIXES):
        return Path(url)
    return None


def _sqlite_path(url: str) -> Path | None:
    """The database file of a file-backed SQLite URL, else ``None``."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    try:
        db = make_url(url).database
    except Exception:  # noqa: BLE001 - malformed URLs are reported when the storage opens
        return None
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def storage_exists(url: str) -> bool:
    """Whether a file-backed storage already exists (servers are assumed to).

    Args:
        url: a resolved URL (:func:`resolve_storage`).

    Returns:
        False only for a SQLite or journal file that is not there.
    """
    path = _journal_path(url) or _sqlite_path(url)
    return path is None or path.exists()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Per connection: wait up to 60 s for another process's write lock instead of failing
    # with "database is locked", and use WAL so that outside readers (the dashboard, plain
    # sqlite3) never block a writer. scotsearch's own sessions all take the write lock at
    # BEGIN (below), so they queue one after another; each is a few milliseconds long.
    # WAL persists in the file; setting it again is a no-op.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()
    # Hand transaction control to SQLAlchemy's "begin" event (below): pysqlite would otherwise
    # start a transaction only at the first write, so a read-then-write such as Optuna's
    # "pop a WAITING trial" is not atomic across processes and two workers could both run
    # the same queued trial (SELECT ... FOR UPDATE is a no-op on SQLite).
    dbapi_connection.isolation_level = None


def _sqlite_begin_immediate(connection: Any) -> None:
    # Take the write lock when the transaction starts: every Optuna session then reads and
    # writes under one lock, and a waiting worker queues on busy_timeout instead of failing.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def open_storage(
    url: str | None, *, heartbeat: bool = False, must_exist: bool = False
) -> BaseStorage:
    """Open the Optuna storage named by ``url`` (see :func:`storage_url`).

    Args:
        url: storage URL or path, or ``None`` for the environment / default.
        heartbeat: RDB storages only: record trial heartbeats every 10 s, treat a RUNNING
            trial silent for 30 s as crashed and re-queue it (up to 3 times). Only
            ``study.optimize`` sends heartbeats (ecosystem.md §1.7).
        must_exist: refuse to create a missing SQLite/journal file (for read-only commands).

    Returns:
        ``RDBStorage`` for SQLAlchemy URLs (SQLite with WAL and a 60 s lock timeout), or
        ``JournalStorage`` for journal files.

    Raises:
        ScotsearchError: the storage does not exist (``must_exist``), cannot be opened, or
            was written by an Optuna with another schema.
    """
    return _open(url, heartbeat=heartbeat, must_exist=must_exist, own_heartbeat=False)


def open_shared_storage(url: str | None, *, attempts: int = 5) -> BaseStorage:
    """:func:`open_storage` for workers sharing a study: heartbeat on, racing creators absorbed.

    Several workers started together on a new database all try to create Optuna's tables;
    SQLAlchemy's ``create_all`` is not atomic across processes. On SQLite files (a lock on
    their folder) and PostgreSQL (an advisory lock,
    :func:`~scotsearch.study._server_lock.schema_lock`) the first worker creates them while
    the others wait; on other servers all but the first can fail with "table ... already
    exists" (or a unique-key clash on the version row), and opening again finds the
    finished schema.

    Journal storages have no Optuna heartbeat; their workers keep their own
    (:class:`~scotsearch.study.Heartbeat`, :func:`~scotsearch.study.sweep_stale_trials`), so
    no warning is logged for them.

    Args:
        url: storage URL or path, or ``None`` for the environment / default.
        attempts: how often to try before the error is passed on.

    Returns:
        The opened storage.

    Raises:
        ScotsearchError: as :func:`open_storage`, once ``attempts`` are used up.
    """
    for attempt in range(attempts):
        try:
            return _open(url, heartbeat=True, must_exist=False, own_heartbeat=True)
        except ScotsearchError as exc:
            text = str(exc).lower()
            # SQLite: "table studies already exists", "UNIQUE constraint failed"; PostgreSQL:
            # "duplicate key value violates unique constraint" (the message is one line).
            racing = any(s in text for s in ("already exists", "unique constraint",
                                              "duplicate key"))
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _open(
    url: str | None, *, heartbeat: bool, must_exist: bool, own_heartbeat: bool
) -> BaseStorage:
    # own_heartbeat: the caller beats its journal trials itself, so their lack of Optuna's
    # heartbeat is no reason to warn.
    url = resolve_storage(url) if must_exist else storage_url(url)
    if must_exist and not storage_exists(url):
        raise ScotsearchError(f"no study storage at {url} (nothing has been stored there yet)")
    journal = _journal_path(url)
    if journal is not None:
        if heartbeat and not own_heartbeat:
            log.warning("journal storages have no trial heartbeat; crashed trials stay RUNNING")
        try:
            return JournalStorage(JournalFileBackend(str(journal)))
        except ValueError as exc:  # json.JSONDecodeError: a damaged line of the log
            raise ScotsearchError(
                f"the study journal {journal} is damaged ({first_line(exc)}); restore it from "
                f"a copy or move it away to start afresh"
            ) from None
    sqlite_file = _sqlite_path(url)
    if sqlite_file is None:
        with schema_lock(url):  # PostgreSQL: the first worker creates the tables
            return _open_rdb(url, heartbeat=heartbeat, sqlite_file=None)
    with _folder_lock(sqlite_file.parent):
        # Under the lock, the first worker to arrive creates the file and Optuna's tables
        # while the others wait, and then find the finished schema (measured without it: 3
        # of 5 simultaneous starts failed on "table studies already exists").
        created = not sqlite_file.exists()
        try:
            return _open_rdb(url, heartbeat=heartbeat, sqlite_file=sqlite_file)
        except BaseException:
            if created:
                # A new database that could not be set up (full disk, read-only folder) is
                # removed with its side files, not left half-made for the next run to trip
                # over. Safe: nobody else can have created it while we hold the lock.
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(f"{sqlite_file}{suffix}").unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` itself (no lock file is left behind)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, Optuna's own retry remains
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield  # the folder cannot be opened; the storage's own error will say why
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _open_rdb(url: str, *, heartbeat: bool, sqlite_file: Path | None) -> BaseStorage:
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    if heartbeat:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=3)
        kwargs.update(heartbeat_interval=10, grace_period=30, heartbeat_stale_trial_callback=retry)
    if sqlite_file is not None:
        # Switch the file to WAL before Optuna opens it: the mode is stored in the file, so
        # even the connections Optuna makes while creating its tables use it.
        try:
            con = sqlite3.connect(sqlite_file, timeout=60)
            try:
                con.execute("PRAGMA journal_mode=WAL")
            finally:
                con.close()
        except sqlite3.Error as exc:
            raise ScotsearchError(
                f"cannot open study storage {url}: {_sqlite_failure(sqlite_file, exc)}"
            ) from None
    try:
        with warnings.catch_warnings():
            # The heartbeat is experimental in Optuna; the user asked for it, say nothing.
            warnings.simplefilter("ignore", ExperimentalWarning)
            storage = RDBStorage(url, **kwargs)
    except RuntimeError as exc:
        if "no longer compatible with the table schema" in str(exc):
            raise ScotsearchError(
                f"the study database {url} was written by another Optuna version; upgrade it "
                f"with: optuna storage upgrade --storage {url}"
            ) from None
        raise
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's URL/driver errors vary by backend
        if type(exc).__module__.startswith("sqlalchemy") or isinstance(exc, ImportError):
            why = first_line(exc) if sqlite_file is None else _sqlite_failure(sqlite_file, exc)
            raise ScotsearchError(f"cannot open study storage {url}: {why}") from None
        raise
    if url.startswith("sqlite"):
        from sqlalchemy import event

        event.listen(storage.engine, "connect", _sqlite_pragmas)
        event.listen(storage.engine, "begin", _sqlite_begin_immediate)
        # Connections pooled while Optuna created its tables predate the listener.
        storage.engine.dispose()
    return storage


#: Free bytes below which a SQLite failure is blamed on the disk being full.
_LOW_SPACE = 1 << 20


def _sqlite_failure(path: Path, exc: Exception) -> str:
    """SQLite's text for a file it could not open, with the cause it leaves out."""
    text = first_line(exc)  # "unable to open database file" says neither what nor why
    folder = path.parent
    if not os.access(folder, os.W_OK):
        return f"{text} (the folder {folder} is not writable; SQLite writes its files there)"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{text} ({path} is read-only)"
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(folder).free
        if free < _LOW_SPACE:  # a full disk reads "disk I/O error"
            return f"{text} (the disk of {folder} is full: {free // 1024} KiB free)"
    return text


def describe_storage(storage: BaseStorage | str) -> str:
    """A short text naming the storage, for messages: its URL, or its class for journals.

    Args:
        storage: a storage or a URL.

    Returns:
        The text.
    """
    if isinstance(storage, str):
        return storage
    if isinstance(storage, RDBStorage):
        return str(storage.url)
    return type(storage).__name__


def open_study(
    name: str, storage: BaseStorage | str | None, *, create: bool = True
) -> optuna.Study:
    """Load the study ``name``, creating it (maximise PCK) when ``create`` is true.

    Args:
        name: the study name.
        storage: a storage, a URL/path (opened with :func:`open_storage`; without
            ``create`` a missing file is an error, not created) or ``None`` for the default.
        create: create the study if it does not exist.

    Returns:
        The study.

    Raises:
        ScotsearchError: ``create`` is false and there is no such study.
    """
    if isinstance(storage, BaseStorage):
        st = storage
    else:
        st = open_storage(storage, must_exist=not create)
    if create:
        return optuna.create_study(
            study_name=name, storage=st, direction="maximize", load_if_exists=True
        )
    try:
        return optuna.load_study(study_name=name, storage=st)
    except KeyError:
        summaries = optuna.get_all_study_summaries(storage=st, include_best_trial=False)
        names = sorted(s.study_name for s in summaries)
        known = ", ".join(names) if names else "none"
        raise ScotsearchError(
            f"no study named {name!r} in {describe_storage(st)} (studies there: {known})"
        ) from None


def join_study(
    name: str, storage: BaseStorage, *, sampler: BaseSampler, pruner: BasePruner
) -> tuple[optuna.Study, bool]:
    """Create the study ``name`` (maximise PCK) or join it, telling which happened.

    Args:
        name: the study name.
        storage: the storage several workers may share.
        sampler: the sampler this worker uses.
        pruner: the pruner this worker uses.

    Returns:
        The study, and whether this call created it.

    Raises:
        ConfigError: the existing study minimises.
    """
    # create_study without load_if_exists fails atomically on an existing name (unique key in
    # the database, first record in a journal): exactly one of several workers started
    # together learns that it created the study (and only that one enqueues, e.g., a
    # baseline trial).
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, direction="maximize", sampler=sampler,
            pruner=pruner, load_if_exists=False,
        )
        return study, True
    except DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        if study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise ConfigError(
                f"study '{name}' minimises; scotsearch studies maximise PCK"
            ) from None
        return study, False


def list_studies(storage: BaseStorage | str | None) -> list[dict[str, Any]]:
    """One summary row per study: name, kind, data, trials, best value and layers.

    A missing SQLite or journal file lists as no studies (nothing is created).

    Args:
        storage: a storage, a URL/path, or ``None`` for the default.

    Returns:
        Rows with ``study``, ``kind``, ``dataset``, ``split``, ``backbone``, ``trials``,
        ``best`` (value of :func:`~scotsearch.study.best_trial`, or ``None``), ``layers`` and
        ``workers`` (its live workers, :func:`~scotsearch.study.study_workers`).
    """
    if isinstance(storage, BaseStorage):
        st = storage
    else:
        url = resolve_storage(storage)
        path = _journal_path(url) or _sqlite_path(url)
        if path is not None and not path.exists():
            return []
        st = open_storage(url, must_exist=True)
    rows = []
    for s in optuna.get_all_study_summaries(storage=st, include_best_trial=False):
        ident = s.user_attrs.get("identity") or {}
        study = optuna.load_study(study_name=s.study_name, storage=st)
        best = best_trial(study)
        value = None if best is None else best.value
        rows.append(
            {
                "study": s.study_name,
                "kind": ident.get("kind", ""),
                "dataset": ident.get("dataset", ""),
                "split": ident.get("split", ""),
                "backbone": ident.get("backbone", ""),
                "trials": s.n_trials,
                "best": None if value is None else float(value),
                "layers": "" if best is None else str(best.user_attrs.get("layers", "")),
                "workers": study_workers(study),
            }
        )
    return rows
