"""Tests of z stitching (flowseg.engine.flows.stitch)."""

from __future__ import annotations

import numpy as np
import pytest

from flowseg import stitch_masks
from flowseg.engine.data.synthetic import make_labels
from flowseg.engine.flows.metrics import average_precision


def test_recovers_3d_objects_from_scrambled_slices():
    base = make_labels((64, 64), 16, seed=3)
    rng = np.random.default_rng(1)
    n = base.max()
    z0 = rng.integers(0, 6, n + 1)
    z1 = z0 + rng.integers(3, 10, n + 1)
    zz = np.arange(12)[:, None, None]
    lab = np.where((zz >= z0[base]) & (zz < z1[base]) & (base > 0), base, 0)
    scrambled = np.zeros_like(lab)
    for z in range(lab.shape[0]):  # independent random ids per slice
        perm = np.concatenate([[0], rng.permutation(n) + 1 + 1000 * z])
        scrambled[z] = perm[lab[z]]
    out = stitch_masks(scrambled, 0.25)
    assert out.dtype == np.int32 and out.shape == lab.shape
    assert np.array_equal(np.unique(out), np.arange(out.max() + 1))
    assert np.array_equal(average_precision(lab, out, [0.5, 0.99]), [1.0, 1.0])


def test_threshold_and_fresh_ids():
    a = np.zeros((3, 10, 10), np.int32)
    a[0, 0:5, 0:5] = 4
    a[1, 0:5, 0:4] = 9        # IoU 0.8 with slice 0 -> linked
    a[1, 6:9, 6:9] = 2        # new object
    a[2, 0:5, 3:8] = 1        # IoU 1/9 with slice 1 -> fresh id at 0.25
    out = stitch_masks(a, 0.25)
    assert set(np.unique(out[0])) == {0, 1}
    assert np.all(out[1][a[1] == 9] == 1)
    assert np.all(out[1][a[1] == 2] == 2)
    assert np.all(out[2][a[2] == 1] == 3)
    out2 = stitch_masks(list(a), 0.1)
    assert np.all(out2[2][a[2] == 1] == 1)


def test_hungarian_one_to_one():
    a = np.zeros((2, 4, 10), np.int32)
    a[0, :, 0:6] = 1
    a[1, :, 0:3] = 1           # IoU 0.5 with previous
    a[1, :, 3:6] = 2           # IoU 0.5 as well: only one may link
    out = stitch_masks(a, 0.3)
    assert len(set(np.unique(out[1])) - {0}) == 2
    assert 1 in np.unique(out[1])


def test_empty_slices_and_bad_input():
    e = np.zeros((3, 5, 5), np.int32)
    e[2, 1:3, 1:3] = 7
    out = stitch_masks(e)
    assert out.max() == 1 and out[2, 1, 1] == 1
    with pytest.raises(ValueError, match="Z, Y, X"):
        stitch_masks(np.zeros((5, 5), np.int32))
    with pytest.raises(ValueError, match="iou_threshold"):
        stitch_masks(e, 0)
    with pytest.raises(ValueError, match="same shape"):
        stitch_masks([np.zeros((3, 3)), np.zeros((3, 4))])
    with pytest.raises(ValueError, match="non-integer"):
        stitch_masks(np.full((2, 3, 3), 0.5))
