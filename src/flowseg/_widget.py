"""The "Segment cells" dock widget: pick an image, a model and parameters, run, refine.

All state lives on :class:`SegmentWidget`; long work (model loading, segmentation, size
estimation, mask recomputation) runs in napari ``thread_worker`` threads with a progress
bar, and Cancel sets the engine's cancel token.  The engine calls are the same as the
CLI's: ``Model.load``, ``Model.segment``, ``Model.estimate_diameter``,
``Segmentation.recompute``.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

import napari
import numpy as np
from magicgui.widgets import Container
from napari.layers import Image, Shapes
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QTabWidget, QVBoxLayout, QWidget

from . import _layers
from ._inputs import Axes, default_anisotropy, diameter_from_shapes, guess_axes, n_channels
from ._model_registry import available_models
from ._progress import ProgressBridge

__all__ = ["SegmentWidget"]

LOAD_FILE = "load file…"


def _devices() -> list[str]:
    import torch

    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


class SegmentWidget(QWidget):
    """Dock widget segmenting an image layer with a flow model, plus a training tab."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        from ._train_widget import TrainPanel
        from ._segment_controls import build_controls

        self.viewer = viewer
        self.cancel_event = threading.Event()
        self.worker = None
        self._recompute_worker = None
        self._recompute_pending = False
        self._run_done = False
        self._results: dict[str, dict] = {}  # source unique_id -> {"seg", "layers", "params"}
        self._model_cache: dict[tuple, Any] = {}
        self._extra_models: list[tuple[str, str]] = []  # files loaded by the user
        self.progress = ProgressBridge(self._show_progress)
        from .engine.dynamics import warmup_in_background

        warmup_in_background()  # compile the flow engine while the user sets up the run

        self.controls: Container = build_controls(self)
        self.train_panel = TrainPanel(viewer, self)
        tabs = QTabWidget()
        for container, title in ((self.controls, "Segment"), (self.train_panel, "Train")):
            page = QWidget()
            page_layout = QVBoxLayout(page)
            page_layout.setContentsMargins(0, 0, 0, 0)
            page_layout.addWidget(container.native)
            page_layout.addStretch(1)  # controls at the top, not spread over the height
            tabs.addTab(page, title)
        self.tabs = tabs
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(tabs)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(150)
        self._debounce.timeout.connect(self.recompute_masks)

        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed,
                   viewer.layers.events.reordered):
            ev.connect(self._reset_choices)
        self._reset_choices()
        self._on_image_changed()
        # closing the viewer mid-run: stop the workers (they check these events)
        events = (self.cancel_event, self.train_panel.cancel_event)
        self.destroyed.connect(lambda *_: [e.set() for e in events])

    # ------------------------------------------------------------------ layer & model lists
    def _reset_choices(self, event: Any = None) -> None:
        # forget results of removed images (they hold the flows)
        alive = {str(ly.unique_id) for ly in self.viewer.layers}
        for key in [k for k in self._results if k not in alive]:
            del self._results[key]
        # only the layer pickers: the axis / channel pickers have choices set per image
        self.controls.image.reset_choices()
        self.controls.shapes.reset_choices()
        self.train_panel.reset_choices()

    def image_choices(self, widget: Any = None) -> list:
        """Image layers of the viewer (labels cannot be segmented)."""
        return [(ly.name, ly) for ly in self.viewer.layers
                if isinstance(ly, Image) and _layers.role_of(ly) is None]

    def shapes_choices(self, widget: Any = None) -> list:
        return [(ly.name, ly) for ly in self.viewer.layers
                if isinstance(ly, Shapes) and _layers.role_of(ly) is None]

    def model_choices(self, widget: Any = None) -> list:
        items = [(label, str(path)) for label, path in available_models()]
        items += [(label, path) for label, path in self._extra_models
                  if path not in {p for _, p in items}]
        return items + [(LOAD_FILE, LOAD_FILE)]

    def refresh_models(self, select: Optional[str] = None) -> None:
        """Re-read the model folders; select the model file ``select`` if given."""
        self.controls.model.reset_choices()
        if select is not None:
            self.controls.model.value = str(select)

    def add_model_file(self, path: str) -> None:
        """Add a model file (ours or Cellpose 1-3) to the picker and select it."""
        from pathlib import Path

        p = Path(path)
        if not p.is_file():
            raise ValueError(f"model file {path!r} does not exist")
        if str(p) not in {v for _, v in self.model_choices()}:
            self._extra_models.append((f"{p.name} (file)", str(p)))
        self.refresh_models(select=str(p))

    def _on_model_changed(self, value: Any = None) -> None:
        if value != LOAD_FILE:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Load a flowseg or Cellpose model file")
        choices = [v for _, v in self.model_choices() if v != LOAD_FILE]
        if path:
            try:
                self.add_model_file(path)
                return
            except ValueError as exc:
                show_error(str(exc))
        if choices:
            self.controls.model.value = choices[0]

    def load_model(self, path: str, device: str = "cpu") -> Any:
        """Load (and cache) a model; called from worker threads."""
        from .engine.model import Model

        key = (str(path), device)
        if key not in self._model_cache:
            self._model_cache[key] = Model.load(path, device=device)
        return self._model_cache[key]

    # ------------------------------------------------------------------ image-dependent fields
    @property
    def image_layer(self) -> Optional[Image]:
        return self.controls.image.value

    def axes(self) -> Axes:
        c = self.controls
        return Axes(channel_axis=c.channel_axis.value, z_axis=c.z_axis.value)

    def _on_image_changed(self, value: Any = None) -> None:
        c = self.controls
        layer = self.image_layer
        if layer is None:
            return
        shape = tuple(layer.data.shape)
        ax = guess_axes(shape, bool(layer.rgb))
        meta_axes = (layer.metadata or {}).get("flowseg_axes")
        if isinstance(meta_axes, dict):
            ax = Axes(meta_axes.get("channel_axis"), meta_axes.get("z_axis"))
        axis_choices = [("none", None)] + [(f"{i} (size {n})", i) for i, n in enumerate(shape)]
        for w, v in ((c.channel_axis, ax.channel_axis), (c.z_axis, ax.z_axis)):
            w.choices = axis_choices
            w.value = v
        c.channel_axis.enabled = not layer.rgb
        self._on_axes_changed()
        self._update_preview()

    def _on_axes_changed(self, value: Any = None) -> None:
        c = self.controls
        layer = self.image_layer
        if layer is None:
            return
        ax = self.axes()
        shape = tuple(layer.data.shape)
        nch = n_channels(shape, ax) if ax.channel_axis is not None and ax.channel_axis < len(shape) else 1
        names = ["red", "green", "blue", "alpha"] if layer.rgb else [f"channel {i}" for i in range(nch)]
        cyto = [(names[i], i) for i in range(nch)]
        if nch > 1:
            cyto.append(("mean of channels", None))
        c.cyto.choices = cyto
        c.cyto.value = 0
        c.nucleus.choices = [("none", None)] + [(names[i], i) for i in range(nch)]
        c.nucleus.value = 1 if (nch == 2 and not layer.rgb) else None
        has_z = ax.z_axis is not None
        c.do_3d.value = has_z
        for w in (c.do_3d, c.stitch, c.anisotropy):
            w.enabled = has_z
        if has_z:
            try:
                c.anisotropy.value = round(default_anisotropy(layer.scale, ax, layer.ndim, bool(layer.rgb)), 3)
            except (IndexError, ValueError):
                c.anisotropy.value = 1.0

    # ------------------------------------------------------------------ diameter helpers
    def diameter_from_shapes(self) -> Optional[float]:
        """Set the diameter from the circles drawn in the chosen Shapes layer."""
        layer, shapes = self.image_layer, self.controls.shapes.value
        try:
            if shapes is None:
                raise ValueError("no Shapes layer: add one and draw circles around a few cells")
            px = float(np.mean(np.asarray(layer.scale)[-2:])) if layer is not None else 1.0
            d = diameter_from_shapes(shapes, px)
        except ValueError as exc:
            show_error(str(exc))
            return None
        self.controls.diameter.value = round(d, 1)
        return d

    def estimate_diameter(self) -> Any:
        """Estimate the diameter with the model's size model, in a worker thread."""
        try:
            req = self.request()
        except ValueError as exc:
            show_error(str(exc))
            return None

        def work():
            model = self.load_model(req["model_path"], req["device"])
            data, cax, zax = np.asarray(req["data"]), req["channel_axis"], req["z_axis"]
            if zax is not None:  # the size model works in 2D: use the middle slice
                data = np.take(data, data.shape[zax] // 2, axis=zax)
                if cax is not None and cax > zax:
                    cax -= 1
            return model.estimate_diameter(data, channels=req["channels"], channel_axis=cax,
                                           progress=self.progress, cancel=self.cancel_event)

        def done(d):
            self.controls.diameter.value = round(float(d), 1)
            show_info(f"estimated diameter: {float(d):.1f} px")

        from ._progress import start_worker

        worker = start_worker(work, done, lambda exc: show_error(f"diameter estimate failed: {exc}"))
        return worker

    def _update_preview(self, value: Any = None) -> None:
        from ._segment_controls import update_diameter_preview

        update_diameter_preview(self)

    # ------------------------------------------------------------------ running
    def request(self, layer: Any = None) -> dict:
        """Validated engine arguments from the UI state (ValueError with a clear message)."""
        from ._segment_controls import build_request

        return build_request(self, layer)

    def run(self, layer: Any = None) -> Any:
        """Segment ``layer`` (default: the picked image) in a worker; returns the worker."""
        from ._segment_controls import start_segmentation

        return start_segmentation(self, layer)

    def cancel(self) -> None:
        """Ask the running job (segmentation, estimate or training) to stop."""
        self.cancel_event.set()
        self.train_panel.cancel_event.set()
        self.controls.status.value = "cancelling…"

    def _show_progress(self, ev: Any) -> None:
        if self.cancel_event.is_set() or self.worker is None or self._run_done:
            return  # late events of a finished or cancelled run
        txt = f"{ev.stage} {ev.done}/{ev.total}" if ev.total else ev.stage
        self.controls.status.value = txt

    def _set_running(self, running: bool) -> None:
        self.controls.run_btn.enabled = not running
        self.controls.cancel_btn.enabled = running

    # ------------------------------------------------------------------ thresholds
    def _on_threshold_changed(self, value: Any = None) -> None:
        self._debounce.start()

    def result_for(self, layer: Any) -> Optional[dict]:
        """The stored result for an image layer (None when it was not segmented)."""
        return None if layer is None else self._results.get(str(layer.unique_id))

    def recompute_masks(self) -> Any:
        """New masks from the stored flows with the current thresholds (no network run)."""
        from ._segment_controls import start_recompute

        return start_recompute(self)
