"""The evaluator: score many layer subsets on the same pairs in one call.

Work is pair-major: a pair's features are loaded and each needed layer's similarity term is
formed once, then every candidate subset is scored from sums of those terms; only the
transport, Hough and transfer steps run per subset, batched over candidates.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from typing import cast

import numpy as np
import torch

from scotsearch import fused
from scotsearch.config import MatchConfig
from scotsearch.config import Profile
from scotsearch.data.pairs import Dataset
from scotsearch.data.pairs import Pair
from scotsearch.data.pairs import check_keypoints_inside
from scotsearch.data.pairs import threshold_base
from scotsearch.errors import ConfigError
from scotsearch.features import FeatureSource
from scotsearch.features import ImageFeatures
from scotsearch.geometry import Grid
from scotsearch.geometry import make_grid
from scotsearch.layers import layer_specs
from scotsearch.masks import transferred_mask_scores
from scotsearch.matching import layer_terms
from scotsearch.matching import marginal
from scotsearch.matching import match_scores
from scotsearch.matching import members_matrix
from scotsearch.matching import subset_cosine
from scotsearch.matching import upsampled_sq_norms
from scotsearch.metrics import batch_mean_pck
from scotsearch.metrics import batch_pooled_pck
from scotsearch.metrics import correct_keypoints
from scotsearch.rhm import hough_space
from scotsearch.rhm import hough_tables
from scotsearch.transfer import transfer_keypoints


#: Elements (n * m * candidates) per candidate chunk: bounds the transient memory of the
#: per-candidate chain to a few hundred MB per tensor.
CHUNK_ELEMENTS = 1 << 26

TERM_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

#: ``--engine`` choices. ``auto`` takes the fused chain where it covers the settings and the
#: work is large enough to repay compiling its kernels (once per machine: numba caches them
#: on disk), else the eager chain.
ENGINES = ("auto", "eager", "fused")

#: ``auto`` switches to the fused chain from this many (pairs x candidates x n x m) matrix
#: elements on: about 20 s of eager work on a 2-core CPU, the cost of a first compilation.
FUSED_MIN_WORK = 2e9
#: The same on a CUDA device: Triton's first compilation of the kernels took 14.6 s on an
#: H200, where the eager chain takes about 0.29 ns per element (4.6 ms per SPair-size
#: candidate-pair), i.e. about 5e10 elements. Triton, too, keeps compiled kernels on disk.
FUSED_MIN_WORK_CUDA = 5e10
#: On a CUDA device ``auto`` also wants this many candidates per call. Measured on an H200
#: at SPair size: a beam search scoring 64 candidates per call ran at 1.6x the eager chain's
#: rate, a call of 24 candidates whose layer terms were all formed afresh at 0.7x (the
#: chain's per-pair work, not its kernels, dominated).
FUSED_MIN_CANDIDATES_CUDA = 32


@dataclass
class Scores:
    """Per-pair results of scoring candidate subsets.

    Attributes:
        subsets: the scored layer subsets (sorted tuples), in call order.
        alphas: PCK alphas.
        pair_index: indices into the dataset's pairs.
        n_correct: ``[S x A x P]`` correct keypoints per subset, alpha and pair (zeros on
            a mask dataset).
        n_kps: ``[P]`` keypoints per pair (source polygon vertices on a mask dataset).
        lt_acc, iou: ``[S x P]`` label-transfer accuracy and IoU per subset and pair on a
            mask dataset (Caltech-101, :mod:`scotsearch.masks`); ``None`` elsewhere.
    """

    subsets: list[tuple[int, ...]]
    alphas: tuple[float, ...]
    pair_index: list[int]
    n_correct: np.ndarray
    n_kps: np.ndarray
    lt_acc: np.ndarray | None = None
    iou: np.ndarray | None = None

    @property
    def pck(self) -> np.ndarray:
        """``[S x A x P]`` per-pair PCK in [0, 1]."""
        return self.n_correct / self.n_kps

    def mean(self) -> np.ndarray:
        """``[S x A]`` PCK x 100, mean over pairs (the references' headline number)."""
        return batch_mean_pck(self.pck)

    def pooled(self) -> np.ndarray:
        """``[S x A]`` PCK x 100 pooled over keypoints."""
        return batch_pooled_pck(self.n_correct, self.n_kps)


@dataclass
class _PreparedPair:
    src: ImageFeatures
    trg: ImageFeatures
    src_kps: torch.Tensor  # [K x 2] resized source pixels
    trg_kps: torch.Tensor  # [K x 2] resized target pixels
    thr: float  # threshold base in resized target pixels
    key: tuple[str, str]  # the pair's images: what its layer terms depend on


class Evaluator:
    """Scores layer subsets by PCK on a dataset split, reading features from a source.

    On a mask dataset (Caltech-101, ``dataset.metric == "mask"``) it scores them by the
    LT-ACC and IoU of the transferred source outline instead (:mod:`scotsearch.masks`).

    Args:
        dataset: the split to score.
        source: where per-image features come from (extractor or cache).
        match: default matching settings (``score`` can override per call).
        profile: reference-compatibility profile (pruning, staircase quirk).
        alphas: PCK alphas.
        thres: threshold basis, or ``auto`` for the dataset's convention.
        device: where the maths runs.
        precision: dtype of the stored per-layer similarity terms (``float32``,
            ``float16`` or ``bfloat16``): halves the memory traffic of forming each
            candidate's similarity on a GPU; transport, Hough and transfer stay float32.
        engine: ``eager`` (the reference chain), ``fused`` (the fused incremental CPU chain,
            :mod:`scotsearch.fused`; an error where it does not cover the settings) or
            ``auto``.
    """

    def __init__(
        self,
        dataset: Dataset,
        source: FeatureSource,
        *,
        match: MatchConfig,
        profile: Profile,
        alphas: Sequence[float] = (0.1,),
        thres: str = "auto",
        device: torch.device | str = "cpu",
        precision: str = "float32",
        engine: str = "auto",
    ) -> None:
        if engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        self.engine = engine
        self._fused_ready = False
        #: the engine the last :meth:`score` call ran (``eager`` or ``fused``)
        self.engine_used: str | None = None
        self._term_store: Any = None  # fused.TermStore, made on the first fused call
        if precision not in TERM_DTYPES:
            raise ConfigError(f"precision must be one of {sorted(TERM_DTYPES)}, not {precision!r}")
        self.term_dtype = TERM_DTYPES[precision]
        self.precision = precision
        if not alphas:
            raise ConfigError("at least one PCK alpha is needed")
        for a in alphas:
            if not (a > 0 and math.isfinite(a)):
                raise ConfigError(f"PCK alpha must be a positive number, got {a}")
        self.dataset = dataset
        self.source = source
        self.match = match
        if dataset.metric == "mask" and profile.prune_margin:
            # HPF prunes margin hyperpixels on every benchmark but Caltech-101 (§2; its
            # hpflow.py: pruning "causes error on Caltech benchmark"), so neither do we.
            profile = dataclasses.replace(profile, prune_margin=False)
        self.profile = profile
        self.alphas = tuple(float(a) for a in alphas)
        self.thres = dataset.default_thres if thres == "auto" else thres
        self.device = torch.device(device)
        # Which kernels the fused chain runs: numba's on the CPU, Triton's on CUDA. Tests set
        # "triton" to run the Triton kernels under Triton's interpreter on the CPU.
        self._fused_kernels = "triton" if self.device.type == "cuda" else "numba"
        self.specs = layer_specs(source.backbone)

    @property
    def pairs(self) -> tuple[Pair, ...]:
        return self.dataset.pairs

    def _prepare(self, pair: Pair, layer_ids: tuple[int, ...], need_cam: bool) -> _PreparedPair:
        src = self.source.get(pair.src_path, layer_ids, need_cam=need_cam)
        trg = self.source.get(pair.trg_path, layer_ids, need_cam=need_cam)
        src_wh = (src.orig_size[1], src.orig_size[0])
        trg_wh = (trg.orig_size[1], trg.orig_size[0])
        thr = 0.0  # a mask benchmark has no PCK threshold
        if self.dataset.metric != "mask":
            # (Mask outlines may leave the image: rasterisation drops outside pixels.)
            check_keypoints_inside(pair, src_wh, trg_wh)
            thr = threshold_base(pair, self.thres, trg_wh) * trg.ratio
        dt = torch.float32
        return _PreparedPair(
            src=src,
            trg=trg,
            src_kps=torch.as_tensor(pair.src_kps * src.ratio, dtype=dt, device=self.device),
            trg_kps=torch.as_tensor(pair.trg_kps * trg.ratio, dtype=dt, device=self.device),
            thr=float(thr),
            key=(str(pair.src_path), str(pair.trg_path)),
        )

    def _prefetched(
        self, idx: Sequence[int], needed: tuple[int, ...], need_cam: bool
    ) -> Iterator[_PreparedPair]:
        """The prepared pairs of ``idx`` in order, each read while the one before is scored.

        Reading a pair's cached layers (disk, decode, CRC) overlaps the matching of the
        previous pair, so a cache larger than the page cache does not starve the device. One
        reader thread: the source is only ever used by one thread at a time.
        """
        if len(idx) < 2:
            for p in idx:
                yield self._prepare(self.pairs[p], needed, need_cam)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scotsearch-read") as pool:
            ahead = pool.submit(self._prepare, self.pairs[idx[0]], needed, need_cam)
            for k in range(len(idx)):
                prep = ahead.result()  # re-raises a reader's error (bad file, bad keypoints)
                if k + 1 < len(idx):
                    ahead = pool.submit(self._prepare, self.pairs[idx[k + 1]], needed, need_cam)
                yield prep

    def _grid(self, feats: ImageFeatures, base: int) -> Grid:
        spec = self.specs[base]
        h, w = feats.layers[base].shape[-2:]
        return make_grid(
            int(h), int(w), stride=spec.stride, rf=spec.rf, image_size=feats.image_size,
            prune_margin=self.profile.prune_margin, device=self.device,
        )

    def score(
        self,
        subsets: Sequence[Sequence[int]],
        *,
        pair_index: Sequence[int] | None = None,
        match: MatchConfig | None = None,
        progress: Callable[[int], None] | None = None,
        predictions: list[list[np.ndarray | None]] | None = None,
    ) -> Scores:
        """Score every subset on the chosen pairs.

        Args:
            subsets: layer subsets (any order; ids are sorted).
            pair_index: indices of the pairs to use (default: all, in dataset order).
            match: matching settings for this call (default: the evaluator's).
            progress: called with 1 after each pair.
            predictions: if given, filled with ``predictions[s][p]``, the ``[K x 2]``
                predicted target keypoints (resized target pixels) of subset ``s`` on the
                p-th scored pair (use :meth:`predict`).

        Returns:
            Per-pair correct-keypoint counts for every subset and alpha.
        """
        match = match or self.match
        subs = [tuple(sorted(set(int(i) for i in s))) for s in subsets]
        if not subs:
            raise ConfigError("no layer subset to score")
        for s in subs:
            if not s or s[0] < 0 or s[-1] >= len(self.specs):
                raise ConfigError(f"layer subset {s} is not valid for {self.source.backbone}")
        idx = list(range(len(self.pairs))) if pair_index is None else [int(i) for i in pair_index]
        needed = tuple(sorted({l for s in subs for l in s}))
        # Subsets whose base layers share a stride share the hyperpixel grid, hence every
        # per-layer similarity term, the marginals and the Hough bins: group by stride, and
        # let only keypoint transfer see each base's receptive field.
        # HPF's margin pruning depends on the receptive field, so pruned grids stay per base.
        by_grid: dict[int, list[int]] = {}
        for k, s in enumerate(subs):
            key = s[0] if self.profile.prune_margin else self.specs[s[0]].stride
            by_grid.setdefault(key, []).append(k)
        need_cam = match.similarity == "ot" and match.cam != "none"
        use_fused: bool | None = None  # decided on the first pair, from its grid size

        if predictions is not None:
            predictions[:] = [[None] * len(idx) for _ in subs]
        n_correct = np.zeros((len(subs), len(self.alphas), len(idx)), dtype=np.int64)
        n_kps = np.zeros(len(idx), dtype=np.int64)
        masks = self.dataset.metric == "mask"
        lt_acc = np.zeros((len(subs), len(idx))) if masks else None
        iou = np.zeros((len(subs), len(idx))) if masks else None
        with torch.no_grad():
            for p_pos, prep in enumerate(self._prefetched(idx, needed, need_cam)):
                n_kps[p_pos] = prep.src_kps.shape[0]
                for members in by_grid.values():
                    group = [subs[k] for k in members]
                    if use_fused is None:
                        use_fused = self._choose_fused(prep, match, len(subs), len(idx))
                        self.engine_used = "fused" if use_fused else "eager"
                    pred = self._score_group(prep, group, match, fused=use_fused)
                    if predictions is not None:
                        for k, pk in zip(members, pred.cpu().numpy()):
                            predictions[k][p_pos] = pk
                    if lt_acc is not None and iou is not None:
                        # The transferred outline against the target's (scotsearch.masks).
                        lt_acc[members, p_pos], iou[members, p_pos] = transferred_mask_scores(
                            pred.cpu().numpy(), prep.trg_kps.cpu().numpy(),
                            prep.trg.image_size)
                        continue
                    correct = torch.stack(  # [S_g x A x K]
                        [correct_keypoints(pred, prep.trg_kps, prep.thr, a) for a in self.alphas],
                        dim=1,
                    )
                    n_correct[members, :, p_pos] = correct.sum(-1).cpu().numpy()
                if progress is not None:
                    progress(1)
        return Scores(
            subsets=subs, alphas=self.alphas, pair_index=idx, n_correct=n_correct, n_kps=n_kps,
            lt_acc=lt_acc, iou=iou,
        )

    def predict(
        self,
        subsets: Sequence[Sequence[int]],
        *,
        pair_index: Sequence[int] | None = None,
        match: MatchConfig | None = None,
    ) -> tuple[Scores, list[list[np.ndarray]]]:
        """Like :meth:`score`, also returning every subset's predicted keypoints per pair."""
        preds: list[list[np.ndarray | None]] = []
        scores = self.score(subsets, pair_index=pair_index, match=match, predictions=preds)
        return scores, [[p for p in row if p is not None] for row in preds]

    def _choose_fused(self, prep: _PreparedPair, match: MatchConfig, n_subsets: int,
                      n_pairs: int) -> bool:
        """Whether this call runs the fused chain."""
        if self.engine == "eager":
            return False
        why = fused.supports(match, self.device, self.term_dtype)
        if self.engine == "fused":
            if why is not None:
                raise ConfigError(f"--engine fused: {why}")
            return True
        if why is not None:
            return False
        h, w = prep.src.layers[min(prep.src.layers)].shape[-2:]
        th, tw = prep.trg.layers[min(prep.trg.layers)].shape[-2:]
        elements = int(h * w * th * tw) * n_subsets * n_pairs
        if self.device.type == "cuda":
            return n_subsets >= FUSED_MIN_CANDIDATES_CUDA and elements >= FUSED_MIN_WORK_CUDA
        # Once the kernels are loaded the fused CPU chain is faster at any size.
        return self._fused_ready or elements >= FUSED_MIN_WORK

    def _score_group(
        self,
        prep: _PreparedPair,
        group: list[tuple[int, ...]],
        match: MatchConfig,
        *,
        fused: bool = False,
    ) -> torch.Tensor:
        bases = sorted({s[0] for s in group})
        src_grids = {b: self._grid(prep.src, b) for b in bases}
        # All bases of a group share the stride, hence the grid and centres (and, without
        # pruning, the valid mask); only the receptive-field boxes differ.
        src_grid, trg_grid = src_grids[bases[0]], self._grid(prep.trg, bases[0])
        if fused:
            return self._score_group_fused(prep, group, match, src_grids, src_grid, trg_grid)
        layer_order = sorted({l for s in group for l in s})
        n, m = src_grid.n, trg_grid.n
        dots_t = torch.empty(len(layer_order), n, m, device=self.device, dtype=self.term_dtype)
        sq_src = torch.empty(len(layer_order), n, device=self.device)
        sq_trg = torch.empty(len(layer_order), m, device=self.device)
        full = self.term_dtype == torch.float32
        scale = 1.0
        if not full:
            # The cosine is invariant to one common scale of all terms: divide every term
            # by the largest possible |sum of dots| so no float16 sum can overflow. The group
            # has at least one layer, so both sums are tensors.
            ns = cast(torch.Tensor, sum(
                upsampled_sq_norms(prep.src.layers[l].to(self.device), (src_grid.h, src_grid.w))
                for l in layer_order
            ))
            nt = cast(torch.Tensor, sum(
                upsampled_sq_norms(prep.trg.layers[l].to(self.device), (trg_grid.h, trg_grid.w))
                for l in layer_order
            ))
            scale = float(ns.max().sqrt() * nt.max().sqrt()) or 1.0
        for k, l in enumerate(layer_order):
            d, sq_src[k], sq_trg[k] = layer_terms(
                prep.src.layers[l].to(self.device),
                prep.trg.layers[l].to(self.device),
                (src_grid.h, src_grid.w),
                (trg_grid.h, trg_grid.w),
                out=dots_t[k] if full else None,
            )
            if not full:
                dots_t[k] = d / scale
                del d
        if not full:
            sq_src /= scale
            sq_trg /= scale
        members = members_matrix(group, layer_order, self.device)

        mu = marginal(src_grid, prep.src.cam, match, self.profile)
        nu = marginal(trg_grid, prep.trg.cam, match, self.profile)
        space = None
        if match.rhm:
            space = hough_space(
                src_grid.centres, trg_grid.centres, prep.src.image_size, prep.trg.image_size,
                ncells=match.ncells,
            )
        chunk = max(1, CHUNK_ELEMENTS // (n * m))
        out = []
        for start in range(0, len(group), chunk):
            cos = subset_cosine(dots_t, sq_src, sq_trg, members[start : start + chunk])
            conf = match_scores(
                cos, mu, nu, space, match, src_valid=src_grid.valid, trg_valid=trg_grid.valid
            )
            del cos
            chunk_bases = torch.tensor([s[0] for s in group[start : start + chunk]])
            pred = torch.empty(conf.shape[0], prep.src_kps.shape[0], 2, device=self.device)
            for b in chunk_bases.unique().tolist():
                sel = (chunk_bases == b).nonzero().squeeze(1).to(self.device)
                pred[sel] = transfer_keypoints(
                    conf.index_select(0, sel) if len(sel) < conf.shape[0] else conf,
                    prep.src_kps, src_grids[b].boxes, src_grid.centres, trg_grid.centres,
                    src_valid=src_grid.valid, trg_valid=trg_grid.valid,
                )  # [S_b x K x 2]
            out.append(pred)
        return torch.cat(out)

    def _score_group_fused(
        self,
        prep: _PreparedPair,
        group: list[tuple[int, ...]],
        match: MatchConfig,
        src_grids: dict[int, Grid],
        src_grid: Grid,
        trg_grid: Grid,
    ) -> torch.Tensor:
        from scotsearch.fused import TermStore

        self._fused_ready = True
        triton_chain = self.device.type == "cuda" or self._fused_kernels == "triton"
        if self._term_store is None:
            if triton_chain:
                from scotsearch.fused import device_budget

                self._term_store = TermStore(device_budget(self.device))
            else:
                self._term_store = TermStore()
        tables = None
        if match.rhm:
            tables = hough_tables(
                src_grid.centres.cpu(), trg_grid.centres.cpu(), prep.src.image_size,
                prep.trg.image_size, ncells=match.ncells,
            )
        args: dict[str, Any] = dict(
            src_grid=src_grid, trg_grid=trg_grid,
            src_boxes={b: g.boxes for b, g in src_grids.items()},
            mu=marginal(src_grid, prep.src.cam, match, self.profile),
            nu=marginal(trg_grid, prep.trg.cam, match, self.profile),
            tables=tables, match=match, src_kps=prep.src_kps, store=self._term_store,
            pair_key=prep.key,
        )
        if triton_chain:
            from scotsearch.fused import score_group_device

            return score_group_device(prep.src.layers, prep.trg.layers, group,
                                      device=self.device, **args)
        from scotsearch.fused import score_group

        return score_group(prep.src.layers, prep.trg.layers, group, **args)
