from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scotsearch.geometry import make_grid
from scotsearch.metrics import correct_keypoints
from scotsearch.metrics import mean_pck
from scotsearch.metrics import pck
from scotsearch.metrics import pooled_pck
from scotsearch.transfer import transfer_keypoints


def _naive_transfer(C, kps, sg, tg, src_valid=None, trg_valid=None):
    n, m = C.shape
    boxes, cs, ct = sg.boxes.numpy(), sg.centres.numpy(), tg.centres.numpy()
    out = []
    for p in kps:
        acc = np.zeros(2)
        cnt = 0
        for i in range(n):
            if src_valid is not None and not src_valid[i]:
                continue
            x0, y0, x1, y1 = boxes[i]
            if x0 <= p[0] <= x1 and y0 <= p[1] <= y1:
                best, bj = -np.inf, -1
                for j in range(m):
                    if trg_valid is not None and not trg_valid[j]:
                        continue
                    if C[i, j] > best:
                        best, bj = C[i, j], j
                # reference form: tl(j*) + (p - tl(i))
                tl_j = ct[bj] - sg.rf // 2
                tl_i = cs[i] - sg.rf // 2
                acc += tl_j + (p - tl_i)
                cnt += 1
        out.append(acc / cnt if cnt else np.array([np.nan, np.nan]))
    return np.array(out)


def test_transfer_against_naive_loop() -> None:
    rng = np.random.default_rng(1)
    sg = make_grid(5, 6, stride=4, rf=11, image_size=(20, 24), prune_margin=False)
    tg = make_grid(4, 7, stride=4, rf=11, image_size=(16, 28), prune_margin=False)
    C = rng.random((sg.n, tg.n))
    kps = np.array([[0.0, 0.0], [5.5, 7.25], [23.0, 19.0], [12.0, 4.0], [60.0, 60.0]])
    got = transfer_keypoints(torch.as_tensor(C), torch.as_tensor(kps), sg.boxes.double(),
                             sg.centres.double(), tg.centres.double()).numpy()
    expect = _naive_transfer(C, kps, sg, tg)
    np.testing.assert_allclose(got, expect, rtol=1e-12)
    assert np.isnan(got[-1]).all()  # no box contains (60, 60): no fallback, NaN


def test_transfer_respects_pruning_and_batches() -> None:
    rng = np.random.default_rng(2)
    sg = make_grid(6, 6, stride=4, rf=19, image_size=(22, 22), prune_margin=True)
    tg = make_grid(6, 5, stride=4, rf=19, image_size=(22, 18), prune_margin=True)
    assert not sg.valid.all() and sg.valid.any()
    C = rng.random((3, sg.n, tg.n))
    kps = rng.uniform(2, 20, size=(4, 2))
    got = transfer_keypoints(torch.as_tensor(C), torch.as_tensor(kps), sg.boxes.double(),
                             sg.centres.double(), tg.centres.double(),
                             src_valid=sg.valid, trg_valid=tg.valid).numpy()
    for s in range(3):
        expect = _naive_transfer(C[s], kps, sg, tg, sg.valid.numpy(), tg.valid.numpy())
        np.testing.assert_allclose(got[s], expect, rtol=1e-12)


def test_pck_hand_computed() -> None:
    gt = torch.tensor([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0], [40.0, 40.0]])
    pred = torch.tensor([[13.0, 14.0], [20.0, 25.1], [30.0, 30.0], [float("nan"), 40.0]])
    # alpha * thr = 0.1 * 50 = 5: distances 5 (correct, <=), 5.1 (wrong), 0 (correct), NaN.
    assert correct_keypoints(pred, gt, 50.0, 0.1).tolist() == [True, False, True, False]
    assert pck(pred, gt, 50.0, 0.1).item() == 0.5
    assert pck(pred, gt, 52.0, 0.1).item() == 0.75  # 5.2 admits 5.1
    # mean over pairs vs pooled over keypoints: pairs with 1/4 and 3/3 correct
    assert math.isclose(mean_pck(np.array([0.25, 1.0])), 62.5)
    assert math.isclose(pooled_pck(np.array([1, 3]), np.array([4, 3])), 400 / 7)


def test_pck_batched_thresholds() -> None:
    gt = torch.zeros(2, 3, 2)
    pred = torch.tensor(
        [[[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]], [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]]
    )
    thr = torch.tensor([20.0, 30.0])
    assert pck(pred, gt, thr, 0.1).tolist() == pytest.approx([2 / 3, 1.0])
