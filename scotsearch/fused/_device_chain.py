"""The fused chain on a GPU (Triton kernels): the CPU chain's passes, batched over children.

Same plan as :mod:`scotsearch.fused._chain`: per pair and stride group, each layer's term is
formed once at native source resolution; candidates are scored parent by parent, a parent's
summed numerator formed once and each child adding its one layer on the fly. On a GPU one
candidate's pass is too short to keep the device busy from Python, so a parent's children
are scored in batches: one Gibbs (or HPF vote) kernel per child writes its slice of a
``[c x n x m]`` buffer, then every later step (Sinkhorn scalings, the plan/histogram pass,
smoothing, the keypoint rows' argmax) runs once for the whole batch.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from scotsearch.config import MatchConfig
from scotsearch.fused import _triton as kern
from scotsearch.fused._plan import plan_parents
from scotsearch.fused._terms import TermStore
from scotsearch.fused._terms import term_parts
from scotsearch.geometry import Grid
from scotsearch.matching import members_matrix
from scotsearch.matching import source_taps
from scotsearch.matching import subset_inverse_norms
from scotsearch.ot import safe_div
from scotsearch.rhm import HoughTables
from scotsearch.rhm import smooth_histogram
from scotsearch.transfer import keypoint_rows
from scotsearch.transfer import transfer_from_best


#: How the Hough histogram is summed where the bins depend on the grid offset alone:
#: ``shift`` (the displacement histogram, no atomic adds) or ``atomic`` (every vote added to
#: its bin inside the vote pass, as for any other geometry).
HISTOGRAM = "shift"

#: Bytes of device memory one batch of children's ``[c x n x m]`` buffer may take, at most
#: a quarter of what is free when the batch is planned.
BATCH_BYTES = 8 << 30


@dataclass
class DeviceTerm:
    """One layer on one pair, on the device (as :class:`scotsearch.fused._terms.Term`)."""

    dt: torch.Tensor  # [k x m] float32, native source rows, target side upsampled
    rows: torch.Tensor  # [n x 4] int32 source taps (placeholder when identity)
    wts: torch.Tensor  # [n x 4] float32 tap weights
    identity: bool
    sq_src: torch.Tensor  # [n]
    sq_trg: torch.Tensor  # [m]

    @property
    def nbytes(self) -> int:
        return int(4 * (self.dt.numel() + self.sq_src.numel() + self.sq_trg.numel()))


def device_term(
    f_src: torch.Tensor,
    f_trg: torch.Tensor,
    src_hw: tuple[int, int],
    trg_hw: tuple[int, int],
    device: torch.device,
) -> DeviceTerm:
    """The device chain's form of one layer's term (int32 taps on the device)."""
    dt, identity, native, sq_src, sq_trg = term_parts(f_src.to(device), f_trg.to(device),
                                                      src_hw, trg_hw)
    if identity:
        rows = torch.zeros(1, 4, dtype=torch.int32, device=device)
        wts = torch.zeros(1, 4, device=device)
    else:
        rows, wts = _device_taps(native, tuple(src_hw), str(device))
    return DeviceTerm(dt=dt.contiguous(), rows=rows, wts=wts, identity=identity,
                      sq_src=sq_src, sq_trg=sq_trg)


@functools.lru_cache(maxsize=256)
def _device_taps(native: tuple[int, int], src_hw: tuple[int, int],
                 device: str) -> tuple[torch.Tensor, torch.Tensor]:
    # Memoised on the device: built and copied once per shape, not once per pair and layer.
    r, w = source_taps(native, src_hw)
    return r.to(device=device, dtype=torch.int32).contiguous(), w.to(device).contiguous()


def default_budget(device: torch.device) -> int:
    """Bytes a device's term store may hold: half of its free memory (2 GB off CUDA)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0]) // 2
    return 2 << 30


@dataclass
class _Geometry:
    src_valid: torch.Tensor  # [n] int8
    trg_valid: torch.Tensor  # [m] int8
    masked: bool
    nv: float  # number of kept source hyperpixels (the plan's scale)
    tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # bx, by, ix, iy
    nx: int
    wt: int
    shape: tuple[int, int]
    src_hw: tuple[int, int]
    trg_hw: tuple[int, int]
    #: ``(by_d [hs + ht - 1], bx_d [ws + wt - 1])`` int64: the Hough bin of each grid offset,
    #: when the bins depend on the offset alone (see :func:`_displacement_bins`)
    disp: tuple[torch.Tensor, torch.Tensor] | None = None


