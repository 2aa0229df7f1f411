"""Manifest, sample data, readers and writers through a real napari viewer (xvfb-run)."""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from flowseg.engine.data.synthetic import make_labels  # noqa: E402
from flowseg.engine.io import segfile  # noqa: E402


def test_manifest_validates_and_docks(make_napari_viewer):
    import npe2

    pm = npe2.PluginManifest.from_distribution("napari-flowseg")
    assert [w.display_name for w in pm.contributions.widgets] == [
        "Segment cells", "Track cells (time-lapse)"]
    assert {s.key for s in pm.contributions.sample_data} == {"nuclei", "cells", "cells3d"}
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-flowseg", "Segment cells")
    # the plugin got this viewer (napari may hand it over behind a proxy), and the dock holds
    # the widget
    assert getattr(widget.viewer, "__wrapped__", widget.viewer) is viewer
    assert [w for w in viewer.window.dock_widgets.values() if w is widget] == [widget]
    qt = getattr(widget, "native", widget)
    assert dock.widget() is qt or dock.widget().isAncestorOf(qt)
    assert [widget.tabs.tabText(i) for i in range(widget.tabs.count())] == [
        "Segment", "Edit", "Train"]
    dock, tracker = viewer.window.add_plugin_dock_widget("napari-flowseg",
                                                         "Track cells (time-lapse)")
    assert tracker.__class__.__name__ == "TrackWidget"
    assert getattr(tracker.viewer, "__wrapped__", tracker.viewer) is viewer
    qt = getattr(tracker, "native", tracker)
    assert dock.widget() is qt or dock.widget().isAncestorOf(qt)
    assert len(viewer.window.dock_widgets) == 2


@pytest.mark.parametrize("key, shape", [("nuclei", (320, 320)), ("cells", (2, 384, 384)),
                                        ("cells3d", (2, 40, 128, 128))])
def test_sample_data(make_napari_viewer, key, shape):
    viewer = make_napari_viewer()
    (layer,) = viewer.open_sample("napari-flowseg", key)
    assert isinstance(layer, napari.layers.Image) and layer.data.shape == shape
    assert layer.metadata["sample"]["diameter"] > 5


def test_open_seg_and_masks_files(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels = make_labels((64, 80), diameter=14, seed=2)
    dP = np.random.default_rng(0).normal(size=(2, 64, 80)).astype(np.float32)
    seg = segfile.write_seg(tmp_path / "img.tif", labels, flows=dP,
                            cellprob=np.zeros((64, 80), np.float32), diameter=14)
    layers = viewer.open(seg, plugin="napari-flowseg")
    names = [ly.name for ly in layers]
    assert names[:2] == ["img.tif masks", "img.tif outlines"]
    assert any(isinstance(ly, napari.layers.Vectors) for ly in layers)
    np.testing.assert_array_equal(layers[0].data, labels)
    # write the labels back through napari's writer machinery, then read them
    path = str(tmp_path / "again_masks.tif")
    napari.save_layers(path, [layers[0]], plugin="napari-flowseg")
    (back,) = viewer.open(path, plugin="napari-flowseg")
    assert isinstance(back, napari.layers.Labels)
    np.testing.assert_array_equal(back.data, labels)
    zip_path = str(tmp_path / "rois.zip")
    napari.save_layers(zip_path, [layers[0]], plugin="napari-flowseg")
    import roifile

    assert len(roifile.roiread(zip_path)) == len(np.unique(labels)) - 1


def test_open_malicious_seg_is_refused(make_napari_viewer, tmp_path):
    target = tmp_path / "should_not_exist.txt"

    class Evil:
        def __reduce__(self):
            return (open, (str(target), "w"))

    path = tmp_path / "bad_seg.npy"
    np.save(path, {"masks": np.zeros((4, 4), np.uint16), "x": Evil()}, allow_pickle=True)
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match="could execute code"):
        viewer.open(str(path), plugin="napari-flowseg")
    assert not target.exists()
    assert len(viewer.layers) == 0
