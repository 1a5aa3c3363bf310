"""Thin-plate splines: the warp of SCOT's supplementary Fig. 1 (pure numpy/scipy).

A thin-plate spline ``f: R^2 -> R^2`` through control points ``p_i -> q_i`` is
``f(x) = A [1, x, y] + sum_i w_i U(|x - p_i|)`` with ``U(r) = r^2 log r^2``; with
``regularization`` 0 it interpolates (``f(p_i) = q_i``) and is the affine map when the
points allow one. To draw the source image in the target frame (the figure), the spline is
fitted from the predicted target keypoints to the source keypoints and the source is sampled
at ``f(x)`` for every target pixel ``x`` (inverse mapping, bilinear).

Coordinates are pixels, ``x`` first; pixel ``(x, y)`` is array element ``[y, x]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class ThinPlateSpline:
    """A fitted spline: ``ctrl`` ``[N x 2]``, kernel weights ``w`` ``[N x 2]``, affine
    part ``affine`` ``[3 x 2]`` (rows: constant, x, y)."""

    ctrl: np.ndarray
    w: np.ndarray
    affine: np.ndarray

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        """Map ``[M x 2]`` points."""
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        out = np.empty_like(pts)
        # in blocks: a full image is M = H * W points, times N control points
        step = max(1, (1 << 22) // max(1, len(self.ctrl)))
        for s in range(0, len(pts), step):
            blk = pts[s : s + step]
            k = _kernel(blk, self.ctrl)
            out[s : s + step] = self.affine[0] + blk @ self.affine[1:] + k @ self.w
        return out


def _kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d2 > 0, d2 * np.log(d2), 0.0)


def fit_tps(src: np.ndarray, dst: np.ndarray, regularization: float = 0.0) -> ThinPlateSpline:
    """The thin-plate spline mapping ``src`` points onto ``dst`` points.

    Pairs with a non-finite coordinate are left out. Without points the map is the
    identity; with one it is a translation; points on one line or repeated points give the
    least-squares solution of the (then singular) system, still exact where one exists.

    Args:
        src, dst: ``[N x 2]`` corresponding points.
        regularization: smoothing ``lambda`` added to the kernel diagonal (0 interpolates).

    Examples:
        >>> src = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
        >>> dst = src + [[1, 0], [0, 1], [2, 2], [0, 0]]
        >>> bool(np.abs(fit_tps(src, dst)(src) - dst).max() < 1e-9)
        True
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape:
        raise ValueError(f"src {src.shape} and dst {dst.shape} must both be N x 2")
    keep = np.isfinite(src).all(1) & np.isfinite(dst).all(1)
    src, dst = src[keep], dst[keep]
    n = len(src)
    if n == 0:
        identity = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        return ThinPlateSpline(np.zeros((0, 2)), np.zeros((0, 2)), identity)
    if n == 1:
        affine = np.array([dst[0] - src[0], [1.0, 0.0], [0.0, 1.0]])
        return ThinPlateSpline(src, np.zeros((1, 2)), affine)
    p = np.hstack([np.ones((n, 1)), src])  # [N x 3]
    lhs = np.zeros((n + 3, n + 3))
    lhs[:n, :n] = _kernel(src, src) + regularization * np.eye(n)
    lhs[:n, n:] = p
    lhs[n:, :n] = p.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = dst
    try:
        sol = np.linalg.solve(lhs, rhs)
        if not np.isfinite(sol).all():
            raise np.linalg.LinAlgError("non-finite solution")
    except np.linalg.LinAlgError:
        sol = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    return ThinPlateSpline(src, sol[:n], sol[n:])


def warp_image(
    image: np.ndarray,
    src_kps: np.ndarray,
    dst_kps: np.ndarray,
    out_hw: tuple[int, int],
    *,
    fill: float = 0.0,
    regularization: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` so that its points ``src_kps`` land on ``dst_kps``.

    Args:
        image: ``[H x W]`` or ``[H x W x C]`` source image.
        src_kps: ``[N x 2]`` points in the source image.
        dst_kps: ``[N x 2]`` where they go in the output (e.g. predicted target keypoints).
        out_hw: ``(H, W)`` of the output (the target image's size).
        fill: value where the output maps outside the source.
        regularization: see :func:`fit_tps`.

    Returns:
        ``(warped, inside)``: the warped image (``image``'s dtype, ``out_hw`` plus its
        channels) and the bool ``[H x W]`` mask of output pixels that map inside the source.
    """
    image = np.asarray(image)
    h, w = out_hw
    back = fit_tps(dst_kps, src_kps, regularization)  # output pixel -> source pixel
    ys, xs = np.mgrid[0:h, 0:w]
    where = back(np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64))
    sx, sy = where[:, 0].reshape(h, w), where[:, 1].reshape(h, w)
    src_h, src_w = image.shape[:2]
    inside = (sx >= -0.5) & (sx <= src_w - 0.5) & (sy >= -0.5) & (sy <= src_h - 0.5)
    planes = image[..., None] if image.ndim == 2 else image
    out = np.empty((h, w, planes.shape[2]), dtype=np.float64)
    for c in range(planes.shape[2]):
        out[..., c] = ndimage.map_coordinates(
            planes[..., c].astype(np.float64), [sy, sx], order=1, mode="nearest"
        )
    out[~inside] = fill
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    warped = out.astype(image.dtype)
    return (warped[..., 0] if image.ndim == 2 else warped), inside
