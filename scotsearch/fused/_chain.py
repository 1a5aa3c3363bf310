"""The fused CPU chain for one pair: layer terms once, then a few passes per candidate.

Per pair and stride group, each layer contributes its dot products at native source
resolution (upsampled on the target side only, :func:`scotsearch.matching.native_term`);
candidates are scored parent by parent (:func:`plan_parents`): a parent's summed similarity
numerator is formed once, and each child's chain reads it plus the child's one layer term:

* OT: one pass forms the Gibbs kernel and its column sums, one pass forms the row scalings
  and the Hough histogram of the plan, and only the source rows whose receptive fields hold a
  keypoint get the smoothed prior, the confidence and the argmax;
* cosine (HPF): one pass forms the votes and their histogram, then the keypoint rows.

Nothing ``[S x n x m]`` exists: one ``[n x m]`` working buffer plus the current parent.
"""

from __future__ import annotations

from collections.abc import Hashable
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from scotsearch.config import MatchConfig
from scotsearch.fused import _kernels as kern
from scotsearch.fused._plan import plan_parents
from scotsearch.fused._terms import Term
from scotsearch.fused._terms import TermStore
from scotsearch.fused._terms import layer_term
from scotsearch.geometry import Grid
from scotsearch.matching import members_matrix
from scotsearch.matching import subset_inverse_norms
from scotsearch.ot import safe_div
from scotsearch.rhm import HoughTables
from scotsearch.rhm import smooth_histogram
from scotsearch.transfer import keypoint_rows
from scotsearch.transfer import transfer_from_best


@dataclass
class _Geometry:
    """Everything of a pair's grids the kernels read, as numpy arrays."""

    src_valid: np.ndarray
    trg_valid: np.ndarray
    masked: bool
    nv: np.float32  # number of kept source hyperpixels (the plan's scale)
    bx: np.ndarray
    by: np.ndarray
    nx: int
    ix: np.ndarray
    iy: np.ndarray
    wt: int  # target grid columns: target j is cell (j // wt, j % wt)
    shape: tuple[int, int]


def _geometry(src_grid: Grid, trg_grid: Grid, tables: HoughTables | None) -> _Geometry:
    sv = src_grid.valid.cpu().numpy()
    tv = trg_grid.valid.cpu().numpy()
    masked = not bool(sv.all() and tv.all())
    if tables is None:  # no Hough step: placeholders of the kernels' argument types
        z2 = np.zeros((1, trg_grid.w), np.int64)
        zs = np.zeros(len(sv), np.int64)
        return _Geometry(sv, tv, masked, np.float32(sv.sum()), z2, z2, 1, zs, zs, trg_grid.w,
                         (1, 1))
    j = torch.arange(trg_grid.n)
    # The kernels index target bins by grid row and column; make_grid's centres are
    # row-major, so the tables' distinct target x / y are exactly the columns / rows.
    assert torch.equal(tables.jx.cpu(), j % trg_grid.w)
    assert torch.equal(tables.jy.cpu(), j // trg_grid.w)
    return _Geometry(
        sv, tv, masked, np.float32(sv.sum()), tables.bx.numpy(), tables.by.numpy(),
        tables.shape[1], tables.ix.numpy(), tables.iy.numpy(), trg_grid.w, tables.shape,
    )


class _Scratch:
    """The chain's two ``[n x m]`` buffers, kept between calls and grown when needed.

    Arrays this large are mapped fresh by the allocator every time and every page faulted
    in and zeroed on first touch: measured on the demo search at side 300, 13.8 M page
    faults and 90 s of system time in a 15-minute run. Reused, they cost that once.
    """

    def __init__(self) -> None:
        self._flat: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, int]) -> np.ndarray:
        size = shape[0] * shape[1]
        flat = self._flat.get(name)
        if flat is None or flat.size < size:
            flat = self._flat[name] = np.empty(size, np.float32)
        return flat[:size].reshape(shape)


_SCRATCH = _Scratch()

#: Blocks of source rows whose column sums and Hough histograms are accumulated apart, then
#: added: a fixed number, not one per thread, so that a candidate's scores do not depend on
#: the threads the kernels run on (cooperating workers pinned to one thread each, or a study
#: resumed on a machine with more cores, store what one process with all cores would; with
#: one block per thread, 1 and 2 threads moved one demo keypoint of 6,365 by 0.11 px).
#: 64 keeps a machine of up to 64 cores busy; its partial sums cost ~1 ms per candidate.
ROW_BLOCKS = 64


