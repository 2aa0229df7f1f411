"""Big images in the Segment tab: lazy and multiscale layers go block by block (progress,
Cancel, a lazy zarr-backed Labels layer), and the memory check before an in-memory run
offers the block-by-block path.  Runs under xvfb-run."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("zarr", minversion="3")
pytest.importorskip("distributed")

from test_napari_widget import _bundled, _widget

from flowseg import _layers, _segment_big
from flowseg.engine import memory
from flowseg.engine.blocks import lazy, run
from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.flows.metrics import average_precision

DIAM = 17.0


@pytest.fixture(scope="module")
def image():
    s = make_sample("nuclei", (256, 256), seed=3, noise=1.2, blur=1.2)
    return (s.image[..., 0] / s.image.max() * 20000 + 100).astype(np.uint16)


@pytest.fixture
def small_blocks(monkeypatch, tmp_path):
    """Blocks of 96 pixels; lazy images over 1000 pixels go block by block; outputs of
    arrays without a file go to ``tmp_path``."""
    monkeypatch.setitem(run.DEFAULT_BLOCK_SIZE, 2, 96)
    monkeypatch.setattr(lazy, "LAZY_BLOCKWISE_ELEMENTS", 1000)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _viewer(make_napari_viewer, monkeypatch, tmp_path):
    if _bundled("nuclei") is None:
        pytest.skip("bundled 'nuclei' model not trained yet")
    monkeypatch.setenv("FLOWSEG_MODEL_DIR", str(tmp_path / "models"))
    viewer, w = _widget(make_napari_viewer)
    return viewer, w


def _run(w, qtbot, layer, timeout=120000):
    c = w.controls
    viewer = c.viewer
    viewer.layers.selection.active = layer
    c.model.value = str(_bundled("nuclei"))
    c.diameter.value = DIAM
    worker = w.run()
    assert worker is not None
    qtbot.waitUntil(lambda: not c.busy, timeout=timeout)
    return c


def _zarrs(folder):
    return sorted(p.name for p in folder.rglob("*.zarr"))


def test_dask_image_segments_block_by_block_into_a_lazy_labels_layer(
        make_napari_viewer, qtbot, monkeypatch, small_blocks, image):
    import dask.array as da
    import zarr

    viewer, w = _viewer(make_napari_viewer, monkeypatch, small_blocks)
    layer = viewer.add_image(da.from_array(image, chunks=128), name="big")
    asked = []
    monkeypatch.setattr(_segment_big, "ask_blockwise", lambda *a: asked.append(a))
    c = _run(w, qtbot, layer)
    assert not asked  # a big lazy image goes block by block without asking
    (masks,) = _layers.find_outputs(viewer.layers, layer)  # no flow or probability layers
    assert isinstance(masks, napari.layers.Labels) and _layers.role_of(masks) == "masks"
    assert isinstance(masks.data, zarr.Array)  # lazy: read from disk as napari draws
    params = masks.metadata[_layers.META_KEY]["params"]
    assert params["blockwise"] and params["zarr"].startswith(str(small_blocks))
    lab = np.asarray(zarr.open_array(params["zarr"], mode="r"))
    assert lab.shape == image.shape and lab.dtype == np.int32
    assert params["n_objects"] == len(np.unique(lab)) - 1 > 50
    stages = [e.stage for e in c.segment_job.events]
    assert {"prepare", "blocks", "merge", "write"} <= set(stages)
    blocks = [e for e in c.segment_job.events if e.stage == "blocks"]
    assert blocks[-1].done == blocks[-1].total == 9  # 3 x 3 blocks of 96 on 256 x 256
    assert "block by block" in c.status.value and params["zarr"] in c.status.value
    # the same objects as the in-memory path
    ref = w.models.load(str(_bundled("nuclei")), "cpu").segment(image, diameter=DIAM).masks
    assert average_precision(ref, lab, thresholds=(0.5,))[0] >= 0.95
    # no flows: a new threshold says so instead of silently doing nothing
    c.cellprob.value = 1.0
    assert c.status.value == _segment_big.NO_FLOWS
    assert c.session.current(layer) is None and c.session.current_blocks(layer).masks is masks
    # a brush stroke is saved into the zarr file
    masks.paint((10, 10), 999, refresh=True)
    assert zarr.open_array(params["zarr"], mode="r")[10, 10] == 999


def test_multiscale_ome_zarr_layer_gets_a_multiscale_label_image(
        make_napari_viewer, qtbot, monkeypatch, small_blocks, image):
    import dask.array as da
    import zarr
    from napari.layers._source import layer_source

    path = small_blocks / "img.zarr"
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    g.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": p, "coordinateTransformations": [
            {"type": "scale", "scale": [s, s]}]} for p, s in (("0", 1.0), ("1", 2.0))]}]
    g.create_array("0", shape=image.shape, chunks=(128, 128), dtype=image.dtype)[...] = image
    g.create_array("1", shape=(128, 128), chunks=(128, 128), dtype=image.dtype)[...] = \
        image[::2, ::2]
    viewer, w = _viewer(make_napari_viewer, monkeypatch, small_blocks)
    with layer_source(path=str(path)):
        layer = viewer.add_image([da.from_zarr(str(path / p)) for p in ("0", "1")],
                                 multiscale=True, name="slide")
    c = _run(w, qtbot, layer)
    (masks,) = _layers.find_outputs(viewer.layers, layer)
    assert masks.multiscale and len(masks.data) == 2
    assert [tuple(d.shape) for d in masks.data] == [image.shape, (128, 128)]
    assert masks.metadata[_layers.META_KEY]["params"]["zarr"] == \
        str(path / "labels" / "flowseg" / "0")
    assert dict(zarr.open_group(str(path), mode="r")["labels"].attrs)["labels"] == ["flowseg"]
    assert "pyramid" in [e.stage for e in c.segment_job.events]
    # the diameter estimate of a big image reads a central window only
    crop, cax = _segment_big.estimate_crop(layer.data[0], None, None, size=64)
    assert crop.shape == (64, 64) and cax is None
    assert np.array_equal(crop, image[96:160, 96:160])


def test_cancel_stops_the_run_and_leaves_no_output(make_napari_viewer, qtbot, monkeypatch,
                                                   small_blocks, image):
    import dask.array as da

    monkeypatch.setitem(run.DEFAULT_BLOCK_SIZE, 2, 48)  # 36 blocks: time to cancel
    viewer, w = _viewer(make_napari_viewer, monkeypatch, small_blocks)
    layer = viewer.add_image(da.from_array(image, chunks=128), name="big")
    c = w.controls
    viewer.layers.selection.active = layer
    c.model.value = str(_bundled("nuclei"))
    c.diameter.value = DIAM
    assert w.run() is not None
    qtbot.waitUntil(lambda: any(e.stage == "blocks" for e in c.segment_job.events),
                    timeout=120000)
    assert c.cancel_btn.enabled
    c.cancel_btn.native.click()
    qtbot.waitUntil(lambda: not c.busy, timeout=120000)
    assert c.status.value == "Cancelled."
    assert _layers.find_outputs(viewer.layers, layer) == []
    assert _zarrs(small_blocks) == []  # partial labels and scratch removed


@pytest.mark.parametrize("answer", [_segment_big.CANCEL, _segment_big.BLOCKWISE,
                                    _segment_big.IN_MEMORY])
def test_memory_check_offers_block_by_block(make_napari_viewer, qtbot, monkeypatch,
                                            small_blocks, image, answer):
    viewer, w = _viewer(make_napari_viewer, monkeypatch, small_blocks)
    layer = viewer.add_image(image, name="img")  # numpy: in memory unless memory is short
    monkeypatch.setattr(memory, "available_memory", lambda: 2 ** 20)  # 1 MB free
    asked = []

    def ask(parent, est, name):
        asked.append((est, name))
        return answer

    monkeypatch.setattr(_segment_big, "ask_blockwise", ask)
    c = w.controls
    viewer.layers.selection.active = layer
    c.model.value = str(_bundled("nuclei"))
    c.diameter.value = DIAM
    worker = w.run()
    (est, name), = asked
    assert name == "img" and not est.fits and est.working > 2 ** 28
    assert "needs about" in est.message() and "1 MB are free" in est.message()
    if answer == _segment_big.CANCEL:
        assert worker is None and "not run" in c.status.value
        assert _layers.find_outputs(viewer.layers, layer) == []
        return
    qtbot.waitUntil(lambda: not c.busy, timeout=120000)
    roles = sorted(_layers.role_of(ly) for ly in _layers.find_outputs(viewer.layers, layer))
    if answer == _segment_big.BLOCKWISE:
        assert roles == ["masks"] and len(_zarrs(small_blocks)) == 1
    else:
        assert roles == ["cellprob", "flow_rgb", "flows", "masks"]
        assert _zarrs(small_blocks) == []
