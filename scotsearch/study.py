"""The study database: Optuna storage URLs, study identity, and the layer-subset trial format.

Every scored candidate of a search is one COMPLETE Optuna trial, so the ``optuna`` CLI,
``trials_dataframe()`` and optuna-dashboard read scotsearch studies as they are:

* params: one ``IntDistribution(0, 1)`` per backbone layer, ``L00`` .. ``L33`` (1 = in the
  subset), so samplers can later continue from a beam's trials (ecosystem.md §1.6);
* value: validation PCK x 100 (mean over pairs);
* user attrs: ``search`` (``beam``/``tune``), ``layers`` (``"0,19,27"``), ``match``
  (``MatchConfig.to_dict()``), ``pck``, ``per_category``, ``wall_time`` and, for the beam,
  ``depth`` and ``parent``.

The study itself carries ``identity`` (what the scores depend on, checked on every resume)
and ``environment`` (library versions and device, informational). Optuna has a place for all
of this, so scotsearch adds no tables of its own to the database.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import os
import sqlite3
import warnings
from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import IntDistribution
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage
from optuna.storages import JournalStorage
from optuna.storages import RDBStorage
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from scotsearch.errors import ConfigError
from scotsearch.errors import ScotsearchError


log = logging.getLogger(__name__)

#: Where studies go when neither ``--storage`` nor an environment variable says otherwise.
DEFAULT_STORAGE = "sqlite:///studies/scotsearch.db"

#: Environment variables consulted, in order, when no ``--storage`` is given.
STORAGE_ENV = ("SCOTSEARCH_STORAGE", "OPTUNA_STORAGE")

_JOURNAL_PREFIX = "journal:"
_JOURNAL_SUFFIXES = (".log", ".jsonl")
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


# --------------------------------------------------------------------------------------------
# storage


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
    """Like :func:`storage_url` but creates nothing (for read-only commands)."""
    if not url:
        url = next((os.environ[k] for k in STORAGE_ENV if os.environ.get(k)), DEFAULT_STORAGE)
    url = url.strip()
    if "://" not in url and not url.startswith(_JOURNAL_PREFIX) and url.endswith(_SQLITE_SUFFIXES):
        url = f"sqlite:///{url}"
    return url


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
    """Whether a file-backed storage already exists (servers are assumed to)."""
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
    url = resolve_storage(url) if must_exist else storage_url(url)
    if must_exist and not storage_exists(url):
        raise ScotsearchError(f"no study storage at {url} (nothing has been stored there yet)")
    journal = _journal_path(url)
    if journal is not None:
        if heartbeat:
            log.warning("journal storages have no trial heartbeat; crashed trials stay RUNNING")
        return JournalStorage(JournalFileBackend(str(journal)))
    sqlite_file = _sqlite_path(url)
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
            raise ScotsearchError(f"cannot open study storage {url}: {exc}") from None
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
            raise ScotsearchError(f"cannot open study storage {url}: {exc}") from None
        raise
    if url.startswith("sqlite"):
        from sqlalchemy import event

        event.listen(storage.engine, "connect", _sqlite_pragmas)
        event.listen(storage.engine, "begin", _sqlite_begin_immediate)
        # Connections pooled while Optuna created its tables predate the listener.
        storage.engine.dispose()
    return storage


def describe_storage(storage: BaseStorage | str) -> str:
    """A short text naming the storage, for messages."""
    if isinstance(storage, str):
        return storage
    if isinstance(storage, RDBStorage):
        return str(storage.url)
    return type(storage).__name__


# --------------------------------------------------------------------------------------------
# studies


def open_study(
    name: str, storage: BaseStorage | str | None, *, create: bool = True
) -> optuna.Study:
    """Load the study ``name``, creating it (maximise PCK) when ``create`` is true.

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


def plain(value: Any) -> Any:
    """``value`` as JSON-safe plain Python types (numpy scalars, tuples, paths converted).

    Optuna's RDB and journal storages JSON-encode user attrs and reject numpy scalars
    (ecosystem.md §1.5); the round trip also makes stored and new values compare equal.
    """

    def default(o: Any) -> Any:
        if hasattr(o, "tolist") and callable(o.tolist):
            return o.tolist()  # numpy scalars and arrays, torch tensors
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        if isinstance(o, os.PathLike):
            return os.fspath(o)
        raise TypeError(f"cannot store a {type(o).__name__} in a study attribute")

    return json.loads(json.dumps(value, default=default))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


_MISSING = object()


def _show(v: Any) -> str:
    if v is _MISSING:
        return "(none)"
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return str(v)


