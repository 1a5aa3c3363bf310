"""``--workers N`` and ``--dask-scheduler``: the same command in N processes, one study.

On one machine the processes are joblib's (its ``loky`` backend: fresh interpreters, not forks
of a process that already holds torch's threads and CUDA state). On a cluster they are tasks
of an existing ``dask.distributed`` cluster, one per Dask worker unless ``--workers`` says
how many, each on its own Dask worker while there are enough. Either way each runs the
command line it was given without these flags, one device of ``--devices`` and an equal
share of its machine's CPU threads; the study storage coordinates them as it does workers
started by hand (``beam``: a team, :mod:`scotsearch.search._beam_team`; ``tune``: Optuna's
trials). The parent shows one progress bar from the study and stops every worker on Ctrl-C,
leaving the study resumable (a killed worker's claimed unit or running trial is taken over by
the next run).

``beam`` on one machine does not wait idle: its own process is worker 0 of the team, and the
others start before it reads its data (:class:`TeamHelpers`).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import uuid
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from scotsearch.commands._worker_process import Gate
from scotsearch.commands._worker_process import run_one
from scotsearch.errors import ConfigError
from scotsearch.errors import ScotsearchError
from scotsearch.errors import first_line


def add_worker_args(g: argparse._ArgumentGroup, *, what: str) -> None:
    """``--workers``, ``--devices`` and ``--dask-scheduler`` (``what``: what they share)."""
    g.add_argument("--workers", type=int, default=1,
                   help=f"run {what} in N worker processes on this machine (joblib; beam: "
                        "this process and N-1 others), each with 1/N of the CPU threads; the "
                        "study storage coordinates them (default 1: this process alone). "
                        "With --dask-scheduler: N tasks on the "
                        "cluster (default: one per Dask worker). beam's workers split each "
                        "depth's pairs, so each forms the layer terms of its own pairs only; "
                        "on one CPU they share its memory bandwidth, so N workers give less "
                        "than N times one (README, Performance); one device or machine per "
                        "worker scales best")
    g.add_argument("--devices", default=None,
                   help="with --workers: comma-separated devices the workers are pinned to, "
                        "round robin (e.g. cuda:0,cuda:1)")
    g.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                   help="run the workers as tasks on an existing dask.distributed cluster "
                        "(e.g. tcp://10.0.0.1:8786); needs a --storage every machine reaches "
                        "(PostgreSQL, or a journal file on a shared file system) and a "
                        "--cache-dir they share. pip install 'scotsearch[dask]'")


def check_worker_args(args: argparse.Namespace) -> bool:
    """Refuse impossible worker flags; True when this run starts workers.

    Raises:
        ConfigError: ``--workers`` below 1, or ``--devices`` without workers.
    """
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    many = args.workers > 1 or args.dask_scheduler is not None
    if args.devices is not None and not many:
        raise ConfigError("--devices goes with --workers N (N > 1)")
    if args.dask_scheduler is not None:
        _check_reachable(args.dask_scheduler)
    return many


def _check_reachable(address: str) -> None:
    # Before any data is read: a TCP scheduler that refuses connections fails at once (the
    # Dask client itself would wait out its connect timeout first).
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls") or parts.hostname is None:
        return  # another transport (inproc, ucx): the client reports its own failures
    try:
        port = parts.port or 8786
        with socket.create_connection((parts.hostname, port), timeout=10):
            pass
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {address}: "
                          f"{first_line(exc)}") from None


def worker_argv(argv: Sequence[str], device: str | None) -> list[str]:
    """``argv`` for one worker: ``--workers``/``--devices``/``--dask-scheduler`` dropped,
    ``-q`` first (the parent draws the progress bar), ``--device`` set when the worker is
    pinned to one.

    Examples:
        >>> worker_argv(["tune", "--trials", "8", "--workers", "2", "--devices=cuda:0,cuda:1"],
        ...             "cuda:1")
        ['-q', 'tune', '--trials', '8', '--device', 'cuda:1']
        >>> worker_argv(["-v", "tune", "--workers=2", "--device", "cpu"], None)  # not pinned
        ['-q', '-v', 'tune', '--device', 'cpu']
    """
    # A worker pinned to a device replaces the user's --device; otherwise it is kept.
    drop = ("--workers", "--devices", "--dask-scheduler", *(("--device",) if device else ()))
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in drop:
            skip = True
            continue
        if a.startswith(tuple(f"{d}=" for d in drop)):
            continue
        out.append(a)
    if "-q" not in out and "--quiet" not in out:
        out.insert(0, "-q")
    if device:
        out += ["--device", device]
    return out


class _Launch:
    """How the workers run: ``start()`` blocks until they end and returns their exit codes;
    ``stop()`` (from Ctrl-C) ends them."""

    def __init__(self, n: int) -> None:
        self.n = n

    def start(self) -> list[int]:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class _Loky(_Launch):
    def __init__(self, argv: Sequence[str], n: int, devices: Sequence[str]) -> None:
        from joblib import delayed

        super().__init__(n)
        threads = max(1, (os.cpu_count() or 1) // n)
        self.jobs = [delayed(run_one)(worker_argv(argv, _pin(devices, k)), threads, n)
                     for k in range(n)]

    def start(self) -> list[int]:
        from joblib import Parallel

        codes = list(Parallel(n_jobs=self.n, backend="loky")(self.jobs))
        # The workers are idle now (their results are in the study). Left alive, the
        # parent's exit would wait for their orderly shutdown: ~1.3 s measured on the demo
        # at side 300, where each held gigabytes of layer terms.
        _end_executor()
        return codes

    def stop(self) -> None:
        _end_executor()


def _end_executor() -> None:
    """Kill the processes of joblib's loky executor (the one Parallel just used)."""
    from joblib.externals.loky import get_reusable_executor

    # reuse=True: the running executor itself. Without it, loky compares the arguments
    # with joblib's, finds them changed, waits for the old workers to finish and starts
    # a new executor of one worker per core, only for it to be killed here.
    get_reusable_executor(reuse=True).shutdown(wait=False, kill_workers=True)


