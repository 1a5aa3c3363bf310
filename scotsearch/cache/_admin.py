"""Cache maintenance: ``scotsearch cache --info | --verify | --prune``.

All three work on a whole features folder (``<cache_dir>/features``,
:func:`~scotsearch.cache.features_dir_of`), over every key folder in it.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from scotsearch._io import parse_tmp_owner
from scotsearch._io import pid_alive
from scotsearch._io import temporaries
from scotsearch.backbones import load_backbone
from scotsearch.cache._digests import DigestBook
from scotsearch.cache._digests import weights_ref
from scotsearch.cache._format import FEATURE_SCHEMA_VERSION
from scotsearch.cache._format import MANIFEST
from scotsearch.cache._format import EntryError
from scotsearch.cache._format import canonical_json
from scotsearch.cache._format import digests_path
from scotsearch.cache._format import entry_files
from scotsearch.cache._format import entry_metadata
from scotsearch.cache._format import entry_sha
from scotsearch.cache._format import in_its_shard
from scotsearch.cache._format import key_folder_name
from scotsearch.cache._format import key_folders
from scotsearch.cache._format import key_from_fields
from scotsearch.cache._format import make_key
from scotsearch.cache._format import manifest_path
from scotsearch.cache._format import quick_check
from scotsearch.cache._format import read_entry
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
    """A key folder's manifest, or ``None`` if missing, unreadable or without key fields."""
    try:
        data = json.loads(manifest_path(folder).read_text())
        return data if isinstance(data, dict) and isinstance(data.get("fields"), dict) else None
    except (OSError, ValueError):
        return None


def _holds_current_entries(folder: Path) -> bool:
    """Whether some entry of ``folder`` has the current schema and this folder's key."""
    for path in entry_files(folder):
        try:
            meta = entry_metadata(path)
        except (FileNotFoundError, EntryError):
            continue
        if (meta.get("schema") == str(FEATURE_SCHEMA_VERSION)
                and key_folder_name(str(meta.get("key", ""))) == folder.name):
            return True
    return False


def _size(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        try:
            total += p.stat().st_size
        except OSError:
            pass  # removed concurrently
    return total


def _estimate(backbone: Any, entries: list[Path]) -> int | None:
    """What the build's estimate says these entries take (their sizes from their headers);
    None where the backbone or an entry's size cannot be read."""
    from scotsearch.cache._estimate import entry_bytes

    total = 0
    try:
        for path in entries:
            h, w = (int(v) for v in entry_metadata(path)["image_size"].split(","))
            total += entry_bytes(str(backbone), (h, w))
    except Exception:  # noqa: BLE001 - informational only: a damaged entry is --verify's job
        return None
    return total


def info(features_dir: Path) -> dict[str, Any]:
    """Key folders with their key fields, entry counts and sizes; totals.

    Args:
        features_dir: the features folder (``<cache_dir>/features``).

    Returns:
        ``{"features_dir", "keys": [...], "entries", "bytes", "temporaries"}``; each key is
        a dict with ``folder``, ``key``, ``backbone``, ``weights``, ``weights_digest``, ``compat``,
        ``image_side``, ``upsample_small``, ``schema``, ``entries``, ``bytes``,
        ``estimated_bytes`` (what the build's estimate gives for them), ``created``.
    """
    features_dir = Path(features_dir)
    keys = []
    for folder in key_folders(features_dir):
        entries = entry_files(folder)
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
            "estimated_bytes": _estimate(f.get("backbone"), entries),
            "created": m.get("created", "?"),
        })
    return {
        "features_dir": str(features_dir),
        "keys": keys,
        "entries": sum(k["entries"] for k in keys),
        "bytes": sum(k["bytes"] for k in keys),
        "temporaries": len(temporaries(features_dir)),
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
        """No entry or folder is bad."""
        return not self.bad


def verify(features_dir: Path, *, workers: int = 4) -> VerifyReport:
    """Read every entry completely: header, file length, key, image digest, every CRC.

    Args:
        features_dir: the features folder (``<cache_dir>/features``).
        workers: threads reading entries.
    """
    features_dir = Path(features_dir)
    report = VerifyReport(temporaries=temporaries(features_dir))
    jobs: list[tuple[Path, str]] = []
    for folder in key_folders(features_dir):
        m = _manifest(folder)
        if m is None:
            report.bad.append((folder, f"key folder has no readable {MANIFEST}"))
            continue
        for path in entry_files(folder):
            jobs.append((path, m["key"]))

    def check(job: tuple[Path, str]) -> tuple[Path, str | None]:
        path, key = job
        sha = entry_sha(path)
        if not in_its_shard(path):
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


def _current_digest(
    backbone: str, description: str, book: DigestBook
) -> tuple[str, str | None]:
    """``("ok", digest)``, ``("gone", None)`` or ``("unknown", None)`` for a weights spelling.

    The digest book answers for files whose size and time are unchanged; otherwise the
    weights are loaded (seconds per backbone) and the answer recorded.
    """
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
    folder: Path, m: dict[str, Any] | None,
    digests: dict[tuple[str, str], tuple[str, str | None]], book: DigestBook,
) -> str | None:
    """Why no key of the current code and weights leads to ``folder`` (``None``: current)."""
    if m is None:
        return f"no readable {MANIFEST}"
    fields = m["fields"]
    if (key_from_fields(fields).digest != m.get("key")
            or key_folder_name(str(m.get("key", ""))) != folder.name):
        return "manifest does not match its folder"
    if fields.get("schema") != FEATURE_SCHEMA_VERSION:
        return f"schema {fields.get('schema')} (current: {FEATURE_SCHEMA_VERSION})"
    try:
        profile = Profile(**fields["profile"])
        again = make_key(fields["backbone"], fields["weights_digest"], profile)
    except (KeyError, TypeError, ScotsearchError):
        again = None
    if again is None or again.digest != m["key"]:
        return ("extraction settings changed since it was written "
                "(layer scheme, preprocessing or CAM)")
    seen = list(m.get("weights_seen", []))
    if not seen:
        return None
    states = []
    for desc in seen:
        if (fields["backbone"], desc) not in digests:
            digests[(fields["backbone"], desc)] = _current_digest(
                fields["backbone"], desc, book)
        states.append(digests[(fields["backbone"], desc)])
    if any(s == "unknown" or d == fields["weights_digest"] for s, d in states):
        return None
    return f"its weights ({', '.join(seen)}) are gone or changed"


