"""The Edit tab: delete / merge cells by clicking, outlines, measurements and CSV export."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from test_napari_widget import OracleModel, _use_oracle, _widget

from flowseg._edit_tools import CLICK_MODES
from flowseg._measure import measure, write_csv
from flowseg.engine.data.synthetic import make_sample


@pytest.fixture
def sample():
    return make_sample(kind="nuclei", shape=(96, 96), diameter=16, seed=3)


def _click(layer, yx):
    """A mouse press at data point ``yx``, dispatched the way napari does it."""
    from napari.utils.interactions import mouse_press_callbacks

    event = SimpleNamespace(type="mouse_press", position=tuple(float(v) for v in yx),
                            view_direction=None, dims_displayed=[0, 1], modifiers=[],
                            button=1, is_dragging=False, handled=False)
    mouse_press_callbacks(layer, event)


def _centre(data, label):
    ys, xs = np.nonzero(data == label)
    k = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    return ys[k], xs[k]


def test_delete_merge_by_click_undo_and_kept_as_corrections(make_napari_viewer, model_dir,
                                                            sample, qtbot):
    viewer, w = _widget(make_napari_viewer)
    img = viewer.add_image(sample.image[..., 0], name="nuc")
    _use_oracle(w, OracleModel(sample.labels))
    w.controls.diameter.value = 16
    with qtbot.waitSignal(w.segmented, timeout=60000) as sig:
        w.run()
    qtbot.waitUntil(lambda: not w.controls.busy, timeout=30000)
    masks = sig.args[1]
    ed = w.edit_panel
    assert ed.layer.value is masks and ed.image.value is img  # follows the active labels
    first = np.array(masks.data, copy=True)
    ids = [int(i) for i in np.unique(first) if i]
    a, b, gone = ids[:3]
    # delete by click
    ed.click.value = CLICK_MODES[1]
    assert masks.mode == "pan_zoom"  # a click must not also paint
    _click(masks, _centre(first, gone))
    assert not (masks.data == gone).any() and "Deleted" in ed.info.value
    _click(masks, (0.0, 0.0) if first[0, 0] == 0 else _centre(first == 0, True))
    assert "background" in ed.info.value
    # merge: two clicks
    ed.click.value = CLICK_MODES[2]
    _click(masks, _centre(first, a))
    _click(masks, _centre(first, b))
    assert not (masks.data == b).any()
    assert ((masks.data == a) == ((first == a) | (first == b))).all()
    # the edits are corrections: a threshold change keeps them
    w.controls.cellprob.value = 1.0
    qtbot.wait(250)
    qtbot.waitUntil(lambda: not w.controls.busy, timeout=30000)
    assert not masks.data[first == gone].any()
    assert (masks.data[(first == a) | (first == b)] == a).all()
    # napari's undo reverts them
    while masks._undo_history:
        masks.undo()
    assert np.array_equal(masks.data, first)
    # tools off: the callback is gone
    ed.click.value = CLICK_MODES[0]
    assert ed._on_click not in masks.mouse_drag_callbacks
    # outlines
    ed.outlines.value = True
    assert masks.contour == 2
    ed.outlines.value = False
    assert masks.contour == 0


def test_measure_table_features_and_csv(make_napari_viewer, model_dir, sample, qtbot, tmp_path):
    viewer, w = _widget(make_napari_viewer)
    img = viewer.add_image(sample.image[..., 0], name="nuc")
    lab = viewer.add_labels(sample.labels, name="truth")
    ed = w.edit_panel
    assert ed.layer.value is lab
    ed.image.value = img
    with pytest.raises(ValueError, match="nothing measured"):
        ed.save_csv(tmp_path / "x.csv")
    table = ed.measure()
    ids = np.unique(sample.labels)[1:]
    assert list(table["label"]) == list(ids)
    k = 5
    px = sample.labels == ids[k]
    assert table["area_px"][k] == px.sum()
    assert table["mean_intensity"][k] == pytest.approx(sample.image[..., 0][px].mean())
    assert table["centroid_y"][k] == pytest.approx(np.nonzero(px)[0].mean())
    assert ed.save_btn.enabled and ed.table.shape == (len(ids), len(table))
    assert list(lab.features["area_px"]) == list(table["area_px"])  # shown on hover
    out = ed.save_csv(tmp_path / "cells.csv")
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["label", "area_px", "centroid_y", "centroid_x", "mean_intensity"]
    assert len(rows) == len(ids) + 1 and int(rows[k + 1][1]) == px.sum()


def test_measure_channels_3d_and_errors(tmp_path):
    lab = np.zeros((3, 10, 12), np.int32)
    lab[1, 2:5, 3:7] = 4
    img = np.stack([np.full(lab.shape, 2.0), np.arange(lab.size, dtype=float).reshape(lab.shape)])
    t = measure(lab, img, channel_axis=0)
    assert list(t) == ["label", "area_px", "centroid_z", "centroid_y", "centroid_x",
                       "mean_intensity_ch0", "mean_intensity_ch1"]
    assert t["area_px"][0] == 12 and t["centroid_z"][0] == 1.0
    assert t["mean_intensity_ch0"][0] == 2.0
    assert t["mean_intensity_ch1"][0] == pytest.approx(img[1][lab == 4].mean())
    with pytest.raises(ValueError, match="does not match the labels"):
        measure(lab, img[:, :2], channel_axis=0)
    with pytest.raises(ValueError, match="integers"):
        measure(lab.astype(float))
    path = write_csv(measure(lab), tmp_path / "t.csv")
    header = path.read_text().splitlines()[0]
    assert header == "label,area_px,centroid_z,centroid_y,centroid_x"
