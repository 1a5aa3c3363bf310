"""Numba kernels of the fused CPU chain: a few streaming passes per candidate.

Every kernel walks the ``[n x m]`` matrix row by row, threads taking contiguous blocks of
rows, and keeps everything that is not ``[n x m]`` (column sums, Hough histograms) per
thread, reduced afterwards. The element-wise arithmetic follows the eager chain of
:func:`scotsearch.matching.match_scores` operation by operation (same order of products,
division by eps rather than multiplication by its inverse), so the two agree to float32
rounding; only the column sums are accumulated in float64, which is more accurate than the
eager path (the per-thread Hough histograms are float32, as the eager ``index_add_``).

No ``fastmath`` in the chain itself: exact IEEE semantics, operation by operation, keep the
comparison with the eager path tight. The one exception is :func:`_exp_row`, our own
polynomial (which torch's exp does not share anyway), compiled apart with FMA contraction.
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np
from numba import njit
from numba import prange


if "NUMBA_THREADING_LAYER" not in os.environ:
    # numba's OpenMP layer keeps its threads spinning after each kernel, against torch's own
    # OpenMP pool, and on a 2-core machine every small torch op between two kernels then
    # waits for a time slice (measured: 19 s instead of 11 s for one benchmark call). The
    # workqueue layer's threads sleep between kernels. A user's own choice is kept.
    # numba.config sets its attributes from the environment at import time, so mypy does
    # not see them.
    numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]


@njit(cache=True, inline="always")
def _block(t, n, nb):  # type: ignore[no-untyped-def]
    # Rows [lo, hi) of thread block t of nb: contiguous, so each thread streams its rows.
    per = (n + nb - 1) // nb
    return t * per, min(n, (t + 1) * per)


@njit(cache=True, inline="always")
def _power(v: float, e: float) -> np.float32:
    # torch's pow with a scalar exponent special-cases these (sqrt, square, cube), and the
    # eager chain goes through it: the same special cases give the same rounding.
    # Always float32, rounded once, as the eager tensors are.
    if e == 1.0:
        return np.float32(v)
    if e == 0.5:
        return np.float32(math.sqrt(v))
    if e == 2.0:
        return np.float32(v * v)
    if e == 3.0:
        return np.float32(v * v * v)
    return np.float32(v**e)


# Not inlined, so that its own fastmath flag applies to it alone: FMA contraction of the
# polynomial's multiply-adds (measured at SPair size on the 2-core machine: 7.2 instead of
# 10.6 ms for an in-place exp over [n x m], an add pass being 8.2 ms). The call per row costs
# nothing beside a row of thousands of elements.
@njit(cache=True, fastmath={"contract"})
def _exp_row(row, bits):  # type: ignore[no-untyped-def]
    """``row = exp(row)`` in place, in float32, in loops LLVM vectorises.

    numba's ``math.exp`` is a scalar libm call, which made the Gibbs pass compute-bound at
    about three times the cost of an add pass; this is the classic range reduction
    ``exp(v) = 2^k exp(r)``, ``r = v - k ln 2`` (ln 2 split in two for exactness), a
    degree-7 polynomial for ``exp(r)`` and ``2^k`` written as float32 exponent bits.
    Relative error below 1e-7 (measured against float64), as torch's exp.
    Arguments are clamped to [-87, 87]: the chain only exponentiates values in
    [-1 / eps - 1e-5, 1e-5], i.e. [-50, 0] for eps >= 0.02.
    """
    m = row.shape[0]
    scale = bits.view(np.float32)
    for j in range(m):
        v = min(max(row[j], np.float32(-87.0)), np.float32(87.0))
        t = v * np.float32(1.4426950408889634)
        k = np.int32(t + np.float32(0.5)) if t >= 0 else -np.int32(np.float32(0.5) - t)
        kf = np.float32(k)
        r = (v - kf * np.float32(0.693359375)) - kf * np.float32(-2.12194440e-4)
        q = np.float32(1.0 / 5040)
        q = q * r + np.float32(1.0 / 720)
        q = q * r + np.float32(1.0 / 120)
        q = q * r + np.float32(1.0 / 24)
        q = q * r + np.float32(1.0 / 6)
        q = q * r + np.float32(0.5)
        q = q * r + np.float32(1.0)
        q = q * r + np.float32(1.0)
        row[j] = q
        bits[j] = (k + np.int32(127)) << np.int32(23)
    for j in range(m):
        row[j] = row[j] * scale[j]


@njit(cache=True, inline="always")
def _upsampled(dt, rows, wts, i, j):  # type: ignore[no-untyped-def]
    # One bilinearly upsampled dot product: source taps (y0,x0),(y1,x0),(y0,x1),(y1,x1)
    # combined along y first, then x, as the eager path's separable products do.
    a = wts[i, 0] * dt[rows[i, 0], j] + wts[i, 1] * dt[rows[i, 1], j]
    c = wts[i, 0] * dt[rows[i, 2], j] + wts[i, 1] * dt[rows[i, 3], j]
    return wts[i, 2] * a + wts[i, 3] * c


@njit(cache=True, parallel=True)
def add_upsampled(out, dt, rows, wts, identity, first):  # type: ignore[no-untyped-def]
    """``out (+)= U_s dt``: accumulate one layer's source-upsampled dot products.

    ``dt`` is ``[k x m]`` (dot products at the layer's native source resolution, already
    upsampled on the target side); ``rows``/``wts`` give each base row's four source taps.
    ``identity`` means the layer is at base resolution (``dt`` is ``[n x m]``).
    """
    n, m = out.shape
    for i in prange(n):
        for j in range(m):
            v = dt[i, j] if identity else _upsampled(dt, rows, wts, i, j)
            out[i, j] = v if first else out[i, j] + v


@njit(cache=True, parallel=True)
def gibbs(  # type: ignore[no-untyped-def]
    parent, has_parent, dt, rows, wts, identity, inv_s, inv_t, eps, a0, out, colpart
):
    """OT pass 1: Gibbs kernel ``K = exp((max(cos, 0) - 1) / eps)`` and ``K^T a0``.

    ``cos = ((parent + term) * inv_s[i]) * inv_t[j]`` with the child's layer term formed
    on the fly from its native-resolution dot products. ``colpart[t]`` receives thread
    block t's column sums (float64); their sum over t is ``K^T a0``.
    """
    n, m = out.shape
    nb = colpart.shape[0]
    for t in prange(nb):
        col = colpart[t]
        col[:] = 0.0
        bits = np.empty(m, np.int32)
        for i in range(*_block(t, n, nb)):
            row = out[i]
            _cosine_row(parent, has_parent, dt, rows, wts, identity, inv_s[i], inv_t, i, row)
            for j in range(m):
                s = row[j] if row[j] > 0.0 else np.float32(0.0)
                row[j] = (s - np.float32(1.0)) / eps
            _exp_row(row, bits)
            ai = a0[i]
            for j in range(m):
                col[j] += ai * row[j]


@njit(cache=True, inline="always")
def _cosine_row(parent, has_parent, dt, rows, wts, identity, si, inv_t, i, row):  # type: ignore[no-untyped-def]
    # row = ((parent[i] + term[i]) * inv_s[i]) * inv_t, each case its own loop so that
    # every loop vectorises.
    m = row.shape[0]
    if identity:
        if has_parent:
            for j in range(m):
                row[j] = ((parent[i, j] + dt[i, j]) * si) * inv_t[j]
        else:
            for j in range(m):
                row[j] = (dt[i, j] * si) * inv_t[j]
        return
    r0, r1, r2, r3 = rows[i, 0], rows[i, 1], rows[i, 2], rows[i, 3]
    wy0, wy1, wx0, wx1 = wts[i, 0], wts[i, 1], wts[i, 2], wts[i, 3]
    if has_parent:
        for j in range(m):
            d = (wx0 * (wy0 * dt[r0, j] + wy1 * dt[r1, j])
                 + wx1 * (wy0 * dt[r2, j] + wy1 * dt[r3, j]))
            row[j] = ((parent[i, j] + d) * si) * inv_t[j]
    else:
        for j in range(m):
            d = (wx0 * (wy0 * dt[r0, j] + wy1 * dt[r1, j])
                 + wx1 * (wy0 * dt[r2, j] + wy1 * dt[r3, j]))
            row[j] = (d * si) * inv_t[j]


@njit(cache=True, parallel=True)
def cosine_votes(  # type: ignore[no-untyped-def]
    parent, has_parent, dt, rows, wts, identity, inv_s, inv_t, exp1, src_valid, trg_valid,
    masked, with_hist, bx, by, nx, ix, iy, wt, out, histpart
):
    """HPF pass: votes ``max(cos, 0) ** exp1`` (masked), and their Hough histogram."""
    n, m = out.shape
    nb = histpart.shape[0]
    for t in prange(nb):
        hist = histpart[t]
        hist[:] = 0.0
        for i in range(*_block(t, n, nb)):
            row = out[i]
            _cosine_row(parent, has_parent, dt, rows, wts, identity, inv_s[i], inv_t, i, row)
            for j in range(m):
                row[j] = _power(row[j] if row[j] > 0.0 else np.float32(0.0), exp1)
            if masked:
                for j in range(m):
                    if not (src_valid[i] and trg_valid[j]):
                        row[j] = np.float32(0.0)
            if with_hist:
                _histogram_row(row, bx[ix[i]], by[iy[i]], nx, wt, hist)


@njit(cache=True, inline="always")
def _histogram_row(v, bxr, byr, nx, wt, hist):  # type: ignore[no-untyped-def]
    # One source row's votes over a row-major target grid of wt columns: the bin of
    # target (r, c) is bxr[c] + nx * byr[r] (the bin is separable, reference-behaviour.md
    # section 5 / rhm.HoughTables).
    ht = v.shape[0] // wt
    for r in range(ht):
        off = nx * byr[r]
        base = r * wt
        for c in range(wt):
            hist[bxr[c] + off] += v[base + c]


@njit(cache=True, inline="always")
def _plan_vote(k, ai, bj, nv, exp2):  # type: ignore[no-untyped-def]
    # (K * a) * b, scaled by the number of source hyperpixels, clamped, powered: the eager
    # order of operations.
    v = ((k * ai) * bj) * nv
    return _power(v if v > 0.0 else np.float32(0.0), exp2)


# Not inlined, for its own fastmath flags: a float64 sum may be reordered into vector lanes
# (without "reassoc" LLVM keeps the strict left-to-right chain, one add per 4 cycles).
@njit(cache=True, fastmath={"reassoc", "contract"})
def _dot(x, y):  # type: ignore[no-untyped-def]
    d = 0.0  # float64, as the column sums of the Gibbs pass
    for j in range(x.shape[0]):
        d += np.float64(x[j]) * np.float64(y[j])
    return d


@njit(cache=True, parallel=True)
def plan_votes_hist(  # type: ignore[no-untyped-def]
    K, mu, b, a, nv, exp2, src_valid, trg_valid, masked, bx, by, nx, ix, iy, wt, histpart
):
    """OT pass 2: the last row scaling and the Hough histogram of the plan's votes.

    Per source row, ``a[i] = mu[i] / (K b)[i]`` (the last Sinkhorn half-step, written into
    ``a``, as :func:`scotsearch.ot.safe_div`: 0 where ``mu`` is 0) while the row is in
    cache, then the votes ``max((K a_i) b_j nv, 0) ** exp2`` and their histogram: one read of
    ``K`` instead of a matrix-vector product plus this pass. The target grid is row-major
    with ``wt`` columns, so within a target row the bin is ``bx[ix_i, c] + nx * by[iy_i, r]``:
    a scatter into a per-thread histogram that stays in cache, without branches.
    """
    n, m = K.shape
    nb = histpart.shape[0]
    tiny = np.float32(np.finfo(np.float32).tiny)
    for t in prange(nb):
        hist = histpart[t]
        hist[:] = 0.0
        votes = np.empty(m, np.float32)
        for i in range(*_block(t, n, nb)):
            if not mu[i] > 0.0:
                a[i] = 0.0
                continue
            ai = np.float32(mu[i] / max(np.float32(_dot(K[i], b)), tiny))
            a[i] = ai
            if masked and not src_valid[i]:
                continue  # every vote of the row is 0
            if exp2 == 1.0:
                for j in range(m):
                    v = ((K[i, j] * ai) * b[j]) * nv
                    votes[j] = v if v > 0.0 else np.float32(0.0)
            else:
                for j in range(m):
                    votes[j] = _plan_vote(K[i, j], ai, b[j], nv, exp2)
            if masked:
                for j in range(m):
                    if not trg_valid[j]:
                        votes[j] = np.float32(0.0)
            _histogram_row(votes, bx[ix[i]], by[iy[i]], nx, wt, hist)


@njit(cache=True, parallel=True)
def best_targets(  # type: ignore[no-untyped-def]
    M, is_plan, a, b, nv, exp2, src_valid, trg_valid, masked, with_prior, prior, bx, by, nx,
    ix, iy, wt, rows, best, nthreads
):
    """``best[i] = argmax_j C[i, j]`` for the listed source rows only (``nthreads`` blocks).

    ``M`` holds the Gibbs kernel (``is_plan``: votes are formed from it with ``a`` and ``b``)
    or the votes themselves.
    Invalid targets are excluded; ties go to the first index, as ``torch.argmax``.
    Each row's confidences are formed in a row buffer first, by target grid row and column
    (no division per element, loops that vectorise), then scanned for the maximum.
    """
    m = M.shape[1]
    nr = rows.shape[0]
    nb = min(nthreads, max(nr, 1))
    ht = m // wt
    for t in prange(nb):
        buf = np.empty(m, np.float32)
        for r in range(*_block(t, nr, nb)):
            i = rows[r]
            if not is_plan:
                for j in range(m):
                    buf[j] = M[i, j]
            elif masked and not src_valid[i]:
                buf[:] = 0.0
            else:
                ai = a[i]
                for j in range(m):
                    buf[j] = _plan_vote(M[i, j], ai, b[j], nv, exp2)
            if with_prior:
                bxr = bx[ix[i]]
                byr = by[iy[i]]
                for gr in range(ht):
                    off = nx * byr[gr]
                    base = gr * wt
                    for c in range(wt):
                        buf[base + c] = buf[base + c] * prior[bxr[c] + off]
            arg = 0
            top = -np.inf
            for j in range(m):
                if masked and not trg_valid[j]:
                    continue
                if buf[j] > top:
                    top = buf[j]
                    arg = j
            best[i] = arg


def threads() -> int:
    """Threads numba runs the kernels on."""
    return int(numba.get_num_threads())
