"""``--workers N``: the same command in N processes on one machine, sharing one study.

The processes are joblib's (its ``loky`` backend: fresh interpreters, not forks of a process
that already holds torch's threads and CUDA state). Each runs the command line it was given
with ``--workers 1``, one device of ``--devices`` and an equal share of the CPU threads; the
study storage coordinates them as it does workers started by hand. The parent shows one
progress bar from the study's counted trials and stops every worker on Ctrl-C, leaving the
study resumable (a killed worker's running trial is retried by the next run).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Callable
from collections.abc import Sequence

from scotsearch.errors import ConfigError
from scotsearch.errors import ScotsearchError


def worker_argv(argv: Sequence[str], device: str | None) -> list[str]:
    """``argv`` for one worker: ``--workers``/``--devices`` dropped, ``-q`` first (the parent
    draws the progress bar), ``--device`` set when the worker is pinned to one.

    Examples:
        >>> worker_argv(["tune", "--trials", "8", "--workers", "2", "--devices=cuda:0,cuda:1"],
        ...             "cuda:1")
        ['-q', 'tune', '--trials', '8', '--device', 'cuda:1']
        >>> worker_argv(["-v", "tune", "--workers=2", "--device", "cpu"], None)  # not pinned
        ['-q', '-v', 'tune', '--device', 'cpu']
    """
    # A worker pinned to a device replaces the user's --device; otherwise it is kept.
    drop = ("--workers", "--devices", "--device") if device else ("--workers", "--devices")
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


def _run_one(argv: list[str], threads: int) -> int:
    # In the worker process: its share of the CPU, then the command itself.
    import torch

    from scotsearch import cli

    torch.set_num_threads(max(1, threads))
    # The parent prints the one summary; a worker's errors still reach standard error.
    with contextlib.redirect_stdout(io.StringIO()):
        return cli.main(argv)


def run_workers(argv: Sequence[str], n: int, devices: Sequence[str], *,
                progress: Callable[[], int] | None = None, total: int = 0,
                show: bool = True) -> None:
    """Run ``argv`` in ``n`` worker processes until all end.

    Args:
        argv: the command line (without the program name), ``--workers`` included.
        n: worker processes.
        devices: devices to pin the workers to, round robin (empty: each worker's default).
        progress: returns the finished units so far (polled for the combined bar).
        total: the units the bar counts to.
        show: draw the bar.

    Raises:
        ScotsearchError: a worker exited with a non-zero status (its own error line has been
            printed on its standard error).
    """
    from joblib import Parallel
    from joblib import delayed
    from tqdm import tqdm

    if n < 1:
        raise ConfigError(f"--workers must be >= 1, got {n}")
    threads = max(1, (os.cpu_count() or 1) // n)
    jobs = [delayed(_run_one)(worker_argv(argv, devices[k % len(devices)] if devices else None),
                              threads) for k in range(n)]
    codes: list[int] = []
    failure: list[BaseException] = []

    def launch() -> None:
        try:
            codes.extend(Parallel(n_jobs=n, backend="loky")(jobs))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the parent's thread
            failure.append(exc)

    thread = threading.Thread(target=launch, name="scotsearch-workers", daemon=True)
    bar = tqdm(total=total, desc=f"{n} workers", unit="trial", disable=not show or None,
               leave=False)
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
        # Stop every worker: the study keeps what they finished, and their running trials
        # are retried by the next run.
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=False, kill_workers=True)
        raise
    finally:
        bar.close()
    if failure:
        raise failure[0]
    bad = [c for c in codes if c != 0]
    if bad:
        raise ScotsearchError(f"{len(bad)} of {n} workers failed (exit status {bad[0]}); "
                              "their errors are above")

