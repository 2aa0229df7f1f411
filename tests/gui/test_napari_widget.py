"""The "Segment cells" dock widget in a real napari viewer (runs under xvfb-run)."""

from __future__ import annotations

import time

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from flowseg import _layers
from flowseg._widget import SegmentWidget
from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.flows.masks import compute_masks
from flowseg.engine.flows.params import MaskParams
from flowseg.engine.inference.result import Segmentation
from flowseg.engine.progress import check_cancel, report


@pytest.fixture
def sample():
    return make_sample(kind="nuclei", shape=(160, 160), diameter=16, seed=4)


class OracleModel:
    """Stands in for the network: exact flows from ground truth, graded cell probability.

    The masks still come from the engine's dynamics (``compute_masks``), so thresholds act
    on them exactly as on a real network's output.
    """

    def __init__(self, labels, steps=4, delay=0.0):
        from scipy import ndimage as ndi

        from flowseg.engine.flows.diffusion import masks_to_flows

        self.labels, self.steps, self.delay, self.calls = labels, steps, delay, 0
        self.flows = masks_to_flows(labels)
        self.cellprob = (ndi.distance_transform_edt(labels > 0) - 1.5).astype(np.float32)

    def segment(self, image, *, progress=None, cancel=None, cellprob_threshold=0.0,
                flow_threshold=0.4, min_size=15, diameter=None, **kw):
        self.calls += 1
        for i in range(self.steps):
            check_cancel(cancel)
            time.sleep(self.delay)
            report(progress, "tiles", i + 1, self.steps)
        mask = MaskParams(cellprob_threshold=cellprob_threshold,
                          flow_threshold=flow_threshold, min_size=min_size)
        params = mask.as_dict()
        masks = compute_masks(self.flows, self.cellprob, mask)
        return Segmentation(masks, self.flows, self.cellprob, np.zeros(256, np.float32),
                            float(diameter or 16.0), params)


def _widget(make_napari_viewer):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-flowseg", "Segment cells")
    assert isinstance(w, SegmentWidget)
    return viewer, w


def _use_oracle(w, oracle):
    w._model_cache[(str(w.controls.model.value), w.controls.device.value)] = oracle


def _wait_run(qtbot, w, timeout=60000):
    qtbot.waitUntil(lambda: not w.controls.busy, timeout=timeout)


@pytest.fixture
def errors(monkeypatch):
    from flowseg import _edit_tools, _segment_panel

    shown = []
    monkeypatch.setattr(_segment_panel, "show_error", shown.append)
    monkeypatch.setattr(_edit_tools, "show_error", shown.append)
    return shown


def test_dock_from_manifest_lists_models(make_napari_viewer, model_dir):
    _viewer, w = _widget(make_napari_viewer)
    labels = [lab for lab, _ in w.model_choices()]
    assert "tiny" in labels and labels[-1] == "load file…"
    assert w.controls.image.value is None  # no image yet


def test_run_outputs_and_threshold_recompute(make_napari_viewer, model_dir, sample, qtbot):
    viewer, w = _widget(make_napari_viewer)
    img = viewer.add_image(sample.image[..., 0], scale=(0.5, 0.5), translate=(3, 4), name="nuc")
    oracle = OracleModel(sample.labels)
    _use_oracle(w, oracle)
    assert w.controls.image.value is img
    w.controls.diameter.value = 16
    w.run()
    _wait_run(qtbot, w)
    outs = {_layers.role_of(ly): ly for ly in _layers.find_outputs(viewer.layers, img)}
    assert set(outs) == {"masks", "flows", "cellprob", "flow_rgb"}
    masks = outs["masks"]
    assert isinstance(masks, napari.layers.Labels)
    assert isinstance(outs["flows"], napari.layers.Vectors)
    assert outs["flow_rgb"].rgb
    assert not any(outs[r].visible for r in ("flows", "cellprob", "flow_rgb"))  # hidden
    np.testing.assert_allclose(masks.scale, (0.5, 0.5))
    np.testing.assert_allclose(masks.translate, (3, 4))
    assert masks.metadata["flowseg"]["params"]["diameter"] == 16
    n_true = len(np.unique(sample.labels)) - 1
    n = len(np.unique(masks.data)) - 1
    assert abs(n - n_true) <= 0.1 * n_true
    # thresholds: masks change, the model is not called again
    before = masks.data.copy()
    w.controls.cellprob.value = 2.5
    qtbot.waitUntil(lambda: not np.array_equal(masks.data, before), timeout=20000)
    _wait_run(qtbot, w, timeout=20000)
    assert oracle.calls == 1
    assert (masks.data > 0).sum() < (before > 0).sum()
    assert masks.metadata["flowseg"]["params"]["cellprob_threshold"] == 2.5
    # a new image becomes the target; its run leaves the first image's outputs alone
    other = viewer.add_image(sample.image[..., 0], name="other")
    assert w.controls.image.value is other
    w.run()
    _wait_run(qtbot, w)
    assert masks in viewer.layers and len(_layers.find_outputs(viewer.layers, other)) == 4
    # a re-run of an image whose masks were not edited replaces its outputs
    viewer.layers.selection.active = img
    assert w.controls.image.value is img
    w.run()
    _wait_run(qtbot, w)
    assert masks not in viewer.layers
    assert len(_layers.find_outputs(viewer.layers, img)) == 4
    assert len(_layers.find_outputs(viewer.layers, other)) == 4