def _remove(path: Path, dry_run: bool) -> int:
    """Delete a file or folder (unless ``dry_run``); the bytes it held."""
    if path.is_dir():
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    else:
        size = _size([path])
    if not dry_run:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return size


def prune(features_dir: Path, *, dry_run: bool = False) -> PruneReport:
    """Remove everything no current key uses.

    Removed: key folders whose manifest is missing or unreadable (once older than
    ``YOUNG_FOLDER_S``), whose schema is not the current one, whose key the current code
    would no longer derive from their own fields (extraction settings changed), or all of
    whose recorded weights spellings now give other weights or are gone (a deleted or
    rewritten ``--weights`` file, random weights of another torch version); entries that
    fail the quick check (truncated, foreign key); temporary files of dead writers; digest
    records of files that changed. Folders whose weights cannot be checked here (no local
    ImageNet checkpoint) are kept.

    Args:
        features_dir: the features folder (``<cache_dir>/features``).
        dry_run: only report what would be removed.
    """
    features_dir = Path(features_dir)
    report = PruneReport()
    host = socket.gethostname()
    now = time.time()
    for tmp in temporaries(features_dir):
        owner = parse_tmp_owner(tmp.name)
        try:
            age = now - tmp.stat().st_mtime
        except OSError:
            continue
        dead = owner is not None and owner[0] == host and not pid_alive(owner[1])
        if dead or age > TMP_MAX_AGE_S:
            report.freed += _remove(tmp, dry_run)
            report.removed.append((tmp, "temporary file of a writer that is gone"))
    book = DigestBook(digests_path(features_dir))
    digests: dict[tuple[str, str], tuple[str, str | None]] = {}
    for folder in key_folders(features_dir):
        m = _manifest(folder)
        if m is None and now - folder.stat().st_mtime < YOUNG_FOLDER_S:
            continue
        if m is None and _holds_current_entries(folder):
            # A damaged manifest says nothing about the entries: ones of the current schema
            # under their own key's folder may be in use right now. Kept; the next run that
            # uses this key writes the manifest again.
            logger.warning("cache folder %s: %s is unreadable but its entries are current; "
                        "kept (the next run using this cache rewrites it)", folder, MANIFEST)
            report.kept_keys += 1
            continue
        reason = _stale_reason(folder, m, digests, book)
        if reason is not None:
            report.freed += _remove(folder, dry_run)
            report.removed.append((folder, reason))
            continue
        report.kept_keys += 1
        assert m is not None  # a folder without a manifest is stale
        for path in entry_files(folder):
            try:
                quick_check(path, m["key"], entry_sha(path))
            except FileNotFoundError:
                continue
            except EntryError as exc:
                report.freed += _remove(path, dry_run)
                report.removed.append((path, exc.reason))
    _prune_digest_book(book, dry_run)
    return report


def _prune_digest_book(book: DigestBook, dry_run: bool) -> None:
    """Drop the records of weights files whose size or time changed (or that are gone)."""
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
