"""Worker processes for the storage tests, in a module of their own so that a spawned worker
imports only this and the study package (not torch, as a test module would)."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any


def open_and_create(url: str, name: str, q: mp.Queue, start: Any = None) -> None:
    """Open ``url`` as a tune/beam worker does and create (or load) study ``name``; put
    ``"ok"`` or the error's text on ``q``. ``start``: a barrier to pass first."""
    from scotsearch.study import open_shared_storage
    from scotsearch.study import open_study

    if start is not None:
        start.wait(60)  # all imports done: the workers reach the storage at the same moment
    try:
        st = open_shared_storage(url, attempts=1)  # no retry: the lock alone must suffice
        open_study(name, st)
        q.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        q.put(f"{type(exc).__name__}: {exc}")
