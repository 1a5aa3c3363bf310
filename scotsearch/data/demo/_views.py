"""Demo views: the source and target warps of each pair, keypoints and boxes in a view.

The target warp is drawn from the bands of its (viewpoint, scale) difficulty levels,
relative to the source view (see the package docstring).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from scotsearch.data.demo._photos import _Photo
from scotsearch.data.demo._warps import _random_tps
from scotsearch.data.demo._warps import _View
from scotsearch.data.demo._warps import _view_homography
from scotsearch.errors import DataError


_MIN_KPS = 5
_EDGE_MARGIN = 2  # a keypoint must lie this many pixels inside its image
_SIDE_RANGE = (240, 400)  # longer image side, inclusive

# Level bands (see the package docstring).
_ROT_BANDS = ((0.0, 6.0), (6.0, 13.0), (13.0, 20.0))
_TILT_BANDS = ((0.0, 0.06), (0.06, 0.13), (0.13, 0.20))
_ZOOM_BANDS = ((1.0, 1.12), (1.12, 1.30), (1.30, 1.50))
_TPS_JITTER = (0.006, 0.012, 0.018)
_TPS_PROBABILITY = 0.5


def _canvas(rng: np.random.Generator, aspect: float) -> tuple[int, int]:
    """A ``(W, H)`` with the given aspect (W/H) and a random longer side."""
    side = int(rng.integers(_SIDE_RANGE[0], _SIDE_RANGE[1] + 1))
    if aspect >= 1.0:
        return side, max(2, int(round(side / aspect)))
    return max(2, int(round(side * aspect))), side


def _source_view(
    photo: _Photo, name: str, rng: np.random.Generator
) -> tuple[_View, dict[str, Any]]:
    wh = _canvas(rng, photo.wh[0] / photo.wh[1])
    if rng.random() < 1.0 / 3.0:
        params: dict[str, Any] = {
            "rotation_deg": 0.0,
            "zoom": 1.0,
            "tilt": (0.0, 0.0),
            "shift": (0.0, 0.0),
        }
    else:
        phi = rng.uniform(0, 2 * math.pi)
        t = rng.uniform(0.0, 0.03)
        params = {
            "rotation_deg": float(rng.uniform(-3.0, 3.0)),
            "zoom": float(rng.uniform(1.0, 1.08)),
            "tilt": (t * math.cos(phi), t * math.sin(phi)),
            "shift": tuple(float(v) for v in rng.uniform(-0.03, 0.03, 2)),
        }
    g = _view_homography(photo.wh, wh, **params)
    return _View(name, wh, g), params


def _relative_params(rng: np.random.Generator, viewpoint: int, scale: int) -> dict[str, Any]:
    rot = rng.uniform(*_ROT_BANDS[viewpoint]) * rng.choice([-1.0, 1.0])
    tilt = rng.uniform(*_TILT_BANDS[viewpoint])
    phi = rng.uniform(0, 2 * math.pi)
    zoom = rng.uniform(*_ZOOM_BANDS[scale]) ** rng.choice([-1.0, 1.0])
    return {
        "rotation_deg": float(rot),
        "zoom": float(zoom),
        "tilt": (float(tilt * math.cos(phi)), float(tilt * math.sin(phi))),
        "shift": tuple(float(v) for v in rng.uniform(-0.07, 0.07, 2)),
    }


def _visible(p: np.ndarray, ok: np.ndarray, wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Round view points to whole pixels; mask those at least the margin inside."""
    r = np.rint(p)
    m = _EDGE_MARGIN
    inside = ok & (r >= m).all(axis=1) & (r[:, 0] <= wh[0] - 1 - m) & (r[:, 1] <= wh[1] - 1 - m)
    return r.astype(np.int64), inside


def _view_points(view: _View, photo: _Photo) -> tuple[np.ndarray, np.ndarray]:
    """All category keypoints in ``view``, rounded, and their visibility mask."""
    q = photo.kps_right if view.right and photo.kps_right is not None else photo.kps
    p, ok = view.from_photo(q)
    return _visible(p, ok, view.wh)


def _view_box(view: _View, photo: _Photo) -> list[int]:
    """The photo's object box mapped into ``view``, ``[x1, y1, x2, y2]`` ints, clipped."""
    x1, y1, x2, y2 = (float(v) for v in photo.spec.bbox)
    if view.right and photo.disparity is not None:
        d = photo.disparity[int(y1) : int(y2) + 1, int(x1) : int(x2) + 1]
        shift = float(np.median(d[np.isfinite(d)]))
        x1, x2 = x1 - shift, x2 - shift
    t = np.linspace(0.0, 1.0, 33)
    edge = np.concatenate(
        [
            np.stack([x1 + (x2 - x1) * t, np.full_like(t, y1)], 1),
            np.stack([x1 + (x2 - x1) * t, np.full_like(t, y2)], 1),
            np.stack([np.full_like(t, x1), y1 + (y2 - y1) * t], 1),
            np.stack([np.full_like(t, x2), y1 + (y2 - y1) * t], 1),
        ]
    )
    p, ok = view.from_photo(edge)
    p = p[ok]
    w, h = view.wh
    lo = np.rint(p.min(axis=0))
    hi = np.rint(p.max(axis=0))
    return [
        int(np.clip(lo[0], 0, w - 1)),
        int(np.clip(lo[1], 0, h - 1)),
        int(np.clip(hi[0], 0, w - 1)),
        int(np.clip(hi[1], 0, h - 1)),
    ]


def _target_view(
    photo: _Photo,
    src: _View,
    name: str,
    viewpoint: int,
    scale: int,
    rng: np.random.Generator,
) -> tuple[_View, dict[str, Any]]:
    """Draw a target warp of the given levels that shares at least 5 keypoints with ``src``."""
    _, src_vis = _view_points(src, photo)
    src_aspect = src.wh[0] / src.wh[1]
    for _ in range(100):
        wh = _canvas(rng, src_aspect * float(rng.uniform(0.9, 1.1)))
        params = _relative_params(rng, viewpoint, scale)
        rel = _view_homography(src.wh, wh, **params)
        tps = None
        if rng.random() < _TPS_PROBABILITY:
            tps = _random_tps(rng, wh, _TPS_JITTER[viewpoint])
            if tps is None:
                continue
        # Stereo targets view the right photo through the source's own homography: the
        # rectified pair shares one pixel frame, and the disparity supplies the rest.
        view = _View(name, wh, rel @ src.g, tps, right=photo.right_rgb is not None)
        _, trg_vis = _view_points(view, photo)
        if (src_vis & trg_vis).sum() >= _MIN_KPS:
            kind = ("stereo+" if view.right else "") + ("tps" if tps is not None else "homography")
            return view, {"warp": kind, **params}
    raise DataError(f"demo generator: no usable target warp for {photo.spec.category}")


def _level_plan(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    """``n`` (viewpoint, scale) level pairs, each of the nine combinations dealt evenly."""
    combos = [(v, s) for v in range(3) for s in range(3)]
    deck: list[tuple[int, int]] = []
    while len(deck) < n:
        deck.extend(combos[i] for i in rng.permutation(len(combos)))
    return deck[:n]