def score_group(
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
    store: TermStore | None = None,
    pair_key: Hashable = None,
) -> torch.Tensor:
    """``[S x K x 2]`` predicted target keypoints of every subset of ``group`` on one pair.

    All subsets share the stride of their base layer (one grid); ``src_boxes`` holds each
    base layer's receptive-field boxes. Same contract as the eager evaluator's group step.
    ``store`` keeps layer terms between calls under ``(pair_key, layer, grid sizes)``.
    """
    layer_order = sorted({l for s in group for l in s})
    src_hw, trg_hw = (src_grid.h, src_grid.w), (trg_grid.h, trg_grid.w)
    n, m = src_grid.n, trg_grid.n
    terms: dict[int, Term] = {}
    for l in layer_order:
        key = (pair_key, l, src_hw, trg_hw)
        term = store.get(key) if store is not None and pair_key is not None else None
        if term is None:
            term = layer_term(src_layers[l], trg_layers[l], src_hw, trg_hw)
            if store is not None and pair_key is not None:
                store.put(key, term)
        terms[l] = term
    sq_src = torch.stack([terms[l].sq_src for l in layer_order])
    sq_trg = torch.stack([terms[l].sq_trg for l in layer_order])
    inv_s, inv_t = subset_inverse_norms(sq_src, sq_trg, members_matrix(group, layer_order, "cpu"))
    geo = _geometry(src_grid, trg_grid, tables)
    # Only these source rows are ever read by keypoint transfer, for any base of the group.
    need = torch.zeros(n, dtype=torch.bool)
    for b in sorted({s[0] for s in group}):
        need |= keypoint_rows(src_kps.cpu(), src_boxes[b].cpu(), src_grid.valid.cpu()).any(0)
    rows = need.nonzero().squeeze(1).numpy()

    nb = ROW_BLOCKS
    work = _SCRATCH.array("work", (n, m))
    colpart = np.empty((nb, m), np.float64)
    # float32 histograms, as the eager chain's index_add_; 32 KB per thread, in L1 cache
    histpart = np.empty((nb, geo.shape[0] * geo.shape[1]), np.float32)
    mu_np = mu.cpu().float().numpy()
    nu_t = nu.cpu().float()
    a0 = (mu_np > 0).astype(np.float32)
    a0 /= max(a0.sum(), np.float32(1.0))  # sinkhorn's uniform start over kept rows

    plan = plan_parents(group)
    order = sorted(range(len(group)), key=lambda k: plan[k][0])
    best_all = torch.zeros(len(group), n, dtype=torch.int64)
    parent_key: tuple[int, ...] | None = None
    parent = work  # placeholder of the right type while there is no parent
    for k in order:
        p, added = plan[k]
        if p and p != parent_key:
            parent = _SCRATCH.array("parent", (n, m))
            for q, l in enumerate(p):
                t = terms[l]
                kern.add_upsampled(parent, t.dt, t.rows, t.wts, t.identity, q == 0)
            parent_key = p
        best = np.zeros(n, np.int64)
        _candidate(
            parent, bool(p), terms[added], inv_s[k].numpy(), inv_t[k].numpy(), match, geo,
            mu_np, nu_t, a0, work, colpart, histpart, rows, best,
        )
        best_all[k] = torch.from_numpy(best)

    dev = src_kps.device
    pred = torch.empty(len(group), src_kps.shape[0], 2, device=dev)
    for k, s in enumerate(group):
        pred[k] = transfer_from_best(
            best_all[k].to(dev), src_kps, src_boxes[s[0]], src_grid.centres, trg_grid.centres,
            src_valid=src_grid.valid,
        )
    return pred


