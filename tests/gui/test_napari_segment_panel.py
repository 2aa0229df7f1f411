"""The Segment tab follows the active image, remembers settings per image, and its jobs
(segment, estimate) show progress and cancel only themselves.  Runs under xvfb-run."""

from __future__ import annotations

import time

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from test_napari_widget import OracleModel, _use_oracle, _widget

from flowseg import _layers
from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.inference.model import Model
from flowseg.engine.progress import check_cancel, report


@pytest.fixture
def sample():
    return make_sample(kind="nuclei", shape=(96, 96), diameter=16, seed=2)


class SizedOracle(OracleModel):
    """The oracle plus a size estimate that takes ``size_steps`` cancellable steps."""

    def __init__(self, labels, size_steps=3, size_delay=0.0, **kw):
        super().__init__(labels, **kw)
        self.size_steps, self.size_delay = size_steps, size_delay

    def estimate_diameter(self, image, *, channels=None, channel_axis=None, progress=None,
                          cancel=None):
        for i in range(self.size_steps):
            check_cancel(cancel)
            time.sleep(self.size_delay)
            report(progress, "size", i + 1, self.size_steps)
        return 21.0


def _idle(qtbot, w, timeout=30000):
    qtbot.waitUntil(lambda: not w.controls.busy, timeout=timeout)


def test_follows_active_image_and_restores_its_settings(make_napari_viewer, model_dir, sample,
                                                        qtbot):
    trained = Model.new(width=8, nchan=2, diam_mean=17.0, seed=1)
    trained.meta["diam_train"] = 23.5  # median diameter of its training images
    trained.save(model_dir / "trained.pt")
    viewer, w = _widget(make_napari_viewer)
    c = w.controls
    tiny, trained_path = str(model_dir / "tiny.pt"), str(model_dir / "trained.pt")
    two = np.stack([sample.image[..., 0], sample.image[..., 0] * 0.5])
    a = viewer.add_image(two, name="a")
    assert c.image.value is a and (c.channel_axis.value, c.cyto.value, c.nucleus.value) == (0, 0, 1)
    c.model.value = tiny
    assert c.diameter.value == pytest.approx(17.0)  # the model's diam_labels is offered
    c.diameter.value = 21.0
    c.cyto.value, c.nucleus.value = 1, None
    # a new image becomes the target: axes and channels of its own; model and diameter
    # as before, and the status says so
    b = viewer.add_image(sample.image[..., 0], name="b")
    assert c.image.value is b
    assert c.channel_axis.value is None and c.nucleus.value is None
    assert (c.model.value, c.diameter.value) == (tiny, 21.0)
    assert c.status.value.startswith("b: model tiny, diameter 21 px (as for 'a'")
    c.model.value = trained_path
    assert c.diameter.value == pytest.approx(23.5)  # diam_train wins over diam_labels
    # back to a: its settings come back; then b's
    viewer.layers.selection.active = a
    assert c.image.value is a
    assert (c.model.value, c.diameter.value, c.cyto.value, c.nucleus.value) == (tiny, 21.0, 1,
                                                                               None)
    viewer.layers.selection.active = b
    assert (c.model.value, c.diameter.value) == (trained_path, 23.5)
    # a layer that is not shown is run with its own remembered settings
    req = w.request(a)
    assert (req.diameter, req.channels, req.model_path) == (21.0, (1, None), tiny)
    # an output layer stands for its image
    _use_oracle(w, OracleModel(sample.labels))
    with qtbot.waitSignal(w.segmented, timeout=30000) as sig:
        w.run()
    _idle(qtbot, w)
    assert sig.args[0] is b
    viewer.layers.selection.active = a
    assert c.image.value is a and "not segmented yet" in c.status.value
    viewer.layers.selection.active = sig.args[1]
    assert c.image.value is b and "cells" in c.status.value


