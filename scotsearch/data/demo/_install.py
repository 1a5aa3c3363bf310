"""Demo installation: reuse a complete tree, else generate one and rename it into place.

The tree is written in a hidden temporary sibling folder and renamed into place under a
lock, so a killed run never leaves a half dataset that reads as complete, and concurrent
callers end with one valid copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from scotsearch._io import pid_alive
from scotsearch.data.demo._spair_files import _GENERATOR
from scotsearch.data.demo._spair_files import DEMO_VERSION
from scotsearch.data.demo._spair_files import MANIFEST_NAME
from scotsearch.data.demo._spair_files import _write_dataset
from scotsearch.errors import ConfigError
from scotsearch.errors import DataError


try:  # POSIX only; elsewhere installs are merely unlocked (the rename is still atomic).
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


# ----------------------------------------------------------------------------------------
# Public entry point


def demo_path(root: Path, seed: int = 0) -> Path:
    """The ``SPair-71k`` folder :func:`ensure_demo` fills for ``seed`` (may not exist yet)."""
    return Path(root) / f"seed{seed}" / "SPair-71k"


def ensure_demo(root: Path, seed: int = 0) -> Path:
    """Return the demo benchmark's ``SPair-71k`` folder, generating it if needed.

    A complete tree of the current :data:`DEMO_VERSION` and this seed is reused as it is.
    Otherwise the tree is generated in a temporary sibling folder and renamed into
    ``root/seed<seed>``, replacing any incomplete or outdated one. If another process
    installs a valid tree first, that one is kept and this call's copy is deleted.

    Args:
        root: folder holding one ``seed<N>`` subfolder per seed (created if missing).
        seed: non-negative integer; all randomness derives from it.

    Returns:
        ``root/seed<seed>/SPair-71k``, readable by the SPair-71k reader.

    Raises:
        ConfigError: ``seed`` is not a non-negative integer.
        DataError: a bundled photo is missing or the folder cannot be written.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"demo seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    root = Path(root)
    final = root / f"seed{seed}"
    spair = final / "SPair-71k"
    if _is_complete(spair, seed):
        return spair
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_dead_temporaries(root, seed)
        tmp = root / f".seed{seed}.tmp-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
    except OSError as e:
        raise DataError(f"cannot create the demo dataset under {root}: {e}") from e
    try:
        _write_dataset(tmp / "SPair-71k", seed)
        _install(tmp, final, seed)
    except OSError as e:
        raise DataError(f"cannot write the demo dataset under {root}: {e}") from e
    finally:
        # Still here when another process won the race, or when writing failed.
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return spair


# ----------------------------------------------------------------------------------------
# Atomic installation


def _is_complete(spair: Path, seed: int) -> bool:
    """True when ``spair`` holds a whole tree of this version and seed.

    The manifest is written last and lists every file with its size, so a tree cut short,
    or later damaged by removing or truncating files, does not pass.
    """
    try:
        manifest = json.loads((spair / MANIFEST_NAME).read_text(encoding="utf-8"))
        if (
            manifest.get("generator") != _GENERATOR
            or manifest.get("version") != DEMO_VERSION
            or manifest.get("seed") != seed
        ):
            return False
        files = manifest["files"]
        if not isinstance(files, dict) or not files:
            return False
        return all((spair / rel).stat().st_size == size for rel, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _host() -> str:
    # Temporary names carry the host so a process only ever judges its own host's pids.
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"


@contextlib.contextmanager
def _install_lock(root: Path, seed: int) -> Iterator[None]:
    """Serialise check-and-replace of ``root/seed<seed>`` across processes and threads.

    ``flock`` locks belong to the open file description, so two threads of one process
    that each open the lock file exclude each other too.
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(root / f".seed{seed}.lock", "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _install(tmp: Path, final: Path, seed: int) -> None:
    """Rename the finished ``tmp`` tree to ``final`` unless a valid one got there first."""
    with _install_lock(final.parent, seed):
        if _is_complete(final / "SPair-71k", seed):
            return  # another caller finished first; the caller deletes tmp
        # Trash folders are only made and emptied under this lock: any found now are
        # leftovers of a killed run.
        for old in final.parent.glob(f".seed{seed}.trash-*"):
            shutil.rmtree(old, ignore_errors=True)
        if final.exists() or final.is_symlink():
            # Move the stale tree aside in one step, so no reader ever sees it half deleted.
            trash = final.parent / f".seed{seed}.trash-{uuid.uuid4().hex[:12]}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(tmp, final)


def _remove_dead_temporaries(root: Path, seed: int) -> None:
    """Delete temporary trees left by killed generators of this host.

    A temporary tree whose process is still alive belongs to a concurrent caller and is
    left alone; one whose pid no longer exists can never be completed.
    """
    prefix = f".seed{seed}.tmp-{_host()}-"
    for path in root.glob(f".seed{seed}.tmp-*"):
        if not path.name.startswith(prefix):
            continue
        pid_text = path.name[len(prefix) :].split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        if not pid_alive(int(pid_text)):
            shutil.rmtree(path, ignore_errors=True)
