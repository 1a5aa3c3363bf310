"""Per-pair layer terms of the fused chain, and a memory-bounded store that keeps them
between evaluator calls.

A beam depth is scored in chunks of candidates, each chunk a separate pass over the pairs,
and every chunk needs most layers again: keeping the terms saves forming each layer's dot
products on every pair once per chunk instead of once per search.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic
from typing import Protocol
from typing import TypeVar

import numpy as np
import torch

from scotsearch.fused import TERM_BUDGET_ENV
from scotsearch.matching import native_term
from scotsearch.matching import source_taps
from scotsearch.matching import upsampled_sq_norms_separable


@dataclass
class Term:
    """One layer on one pair, as the kernels read it.

    Attributes:
        dt: ``[k x m]`` float32 dot products at the layer's native source resolution,
            upsampled on the target side (``k = n`` when ``identity``).
        rows, wts: ``[n x 4]`` source taps and weights (:func:`source_taps`); placeholders
            when ``identity``.
        identity: the layer is at the base grid's resolution on both sides.
        sq_src, sq_trg: ``[n]`` / ``[m]`` squared norms of the upsampled features.
    """

    dt: np.ndarray
    rows: np.ndarray
    wts: np.ndarray
    identity: bool
    sq_src: torch.Tensor
    sq_trg: torch.Tensor

    @property
    def nbytes(self) -> int:
        return int(self.dt.nbytes + 4 * (self.sq_src.numel() + self.sq_trg.numel()))


_NO_TAPS = (np.zeros((1, 4), np.int64), np.zeros((1, 4), np.float32))


def term_parts(
    fs: torch.Tensor, ft: torch.Tensor, src_hw: tuple[int, int], trg_hw: tuple[int, int]
) -> tuple[torch.Tensor, bool, tuple[int, int], torch.Tensor, torch.Tensor]:
    """One layer's term on the features' device, as both fused chains read it.

    Returns:
        ``dt`` (``[n x m]`` when the layer is at base resolution on both sides, else
        ``[k x m]`` at the layer's native source resolution, upsampled on the target side),
        ``identity`` (the first case), the native source shape ``(h, w)`` and the squared
        norms ``sq_src [n]``, ``sq_trg [m]`` of the upsampled features.
    """
    native = (int(fs.shape[-2]), int(fs.shape[-1]))
    identity = native == tuple(src_hw) and tuple(ft.shape[-2:]) == tuple(trg_hw)
    if identity:
        C = fs.shape[0]
        dt = fs.float().reshape(C, -1).T @ ft.float().reshape(C, -1)
    else:
        dt = native_term(fs, ft, trg_hw)
    return (dt, identity, native, upsampled_sq_norms_separable(fs, src_hw),
            upsampled_sq_norms_separable(ft, trg_hw))


def layer_term(
    f_src: torch.Tensor,
    f_trg: torch.Tensor,
    src_hw: tuple[int, int],
    trg_hw: tuple[int, int],
) -> Term:
    """The CPU chain's form of one layer's similarity term (numpy, int64 taps)."""
    dt, identity, native, sq_src, sq_trg = term_parts(f_src.cpu(), f_trg.cpu(), src_hw, trg_hw)
    if identity:
        rows, wts = _NO_TAPS
    else:
        r, w = source_taps(native, tuple(src_hw))  # memoised: these are views
        rows, wts = r.numpy(), w.numpy()
    return Term(dt=np.ascontiguousarray(dt.numpy()), rows=rows, wts=wts, identity=identity,
                sq_src=sq_src, sq_trg=sq_trg)


class _Stored(Protocol):
    @property
    def nbytes(self) -> int: ...

    identity: bool


T = TypeVar("T", bound=_Stored)


def default_budget() -> int:
    """Bytes the term store may hold: ``$SCOTSEARCH_TERM_BUDGET_MB`` if set, else half the
    memory available now (Linux), else 2 GB.

    Half, because a base-resolution term costs a full ``[n x m]`` matrix product to form
    again (about 0.3 s per pair at the demo's side 300), and the demo search at side 300
    needs about 16 GB to keep every term of its 24 pairs: with a third of a 24 GB machine,
    half the pairs formed their terms again for every chunk of candidates.
    """
    # benchmarks set 0 to reproduce, on the small demo, a split whose terms cannot all be kept
    env = os.environ.get(TERM_BUDGET_ENV)
    if env:
        try:
            return max(0, int(float(env) * (1 << 20)))
        except ValueError:
            pass  # not a number: the default, as for an unset variable
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return 2 << 30


class TermStore(Generic[T]):
    """Layer terms kept across evaluator calls, up to a byte budget.

    Full is full: pairs are visited in the same cyclic order on every call, where evicting
    the oldest entry would evict every entry before its next use, so a full store keeps what
    it has. One exception: a base-resolution term (a full matrix product to form again) may
    evict upsampled ones (a small product and an upsampling, measured ~10 to 60 times
    cheaper per pair), which are then formed again when needed. It holds the CPU chain's
    :class:`Term` and the device chain's terms alike.
    """

    def __init__(self, budget: int | None = None) -> None:
        self.budget = default_budget() if budget is None else int(budget)
        self.used = 0
        self._terms: dict[Hashable, T] = {}

    def get(self, key: Hashable) -> T | None:
        return self._terms.get(key)

    def put(self, key: Hashable, term: T) -> None:
        if key in self._terms or term.nbytes > self.budget:
            return
        if term.identity:
            cheap = [k for k, t in self._terms.items() if not t.identity]
            while cheap and self.used + term.nbytes > self.budget:
                self.used -= self._terms.pop(cheap.pop()).nbytes
        if self.used + term.nbytes <= self.budget:
            self._terms[key] = term
            self.used += term.nbytes
