"""The "Track cells" panel in a real napari viewer (runs under xvfb-run)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from flowseg import _layers, _track_widget
from flowseg._track_widget import TrackWidget, describe, guess_time_axes
from flowseg.engine.progress import ProgressEvent, check_cancel
from flowseg.engine.tracking.perturb import perturb_frames
from flowseg.engine.tracking.synthetic import make_timelapse

TIMEOUT = 60000


class FrameOracle:
    """Stands in for the network: returns each frame's true masks, relabelled per frame."""

    size_model = None
    diam_mean = 20.0

    def __init__(self, images, labels, delay=0.0):
        self.images = images
        self.masks = perturb_frames(labels, np.random.default_rng(0), border=0, drop=0, split=0)
        self.delay, self.calls = delay, 0

    def segment(self, image, *, cancel=None, diameter=None, **kw):
        self.calls += 1
        self.kwargs = kw
        for _ in range(5):
            check_cancel(cancel)
            time.sleep(self.delay / 5)
        t = next(i for i, im in enumerate(self.images) if np.array_equal(im, image))
        m = self.masks[t]
        return SimpleNamespace(masks=m, n_objects=int(len(np.unique(m)) - 1))


@pytest.fixture(scope="module")
def movie():
    return make_timelapse(8, (96, 96), 20.0, kind="cells", n_divisions=2, speed=0.1, seed=1)


@pytest.fixture
def errors(monkeypatch):
    shown = []
    monkeypatch.setattr(_track_widget, "show_error", shown.append)
    return shown


def _panel(make_napari_viewer, movie, delay=0.0):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-flowseg", "Track cells (time-lapse)")
    assert isinstance(w, TrackWidget)
    layer = viewer.add_image(movie.images, name="movie", channel_axis=None)
    w.reset_choices()
    w.image.value = layer
    oracle = FrameOracle(movie.images, movie.truth.labels, delay)
    w.models.cache[(str(w.model.value), str(w.device.value))] = oracle
    w.diameter.value = 20.0
    return viewer, w, layer, oracle


def _outputs(viewer, layer, role):
    return _layers.find_outputs(viewer.layers, layer, (role,))


def test_axes_guess_and_words():
    assert guess_time_axes((10, 64, 64)) == (0, None, None)
    assert guess_time_axes((10, 64, 64, 2)) == (0, 3, None)
    assert guess_time_axes((10, 2, 64, 64)) == (0, 1, None)
    assert guess_time_axes((10, 12, 64, 64)) == (0, None, 1)
    assert guess_time_axes((10, 12, 64, 64, 3)) == (0, 4, 1)
    assert guess_time_axes((64, 64)) == (None, None, None)
    assert describe(ProgressEvent("frames", 3, 40)) == "Segmenting frame 3/40"


def test_run_gives_tracked_labels_and_lineage(make_napari_viewer, qtbot, movie, errors):
    viewer, w, layer, oracle = _panel(make_napari_viewer, movie)
    assert (w.t_axis.value, w.channel_axis.value, w.z_axis.value) == (0, 3, None)
    assert w.nucleus.value == 1
    w.run()
    qtbot.waitUntil(lambda: not w.job.running, timeout=TIMEOUT)
    assert errors == []
    assert oracle.calls == 8
    assert oracle.kwargs["cellprob_threshold"] == 0.0 and oracle.kwargs["flow_threshold"] == 0.4
    frames = [e.done for e in w.job.events if e.stage == "frames"]
    assert frames == list(range(1, 9))  # progress per frame
    (labels,) = _outputs(viewer, layer, "track_labels")
    (tracks,) = _outputs(viewer, layer, "tracks")
    assert labels.data.shape == (8, 96, 96)
    truth = movie.truth
    # a cell keeps its id: every true cell maps to one tracked id in all its frames
    for cell in truth.ids[:10]:
        ids = {int(np.bincount(labels.data[t][truth.labels[t] == cell]).argmax())
               for t in range(8) if np.any(truth.labels[t] == cell)}
        assert len(ids) == 1
    assert len(tracks.graph) == len(truth.parents) == 4  # two divisions, two daughters each
    assert set(np.unique(tracks.data[:, 0]).astype(int)) == set(np.unique(labels.data)[1:])
    assert "tracks, 2 divisions in 8 frames" in w.status.value
    # a second run replaces its own outputs
    w.run()
    qtbot.waitUntil(lambda: not w.job.running, timeout=TIMEOUT)
    assert len(_outputs(viewer, layer, "track_labels")) == 1
    assert len(_outputs(viewer, layer, "tracks")) == 1


def test_relink_after_editing_a_frame(make_napari_viewer, qtbot, movie, errors):
    viewer, w, layer, _ = _panel(make_napari_viewer, movie)
    w.run()
    qtbot.waitUntil(lambda: not w.job.running, timeout=TIMEOUT)
    (labels,) = _outputs(viewer, layer, "track_labels")
    before = labels.data.copy()
    lineage = set(w.tracks_layer_of(labels).graph) | {
        p for ps in w.tracks_layer_of(labels).graph.values() for p in ps}
    victim = next(int(v) for v in np.unique(before[4])[1:] if int(v) not in lineage
                  and np.all([np.any(before[t] == v) for t in range(8)]))
    edited = before.copy()
    edited[4][edited[4] == victim] = 0  # the user erases the cell in frame 4
    labels.data = edited
    viewer.layers.selection.active = labels
    w.relink()
    qtbot.waitUntil(lambda: not w.job.running, timeout=TIMEOUT)
    assert errors == []
    np.testing.assert_array_equal(labels.data[0], before[0])  # ids kept
    assert victim in np.unique(labels.data[5]) and victim not in np.unique(labels.data[4])
    tracks = w.tracks_layer_of(labels)
    rows = tracks.data[tracks.data[:, 0] == victim]
    assert 4 not in rows[:, 1] and {3, 5} <= set(rows[:, 1].astype(int))
    assert len(_outputs(viewer, layer, "tracks")) == 1
    assert w.status.value.startswith("Re-linked")


def test_cancel_stops_within_the_run(make_napari_viewer, qtbot, movie, errors):
    viewer, w, layer, oracle = _panel(make_napari_viewer, movie, delay=0.5)
    w.run()
    qtbot.waitUntil(lambda: oracle.calls >= 1, timeout=TIMEOUT)
    w.cancel_btn.native.click()
    qtbot.waitUntil(lambda: not w.job.running, timeout=TIMEOUT)
    assert oracle.calls < 8
    assert w.status.value == "Cancelled."
    assert _outputs(viewer, layer, "track_labels") == []
    assert errors == []


def test_bad_choices_are_explained(make_napari_viewer, movie, errors):
    _, w, _, _ = _panel(make_napari_viewer, movie)
    w.t_axis.value = None
    assert w.run() is None
    assert "T (time) axis" in errors[-1]
    w.t_axis.value = 0
    w.channel_axis.value = None
    w.run()
    assert "exactly two axes (Y, X)" in errors[-1]
    w.channel_axis.value = 3
    w.relink()
    assert "tracked Labels layer" in errors[-1]
    assert not w.job.running
