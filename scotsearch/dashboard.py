"""Publish a study's report where Optuna users look: ``optuna-dashboard``.

:func:`publish_to_dashboard` saves a Markdown note on the study (what produced it, its best
candidate, the command that reports it) with ``optuna_dashboard.save_note``, and uploads
through Optuna's artifact store (``optuna.artifacts.FileSystemArtifactStore``): the report's
figures, a CSV of every candidate and a CSV of each of the best trials' metrics, all on
the study: Optuna refuses artifacts on a finished trial, and a report is made after the
trials finished. ``optuna-dashboard STORAGE --artifact-dir DIR`` then shows them.

The metrics themselves are the trials' user attributes, stored by ``beam`` and ``tune`` as
they run. Beam and tune studies keep per-category PCK, not per-pair results, so the trial
CSVs hold what the trial stored; per-pair CSVs come from ``evaluate --output``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import shlex
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from scotsearch._version import __version__
from scotsearch.errors import ConfigError
from scotsearch.study import completed_trials


log = logging.getLogger(__name__)

#: Trials that get their own metrics CSV.
TOP_TRIALS = 3


def _pck(t: FrozenTrial) -> float:
    v = t.user_attrs.get("pck", t.value)
    return float("nan") if v is None else float(v)


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def _trial_row(t: FrozenTrial) -> dict[str, Any]:
    row: dict[str, Any] = {"trial": t.number, "value": t.value}
    for k, v in sorted(t.user_attrs.items()):
        _flat(k, v, row)
    for k, v in sorted(t.params.items()):
        row[f"param.{k}"] = v
    return row


def _csv(rows: list[dict[str, Any]]) -> str:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def study_note(study: optuna.Study, kind: str, storage_text: str) -> str:
    """The Markdown note saved on the study."""
    ident = study.user_attrs.get("identity") or {}
    done = [t for t in completed_trials(study, search=kind)
            if not t.user_attrs.get("pruned") and math.isfinite(_pck(t))]
    best = max(done, key=_pck) if done else None
    lines = [f"## scotsearch {kind} study `{study.study_name}`", ""]
    if best is not None:
        lines += [f"**Best**: layers `{best.user_attrs.get('layers')}`, PCK "
                  f"{_pck(best):.2f} (trial {best.number}).", ""]
    lines += ["| setting | value |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in ident.items()]
    lines += ["", f"Report: `scotsearch report --study {study.study_name} --storage "
              f"{storage_text}` (scotsearch {__version__}). Artifacts: the report's figures "
              "`candidates.csv` (every candidate) and `trial-N-metrics.csv` (the best trials)."]
    return "\n".join(lines)


def check_dashboard() -> None:
    """Raise ConfigError (one line) where optuna-dashboard is not installed."""
    try:
        import optuna_dashboard  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--artifact-dir needs optuna-dashboard: pip install 'scotsearch[dashboard]'"
        ) from None


def publish_to_dashboard(
    study: optuna.Study, kind: str, report: Path, artifact_dir: Path, storage_text: str
) -> list[str]:
    """Note and artifacts for ``optuna-dashboard``; returns the uploaded artifact ids.

    Args:
        study: the study (opened on its storage).
        kind: ``beam`` or ``tune``.
        report: the report folder whose PNG figures are uploaded.
        artifact_dir: the artifact store's folder (``optuna-dashboard --artifact-dir``).
        storage_text: the storage as the user gave it, for the note.

    Raises:
        ConfigError: optuna-dashboard is not installed.
    """
    check_dashboard()
    from optuna.artifacts import FileSystemArtifactStore
    from optuna.artifacts import upload_artifact
    from optuna_dashboard import get_note
    from optuna_dashboard import save_note

    artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(base_path=str(artifact_dir))
    body = study_note(study, kind, storage_text)
    run = [ln for ln in get_note(study).splitlines() if ln.startswith("Run by `")]
    if run:  # keep the command line that ran the search (save_run_note)
        head, _, rest = body.partition("\n\n")
        body = f"{head}\n\n{run[0]}\n\n{rest}"
    save_note(study, body)
    ids = []
    for png in sorted(report.glob("*.png")):
        ids.append(upload_artifact(artifact_store=store, file_path=str(png),
                                   study_or_trial=study, mimetype="image/png"))
    trials = completed_trials(study, search=kind)
    done = sorted((t for t in trials if not t.user_attrs.get("pruned")
                   and math.isfinite(_pck(t))), key=lambda t: (-_pck(t), t.number))
    with tempfile.TemporaryDirectory(prefix=".scotsearch-artifacts-") as tmp:
        path = Path(tmp) / "candidates.csv"
        path.write_text(_csv([_trial_row(t) for t in trials]), encoding="utf-8")
        ids.append(upload_artifact(artifact_store=store, file_path=str(path),
                                   study_or_trial=study, mimetype="text/csv"))
        # Optuna refuses artifacts on a finished trial (they are trial system attributes),
        # and every stored candidate is finished: the best trials' CSVs go on the study too.
        for t in done[:TOP_TRIALS]:
            path = Path(tmp) / f"trial-{t.number}-metrics.csv"
            path.write_text(_csv([_trial_row(t)]), encoding="utf-8")
            ids.append(upload_artifact(artifact_store=store, file_path=str(path),
                                       study_or_trial=study, mimetype="text/csv"))
    return ids


def save_run_note(
    storage: Any, study_name: str, kind: str, argv: Sequence[str] | None
) -> bool:
    """After ``beam`` or ``tune``: a note on the study with the command line that ran it, the
    study's identity (its configuration) and its best candidate, for optuna-dashboard.

    Without optuna-dashboard installed nothing is written and ``False`` is returned: the
    study itself holds every metric as trial user attributes either way.

    Args:
        storage: the study's storage (URL or Optuna storage).
        study_name: the study.
        kind: ``beam`` or ``tune``.
        argv: the command's arguments (after ``scotsearch``).
    """
    try:
        from optuna_dashboard import save_note
    except ImportError:
        log.debug("optuna-dashboard is not installed: no note on study %s", study_name)
        return False
    study = optuna.load_study(study_name=study_name, storage=storage)
    command = shlex.join(["scotsearch", *(argv or [])])
    body = study_note(study, kind, "STORAGE")
    head, _, rest = body.partition("\n\n")
    save_note(study, f"{head}\n\nRun by `{command}`.\n\n{rest}")
    return True


def upload_folder(study: optuna.Study, folder: Path, artifact_dir: Path) -> list[str]:
    """Upload an evaluation report's figures and ``pairs.csv`` as artifacts of ``study``
    (e.g. the per-pair results of the study's best configuration on the test split)."""
    check_dashboard()
    from optuna.artifacts import FileSystemArtifactStore
    from optuna.artifacts import upload_artifact

    artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(base_path=str(artifact_dir))
    files = sorted(folder.glob("*.png")) + sorted(folder.glob("*.csv"))
    return [upload_artifact(artifact_store=store, file_path=str(f), study_or_trial=study,
                            mimetype="image/png" if f.suffix == ".png" else "text/csv")
            for f in files]