def test_estimate_progress_cancel_and_again(make_napari_viewer, model_dir, sample, qtbot):
    viewer, w = _widget(make_napari_viewer)
    viewer.add_image(sample.image[..., 0], name="nuc")
    c = w.controls
    _use_oracle(w, SizedOracle(sample.labels, steps=200, delay=0.05, size_steps=200,
                               size_delay=0.05))
    # bug: after any Cancel, the estimate failed at once (a shared cancel event)
    w.run()
    qtbot.waitUntil(lambda: bool(c.segment_job.events), timeout=10000)
    c.cancel_btn.native.click()
    _idle(qtbot, w, 10000)
    assert c.status.value == "Cancelled."
    c.diameter.value = 30.0
    assert w.estimate_diameter() is not None
    qtbot.waitUntil(lambda: len(c.estimate_job.events) >= 2, timeout=10000)
    assert c.cancel_btn.enabled and not c.run_btn.enabled and not c.estimate_btn.enabled
    assert not c.bar.native.isHidden() and c.bar.native.maximum() == 200
    assert c.status.value.startswith("Measuring cell size ")  # plain words, with a count
    c.cancel_btn.native.click()
    _idle(qtbot, w, 10000)
    assert c.status.value == "Cancelled." and c.diameter.value == 30.0
    assert c.run_btn.enabled and c.estimate_btn.enabled and not c.cancel_btn.enabled
    # and it works again after its own Cancel
    _use_oracle(w, SizedOracle(sample.labels))
    w.estimate_diameter()
    _idle(qtbot, w, 10000)
    assert c.diameter.value == 21.0 and "21.0" in c.status.value


def test_segment_cancel_does_not_cancel_other_jobs(make_napari_viewer, model_dir, sample,
                                                   qtbot):
    """Bug: Cancel in the Segment tab also cancelled a running training."""
    viewer, w = _widget(make_napari_viewer)
    viewer.add_image(sample.image[..., 0], name="nuc")
    training = w.train_panel.job  # the Train tab's own job
    release = []

    def fake_training(progress, cancel):
        while not release:
            check_cancel(cancel)
            time.sleep(0.02)
        return "trained"

    results = []
    training.start(fake_training, on_done=results.append)
    _use_oracle(w, OracleModel(sample.labels, steps=200, delay=0.05))
    w.run()
    qtbot.waitUntil(lambda: bool(w.controls.segment_job.events), timeout=10000)
    w.controls.cancel_btn.native.click()
    _idle(qtbot, w, 10000)
    w.cancel()  # the dock's cancel is the Segment tab's too
    assert training.running and not training.cancelled
    release.append(True)
    qtbot.waitUntil(lambda: not training.running, timeout=10000)
    assert results == ["trained"]


def test_layer_hygiene_and_status_at_1280x720(make_napari_viewer, model_dir, sample, qtbot):
    viewer, w = _widget(make_napari_viewer)
    viewer.window._qt_window.resize(1280, 720)
    viewer.window._qt_window.show()
    img = viewer.add_image(sample.image[..., 0], name="nuc")
    _use_oracle(w, OracleModel(sample.labels))
    c = w.controls
    c.diameter.value = 16
    w.run()
    _idle(qtbot, w)
    outs = {_layers.role_of(ly): ly for ly in _layers.find_outputs(viewer.layers, img)}
    assert outs["masks"].visible and not outs["flows"].visible
    assert not outs["cellprob"].visible and not outs["flow_rgb"].visible
    c.status.value = ("12 cells in 'a very long image name masks' (with your corrections); "
                      "they are kept on re-run and threshold changes")
    qtbot.wait(50)
    label = c.status.native
    assert label.isVisible() and label.width() > 0
    assert label.visibleRegion().boundingRect().size() == label.size()  # not covered
    assert label.height() >= label.heightForWidth(label.width())  # every line shown
    # with every option shown the controls scroll; Run and the status stay in view, and no
    # control is cut at the dock's right edge
    c.more.value = True
    qtbot.wait(50)
    for wdg in (c.run_btn, c.cancel_btn, c.status):
        assert wdg.native.visibleRegion().boundingRect().size() == wdg.native.size()
    for wdg in (c.image, c.model, c.after_edits):
        assert wdg.native.visibleRegion().boundingRect().width() == wdg.native.width()
    qtbot.waitUntil(lambda: not [ly for ly in viewer.layers
                                 if _layers.role_of(ly) == "diameter_preview"], timeout=5000)


