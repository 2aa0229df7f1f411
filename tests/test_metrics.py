"""Tests of the matching metrics (flowseg.engine.flows.metrics)."""

from __future__ import annotations

import numpy as np
import pytest

from flowseg import average_precision
from flowseg.engine.data.synthetic import make_labels
from flowseg.engine.flows.metrics import aggregated_jaccard, match_stats


def test_identical_and_permuted_ids():
    gt = make_labels((96, 96), 20, seed=1)
    assert np.array_equal(average_precision(gt, gt), [1, 1, 1])
    perm = np.random.default_rng(0).permutation(np.arange(1, gt.max() + 1)) * 7 + 100
    pred = np.where(gt > 0, np.concatenate([[0], perm])[gt], 0)
    s = match_stats(gt, pred)
    assert np.array_equal(s.ap, [1, 1, 1]) and s.n_true == s.n_pred == gt.max()
    assert s.aji == pytest.approx(1.0)


def test_counts_known_case():
    gt = np.zeros((20, 40), np.int32)
    gt[2:12, 2:12] = 1          # 100 px
    gt[2:12, 20:30] = 2         # 100 px
    gt[14:18, 30:34] = 3        # 16 px, missed
    pred = np.zeros_like(gt)
    pred[2:12, 2:11] = 5        # IoU 0.9 with 1
    pred[2:12, 20:26] = 9       # IoU 0.6 with 2
    pred[15:19, 5:9] = 4        # FP
    s = match_stats(gt, pred, thresholds=[0.5, 0.75, 0.95])
    assert np.array_equal(s.tp, [2, 1, 0])
    assert np.array_equal(s.fp, [1, 2, 3])
    assert np.array_equal(s.fn, [1, 2, 3])
    assert np.allclose(s.ap, [2 / 4, 1 / 5, 0])
    # AJI: I = 90 + 60, U = 100 + 100 + 16 (missed) + 16 (FP)
    assert s.aji == pytest.approx(150 / 232)


def test_optimal_assignment_below_half():
    # one true object split in two predictions with IoU 0.45 / 0.45 -> only 1 TP at 0.4
    gt = np.zeros((10, 20), np.int32)
    gt[:, :] = 1
    pred = np.zeros_like(gt)
    pred[:, :9] = 1
    pred[:, 11:] = 2
    s = match_stats(gt, pred, 0.4)
    assert s.tp[0] == 1 and s.fp[0] == 1 and s.fn[0] == 0


def test_lists_3d_and_empty():
    g3 = make_labels((12, 40, 40), 14, seed=2)
    res = average_precision([g3, g3[:, ::-1]], [g3, np.zeros_like(g3)])
    assert res.shape == (2, 3)
    assert np.array_equal(res[0], [1, 1, 1]) and np.array_equal(res[1], [0, 0, 0])
    e = np.zeros((8, 8), np.int32)
    assert np.array_equal(average_precision(e, e), [1, 1, 1])
    assert aggregated_jaccard(e, e) == 1.0
    s = match_stats([g3], [g3])
    assert s.tp.shape == (1, 3) and s.n_true.shape == (1,)
    assert average_precision([], []).shape == (0, 3)


@pytest.mark.parametrize("gt, pred, match", [
    (np.zeros((4, 4)), np.zeros((4, 5)), "same shape"),
    (np.zeros((4, 4)), np.full((4, 4), 0.5), "non-integer"),
    (np.zeros(4, np.int32), np.zeros(4, np.int32), "2D or 3D"),
    (np.zeros((4, 4), np.int32), -np.ones((4, 4), np.int32), "non-negative"),
])
def test_bad_input(gt, pred, match):
    with pytest.raises(ValueError, match=match):
        average_precision(gt, pred)


def test_bad_thresholds_and_list_mismatch():
    g = np.zeros((4, 4), np.int32)
    with pytest.raises(ValueError, match="thresholds"):
        average_precision(g, g, thresholds=[0.0])
    with pytest.raises(ValueError, match="length"):
        average_precision([g, g], [g])
    with pytest.raises(ValueError, match="both"):
        average_precision(g, [g])
