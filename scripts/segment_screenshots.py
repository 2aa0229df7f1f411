"""Screenshots of the Segment and Edit tabs in a real napari window at 1280x720.

Run under a virtual display::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/segment_screenshots.py --out DIR

It opens the bundled "cells" sample, segments it with the bundled ``cyto`` model, makes two
corrections the way a user would (deletes a cell with the Edit tab's click tool, paints a
new one with the brush API), raises the cellprob threshold, and writes

* ``DIR/corrections.png`` -- the Segment tab after the threshold change: the corrections
  were kept, the status line says so, the flows layers are hidden;
* ``DIR/edit.png`` -- the Edit tab with the measurements table of the corrected masks.

``scripts/make_screenshots.py`` can call :func:`shoot_segment_tabs` with its own viewer-free
``app`` and output folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _settle(app, cond=lambda: True, timeout: float = 600.0) -> None:
    t0 = time.monotonic()
    while not cond():
        app.processEvents()
        time.sleep(0.02)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("gave up waiting")
    for _ in range(30):
        app.processEvents()
        time.sleep(0.01)


def _close_toasts(viewer) -> None:
    from qtpy.QtWidgets import QWidget

    for wdg in viewer.window._qt_window.findChildren(QWidget):
        if type(wdg).__name__ == "NapariQtNotification":
            wdg.close()


def shoot_segment_tabs(app, out: Path, model_path: Path, sample: str = "cells") -> list[Path]:
    """Segment, correct, re-threshold and measure in a fresh 1280x720 viewer; two PNGs."""
    import napari
    import numpy as np

    from flowseg._edit_tools import CLICK_MODES

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1280, 720)
    (image,) = viewer.open_sample("napari-flowseg", sample)
    _, w = viewer.window.add_plugin_dock_widget("napari-flowseg", "Segment cells")
    c = w.controls
    if str(model_path) not in [v for _, v in w.model_choices()]:
        w.add_model_file(str(model_path))
    c.model.value = str(model_path)
    image.contrast_limits = [float(x) for x in np.percentile(image.data, [1, 99.8])]
    c.diameter.value = round(float(image.metadata["sample"]["diameter"]), 1)
    c.preview.value = False
    with_result = []
    w.segmented.connect(lambda img, labels: with_result.append(labels))
    w.run()
    _settle(app, lambda: bool(with_result) and not c.busy)
    masks = with_result[-1]
    data = np.array(masks.data, copy=True)
    # correction 1: delete the largest cell with the Edit tab's click tool
    ids, counts = np.unique(data[data > 0], return_counts=True)
    w.edit_panel.layer.value = masks
    w.edit_panel.click.value = CLICK_MODES[1]
    w.edit_panel.click_label(masks, int(ids[np.argmax(counts)]))
    w.edit_panel.click.value = CLICK_MODES[0]
    # correction 2: paint a cell into the largest empty spot with the brush
    from scipy import ndimage as ndi

    far = ndi.distance_transform_edt(data == 0)
    y, x = np.unravel_index(np.argmax(far), far.shape)
    masks.brush_size = int(min(far[y, x], c.diameter.value))
    masks.paint((y, x), int(data.max()) + 1)
    # new thresholds: only the untouched cells change
    c.cellprob.value = 1.0
    _settle(app, lambda: not c.busy and not c._debounce.isActive())
    _settle(app, lambda: not c.busy)
    masks.opacity = 0.5
    viewer.layers.selection.active = masks
    viewer.reset_view()
    w.tabs.setCurrentIndex(0)
    _settle(app)
    _close_toasts(viewer)
    shots = [out / "corrections.png", out / "edit.png"]
    viewer.screenshot(str(shots[0]), canvas_only=False, flash=False)
    w.tabs.setCurrentIndex(1)
    w.edit_panel.measure()
    _settle(app)
    _close_toasts(viewer)
    viewer.screenshot(str(shots[1]), canvas_only=False, flash=False)
    viewer.close()
    return shots


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cyto", help="bundled model name or model file")
    p.add_argument("--sample", default="cells", help="sample to open (cells, nuclei)")
    p.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = p.parse_args(argv)
    os.environ.setdefault("FLOWSEG_MODEL_DIR", tempfile.mkdtemp(prefix="flowseg-shots-"))
    import warnings

    warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")
    import napari  # noqa: F401 - creates the Qt application on first viewer
    from qtpy.QtWidgets import QApplication

    from flowseg._model_registry import bundled_models

    model_path = bundled_models().get(args.model, Path(args.model))
    if not Path(model_path).is_file():
        print(f"model {args.model!r} not found", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from napari._qt.qt_event_loop import get_qapp

    app = QApplication.instance() or get_qapp()
    shots = shoot_segment_tabs(app, out, Path(model_path), args.sample)
    print("wrote", *map(str, shots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
