"""Cellpose ``_seg.npy`` interop and ImageJ ROI export (flowseg.engine.io.segfile)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from flowseg.engine.data.synthetic import make_labels
from flowseg.engine.io import segfile


@pytest.fixture
def labels():
    return make_labels((96, 112), diameter=20, seed=3).astype(np.int32)


def _cellpose_style_dict(masks, dP, cellprob):
    """A dict laid out as Cellpose 3 ``io.masks_flows_to_seg`` writes it (2D)."""
    rgb = np.zeros((*masks.shape, 3), np.uint8)
    return {
        "outlines": segfile.masks_to_outlines(masks).astype(np.uint16),
        "masks": masks.astype(np.uint16),
        "chan_choose": [2, 3],
        "ismanual": np.zeros(masks.max(), bool),
        "filename": "/data/img.tif",
        "flows": [rgb[None], np.zeros((1, *masks.shape), np.uint8),
                  np.zeros((1, *masks.shape, 3), np.uint8), [],
                  np.concatenate([dP, cellprob[None]], 0).astype(np.float32)],
        "diameter": np.float64(17.5),
        "est_diam": 17.5,
    }


def test_read_cellpose_layout(tmp_path, labels):
    dP = np.random.default_rng(0).normal(size=(2, *labels.shape)).astype(np.float32)
    cp = np.random.default_rng(1).normal(size=labels.shape).astype(np.float32)
    path = tmp_path / "img_seg.npy"
    np.save(path, _cellpose_style_dict(labels, dP, cp), allow_pickle=True)
    dat = segfile.read_seg(path)
    np.testing.assert_array_equal(dat["masks"], labels)
    assert dat["chan_choose"] == [2, 3]
    assert float(dat["diameter"]) == 17.5
    d, c, rgb = segfile.seg_flows(dat)
    np.testing.assert_allclose(d, dP)
    np.testing.assert_allclose(c, cp)
    assert rgb.shape == (*labels.shape, 3)


@pytest.mark.parametrize("ndim", [2, 3])
def test_write_read_roundtrip(tmp_path, ndim):
    masks = make_labels((64, 64) if ndim == 2 else (12, 40, 40), diameter=14, seed=1)
    rng = np.random.default_rng(2)
    dP = rng.normal(size=(ndim, *masks.shape)).astype(np.float32)
    cp = rng.normal(size=masks.shape).astype(np.float32)
    out = segfile.write_seg(tmp_path / "a.tif", masks, flows=dP, cellprob=cp,
                            diameter=14, channels=(1, 2), filename="a.tif")
    assert out.endswith("a.tif_seg.npy")
    dat = segfile.read_seg(out)
    np.testing.assert_array_equal(dat["masks"], masks)
    assert dat["masks"].dtype == np.uint16
    assert set(np.unique(dat["outlines"])) <= set(np.unique(masks))
    d, c, rgb = segfile.seg_flows(dat)
    np.testing.assert_allclose(d, dP)
    np.testing.assert_allclose(c, cp)
    assert rgb.shape == (*masks.shape, 3) and rgb.dtype == np.uint8
    # the plain numpy loader (what Cellpose uses) reads our file too
    plain = np.load(out, allow_pickle=True).item()
    assert plain["chan_choose"] == [1, 2] and len(plain["flows"]) == 5


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickle_is_refused(tmp_path):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil_seg.npy"
    arr = np.empty((), dtype=object)
    arr[()] = {"masks": np.zeros((4, 4), np.uint16), "x": _Payload(str(target))}
    with open(path, "wb") as fh:
        np.lib.format.write_array(fh, arr, allow_pickle=True)
    with pytest.raises(segfile.UnsafeFileError, match="could execute code"):
        segfile.read_seg(path)
    assert not target.exists()


def test_not_a_seg_file(tmp_path):
    p = tmp_path / "x_seg.npy"
    np.save(p, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="expected a dict"):
        segfile.read_seg(p)
    np.save(p, {"flows": []}, allow_pickle=True)
    with pytest.raises(ValueError, match="no 'masks'"):
        segfile.read_seg(p)
    (tmp_path / "junk_seg.npy").write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a .npy"):
        segfile.read_seg(tmp_path / "junk_seg.npy")


def test_flow_to_rgb_hue_follows_direction():
    dP = np.zeros((2, 1, 4), np.float32)
    dP[1, 0, :2] = 1.0   # +x
    dP[1, 0, 2:] = -1.0  # -x
    rgb = segfile.flow_to_rgb(dP)
    assert rgb.shape == (1, 4, 3)
    assert not np.array_equal(rgb[0, 0], rgb[0, 2])
    assert rgb[0, 0].max() == 255  # full value at full speed


def test_imagej_rois(tmp_path, labels):
    import roifile

    path = segfile.write_imagej_rois(tmp_path / "rois", labels)
    assert path.endswith(".zip")
    rois = roifile.roiread(path)
    n = len(np.unique(labels)) - 1
    assert len(rois) == n
    with zipfile.ZipFile(path) as zf:
        assert len(zf.namelist()) == n
    # each polygon encloses its mask: the centre of mass of the polygon lies in the cell
    from skimage.draw import polygon
    r = rois[0]
    idx = int(r.name)
    xy = r.coordinates()
    rr, cc = polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, labels.shape)
    filled = np.zeros(labels.shape, bool)
    filled[rr, cc] = True
    iou = (filled & (labels == idx)).sum() / (filled | (labels == idx)).sum()
    assert iou > 0.8
