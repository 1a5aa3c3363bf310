"""Quick subsets of a split: a fixed number of pairs per category, the same on every run."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from scotsearch.data.pairs import Dataset
from scotsearch.errors import ConfigError


def per_category(dataset: Dataset, n: int, seed: int = 0) -> Dataset:
    """``n`` pairs of every category (all of a category that has fewer), drawn at random.

    The draw of a category depends only on ``seed``, the category name and its pairs in
    file order, through numpy's PCG64 generator: the same on every run and machine, and a
    category's draw does not change when another category gains pairs. The kept pairs stay
    in file order.

    Examples:
        >>> from scotsearch.testing import synthetic_dataset
        >>> sub = per_category(synthetic_dataset(9), 2, seed=0)  # categories a (5), b (4)
        >>> len(sub.pairs), sub.subset
        (4, 'per-category 2, seed 0')
    """
    if n < 1:
        raise ConfigError(f"--per-category must be >= 1, got {n}")
    keep: set[int] = set()
    by_cat: dict[str, list[int]] = {}
    for k, p in enumerate(dataset.pairs):
        by_cat.setdefault(p.category, []).append(k)
    for cat in sorted(by_cat):
        members = by_cat[cat]
        # crc32 of the name: a stable per-category stream (Python's hash() is salted).
        rng = np.random.default_rng([seed, zlib.crc32(cat.encode("utf-8"))])
        pick = rng.permutation(len(members))[:n]
        keep.update(members[int(i)] for i in pick)
    label = f"per-category {n}, seed {seed}"
    if dataset.subset:
        label = f"{dataset.subset}; {label}"
    return dataclasses.replace(
        dataset, pairs=tuple(p for k, p in enumerate(dataset.pairs) if k in keep), subset=label
    )
