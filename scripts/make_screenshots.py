"""Take the screenshots of docs/usage.md from a real napari viewer.

Run under a virtual display::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/make_screenshots.py

It opens the bundled "cells" sample, docks "Segment cells", segments with the bundled
``cyto`` model (``--model`` to choose another), and writes

* ``docs/screenshots/segment.png``  -- masks over the image, with the widget
* ``docs/screenshots/flows.png``    -- the flow field as vectors (colour = direction), zoomed in
* ``docs/screenshots/loop-add.png``      -- the Train tab: two corrected images in a training set
* ``docs/screenshots/loop-training.png`` -- training in progress (plain-word progress, loss plot)
* ``docs/screenshots/loop-trained.png``  -- the new model selected, old vs new AP on the
  held-out image, and the next image segmented with the new model

The loop starts from the bundled ``nuclei`` model on synthetic images of elongated, noisy
nuclei (a style it handles less well than the round nuclei it was trained on); the script
plays the user: its "corrections" paste the true labels of each synthetic image into the
masks layer.
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
    p.add_argument("--budget", type=float, default=2.0,
                   help="training time budget of the loop, in minutes (default 2)")
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

    # the Cellpose 2.0 loop in the Train tab, in a fresh viewer
    viewer.close()
    shoot_loop(app, out, args.budget)
    print("wrote", *sorted(str(x) for x in out.glob("*.png")))
    return 0


def _loop_images(folder: Path, n: int = 4) -> dict:
    """Write ``n`` synthetic images of elongated, noisy nuclei; return their labels."""
    import numpy as np
    import tifffile

    from flowseg.engine.data.synthetic import make_sample

    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for k in range(n):
        s = make_sample(kind="nuclei", shape=(256, 256), elongation=2.5, noise=4.0,
                        seed=200 + k)
        name = f"nuclei_{k + 1:02d}"
        tifffile.imwrite(folder / f"{name}.tif",
                         (np.clip(s.image[..., 0], 0, None) * 4000).astype(np.uint16))
        truth[name] = s.labels.astype(np.int32)
    return truth


def shoot_loop(app, out: Path, budget_min: float) -> None:
    """Add two corrected images to a training set, train, segment the next image."""
    import napari

    from flowseg._model_registry import bundled_models

    work = Path(tempfile.mkdtemp(prefix="flowseg-loop-"))
    truth = _loop_images(work / "images")
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    _, w = viewer.window.add_plugin_dock_widget("napari-flowseg", "Segment cells")
    w.refresh_models(select=str(bundled_models()["nuclei"]))
    w.tabs.setCurrentIndex(w.tabs.count() - 1)  # the Train tab
    loop, tr = w.train_panel.loop, w.train_panel.training
    loop.set_folder.value = work / "elongated nuclei"
    loop.image_folder.value = work / "images"

    def next_segmented():
        seen = []
        w.segmented.connect(lambda image, labels: seen.append(labels))
        layer = loop.next_image()
        _wait(app, lambda: bool(seen) and w.worker is None)
        return layer, seen[-1]

    for _ in range(2):  # segment, "correct" (paste the truth), add
        layer, masks = next_segmented()
        masks.data = truth[layer.name]
        loop.add_to_set()
    viewer.reset_view()
    _wait(app, lambda: True)
    _clear_toasts(viewer)
    viewer.screenshot(str(out / "loop-add.png"), canvas_only=False, flash=False)

    tr.budget.value = budget_min
    tr.train()
    _wait(app, lambda: len(tr.plot.losses) >= 4 or not tr.job.running)
    _clear_toasts(viewer)
    viewer.screenshot(str(out / "loop-training.png"), canvas_only=False, flash=False)
    _wait(app, lambda: not tr.job.running, timeout=60 * budget_min + 600)
    layer, _ = next_segmented()  # segmented with the new, selected model
    viewer.reset_view()
    _wait(app, lambda: True)
    _clear_toasts(viewer)
    viewer.screenshot(str(out / "loop-trained.png"), canvas_only=False, flash=False)
    print(tr.result.text())
    viewer.close()


if __name__ == "__main__":
    sys.exit(main())
