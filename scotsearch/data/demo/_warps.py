"""Demo geometry: homographies between normalised frames, the thin-plate spline, views.

A :class:`_View` is one generated image seen as a map from photo pixels: a homography ``G``,
optionally followed by the inverse of a thin-plate spline (see the package docstring).
Pure geometry: nothing here draws random numbers except :func:`_random_tps`, from the
generator it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scotsearch.errors import DataError


def _apply_h(h: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map ``[N x 2]`` points by a 3x3 homography.

    Returns:
        The mapped points and a mask of points in front of the projective horizon (only
        those have a meaningful image).
    """
    w = pts @ h[2, :2] + h[2, 2]
    ok = w > 1e-8
    w_safe = np.where(ok, w, 1.0)
    x = (pts @ h[0, :2] + h[0, 2]) / w_safe
    y = (pts @ h[1, :2] + h[1, 2]) / w_safe
    return np.stack([x, y], axis=1), ok


def _view_homography(
    src_wh: tuple[int, int],
    dst_wh: tuple[int, int],
    rotation_deg: float,
    zoom: float,
    tilt: tuple[float, float],
    shift: tuple[float, float],
) -> np.ndarray:
    """Homography from ``src`` pixels to ``dst`` pixels.

    Both frames are normalised (centre 0, half the longer side 1), so with identity
    parameters the picture fills ``dst`` as it filled ``src`` whatever the two sizes. In
    normalised units: tilt ``x -> x / (1 + t . x)``, then rotate and zoom, then shift.
    """
    (ws, hs), (wd, hd) = src_wh, dst_wh
    rs, rd = max(ws, hs) / 2.0, max(wd, hd) / 2.0
    norm = np.array([[1 / rs, 0, -(ws - 1) / 2 / rs], [0, 1 / rs, -(hs - 1) / 2 / rs], [0, 0, 1]])
    persp = np.array([[1.0, 0, 0], [0, 1.0, 0], [tilt[0], tilt[1], 1.0]])
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    sim = np.array([[zoom * c, -zoom * s, shift[0]], [zoom * s, zoom * c, shift[1]], [0, 0, 1]])
    denorm = np.array([[rd, 0, (wd - 1) / 2], [0, rd, (hd - 1) / 2], [0, 0, 1]])
    return denorm @ sim @ persp @ norm


def _tps_kernel(d2: np.ndarray) -> np.ndarray:
    """``U(r) = r^2 log r`` written in ``r^2``, with ``U(0) = 0``."""
    return np.where(d2 > 0, 0.5 * d2 * np.log(np.where(d2 > 0, d2, 1.0)), 0.0)


