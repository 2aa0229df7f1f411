"""Bad inputs in napari (issue 23): a clear message in the status line, never a half-made
layer; pickers only offer valid axes; "estimate" refuses empty images; writers say why.
Runs under xvfb-run."""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from test_napari_widget import _wait_run, _widget

from flowseg import _layers
from flowseg._writer import LabelWriteError

RNG = np.random.default_rng(0)


def _outputs(viewer, layer):
    return sorted(_layers.role_of(ly) for ly in _layers.find_outputs(viewer.layers, layer))


@pytest.fixture
def panel(make_napari_viewer, model_dir, monkeypatch):
    from flowseg import _segment_panel

    viewer, w = _widget(make_napari_viewer)
    c = w.controls
    c.model.value = str(model_dir / "tiny.pt")
    shown = []
    monkeypatch.setattr(_segment_panel, "show_error", shown.append)
    return viewer, w, c, shown


def test_images_without_cells_give_an_empty_result_and_say_why(panel, qtbot):
    viewer, w, c, shown = panel
    rgba = np.ones((64, 64, 4), np.float32)
    rgba[..., 0] = 0.0  # the red channel (the default cytoplasm channel) is empty
    rgba[..., 1:3] = RNG.random((64, 64, 2))
    cases = [("zeros", np.zeros((64, 64), np.float32), {}, "0 cells: the image is all 0"),
             ("one pixel", np.ones((1, 1), np.float32), {}, "only 1 x 1 pixels"),
             ("rgba", rgba, {"rgb": True},
              ("0 cells: the cytoplasm channel (red) is all 0, nothing to segment; choose "
               "another channel"))]
    for name, data, kw, words in cases:
        layer = viewer.add_image(data, name=name, **kw)
        assert c.image.value is layer
        c.run()
        _wait_run(qtbot, w)
        assert words in c.status.value, (name, c.status.value)
        # a whole result: masks with 0 cells, no (broken, empty) flow vectors
        assert _outputs(viewer, layer) == ["cellprob", "flow_rgb", "masks"], name
        res = c.session.current(layer)
        assert res is not None and np.asarray(res.masks.data).max() == 0
        # the thresholds still work on it
        c.cellprob.value = -3.0
        qtbot.waitUntil(lambda: not c._debounce.isActive())
        _wait_run(qtbot, w)
        assert c.status.value.startswith("0 cells (thresholds updated")
        assert res.seg.params["cellprob_threshold"] == -3.0
        c.cellprob.value = 0.0
        qtbot.waitUntil(lambda: not c._debounce.isActive())
        _wait_run(qtbot, w)
    assert shown == []


def test_bad_images_fail_cleanly(panel, qtbot):
    viewer, w, c, shown = panel
    nan = RNG.random((64, 64)).astype(np.float32)
    nan[:4, :4] = np.nan
    layer = viewer.add_image(nan, name="nan")
    n_layers = len(viewer.layers)
    c.run()
    _wait_run(qtbot, w)
    assert c.status.value == ("Failed: image contains 16 NaN value(s) in the selected channels; "
                              "replace them (e.g. numpy.nan_to_num) before segmenting")
    assert shown and "InputError" not in shown[-1]
    assert len(viewer.layers) == n_layers and c.session.current(layer) is None
    # 5-D: the pickers cannot make Y, X of it: refused before any work
    viewer.add_image(np.zeros((2, 3, 5, 16, 16), np.float32), name="5d")
    assert c.run() is None and "choose which axis" in shown[-1]


def test_axis_pickers_offer_only_valid_axes(panel):
    viewer, w, c, shown = panel
    viewer.add_image(RNG.random((64, 385)).astype(np.float32), name="wide")
    assert c.channel_axis.choices == (None,) and c.z_axis.choices == (None,)
    vol = viewer.add_image(RNG.random((6, 2, 40, 30)).astype(np.float32), name="vol")
    assert (c.channel_axis.value, c.z_axis.value) == (1, 0)
    assert c.channel_axis.choices == (None, 1)  # axis 0 is Z; 40 and 30 are spatial
    assert 1 not in c.z_axis.choices and set(c.z_axis.choices) == {None, 0, 2, 3}
    c.channel_axis.value = None  # Z may now also be axis 1 ...
    assert 1 in c.z_axis.choices
    c.z_axis.value = 1  # ... which the channel picker then leaves out
    assert 1 not in c.channel_axis.choices and 0 in c.channel_axis.choices
    rgb = viewer.add_image(RNG.random((32, 32, 3)).astype(np.float32), name="rgb", rgb=True)
    assert c.image.value is rgb and c.z_axis.choices == (None,)
    # settings that slipped past the pickers (layer metadata) are refused with a reason
    vol.metadata["flowseg_axes"] = {"channel_axis": 2, "z_axis": 0}
    from flowseg._segment_request import default_settings, make_request

    with pytest.raises(ValueError, match="axis 2 has 40 entries: that is a spatial axis"):
        make_request(vol, default_settings(vol, model="m"), device="cpu", augment=False,
                     mask=c.mask_params())


def test_estimate_refuses_an_empty_image(panel, qtbot):
    viewer, w, c, shown = panel
    viewer.add_image(np.zeros((64, 64), np.float32), name="zeros")
    c.diameter.value = 23.0
    c.estimate_diameter()
    _wait_run(qtbot, w)
    assert c.status.value == ("Failed: cannot estimate the cell diameter: the image is all 0 "
                              "(no cells to measure)")
    assert c.diameter.value == 23.0


def test_no_half_made_result_when_a_layer_cannot_be_added(panel, qtbot, monkeypatch):
    viewer, w, c, shown = panel
    layer = viewer.add_image(RNG.random((48, 48)).astype(np.float32), name="img")
    c.run()
    _wait_run(qtbot, w)
    first = c.session.current(layer)
    assert first is not None
    real = _layers.output_layer_data

    def last_one_broken(*args, **kw):  # napari refuses the last layer (the flow colour)
        out = real(*args, **kw)
        data, meta, kind = out[-1]
        return [*out[:-1], (np.array([["not an image"]], dtype=object), meta, kind)]

    monkeypatch.setattr(_layers, "output_layer_data", last_one_broken)
    n_layers, names = len(viewer.layers), [ly.name for ly in viewer.layers]
    c.run()
    _wait_run(qtbot, w)
    assert c.status.value.startswith("Failed:")
    # the viewer as it was: the earlier result's layers, nothing of the failed run
    assert len(viewer.layers) == n_layers and c.session.current(layer) is first
    assert all(ly in viewer.layers for ly in first.layers.values())
    assert [ly.name for ly in viewer.layers] == names
    monkeypatch.undo()
    c.run()  # and the next run replaces the first result, under the same names
    _wait_run(qtbot, w)
    assert _outputs(viewer, layer) == sorted(first.layers)
    assert [ly.name for ly in viewer.layers] == names
    assert c.session.current(layer) is not first


def test_writers_say_why_in_napari(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    vol = viewer.add_labels(RNG.integers(0, 5, (3, 8, 8)).astype(np.int32), name="vol")
    viewer.layers.selection = {vol}
    with pytest.raises(LabelWriteError, match="PNG holds 2D label images only"):
        viewer.layers.save(str(tmp_path / "vol.png"), selected=True, plugin="napari-flowseg")
    assert list(tmp_path.iterdir()) == []
    (out,) = viewer.layers.save(str(tmp_path / "vol.tif"), selected=True,
                                plugin="napari-flowseg")
    assert out.endswith("vol.tif")
