"""Cooperating beam workers: candidate-pairs per second of 1 worker against 2 workers.

Runs the same ``scotsearch beam`` search twice on the demo benchmark at the references' image
side 300, each into a fresh study of one SQLite file: once in one process with one CPU thread,
once with ``--workers 2`` (two joblib processes, one thread each, a team on the study). The
feature cache is built before either run, so both time the search alone (process start,
imports and the team's claims included). It checks that both studies hold the same
candidates with the same scores, and prints the throughputs and their ratio.

A third run gives the machine's ceiling for two processes: two independent single-thread
searches (separate studies, no team) at once, each scoring every candidate. Their combined
throughput over the single run's is what two processes reach here when neither shares any
work with the other; on a VM whose cores share memory bandwidth it is well below 2.

Each round also times a search of two candidates (layers 14-15, one depth) with one process
and with ``--workers 2``: the difference is what launching the team costs (the second worker's
process start and imports where they do not overlap the first's, the team's registration and
the splits' waits, the end of the second process), a fixed cost per run that a long search
does not notice. The speed-up without it is printed beside the end-to-end one.

The three runs are repeated ``--rounds`` times, alternating, because this kind of machine's
timings drift by tens of percent between runs minutes apart; each round's ratios are printed
and their medians. The CPU columns are the runs' user and system seconds (all processes):
system time is mostly the kernel handing out fresh memory pages (the layer terms).

The issue's target (#13): >= 1.7x on the 2-core machine.

Usage:
    python benchmarks/bench_workers.py                       # layers 0-15, 2 depths
    python benchmarks/bench_workers.py --layers 0-7 --max-layers 2   # a quicker look
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import optuna
from optuna.trial import TrialState


def children_cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime, r.ru_stime


def timed(cmds: list[list[str]], env: dict[str, str]) -> tuple[float, float, float]:
    """Run ``cmds`` at once; wall, user and system seconds of all their processes."""
    u0, s0 = children_cpu()
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL) for c in cmds]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - t0
    if any(codes):
        sys.exit(f"a search failed: exit codes {codes}")
    u1, s1 = children_cpu()
    return wall, u1 - u0, s1 - s0


def trials(url: str, name: str) -> dict[str, float]:
    study = optuna.load_study(study_name=name, storage=url)
    return {t.user_attrs["layers"]: float(t.value) for t in study.trials
            if t.state == TrialState.COMPLETE and t.value is not None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="0-15")
    ap.add_argument("--max-layers", type=int, default=2)
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--image-side", type=int, default=300)
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--rounds", type=int, default=2,
                    help="times the three runs are repeated, alternating (default 2)")
    ap.add_argument("--term-budget-mb", type=float, default=None,
                    help="cap each process's store of layer terms (0: keep none, the regime "
                         "of a split too large for its terms to stay in memory, as SPair-71k)")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error(f"--rounds must be >= 1, got {args.rounds}")

    exe = [sys.executable, "-m", "scotsearch"]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        # --weights random (seed 0): its digest is recorded when the cache is built, so no run
        # builds the network, as with ImageNet weights on disk (the demo's default spelling
        # would try a download and build a random network in every process, offline).
        setup = ["beam", "--backbone", args.backbone, "--weights", "random",
                 "--image-side", str(args.image_side),
                 "--beam", str(args.beam), "--storage", url, "--cache-dir", f"{tmp}/cache",
                 "--datapath", f"{tmp}/demo"]
        common = [*setup, "--layers", args.layers, "--max-layers", str(args.max_layers)]
        tiny = [*setup, "--layers", "14-15", "--max-layers", "1"]
        env = dict(os.environ)
        if args.term_budget_mb is not None:
            from scotsearch.fused import TERM_BUDGET_ENV

            env[TERM_BUDGET_ENV] = str(args.term_budget_mb)
        print("building the demo data and feature cache (not timed) ...", flush=True)
        subprocess.run([*exe, "-q", "cache", "--dataset", "demo", "--split", "val",
                        "--backbone", args.backbone, "--weights", "random",
                        "--image-side", str(args.image_side),
                        "--cache-dir", f"{tmp}/cache", "--datapath", f"{tmp}/demo"],
                       env=env, check=True)
        # one thread: torch's (OpenMP) and the fused CPU chain's numba kernels', which
        # otherwise take every core (--workers pins both in its workers)
        one_env = {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                   "NUMBA_NUM_THREADS": "1"}
        rows = []
        same = True
        for r in range(args.rounds):
            print(f"round {r + 1}: 1 worker, 1 thread ...", flush=True)
            one = timed([[*exe, "-q", *common, "--study", f"one{r}"]], one_env)
            print(f"round {r + 1}: 2 workers, 1 thread each ...", flush=True)
            two = timed([[*exe, "-q", *common, "--study", f"two{r}", "--workers", "2"]], env)
            print(f"round {r + 1}: 2 independent searches at once, 1 thread each "
                  "(the ceiling) ...", flush=True)
            both = timed([[*exe, "-q", *common, "--study", f"solo{r}{k}"] for k in range(2)],
                         one_env)
            print(f"round {r + 1}: launch cost (a 2-candidate search, 1 and 2 workers) ...",
                  flush=True)
            t_one = timed([[*exe, "-q", *tiny, "--study", f"tiny-one{r}"]], one_env)[0]
            t_two = timed([[*exe, "-q", *tiny, "--study", f"tiny-two{r}", "--workers", "2"]],
                          env)[0]
            rows.append((one, two, both, t_two - t_one))
            a, b = trials(url, f"one{r}"), trials(url, f"two{r}")
            same = same and a == b
        ident = optuna.load_study(study_name="one0", storage=url).user_attrs["identity"]
        n_pairs = int(ident["n_pairs"])
        n_cand = len(trials(url, "one0"))
    cp = n_cand * n_pairs
    print()
    import torch
    from bench_beam import machine_name  # this folder is on the path when run as a script

    print(f"machine: {machine_name(torch.device('cpu'))}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}")
    kept = ("kept up to half the free memory" if args.term_budget_mb is None
            else f"store capped at {args.term_budget_mb:g} MB per process")
    print(f"layer terms: {kept}")
    print(f"search: demo val, {args.backbone}, image side {args.image_side}, layers "
          f"{args.layers}, beam {args.beam}, {args.max_layers} depths: {n_cand} candidates "
          f"x {n_pairs} pairs = {cp} candidate-pairs")
    print(f"{'round':<6}{'run':<26}{'wall s':>9}{'user s':>9}{'sys s':>9}{'cand-pairs/s':>15}")
    for r, (one, two, both, _) in enumerate(rows):
        for name, (wall, user, system), work in (
                ("1 worker x 1 thread", one, cp), ("2 workers x 1 thread", two, cp),
                ("2 independent x 1 thread", both, 2 * cp)):
            print(f"{r + 1:<6}{name:<26}{wall:>9.1f}{user:>9.1f}{system:>9.1f}"
                  f"{work / wall:>15.2f}")
    speed = [one[0] / two[0] for one, two, _, _ in rows]
    launch = [x for _, _, _, x in rows]
    net = [one[0] / (two[0] - x) for one, two, _, x in rows]
    ceiling = [2 * one[0] / both[0] for one, _, both, _ in rows]
    print("speed-up per round: " + ", ".join(f"{x:.2f}x" for x in speed)
          + f"; median {statistics.median(speed):.2f}x (target >= 1.7x)")
    print("launching the team costs per round (s): " + ", ".join(f"{x:.1f}" for x in launch)
          + "; speed-up without it: " + ", ".join(f"{x:.2f}x" for x in net)
          + f"; median {statistics.median(net):.2f}x")
    print("ceiling of two processes per round: " + ", ".join(f"{x:.2f}x" for x in ceiling)
          + f"; median {statistics.median(ceiling):.2f}x")
    print(f"same candidates and scores in every round: {same}")
    if not same:
        sys.exit("the single and team studies differ")


if __name__ == "__main__":
    main()
