"""``scotsearch beam``: which hyperpixel layers give the best validation PCK (beam search).

Every scored candidate is stored in the study the moment its chunk completes, so a re-run of
the same command resumes: the beam is re-derived from the stored scores
(:func:`scotsearch.search.beam.beam_search` with ``done``) and nothing stored is scored again.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.storages import BaseStorage

from scotsearch.commands.common import add_backbone_args
from scotsearch.commands.common import add_data_args
from scotsearch.commands.common import add_match_args
from scotsearch.errors import ConfigError
from scotsearch.evaluate import Evaluator
from scotsearch.presets import reference_algorithm
from scotsearch.search.beam import BeamResult
from scotsearch.search.beam import Candidate
from scotsearch.search.beam import DepthResult
from scotsearch.search.beam import Subset
from scotsearch.search.beam import beam_search
from scotsearch.layers import format_layers as subset_key
from scotsearch.search.race import out_of_beam
from scotsearch.study import add_layer_trial
from scotsearch.study import check_identity
from scotsearch.study import completed_trials
from scotsearch.study import describe_storage
from scotsearch.study import evaluator_identity
from scotsearch.study import environment
from scotsearch.study import open_storage
from scotsearch.study import open_study


log = logging.getLogger(__name__)

HELP = "beam search over hyperpixel layer subsets by validation PCK (resumable)"

def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search")
    g.add_argument("--beam", type=int, default=4, help="beam width (default 4, as the references)")
    g.add_argument("--max-layers", type=int, default=8,
                   help="largest subset size = number of depths (default 8); raising it later "
                        "continues a finished study deeper")
    g.add_argument("--algorithm", default="auto", choices=("auto", "reference", "fixed"),
                   help="reference: HPF/SCOT's beamsearch.py exactly (initial beam 0..beam-1, "
                        "new layers above the base, `break` on duplicates); fixed: every layer "
                        "may start, duplicates skipped. auto (default): reference with "
                        "--compat scot|hpf, else fixed")
    g.add_argument("--layers", default=None,
                   help="search only among these layer ids, e.g. 0-3,8-30 (default: all)")
    g.add_argument("--study", default=None,
                   help="study name (default: beam-DATASET-SPLIT-BACKBONE-VARIANT[-COMPAT])")
    g.add_argument("--storage", default=None,
                   help="study storage: SQLAlchemy URL, journal:FILE or FILE.log "
                        "(default: $SCOTSEARCH_STORAGE, $OPTUNA_STORAGE, "
                        "sqlite:///studies/scotsearch.db)")
    g.add_argument("--chunk", type=int, default=16,
                   help="candidates scored per evaluator call and stored together (default 16); "
                        "a kill loses at most one chunk")
    g.add_argument("--race", type=float, default=None, metavar="Z",
                   help="racing: stop scoring a candidate once Z standard errors of paired "
                        "per-pair PCK differences put it out of the beam (e.g. 3; off by "
                        "default; not with the reference algorithm). A kill then loses the "
                        "current depth's unfinished work")
    g.add_argument("--race-block", type=int, default=64,
                   help="pairs scored between two racing checks (default 64)")
    add_data_args(p, split="val")
    add_backbone_args(p)
    add_match_args(p, command="beam")


@dataclass
class BeamOutcome:
    """What :func:`run_beam` did.

    Attributes:
        result: the search result (indices translated to layer ids).
        study: the study holding every candidate.
        layer_ids: the layer ids searched over.
    """

    result: BeamResult
    study: optuna.Study
    layer_ids: tuple[int, ...]

    @property
    def best_layers(self) -> tuple[int, ...]:
        return self.result.best.layers

    @property
    def best_pck(self) -> float:
        return self.result.best.score


def _parse_layer_ranges(text: str, n: int) -> tuple[int, ...]:
    ids: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                ids.update(range(lo, hi + 1))
            else:
                ids.add(int(part))
        except ValueError:
            raise ConfigError(f"cannot read layer ids from {text!r}; write e.g. 0-3,8,9") from None
    bad = sorted(i for i in ids if not 0 <= i < n)
    if bad:
        raise ConfigError(f"layer id(s) {bad} do not exist (ids 0..{n - 1})")
    if not ids:
        raise ConfigError("--layers names no layer")
    return tuple(sorted(ids))


def _check_counts(*, beam: int, max_layers: int, chunk: int) -> None:
    for name, value in (("--beam", beam), ("--max-layers", max_layers), ("--chunk", chunk)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")


def default_study_name(
    dataset: str, split: str, backbone: str, variant: str, compat: str | None, reference: bool
) -> str:
    """``beam-demo-val-resnet101-ot-rhm``, plus ``-COMPAT`` for ``--compat`` and
    ``-reference``/``-fixed`` when ``--algorithm`` departs from what the compat mode implies.
    """
    name = f"beam-{dataset}-{split}-{backbone}-{variant}"
    if compat:
        name += f"-{compat}"
    if reference != reference_algorithm(compat):
        name += "-reference" if reference else "-fixed"
    return name


def _pairs_digest(evaluator: Evaluator, pair_index: Sequence[int]) -> str:
    h = hashlib.sha256()
    for i in pair_index:
        p = evaluator.pairs[i]
        h.update(f"{p.pair_id}|{p.src_path}|{p.trg_path}\n".encode())
    return h.hexdigest()[:16]


def beam_identity(
    evaluator: Evaluator,
    *,
    beam: int,
    reference: bool,
    layer_ids: Sequence[int],
    pair_index: Sequence[int],
    race: float | None = None,
) -> dict[str, Any]:
    """What a beam study's stored scores and candidates depend on (checked on resume).

    ``max_layers`` and ``chunk`` are left out on purpose: the beam of the first depths does
    not depend on them, so a finished study may be continued deeper.
    """
    return {
        "kind": "beam",
        **evaluator_identity(evaluator),
        "match": evaluator.match.to_dict(),
        "algorithm": "reference" if reference else "fixed",
        "beam": int(beam),
        "search_layers": subset_key(layer_ids),
        "n_pairs": len(pair_index),
        "pairs_digest": _pairs_digest(evaluator, pair_index),
        "race": race,
    }


class _Progress:
    """One tqdm bar per depth: candidates/s, candidate-pairs/s and the best so far."""

    def __init__(self, *, enabled: bool, max_layers: int) -> None:
        self.enabled = enabled
        self.max_layers = max_layers
        self.bar: Any = None
        self.best: Candidate | None = None
        self.t0 = 0.0
        self.pair_evals = 0
        self.chunk_size = 0

    def depth_start(self, depth: int, subsets: list[Subset], n_todo: int) -> None:
        self.close()
        log.debug("depth %d: %d candidates, %d to score", depth + 1, len(subsets), n_todo)
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=len(subsets), initial=len(subsets) - n_todo,
            desc=f"depth {depth + 1}/{self.max_layers}", unit="cand", leave=True,
        )
        self.t0 = time.perf_counter()
        self.pair_evals = 0
        self._postfix()

    def chunk_start(self, size: int) -> None:
        self.chunk_size = size

    def pair_done(self, n: int) -> None:
        self.pair_evals += n * self.chunk_size
        if self.bar is not None:
            self._postfix(refresh=False)

    def scored(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def depth_end(self, depth: DepthResult, best: Candidate) -> None:
        self.best = best
        if self.bar is not None:
            self._postfix()
        log.info(
            "depth %d beam: %s", depth.depth + 1,
            "; ".join(f"{c.key} {c.score:.2f}" for c in depth.beam),
        )

    def _postfix(self, refresh: bool = True) -> None:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        post = {"cand-pairs/s": f"{self.pair_evals / dt:.1f}"}
        if self.best is not None:
            post["best"] = f"{self.best.score:.2f} ({self.best.key})"
        self.bar.set_postfix(post, refresh=refresh)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_beam(
    evaluator: Evaluator,
    *,
    study: str,
    storage: BaseStorage | str | None = None,
    beam: int = 4,
    max_layers: int = 8,
    reference: bool = False,
    layers: Sequence[int] | None = None,
    chunk: int = 16,
    pair_index: Sequence[int] | None = None,
    progress: bool = False,
    race: float | None = None,
    race_block: int = 64,
) -> BeamOutcome:
    """Run (or resume) a beam search and store every scored candidate in a study.

    Args:
        evaluator: scores subsets on the split (its match, profile, alpha and threshold are
            the search's; the first alpha is the objective).
        study: study name; created on first use, resumed afterwards.
        storage: Optuna storage or URL (``None``: environment / default SQLite file).
        beam: beam width.
        max_layers: largest subset size.
        reference: the references' algorithm with its quirks (:mod:`scotsearch.search.beam`).
        layers: layer ids to search among (default: all of the backbone's).
        chunk: candidates per evaluator call; each chunk is stored as soon as it is scored.
        pair_index: pairs to score on (default: all of the split).
        progress: show a progress bar per depth.
        race: racing z (:mod:`scotsearch.search.race`); ``None``: every candidate is scored
            on every pair. A depth's candidates are then scored together, block by block,
            and stored when the depth ends.
        race_block: pairs per racing block.

    Returns:
        The search result with layer ids, and the study.

    Raises:
        ConfigError: bad parameters, or the study was started with other settings.
    """
    n_all = len(evaluator.specs)
    if layers is None:
        layer_ids = tuple(range(n_all))
    else:
        layer_ids = tuple(sorted({int(i) for i in layers}))
    if not layer_ids or layer_ids[0] < 0 or layer_ids[-1] >= n_all:
        raise ConfigError(f"layer ids must lie in 0..{n_all - 1}")
    _check_counts(beam=beam, max_layers=max_layers, chunk=chunk)
    if len(evaluator.alphas) != 1:
        raise ConfigError("the beam search optimises PCK at one alpha; give a single --alpha")
    if pair_index is None:
        pairs = list(range(len(evaluator.pairs)))
    else:
        pairs = [int(i) for i in pair_index]
    if not pairs:
        raise ConfigError("no pairs to score on")
    if race is not None:
        if not (race > 0 and math.isfinite(race)):
            raise ConfigError(f"--race must be a positive number of standard errors, got {race}")
        if reference:
            raise ConfigError("--race is not available with the reference algorithm, which "
                              "scores every candidate on every pair")
        if race_block < 2:
            raise ConfigError(f"--race-block must be >= 2 pairs, got {race_block}")

    st = storage if isinstance(storage, BaseStorage) else open_storage(storage)
    stud = open_study(study, st)
    check_identity(
        stud, beam_identity(evaluator, beam=beam, reference=reference, layer_ids=layer_ids,
                            pair_index=pairs, race=race)
    )
    stud.set_user_attr("environment", environment())

    # The algorithm works on indices 0..n-1 into layer_ids; the map is monotone, so "above
    # the base" and the candidate order mean the same on ids.
    to_index = {lid: i for i, lid in enumerate(layer_ids)}

    def ids(sub: Subset) -> tuple[int, ...]:
        return tuple(layer_ids[i] for i in sub)

    done: dict[Subset, float] = {}
    for t in completed_trials(stud, search="beam"):
        sub = tuple(int(v) for v in str(t.user_attrs["layers"]).split(","))
        if all(v in to_index for v in sub):
            # A raced-out candidate has no full-split score: it ranks last (NaN).
            value = float("nan") if t.user_attrs.get("pruned") else float(t.value)
            done.setdefault(tuple(to_index[v] for v in sub), value)
    if done:
        log.info("study '%s': resuming with %d stored candidates", study, len(done))

    cats = [evaluator.pairs[i].category for i in pairs]
    cat_index = {c: np.array([k for k, x in enumerate(cats) if x == c]) for c in sorted(set(cats))}
    extras: dict[Subset, dict[str, Any]] = {}
    bar = _Progress(enabled=progress, max_layers=max_layers)

    def score_fn(subsets: list[Subset]) -> list[float]:
        bar.chunk_start(len(subsets))
        t0 = time.perf_counter()
        scores = evaluator.score([ids(s) for s in subsets], pair_index=pairs,
                                 progress=bar.pair_done)
        wall = (time.perf_counter() - t0) / len(subsets)
        pck = scores.pck[:, 0, :]  # [S x P]
        mean = scores.mean()[:, 0]
        pooled = scores.pooled()[:, 0]
        for k, s in enumerate(subsets):
            extras[s] = {
                "pooled_pck": float(pooled[k]),
                "per_category": {
                    c: float(pck[k, ix].mean() * 100.0) for c, ix in cat_index.items()
                },
                "wall_time": float(wall),
            }
        return [float(v) for v in mean]

    depth_known: list[float] = []  # resumed full-split scores of the current depth

    def depth_start(depth: int, subsets: list[Subset], n_todo: int) -> None:
        depth_known[:] = [done[s] for s in subsets if s in done and not math.isnan(done[s])]
        bar.depth_start(depth, subsets, n_todo)

    def race_fn(subsets: list[Subset]) -> list[float]:
        assert race is not None
        n_pairs = len(pairs)
        pck = np.zeros((len(subsets), n_pairs))  # per-pair PCK x 100
        correct = np.zeros((len(subsets), n_pairs))
        n_kps = np.zeros(n_pairs)
        seen = np.zeros(len(subsets), dtype=np.int64)
        walls = np.zeros(len(subsets))
        alive = list(range(len(subsets)))
        for start in range(0, n_pairs, race_block):
            stop = min(start + race_block, n_pairs)
            for c0 in range(0, len(alive), chunk):
                part = alive[c0 : c0 + chunk]
                bar.chunk_start(len(part))
                t0 = time.perf_counter()
                sc = evaluator.score([ids(subsets[i]) for i in part],
                                     pair_index=pairs[start:stop], progress=bar.pair_done)
                walls[part] += (time.perf_counter() - t0) / len(part)
                pck[part, start:stop] = sc.pck[:, 0, :] * 100.0
                correct[part, start:stop] = sc.n_correct[:, 0, :]
                n_kps[start:stop] = sc.n_kps
            seen[alive] = stop
            if stop < n_pairs:
                drop = out_of_beam(pck[alive, :stop], beam, race, known=depth_known)
                alive = [i for i, d in zip(alive, drop) if not d]
        out = []
        for k, s in enumerate(subsets):
            n = int(seen[k])
            # the same arithmetic as Scores.mean(), so a finished candidate's score equals
            # the unraced search's to the last bit
            mean = float((correct[k, :n] / n_kps[:n]).mean() * 100.0)
            raced = n < n_pairs
            extras[s] = {
                "pooled_pck": float(correct[k, :n].sum() / n_kps[:n].sum() * 100.0),
                "per_category": {
                    c: float(pck[k, ix[ix < n]].mean())
                    for c, ix in cat_index.items() if (ix < n).any()
                },
                "wall_time": float(walls[k]),
            }
            if raced:
                extras[s].update(pruned=True, pck_partial=mean, pairs=n)
            out.append(float("nan") if raced else mean)
        return out

    match_d = evaluator.match.to_dict()

    def on_scored(c: Candidate) -> None:
        extra = extras.pop(c.layers)
        add_layer_trial(
            stud,
            layers=ids(c.layers),
            n_layers=n_all,
            # a raced-out candidate keeps its partial mean as the trial's value; its "pck"
            # stays NaN and "pruned" keeps it out of results and exports
            value=extra.get("pck_partial", c.score),
            user_attrs={
                "search": "beam",
                "layers": subset_key(ids(c.layers)),
                "depth": c.depth,
                "parent": "" if c.parent is None else subset_key(ids(c.parent)),
                "match": match_d,
                "pck": c.score,
                **extra,
            },
        )
        bar.scored(1)

    try:
        result = beam_search(
            score_fn if race is None else race_fn,
            n_layers=len(layer_ids),
            beam=beam,
            max_layers=max_layers,
            reference=reference,
            done=done,
            # racing needs a depth's candidates together
            chunk=chunk if race is None else None,
            on_scored=on_scored,
            on_depth_start=depth_start,
            on_depth_end=bar.depth_end,
        )
    finally:
        bar.close()

    result = _to_ids(result, ids)
    stud.set_user_attr(
        "beam_result",
        {"layers": result.best.key, "pck": result.best.score, "depth": result.best.depth,
         "max_layers": max_layers, "candidates": len(result.candidates)},
    )
    return BeamOutcome(result=result, study=stud, layer_ids=layer_ids)


def _to_ids(result: BeamResult, ids: Any) -> BeamResult:
    def conv(c: Candidate) -> Candidate:
        return Candidate(
            layers=ids(c.layers), score=c.score, depth=c.depth,
            parent=None if c.parent is None else ids(c.parent), reused=c.reused,
        )

    depths = [
        DepthResult(depth=d.depth, candidates=[conv(c) for c in d.candidates],
                    beam=[conv(c) for c in d.beam])
        for d in result.depths
    ]
    return BeamResult(best=conv(result.best), depths=depths, n_scored=result.n_scored,
                      n_reused=result.n_reused)


def run(args: argparse.Namespace) -> int:
    from scotsearch.commands.common import alphas_from_args
    from scotsearch.commands.common import feature_source
    from scotsearch.commands.common import match_from_args
    from scotsearch.commands.common import open_dataset
    from scotsearch.commands.common import profile_from_args
    from scotsearch.commands.common import resolve_device
    from scotsearch.commands.common import resolve_precision
    from scotsearch.layers import n_layers

    reference = reference_algorithm(args.compat, args.algorithm)
    layer_ids = None
    if args.layers is not None:
        layer_ids = _parse_layer_ranges(args.layers, n_layers(args.backbone))
    # Check the cheap things before loading data and weights.
    _check_counts(beam=args.beam, max_layers=args.max_layers, chunk=args.chunk)
    alphas = alphas_from_args(args)
    if len(alphas) != 1:
        raise ConfigError("the beam search optimises PCK at one alpha; give a single --alpha")

    dataset = open_dataset(args)
    match = match_from_args(args, dataset)
    profile = profile_from_args(args)
    device = resolve_device(args.device)
    source = feature_source(args, device)
    evaluator = Evaluator(
        dataset, source, match=match, profile=profile, alphas=alphas, thres=args.thres,
        device=device, precision=resolve_precision(args.precision, device),
    )
    name = args.study or default_study_name(
        dataset.name, dataset.split, source.backbone, match.variant, args.compat, reference
    )
    storage = open_storage(args.storage)
    # Optuna's own INFO lines ("A new study created ...") would tear the progress bars.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    mode = "reference (HPF/SCOT beamsearch.py)" if reference else "fixed"
    log.info("beam search '%s': %s algorithm, beam %d, up to %d layers, %d pairs",
             name, mode, args.beam, args.max_layers, len(dataset.pairs))
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():  # log lines above the bars instead of through them
            outcome = run_beam(
                evaluator, study=name, storage=storage, beam=args.beam,
                max_layers=args.max_layers, reference=reference, layers=layer_ids,
                chunk=args.chunk, progress=not args.quiet, race=args.race,
                race_block=args.race_block,
            )
    except KeyboardInterrupt:
        log.warning("stopped; every finished chunk is stored, run the same command to resume")
        raise
    res = outcome.result
    best = res.best
    print(
        f"best layers {best.key} (depth {best.depth + 1}): "
        f"PCK@{alphas[0]:g} = {best.score:.2f} on {dataset.name} {dataset.split} "
        f"({len(dataset.pairs)} pairs, {source.backbone}, {match.variant})"
    )
    print(
        f"study '{name}' in {describe_storage(storage)}: {len(res.candidates)} candidates "
        f"({res.n_scored} scored now, {res.n_reused} already stored)"
    )
    storage_flag = f" --storage {args.storage}" if args.storage else ""
    print(f"export: scotsearch export --study {name}{storage_flag} --format csv")
    return 0
