"""Soak test (issue 23): 50 segment / threshold-update / cancel cycles in one viewer.

Each cycle segments one of two images with a tiny model, changes a threshold (the masks are
recomputed from the stored flows) and starts a run that is cancelled (at once, or once it
has reported progress).  Afterwards:
the process's resident memory grew by less than 200 MB, no thread was left behind (threads
of Qt's worker pool excepted, up to its size), and every layer is accounted for -- each
image has exactly one current result whose layers are all in the viewer, no output layer
of ours is left over, and every layer removed on the way was freed.  The figures are
printed (``-s``).  Runs under xvfb-run: ``xvfb-run -a python -m pytest -m slow -s
tests/gui/test_napari_soak.py``.  It takes about 2.5 minutes on a 2-core laptop-class CPU,
most of it napari's own ``gc.collect()`` for every removed layer (~0.4 s each in a process
holding torch), hence ``slow``.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

napari = pytest.importorskip("napari")
psutil = pytest.importorskip("psutil")

from test_napari_widget import _wait_run, _widget

from flowseg import _layers
from flowseg.engine.data.synthetic import make_sample

CYCLES = 50
MAX_GROWTH_MB = 200


def _rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2 ** 20


def _threads() -> tuple[set, int]:
    """Python threads by identity, and how many are foreign (Qt pool) threads."""
    ts = threading.enumerate()
    dummies = sum(isinstance(t, threading._DummyThread) for t in ts)
    return {t for t in ts if not isinstance(t, threading._DummyThread)}, dummies


def _our_layers(viewer) -> list:
    return [ly for ly in viewer.layers if _layers.role_of(ly) in _layers.OUTPUT_ROLES]


def _cycle(c, w, qtbot, image, k: int, stats: dict) -> None:
    c.image.value = image
    c.run()
    _wait_run(qtbot, w)
    assert c.session.current(image) is not None, c.status.value
    c.cellprob.value = 1.0 if c.cellprob.value < 1.0 else 0.5  # new masks, stored flows
    qtbot.waitUntil(lambda: not c._debounce.isActive(), timeout=5000)
    _wait_run(qtbot, w)
    assert "thresholds updated" in c.status.value, c.status.value
    worker = c.run()  # ... and a run cancelled: at once, or once it reports progress
    assert worker is not None
    if k % 2:
        qtbot.waitUntil(lambda: bool(c.segment_job.events) or not c.busy, timeout=60000)
    c.segment_job.cancel()
    _wait_run(qtbot, w)
    stats["cancelled" if c.status.value == "Cancelled." else "finished"] += 1


@pytest.mark.slow
def test_soak_segment_recompute_cancel(make_napari_viewer, model_dir, qtbot):
    from qtpy.QtCore import QThreadPool

    viewer, w = _widget(make_napari_viewer)
    c = w.controls
    c.model.value = str(model_dir / "tiny.pt")
    images = [viewer.add_image(make_sample("nuclei", (192, 192), diameter=14,
                                           seed=s).image[..., 0], name=f"img{s}")
              for s in (0, 1)]
    stats = {"cancelled": 0, "finished": 0}
    for k in range(2):  # warm-up: compiled kernels, caches, the worker pool
        _cycle(c, w, qtbot, images[k % 2], k, stats)
    rss0, (threads0, _) = _rss_mb(), _threads()
    added = []  # weak references: the test must not keep removed layers alive
    viewer.layers.events.inserted.connect(lambda e: added.append(weakref.ref(e.value)))
    t0 = time.perf_counter()
    for k in range(CYCLES):
        _cycle(c, w, qtbot, images[k % 2], k, stats)
    seconds = time.perf_counter() - t0
    qtbot.wait(200)
    rss1, (threads1, dummies) = _rss_mb(), _threads()
    # every layer accounted for: one current result per image, all of its layers shown,
    # nothing else of ours in the viewer
    expected = []
    for image in images:
        res = c.session.current(image)
        assert res is not None and all(ly in viewer.layers for ly in res.layers.values())
        expected += list(res.layers.values())
        assert sorted(_layers.role_of(ly) for ly in
                      _layers.find_outputs(viewer.layers, image)) == sorted(res.layers)
    assert sorted(map(id, _our_layers(viewer))) == sorted(map(id, expected))
    assert len(viewer.layers) == len(images) + len(expected)
    shown = [r() for r in added if r() is not None and r() in viewer.layers]
    assert len(shown) == len(expected)  # all others were removed again ...
    alive = sum(r() is not None for r in added) - len(shown)  # ... and freed
    left = threads1 - threads0
    assert not left, f"threads left behind: {[t.name for t in left]}"
    assert dummies <= QThreadPool.globalInstance().maxThreadCount()
    growth = rss1 - rss0
    figures = dict(cycles=CYCLES, seconds=round(seconds, 1), rss_start_mb=round(rss0),
                   rss_end_mb=round(rss1), growth_mb=round(growth, 1),
                   layers_added=len(added), layers_left=len(expected),
                   removed_but_alive=alive, threads_new=len(left), pool_threads=dummies,
                   **stats)
    print("soak:", figures)
    assert growth < MAX_GROWTH_MB, figures
    assert alive == 0, figures
    assert stats["cancelled"] > 0  # the cancel path ran