class _Tps:
    """Thin-plate spline ``x -> x + f(x)`` in the plane, with ``f(c_i) = d_i`` exactly.

    The demo uses it as the *inverse* warp of a target view (target pixel -> pre-TPS target
    pixel), which is what image resampling needs; keypoints go the other way, through
    :meth:`inverse`.

    Args:
        ctrl: ``[N x 2]`` control points (pixels).
        disp: ``[N x 2]`` displacements at the control points (pixels).
    """

    def __init__(self, ctrl: np.ndarray, disp: np.ndarray) -> None:
        # Solve in coordinates of order 1: r^2 log r of pixel distances spans too many
        # orders of magnitude for a well-conditioned system.
        self.scale = float(np.abs(ctrl).max()) or 1.0
        c = np.asarray(ctrl, dtype=np.float64) / self.scale
        n = len(c)
        system = np.zeros((n + 3, n + 3))
        system[:n, :n] = _tps_kernel(_sq_dist(c, c))
        system[:n, n] = 1.0
        system[:n, n + 1 :] = c
        system[n, :n] = 1.0
        system[n + 1 :, :n] = c.T
        rhs = np.zeros((n + 3, 2))
        rhs[:n] = np.asarray(disp, dtype=np.float64) / self.scale
        sol = np.linalg.solve(system, rhs)
        self.ctrl = c
        self.w = sol[:n]  # kernel weights
        self.a = sol[n:]  # affine part: rows constant, x, y

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        """Map ``[M x 2]`` pixel points."""
        u = np.asarray(pts, dtype=np.float64) / self.scale
        return (u + self._f(u)) * self.scale

    def _f(self, u: np.ndarray) -> np.ndarray:
        return _tps_kernel(_sq_dist(u, self.ctrl)) @ self.w + self.a[0] + u @ self.a[1:]

    def jacobian(self, pts: np.ndarray) -> np.ndarray:
        """``[M x 2 x 2]`` Jacobians ``d out_k / d in_l`` (scale-free)."""
        u = np.asarray(pts, dtype=np.float64) / self.scale
        diff = u[:, None, :] - self.ctrl[None, :, :]  # M x N x 2
        d2 = (diff**2).sum(-1)
        # grad_u r^2 log r = (u - c)(log r^2 + 1), which tends to 0 at r = 0.
        log_d2 = np.log(np.where(d2 > 0, d2, 1.0))
        g = np.where(d2[..., None] > 0, diff * (log_d2 + 1.0)[..., None], 0.0)
        jac = np.einsum("nk,mnl->mkl", self.w, g) + self.a[1:].T[None]
        return jac + np.eye(2)[None]

    def inverse(self, pts: np.ndarray, iters: int = 30) -> np.ndarray:
        """Solve ``self(x) = y`` for each ``[M x 2]`` point ``y`` by Newton's method.

        Raises:
            DataError: some point did not converge to 1e-6 px (the spline folds there).
        """
        y = np.asarray(pts, dtype=np.float64)
        x = y.copy()
        for _ in range(iters):
            r = self(x) - y
            if np.abs(r).max(initial=0.0) < 1e-9:
                break
            x = x - np.linalg.solve(self.jacobian(x), r[..., None])[..., 0]
        if len(y) and np.abs(self(x) - y).max() > 1e-6:
            raise DataError("demo generator: thin-plate spline inversion did not converge")
        return x


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[M x N]`` squared distances between ``[M x 2]`` and ``[N x 2]`` points."""
    # Expanded form: a matrix product instead of an M x N x 2 temporary, which makes the
    # per-pixel spline of a whole image several times faster. Inputs are O(1) in size, so
    # the cancellation error is ~1e-16; the clamp keeps it from going negative.
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d2, 0.0)


def _random_tps(rng: np.random.Generator, wh: tuple[int, int], jitter: float) -> _Tps | None:
    """A TPS on a 4x4 control grid over the image, or None if it would fold the image.

    Args:
        jitter: displacement standard deviation as a fraction of the longer side.
    """
    w, h = wh
    gx, gy = np.meshgrid(np.linspace(0, w - 1, 4), np.linspace(0, h - 1, 4))
    ctrl = np.stack([gx.ravel(), gy.ravel()], axis=1)
    sd = jitter * max(w, h)
    disp = np.clip(rng.normal(0.0, sd, ctrl.shape), -2.5 * sd, 2.5 * sd)
    tps = _Tps(ctrl, disp)
    # Keep the warp far from folding: a local area ratio near 1 everywhere on the image
    # also makes Newton's inversion converge in a few steps.
    sx, sy = np.meshgrid(np.linspace(0, w - 1, 17), np.linspace(0, h - 1, 17))
    det = np.linalg.det(tps.jacobian(np.stack([sx.ravel(), sy.ravel()], axis=1)))
    return tps if det.min() > 0.6 else None


@dataclass(frozen=True)
class _View:
    """One generated image: photo pixels -> ``G`` -> (TPS inverse) -> view pixels.

    Attributes:
        name: image name without ``.jpg``.
        wh: ``(W, H)``.
        g: 3x3 homography from photo pixels to pre-TPS view pixels.
        tps: the spline mapping view pixels to pre-TPS view pixels, or None.
        right: sample the stereo partner photo (motorbike targets).
    """

    name: str
    wh: tuple[int, int]
    g: np.ndarray
    tps: _Tps | None = None
    right: bool = False

    def from_photo(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Photo points ``[N x 2]`` -> view points (float) and a validity mask."""
        p, ok = _apply_h(self.g, q)
        if self.tps is not None and ok.any():
            p[ok] = self.tps.inverse(p[ok])
        return p, ok

    def to_photo(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """View points ``[N x 2]`` -> photo points and a validity mask."""
        if self.tps is not None:
            p = self.tps(p)
        return _apply_h(np.linalg.inv(self.g), p)
