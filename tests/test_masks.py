"""Caltech-101's mask metrics: polygon rasterisation, LT-ACC and IoU, on hand-counted masks."""

from __future__ import annotations

import numpy as np
import pytest

from scotsearch.masks import label_transfer_accuracy
from scotsearch.masks import mask_iou
from scotsearch.masks import polygon_mask
from scotsearch.masks import transferred_mask_scores


def _inside_loop(poly: list[tuple[float, float]], x: float, y: float) -> bool:
    """Point in polygon, one edge at a time: a rightward ray from (x, y) crosses edge (a, b)
    when y lies in [min, max) of the edge's y and the crossing is right of x."""
    inside = False
    for k in range(len(poly)):
        (xa, ya), (xb, yb) = poly[k], poly[(k + 1) % len(poly)]
        if min(ya, yb) <= y < max(ya, yb):
            t = (y - ya) / (yb - ya)
            if x < xa + t * (xb - xa):
                inside = not inside
    return inside


def _brute_force(poly: np.ndarray, h: int, w: int) -> np.ndarray:
    pts = [(float(x), float(y)) for x, y in poly]
    return np.array([[_inside_loop(pts, c, r) for c in range(w)] for r in range(h)])


def _polygons() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    out = [
        np.array([[2, 1], [9, 2], [5, 8]], float),  # triangle
        np.array([[1, 1], [10, 1], [10, 8], [6, 8], [6, 4], [3, 4], [3, 8], [1, 8]], float),  # U
        np.array([[1, 1], [10, 8], [10, 1], [1, 8]], float),  # bow tie (self-crossing)
        np.array([[-5, -3], [20, 2], [4, 30]], float),  # leaves the image
        np.array([[0.5, 0.5], [7.25, 1.5], [8.75, 6.5], [2.5, 7.75]], float),  # fractional
    ]
    for _ in range(30):
        n = int(rng.integers(3, 10))
        pts = rng.integers(-2, 14, size=(n, 2)).astype(float)  # many vertices on pixels
        out.append(pts if rng.random() < 0.5 else pts + rng.uniform(-0.5, 0.5, size=(n, 2)))
    return out


@pytest.mark.parametrize("poly", _polygons())
def test_rasterisation_equals_a_point_in_polygon_loop(poly: np.ndarray) -> None:
    np.testing.assert_array_equal(polygon_mask(poly, (10, 12)), _brute_force(poly, 10, 12))


def test_an_integer_rectangle_covers_its_half_open_pixel_range() -> None:
    # Counted by hand: corners (1,1)..(4,3) hold x in {1,2,3}, y in {1,2}: 6 pixels. The
    # scikit-image HPF ran (<= 0.17) left the right and bottom edge out; today's (>= 0.18)
    # would add them (12 pixels) and change every IoU.
    mask = polygon_mask(np.array([[1, 1], [4, 1], [4, 3], [1, 3]]), (5, 6))
    expected = np.zeros((5, 6), bool)
    expected[1:3, 1:4] = True
    np.testing.assert_array_equal(mask, expected)


def test_a_small_triangle_by_hand() -> None:
    # (0,0), (4,0), (0,4): by the half-open rule pixel (x, y) is in when 0 <= y < 4 and
    # 0 <= x < 4 - y (the slanted edge's own pixels, x + y = 4, are out).
    mask = polygon_mask(np.array([[0, 0], [4, 0], [0, 4]]), (5, 5))
    expected = np.array([[1, 1, 1, 1, 0],
                         [1, 1, 1, 0, 0],
                         [1, 1, 0, 0, 0],
                         [1, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(mask, expected)


def test_degenerate_and_untransferred_outlines() -> None:
    square = np.array([[1, 1], [4, 1], [4, 3], [1, 3]], float)
    with_nan = np.vstack([square[:2], [[np.nan, np.nan]], square[2:]])
    # a vertex that could not be transferred is left out of the outline
    np.testing.assert_array_equal(polygon_mask(with_nan, (5, 6)), polygon_mask(square, (5, 6)))
    assert not polygon_mask(square[:2], (5, 6)).any()  # fewer than 3 vertices: empty
    assert not polygon_mask(square + 100, (5, 6)).any()  # outside the image: empty


def test_label_transfer_accuracy_and_iou_by_hand() -> None:
    gt = np.array([[0, 1, 1, 0],
                   [0, 1, 1, 0],
                   [0, 0, 0, 0]], bool)
    pred = np.array([[0, 0, 1, 1],
                     [0, 0, 1, 1],
                     [0, 0, 0, 0]], bool)
    # agree: 12 pixels - 4 differing = 8; intersection 2, union 6
    assert label_transfer_accuracy(pred, gt) == pytest.approx(8 / 12)
    assert mask_iou(pred, gt) == pytest.approx(2 / 6)
    assert label_transfer_accuracy(gt, gt) == 1.0 and mask_iou(gt, gt) == 1.0
    empty = np.zeros_like(gt)
    # background counts: an empty prediction still gets the 8 background pixels right
    assert label_transfer_accuracy(empty, gt) == pytest.approx(8 / 12)
    assert mask_iou(empty, gt) == 0.0
    assert mask_iou(empty, empty) == 1.0  # our decision: two empty masks agree
    with pytest.raises(ValueError):
        mask_iou(gt, gt[:2])


def test_transferred_mask_scores_by_hand() -> None:
    gt = np.array([[2, 1], [6, 1], [6, 4], [2, 4]], float)  # x 2..5, y 1..3: 12 pixels
    preds = np.stack([gt, gt + [2, 0], gt + [20, 0]])
    lt, iou = transferred_mask_scores(preds, gt, (5, 8))
    # shifted by 2: x 4..7, 12 pixels; shared x 4..5: 6; union 18; 12 of 40 pixels differ
    np.testing.assert_allclose(lt, [1.0, 28 / 40, 28 / 40])
    np.testing.assert_allclose(iou, [1.0, 6 / 18, 0.0])