def check_identity(study: optuna.Study, identity: Mapping[str, Any]) -> None:
    """Store the study's identity on first use; refuse to continue with other settings.

    Args:
        study: the study about to receive trials.
        identity: everything the stored scores depend on (dataset, split, backbone, weights
            digest, matching settings, ...), as plain values.

    Raises:
        ConfigError: the study was started with a different identity. Every differing key
            is named with both values.
    """
    new = plain(dict(identity))
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", new)
        return
    a, b = _flatten(stored), _flatten(new)
    diffs = [
        f"{k}: stored {_show(a.get(k, _MISSING))}, now {_show(b.get(k, _MISSING))}"
        for k in sorted(set(a) | set(b))
        if a.get(k, _MISSING) != b.get(k, _MISSING)
    ]
    if diffs:
        raise ConfigError(
            f"study '{study.study_name}' was started with other settings: {'; '.join(diffs)}; "
            "use another --study name"
        )


def evaluator_identity(evaluator: Any) -> dict[str, Any]:
    """The fields every study's identity shares: what the evaluator's scores depend on.

    Dataset and split, backbone and the weights' digest, compat mode and image side, the
    precision of the similarity terms (reduced precision can reorder near-ties), the
    objective's alpha and threshold basis.
    """
    desc = evaluator.source.describe()
    return {
        "dataset": evaluator.dataset.name,
        "split": evaluator.dataset.split,
        "backbone": evaluator.source.backbone,
        "weights": str(desc.get("weights", "")),
        "weights_digest": str(desc.get("weights_digest", "")),
        "compat": evaluator.profile.name,
        "image_side": int(evaluator.profile.image_side),
        "precision": evaluator.precision,
        "alpha": float(evaluator.alphas[0]),
        "thres": evaluator.thres,
    }


def environment() -> dict[str, str]:
    """Versions of scotsearch, torch, torchvision and optuna, and the CUDA device (or cpu)."""
    from scotsearch._version import __version__

    env = {"scotsearch": __version__}
    for pkg in ("torch", "torchvision", "optuna"):
        try:
            env[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            env[pkg] = "not installed"
    try:
        import torch

        env["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 - a broken CUDA setup must not stop the record
        env["device"] = "cpu"
    return env


# --------------------------------------------------------------------------------------------
# layer-subset trials


def layer_param(i: int) -> str:
    """The trial parameter name of layer ``i``: ``L00`` .. ``L33``."""
    return f"L{int(i):02d}"


def layer_distributions(n_layers: int) -> dict[str, IntDistribution]:
    """One 0/1 integer parameter per layer."""
    return {layer_param(i): IntDistribution(0, 1) for i in range(n_layers)}


def layer_params(layers: Iterable[int], n_layers: int) -> dict[str, int]:
    """The 0/1 parameters of a subset."""
    members = {int(i) for i in layers}
    return {layer_param(i): int(i in members) for i in range(n_layers)}


def add_layer_trial(
    study: optuna.Study,
    *,
    layers: Iterable[int],
    n_layers: int,
    value: float,
    user_attrs: Mapping[str, Any],
) -> None:
    """Record a subset scored outside Optuna as one COMPLETE trial."""
    trial = optuna.trial.create_trial(
        params=layer_params(layers, n_layers),
        distributions=layer_distributions(n_layers),
        value=float(value),
        user_attrs=plain(dict(user_attrs)),
    )
    study.add_trial(trial)


def completed_trials(study: optuna.Study, *, search: str | None = None) -> list[FrozenTrial]:
    """COMPLETE trials carrying a ``layers`` attr (of one ``search`` kind if given)."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if "layers" not in t.user_attrs or t.value is None:
            continue
        if search is not None and t.user_attrs.get("search") != search:
            continue
        out.append(t)
    return out


def list_studies(storage: BaseStorage | str | None) -> list[dict[str, Any]]:
    """One summary row per study: name, kind, data, trials, best value and layers.

    A missing SQLite or journal file lists as no studies (nothing is created).
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
        best = best_trial(optuna.load_study(study_name=s.study_name, storage=st))
        rows.append(
            {
                "study": s.study_name,
                "kind": ident.get("kind", ""),
                "dataset": ident.get("dataset", ""),
                "split": ident.get("split", ""),
                "backbone": ident.get("backbone", ""),
                "trials": s.n_trials,
                "best": None if best is None else float(best.value),
                "layers": "" if best is None else str(best.user_attrs.get("layers", "")),
            }
        )
    return rows


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best completed layer-subset trial, or ``None``.

    Unlike ``study.best_trial`` this skips pruned tune trials (their value is a running mean
    over part of the split) and breaks ties like the beam search: fewer layers, then the
    earlier trial.
    """
    best, best_key = None, None
    for t in completed_trials(study):
        if t.user_attrs.get("pruned") or t.value is None or math.isnan(t.value):
            continue
        key = (-t.value, len(str(t.user_attrs["layers"]).split(",")), t.number)
        if best_key is None or key < best_key:
            best, best_key = t, key
    return best