def _candidate(
    parent: np.ndarray,
    has_parent: bool,
    term: Term,
    inv_s: np.ndarray,
    inv_t: np.ndarray,
    match: MatchConfig,
    geo: _Geometry,
    mu: np.ndarray,
    nu: torch.Tensor,
    a0: np.ndarray,
    work: np.ndarray,
    colpart: np.ndarray,
    histpart: np.ndarray,
    rows: np.ndarray,
    best: np.ndarray,
) -> None:
    """One candidate's chain; fills ``best`` at ``rows``."""
    g = geo
    prior = np.zeros(1, np.float32)
    if match.similarity == "cos":
        kern.cosine_votes(
            parent, has_parent, term.dt, term.rows, term.wts, term.identity, inv_s, inv_t,
            float(match.exp1), g.src_valid, g.trg_valid, g.masked, match.rhm, g.bx, g.by, g.nx,
            g.ix, g.iy, g.wt, work, histpart,
        )
        if match.rhm:
            prior = _prior(histpart, g.shape)
        kern.best_targets(
            work, False, a0, a0, g.nv, 1.0, g.src_valid, g.trg_valid, g.masked, match.rhm,
            prior, g.bx, g.by, g.nx, g.ix, g.iy, g.wt, rows, best, kern.threads(),
        )
        return
    kern.gibbs(
        parent, has_parent, term.dt, term.rows, term.wts, term.identity, inv_s, inv_t,
        np.float32(match.eps), a0, work, colpart,
    )
    # The Sinkhorn scalings as the eager chain forms them; the matrix-vector products over
    # the kernel are BLAS's, which streams them at memory speed.
    K = torch.from_numpy(work)
    mu_t = torch.from_numpy(mu)
    b = safe_div(nu, torch.from_numpy(colpart.sum(0)).float())
    for _ in range(match.n_iter - 1):
        a_t = safe_div(mu_t, K @ b)
        b = safe_div(nu, K.T @ a_t)
    b_np = b.numpy()
    exp2 = float(match.exp2)
    if match.rhm:
        # The last half-step a = mu / (K b) is formed inside the histogram pass.
        a = np.empty_like(mu)
        kern.plan_votes_hist(
            work, mu, b_np, a, g.nv, exp2, g.src_valid, g.trg_valid, g.masked, g.bx, g.by,
            g.nx, g.ix, g.iy, g.wt, histpart,
        )
        prior = _prior(histpart, g.shape)
    else:
        a = safe_div(mu_t, K @ b).numpy()
    kern.best_targets(
        work, True, a, b_np, g.nv, exp2, g.src_valid, g.trg_valid, g.masked, match.rhm,
        prior, g.bx, g.by, g.nx, g.ix, g.iy, g.wt, rows, best, kern.threads(),
    )


def _prior(histpart: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    hist = torch.from_numpy(histpart.sum(0, dtype=np.float64)).float().unsqueeze(0)
    return smooth_histogram(hist, shape)[0].contiguous().numpy()


def warm_up(device: torch.device | str = "cpu") -> float:
    """Compile (or load from numba's or Triton's on-disk cache) the kernels of ``device``'s
    chain; returns the seconds taken.

    Runs each chain once on a tiny pair, so the timed work of a benchmark, and the first
    pair of a search, do not include compilation.
    """
    device = torch.device(device)
    import time

    from scotsearch.geometry import make_grid
    from scotsearch.rhm import hough_tables

    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    src = {0: torch.randn(4, 6, 6, generator=g), 1: torch.randn(4, 3, 3, generator=g)}
    trg = {0: torch.randn(4, 6, 6, generator=g), 1: torch.randn(4, 3, 3, generator=g)}
    grid = make_grid(6, 6, stride=4, rf=11, image_size=(24, 24), prune_margin=True)
    tables = hough_tables(grid.centres, grid.centres, (24, 24), (24, 24), ncells=64)
    w = grid.valid.float() / grid.valid.float().sum()
    kps = torch.tensor([[8.0, 8.0], [12.0, 4.0]])
    src[2], trg[2] = torch.randn(4, 6, 6, generator=g), torch.randn(4, 6, 6, generator=g)
    # with and without a parent, at base resolution and upsampled
    group = [(0,), (1,), (0, 1), (0, 2)]
    for sim in ("ot", "cos"):
        for rhm in (True, False):
            for exp in (0.5, 1.0):
                match = MatchConfig(similarity=sim, rhm=rhm, n_iter=2, exp2=exp, exp1=exp)
                kwargs = dict(src_grid=grid, trg_grid=grid, mu=w, nu=w, match=match,
                              src_boxes={0: grid.boxes, 1: grid.boxes},
                              tables=tables if rhm else None, src_kps=kps)
                if device.type == "cpu":
                    score_group(src, trg, group, **kwargs)  # type: ignore[arg-type]
                else:
                    from scotsearch.fused._device_chain import score_group_device

                    score_group_device(src, trg, group, device=device,
                                       **kwargs)  # type: ignore[arg-type]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0
