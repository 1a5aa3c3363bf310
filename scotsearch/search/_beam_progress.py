"""Progress of the stored beam search: one tqdm bar per depth, and the depth's beam in the log."""

from __future__ import annotations

import logging
import time
from typing import Any

from scotsearch.search.beam import Candidate
from scotsearch.search.beam import DepthResult
from scotsearch.search.beam import Subset


log = logging.getLogger(__name__)


class BeamProgress:
    """One tqdm bar per depth: candidates/s, candidate-pairs/s and the best so far.

    Args:
        enabled: show the bars (the log lines are written either way).
        max_layers: the number of depths, for the bars' titles.
    """

    def __init__(self, *, enabled: bool, max_layers: int) -> None:
        self.enabled = enabled
        self.max_layers = max_layers
        self.bar: Any = None
        self.best: Candidate | None = None
        self.t0 = 0.0
        self.pair_evals = 0
        self.chunk_size = 0

    def depth_start(self, depth: int, subsets: list[Subset], n_todo: int) -> None:
        """A depth begins: ``n_todo`` of its ``subsets`` are to be scored."""
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
        """An evaluator call over ``size`` candidates begins."""
        self.chunk_size = size

    def pair_done(self, n: int) -> None:
        """The evaluator finished ``n`` more pairs of the current chunk."""
        self.pair_evals += n * self.chunk_size
        if self.bar is not None:
            self._postfix(refresh=False)

    def scored(self, n: int) -> None:
        """``n`` more candidates are scored and stored."""
        if self.bar is not None:
            self.bar.update(n)

    def depth_end(self, depth: DepthResult, best: Candidate) -> None:
        """A depth is ranked; ``best`` is the best candidate so far (all depths)."""
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
        """Close the current bar, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
