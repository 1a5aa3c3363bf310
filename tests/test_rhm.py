from __future__ import annotations

import math

import numpy as np
import torch

from scotsearch.geometry import make_grid
from scotsearch.rhm import gaussian_kernel
from scotsearch.rhm import hough_space
from scotsearch.rhm import rhm


def test_hough_geometry_matches_spec_examples() -> None:
    # reference-behaviour.md §5: 300x225 + 300x225 -> cell 5.741 px, 105 x 79 bins.
    g = make_grid(2, 2, stride=4, rf=11, image_size=(225, 300), prune_margin=False)
    space = hough_space(g.centres, g.centres, (225, 300), (225, 300))
    assert math.isclose(space.cell, 5.741, abs_tol=1e-3)
    assert space.shape == (79, 105)
    sq = make_grid(2, 2, stride=4, rf=11, image_size=(300, 300), prune_margin=False)
    assert hough_space(sq.centres, sq.centres, (300, 300), (300, 300)).shape == (91, 91)


def test_kernel_values() -> None:
    k = gaussian_kernel(dtype=torch.float64)
    assert math.isclose(k.sum().item(), 1.0, rel_tol=1e-12)
    assert math.isclose(k[3, 3].item(), 0.0744, abs_tol=5e-5)
    assert math.isclose(k[0, 0].item(), 0.0013, abs_tol=5e-5)


def test_rhm_against_naive_double_loop() -> None:
    rng = np.random.default_rng(0)
    sg = make_grid(3, 4, stride=4, rf=11, image_size=(12, 15), prune_margin=False)
    tg = make_grid(4, 3, stride=4, rf=11, image_size=(14, 11), prune_margin=False)
    n, m = sg.n, tg.n
    V = rng.random((2, n, m))
    space = hough_space(sg.centres, tg.centres, (12, 15), (14, 11), ncells=64)
    got = rhm(torch.tensor(V), space).numpy()  # rhm works in place: pass a copy

    # Naive: every pair votes its translation into a bin, smooth, read back.
    Hs, Ws, Ht, Wt = 12, 15, 14, 11
    cell = math.sqrt((Ws + Wt) * (Hs + Ht) / 64)
    nx, ny = int((Ws + Wt) / cell) + 1, int((Hs + Ht) / cell) + 1
    kern = gaussian_kernel(dtype=torch.float64).numpy()
    cs, ct = sg.centres.numpy(), tg.centres.numpy()
    for s in range(2):
        hist = np.zeros((ny, nx))
        bins = {}
        for i in range(n):
            for j in range(m):
                bx = math.floor((Ws - cs[i, 0] + ct[j, 0]) / cell)
                by = math.floor((Hs - cs[i, 1] + ct[j, 1]) / cell)
                bins[i, j] = (by, bx)
                hist[by, bx] += V[s, i, j]
        smooth = np.zeros_like(hist)
        for y in range(ny):
            for x in range(nx):
                acc = 0.0
                for dy in range(-3, 4):
                    for dx in range(-3, 4):
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < ny and 0 <= xx < nx:
                            acc += kern[dy + 3, dx + 3] * hist[yy, xx]
                smooth[y, x] = acc
        for i in range(n):
            for j in range(m):
                assert math.isclose(got[s, i, j], V[s, i, j] * smooth[bins[i, j]],
                                    rel_tol=1e-9, abs_tol=1e-12)
