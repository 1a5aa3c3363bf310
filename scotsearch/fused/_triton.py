"""Triton kernels of the fused device chain (GPU; the Triton interpreter elsewhere).

The same passes as the numba CPU kernels (:mod:`scotsearch.fused._kernels`), laid out for a
GPU: 2-D tiles of the ``[n x m]`` matrix instead of per-thread row blocks, per-tile column
sums written to a small ``[row tiles x m]`` buffer (summed afterwards, so the result does not
depend on the order blocks finish), and the Hough histogram accumulated with atomic adds
into one ``[ny * nx]`` float32 histogram per candidate. The element-wise arithmetic follows
:func:`scotsearch.matching.match_scores` operation by operation, as the CPU kernels do.

The kernels are not specialised on the grid sizes (``do_not_specialize``): every pair has
its own, and Triton would otherwise compile a variant for each divisibility class of ``n``
and ``m`` it meets. Triton reads ``TRITON_INTERPRET`` when a kernel is defined, i.e. when
this module is first imported: the test suite sets it on machines without a GPU, so that
the kernels run (slowly, on numpy) in CI.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


#: Tile of the element-wise passes: 32 source rows x 128 targets (4,096 elements per
#: program; the column-sum buffer then has n / 32 rows).
BLOCK_I = 32
BLOCK_J = 128
#: Rows per program of the plan/histogram pass, and the target chunk it loops over.
ROWS_HIST = 4
CHUNK_HIST = 512


@triton.jit
def _term_tile(dt_ptr, rows_ptr, wts_ptr, offs_i, offs_j, mask_i, mask, m,
               IDENTITY: tl.constexpr):
    # One layer's dot products on the base grid: read directly, or bilinearly upsampled on
    # the source side from the native rows (y first, then x, as the eager separable
    # products and the CPU kernels).
    oj = offs_j[None, :]
    if IDENTITY:
        return tl.load(dt_ptr + offs_i.to(tl.int64)[:, None] * m + oj, mask=mask, other=0.0)
    r0 = tl.load(rows_ptr + offs_i * 4 + 0, mask=mask_i, other=0).to(tl.int64)
    r1 = tl.load(rows_ptr + offs_i * 4 + 1, mask=mask_i, other=0).to(tl.int64)
    r2 = tl.load(rows_ptr + offs_i * 4 + 2, mask=mask_i, other=0).to(tl.int64)
    r3 = tl.load(rows_ptr + offs_i * 4 + 3, mask=mask_i, other=0).to(tl.int64)
    wy0 = tl.load(wts_ptr + offs_i * 4 + 0, mask=mask_i, other=0.0)[:, None]
    wy1 = tl.load(wts_ptr + offs_i * 4 + 1, mask=mask_i, other=0.0)[:, None]
    wx0 = tl.load(wts_ptr + offs_i * 4 + 2, mask=mask_i, other=0.0)[:, None]
    wx1 = tl.load(wts_ptr + offs_i * 4 + 3, mask=mask_i, other=0.0)[:, None]
    d0 = tl.load(dt_ptr + r0[:, None] * m + oj, mask=mask, other=0.0)
    d1 = tl.load(dt_ptr + r1[:, None] * m + oj, mask=mask, other=0.0)
    d2 = tl.load(dt_ptr + r2[:, None] * m + oj, mask=mask, other=0.0)
    d3 = tl.load(dt_ptr + r3[:, None] * m + oj, mask=mask, other=0.0)
    return wx0 * (wy0 * d0 + wy1 * d1) + wx1 * (wy0 * d2 + wy1 * d3)


@triton.jit
def _tile(n, m, BI: tl.constexpr, BJ: tl.constexpr):
    # This program's [BI x BJ] tile of the [n x m] matrix: offsets and masks.
    offs_i = tl.program_id(0) * BI + tl.arange(0, BI)
    offs_j = tl.program_id(1) * BJ + tl.arange(0, BJ)
    mask_i = offs_i < n
    mask_j = offs_j < m
    return offs_i, offs_j, mask_i, mask_j, mask_i[:, None] & mask_j[None, :]


@triton.jit
def _cosine_tile(parent_ptr, dt_ptr, rows_ptr, wts_ptr, inv_s_ptr, inv_t_ptr, offs_i, offs_j,
                 mask_i, mask_j, mask, m, HAS_PARENT: tl.constexpr, IDENTITY: tl.constexpr):
    # ((parent + term) * inv_s[i]) * inv_t[j]: the eager subset_cosine's order.
    d = _term_tile(dt_ptr, rows_ptr, wts_ptr, offs_i, offs_j, mask_i, mask, m, IDENTITY)
    if HAS_PARENT:
        p = tl.load(parent_ptr + offs_i.to(tl.int64)[:, None] * m + offs_j[None, :], mask=mask,
                    other=0.0)
        d = p + d
    si = tl.load(inv_s_ptr + offs_i, mask=mask_i, other=0.0)
    tj = tl.load(inv_t_ptr + offs_j, mask=mask_j, other=0.0)
    return (d * si[:, None]) * tj[None, :]


@triton.jit
def _power(v, e, POW: tl.constexpr):
    # torch.pow special-cases these exponents (sqrt, square, cube); the eager chain goes
    # through it, so the same special cases give the same rounding.
    if POW == 1:
        return v
    elif POW == 2:
        return tl.sqrt_rn(v)
    elif POW == 3:
        return v * v
    elif POW == 4:
        return v * v * v
    else:
        # log2 of the smallest normal float32 where v is 0: no -inf on the unused branch
        return tl.where(v > 0.0, tl.exp2(e * tl.log2(tl.maximum(v, 1.1754943508222875e-38))),
                        0.0)


def power_code(e: float) -> int:
    """The ``POW`` constant of :func:`_power` for exponent ``e``."""
    return {1.0: 1, 0.5: 2, 2.0: 3, 3.0: 4}.get(float(e), 5)


@triton.jit(do_not_specialize=["n", "m"])
def _add_upsampled_kernel(out_ptr, dt_ptr, rows_ptr, wts_ptr, n, m, FIRST: tl.constexpr,
                          IDENTITY: tl.constexpr, BI: tl.constexpr, BJ: tl.constexpr):
    offs_i = tl.program_id(0) * BI + tl.arange(0, BI)
    offs_j = tl.program_id(1) * BJ + tl.arange(0, BJ)
    mask_i = offs_i < n
    mask = mask_i[:, None] & (offs_j < m)[None, :]
    d = _term_tile(dt_ptr, rows_ptr, wts_ptr, offs_i, offs_j, mask_i, mask, m, IDENTITY)
    ptr = out_ptr + offs_i.to(tl.int64)[:, None] * m + offs_j[None, :]
    if not FIRST:
        d = tl.load(ptr, mask=mask, other=0.0) + d
    tl.store(ptr, d, mask=mask)


@triton.jit(do_not_specialize=["n", "m"])
def _gibbs_kernel(parent_ptr, dt_ptr, rows_ptr, wts_ptr, inv_s_ptr, inv_t_ptr, a0_ptr, out_ptr,
                  colpart_ptr, n, m, eps, HAS_PARENT: tl.constexpr, IDENTITY: tl.constexpr,
                  BI: tl.constexpr, BJ: tl.constexpr):
    offs_i, offs_j, mask_i, mask_j, mask = _tile(n, m, BI, BJ)
    cos = _cosine_tile(parent_ptr, dt_ptr, rows_ptr, wts_ptr, inv_s_ptr, inv_t_ptr, offs_i,
                       offs_j, mask_i, mask_j, mask, m, HAS_PARENT, IDENTITY)
    s = tl.maximum(cos, 0.0)
    k = tl.exp((s - 1.0) / eps)
    tl.store(out_ptr + offs_i.to(tl.int64)[:, None] * m + offs_j[None, :], k, mask=mask)
    a0 = tl.load(a0_ptr + offs_i, mask=mask_i, other=0.0)
    col = tl.sum(tl.where(mask, a0[:, None] * k, 0.0), axis=0)
    tl.store(colpart_ptr + tl.program_id(0) * m + offs_j, col, mask=mask_j)


@triton.jit
def _hist_tile(hist_ptr, v, offs_i, offs_j, mask, bx_ptr, by_ptr, ix_ptr, iy_ptr, mask_i, nx,
               xt, yt, wt):
    # Target j is grid cell (j // wt, j % wt); its bin for source i is
    # bx[ix_i, col] + nx * by[iy_i, row] (the separable bin tables of rhm.HoughTables).
    ix = tl.load(ix_ptr + offs_i, mask=mask_i, other=0)
    iy = tl.load(iy_ptr + offs_i, mask=mask_i, other=0)
    r = offs_j // wt
    c = offs_j - r * wt
    bx = tl.load(bx_ptr + ix[:, None] * xt + c[None, :], mask=mask, other=0)
    by = tl.load(by_ptr + iy[:, None] * yt + r[None, :], mask=mask, other=0)
    tl.atomic_add(hist_ptr + bx + nx * by, v, mask=mask & (v != 0.0), sem="relaxed")


@triton.jit(do_not_specialize=["n", "m", "nx", "xt", "yt", "wt"])
def _cosine_votes_kernel(parent_ptr, dt_ptr, rows_ptr, wts_ptr, inv_s_ptr, inv_t_ptr,
                         src_valid_ptr, trg_valid_ptr, out_ptr, hist_ptr, bx_ptr, by_ptr,
                         ix_ptr, iy_ptr, n, m, exp1, nx, xt, yt, wt,
                         HAS_PARENT: tl.constexpr, IDENTITY: tl.constexpr,
                         MASKED: tl.constexpr, WITH_HIST: tl.constexpr, POW: tl.constexpr,
                         BI: tl.constexpr, BJ: tl.constexpr):
    offs_i, offs_j, mask_i, mask_j, mask = _tile(n, m, BI, BJ)
    cos = _cosine_tile(parent_ptr, dt_ptr, rows_ptr, wts_ptr, inv_s_ptr, inv_t_ptr, offs_i,
                       offs_j, mask_i, mask_j, mask, m, HAS_PARENT, IDENTITY)
    v = _power(tl.maximum(cos, 0.0), exp1, POW)
    if MASKED:
        sv = tl.load(src_valid_ptr + offs_i, mask=mask_i, other=0)
        tv = tl.load(trg_valid_ptr + offs_j, mask=mask_j, other=0)
        v = tl.where((sv != 0)[:, None] & (tv != 0)[None, :], v, 0.0)
    tl.store(out_ptr + offs_i.to(tl.int64)[:, None] * m + offs_j[None, :], v, mask=mask)
    if WITH_HIST:
        _hist_tile(hist_ptr, v, offs_i, offs_j, mask, bx_ptr, by_ptr, ix_ptr, iy_ptr, mask_i,
                   nx, xt, yt, wt)


@triton.jit(do_not_specialize=["n", "m", "nx", "xt", "yt", "wt", "nbins"])
def _plan_hist_kernel(k_ptr, mu_ptr, b_ptr, a_ptr, src_valid_ptr, trg_valid_ptr, hist_ptr,
                      bx_ptr, by_ptr, ix_ptr, iy_ptr, n, m, nv, exp2, nx, xt, yt, wt, nbins,
                      MASKED: tl.constexpr, WITH_HIST: tl.constexpr, POW: tl.constexpr,
                      BI: tl.constexpr, BJ: tl.constexpr):
    # Program (row block, candidate): the last Sinkhorn half-step a = mu / (K b) for its rows
    # (as ot.safe_div: 0 where mu is 0), then, re-reading the rows while they are in cache,
    # the plan's votes max(((K a_i) b_j) nv, 0) ** exp2 and their Hough histogram.
    cand = tl.program_id(1).to(tl.int64)
    k_ptr += cand * n * m
    b_ptr += cand * m
    a_ptr += cand * n
    hist_ptr += cand * nbins
    offs_i = tl.program_id(0) * BI + tl.arange(0, BI)
    mask_i = offs_i < n
    row = offs_i.to(tl.int64)[:, None] * m
    acc = tl.zeros([BI], dtype=tl.float32)
    for j0 in range(0, m, BJ):
        offs_j = j0 + tl.arange(0, BJ)
        mask_j = offs_j < m
        mask = mask_i[:, None] & mask_j[None, :]
        k = tl.load(k_ptr + row + offs_j[None, :], mask=mask, other=0.0)
        b = tl.load(b_ptr + offs_j, mask=mask_j, other=0.0)
        acc += tl.sum(k * b[None, :], axis=1)
    mu = tl.load(mu_ptr + offs_i, mask=mask_i, other=0.0)
    a = tl.where(mu > 0.0, mu / tl.maximum(acc, 1.1754943508222875e-38), 0.0)
    tl.store(a_ptr + offs_i, a, mask=mask_i)
    if WITH_HIST:
        keep_i = mask_i & (mu > 0.0)
        if MASKED:
            sv = tl.load(src_valid_ptr + offs_i, mask=mask_i, other=0)
            keep_i = keep_i & (sv != 0)
        for j0 in range(0, m, BJ):
            offs_j = j0 + tl.arange(0, BJ)
            mask_j = offs_j < m
            if MASKED:
                tv = tl.load(trg_valid_ptr + offs_j, mask=mask_j, other=0)
                mask_j = mask_j & (tv != 0)
            mask = keep_i[:, None] & mask_j[None, :]
            k = tl.load(k_ptr + row + offs_j[None, :], mask=mask, other=0.0)
            b = tl.load(b_ptr + offs_j, mask=mask_j, other=0.0)
            v = ((k * a[:, None]) * b[None, :]) * nv
            v = _power(tl.maximum(v, 0.0), exp2, POW)
            _hist_tile(hist_ptr, v, offs_i, offs_j, mask, bx_ptr, by_ptr, ix_ptr, iy_ptr,
                       keep_i, nx, xt, yt, wt)


@triton.jit(do_not_specialize=["hs", "ws", "ht", "wt", "ndx", "nxb"])
def _shift_hist_kernel(v_ptr, a_ptr, b_ptr, src_valid_ptr, trg_valid_ptr, d_ptr, hs, ws, ht,
                       wt, ndx, nxb, nv, exp2, IS_PLAN: tl.constexpr, MASKED: tl.constexpr,
                       POW: tl.constexpr, BX: tl.constexpr, BD: tl.constexpr):
    # Program (dy, source column block, candidate): the votes of every (source, target) pair
    # whose grid offset (target row - source row) is dy and whose source column is in the
    # block, summed per column offset dx = target col - source col: the block's part of row
    # dy of the displacement histogram D[dy, dx]. For a source row iy, the pairs of the
    # block with offsets (dy, dx) form a skewed band of the block of V between source grid
    # row iy and target grid row iy + dy: loaded as [source col x dx] tiles (each tile row
    # a contiguous run of one V row, shifted by one per row) and summed over source
    # columns. Every vote is read once, no atomic add is needed, and the result does not
    # depend on the order programs run in.
    cand = tl.program_id(2).to(tl.int64)
    xb = tl.program_id(1)
    n = hs.to(tl.int64) * ws
    m = ht.to(tl.int64) * wt
    ndy = hs + ht - 1
    v_ptr += cand * n * m
    a_ptr += cand * n
    b_ptr += cand * m
    dy = tl.program_id(0) - (hs - 1)
    d_ptr += ((cand * nxb + xb) * ndy + tl.program_id(0)) * ndx
    iy_lo = tl.maximum(0, -dy)
    iy_hi = tl.minimum(hs, ht - dy)
    x0 = xb * BX
    ix = x0 + tl.arange(0, BX)
    in_x = ix < ws
    # The block's offsets k = dx + ws - 1 start at ws - 1 - (x0 + BX - 1).
    kstart = ws - x0 - BX
    for kb in range(0, wt + BX - 1, BD):
        k = kstart + kb + tl.arange(0, BD)
        c = ix[:, None] + k[None, :] - (ws - 1)
        ok0 = in_x[:, None] & (c >= 0) & (c < wt)
        acc = tl.zeros([BD], dtype=tl.float32)
        for iy in range(iy_lo, iy_hi):
            i = iy * ws + ix
            j = (iy + dy) * wt + c
            ok = ok0
            v = tl.load(v_ptr + i.to(tl.int64)[:, None] * m + j, mask=ok, other=0.0)
            if IS_PLAN:
                ai = tl.load(a_ptr + i, mask=in_x, other=0.0)
                bj = tl.load(b_ptr + j, mask=ok, other=0.0)
                v = ((v * ai[:, None]) * bj) * nv
                v = _power(tl.maximum(v, 0.0), exp2, POW)
            if MASKED:
                sv = tl.load(src_valid_ptr + i, mask=in_x, other=0)
                tv = tl.load(trg_valid_ptr + j, mask=ok, other=0)
                ok = ok & (sv != 0)[:, None] & (tv != 0)
            acc += tl.sum(tl.where(ok, v, 0.0), axis=0)
        tl.store(d_ptr + k, acc, mask=(k >= 0) & (k < ndx))


#: Tile of the displacement-histogram pass: 8 source columns x up to 128 column offsets.
SHIFT_X = 8
SHIFT_D = 128


def shift_hist(V: torch.Tensor, a: torch.Tensor | None, b: torch.Tensor | None, nv: float,
               exp2: float, src_valid: torch.Tensor, trg_valid: torch.Tensor,
               src_hw: tuple[int, int], trg_hw: tuple[int, int], *, masked: bool) -> torch.Tensor:
    """``[S x (hs + ht - 1) x (ws + wt - 1)]`` displacement histograms of ``S`` candidates.

    ``V`` is ``[S x n x m]``: the Gibbs kernels (``a``, ``b`` given: the votes are the plans'
    ``max(((K a_i) b_j) nv, 0) ** exp2``) or the votes themselves. Entry ``[dy, dx]`` sums
    the votes of the pairs whose target cell is ``(dy, dx)`` grid cells from the source cell
    (indices offset by ``hs - 1`` and ``ws - 1``).
    """
    S = V.shape[0]
    (hs, ws), (ht, wt) = src_hw, trg_hw
    ndy, ndx = hs + ht - 1, ws + wt - 1
    bx = min(SHIFT_X, triton.next_power_of_2(ws))
    nxb = triton.cdiv(ws, bx)
    # Each column block writes its window of offsets; the blocks' parts are summed after.
    part = torch.zeros(S, nxb, ndy, ndx, device=V.device)
    plan = a is not None and b is not None
    _shift_hist_kernel[(ndy, nxb, S)](
        V, a if a is not None else V, b if b is not None else V, src_valid, trg_valid, part, hs,
        ws, ht, wt, ndx, nxb, float(nv), float(exp2), IS_PLAN=plan, MASKED=masked,
        POW=power_code(exp2) if plan else 1, BX=bx,
        BD=min(SHIFT_D, triton.next_power_of_2(wt + bx - 1)),
    )
    return part.sum(1)


def _grid(n: int, m: int) -> tuple[int, int]:
    return triton.cdiv(n, BLOCK_I), triton.cdiv(m, BLOCK_J)


def add_upsampled(out: torch.Tensor, dt: torch.Tensor, rows: torch.Tensor, wts: torch.Tensor,
                  *, identity: bool, first: bool) -> None:
    """``out (+)= U_s dt`` for one layer (see the CPU kernel of the same name)."""
    n, m = out.shape
    _add_upsampled_kernel[_grid(n, m)](out, dt, rows, wts, n, m, FIRST=first,
                                       IDENTITY=identity, BI=BLOCK_I, BJ=BLOCK_J)


def gibbs(parent: torch.Tensor | None, dt: torch.Tensor, rows: torch.Tensor, wts: torch.Tensor,
          inv_s: torch.Tensor, inv_t: torch.Tensor, a0: torch.Tensor, eps: float,
          out: torch.Tensor, colpart: torch.Tensor, *, identity: bool) -> None:
    """OT pass 1: ``out = exp((max(cos, 0) - 1) / eps)``; ``colpart.sum(0)`` is ``K^T a0``.

    ``colpart`` is ``[ceil(n / BLOCK_I) x m]`` (see :func:`colpart_rows`).
    """
    n, m = out.shape
    _gibbs_kernel[_grid(n, m)](
        out if parent is None else parent, dt, rows, wts, inv_s, inv_t, a0, out, colpart, n, m,
        float(eps), HAS_PARENT=parent is not None, IDENTITY=identity, BI=BLOCK_I, BJ=BLOCK_J,
    )


def colpart_rows(n: int) -> int:
    """Rows of :func:`gibbs`'s column-sum buffer for ``n`` source hyperpixels."""
    return int(triton.cdiv(n, BLOCK_I))


