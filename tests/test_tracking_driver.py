"""The per-frame driver: axes, one diameter for all frames, progress per frame, cancel."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from flowseg.engine.progress import Cancelled, ProgressCollector, check_cancel
from flowseg.engine.tracking.driver import frame_axes, segment_frames, track


class StubModel:
    """Records what each frame's segmentation got; masks: one square where the frame is > 0."""

    diam_mean = 30.0

    def __init__(self, estimates=(20.0, 26.0, 21.0)):
        self.estimates = list(estimates)
        self.seen: list[tuple] = []
        self.estimated: list[tuple] = []

    def estimate_diameter(self, image, channels=None, channel_axis=None, cancel=None):
        self.estimated.append((image.shape, channel_axis))
        return self.estimates[len(self.estimated) - 1]

    def segment(self, image, *, diameter=None, cancel=None, channels=None, channel_axis=None,
                z_axis=None, **kw):
        check_cancel(cancel)
        self.seen.append((image.shape, diameter, channel_axis, z_axis, kw.get("do_3d")))
        plane = image if channel_axis is None else np.take(image, 0, axis=channel_axis)
        masks = (plane > 0).astype(np.int32)
        return SimpleNamespace(masks=masks, n_objects=int(masks.max()))


def test_frame_axes_renumbering():
    assert frame_axes(3, 0) == (0, None, None)
    assert frame_axes(4, 1, channel_axis=3) == (1, 2, None)  # (Y, T, X, C) -> (Y, X, C)
    assert frame_axes(5, 0, channel_axis=-1, z_axis=1) == (0, 3, 0)
    with pytest.raises(ValueError, match="t_axis 3 does not exist"):
        frame_axes(3, 3)
    with pytest.raises(ValueError, match="same axis"):
        frame_axes(4, 0, channel_axis=0)
    with pytest.raises(ValueError, match="no \\(Y, X\\) frames"):
        frame_axes(3, 0, channel_axis=2)


def test_one_diameter_estimated_once_for_all_frames():
    movie = np.zeros((7, 20, 30, 2), np.float32)
    movie[:, 5:10, 5:10, 0] = 1
    model = StubModel()
    events = ProgressCollector()
    out = segment_frames(model, np.moveaxis(movie, 0, 1), t_axis=1, channel_axis=3,
                         progress=events)
    # estimated on the first, middle and last frames; the median is used for every frame
    assert len(model.estimated) == 3 and model.estimated[0] == ((20, 30, 2), 2)
    assert out.diameter == 21.0 and out.diameter_source.startswith("estimated")
    assert [s[1] for s in model.seen] == [21.0] * 7
    assert all(s[0] == (20, 30, 2) and s[2] == 2 for s in model.seen)
    assert out.masks.shape == (7, 20, 30)
    assert [e.done for e in events.events if e.stage == "frames"] == list(range(1, 8))
    fixed = segment_frames(StubModel(), movie, channel_axis=3, diameter=17)
    assert fixed.diameter == 17 and fixed.diameter_source == "given"


def test_3d_frames_and_tracking():
    movie = np.zeros((3, 6, 24, 24), np.float32)
    for t in range(3):
        movie[t, 2:5, 5 + t:11 + t, 5:11] = 1
    model = StubModel()
    res = track(model, movie, t_axis=0, z_axis=1, diameter=8, do_3d=True)
    assert model.seen[0] == ((6, 24, 24), 8.0, None, 0, True)
    assert res.labels.shape == (3, 6, 24, 24) and res.n_tracks == 1
    assert res.info["segment_diameter"] == 8.0 and res.info["link_seconds"] >= 0


def test_cancel_and_bad_input():
    movie = np.ones((4, 16, 16), np.float32)
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        segment_frames(StubModel(), movie, diameter=10, cancel=cancel)
    with pytest.raises(ValueError, match="diameter"):
        segment_frames(StubModel(), movie, diameter=-1)
    with pytest.raises(ValueError, match="no frames"):
        segment_frames(StubModel(), np.zeros((0, 16, 16)), diameter=10)
