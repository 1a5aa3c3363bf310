"""Racing: stop scoring a beam-search candidate once it is statistically out of the beam.

Every candidate of one depth is scored on the same pairs, in the same order, block by block.
After each block, candidate ``i`` is dropped when at least ``k`` (the beam width) other
candidates are each confidently better than it:

* against a candidate ``j`` still racing, by a paired test on the per-pair PCK differences
  ``x_j - x_i`` over the pairs scored so far: mean difference > ``z`` standard errors. Pairing
  matters: most of the spread of per-pair PCK is how hard a pair is, which every candidate
  shares, so paired differences separate candidates far sooner than their means do;
* against a candidate whose full-split score is already known (resumed from the study), by
  ``mean_i + z * se_i < score_j``.

At most ``k - 1`` candidates are truly better than a candidate that belongs in the beam, so
dropping it needs at least one wrong "confidently better" verdict. Under the normal
approximation one verdict is wrong with probability ``1 - Phi(z)`` (z = 3: 0.13 %). By the
union bound the chance that a given beam member is dropped is at most ``looks x (S - 1)`` times
that (S candidates, ``looks`` blocks). The bound is loose, because the verdicts are strongly
correlated. A dropped candidate's score is its mean over the pairs it saw. It is stored as
pruned, ranks below every finished candidate, and is never exported.

Off unless asked for (``scotsearch beam --race``), and refused with the references'
algorithm, which scores every candidate on every pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def out_of_beam(
    values: np.ndarray, k: int, z: float, known: Sequence[float] = ()
) -> np.ndarray:
    """Which racing candidates are confidently outside the top ``k``.

    Args:
        values: ``[S x n]`` per-pair scores of the S racing candidates on the same n pairs.
        k: beam width.
        z: standard errors a difference must exceed to count as confident.
        known: exact full-split scores of other candidates of the same depth.

    Returns:
        ``[S]`` bool, True where at least ``k`` candidates are confidently better.
    """
    x = np.asarray(values, dtype=np.float64)
    S, n = x.shape
    if n < 2 or S + len(known) <= k:
        return np.zeros(S, dtype=bool)
    mean = x.mean(axis=1)
    # Paired differences d_ij = x_j - x_i: their variance is var_j + var_i - 2 cov_ij.
    cov = np.atleast_2d(np.cov(x, ddof=1))
    var = np.diag(cov)
    var_diff = (var[None, :] + var[:, None] - 2.0 * cov).clip(min=0.0)
    se_diff = np.sqrt(var_diff / n)
    gap = mean[None, :] - mean[:, None]  # [i, j]: how much j leads i
    better = gap > z * se_diff
    np.fill_diagonal(better, False)
    count = better.sum(axis=1)
    if len(known):
        se = np.sqrt(var / n)
        upper = mean + z * se
        count = count + (np.asarray(known, dtype=np.float64)[None, :] > upper[:, None]).sum(axis=1)
    return count >= k
