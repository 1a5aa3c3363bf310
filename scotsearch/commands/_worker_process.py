"""What runs in a worker process of ``--workers`` (or a Dask task): its share of the CPU
threads, then the command; for a worker started before its parent is ready, a gate to wait
at (:class:`Gate`) and its slow start done meanwhile."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from scotsearch._io import pid_alive


def run_one(argv: list[str], threads: int, team: int = 1,
            gate: tuple[str, int] | None = None) -> int:
    """In a worker process: its share of the CPU threads, then the command ``argv``.

    Args:
        argv: the command line (without the program name).
        threads: the worker's CPU threads (torch's and numba's).
        team: workers launched together (a beam team's expected size).
        gate: ``(folder, parent pid)`` of a :class:`Gate` to wait at, after the imports,
            until the parent lets the work begin (``None``: begin at once).

    Returns:
        The command's exit status (0 without running it when the gate closed).
    """
    from tqdm import tqdm

    _share_threads(threads)
    # A beam worker sizes its batches by the team; the ones launched together are promised
    # here, before they can see each other in the study.
    from scotsearch.study import TEAM_SIZE_ENV

    os.environ[TEAM_SIZE_ENV] = str(team)
    # The worker draws no bar (-q), but tqdm's first bar creates a lock of multiprocessing
    # semaphores, which a worker ended by kill leaves behind for the parent's resource
    # tracker to warn about ("leaked semaphore objects") at its exit. One thread lock does.
    tqdm.set_lock(threading.RLock())
    if gate is not None:
        _prepare(argv)
        if not wait_gate(*gate):
            return 0  # the parent stopped before the work (its error is its own to report)
    from scotsearch import cli

    # The parent prints the one summary; a worker's errors still reach standard error.
    with contextlib.redirect_stdout(io.StringIO()):
        return cli.main(argv)


def _share_threads(threads: int) -> None:
    import torch

    threads = max(1, threads)
    torch.set_num_threads(threads)
    # numba's kernels (the fused CPU chain) size their pool from this at import, and
    # default to every core: N workers would each run that many threads.
    os.environ["NUMBA_NUM_THREADS"] = str(threads)
    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]


@contextlib.contextmanager
def thread_share(threads: int) -> Iterator[None]:
    """This process's torch and numba threads cut to ``threads`` (its share of the CPU as
    worker 0 of a team), restored on leaving."""
    import numba  # before the cut, so that its pool keeps its default size for after
    import torch

    env = os.environ.get("NUMBA_NUM_THREADS")
    before = (torch.get_num_threads(), numba.get_num_threads())  # type: ignore[attr-defined]
    _share_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])  # type: ignore[attr-defined]
        if env is None:
            os.environ.pop("NUMBA_NUM_THREADS", None)
        else:
            os.environ["NUMBA_NUM_THREADS"] = env


def _prepare(argv: list[str]) -> None:
    # A worker started before its parent is ready does its own slow start meanwhile: the
    # imports (torch alone ~1.3-2 s here), and numba's kernels loaded from their cache.
    import importlib

    from scotsearch import cli

    args = cli.build_parser().parse_args(argv)  # imports every command's module
    importlib.import_module("scotsearch.search.beam_study")
    device, engine = getattr(args, "device", "cpu"), getattr(args, "engine", "eager")
    if device not in ("auto", "cpu") or engine == "eager":
        return
    import torch

    from scotsearch.fused import available

    if (device == "cpu" or not torch.cuda.is_available()) and available() is None:
        from scotsearch.fused import warm_up

        warm_up("cpu")


#: Seconds between a waiting worker's looks at its gate.
GATE_POLL_S = 0.02


class Gate:
    """A folder through which a process tells the workers it started early (before reading
    its data) to begin (``go``) or to leave without working (``stop``)."""

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix=f"scotsearch-gate-{os.getpid()}-")
        self.parent = os.getpid()

    def open(self) -> None:
        Path(self.path, "go").touch()

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):  # removed already: nobody waits
            Path(self.path, "stop").touch()

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def wait_gate(path: str, parent: int) -> bool:
    """In a worker: ``True`` once the gate at ``path`` opens; ``False`` when it is closed or
    removed, or the process ``parent`` that made it is gone."""
    go, stop = Path(path, "go"), Path(path, "stop")
    while True:
        if go.exists():
            return True
        if stop.exists() or not Path(path).is_dir() or not pid_alive(parent):
            return False
        time.sleep(GATE_POLL_S)
