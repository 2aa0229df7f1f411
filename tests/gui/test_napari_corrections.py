"""Corrections are never lost: edits through napari's Labels API survive re-runs and sliders.

Runs under xvfb-run.  The network is replaced by the oracle of ``test_napari_widget`` (exact
flows from ground truth), so masks still come from the engine's dynamics and thresholds.
"""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from test_napari_widget import OracleModel, _use_oracle, _widget

from flowseg import _layers
from flowseg._results import NEW_LAYER, UNTOUCHED
from flowseg.engine.data.synthetic import make_sample


@pytest.fixture
def sample():
    return make_sample(kind="nuclei", shape=(128, 128), diameter=16, seed=4)


def _idle(qtbot, w, timeout=30000):
    qtbot.wait(200)  # past the sliders' debounce
    qtbot.waitUntil(lambda: not w.controls.busy and not w.controls._debounce.isActive(),
                    timeout=timeout)


def _segmented(make_napari_viewer, qtbot, sample):
    viewer, w = _widget(make_napari_viewer)
    img = viewer.add_image(sample.image[..., 0], name="nuc")
    _use_oracle(w, OracleModel(sample.labels))
    w.controls.diameter.value = 16
    with qtbot.waitSignal(w.segmented, timeout=60000) as sig:
        w.run()
    _idle(qtbot, w)
    image, masks = sig.args
    assert image is img and _layers.role_of(masks) == "masks"
    return viewer, w, img, masks


def _correct(masks):
    """Three corrections with napari's own editing calls: erase, paint, grow."""
    data = np.array(masks.data, copy=True)
    ids, counts = np.unique(data[data > 0], return_counts=True)
    victim, grown = (int(i) for i in ids[np.argsort(counts)[-2:]])  # two big cells
    victim_px = data == victim
    masks.fill(tuple(np.argwhere(victim_px)[0]), 0)  # erase a whole cell (bucket fill)
    # paint a new cell where there is only background
    free = np.argwhere(np.pad(data == 0, 0)[4:-4, 4:-4]) + 4
    centre = next(p for p in free if not data[p[0] - 4:p[0] + 5, p[1] - 4:p[1] + 5].any())
    new_label = int(data.max()) + 1
    masks.brush_size = 5
    masks.paint(tuple(centre), new_label)
    painted = np.asarray(masks.data) == new_label
    # grow a cell by a strip of pixels (data_setitem: what scripts and our tools use)
    ys, xs = np.nonzero(data == grown)
    strip = (np.full(4, ys.max() + 1), np.arange(xs.min(), xs.min() + 4))
    masks.data_setitem(strip, grown)
    grown_px = np.asarray(masks.data) == grown
    assert victim_px.any() and painted.sum() > 5 and grown_px.sum() > (data == grown).sum()
    return {"erased": victim_px, "painted": painted, "new_label": new_label,
            "grown": grown_px, "grown_label": grown}


def _survives(data, fix):
    data = np.asarray(data)
    assert not data[fix["erased"]].any(), "an erased cell came back"
    assert (data[fix["painted"]] == fix["new_label"]).all(), "a painted cell changed"
    assert np.array_equal(data == fix["grown_label"], fix["grown"]), "a grown cell changed"


