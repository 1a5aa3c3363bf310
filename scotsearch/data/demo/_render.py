"""Demo rendering: sample a photo into a view, then apply photometric jitter."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

from scotsearch.data.demo._warps import _apply_h
from scotsearch.data.demo._warps import _Tps
from scotsearch.data.demo._warps import _View


def _render(
    view: _View, photo: np.ndarray, photometric: dict[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """Sample ``photo`` into ``view``, then apply photometric jitter; ``[H x W x 3]`` uint8."""
    w, h = view.wh
    # Photo pixels per view pixel at the centre, from a finite-difference Jacobian.
    cx, cy = (w - 1) / 2, (h - 1) / 2
    c = np.array([[cx, cy], [cx + 1, cy], [cx, cy + 1]])
    q, _ = view.to_photo(c)
    jac = np.stack([q[1] - q[0], q[2] - q[0]], axis=1)
    shrink = math.sqrt(abs(float(np.linalg.det(jac))))
    sigma = max(0.0, (shrink - 1.0) / 2.0)  # skimage.transform.rescale's anti-alias rule
    src = ndimage.gaussian_filter(photo, (sigma, sigma, 0)) if sigma > 0.05 else photo

    yy, xx = np.mgrid[0:h, 0:w]
    p = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float64)
    if view.tps is not None:
        p = p + _dense_displacement(view.tps, view.wh)
    q, ok = _apply_h(np.linalg.inv(view.g), p)
    q[~ok] = -1e4  # behind the projective horizon: fill
    fill = photo.reshape(-1, 3).mean(axis=0)
    out = np.empty((h, w, 3), dtype=np.float64)
    for ch in range(3):
        out[..., ch] = ndimage.map_coordinates(
            src[..., ch], [q[:, 1], q[:, 0]], order=1, mode="constant", cval=float(fill[ch])
        ).reshape(h, w)

    mean = out.mean()
    out = (out - mean) * photometric["contrast"] + mean + photometric["brightness"]
    out *= np.asarray(photometric["gain"])[None, None, :]
    out += rng.normal(0.0, photometric["noise"], out.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _dense_displacement(tps: _Tps, wh: tuple[int, int], step: int = 4) -> np.ndarray:
    """``tps(p) - p`` at every pixel, ``[H*W x 2]`` in row-major order.

    The spline is evaluated exactly on every ``step``-th pixel and interpolated with cubic
    splines in between: the displacement is so smooth (a few pixels over a 4x4 control grid)
    that this stays within about 0.02 px of the exact value, at a fraction of the cost.
    """
    w, h = wh
    # A uniform grid reaching two steps past every border, so the spline's boundary
    # handling only affects samples outside the image.
    gx = np.arange(-2 * step, w - 1 + 3 * step, step, dtype=np.float64)
    gy = np.arange(-2 * step, h - 1 + 3 * step, step, dtype=np.float64)
    cx, cy = np.meshgrid(gx, gy)
    coarse = np.stack([cx.ravel(), cy.ravel()], axis=1)
    disp = (tps(coarse) - coarse).reshape(len(gy), len(gx), 2)
    iy, ix = np.mgrid[0:h, 0:w]
    coords = [(iy.ravel() + 2 * step) / step, (ix.ravel() + 2 * step) / step]
    out = np.empty((h * w, 2))
    for k in range(2):
        out[:, k] = ndimage.map_coordinates(disp[..., k], coords, order=3, mode="nearest")
    return out


def _photometric(rng: np.random.Generator, strong: bool) -> dict[str, Any]:
    if strong:
        return {
            "contrast": float(rng.uniform(0.8, 1.2)),
            "brightness": float(rng.uniform(-20.0, 20.0)),
            "gain": [float(g) for g in rng.uniform(0.93, 1.07, 3)],
            "noise": float(rng.uniform(1.0, 4.0)),
        }
    return {
        "contrast": float(rng.uniform(0.95, 1.05)),
        "brightness": float(rng.uniform(-5.0, 5.0)),
        "gain": [1.0, 1.0, 1.0],
        "noise": 1.0,
    }