def cosine_votes(parent: torch.Tensor | None, dt: torch.Tensor, rows: torch.Tensor,
                 wts: torch.Tensor, inv_s: torch.Tensor, inv_t: torch.Tensor, exp1: float,
                 src_valid: torch.Tensor, trg_valid: torch.Tensor, out: torch.Tensor,
                 hist: torch.Tensor | None, tables: tuple[torch.Tensor, ...], nx: int, wt: int,
                 *, identity: bool, masked: bool) -> None:
    """HPF pass: ``out = max(cos, 0) ** exp1`` (masked) and, with ``hist``, its histogram."""
    n, m = out.shape
    bx, by, ix, iy = tables
    _cosine_votes_kernel[_grid(n, m)](
        out if parent is None else parent, dt, rows, wts, inv_s, inv_t, src_valid, trg_valid,
        out, out if hist is None else hist, bx, by, ix, iy, n, m, float(exp1), nx,
        bx.shape[1], by.shape[1], wt, HAS_PARENT=parent is not None, IDENTITY=identity,
        MASKED=masked, WITH_HIST=hist is not None, POW=power_code(exp1), BI=BLOCK_I,
        BJ=BLOCK_J,
    )


def plan_hist(K: torch.Tensor, mu: torch.Tensor, b: torch.Tensor, a: torch.Tensor, nv: float,
              exp2: float, src_valid: torch.Tensor, trg_valid: torch.Tensor,
              hist: torch.Tensor | None, tables: tuple[torch.Tensor, ...], nx: int, wt: int,
              *, masked: bool) -> None:
    """OT pass 2 for ``S`` candidates: ``a[s] = mu / (K[s] b[s])`` and, with ``hist``
    (``[S x ny*nx]``, zeroed), the Hough histogram of every plan's votes.

    ``K`` is ``[S x n x m]``, ``b`` ``[S x m]``, ``a`` ``[S x n]`` (written).
    """
    S, n, m = K.shape
    bx, by, ix, iy = tables
    _plan_hist_kernel[(triton.cdiv(n, ROWS_HIST), S)](
        K, mu, b, a, src_valid, trg_valid, a if hist is None else hist, bx, by, ix, iy, n, m,
        float(nv), float(exp2), nx, bx.shape[1], by.shape[1], wt,
        0 if hist is None else hist.shape[1], MASKED=masked, WITH_HIST=hist is not None,
        POW=power_code(exp2), BI=ROWS_HIST, BJ=CHUNK_HIST,
    )
