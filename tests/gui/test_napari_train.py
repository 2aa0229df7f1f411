"""The Train tab: the Cellpose 2.0 loop in a real napari viewer (run under xvfb-run).

Add corrected masks to a training set on disk, open and segment the next image, train on
the set within a time budget, get the new model selected and compared with the old one on
the held-out image; reopen the set in a new dock.  Models are width 8 and images 96 px so
the loop takes seconds on a shared CPU.
"""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from flowseg import _layers
from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.progress import ProgressEvent

SEGMENT_TIMEOUT = 60000


@pytest.fixture
def image_folder(tmp_path):
    """Three small nuclei images as TIFF files, with their true labels by file stem."""
    import tifffile

    folder = tmp_path / "images"
    folder.mkdir()
    truth = {}
    for k, name in enumerate(("a", "b", "c")):
        s = make_sample(kind="nuclei", shape=(96, 96), diameter=16, seed=20 + k)
        tifffile.imwrite(folder / f"{name}.tif", (s.image[..., 0] * 1000).astype(np.uint16))
        truth[name] = s.labels.astype(np.int32)
    return folder, truth


@pytest.fixture
def errors(monkeypatch):
    from flowseg import _loop_panel, _train_panel

    shown = []
    for mod in (_loop_panel, _train_panel):
        monkeypatch.setattr(mod, "show_error", shown.append)
    return shown


def _dock(make_napari_viewer, model_dir):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-flowseg", "Segment cells")
    w.refresh_models(select=str(model_dir / "tiny.pt"))
    return viewer, w


def _next_and_correct(qtbot, w, truth):
    """Next image (segmented by the dock), then 'correct' its masks to the truth."""
    loop = w.train_panel.loop
    with qtbot.waitSignal(w.segmented, timeout=SEGMENT_TIMEOUT) as sig:
        layer = loop.next_image()
    image, masks = sig.args
    assert image == layer
    # (napari hands plugins proxies of its layers: compare with ==, not `is`)
    assert loop.labels.value == masks  # the new result is offered
    masks.data = truth[layer.name]  # the user's corrections
    return layer, masks


def test_the_whole_loop(make_napari_viewer, model_dir, image_folder, tmp_path, qtbot, errors):
    folder, truth = image_folder
    _viewer, w = _dock(make_napari_viewer, model_dir)
    tp = w.train_panel
    loop = tp.loop
    loop.set_folder.value = tmp_path / "my set"  # a new folder: the set is made
    assert loop.trainset is not None and (tmp_path / "my set").is_dir()
    assert "empty" in loop.set_info.text()
    loop.image_folder.value = folder
    # image 1: next image -> segmented by the tiny model -> corrected -> added
    a, _ = _next_and_correct(qtbot, w, truth)
    assert a.name == "a"
    (pair,) = loop.add_to_set()
    assert pair.name == "a" and pair.info["source"] == str(folder / "a.tif")
    # image 2: the next image is 'b' (a is open and in the set), on top of 'a'
    b, _ = _next_and_correct(qtbot, w, truth)
    assert b.name == "b" and w.viewer.layers.index(b) > w.viewer.layers.index(a)
    loop.add_to_set()
    assert loop.trainset.names() == ["a", "b"] and loop.trainset.held_out() == "a"
    assert next(iter(loop.set_pairs.choices)).startswith("a  (held out")
    # train: the whole set but the held-out image, within a short time budget
    old = w.current_model_name()
    tr = tp.training
    assert tr.model_name.value == "my_set-1"
    tr.budget.value = 0.2  # 12 s
    with qtbot.waitSignal(tr.job.finished, timeout=120000):
        tr.train()
    assert errors == []
    new = model_dir / "my_set-1.pt"
    assert new.is_file(), tr.result.text()
    assert w.current_model_name() == str(new) != old  # selected in the Segment tab
    assert "Held-out image 'a': AP@0.5 old model " in tr.result.text()
    assert "→ new model " in tr.result.text()
    # progress in plain words, one bar, and a loss curve
    texts = [tr.job.describe(ev) for ev in tr.job.events]
    assert any(t.startswith("Training") and ", loss " in t for t in texts)
    assert {t.split()[0].rstrip(",") for t in texts} <= {
        "Reading", "Preparing", "Checking", "Training", "Measuring", "Comparing"}
    assert tr.plot.epochs[0] == 1 and len(tr.plot.losses) >= 1
    assert all(np.isfinite(tr.plot.losses))
    assert tr.job.label.text().startswith("Done in")
    assert tr.model_name.value == "my_set-2"  # ready for the next round
    # the next image is segmented with the new model
    with qtbot.waitSignal(w.segmented, timeout=SEGMENT_TIMEOUT) as sig:
        c = loop.next_image()
    assert c.name == "c" and sig.args[0] == c
    assert sig.args[1].metadata["flowseg"]["params"]["model"] == str(new)
    # next session: a new viewer and dock reopen the set and list its pairs
    _viewer2, w2 = _dock(make_napari_viewer, model_dir)
    loop2 = w2.train_panel.loop
    loop2.set_folder.value = tmp_path / "my set"
    assert [c.split()[0] for c in loop2.set_pairs.choices] == ["a", "b"]
    assert "'a' is held out" in loop2.set_info.text()
    tr2 = w2.train_panel.training
    assert tr2.model_name.value == "my_set-2"
    tr2.model_name.value = "typed"  # a name the user typed stays when another set opens
    loop2.set_folder.value = tmp_path / "other set"
    assert tr2.model_name.value == "typed"


