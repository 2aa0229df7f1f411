"""The Train tab: fine-tune on corrected masks in a real napari viewer (under xvfb-run)."""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from flowseg import _layers  # noqa: E402
from flowseg.engine.synthetic import make_sample  # noqa: E402


@pytest.fixture
def spy_train(monkeypatch):
    import flowseg.engine.train as tr

    calls = []
    orig = tr.train

    def spy(model, images, labels, **kw):
        calls.append({"images": [np.array(x) for x in images],
                      "labels": [np.array(y) for y in labels], **kw})
        return orig(model, images, labels, **kw)

    monkeypatch.setattr(tr, "train", spy)
    return calls


def _segmented_viewer(make_napari_viewer, qtbot):
    """A viewer with a sample image segmented by the ground-truth oracle (fast)."""
    from test_napari_widget import OracleModel

    s = make_sample(kind="nuclei", shape=(128, 128), diameter=16, seed=9)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-flowseg", "Segment cells")
    img = viewer.add_image(s.image[..., 0], name="nuclei")
    w._model_cache[(str(w.controls.model.value), "cpu")] = OracleModel(s.labels)
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=30000)
    (masks,) = _layers.find_outputs(viewer.layers, img, roles=("masks",))
    return viewer, w, img, masks


def test_train_on_corrected_masks_then_segment(make_napari_viewer, model_dir, qtbot, spy_train):
    viewer, w, img, masks = _segmented_viewer(make_napari_viewer, qtbot)
    tp = w.train_panel
    assert tp.pairs.value == [(img, masks)]  # our corrected output is offered by default
    # correct the masks: erase one cell, paint a new one
    data = masks.data.copy()
    victim = int(np.unique(data[data > 0])[0])
    data[data == victim] = 0
    yy, xx = np.mgrid[:128, :128]
    new_id = int(data.max()) + 1
    data[((yy - 8) ** 2 + (xx - 120) ** 2) < 36] = new_id
    masks.data = data
    tp.epochs.value = 2
    tp.model_name.value = "nuclei-fixed"
    tp.train()
    qtbot.waitUntil(lambda: tp.worker is None, timeout=120000)
    new = model_dir / "nuclei-fixed.pt"
    assert new.is_file(), tp.status.value
    (call,) = spy_train
    assert call["epochs"] == 2 and call["recipe"] == "finetune"
    np.testing.assert_array_equal(call["labels"][0], data)
    assert victim not in call["labels"][0] and new_id in call["labels"][0]
    assert call["images"][0].shape == (128, 128, 1)
    assert [ev.stage for ev in tp.progress.events].count("epoch") == 2
    assert len(tp.losses) == 2 and all(np.isfinite(tp.losses))
    # the new model is listed and selected, and it segments
    assert w.controls.model.value == str(new)
    assert "nuclei-fixed" in [lab for lab, _ in w.model_choices()]
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60000)
    (out,) = _layers.find_outputs(viewer.layers, img, roles=("masks",))
    assert out.metadata["flowseg"]["params"]["model"] == str(new)
    assert out.data.shape == img.data.shape


def test_train_cancel_keeps_a_model(make_napari_viewer, model_dir, qtbot, spy_train):
    viewer, w, img, masks = _segmented_viewer(make_napari_viewer, qtbot)
    tp = w.train_panel
    tp.epochs.value = 500
    tp.model_name.value = "stopped"
    tp.train()
    qtbot.waitUntil(lambda: any(ev.stage == "train" for ev in tp.progress.events), timeout=60000)
    tp.cancel_btn.clicked()
    qtbot.waitUntil(lambda: tp.worker is None, timeout=60000)
    assert (model_dir / "stopped.pt").is_file()
    assert "cancelled" in tp.status.value
    assert tp.train_btn.enabled and not tp.cancel_btn.enabled
    assert w.controls.model.value == str(model_dir / "stopped.pt")


def test_train_input_errors(make_napari_viewer, model_dir, qtbot, monkeypatch):
    from flowseg import _train_widget

    shown = []
    monkeypatch.setattr(_train_widget, "show_error", shown.append)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-flowseg", "Segment cells")
    tp = w.train_panel
    assert tp.train() is None and "no training pairs" in shown[-1]
    img = viewer.add_image(np.zeros((64, 64), np.float32), name="img")
    lab = viewer.add_labels(np.zeros((64, 64), np.int32), name="lab")
    tp.add_pair(img, lab)
    tp.model_name.value = "bad name!"
    assert tp.train() is None and "not valid" in shown[-1]
    tp.model_name.value = "tiny"
    assert tp.train() is None and "already exists" in shown[-1]
    tp.model_name.value = "fresh"
    assert tp.train() is None and "no labels" in shown[-1]
    other = viewer.add_labels(np.zeros((32, 32), np.int32), name="small")
    tp.add_pair(img, other)
    assert tp.train() is None and "do not match" in shown[-1]


def test_pairs_from_3d_stack_use_current_or_labelled_slices(make_napari_viewer, model_dir):
    from flowseg._train_widget import SLICE_MODES, pair_arrays

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    img = viewer.add_image(rng.random((2, 6, 32, 32)).astype(np.float32), name="stack",
                           metadata={"flowseg_axes": {"channel_axis": 0, "z_axis": 1}})
    lab = np.zeros((6, 32, 32), np.int32)
    lab[2, 5:10, 5:10] = 1
    lab[4, 20:25, 20:25] = 2
    params = {"channel_axis": 0, "z_axis": 1, "channels": [1, 0]}
    labels = viewer.add_labels(lab, name="fixed", metadata={"flowseg": {"params": params}})
    viewer.dims.set_current_step(1, 4)  # world axis 1 = the labels' Z
    (x, y), = pair_arrays(viewer, img, labels, SLICE_MODES[0])
    np.testing.assert_array_equal(y, lab[4])
    np.testing.assert_allclose(x[..., 0], img.data[1, 4])  # cytoplasm = channel 1
    np.testing.assert_allclose(x[..., 1], img.data[0, 4])  # nucleus = channel 0
    pairs = pair_arrays(viewer, img, labels, SLICE_MODES[1])
    assert [int(p[1].max()) for p in pairs] == [1, 2]
