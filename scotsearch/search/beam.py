"""Beam search over hyperpixel layer subsets: the pure algorithm, no I/O.

Two rule sets, chosen by ``reference``:

===========================  ==================================  ==============================
step                         ``reference=True`` (``--compat``)   ``reference=False`` (default)
===========================  ==================================  ==============================
initial candidates           layers ``0 .. beam-1`` only          every single layer
new layer ``c`` for entry S  ``c not in S`` and ``c > min(S)``    any ``c not in S``
child already seen at depth  ``break``: skips the entry's rest    ``continue``: skips the child
ranking at each depth        stable descending sort, ties keep    same
                             generation order
result                       best over all depths, replaced only  same
                             when strictly greater
depth without candidates     (the references crash)              the search stops there
===========================  ==================================  ==============================

In both, a candidate scored NaN (raced out, or its scoring failed) never enters the beam;
a depth where no candidate has a score ends the search (at depth 0:
:class:`NothingScoredError`).

The reference column is HPF's and SCOT's ``beamsearch.py`` line by line
(reference-behaviour.md §8 and §12.9). The two fixes of the default are the accidental parts:
the initial beam never looks at layers above ``beam - 1`` and a duplicate child aborts the
rest of its parent's expansion. Keeping the base layer fixed per lineage (``c > min(S)``)
only makes sense together with the hand-picked initial beam, so the default lets a new layer
go below the base too (the evaluator picks the grid from the lowest id). The best over all
depths with a strict ``>`` is kept on purpose in both: on ties it prefers fewer layers.

Resume: the candidates of a depth are a pure function of the ranked beam above it, and the
ranking a pure function of the scores. Passing the stored scores as ``done`` therefore
re-derives the identical beam, depth by depth, and only candidates missing from ``done`` are
handed to ``score_fn``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

from scotsearch.errors import ConfigError
from scotsearch.layers import format_layers


#: A layer subset: sorted, distinct layer indices.
Subset = tuple[int, ...]

#: Scores a list of candidates of one depth together; returns one score per candidate.
ScoreFn = Callable[[list[Subset]], Sequence[float]]


@dataclass(frozen=True)
class Candidate:
    """One scored layer subset.

    Attributes:
        layers: the subset (sorted indices).
        score: its score (higher is better).
        depth: search depth, 0 for single layers (``len(layers) == depth + 1``).
        parent: the beam entry it was grown from; ``None`` at depth 0.
        reused: the score came from ``done`` instead of ``score_fn``.
    """

    layers: Subset
    score: float
    depth: int
    parent: Subset | None = None
    reused: bool = False

    @property
    def key(self) -> str:
        """Canonical text form, ``"0,19,27"``."""
        return format_layers(self.layers)


@dataclass
class DepthResult:
    """What one depth of the search produced.

    Attributes:
        depth: 0 for single layers.
        candidates: every candidate of the depth, in generation order.
        beam: the top ``beam`` candidates kept for the next depth, best first.
    """

    depth: int
    candidates: list[Candidate]
    beam: list[Candidate]


@dataclass
class BeamResult:
    """Outcome of :func:`beam_search`.

    Attributes:
        best: the best candidate over all depths (strictly-greater replacement).
        depths: per-depth candidates and beams.
        n_scored: candidates handed to ``score_fn`` in this call.
        n_reused: candidates whose score came from ``done``.
    """

    best: Candidate
    depths: list[DepthResult] = field(default_factory=list)
    n_scored: int = 0
    n_reused: int = 0

    @property
    def candidates(self) -> list[Candidate]:
        """Every candidate of every depth, in the order the search visited them."""
        return [c for d in self.depths for c in d.candidates]


class NothingScoredError(ValueError):
    """Every candidate of the first depth scored NaN: the search has nowhere to start."""


def as_subset(value: str | Iterable[int]) -> Subset:
    """A subset from ``"0,19,27"`` or any iterable of ints (sorted, de-duplicated)."""
    if isinstance(value, str):
        items = [int(t) for t in value.replace(" ", "").split(",") if t != ""]
    else:
        items = [int(i) for i in value]
    return tuple(sorted(set(items)))


def check_beam_counts(*, beam: int, max_layers: int, chunk: int) -> None:
    """Refuse a beam width, depth count or chunk size below 1.

    Raises:
        ConfigError: naming the flag (``--beam``, ``--max-layers``, ``--chunk``) and value.
    """
    for name, value in (("--beam", beam), ("--max-layers", max_layers), ("--chunk", chunk)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")


def initial_candidates(*, n_layers: int, beam: int, reference: bool) -> list[Subset]:
    """Depth-0 candidates (single layers).

    The references seed the search with ``[[0], [1], ..., [beamsize - 1]]`` (§8 step 1), so
    their grid layer is always one of the first ``beam`` ids; the default tries every layer.
    """
    if reference:
        return [(i,) for i in range(min(beam, n_layers))]
    return [(i,) for i in range(n_layers)]


def expand(
    beam: Sequence[Subset], *, n_layers: int, reference: bool
) -> list[tuple[Subset, Subset]]:
    """Children of the ranked beam entries, in the order they are scored.

    Args:
        beam: the kept subsets of the previous depth, best first.
        n_layers: number of layer indices (candidates are ``0 .. n_layers - 1``).
        reference: apply the references' rules (see the module docstring).

    Returns:
        ``(child, parent)`` pairs without duplicates, in generation order.
    """
    seen: set[Subset] = set()
    out: list[tuple[Subset, Subset]] = []
    for parent in beam:
        base = min(parent)
        for c in range(n_layers):
            if c in parent:
                continue
            # Reference: new layers only above the base, so each lineage keeps the grid
            # (stride) of its initial layer (§8 step 2).
            if reference and c <= base:
                continue
            child = tuple(sorted((*parent, c)))
            if child in seen:
                if reference:
                    # The references' `break` (meant as `continue`, §12.9): a duplicate ends
                    # this parent's expansion, so all larger c are never tried for it.
                    break
                continue
            seen.add(child)
            out.append((child, parent))
    return out


def top_k(candidates: Sequence[Candidate], k: int) -> list[Candidate]:
    """The ``k`` best candidates, best first; ties keep their order (stable sort).

    This is the references' ``sorted(membuf, key=score, reverse=True)[:k]``: Python's sort
    is stable with ``reverse=True`` too. NaN scores rank last.
    """
    return sorted(candidates, key=lambda c: _rank_score(c.score), reverse=True)[:k]


def _rank_score(score: float) -> float:
    return -math.inf if math.isnan(score) else score


def _normalise_done(done: Mapping[str | Subset, float] | None) -> dict[Subset, float]:
    out: dict[Subset, float] = {}
    for key, score in (done or {}).items():
        out.setdefault(as_subset(key), float(score))
    return out


def beam_search(
    score_fn: ScoreFn,
    *,
    n_layers: int,
    beam: int = 4,
    max_layers: int = 8,
    reference: bool = False,
    done: Mapping[str | Subset, float] | None = None,
    chunk: int | None = None,
    on_scored: Callable[[Candidate], None] | None = None,
    on_depth_start: Callable[[int, list[Subset], int], None] | None = None,
    on_depth_end: Callable[[DepthResult, Candidate], None] | None = None,
) -> BeamResult:
    """Beam search over subsets of ``n_layers`` layer indices, maximising ``score_fn``.

    Args:
        score_fn: scores a list of candidates of one depth in one call (so they can share
            work, e.g. pair-major evaluation); returns one float per candidate.
        n_layers: number of layer indices, candidates are ``0 .. n_layers - 1``.
        beam: beam width (the references' ``beamsize``).
        max_layers: the largest subset size, i.e. the number of depths (``maxdepth``).
        reference: reproduce HPF/SCOT's algorithm exactly, quirks included.
        done: already-known scores by subset (``"0,2"`` or ``(0, 2)``); those candidates are
            not scored again, which makes a re-run a resume.
        chunk: hand at most this many candidates to one ``score_fn`` call (``None``: a
            depth's missing candidates in one call). Smaller chunks lose less on a crash.
        on_scored: called for each newly scored candidate right after its chunk returns.
        on_depth_start: called as ``(depth, candidates, n_to_score)`` before a depth.
        on_depth_end: called as ``(depth_result, best_so_far)`` after a depth is ranked.

    Returns:
        The best candidate over all depths, with every depth's candidates and beam.

    Raises:
        ValueError: impossible parameters, or ``score_fn`` returned the wrong count.
        NothingScoredError: every first-depth candidate scored NaN.
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    if beam < 1:
        raise ValueError(f"beam width must be >= 1, got {beam}")
    if max_layers < 1:
        raise ValueError(f"max_layers must be >= 1, got {max_layers}")
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    known = _normalise_done(done)
    n_scored = n_reused = 0
    depths: list[DepthResult] = []
    best: Candidate | None = None
    kept: list[Candidate] = []

    for depth in range(max_layers):
        pending: list[tuple[Subset, Subset | None]]
        if depth == 0:
            singles = initial_candidates(n_layers=n_layers, beam=beam, reference=reference)
            pending = [(s, None) for s in singles]
        else:
            grown = expand([c.layers for c in kept], n_layers=n_layers, reference=reference)
            pending = list(grown)
        if not pending:
            # Nothing left to grow (e.g. every kept subset already holds every layer).
            break
        subsets = [s for s, _ in pending]
        todo = [s for s in subsets if s not in known]
        if on_depth_start is not None:
            on_depth_start(depth, subsets, len(todo))

        scored: dict[Subset, float] = {}
        step = len(todo) if chunk is None else chunk
        parents = dict(pending)
        for start in range(0, len(todo), max(step, 1)):
            part = todo[start : start + step]
            values = [float(v) for v in score_fn(list(part))]
            if len(values) != len(part):
                raise ValueError(
                    f"score_fn returned {len(values)} scores for {len(part)} candidates"
                )
            for s, v in zip(part, values):
                scored[s] = v
                known[s] = v
                n_scored += 1
                if on_scored is not None:
                    on_scored(Candidate(layers=s, score=v, depth=depth, parent=parents[s]))

        cands = []
        for s, parent in pending:
            reused = s not in scored
            n_reused += int(reused)
            cands.append(
                Candidate(layers=s, score=known[s], depth=depth, parent=parent, reused=reused)
            )
        # A candidate without a score (NaN: raced out, or its scoring failed) never enters
        # the beam, even where fewer than `beam` candidates have one.
        kept = top_k([c for c in cands if not math.isnan(c.score)], beam)
        if not kept and best is None:
            raise NothingScoredError(
                f"none of the {len(cands)} first-depth candidates has a score")
        # Global best over depths, replaced only when strictly greater (§8 step 2): on ties
        # the shallower subset wins. At depth 0 it is simply the first maximum.
        if kept and (best is None or kept[0].score > best.score):
            best = kept[0]
        assert best is not None
        result_depth = DepthResult(depth=depth, candidates=cands, beam=kept)
        depths.append(result_depth)
        if on_depth_end is not None:
            on_depth_end(result_depth, best)
        if not kept:
            break  # nothing scored at this depth: nothing to grow from

    assert best is not None  # depth 0 always has at least one candidate
    return BeamResult(best=best, depths=depths, n_scored=n_scored, n_reused=n_reused)
