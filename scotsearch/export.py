"""Export a study's best configurations as CSV rows that ``scotsearch evaluate --config`` reads.

A row is :meth:`RunConfig.to_row` (dataset, split, backbone, weights, layers, matching
settings, alpha, threshold) followed by where it came from and what it scored: ``study``,
``trial``, ``pck``, ``pooled_pck`` (when stored), ``depth`` (beam studies) and one
``pck_<category>`` column per category. Rows are built from the study's ``identity`` and each
trial's user attrs only (:mod:`scotsearch.study`), so beam and tune studies export alike.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import cast

import optuna

from scotsearch._io import atomic_write
from scotsearch.config import RUN_COLUMNS
from scotsearch.config import MatchConfig
from scotsearch.config import RunConfig
from scotsearch.errors import ScotsearchError
from scotsearch.layers import layer_names
from scotsearch.search.beam import as_subset
from scotsearch.study import completed_trials
from scotsearch.study import rank_key


#: Columns after the configuration, in order (``pooled_pck`` only when some row has it).
RESULT_COLUMNS = ("study", "trial", "pck", "pooled_pck", "depth", "layer_names")


def export_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """Every completed layer-subset trial of ``study`` as an export row, best first.

    Rows are sorted by PCK descending; ties put fewer layers first, then the earlier trial
    (:func:`scotsearch.study.rank_key`, the beam search's own tie rule).

    Raises:
        ScotsearchError: the study was not written by scotsearch (no ``identity``).
    """
    ident = study.user_attrs.get("identity")
    needed = ("dataset", "split", "backbone", "alpha", "thres")
    if not isinstance(ident, dict) or any(k not in ident for k in needed):
        raise ScotsearchError(
            f"study '{study.study_name}' has no scotsearch identity (dataset, backbone, ...); "
            "only studies written by `scotsearch beam` or `scotsearch tune` can be exported"
        )
    rows = []
    for t in completed_trials(study):
        attrs = t.user_attrs
        match_d = attrs.get("match", ident.get("match"))
        # completed_trials keeps only trials with a value.
        pck = float(attrs.get("pck", cast(float, t.value)))
        # A pruned tune trial's value is a running mean over part of the split, not a PCK.
        if match_d is None or math.isnan(pck) or attrs.get("pruned"):
            continue
        layers = as_subset(str(attrs["layers"]))
        cfg = RunConfig.from_identity(ident, layers=layers, match=MatchConfig.from_dict(match_d))
        row = cfg.to_row()
        row["study"] = study.study_name
        row["trial"] = t.number
        row["pck"] = pck
        if "pooled_pck" in attrs:
            row["pooled_pck"] = float(attrs["pooled_pck"])
        row["depth"] = attrs.get("depth", "")
        # the modules the ids name (ids alone mean nothing for another backbone)
        row["layer_names"] = layer_names(cfg.backbone, layers)
        for cat, value in sorted((attrs.get("per_category") or {}).items()):
            row[f"pck_{cat}"] = float(value)
        rows.append(row)
    rows.sort(key=lambda r: rank_key(r["pck"], r["layers"], r["trial"]))
    return rows


def select_rows(
    rows: Sequence[dict[str, Any]], *, top: int = 1, all_rows: bool = False
) -> list[dict[str, Any]]:
    """The first ``top`` rows (already sorted best first), or all of them."""
    if all_rows:
        return list(rows)
    if top < 1:
        raise ScotsearchError(f"--top must be >= 1, got {top}")
    return list(rows[:top])


def columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Header for ``rows``: configuration, result columns, then sorted ``pck_<category>``."""
    present = {k for r in rows for k in r}
    cols = list(RUN_COLUMNS)
    cols += [c for c in RESULT_COLUMNS if c != "pooled_pck" or c in present]
    cols += sorted(k for k in present if k.startswith("pck_"))
    return cols


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path | None = None) -> None:
    """Write ``rows`` as CSV to ``path`` (``None`` or ``-``: standard output).

    Floats are written with ``repr`` (shortest round-trip form), so the PCK read back is
    the stored number exactly. A file is replaced atomically: an interrupted export never
    leaves half a CSV behind.
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(rows), restval="", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    text = buf.getvalue()
    if path is None or str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    # UTF-8, newlines as written, no fsync: what the export always wrote.
    atomic_write(Path(path), text, fsync=False)
