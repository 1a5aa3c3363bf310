"""Cache maintenance: ``scotsearch cache --info | --verify | --prune``.

All three work on a whole ``<cache_dir>/features`` tree, over every key folder in it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from scotsearch._io import TMP_SUFFIX
from scotsearch._io import parse_tmp_owner
from scotsearch._io import pid_alive
from scotsearch.cache_format import ENTRY_SUFFIX
from scotsearch.cache_format import FEATURE_SCHEMA_VERSION
from scotsearch.cache_format import EntryError
from scotsearch.cache_format import canonical_json
from scotsearch.cache_format import key_from_fields
from scotsearch.cache_format import make_key
from scotsearch.cache_format import quick_check
from scotsearch.cache_format import read_entry
from scotsearch.config import Profile
from scotsearch.errors import ScotsearchError
from scotsearch.weights import description_file
from scotsearch.weights import spelling_of


logger = logging.getLogger(__name__)

#: A temporary file older than this is abandoned even if its writer's pid cannot be checked
#: (another host): one entry takes well under a second to write.
TMP_MAX_AGE_S = 24 * 3600
#: A key folder without a manifest younger than this may be being created right now.
YOUNG_FOLDER_S = 600


def _manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / "manifest.json").read_text())
        return data if isinstance(data, dict) and isinstance(data.get("fields"), dict) else None
    except (OSError, ValueError):
        return None


def _key_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"??/*{ENTRY_SUFFIX}"))


def _temporaries(root: Path) -> list[Path]:
    return sorted(root.rglob(f".*{TMP_SUFFIX}")) if root.is_dir() else []


def _size(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        try:
            total += p.stat().st_size
        except OSError:
            pass  # removed concurrently
    return total


def info(root: Path) -> dict[str, Any]:
    """Key folders with their key fields, entry counts and sizes; totals.

    Returns:
        ``{"root", "keys": [...], "entries", "bytes", "temporaries"}``; each key is a dict
        with ``folder``, ``key``, ``backbone``, ``weights``, ``weights_digest``, ``compat``,
        ``image_side``, ``upsample_small``, ``schema``, ``entries``, ``bytes``, ``created``.
    """
    root = Path(root)
    keys = []
    for folder in _key_folders(root):
        entries = _entries(folder)
        m = _manifest(folder) or {}
        f = m.get("fields", {})
        prof = f.get("profile", {})
        keys.append({
            "folder": folder.name,
            "key": m.get("key", "?"),
            "backbone": f.get("backbone", "?"),
            "weights": ", ".join(m.get("weights_seen", [])) or "?",
            "weights_digest": f.get("weights_digest", "?"),
            "compat": f.get("compat", "?"),
            "image_side": prof.get("image_side", "?"),
            "upsample_small": prof.get("upsample_small", "?"),
            "schema": f.get("schema", "?"),
            "entries": len(entries),
            "bytes": _size(entries),
            "created": m.get("created", "?"),
        })
    return {
        "root": str(root),
        "keys": keys,
        "entries": sum(k["entries"] for k in keys),
        "bytes": sum(k["bytes"] for k in keys),
        "temporaries": len(_temporaries(root)),
    }


@dataclass
class VerifyReport:
    """Result of a full check.

    Attributes:
        checked: entries read completely.
        bad: ``(path, reason)`` of every unusable entry or folder.
        temporaries: leftover temporary files (harmless; ``--prune`` removes dead ones).
    """

    checked: int = 0
    bad: list[tuple[Path, str]] = field(default_factory=list)
    temporaries: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad


def verify(root: Path, *, workers: int = 4) -> VerifyReport:
    """Read every entry completely: header, file length, key, image digest, every CRC."""
    root = Path(root)
    report = VerifyReport(temporaries=_temporaries(root))
    jobs: list[tuple[Path, str]] = []
    for folder in _key_folders(root):
        m = _manifest(folder)
        if m is None:
            report.bad.append((folder, "key folder has no readable manifest.json"))
            continue
        for path in _entries(folder):
            jobs.append((path, m["key"]))

    def check(job: tuple[Path, str]) -> tuple[Path, str | None]:
        path, key = job
        sha = path.name[: -len(ENTRY_SUFFIX)]
        if path.parent.name != sha[:2]:
            return path, "entry is in the wrong sub-folder"
        try:
            read_entry(path, key=key, image_sha=sha, layer_ids=None, need_cam=True, check=True)
            return path, None
        except FileNotFoundError:
            return path, None  # pruned or replaced concurrently
        except EntryError as exc:
            return path, exc.reason

    # Threads: reading and CRC-32 release the GIL, so checks overlap with I/O.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for path, reason in pool.map(check, jobs):
            report.checked += 1
            if reason is not None:
                report.bad.append((path, reason))
    return report


def _current_digest(backbone: str, description: str, book: Any) -> tuple[str, str | None]:
    """``("ok", digest)``, ``("gone", None)`` or ``("unknown", None)`` for a weights spelling.

    The digest book answers for files whose size and time are unchanged; otherwise the
    weights are loaded (seconds per backbone) and the answer recorded.
    """
    from scotsearch.backbones import load_backbone
    from scotsearch.cache import weights_ref

    path = description_file(description)
    if path is not None and not path.is_file():
        return "gone", None
    weights = spelling_of(description)
    ref = weights_ref(backbone, weights, 0)
    if ref.identity is None:
        return "unknown", None  # e.g. no local ImageNet checkpoint: cannot tell, keep
    known = book.get(ref.identity)
    if known is not None:
        return "ok", known
    try:
        model = load_backbone(backbone, weights)
    except ScotsearchError:
        return "unknown", None
    book.put(ref.identity, model.weights_digest, model.weights)
    return "ok", model.weights_digest


@dataclass
class PruneReport:
    """What ``prune`` removed (or would remove, with ``dry_run``)."""

    removed: list[tuple[Path, str]] = field(default_factory=list)
    freed: int = 0
    kept_keys: int = 0


def _stale_reason(
    folder: Path, m: dict[str, Any] | None, digests: dict[tuple[str, str], tuple[str, str | None]],
    book: Any,
) -> str | None:
    """Why no key of the current code and weights leads to ``folder`` (``None``: current)."""
    if m is None:
        return "no readable manifest.json"
    fields = m["fields"]
    if key_from_fields(fields).digest != m.get("key") or str(m.get("key", ""))[:16] != folder.name:
        return "manifest does not match its folder"
    if fields.get("schema") != FEATURE_SCHEMA_VERSION:
        return f"schema {fields.get('schema')} (current: {FEATURE_SCHEMA_VERSION})"
    try:
        again = make_key(fields["backbone"], fields["weights_digest"], Profile(**fields["profile"]))
    except (KeyError, TypeError, ScotsearchError):
        again = None
    if again is None or again.digest != m["key"]:
        return "extraction settings changed since it was written (layer scheme, preprocessing or CAM)"
    seen = list(m.get("weights_seen", []))
    if not seen:
        return None
    states = []
    for desc in seen:
        if (fields["backbone"], desc) not in digests:
            digests[(fields["backbone"], desc)] = _current_digest(fields["backbone"], desc, book)
        states.append(digests[(fields["backbone"], desc)])
    if any(s == "unknown" or d == fields["weights_digest"] for s, d in states):
        return None
    return f"its weights ({', '.join(seen)}) are gone or changed"


def _remove(path: Path, dry_run: bool) -> int:
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else _size([path])
    if not dry_run:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return size


def prune(root: Path, *, dry_run: bool = False) -> PruneReport:
    """Remove everything no current key uses.

    Removed: key folders whose manifest is missing or unreadable (once older than
    ``YOUNG_FOLDER_S``), whose schema is not the current one, whose key the current code
    would no longer derive from their own fields (extraction settings changed), or all of
    whose recorded weights spellings now give other weights or are gone (a deleted or
    rewritten ``--weights`` file, random weights of another torch version); entries that
    fail the quick check (truncated, foreign key); temporary files of dead writers; digest
    records of files that changed. Folders whose weights cannot be checked here (no local
    ImageNet checkpoint) are kept.
    """
    root = Path(root)
    report = PruneReport()
    host = socket.gethostname()
    now = time.time()
    for tmp in _temporaries(root):
        owner = parse_tmp_owner(tmp.name)
        try:
            age = now - tmp.stat().st_mtime
        except OSError:
            continue
        dead = owner is not None and owner[0] == host and not pid_alive(owner[1])
        if dead or age > TMP_MAX_AGE_S:
            report.freed += _remove(tmp, dry_run)
            report.removed.append((tmp, "temporary file of a writer that is gone"))
    from scotsearch.cache import DIGESTS_FILE
    from scotsearch.cache import DigestBook

    book = DigestBook(root / DIGESTS_FILE)
    digests: dict[tuple[str, str], tuple[str, str | None]] = {}
    for folder in _key_folders(root):
        m = _manifest(folder)
        if m is None and now - folder.stat().st_mtime < YOUNG_FOLDER_S:
            continue
        reason = _stale_reason(folder, m, digests, book)
        if reason is not None:
            report.freed += _remove(folder, dry_run)
            report.removed.append((folder, reason))
            continue
        report.kept_keys += 1
        for path in _entries(folder):
            sha = path.name[: -len(ENTRY_SUFFIX)]
            try:
                quick_check(path, m["key"], sha)
            except FileNotFoundError:
                continue
            except EntryError as exc:
                report.freed += _remove(path, dry_run)
                report.removed.append((path, exc.reason))
    _prune_digest_book(root, dry_run)
    return report


def _prune_digest_book(root: Path, dry_run: bool) -> None:
    from scotsearch.cache import DIGESTS_FILE
    from scotsearch.cache import DigestBook

    book = DigestBook(root / DIGESTS_FILE)
    records = book.records()
    keep = {}
    for ident_json, rec in records.items():
        try:
            ident = json.loads(ident_json)
        except ValueError:
            continue
        if ident.get("kind") == "file":
            try:
                st = Path(ident["path"]).stat()
            except (OSError, KeyError):
                continue
            if (st.st_size, st.st_mtime_ns) != (ident.get("size"), ident.get("mtime_ns")):
                continue
        keep[canonical_json(ident)] = rec
    if keep != records and not dry_run:
        book.replace(keep)