class _Dask(_Launch):
    def __init__(self, argv: Sequence[str], n: int, devices: Sequence[str],
                 scheduler: str) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise ConfigError("--dask-scheduler needs dask.distributed: "
                              "pip install 'scotsearch[dask]'") from None
        try:
            self.client = Client(scheduler, timeout="20s", set_as_default=False)
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: "
                              f"{first_line(exc)}") from None
        info = self.client.scheduler_info(n_workers=-1).get("workers", {})
        if not info:
            self.client.close()
            raise ConfigError(f"the Dask cluster at {scheduler} has no workers")
        addrs = sorted(info)
        super().__init__(n if n > 1 else len(addrs))
        # One task per Dask worker while there are enough, each with its worker's threads
        # shared among the tasks placed on it.
        place = [addrs[k % len(addrs)] for k in range(self.n)]
        run = uuid.uuid4().hex[:8]
        self.futures = [
            self.client.submit(
                run_one, worker_argv(argv, _pin(devices, k)),
                max(1, int(info[a].get("nthreads", 1)) // place.count(a)), self.n,
                key=f"scotsearch-worker-{run}-{k}", workers=[a], allow_other_workers=False,
                pure=False)
            for k, a in enumerate(place)
        ]

    def start(self) -> list[int]:
        try:
            return [int(c) for c in self.client.gather(self.futures)]
        finally:
            self.client.close()

    def stop(self) -> None:
        # Tasks not yet started are cancelled; a running one ends with its Dask worker
        # (Dask cannot interrupt a running task), its claimed unit then taken over.
        self.client.cancel(self.futures, force=True)


class TeamHelpers:
    """Workers 1..N-1 of a team whose worker 0 is this process (``beam --workers N`` on one
    machine), in loky processes of joblib.

    They start at once, so that their slow start (interpreter, imports, kernels) overlaps
    this process's own, and wait at a :class:`Gate` that :meth:`go` opens once this process
    has checked its input and built the feature cache; :meth:`stop` (an error, Ctrl-C)
    closes it and ends them. Measured on the demo at side 300 (2 cores): the team began its
    first depth ~4 s after this process was ready when the workers started only then.

    Args:
        argv: this process's command line (its ``--workers`` and the like are dropped).
        n: workers in the team, this process included (>= 2).
        devices: devices to pin the workers to, round robin; worker 0 takes the first.
    """

    def __init__(self, argv: Sequence[str], n: int, devices: Sequence[str]) -> None:
        # joblib's own loky executor, not Parallel: Parallel(n_jobs=1) (--workers 2 leaves
        # one other worker) would run the job in this very process, and Parallel blocks
        # until every job ends where this process has its own share to score meanwhile.
        from joblib.externals.loky import ProcessPoolExecutor

        self.n = n
        #: worker 0's (this process's) device of ``devices``, or ``None``
        self.device = _pin(devices, 0)
        #: each worker's share of the CPU threads (this process's too)
        self.threads = max(1, (os.cpu_count() or 1) // n)
        self.gate = Gate()
        share = str(self.threads)
        self._executor = ProcessPoolExecutor(
            max_workers=n - 1,
            env={"OMP_NUM_THREADS": share, "MKL_NUM_THREADS": share, "NUMBA_NUM_THREADS": share})
        self._futures = [
            self._executor.submit(run_one, worker_argv(argv, _pin(devices, k)), self.threads,
                                  n, (self.gate.path, self.gate.parent))
            for k in range(1, n)]

    def go(self) -> None:
        """Let the workers begin."""
        self.gate.open()

    def wait(self) -> None:
        """Block until every worker has ended, then end their processes.

        Raises:
            ScotsearchError: a worker exited with a non-zero status or its process died (its
                own error line, if any, has been printed on its standard error).
        """
        codes: list[int] = []
        try:
            for f in self._futures:
                try:
                    codes.append(int(f.result()))
                except ScotsearchError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a worker process that died
                    if type(exc).__name__ not in ("TerminatedWorkerError", "BrokenProcessPool",
                                                  "ShutdownExecutorError"):
                        raise  # a bug in the worker: its traceback
                    codes.append(1)
        finally:
            self._end()
        bad = [c for c in codes if c != 0]
        if bad:
            raise ScotsearchError(f"{len(bad)} of the {self.n - 1} other worker processes failed "
                                  f"(exit status {bad[0]}); their errors are above")

    def stop(self) -> None:
        """End the workers now (their claimed units are taken over by the next run)."""
        self.gate.close()
        self._end()

    def _end(self) -> None:
        # Killed, not asked to leave: they are idle or to be stopped, and an orderly
        # shutdown of processes holding gigabytes of layer terms took ~1.3 s here.
        self._executor.shutdown(wait=False, kill_workers=True)
        self.gate.remove()


def start_helpers(args: argparse.Namespace) -> TeamHelpers:
    """:class:`TeamHelpers` for this command (``args.workers`` in all)."""
    return TeamHelpers(_command_line(args), args.workers, _devices(args))


def _pin(devices: Sequence[str], k: int) -> str | None:
    return devices[k % len(devices)] if devices else None


def _devices(args: argparse.Namespace) -> list[str]:
    return [d.strip() for d in args.devices.split(",")] if args.devices else []


def _command_line(args: argparse.Namespace) -> list[str]:
    # as the user gave it (cli.main keeps it), --workers and all
    return list(getattr(args, "_argv", None) or sys.argv[1:])


def launch_workers(args: argparse.Namespace, dataset: Any, source: Any, *,
                   extra_argv: Sequence[str] = (), progress: Callable[[], int] | None = None,
                   total: int = 0, unit: str = "trial") -> int:
    """``--workers N`` / ``--dask-scheduler`` for a command: the features cached once here,
    then :func:`run_workers` on this command line (plus ``extra_argv``). Returns the number
    of workers that ran."""
    from scotsearch.cache import CachedSource
    from scotsearch.cache import build_cache

    if isinstance(source, CachedSource):
        # Once, before the workers: they would otherwise all extract the same images.
        build_cache(dataset, source, progress=not args.quiet)
    argv = [*_command_line(args), *extra_argv]
    return run_workers(argv, args.workers, _devices(args), scheduler=args.dask_scheduler,
                       progress=progress, total=total, show=not args.quiet, unit=unit)


def run_workers(argv: Sequence[str], n: int, devices: Sequence[str], *,
                scheduler: str | None = None, progress: Callable[[], int] | None = None,
                total: int = 0, show: bool = True, unit: str = "trial") -> int:
    """Run ``argv`` in ``n`` worker processes (or Dask tasks) until all end.

    Args:
        argv: the command line (without the program name), ``--workers`` included.
        n: worker processes; with ``scheduler``, 1 means one per Dask worker.
        devices: devices to pin the workers to, round robin (empty: each worker's default).
        scheduler: a ``dask.distributed`` scheduler's address, or ``None`` for joblib.
        progress: returns the finished units so far (polled for the combined bar).
        total: the units the bar counts to.
        show: draw the bar.
        unit: what the bar counts.

    Returns:
        The number of workers that ran.

    Raises:
        ConfigError: the Dask scheduler cannot be reached or has no workers.
        ScotsearchError: a worker exited with a non-zero status (its own error line has been
            printed on its standard error).
    """
    from tqdm import tqdm

    if n < 1:
        raise ConfigError(f"--workers must be >= 1, got {n}")
    launch: _Launch = _Dask(argv, n, devices, scheduler) if scheduler else _Loky(argv, n, devices)
    codes: list[int] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            codes.extend(launch.start())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the parent's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="scotsearch-workers", daemon=True)
    bar = tqdm(total=total, desc=f"{launch.n} workers", unit=unit,
               disable=not show or None, leave=False)
    try:
        thread.start()
        while thread.is_alive():
            thread.join(timeout=1.0)
            if progress is not None:
                try:
                    bar.n = progress()
                    bar.refresh()
                except Exception:  # noqa: BLE001 - the bar is informational
                    pass
    except KeyboardInterrupt:
        # Stop every worker: the study keeps what they finished, and their claimed units or
        # running trials are taken over by the next run.
        launch.stop()
        raise
    finally:
        bar.close()
    if failure:
        raise failure[0]
    bad = [c for c in codes if c != 0]
    if bad:
        raise ScotsearchError(f"{len(bad)} of {launch.n} workers failed (exit status {bad[0]}); "
                              "their errors are above")
    return launch.n