def test_next_image_skips_done_files_and_says_when_finished(
        make_napari_viewer, model_dir, image_folder, tmp_path, qtbot, errors, monkeypatch):
    from flowseg import _loop_panel
    from flowseg.engine.training.trainset import TrainingSet

    folder, truth = image_folder
    TrainingSet(tmp_path / "set").add(np.zeros((96, 96), np.uint16), truth["a"], "a",
                                      source=str(folder / "a.tif"))
    _viewer, w = _dock(make_napari_viewer, model_dir)
    loop = w.train_panel.loop
    assert loop.next_image() is None and "image folder" in errors[-1]
    loop.set_folder.value = tmp_path / "set"
    loop.image_folder.value = folder
    infos = []
    monkeypatch.setattr(_loop_panel, "show_info", infos.append)
    runs = []
    monkeypatch.setattr(w, "run", runs.append)  # the loop hands the layer to the dock
    assert loop.next_image().name == "b"  # 'a' is in the set
    assert loop.next_image().name == "c"  # 'b' is open
    assert [ly.name for ly in runs] == ["b", "c"]
    assert loop.next_image() is None and "every image" in infos[-1]
    loop.image_folder.value = tmp_path / "set"
    assert loop.next_image() is None and "training set itself" in errors[-1]


def test_add_to_set_errors_and_3d_slices(make_napari_viewer, model_dir, tmp_path, errors):
    viewer, w = _dock(make_napari_viewer, model_dir)
    loop = w.train_panel.loop
    assert loop.add_to_set() == [] and "training-set folder" in errors[-1]
    loop.set_folder.value = tmp_path / "set"
    assert loop.add_to_set() == [] and "no labels layer" in errors[-1]
    img = viewer.add_image(np.random.default_rng(0).random((6, 32, 32)).astype(np.float32),
                           name="stack")
    lab = np.zeros((6, 32, 32), np.int32)
    labels = viewer.add_labels(lab, name="drawn")
    w.train_panel.reset_choices()
    loop.labels.value = labels
    assert loop.add_to_set() == [] and "hold no objects" in errors[-1]
    lab[0, 2:8, 2:8] = 1
    lab[2, 10:20, 10:20] = 4
    labels.data = lab
    viewer.layers.selection.active = img  # the dock's image: drawn labels have no source tag
    loop.slices.value = "all slices with labels"
    pairs = loop.add_to_set()
    assert [p.name for p in pairs] == ["stack_z000", "stack_z002"]
    _, stored, _ = loop.trainset.load()
    np.testing.assert_array_equal(stored[1], lab[2])
    assert pairs[1].info["source"] == "stack [z=2]"
    small = viewer.add_labels(np.zeros((5, 5), np.int32), name="small")
    viewer.layers.selection.active = small  # the labels being edited are offered
    assert loop.labels.value == small
    assert loop.add_to_set() == [] and "do not match" in errors[-1]


