"""Model.segment: tiling without seams, 2D/3D/stitching, recompute, bad input."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from flowseg.engine.data.synthetic import make_labels, make_sample
from flowseg.engine.flows.diffusion import masks_to_flows
from flowseg.engine.flows.metrics import average_precision
from flowseg.engine.inference.model import Model
from flowseg.engine.network.tiling import pad_amounts, tile_starts
from flowseg.engine.progress import Cancelled, ProgressCollector


class OracleNet(torch.nn.Module):
    """A stand-in for a perfect network that only sees its tile.

    Channel 0 of the input holds the label image (run with ``normalize=False``); each tile's
    output is 5x the flows of the labels *cropped to that tile* (objects cut by the tile edge
    get flows towards the centre of their visible part, as a real network would see them)
    and a +/-6 logit.  Blending such tiles is what must not create seams.
    """

    def __init__(self, nchan: int = 2, style: int = 16) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.nbase = [nchan, 2, 4, 8, style]
        self.nchan = nchan
        self.calls = 0

    def forward(self, x: torch.Tensor):
        self.calls += 1
        lab = torch.round(x[:, 0]).to(torch.int64).numpy()
        out = np.zeros((x.shape[0], 3, *x.shape[2:]), np.float32)
        for b in range(x.shape[0]):
            out[b, :2] = 5.0 * masks_to_flows(lab[b])
            out[b, 2] = np.where(lab[b] > 0, 6.0, -6.0)
        style = torch.ones(x.shape[0], self.nbase[-1]) / self.nbase[-1] ** 0.5
        return torch.from_numpy(out), style


def _oracle_model(diam_mean: float = 30.0) -> Model:
    m = Model.new(width=2, diam_mean=diam_mean)
    m.net = OracleNet()
    return m


def _straddlers(labels: np.ndarray, bsize: int = 224) -> list[int]:
    """Ids of objects crossing the seam region between two tiles (in either direction)."""
    ids = set()
    for ax in (0, 1):
        L = labels.shape[ax]
        p0, p1 = pad_amounts(L)
        st = tile_starts(L + p0 + p1, bsize, 0.1)
        for s in st[1:]:
            cut = s - p0 + 20  # inside the overlap, where both tiles' weights matter
            if 0 < cut < L:
                line = np.take(labels, cut, axis=ax)
                ids.update(int(v) for v in np.unique(line) if v > 0)
    return sorted(ids)


def _check_no_seams(shape, seed, **kw):
    labels = make_labels(shape, diameter=30, seed=seed)
    m = _oracle_model()
    calls = m.net.calls
    seg = m.segment(labels.astype(np.float32), diameter=30, normalize=False,
                    channels=(0, None), batch_size=4, **kw)
    assert m.net.calls - calls > 2  # really tiled
    assert seg.masks.shape == labels.shape
    straddle = _straddlers(labels)
    assert len(straddle) > 10
    # every object crossing a tile seam comes back as one mask covering it
    for i in straddle:
        obj = labels == i
        ids, counts = np.unique(seg.masks[obj], return_counts=True)
        best = ids[np.argmax(counts)]
        assert best > 0, f"object {i} lost"
        iou = (obj & (seg.masks == best)).sum() / (obj | (seg.masks == best)).sum()
        assert iou > 0.85, f"object {i} split at a tile seam (IoU {iou:.2f})"
    ap = average_precision(labels, seg.masks, thresholds=(0.5, 0.9))
    assert ap[0] > 0.97 and ap[1] > 0.9


def test_tiles_without_seams_oracle():
    _check_no_seams((450, 700), seed=3, whole_max=0)  # force 224-pixel tiles


@pytest.mark.slow
def test_tiles_without_seams_oracle_2000x3000():
    _check_no_seams((2000, 3000), seed=4)


def test_resizing_to_model_diameter_and_back():
    labels = make_labels((300, 300), diameter=40, seed=5)
    m = _oracle_model(diam_mean=30.0)
    seg = m.segment(labels.astype(np.float32), diameter=40, normalize=False, channels=(0, None))
    # the oracle sees resized labels (interpolated, then rounded): masks still match closely
    assert seg.params["rescale"] == pytest.approx(0.75)
    assert seg.params["niter"] == round(200 * 40 / 30)
    assert seg.flows.shape == (2, 300, 300) and seg.cellprob.shape == (300, 300)
    assert average_precision(labels, seg.masks, thresholds=0.5)[0] > 0.9


def test_recompute_changes_only_thresholds():
    labels = make_labels((256, 256), diameter=30, seed=6)
    m = _oracle_model()
    seg = m.segment(labels.astype(np.float32), normalize=False, channels=(0, None))
    assert seg.params["diameter_source"].startswith("model diam_mean")
    calls = m.net.calls
    none = seg.recompute(cellprob_threshold=7.0)  # logits are +-6
    assert m.net.calls == calls  # no network run
    assert none.masks.max() == 0 and none.params["cellprob_threshold"] == 7.0
    again = none.recompute(cellprob_threshold=0.0)
    np.testing.assert_array_equal(again.masks, seg.masks)
    big = seg.recompute(min_size=10_000)
    assert big.masks.max() == 0
    assert seg.masks.max() > 0  # the original is untouched


def test_progress_and_cancel():
    labels = make_labels((300, 300), diameter=30, seed=7)
    m = _oracle_model()
    pc = ProgressCollector()
    m.segment(labels.astype(np.float32), normalize=False, channels=(0, None), progress=pc)
    assert pc.stages()[:3] == ["prepare", "network", "dynamics"]
    net_events = [e for e in pc.events if e.stage == "network"]
    assert net_events[-1].done == net_events[-1].total > 0
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        m.segment(labels.astype(np.float32), normalize=False, channels=(0, None), cancel=ev)


def test_3d_and_stitch_with_oracle():
    labels = make_labels((24, 64, 64), diameter=14, seed=8)
    m = _oracle_model(diam_mean=14.0)
    vol = labels.astype(np.float32)
    seg = m.segment(vol, do_3d=True, normalize=False, channels=(0, None), diameter=14)
    assert seg.flows.shape == (3, 24, 64, 64) and seg.cellprob.shape == (24, 64, 64)
    assert seg.masks.shape == labels.shape
    assert average_precision(labels, seg.masks, thresholds=0.5)[0] > 0.8
    st = m.segment(vol, stitch_threshold=0.3, normalize=False, channels=(0, None), diameter=14)
    assert st.flows.shape == (2, 24, 64, 64) and st.styles.shape[0] == 24
    assert average_precision(labels, st.masks, thresholds=0.5)[0] > 0.6
    an = m.segment(vol[::2], do_3d=True, anisotropy=2.0, normalize=False, channels=(0, None),
                   diameter=14)
    assert an.masks.shape == (12, 64, 64)
    assert average_precision(labels[::2], an.masks, thresholds=0.5)[0] > 0.6


def test_real_network_runs_on_all_layouts():
    m = Model.new(width=4, seed=0)
    s = make_sample("cells", (64, 80), diameter=20, with_nuclei=True, seed=1)
    img = s.image
    for x, kw in ((img[..., 0], {}), (img, {}), (np.moveaxis(img, -1, 0), {}),
                  (np.concatenate([img, img[..., :1]], -1), {"channels": (0, 1)}),
                  (np.random.default_rng(0).random((64, 80, 4)), {}),
                  ((img[..., 0] * 1000).astype(np.uint16), {})):
        seg = m.segment(x, **kw)
        assert seg.masks.shape == (64, 80) and seg.masks.dtype == np.int32
        assert seg.flows.shape == (2, 64, 80) and seg.styles.shape == (32,)
        assert np.isfinite(seg.flows).all() and np.isfinite(seg.cellprob).all()
    aug = m.segment(img, diameter=20, augment=True)
    assert aug.flows.shape == (2, 64, 80)


def test_bad_input_is_rejected_clearly():
    m = Model.new(width=2, seed=0)
    img = np.random.default_rng(0).random((40, 50)).astype(np.float32)
    with pytest.raises(ValueError, match="diameter"):
        m.segment(img, diameter=0)
    with pytest.raises(ValueError, match="diameter"):
        m.segment(img, diameter=-3)
    with pytest.raises(ValueError, match="diameter"):
        m.segment(img, diameter=float("nan"))
    bad = img.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m.segment(bad)
    with pytest.raises(ValueError, match="5 axes"):
        m.segment(np.zeros((2, 3, 4, 40, 50)))
    with pytest.raises(ValueError, match="at least 2 axes"):
        m.segment(np.zeros(7))
    with pytest.raises(ValueError, match="empty"):
        m.segment(np.zeros((0, 50)))
    with pytest.raises(ValueError, match="nucleus channel 5"):
        m.segment(np.zeros((40, 50, 3)) + img[..., None], channels=(0, 5))
    with pytest.raises(ValueError, match="z_axis"):
        m.segment(np.zeros((5, 40, 50)) + img, do_3d=True, z_axis=4)
    with pytest.raises(ValueError, match="volume"):
        m.segment(img, do_3d=True)
    with pytest.raises(ValueError, match="numeric"):
        m.segment(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ValueError, match="normalize"):
        m.segment(img, normalize="yes")
    with pytest.raises(ValueError, match="diameter=0.01 would resize"):
        m.segment(img, diameter=0.01)


def test_degenerate_images_give_empty_results():
    m = Model.new(width=2, seed=0)
    for x in (np.zeros((1, 1)), np.full((30, 40), 5.0), np.zeros((30, 40, 2), np.uint8),
              np.ones((4, 20, 20))):
        seg = m.segment(x, do_3d=x.ndim == 3)
        assert seg.masks.max() == 0 and seg.masks.shape == x.shape
        assert seg.recompute(cellprob_threshold=-5).masks.max() == 0
    one = m.segment(np.random.default_rng(0).random((1, 1)) + np.eye(1))
    assert one.masks.shape == (1, 1)
    tiny = m.segment(np.random.default_rng(0).random((3, 2)))
    assert tiny.masks.shape == (3, 2)


def test_augment_unflips_flows():
    labels = make_labels((260, 300), diameter=30, seed=9)
    m = _oracle_model()
    plain = m.segment(labels.astype(np.float32), normalize=False, channels=(0, None))
    aug = m.segment(labels.astype(np.float32), normalize=False, channels=(0, None), augment=True)
    # flipped tiles whose flows were not un-flipped and negated would cancel out
    inside = labels > 0
    cos = (plain.flows * aug.flows).sum(0)[inside]
    assert np.median(cos) > 0.9
    assert average_precision(labels, aug.masks, thresholds=0.9)[0] > 0.9


def test_3d_cellpose3_sampling_is_opt_in_and_checked():
    labels = make_labels((16, 48, 48), diameter=14, seed=3)
    m = _oracle_model(diam_mean=14.0)
    vol = labels.astype(np.float32)
    seg = m.segment(vol, do_3d=True, normalize=False, channels=(0, None), diameter=14)
    assert seg.params["sampling"] == "exact"
    cp = seg.recompute(sampling="cellpose3")
    assert cp.params["sampling"] == "cellpose3" and cp.masks.shape == labels.shape
    assert cp.masks.max() > 0
    # the recomputed masks follow the stored setting back
    assert np.array_equal(cp.recompute(sampling="exact").masks, seg.masks)
    with pytest.raises(ValueError, match="sampling"):
        m.segment(vol, do_3d=True, normalize=False, channels=(0, None), diameter=14,
                  sampling="bogus")