def test_auto_model_chooses_by_style_for_segment_estimate_and_says_which(
        make_napari_viewer, model_dir, qtbot):
    """ "auto" (issue 17): the zoo picks a bundled model for the image and the status and
    the masks' metadata name it; the size estimate resolves it the same way."""
    s = make_sample(kind="nuclei", shape=(160, 160), diameter=16, seed=5)
    viewer, w = _widget(make_napari_viewer)
    c = w.controls
    img = viewer.add_image(s.image[..., 0], name="fluo")
    assert "auto" in [v for _, v in w.models.choices()]
    c.model.value = "auto"
    c.diameter.value = 16.0
    c.run()
    _idle(qtbot, w, 120000)
    masks = next(ly for ly in viewer.layers if _layers.role_of(ly) == "masks")
    chosen = masks.metadata["flowseg"]["params"]["model_chosen"]
    assert chosen in ("nuclei", "cyto")
    assert f"model {chosen!r}, chosen by style (auto)" in c.status.value
    assert masks.data.max() > 0
    c.estimate_diameter()
    _idle(qtbot, w, 120000)
    assert 8 < c.diameter.value < 32 and c.image.value is img


def test_volume_anisotropy_from_the_file_voxel_size(make_napari_viewer, model_dir, tmp_path,
                                                    monkeypatch):
    """napari's TIFF reader sets no scale: a volume's default anisotropy comes from the
    file's voxel size (read once per layer) and the tooltip and status say so; a scale set
    on the layer wins."""
    import tifffile

    from flowseg import _panel_state

    reads, real = [], _panel_state.file_voxel

    def counting(layer):
        reads.append(layer)
        return real(layer)

    monkeypatch.setattr(_panel_state, "file_voxel", counting)
    vol = np.random.default_rng(0).integers(0, 255, (6, 24, 24), dtype=np.uint8)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, vol, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})
    viewer, w = _widget(make_napari_viewer)
    c = w.controls
    (layer,) = viewer.open(path, plugin="napari")
    assert tuple(layer.scale) == (1, 1, 1) and layer.source.path == str(path)
    assert c.image.value is layer and c.z_axis.value == 0 and c.do_3d.value
    assert c.anisotropy.value == pytest.approx(4.0)
    assert "default 4 from the file's voxel size (z 2 um, xy 0.5 um)" in c.anisotropy.tooltip
    assert "Anisotropy 4 from the file's voxel size (z 2 um, xy 0.5 um)." in c.status.value
    assert w.request().anisotropy == pytest.approx(4.0)
    # a scale set on the layer (by the user or a reader) wins
    (scaled,) = viewer.open(path, plugin="napari", scale=(3, 1, 1), name="scaled")
    assert c.image.value is scaled and c.anisotropy.value == pytest.approx(3.0)
    assert "default 3 from the layer's scale (z 3, y 1, x 1)" in c.anisotropy.tooltip
    # an image without a file: 1
    plain = viewer.add_image(vol, name="plain")
    assert c.image.value is plain and c.anisotropy.value == pytest.approx(1.0)
    assert "neither the layer's scale nor its file" in c.anisotropy.tooltip
    # choosing the Z axis again, or coming back to the image, reads no file again
    viewer.layers.selection.active = layer
    assert c.image.value is layer and "from the file's voxel size" in c.anisotropy.tooltip
    c.z_axis.value = None
    assert c.anisotropy.tooltip == _panel_state.ANISOTROPY_TIP
    c.z_axis.value = 0
    assert c.anisotropy.value == pytest.approx(4.0)
    assert reads.count(layer) == 1 and scaled not in reads
