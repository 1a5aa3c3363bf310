"""The common pair record every dataset reader produces."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import numpy as np

from scotsearch.errors import DataError
from scotsearch.presets import dataset_exp2


#: Threshold bases for PCK (reference-behaviour.md §7).
#: ``bbox``: longer side of the target object box; ``img``: longer side of the target
#: image; ``kps``: longer side of the target keypoints' extent (PF-WILLOW's "bbox").
THRESHOLD_KINDS = ("bbox", "img", "kps")

#: SPair-71k variation factors and their levels, for per-factor reporting (paper Table 2).
VARIATION_FACTORS = {
    "viewpoint_variation": ("easy", "medium", "hard"),
    "scale_variation": ("easy", "medium", "hard"),
    "truncation": ("none", "src", "trg", "both"),
    "occlusion": ("none", "src", "trg", "both"),
}


@dataclass(frozen=True)
class Pair:
    """One annotated source/target image pair.

    Coordinates are pixels of the original images, ``x`` first. Keypoints are ``[K x 2]``
    float64 arrays listing only keypoints annotated in both images, in the same order.

    Attributes:
        pair_id: unique within the dataset split (stable: used as a pruning step id).
        category: class name.
        src_path, trg_path: image files.
        src_kps, trg_kps: ``[K x 2]`` keypoints.
        src_bbox, trg_bbox: ``[4]`` boxes ``x1, y1, x2, y2`` or ``None``.
        thres_kind: the dataset's default PCK threshold basis (one of THRESHOLD_KINDS).
        variation: SPair-71k difficulty flags (factor name -> level index); empty elsewhere.
        src_size, trg_size: ``(W, H)`` from the annotation when it has one, else ``None``.
        flow_path: dense benchmarks (TSS): the ground-truth flow file, defined on the
            target's pixels and pointing into the source; keypoint benchmarks: ``None``
            (and dense pairs have no keypoints, ``K = 0``).
        trg_mask_path: dense benchmarks: the target's foreground mask, where flow is scored.
        flip_src: dense benchmarks: the source image is mirrored left-right before matching.
    """

    pair_id: str
    category: str
    src_path: Path
    trg_path: Path
    src_kps: np.ndarray
    trg_kps: np.ndarray
    src_bbox: np.ndarray | None = None
    trg_bbox: np.ndarray | None = None
    thres_kind: str = "bbox"
    variation: dict[str, int] = field(default_factory=dict)
    src_size: tuple[int, int] | None = None
    trg_size: tuple[int, int] | None = None
    flow_path: Path | None = None
    trg_mask_path: Path | None = None
    flip_src: bool = False

    @property
    def n_kps(self) -> int:
        return int(self.src_kps.shape[0])


def threshold_base(pair: Pair, thres: str, trg_image_wh: tuple[int, int]) -> float:
    """PCK threshold in original target pixels, before multiplying by alpha.

    Args:
        pair: the pair.
        thres: ``bbox``, ``img`` or ``kps`` (see THRESHOLD_KINDS).
        trg_image_wh: ``(W, H)`` of the decoded target image.
    """
    if thres == "img":
        return float(max(trg_image_wh))
    if thres == "bbox":
        if pair.trg_bbox is None:
            raise DataError(f"pair {pair.pair_id}: no target box for the 'bbox' PCK threshold")
        x1, y1, x2, y2 = (float(v) for v in pair.trg_bbox)
        return max(x2 - x1, y2 - y1)
    if thres == "kps":
        k = pair.trg_kps
        return float(max(k[:, 0].max() - k[:, 0].min(), k[:, 1].max() - k[:, 1].min()))
    raise DataError(f"unknown PCK threshold basis {thres!r}; choose one of {THRESHOLD_KINDS}")


def check_pair(pair: Pair) -> Pair:
    """Validate a freshly read pair; raise DataError naming the pair on any problem."""
    for name in ("src_kps", "trg_kps"):
        k = getattr(pair, name)
        if k.ndim != 2 or k.shape[1] != 2:
            raise DataError(f"pair {pair.pair_id}: {name} must be K x 2, got shape {k.shape}")
        if not np.isfinite(k).all():
            raise DataError(f"pair {pair.pair_id}: {name} has non-finite coordinates")
    if pair.src_kps.shape != pair.trg_kps.shape:
        raise DataError(
            f"pair {pair.pair_id}: {pair.src_kps.shape[0]} source keypoints but "
            f"{pair.trg_kps.shape[0]} target keypoints"
        )
    if pair.n_kps == 0:
        raise DataError(f"pair {pair.pair_id}: no keypoint is annotated in both images")
    for name in ("src_bbox", "trg_bbox"):
        b = getattr(pair, name)
        if b is not None and (b.shape != (4,) or not np.isfinite(b).all()):
            raise DataError(f"pair {pair.pair_id}: {name} must be 4 finite numbers x1,y1,x2,y2")
        if b is not None and not (b[2] > b[0] and b[3] > b[1]):
            # A zero-area or inverted box makes the PCK threshold 0 (or negative): every
            # keypoint of the pair would count as wrong, silently.
            raise DataError(
                f"pair {pair.pair_id}: {name} ({', '.join(f'{v:g}' for v in b)}) has zero or "
                f"negative area (x2 must exceed x1 and y2 exceed y1)"
            )
    if pair.thres_kind == "kps" and pair.n_kps:
        k = pair.trg_kps
        if not max(np.ptp(k[:, 0]), np.ptp(k[:, 1])) > 0:
            raise DataError(
                f"pair {pair.pair_id}: the target keypoints' extent is zero (all at one point), "
                f"so the 'kps' PCK threshold would be 0"
            )
    if pair.thres_kind not in THRESHOLD_KINDS:
        raise DataError(f"pair {pair.pair_id}: unknown threshold basis {pair.thres_kind!r}")
    return pair


def check_keypoints_inside(pair: Pair, src_wh: tuple[int, int], trg_wh: tuple[int, int]) -> None:
    """Raise DataError if a keypoint lies outside its decoded image (1 px tolerance).

    The tolerance admits MATLAB-style 1-based coordinates on the far border.
    """
    for name, k, (w, h) in (("source", pair.src_kps, src_wh), ("target", pair.trg_kps, trg_wh)):
        bad = (k[:, 0] < -1) | (k[:, 1] < -1) | (k[:, 0] > w + 1) | (k[:, 1] > h + 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"pair {pair.pair_id}: {name} keypoint {i} at ({k[i, 0]:g}, {k[i, 1]:g}) lies "
                f"outside the {w}x{h} image"
            )


@dataclass(frozen=True)
class Dataset:
    """A split of a benchmark: its pairs and the conventions that come with it.

    Attributes:
        name: ``spair``, ``pfpascal``, ``pfwillow``, ``tss`` or ``demo``.
        split: ``trn``, ``val`` or ``test``.
        root: dataset root folder.
        pairs: the pairs in file order.
        default_thres: PCK threshold basis by the dataset's convention.
        subset: how the pairs were drawn from the split, empty for the whole split (e.g.
            ``per-category 5, seed 0``; :func:`scotsearch.data.subsets.per_category`).
        metric: ``pck`` (keypoint benchmarks) or ``mask`` (Caltech-101: each pair's
            ``src_kps`` and ``trg_kps`` are the two object polygons, of different lengths,
            scored by LT-ACC and IoU; :mod:`scotsearch.masks`).
    """

    name: str
    split: str
    root: Path
    pairs: tuple[Pair, ...]
    default_thres: str
    subset: str = ""
    metric: str = "pck"

    @property
    def default_exp2(self) -> float:
        """SCOT's exp2 for this dataset (0.5 PF-PASCAL/PF-WILLOW, 1.0 SPair), from the
        presets table (:data:`scotsearch.presets.DATASET_PRESETS`)."""
        return dataset_exp2(self.name)

    @property
    def categories(self) -> list[str]:
        return sorted({p.category for p in self.pairs})

    @property
    def keypoint_pck(self) -> bool:
        """Whether the split is scored by keypoint PCK, the layer searches' objective (not
        Caltech-101's masks, not TSS's dense flow)."""
        return self.metric == "pck" and not any(p.flow_path is not None for p in self.pairs)

    def require_keypoint_pck(self, what: str) -> None:
        """Refuse ``what`` (a search) on a split not scored by keypoint PCK.

        Raises:
            ConfigError: naming the dataset and what it is scored by.
        """
        if not self.keypoint_pck:
            from scotsearch.errors import ConfigError

            scored = "masks (LT-ACC, IoU)" if self.metric == "mask" else "dense flow"
            raise ConfigError(f"{what} maximises keypoint PCK; {self.name} is scored by "
                              f"{scored}: score layers there with 'scotsearch evaluate'")

    def image_paths(self) -> list[Path]:
        """Distinct image files of the split, in first-use order."""
        seen: dict[Path, None] = {}
        for p in self.pairs:
            seen.setdefault(p.src_path, None)
            seen.setdefault(p.trg_path, None)
        return list(seen)