def test_fix_survives_sliders_rerun_and_undo(make_napari_viewer, model_dir, sample, qtbot):
    viewer, w, img, masks = _segmented(make_napari_viewer, qtbot, sample)
    first = np.array(masks.data, copy=True)
    fix = _correct(masks)
    c = w.controls
    assert c.after_edits.value == UNTOUCHED  # the choice is visible in the panel
    untouched = (first > 0) & ~fix["erased"] & ~np.isin(first, [fix["grown_label"]])
    # every threshold control, up and down; the fix stays, the other cells follow
    for widget, key, value in ((c.cellprob, "cellprob_threshold", 2.0),
                               (c.flow_threshold, "flow_threshold", 0.1),
                               (c.min_size, "min_size", 60),
                               (c.cellprob, "cellprob_threshold", -2.0),
                               (c.flow_threshold, "flow_threshold", 1.5),
                               (c.min_size, "min_size", 5)):
        widget.value = value
        _idle(qtbot, w)
        _survives(masks.data, fix)
        assert masks.metadata["flowseg"]["params"][key] == value
        if key == "cellprob_threshold" and value == 2.0:  # untouched cells did shrink
            assert (np.asarray(masks.data)[untouched] > 0).sum() < untouched.sum()
    assert "kept" in c.status.value
    # the other controls, then Run again: a new layer; the corrected one is left as it is
    kept = np.array(masks.data, copy=True)
    c.diameter.value = 20
    c.augment.value = True
    c.after_edits.value = NEW_LAYER
    c.after_edits.value = UNTOUCHED
    with qtbot.waitSignal(w.segmented, timeout=60000) as sig:
        w.run()
    _idle(qtbot, w)
    new_masks = sig.args[1]
    assert new_masks is not masks and masks in viewer.layers
    assert np.array_equal(masks.data, kept)
    assert len(_layers.find_outputs(viewer.layers, img, roles=("masks",))) == 2
    assert "kept" in c.status.value
    # an unedited result is replaced by the next run; the corrected layer still stays
    with qtbot.waitSignal(w.segmented, timeout=60000) as sig:
        w.run()
    _idle(qtbot, w)
    assert new_masks not in viewer.layers and masks in viewer.layers
    # napari's undo walks back through the threshold updates and the corrections
    while masks._undo_history:
        masks.undo()
    assert np.array_equal(masks.data, first)


def test_new_layer_choice_leaves_the_corrected_layer(make_napari_viewer, model_dir, sample,
                                                     qtbot):
    viewer, w, img, masks = _segmented(make_napari_viewer, qtbot, sample)
    fix = _correct(masks)
    corrected = np.array(masks.data, copy=True)
    c = w.controls
    c.after_edits.value = NEW_LAYER
    c.cellprob.value = 1.5
    _idle(qtbot, w)
    outs = _layers.find_outputs(viewer.layers, img, roles=("masks",))
    assert len(outs) == 2, [(ly.name, ly.metadata["flowseg"]["params"]) for ly in outs]
    assert np.array_equal(masks.data, corrected)
    (extra,) = [ly for ly in outs if ly is not masks]
    expected = w.controls.session.result_of(extra).seg.masks
    assert np.array_equal(extra.data, expected)
    assert extra.metadata["flowseg"]["params"]["cellprob_threshold"] == 1.5
    assert viewer.layers.selection.active is extra
    # the new layer has no edits: further moves update it in place
    c.flow_threshold.value = 1.0
    _idle(qtbot, w)
    assert len(_layers.find_outputs(viewer.layers, img, roles=("masks",))) == 2
    assert extra.metadata["flowseg"]["params"]["flow_threshold"] == 1.0
    _survives(masks.data, fix)


def test_merge_untouched_rules():
    from flowseg._session import merge_untouched

    current = np.zeros((6, 8), np.int32)
    current[1:3, 1:3] = 7  # a corrected cell
    new = np.zeros_like(current)
    new[1:4, 1:4] = 1  # the same cell, recomputed: overlaps the correction -> dropped
    new[4:6, 5:8] = 2  # an untouched cell
    prot = current > 0
    prot[0, 6] = True  # an erased pixel stays background
    new[0, 6:8] = 3  # ... and the new cell there is dropped
    out = merge_untouched(new, current, prot)
    assert (out[1:3, 1:3] == 7).all() and out[3, 3] == 0 and not out[0, 6:8].any()
    assert set(np.unique(out[4:6, 5:8])) == {8}  # renumbered after the kept labels
    with pytest.raises(ValueError, match="shapes differ"):
        merge_untouched(new[:3], current, prot)
