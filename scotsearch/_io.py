"""Crash-safe file writes: atomic replace, named temporaries, and whether their writer lives.

Every file scotsearch writes for others to read (cache entries, manifests, the weights
digest book, exported CSVs, evaluation JSON) goes through :func:`atomic_write`, so a reader
sees the old file or all of the new one, never a part. Temporary files are named after
their writer (:func:`tmp_name`), so a clean-up can tell an abandoned one
(:func:`parse_tmp_owner`, :func:`pid_alive`) from one being written right now.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path


#: Suffix of every temporary file :func:`atomic_write` creates.
TMP_SUFFIX = ".tmp"

#: What :func:`check_destination` writes to find a full disk before the work (one page).
_PROBE_BYTES = 4096


def tmp_name(final: Path) -> str:
    """Prefix of a temporary file for ``final``: hidden, with host and pid of the writer.

    ``cache --prune`` deletes temporaries whose writer (on this host) is gone.

    Args:
        final: the file the temporary will replace.

    Returns:
        ``.<name>.<host>.<pid>.``; :func:`tempfile.mkstemp` appends a random part.
    """
    return f".{final.name}.{socket.gethostname()}.{os.getpid()}."


def parse_tmp_owner(name: str) -> tuple[str, int] | None:
    """``(host, pid)`` of the writer that named a temporary file, or ``None``.

    Args:
        name: a file name (no folder), as :func:`tmp_name` and ``mkstemp`` made it.

    Returns:
        The writer's host and pid; ``None`` for a name that is not such a temporary.
    """
    if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
        return None
    parts = name[: -len(TMP_SUFFIX)].split(".")
    # "", <stem>, <extension>, host..., pid, random: the host may contain dots (the cache's
    # file names, the only ones parsed, all have one extension).
    try:
        return ".".join(parts[3:-2]), int(parts[-2])
    except (IndexError, ValueError):
        return None


def temporaries(folder: Path) -> list[Path]:
    """Every temporary file :func:`atomic_write` may have left under ``folder``, sorted."""
    return sorted(folder.rglob(f".*{TMP_SUFFIX}")) if folder.is_dir() else []


def atomic_write(final: Path, data: bytes | str, *, fsync: bool = True) -> None:
    """Write ``data`` to ``final`` so that readers see the old file, or all of the new one.

    A temporary file in the same folder (same file system, so the rename is atomic) is
    written, flushed and fsync'ed, then renamed over ``final`` with ``os.replace``. A writer
    killed at any point leaves at most a hidden ``*.tmp`` file, never a partial ``final``.
    Concurrent writers of the same entry are harmless: the last rename wins and both wrote
    the same content.

    Args:
        final: the file to write; its folder is created if missing (and removed again
            when the write fails, so a full disk or a kill by Ctrl-C leaves no empty folders).
        data: the bytes, or text (written as UTF-8, newlines untranslated).
        fsync: force the bytes to disk before the rename (``False`` where losing the new
            file in a power cut only costs recomputing it).
    """
    made: list[Path] = []
    tmp = None
    try:
        _make_folders(final.parent, made)
        fd, tmp = tempfile.mkstemp(prefix=tmp_name(final), suffix=TMP_SUFFIX, dir=final.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        for folder in reversed(made):  # the folders made for it, unless another writer's
            try:                       # files are in them by now
                folder.rmdir()
            except OSError:
                break
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(final)  # a full disk's error names no file by itself
        raise


def _make_folders(folder: Path, made: list[Path]) -> None:
    """``mkdir -p folder``, appending each folder this call created to ``made``, outermost
    first (a folder another process creates meanwhile is not listed)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for f in reversed(missing):
        try:
            f.mkdir()
        except FileExistsError:
            continue
        made.append(f)


def pid_alive(pid: int) -> bool:
    """``True`` unless process ``pid`` of this host is known to be gone.

    Doubtful cases answer ``True``: removing a live writer's files would corrupt its work,
    keeping a dead one's only wastes space until the next clean-up.

    Args:
        pid: a process id on this host.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True  # cannot tell
    # A killed process whose parent has not yet reaped it still answers kill(0) (a zombie);
    # it will never work again. Linux says so in /proc; elsewhere it counts as alive.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2:][:1] != "Z"


def check_destination(path: Path, what: str = "--output") -> None:
    """Refuse, before any work, an output file that could not be written at the end.

    The file may not exist yet, nor its folders (:func:`atomic_write` creates them); the
    nearest folder that does exist must be a writable folder, and a trial temporary file of
    one block is written and removed there to catch read-only file systems and full disks.
    Creates nothing that stays.

    Args:
        path: the file a command will write.
        what: the option that named it, for the message.

    Raises:
        ScotsearchError: ``path`` is a folder, lies under a file, or its folder is not
            writable or has no room for a block.
    """
    from scotsearch.errors import ScotsearchError

    if path.is_dir():
        raise ScotsearchError(f"{what} {path} is a folder; give a file name")
    folder = path.parent
    while not folder.exists():
        if folder == folder.parent:
            break
        folder = folder.parent
    if not folder.is_dir():
        raise ScotsearchError(f"{what} {path} cannot be created: {folder} is a file")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=tmp_name(path), suffix=TMP_SUFFIX, dir=folder)
        try:
            # A block of data too: a full disk still lets a file be created.
            os.write(fd, b"\0" * _PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ScotsearchError(
            f"{what} {path} cannot be written: {exc.strerror or exc} ({folder})"
        ) from None
    finally:
        if tmp is not None:
            os.unlink(tmp)

