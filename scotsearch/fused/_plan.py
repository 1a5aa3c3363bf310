"""Incremental scoring plan: every candidate is a shared parent plus one layer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def plan_parents(
    subsets: Sequence[tuple[int, ...]],
) -> list[tuple[tuple[int, ...], int]]:
    """``(parent, added layer)`` of every subset, choosing parents that many subsets share.

    A beam depth's candidates are its beam entries plus one layer each, so the entries come
    out as the parents: their summed similarity is formed once per pair and every child
    adds one layer term to it, which keeps the work per candidate independent of the subset
    size. Ties go to dropping the largest layer (the parent is then a prefix).

    Examples:
        >>> plan_parents([(0, 3), (0, 5), (3, 5), (2,)])
        [((0,), 3), ((0,), 5), ((3,), 5), ((), 2)]
    """
    shared = Counter(tuple(v for v in s if v != l) for s in subsets for l in s)
    plan = []
    for s in subsets:
        added = max(s, key=lambda l: (shared[tuple(v for v in s if v != l)], l))
        plan.append((tuple(v for v in s if v != added), added))
    return plan
