"""napari readers / writers of the plugin, called as npe2 calls them (no viewer needed)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from flowseg import _reader, _writer  # noqa: E402
from flowseg.engine.data.synthetic import make_labels  # noqa: E402
from flowseg.engine.io import segfile  # noqa: E402


@pytest.fixture
def labels():
    return make_labels((80, 96), diameter=18, seed=5).astype(np.int32)


def _by_name(layers, suffix):
    return next(ly for ly in layers if ly[1]["name"].endswith(suffix))


def test_reader_dispatch(tmp_path):
    assert _reader.napari_get_reader(str(tmp_path / "a_seg.npy")) is _reader.read_seg_layers
    assert _reader.napari_get_reader(str(tmp_path / "a_masks.tif")) is _reader.read_label_image
    assert _reader.napari_get_reader(str(tmp_path / "a_masks.png")) is _reader.read_label_image
    assert _reader.napari_get_reader(str(tmp_path / "a.tif")) is None
    assert _reader.napari_get_reader([str(tmp_path / "a_seg.npy")] * 2) is None


def test_seg_written_by_our_writer_reads_back(tmp_path, labels):
    img = np.random.default_rng(0).random(labels.shape).astype(np.float32)
    meta = {"name": "m", "metadata": {"flowseg": {"params": {"diameter_used": 18.0,
                                                             "channels": [0, None]}}}}
    out = _writer.write_seg_npy(str(tmp_path / "cells_seg.npy"),
                                [(labels, meta, "labels"), (img, {"name": "img"}, "image")])
    assert out == [str(tmp_path / "cells_seg.npy")]
    raw = np.load(out[0], allow_pickle=True).item()
    assert raw["chan_choose"] == [1, 0] and raw["diameter"] == 18.0
    layers = _reader.napari_get_reader(out[0])(out[0])
    kinds = [t for _, _, t in layers]
    assert kinds[:3] == ["image", "labels", "labels"]
    np.testing.assert_array_equal(_by_name(layers, "masks")[0], labels)
    np.testing.assert_array_equal(layers[0][0], img)


def test_seg_in_cellpose_layout_gives_flow_layers(tmp_path, labels):
    from flowseg.engine.flows.diffusion import masks_to_flows

    dP = masks_to_flows(labels) * 5
    cp = np.where(labels > 0, 4.0, -4.0).astype(np.float32)
    path = tmp_path / "img_seg.npy"
    np.save(path, {"masks": labels.astype(np.uint16), "outlines": segfile.masks_to_outlines(labels),
                   "flows": [np.zeros((1, *labels.shape, 3), np.uint8),
                             np.zeros((1, *labels.shape), np.uint8),
                             np.zeros((1, *labels.shape, 3), np.uint8), [],
                             np.concatenate([dP, cp[None]])],
                   "chan_choose": [0, 0], "ismanual": np.zeros(labels.max(), bool),
                   "filename": "img.tif", "diameter": 18.0}, allow_pickle=True)
    layers = _reader.read_seg_layers(str(path))
    vec = _by_name(layers, "flows")
    assert vec[2] == "vectors" and vec[0].shape[1:] == (2, 2) and len(vec[0]) > 50
    np.testing.assert_array_equal(_by_name(layers, "cell probability")[0], cp)
    assert _by_name(layers, "flow colour")[0].shape == (*labels.shape, 3)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_seg_is_refused(tmp_path):
    target = tmp_path / "created_by_pickle.txt"
    path = tmp_path / "evil_seg.npy"
    np.save(path, {"masks": np.zeros((8, 8), np.uint16), "flows": [_Evil(str(target))]},
            allow_pickle=True)
    reader = _reader.napari_get_reader(str(path))
    with pytest.raises(segfile.UnsafeFileError, match="could execute code"):
        reader(str(path))
    assert not target.exists()


@pytest.mark.parametrize("ext", [".tif", ".png"])
def test_label_image_roundtrip(tmp_path, labels, ext):
    path = str(tmp_path / f"img_masks{ext}")
    (written,) = _writer.write_label_image(path, labels, {})
    (data, meta, kind), = _reader.napari_get_reader(written)(written)
    assert kind == "labels" and meta["name"] == "img_masks"
    np.testing.assert_array_equal(data, labels)


def test_label_writer_errors(tmp_path):
    # not ValueErrors: napari would replace those by its generic "not a valid writer"
    with pytest.raises(_writer.LabelWriteError, match="PNG holds 2D"):
        _writer.write_label_image(str(tmp_path / "a.png"), np.zeros((3, 4, 4), np.int32), {})
    with pytest.raises(_writer.LabelWriteError, match="integer"):
        _writer.write_label_image(str(tmp_path / "a.tif"), np.zeros((4, 4), np.float32), {})
    with pytest.raises(_writer.LabelWriteError, match="exactly one Labels"):
        _writer.write_seg_npy(str(tmp_path / "a_seg.npy"), [])
    assert not issubclass(_writer.LabelWriteError, ValueError)


def test_roi_zip_writer(tmp_path, labels):
    import roifile

    (out,) = _writer.write_roi_zip(str(tmp_path / "cells.zip"), labels, {})
    assert len(roifile.roiread(out)) == len(np.unique(labels)) - 1
    vol = np.stack([labels, labels])
    (out3,) = _writer.write_roi_zip(str(tmp_path / "vol.zip"), vol, {})
    rois = roifile.roiread(out3)
    assert len(rois) == 2 * (len(np.unique(labels)) - 1)
    assert {r.position for r in rois} == {1, 2}