def _geometry(src_grid: Grid, trg_grid: Grid, tables: HoughTables | None,
              device: torch.device) -> _Geometry:
    sv, tv = src_grid.valid.to(device), trg_grid.valid.to(device)
    masked = not bool(sv.all() and tv.all())
    if tables is None:  # no Hough step: placeholders of the kernels' argument types
        z = torch.zeros(1, 1, dtype=torch.int32, device=device)
        zi = torch.zeros(src_grid.n, dtype=torch.int32, device=device)
        return _Geometry(sv.to(torch.int8), tv.to(torch.int8), masked, float(sv.sum()),
                         (z, z, zi, zi), 1, trg_grid.w, (1, 1), (src_grid.h, src_grid.w),
                         (trg_grid.h, trg_grid.w))
    j = torch.arange(trg_grid.n)
    # The kernels index target bins by grid row and column; make_grid's centres are
    # row-major, so the tables' distinct target x / y are exactly the columns / rows.
    assert torch.equal(tables.jx.cpu(), j % trg_grid.w)
    assert torch.equal(tables.jy.cpu(), j // trg_grid.w)

    def i32(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=torch.int32).contiguous()

    return _Geometry(
        sv.to(torch.int8), tv.to(torch.int8), masked, float(sv.sum()),
        (i32(tables.bx), i32(tables.by), i32(tables.ix), i32(tables.iy)),
        tables.shape[1], trg_grid.w, tables.shape, (src_grid.h, src_grid.w),
        (trg_grid.h, trg_grid.w), _displacement_bins(tables, src_grid, trg_grid, device),
    )


def _displacement_bins(tables: HoughTables, src_grid: Grid, trg_grid: Grid,
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The Hough bin of every grid offset, or None where bins are not a function of it.

    Both grids of a group have one stride and centres ``(col * stride, row * stride)``, so a
    pair's x vote ``W_s - x_i + x_j = W_s + stride * (col_j - col_i)`` depends only on the
    column offset (and y likewise): the histogram is then the displacement histogram
    summed over the offsets of each bin, which the device sums without atomic adds
    (:func:`scotsearch.fused._triton.shift_hist`). Checked on the tables themselves, so any
    other geometry takes the atomic-add histogram instead.
    """
    out = []
    for tab, idx, n_src, n_trg in ((tables.by, tables.iy, src_grid.h, trg_grid.h),
                                   (tables.bx, tables.ix, src_grid.w, trg_grid.w)):
        if tuple(tab.shape) != (n_src, n_trg):
            return None
        src = torch.arange(n_src).unsqueeze(1)
        off = (torch.arange(n_trg).unsqueeze(0) - src + n_src - 1).reshape(-1)
        per_off = torch.zeros(n_src + n_trg - 1, dtype=torch.long)
        per_off[off] = tab.reshape(-1).long()
        if not torch.equal(per_off[off], tab.reshape(-1).long()):
            return None
        out.append(per_off.to(device))
    i = torch.arange(src_grid.n)
    if not (torch.equal(tables.ix.cpu(), i % src_grid.w)
            and torch.equal(tables.iy.cpu(), i // src_grid.w)):
        return None
    return out[0], out[1]


def _row_bins(g: _Geometry, rows: torch.Tensor, m: int) -> torch.Tensor:
    """``[r x m]`` int64 Hough bin of each listed source row's votes (on the device)."""
    bx, by, ix, iy = (t.long() for t in g.tables)
    j = torch.arange(m, device=rows.device)
    return bx[ix[rows]][:, j % g.wt] + by[iy[rows]][:, j // g.wt] * g.nx


def score_group_device(
    src_layers: dict[int, torch.Tensor],
    trg_layers: dict[int, torch.Tensor],
    group: Sequence[tuple[int, ...]],
    *,
    src_grid: Grid,
    trg_grid: Grid,
    src_boxes: dict[int, torch.Tensor],
    mu: torch.Tensor,
    nu: torch.Tensor,
    tables: HoughTables | None,
    match: MatchConfig,
    src_kps: torch.Tensor,
    device: torch.device,
    store: TermStore | None = None,
    pair_key: Hashable = None,
) -> torch.Tensor:
    """``[S x K x 2]`` predicted target keypoints of every subset of ``group`` on one pair.

    The contract of :func:`scotsearch.fused._chain.score_group`, computed on ``device``.
    """
    layer_order = sorted({l for s in group for l in s})
    src_hw, trg_hw = (src_grid.h, src_grid.w), (trg_grid.h, trg_grid.w)
    n, m = src_grid.n, trg_grid.n
    terms: dict[int, DeviceTerm] = {}
    for l in layer_order:
        key = (pair_key, l, src_hw, trg_hw)
        term = store.get(key) if store is not None and pair_key is not None else None
        if term is None:
            term = device_term(src_layers[l], trg_layers[l], src_hw, trg_hw, device)
            if store is not None and pair_key is not None:
                store.put(key, term)
        terms[l] = term
    sq_src = torch.stack([terms[l].sq_src for l in layer_order])
    sq_trg = torch.stack([terms[l].sq_trg for l in layer_order])
    inv_s, inv_t = subset_inverse_norms(sq_src, sq_trg,
                                        members_matrix(group, layer_order, device))
    geo = _geometry(src_grid, trg_grid, tables, device)
    # Only these source rows are ever read by keypoint transfer, for any base of the group.
    need = torch.zeros(n, dtype=torch.bool)
    for b in sorted({s[0] for s in group}):
        need |= keypoint_rows(src_kps.cpu(), src_boxes[b].cpu(), src_grid.valid.cpu()).any(0)
    rows = need.nonzero().squeeze(1).to(device)
    row_bins = _row_bins(geo, rows, m) if tables is not None else None
    mu_d = mu.to(device).float().contiguous()
    nu_d = nu.to(device).float()
    a0 = (mu_d > 0).float()
    a0 = (a0 / a0.sum().clamp_min(1.0)).contiguous()  # sinkhorn's uniform start over kept rows

    free = (int(torch.cuda.mem_get_info(device)[0]) if device.type == "cuda" else BATCH_BYTES)
    per = max(1, min(BATCH_BYTES, free // 4) // (n * m * 4))
    plan = plan_parents(group)
    by_parent: dict[tuple[int, ...], list[int]] = {}
    for k in range(len(group)):
        by_parent.setdefault(plan[k][0], []).append(k)
    best_all = torch.zeros(len(group), n, dtype=torch.int64, device=device)
    for p, children in by_parent.items():
        parent = None
        if p:
            parent = torch.empty(n, m, device=device)
            for q, l in enumerate(p):
                t = terms[l]
                kern.add_upsampled(parent, t.dt, t.rows, t.wts, identity=t.identity,
                                   first=q == 0)
        for start in range(0, len(children), per):
            ks = children[start : start + per]
            batch = [(k, terms[plan[k][1]]) for k in ks]
            best = _batch(parent, batch, inv_s, inv_t, match, geo, mu_d, nu_d, a0, rows,
                          row_bins)
            best_all[torch.tensor(ks, device=device)[:, None], rows[None, :]] = best

    pred = torch.empty(len(group), src_kps.shape[0], 2, device=device)
    kps = src_kps.to(device)
    centres_s, centres_t = src_grid.centres.to(device), trg_grid.centres.to(device)
    valid = src_grid.valid.to(device)
    for b in sorted({s[0] for s in group}):
        sel = torch.tensor([k for k, s in enumerate(group) if s[0] == b], device=device)
        pred[sel] = transfer_from_best(best_all[sel], kps, src_boxes[b].to(device), centres_s,
                                       centres_t, src_valid=valid)
    return pred.to(src_kps.device)


def _bins_from_offsets(D: torch.Tensor, g: _Geometry) -> torch.Tensor:
    """``[S x ny*nx]`` Hough histograms from ``[S x ndy x ndx]`` displacement histograms."""
    assert g.disp is not None
    by_d, bx_d = g.disp
    S, ndy, _ = D.shape
    ny, nx = g.shape
    # index_add_ rather than one-hot products: exact float32 sums whatever the matmul
    # precision setting (TF32 would round the votes).
    hx = D.new_zeros(S, ndy, nx).index_add_(2, bx_d, D)
    return D.new_zeros(S, ny, nx).index_add_(1, by_d, hx).reshape(S, ny * nx)


def _batch(
    parent: torch.Tensor | None,
    batch: list[tuple[int, DeviceTerm]],
    inv_s: torch.Tensor,
    inv_t: torch.Tensor,
    match: MatchConfig,
    g: _Geometry,
    mu: torch.Tensor,
    nu: torch.Tensor,
    a0: torch.Tensor,
    rows: torch.Tensor,
    row_bins: torch.Tensor | None,
) -> torch.Tensor:
    """``[c x r]`` best target of each listed source row for a batch of one parent's children."""
    c = len(batch)
    n, m = inv_s.shape[1], inv_t.shape[1]
    dev = inv_s.device
    work = torch.empty(c, n, m, device=dev)
    hist = torch.zeros(c, g.shape[0] * g.shape[1], device=dev) if match.rhm else None
    # With offset-only bins the histogram is summed from the displacement histogram;
    # otherwise every vote is added to its bin atomically inside the vote pass.
    shift = hist is not None and g.disp is not None and HISTOGRAM == "shift"
    scatter = None if shift else hist
    if match.similarity == "cos":
        for q, (k, t) in enumerate(batch):
            kern.cosine_votes(
                parent, t.dt, t.rows, t.wts, inv_s[k].contiguous(), inv_t[k].contiguous(),
                float(match.exp1), g.src_valid, g.trg_valid, work[q],
                None if scatter is None else scatter[q], g.tables, g.nx, g.wt,
                identity=t.identity, masked=g.masked,
            )
        if shift:  # the votes are masked already
            hist = _bins_from_offsets(kern.shift_hist(work, None, None, 1.0, 1.0, g.src_valid,
                                                      g.trg_valid, g.src_hw, g.trg_hw,
                                                      masked=False), g)
        votes = work[:, rows, :]
    else:
        colpart = torch.empty(c, kern.colpart_rows(n), m, device=dev)
        for q, (k, t) in enumerate(batch):
            kern.gibbs(parent, t.dt, t.rows, t.wts, inv_s[k].contiguous(),
                       inv_t[k].contiguous(), a0, float(match.eps), work[q], colpart[q],
                       identity=t.identity)
        # float64 column sums, as the CPU chain (more accurate than a float32 product)
        b = safe_div(nu, colpart.sum(1, dtype=torch.float64).float())
        for _ in range(match.n_iter - 1):
            a = safe_div(mu, torch.bmm(work, b.unsqueeze(-1)).squeeze(-1))
            b = safe_div(nu, torch.bmm(work.transpose(1, 2), a.unsqueeze(-1)).squeeze(-1))
        b = b.contiguous()
        a = torch.empty(c, n, device=dev)
        kern.plan_hist(work, mu, b, a, g.nv, float(match.exp2), g.src_valid, g.trg_valid,
                       scatter, g.tables, g.nx, g.wt, masked=g.masked)
        if shift:
            hist = _bins_from_offsets(kern.shift_hist(work, a, b, g.nv, float(match.exp2),
                                                      g.src_valid, g.trg_valid, g.src_hw,
                                                      g.trg_hw, masked=g.masked), g)
        # The eager order: ((K a) b) nv, clamped, powered.
        votes = work[:, rows, :].mul_(a[:, rows, None]).mul_(b[:, None, :]).mul_(g.nv)
        votes = votes.clamp_min_(0)
        if match.exp2 != 1:
            votes = votes.pow_(match.exp2)
        if g.masked:
            votes = votes.mul_((g.src_valid[rows, None] != 0) & (g.trg_valid[None, :] != 0))
    if hist is not None:
        assert row_bins is not None
        prior = smooth_histogram(hist, g.shape)
        votes = votes.mul_(prior[:, row_bins.reshape(-1)].view(c, len(rows), m))
    if g.masked:
        votes = votes.masked_fill_(g.trg_valid[None, None, :] == 0, float("-inf"))
    return votes.argmax(-1)
