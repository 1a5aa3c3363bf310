"""Shared test configuration: GPU tests skip cleanly without CUDA; a PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    # Without a GPU the Triton kernels run under Triton's interpreter. Triton reads the flag
    # when a function is decorated, for its own library functions too, and other packages
    # (timm) import Triton early: so it is set here, before any test module is imported.
    os.environ["TRITON_INTERPRET"] = "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def devices() -> list[str]:
    """Devices to parametrise over: cpu, and cuda when present."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ------------------------------------------------------------------------------ PostgreSQL
def _postgres_bin() -> Path | None:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def _as_postgres_user() -> tuple[list[str], int, int]:
    """Command prefix and uid/gid to run the server (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return [], os.getuid(), os.getgid()
    import pwd

    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user to start the server as")
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root and runuser is not available")
    return [runuser, "-u", "postgres", "--"], pw.pw_uid, pw.pw_gid


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty database on a PostgreSQL server of its own (127.0.0.1, a free port),
    as a SQLAlchemy URL; skipped where psycopg2 or the server's programs are missing."""
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (psycopg2-binary)")
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    prefix, uid, gid = _as_postgres_user()
    # Outside pytest's 0700 tmp tree, so that the server's user can reach its data folder.
    base = Path(tempfile.mkdtemp(prefix="scotsearch-pg-"))
    os.chown(base, uid, gid)
    data = base / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def pg(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=60)

    try:
        pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "scot")
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "server.log"),
           "-o", f"-p {port} -k {base} -h 127.0.0.1", "start")
        pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "scot", "optuna")
        yield f"postgresql+psycopg2://scot@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True, timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)


def use_synthetic_features(monkeypatch: pytest.MonkeyPatch, *, dataset: bool = False) -> None:
    """Make the CLI commands read synthetic features (two informative layers, 32 x 48
    images) instead of running a network, and with ``dataset`` two synthetic pairs instead of
    a benchmark: the command-line tests then run in a second."""
    from scotsearch.commands import common
    from scotsearch.testing import SyntheticSource
    from scotsearch.testing import synthetic_dataset

    monkeypatch.setattr(
        common, "feature_source",
        lambda args, dev: SyntheticSource(args.backbone, informative=(1, 3), image_hw=(32, 48)),
    )
    if dataset:
        monkeypatch.setattr(
            common, "open_dataset",
            lambda args: synthetic_dataset(2, image_hw=(32, 48), seed=1),
        )
