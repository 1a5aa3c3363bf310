"""One worker at a time creates Optuna's tables on a database server (PostgreSQL).

Optuna's ``RDBStorage`` creates its tables and version row when it opens a database
(SQLAlchemy's ``create_all``, which checks, then creates). Several workers opening a new
database together race there: PostgreSQL refuses all but one with "duplicate key value
violates unique constraint". SQLite files are serialised by a lock on their folder
(:mod:`~scotsearch.study._storage`); on PostgreSQL a session-level advisory lock in the
study database does the same: the first worker to arrive creates the schema while the
others wait, then find it finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator

from scotsearch.errors import ScotsearchError
from scotsearch.errors import first_line


log = logging.getLogger(__name__)

#: The advisory lock's key: 64 bits of a hash of its purpose, so that it does not collide
#: with another application's locks in the same database.
SCHEMA_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"scotsearch: Optuna schema creation").digest()[:8], "big", signed=True
)

#: Longest wait for another worker's schema creation (the SQLite busy timeout's 60 s).
LOCK_TIMEOUT_S = 60


def _backend(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).get_backend_name()
    except Exception:  # noqa: BLE001 - a malformed URL is reported when the storage opens
        return ""


@contextlib.contextmanager
def schema_lock(url: str) -> Iterator[None]:
    """Hold the schema lock of ``url``'s database while the body opens the storage.

    Databases other than PostgreSQL pass through unlocked (SQLite has its own lock; other
    servers keep :func:`~scotsearch.study.open_shared_storage`'s retry).

    Args:
        url: a SQLAlchemy URL.

    Raises:
        ScotsearchError: the server cannot be reached, or the lock was not granted within
            :data:`LOCK_TIMEOUT_S`.
    """
    if _backend(url) != "postgresql":
        yield
        return
    from sqlalchemy import create_engine
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        try:
            con = engine.connect()
            # Session-level: held across the transactions Optuna's own connections commit,
            # and released by the server if this process dies holding it.
            con.execute(text(f"SET lock_timeout = '{LOCK_TIMEOUT_S}s'"))
            con.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            con.commit()
        except sa_exc.SQLAlchemyError as exc:
            raise ScotsearchError(
                f"cannot open study storage {url}: {first_line(exc)}"
            ) from None
        try:
            yield
        finally:
            try:
                con.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK_KEY})
                con.commit()
            except sa_exc.SQLAlchemyError as exc:  # closing the session releases it too
                log.debug("schema lock not released explicitly: %s", first_line(exc))
            con.close()
    finally:
        engine.dispose()
