"""Tests of flows -> masks (flowseg.engine.flows.dynamics)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from flowseg import flows_to_masks, masks_to_flows
from flowseg.engine.data.synthetic import make_labels
from flowseg.engine.flows.dynamics import _fill_holes, compute_masks
from flowseg.engine.flows.metrics import average_precision
from flowseg.engine.progress import Cancelled, ProgressCollector


def _cellprob(lab):
    return np.where(lab > 0, 5.0, -5.0).astype(np.float32)


def _round_trip(shape, diameter, seed=0, **kw):
    lab = make_labels(shape, diameter, seed=seed)
    masks = flows_to_masks(masks_to_flows(lab), _cellprob(lab), **kw)
    return lab, masks


def test_round_trip_2d_256():
    lab, masks = _round_trip((256, 256), 30, seed=4)
    assert masks.dtype == np.int32 and masks.shape == lab.shape
    assert masks.max() == lab.max()
    assert np.array_equal(np.unique(masks), np.arange(masks.max() + 1))
    assert average_precision(lab, masks)[2] == 1.0


def test_round_trip_3d_small():
    lab, masks = _round_trip((32, 64, 64), 20, seed=2)
    assert average_precision(lab, masks)[2] >= 0.99


def _euler_numpy(flows, pts, niter):
    """Plain Euler integration with bilinear interpolation (the definition)."""
    H, W = flows.shape[1:]
    y, x = pts[0].astype(np.float64), pts[1].astype(np.float64)
    for _ in range(niter):
        y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
        y1, x1 = np.minimum(y0 + 1, H - 1), np.minimum(x0 + 1, W - 1)
        fy, fx = y - y0, x - x0
        v = [(1 - fy) * (1 - fx) * c[y0, x0] + (1 - fy) * fx * c[y0, x1]
             + fy * (1 - fx) * c[y1, x0] + fy * fx * c[y1, x1] for c in flows]
        y = np.clip(y + v[0], 0, H - 1)
        x = np.clip(x + v[1], 0, W - 1)
    return np.stack([y, x])


def test_integration_matches_plain_euler_and_early_stop_is_harmless():
    lab = make_labels((128, 128), 26, seed=7)
    f, cp = masks_to_flows(lab), _cellprob(lab)
    fast = compute_masks(f, cp)
    exact = compute_masks(f, cp, converge_tol=0)
    ref = _euler_numpy(f * (lab > 0), exact.points, 200)
    d = np.abs(exact.end_points - ref).max(0)
    assert np.mean(d < 1e-3) > 0.99
    assert fast.work < exact.points.shape[1] * 200 / 3
    assert np.array_equal(fast.masks, exact.masks)
    d_fast = np.abs(fast.end_points - ref).max(0)
    assert np.mean(d_fast < 0.5) > 0.99


def test_result_fields_and_progress():
    lab = make_labels((96, 96), 24, seed=1)
    col = ProgressCollector()
    r = compute_masks(masks_to_flows(lab), _cellprob(lab), progress=col)
    n = int((lab > 0).sum())
    assert r.points.shape == (2, n) and r.end_points.shape == (2, n)
    assert r.end_points.dtype == np.float32
    assert r.flow_errors.shape == (r.masks.max(),) and r.n_removed_flow == 0
    assert np.all(r.flow_errors < 0.05)
    assert "dynamics" in col.stages() and col.events[-1].fraction == 1.0
    with pytest.raises(Cancelled):
        compute_masks(masks_to_flows(lab), _cellprob(lab), cancel=lambda: True)


def test_flow_check_drops_inconsistent_mask():
    lab = make_labels((128, 128), 30, seed=3)
    f = masks_to_flows(lab)
    bad_id = lab[64, 64]
    sel = lab == bad_id
    # rotate the flows of one cell by 90 degrees: still converge (a vortex does not...)
    # so instead flip them: they now point away from the centre inside that cell
    f2 = f.copy()
    f2[:, sel] *= -1
    r = compute_masks(f2, _cellprob(lab), flow_threshold=0.4)
    r0 = compute_masks(f2, _cellprob(lab), flow_threshold=0)
    assert r.n_removed_flow >= 1 and r.masks.max() < r0.masks.max()
    assert r0.flow_errors.size == 0
    # the untouched cells are all still found
    keep = np.where(sel, 0, lab)
    assert average_precision(keep, np.where(sel, 0, r.masks), [0.9])[0] > 0.95


def test_max_size_fraction_and_min_size():
    lab = np.zeros((100, 100), np.int32)
    lab[0:70, 0:70] = 1  # 49 % of the image
    lab[80:90, 80:90] = 2
    lab[75:79, 5:9] = 3  # 16 px (a seed needs > 10 end points)
    f, cp = masks_to_flows(lab), _cellprob(lab)
    m = flows_to_masks(f, cp)  # object 1 too big
    assert m.max() == 2 and not m[0:70, 0:70].any()
    m1 = flows_to_masks(f, cp, min_size=20)  # object 3 too small as well
    assert m1.max() == 1 and np.all(m1[80:90, 80:90] == 1)
    m2 = flows_to_masks(f, cp, max_size_fraction=0.6, min_size=5)
    assert m2.max() == 3
    assert average_precision(lab, m2)[2] == 1.0


def test_fill_holes_2d_3d():
    m = np.zeros((12, 12), np.int32)
    m[1:8, 1:8] = 3
    m[3:5, 3:5] = 0           # hole inside 3
    m[8:11, 8:11] = 5
    m[9, 9] = 0               # hole inside 5
    m[0:3, 9:12] = 6
    m[1, 11] = 0              # touches the border: not a hole
    _fill_holes(m)
    assert np.all(m[3:5, 3:5] == 3) and m[9, 9] == 5 and m[1, 11] == 0
    two = np.zeros((7, 9), np.int32)
    two[1:6, 1:4] = 1
    two[1:6, 5:8] = 2
    two[1, 4] = two[5, 4] = 1  # a gap enclosed by two masks stays empty
    _fill_holes(two)
    assert np.all(two[2:5, 4] == 0)
    c = np.zeros((5, 5, 5), np.int32)
    c[1:4, 1:4, 1:4] = 2
    c[2, 2, 2] = 0
    _fill_holes(c)
    assert c[2, 2, 2] == 2


def test_empty_inputs_no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = flows_to_masks(np.zeros((2, 30, 40), np.float32), np.full((30, 40), -1.0))
        assert m.shape == (30, 40) and m.dtype == np.int32 and not m.any()
        m3 = flows_to_masks(np.zeros((3, 4, 30, 40)), np.zeros((4, 30, 40)))
        assert m3.shape == (4, 30, 40) and not m3.any()
        # foreground without convergence (zero flows, tiny region) -> no masks, no warning
        cp = np.full((30, 40), -1.0)
        cp[3:5, 3:5] = 1
        assert not flows_to_masks(np.zeros((2, 30, 40)), cp).any()


@pytest.mark.parametrize("flows, cellprob, kw, match", [
    (np.zeros((2, 10, 11)), np.zeros((10, 10)), {}, "shape"),
    (np.zeros((3, 10, 10)), np.zeros((10, 10)), {}, "shape"),
    (np.zeros((1, 10)), np.zeros(10), {}, "2D or 3D"),
    (np.zeros((4, 2, 2, 2, 2)), np.zeros((2, 2, 2, 2)), {}, "2D or 3D"),
    (np.full((2, 10, 10), np.nan), np.zeros((10, 10)), {}, "NaN"),
    (np.zeros((2, 10, 10)), np.full((10, 10), np.inf), {}, "NaN"),
    (np.zeros((2, 10, 10)), np.zeros((10, 10)), {"niter": 0}, "niter"),
    (np.zeros((2, 10, 10)), np.zeros((10, 10)), {"flow_threshold": -1}, "flow_threshold"),
    (np.zeros((2, 10, 10)), np.zeros((10, 10)), {"max_size_fraction": 0}, "max_size"),
    (np.zeros((2, 10, 10), "U1"), np.zeros((10, 10)), {}, "numeric"),
])
def test_bad_input(flows, cellprob, kw, match):
    with pytest.raises(ValueError, match=match):
        flows_to_masks(flows, cellprob, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("shape, diameter, min_ap", [
    ((512, 512), 38, 1.0),
    ((2048, 2048), 38, 1.0),
    ((96, 128, 128), 38, 0.99),
])
def test_round_trip_large(shape, diameter, min_ap):
    lab, masks = _round_trip(shape, diameter)
    assert average_precision(lab, masks, [0.9])[0] >= min_ap


def test_warmup_compiles_the_kernels_of_the_dimensions_asked():
    """In a fresh process nothing is compiled; warmup((2,)) compiles (or loads from numba's
    cache) the 2D kernels of flows, dynamics and masks, and leaves the 3D ones alone."""
    import subprocess
    import sys

    code = (
        "from flowseg.engine.flows import diffusion_kernels as F, dynamics as D\n"
        "from flowseg.engine.flows import dynamics_kernels as KD, masks_kernels as K\n"
        "kernels = [KD.follow_2d, KD.follow_3d, K.find_seeds, F.flows_2d, F.flows_3d]\n"
        "assert not any(k.signatures for k in kernels)\n"
        "D.warmup((2,))\n"
        "print([bool(k.signatures) for k in kernels])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[-2] == "[True, False, True, True, False]"


@pytest.mark.peer
def test_same_masks_as_cellpose3(tmp_path, peer_python):
    import subprocess

    peer = peer_python
    lab = make_labels((192, 224), 30, seed=12)
    flows = masks_to_flows(lab, center="mean")  # Cellpose 3's own flow definition
    cp = _cellprob(lab)
    np.save(tmp_path / "dp.npy", 5 * flows)
    np.save(tmp_path / "cp.npy", cp)
    code = ("import numpy as np, torch; from cellpose import dynamics; "
            f"dp = np.load(r'{tmp_path / 'dp.npy'}'); cp = np.load(r'{tmp_path / 'cp.npy'}'); "
            "m = dynamics.resize_and_compute_masks(dp, cp, niter=200, min_size=15, "
            "device=torch.device('cpu')); "
            f"np.save(r'{tmp_path / 'm.npy'}', m.astype(np.int32))")
    subprocess.run([peer, "-c", code], check=True, capture_output=True)
    ref = np.load(tmp_path / "m.npy")
    ours = flows_to_masks(flows, cp)
    assert ours.max() == ref.max()
    assert average_precision(ref, ours, [0.99])[0] == 1.0


def test_warmup_in_background_runs_once_and_compiles():
    from flowseg.engine.flows import dynamics_kernels as KD
    from flowseg.engine.flows.dynamics import warmup_in_background

    th = warmup_in_background()
    assert warmup_in_background() is th  # once per process
    th.join(timeout=300)
    assert not th.is_alive()
    assert KD.follow_2d.signatures and KD.follow_3d.signatures  # 2D and 3D kernels ready


def test_cellpose3_sampling_steps_like_cellpose():
    """The opt-in 3D sampling reads the flow at p * n / (n - 1) - 0.5 (zero outside) and
    steps twice the flow; checked on a constant field, where only the border weights and
    the gain matter."""
    from flowseg.engine.flows import dynamics_kernels as KD

    D, H, W = 5, 6, 7
    fl = np.zeros((D, H, W, 3), np.float32)
    fl[..., 2] = 0.25  # +x everywhere
    flat = fl.ravel()
    # interior point: full weight, step 2 * 0.25 in x
    z, y, x = KD._step3_cp(flat, D, H, W, np.float32(2), np.float32(3), np.float32(3),
                           np.float32(D / (D - 1)), np.float32(H / (H - 1)),
                           np.float32(W / (W - 1)), np.float32(2.0))
    assert (z, y) == (2.0, 3.0) and x == pytest.approx(3.5)
    # at x = 0 the sample sits half a voxel outside: half the weight is zero padding
    z, y, x = KD._step3_cp(flat, D, H, W, np.float32(2), np.float32(3), np.float32(0),
                           np.float32(D / (D - 1)), np.float32(H / (H - 1)),
                           np.float32(W / (W - 1)), np.float32(2.0))
    assert x == pytest.approx(0.25)
    with pytest.raises(ValueError, match="sampling"):
        flows_to_masks(np.zeros((3, 4, 4, 4), np.float32), np.zeros((4, 4, 4), np.float32),
                       sampling="nearest")
