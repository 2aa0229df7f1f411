"""The plugin's Job helper: worker + own cancel event + plain-word progress (Qt, no viewer)."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("napari")

from qtpy.QtWidgets import QPushButton

from flowseg._jobs import Job, plain_words
from flowseg.engine.progress import Cancelled, ProgressEvent, check_cancel, report


def _steps(n, delay=0.0, stage="network"):
    def work(progress, cancel):
        for i in range(n):
            check_cancel(cancel)
            time.sleep(delay)
            report(progress, stage, i + 1, n)
        return n
    return work


def test_progress_reaches_bar_and_label_in_words(qtbot):
    job = Job("segmentation")
    done, seen = [], []
    job.progressed.connect(seen.append)
    with qtbot.waitSignal(job.finished, timeout=10000):
        job.start(_steps(4), on_done=done.append)
    assert done == [4] and not job.running
    assert [e.done for e in seen] == [1, 2, 3, 4]
    assert job.label.text() == "Finding cells 4/4"
    assert job.bar.maximum() == 4 and job.bar.value() == 4
    assert job.bar.isHidden()  # hidden while idle


def test_cancel_then_rerun_and_jobs_are_independent(qtbot):
    btn = QPushButton("Cancel")
    a, b = Job("estimate", cancel_button=btn), Job("training")
    errors, results = [], []
    b.start(_steps(400, 0.01, "train"), on_done=results.append)
    a.start(_steps(400, 0.01), on_error=errors.append)
    assert btn.isEnabled() and a.running
    qtbot.waitUntil(lambda: bool(a.events), timeout=10000)
    with qtbot.waitSignal(a.finished, timeout=10000):
        btn.click()
    assert len(errors) == 1 and isinstance(errors[0], Cancelled)
    assert a.label.text() == "Cancelled." and not btn.isEnabled()
    assert b.running and not b.cancelled  # the other job goes on
    # the same job runs again after a cancel (the event is fresh for every run)
    with qtbot.waitSignal(a.finished, timeout=10000):
        a.start(_steps(3), on_done=results.append, on_error=errors.append)
    assert results == [3] and len(errors) == 1
    b.cancel()
    qtbot.waitUntil(lambda: not b.running, timeout=10000)


def test_errors_and_double_start(qtbot):
    job = Job("segmentation")
    errors = []

    def boom(progress, cancel):
        time.sleep(0.2)
        raise ValueError("bad pixels")

    job.start(boom, on_error=errors.append)
    with pytest.raises(RuntimeError, match="already running"):
        job.start(boom)
    qtbot.waitUntil(lambda: not job.running, timeout=10000)
    assert isinstance(errors[0], ValueError) and job.label.text() == "Failed: bad pixels"
    # an exception in on_done is an error too
    with qtbot.waitSignal(job.finished, timeout=10000):
        job.start(_steps(1), on_done=lambda r: 1 / 0, on_error=errors.append)
    assert isinstance(errors[-1], ZeroDivisionError)


def test_plain_words():
    assert plain_words(ProgressEvent("dynamics", 1, 3)) == "Drawing cell outlines 1/3"
    assert plain_words(ProgressEvent("epoch", 2, 5, info={"loss": 0.3141})) == \
        "Training 2/5, loss 0.314"
    assert plain_words(ProgressEvent("my_stage", 0, 0)) == "My stage"