def test_real_network_run_and_recompute_without_network(make_napari_viewer, model_dir, sample,
                                                        qtbot, monkeypatch):
    from flowseg.engine.network.unet import FlowNet

    calls = []
    orig = FlowNet.forward
    monkeypatch.setattr(FlowNet, "forward", lambda self, x: (calls.append(1), orig(self, x))[1])
    viewer, w = _widget(make_napari_viewer)
    img = viewer.add_image(sample.image[..., 0], name="nuc")
    w.controls.diameter.value = 17
    w.run()
    _wait_run(qtbot, w)
    assert calls, "the network was not called"
    outs = {_layers.role_of(ly): ly for ly in _layers.find_outputs(viewer.layers, img)}
    assert outs["masks"].data.shape == img.data.shape
    n = len(calls)
    w.controls.cellprob.value = -3.0
    w.controls.flow_threshold.value = 1.0
    qtbot.wait(300)
    qtbot.waitUntil(lambda: not w.controls.busy and not w.controls._debounce.isActive(),
                    timeout=20000)
    assert outs["masks"].metadata["flowseg"]["params"]["cellprob_threshold"] == -3.0
    assert len(calls) == n


def test_cancel_leaves_no_layers_and_can_rerun(make_napari_viewer, model_dir, sample, qtbot):
    viewer, w = _widget(make_napari_viewer)
    img = viewer.add_image(sample.image[..., 0], name="nuc")
    slow = OracleModel(sample.labels, steps=200, delay=0.05)
    _use_oracle(w, slow)
    n_layers = len(viewer.layers)
    t0 = time.monotonic()
    w.run()
    qtbot.waitUntil(lambda: bool(w.controls.segment_job.events), timeout=10000)
    assert not w.controls.run_btn.enabled and w.controls.cancel_btn.enabled
    w.controls.cancel_btn.native.click()
    _wait_run(qtbot, w, timeout=10000)
    assert time.monotonic() - t0 < 5.0  # the full run would take 10 s
    assert len(viewer.layers) == n_layers and not _layers.find_outputs(viewer.layers, img)
    assert w.controls.run_btn.enabled and not w.controls.cancel_btn.enabled
    assert w.controls.status.value == "Cancelled."
    _use_oracle(w, OracleModel(sample.labels))
    w.run()
    _wait_run(qtbot, w)
    assert len(_layers.find_outputs(viewer.layers, img)) == 4


def test_wrong_inputs_are_notifications(make_napari_viewer, model_dir, sample, errors):
    viewer, w = _widget(make_napari_viewer)
    assert w.run() is None
    assert "no image layer" in errors[-1]
    lab = viewer.add_labels(sample.labels, name="lab")
    assert w.run(lab) is None
    assert "is a labels layer" in errors[-1]
    viewer.add_image(np.zeros((5, 6, 32, 32), np.float32), name="4d")
    assert w.controls.channel_axis.value is None and w.controls.z_axis.value is None
    assert w.run() is None
    assert "4 dimensions" in errors[-1]
    # choosing the axes makes it valid
    w.controls.z_axis.value = 1
    w.controls.channel_axis.value = 0
    req = w.request()
    assert req.z_axis == 1 and req.channel_axis == 0 and req.do_3d
    assert len(errors) == 3


