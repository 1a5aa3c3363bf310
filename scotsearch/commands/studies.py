"""``scotsearch studies``: list the studies in a storage with their best result."""

from __future__ import annotations

import argparse
import math
from typing import Any

from scotsearch.study import list_studies
from scotsearch.study import resolve_storage


HELP = "list the studies in the study database with their best result"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=None,
                   help="study storage: SQLAlchemy URL, journal:FILE or FILE.log (default: "
                        "$SCOTSEARCH_STORAGE, $OPTUNA_STORAGE, sqlite:///studies/scotsearch.db)")


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.2f}"
    return str(v)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain text table: study, kind, data (dataset/split/backbone), trials, best, layers
    and the number of live workers."""
    header = ["study", "kind", "data", "trials", "best PCK", "best layers", "workers"]
    body = [
        [
            r["study"],
            r["kind"] or "-",
            "/".join(x for x in (r["dataset"], r["split"], r["backbone"]) if x) or "-",
            _cell(r["trials"]),
            _cell(r["best"]),
            r["layers"] or "-",
            str(len(r.get("workers") or ())) if r.get("workers") else "-",
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    right = {3, 4, 6}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(header), *(line(b) for b in body)])


def run(args: argparse.Namespace) -> int:
    url = resolve_storage(args.storage)
    rows = list_studies(url)  # a missing database file lists as empty and is not created
    if not rows:
        print(f"no studies in {url}")
        return 0
    print(f"studies in {url}:")
    rows = sorted(rows, key=lambda r: r["study"])
    print(format_table(rows))
    live = [(r["study"], w) for r in rows for w in r.get("workers") or ()]
    if live:
        print("live workers:")
        for name, w in live:
            print("  " + format_worker(name, w))
    return 0


def format_worker(study: str, w: dict[str, Any]) -> str:
    """One live worker: its study, process, last sign of life and what it does.

    >>> format_worker("b", {"host": "h", "pid": 7, "beat": 3.2, "doing": "d1u0-ab", "scored": 4})
    'b: pid 7 on h, last heartbeat 3 s ago, d1u0-ab, 4 scored'
    >>> format_worker("t", {"host": "h", "pid": 8, "beat": 0.4, "doing": "trial 5",
    ...                     "scored": None})
    't: pid 8 on h, last heartbeat 0 s ago, trial 5'
    """
    scored = "" if w.get("scored") is None else f", {w['scored']} scored"
    return (f"{study}: pid {w['pid']} on {w['host']}, last heartbeat {w['beat']:.0f} s ago, "
            f"{w['doing']}{scored}")
