"""Fast candidate scoring: the fused, incremental chain (numba kernels on the CPU, Triton
kernels on a CUDA GPU).

The eager chain in :mod:`scotsearch.matching` stays the reference implementation; this
package computes the same per-pair results with a few streaming passes per candidate (see
:mod:`scotsearch.fused._chain` and :mod:`scotsearch.fused._device_chain`). :func:`supports`
says which settings it covers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scotsearch.fused._plan import plan_parents
from scotsearch.fused._support import available
from scotsearch.fused._support import supports


if TYPE_CHECKING:
    from scotsearch.fused._chain import score_group
    from scotsearch.fused._chain import warm_up
    from scotsearch.fused._device_chain import default_budget as device_budget
    from scotsearch.fused._device_chain import score_group_device
    from scotsearch.fused._terms import TermStore


#: Environment variable capping the CPU term store (MB); see :func:`_terms.default_budget`.
#: Spelled here too so that reading it does not import torch with ``_terms``.
TERM_BUDGET_ENV = "SCOTSEARCH_TERM_BUDGET_MB"

__all__ = [
    "TERM_BUDGET_ENV",
    "TermStore",
    "available",
    "device_budget",
    "plan_parents",
    "score_group",
    "score_group_device",
    "supports",
    "warm_up",
]


def __getattr__(name: str) -> object:
    # The kernels import numba (about a second): only when a fused score is asked for.
    if name in ("score_group", "warm_up"):
        from scotsearch.fused import _chain

        return getattr(_chain, name)
    if name in ("score_group_device", "device_budget"):
        # Triton: only when the device chain is asked for.
        from scotsearch.fused import _device_chain

        return getattr(_device_chain, "default_budget" if name == "device_budget" else name)
    if name == "TermStore":
        from scotsearch.fused._terms import TermStore

        return TermStore
    raise AttributeError(name)