def test_multichannel_3d_sample_defaults(make_napari_viewer, model_dir):
    viewer, w = _widget(make_napari_viewer)
    (layer,) = viewer.open_sample("napari-flowseg", "cells3d")
    layer.scale = (1, 2.0, 0.5, 0.5)
    c = w.controls
    assert c.image.value is layer
    c.z_axis.value = None  # choosing the Z axis again reads the new scale
    c.z_axis.value = 1
    assert (c.channel_axis.value, c.z_axis.value) == (0, 1)
    assert (c.cyto.value, c.nucleus.value) == (0, 1)
    assert c.do_3d.value and c.anisotropy.value == pytest.approx(4.0)
    req = w.request()
    assert req.channels == (0, 1) and req.anisotropy == pytest.approx(4.0)
    place = _layers.spatial_placement(layer, 0)
    assert place["scale"] == (2.0, 0.5, 0.5)


def _previews(viewer):
    return [ly for ly in viewer.layers if _layers.role_of(ly) == "diameter_preview"]


def test_diameter_from_shapes_and_preview(make_napari_viewer, model_dir, sample, errors,
                                          qtbot, monkeypatch):
    from flowseg import _diameter_preview

    monkeypatch.setattr(_diameter_preview, "HIDE_AFTER_MS", 300)
    viewer, w = _widget(make_napari_viewer)
    img = viewer.add_image(sample.image[..., 0], scale=(0.5, 0.5), name="nuc")
    assert _previews(viewer) == []  # no helper layer until the diameter changes
    w.controls.diameter.value = 20
    (preview,) = _previews(viewer)
    (ell,) = preview.data
    assert np.ptp(ell[:, 0]) == pytest.approx(20)
    assert viewer.layers.selection.active is img  # the preview does not take the focus
    assert preview not in list(w.controls.image.choices)
    qtbot.waitUntil(lambda: not _previews(viewer), timeout=5000)  # gone after a moment
    assert w.diameter_from_shapes() is None and "no Shapes layer" in errors[-1]
    shapes = viewer.add_shapes([np.array([[0, 0], [0, 10], [10, 10], [10, 0]])] * 2,
                               shape_type="ellipse", name="circles")
    w.controls.shapes.value = shapes
    d = w.diameter_from_shapes()
    assert d == pytest.approx(20.0)  # 10 world units / 0.5 per pixel
    assert w.controls.diameter.value == pytest.approx(20.0)


def _bundled(name):
    from flowseg._model_registry import bundled_models

    return bundled_models().get(name)


@pytest.mark.parametrize("model, key", [("nuclei", "nuclei"), ("cyto", "cells")])
def test_bundled_model_on_sample_counts_cells(make_napari_viewer, qtbot, tmp_path, monkeypatch,
                                              model, key):
    if _bundled(model) is None:
        pytest.skip(f"bundled {model!r} model not trained yet")
    monkeypatch.setenv("FLOWSEG_MODEL_DIR", str(tmp_path))
    viewer, w = _widget(make_napari_viewer)
    (layer,) = viewer.open_sample("napari-flowseg", key)
    w.controls.model.value = str(_bundled(model))
    w.controls.diameter.value = 0  # the model's own size
    w.run()
    _wait_run(qtbot, w, timeout=120000)
    outs = {_layers.role_of(ly): ly for ly in _layers.find_outputs(viewer.layers, layer)}
    assert isinstance(outs["flows"], napari.layers.Vectors) and len(outs["flows"].data) > 100
    from flowseg.engine.data.samples import load_sample

    truth = load_sample(key)[1]["labels"]
    n_true = len(np.unique(truth)) - 1
    n = len(np.unique(outs["masks"].data)) - 1
    assert abs(n - n_true) <= 0.1 * n_true, (n, n_true)


def test_estimate_diameter_button(make_napari_viewer, model_dir, sample, qtbot):
    viewer, w = _widget(make_napari_viewer)
    viewer.add_image(sample.image[..., 0], name="nuc")
    w.controls.diameter.value = 3
    worker = w.estimate_diameter()
    assert worker is not None
    qtbot.waitUntil(lambda: w.controls.diameter.value != 3, timeout=60000)
    assert 5 < w.controls.diameter.value < 200
