"""Take the screenshots of docs/usage.md from a real napari viewer.

Run under a virtual display::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/make_screenshots.py

It opens the bundled "cells" sample, docks "Segment cells", segments with the bundled
``cyto`` model (``--model`` to choose another), and writes

* ``docs/screenshots/segment.png``  -- masks over the image, with the widget
* ``docs/screenshots/flows.png``    -- the flow field as vectors (colour = direction), zoomed in
* ``docs/screenshots/train.png``    -- the Train tab after a short fine-tuning run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _clear_toasts(viewer) -> None:
    """Close notification pop-ups so they do not cover the canvas."""
    from qtpy.QtWidgets import QWidget

    for wdg in viewer.window._qt_window.findChildren(QWidget):
        if type(wdg).__name__ == "NapariQtNotification":
            wdg.close()


def _wait(app, cond, timeout=600.0):
    t0 = time.monotonic()
    while not cond():
        app.processEvents()
        time.sleep(0.02)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("gave up waiting")
    for _ in range(20):
        app.processEvents()
        time.sleep(0.01)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None,
                   help="bundled model name or model file (default: cyto, else nuclei)")
    p.add_argument("--sample", default=None,
                   help="sample to open (default: cells for cyto, nuclei otherwise)")
    p.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args(argv)

    os.environ.setdefault("FLOWSEG_MODEL_DIR", tempfile.mkdtemp(prefix="flowseg-shots-"))
    import warnings

    warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")
    import napari
    from qtpy.QtWidgets import QApplication

    from flowseg import _layers
    from flowseg._model_registry import bundled_models

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bundled = bundled_models()
    if args.model is None:
        args.model = "cyto" if "cyto" in bundled else "nuclei"
    if args.sample is None:
        args.sample = "cells" if args.model == "cyto" else "nuclei"
    model_path = bundled.get(args.model, Path(args.model))
    if not Path(model_path).is_file():
        print(f"model {args.model!r} not found", file=sys.stderr)
        return 2

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    app = QApplication.instance()
    (image,) = viewer.open_sample("napari-flowseg", args.sample)
    _, w = viewer.window.add_plugin_dock_widget("napari-flowseg", "Segment cells")
    if str(model_path) not in [v for _, v in w.model_choices()]:
        w.add_model_file(str(model_path))
    w.controls.model.value = str(model_path)
    w.controls.image.value = image
    image.contrast_limits = [float(x) for x in
                             __import__("numpy").percentile(image.data, [1, 99.8])]
    w.controls.diameter.value = round(float(image.metadata["sample"]["diameter"]), 1)
    w.run()
    _wait(app, lambda: w.worker is None)
    outs = {_layers.role_of(ly): ly for ly in _layers.find_outputs(viewer.layers, image)}
    masks = outs["masks"]
    outs["flows"].visible = False
    masks.opacity = 0.45
    viewer.reset_view()
    _wait(app, lambda: True)
    _clear_toasts(viewer)
    viewer.screenshot(str(out / "segment.png"), canvas_only=False, flash=False)

    # flows: vectors over the flow colour image, zoomed in
    masks.visible = False
    outs["flows"].visible = True
    viewer.camera.zoom = viewer.camera.zoom * 4
    h, wd = masks.data.shape[-2:]
    viewer.camera.center = (h * 0.35, wd * 0.35)
    _wait(app, lambda: True)
    _clear_toasts(viewer)
    viewer.screenshot(str(out / "flows.png"), canvas_only=False, flash=False)

    # train tab: fine-tune briefly on the (here uncorrected) masks
    outs["flows"].visible = False
    masks.visible = True
    viewer.reset_view()
    w.tabs.setCurrentIndex(1)
    tp = w.train_panel
    tp.epochs.value = args.epochs
    tp.model_name.value = f"{Path(model_path).stem}-finetuned"
    tp.train()
    _wait(app, lambda: tp.worker is None)
    _clear_toasts(viewer)
    viewer.screenshot(str(out / "train.png"), canvas_only=False, flash=False)
    print("wrote", *sorted(str(x) for x in out.glob("*.png")))
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