def test_train_input_errors(make_napari_viewer, model_dir, tmp_path, errors):
    _viewer, w = _dock(make_napari_viewer, model_dir)
    tr = w.train_panel.training
    assert tr.train() is None and "training-set folder" in errors[-1]
    w.train_panel.loop.set_folder.value = tmp_path / "set"
    assert tr.train() is None and "is empty" in errors[-1]
    from flowseg.engine.training.trainset import TrainingSet

    lab = np.zeros((32, 32), np.int32)
    lab[4:12, 4:12] = 1
    TrainingSet(tmp_path / "set").add(np.ones((32, 32), np.float32), lab, "x")
    w.train_panel.loop.open_set()
    tr.model_name.value = "bad name!"
    assert tr.train() is None and "not valid" in errors[-1]
    tr.model_name.value = "tiny"
    assert tr.train() is None and "already exists" in errors[-1]


def test_cancel_keeps_the_best_model(make_napari_viewer, model_dir, tmp_path, qtbot, errors):
    from flowseg.engine.training.trainset import TrainingSet

    ts = TrainingSet(tmp_path / "set")
    for k in range(2):
        s = make_sample(kind="nuclei", shape=(96, 96), diameter=16, seed=k)
        ts.add(s.image[..., 0], s.labels, f"n{k}")
    _viewer, w = _dock(make_napari_viewer, model_dir)
    w.train_panel.loop.set_folder.value = tmp_path / "set"
    tr = w.train_panel.training
    tr.budget.value = 10.0
    tr.model_name.value = "stopped"
    tr.train()
    qtbot.waitUntil(lambda: any(ev.stage == "train" for ev in tr.job.events), timeout=60000)
    with qtbot.waitSignal(tr.job.finished, timeout=60000):
        tr.cancel_btn.native.click()
    assert (model_dir / "stopped.pt").is_file()
    assert "Stopped early" in tr.result.text() and "cancelled" in tr.result.text()
    assert w.current_model_name() == str(model_dir / "stopped.pt")
    assert tr.train_btn.enabled and not tr.cancel_btn.native.isEnabled()


@pytest.mark.parametrize("info, stage, done, total, text", [
    ({"epoch": 2, "loss": 0.3123, "elapsed": 130.0, "budget": 300.0}, "train", 5, 50,
     "Training 2/5 min, loss 0.31"),
    ({"epoch": 1, "loss": 0.05, "elapsed": 12.4, "budget": 60.0}, "train", 1, 9,
     "Training 12/60 s, loss 0.050"),
    ({"loss": 1.5}, "epoch", 3, 100, "Training, epoch 3, loss 1.50"),
    ({}, "read", 1, 4, "Reading the training set 1/4"),
    ({}, "flows", 2, 4, "Preparing the training images 2/4"),
])
def test_training_words(info, stage, done, total, text):
    from flowseg._train_panel import training_words

    assert training_words(ProgressEvent(stage, done, total, "", info)) == text


def test_loss_plot_draws_points(qtbot):
    from flowseg._loss_plot import LossPlot

    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(260, 100)
    empty = plot.grab().toImage()
    for e, v in ((1, 2.0), (2, 1.2), (3, 0.9)):
        plot.add_point(e, v)
    plot.add_point(3, 0.8)  # a repeated epoch replaces its point
    assert plot.epochs == [1, 2, 3] and plot.losses == [2.0, 1.2, 0.8]
    assert plot.grab().toImage() != empty
    plot.clear()
    assert plot.epochs == [] and plot.losses == []


def test_pairs_from_3d_stack_use_current_or_labelled_slices(make_napari_viewer):
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
    (x, y, z), = pair_arrays(viewer, img, labels, SLICE_MODES[0])
    assert z == 4
    np.testing.assert_array_equal(y, lab[4])
    np.testing.assert_allclose(x[..., 0], img.data[1, 4])  # cytoplasm = channel 1
    np.testing.assert_allclose(x[..., 1], img.data[0, 4])  # nucleus = channel 0
    pairs = pair_arrays(viewer, img, labels, SLICE_MODES[1])
    assert [int(p[1].max()) for p in pairs] == [1, 2] and [p[2] for p in pairs] == [2, 4]
    assert _layers.role_of(labels) is None
