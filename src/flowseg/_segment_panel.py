"""The Segment tab: pick an image, a model and the cell size, run, refine the thresholds.

:class:`SegmentPanel` follows the active image layer and remembers its settings per image
layer (:class:`~flowseg._session.ImageSettings`).  Segmentation, the diameter estimate and
mask recomputation each run as a :class:`~flowseg._jobs.Job` (own cancel event) sharing
the tab's progress bar, plain-word status and Cancel button; only one runs at a time.
Results are written by :class:`~flowseg._results.ResultLayers`, which never overwrites the
user's corrections.  The panel talks to the rest of the dock through psygnal signals.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Shapes
from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal
from qtpy.QtCore import QTimer

from . import _layers
from ._diameter_preview import DiameterPreview
from ._inputs import diameter_from_shapes
from ._jobs import Job
from ._model_store import ModelStore, devices
from ._panel_state import PanelState
from ._results import AFTER_EDITS, ResultLayers
from ._segment_request import LOAD_FILE, SegmentRequest, make_request
from ._session import Session
from .engine.progress import Cancelled

__all__ = ["SegmentPanel"]


class SegmentPanel(Container):
    """Controls and jobs of the Segment tab.

    Signals
    -------
    segmented(image_layer, labels_layer)
        A result masks layer was added.
    model_changed(str)
        The chosen model (path) changed.
    """

    segmented = Signal(object, object)
    model_changed = Signal(object)

    def __init__(self, viewer: Any, models: ModelStore) -> None:
        super().__init__(labels=True, scrollable=True)
        self.viewer, self.models = viewer, models
        self.session = Session()
        self.results = ResultLayers(viewer, self.session)
        self.preview_circle = DiameterPreview(viewer)
        self._build()
        self.state = PanelState(self)
        self._pending_recompute = False
        self._debounce = QTimer()
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(150)
        self._debounce.timeout.connect(self.recompute_masks)
        self._connect()

    # ------------------------------------------------------------------ building
    def _build(self) -> None:
        self.image = ComboBox(label="image", choices=self.image_choices)
        self.channel_axis = ComboBox(label="channel axis", choices=[("none", None)])
        self.z_axis = ComboBox(label="Z axis", choices=[("none", None)])
        self.cyto = ComboBox(label="cytoplasm", choices=[("channel 0", 0)])
        self.nucleus = ComboBox(label="nucleus", choices=[("none", None)])
        self.model = ComboBox(label="model", choices=lambda *_: self.models.choices())
        self.diameter = FloatSpinBox(
            label="diameter (px)", min=0.0, max=2000.0, step=1.0, value=30.0,
            tooltip="cell diameter in pixels; 0 = the model's own estimate")
        self.estimate_btn = PushButton(text="estimate from image")
        self.shapes = ComboBox(label="circles layer", choices=self.shapes_choices, nullable=True)
        self.shapes_btn = PushButton(text="diameter from Shapes layer")
        self.preview = CheckBox(text="show diameter preview", value=True)
        self.cellprob = FloatSlider(label="cellprob threshold", min=-6.0, max=6.0, step=0.1,
                                    value=0.0)
        self.flow_threshold = FloatSlider(label="flow threshold", min=0.0, max=3.0, step=0.05,
                                          value=0.4)
        self.min_size = SpinBox(label="min size (px)", min=-1, max=1_000_000, value=15)
        self.after_edits = ComboBox(
            label="after corrections", choices=list(AFTER_EDITS), value=AFTER_EDITS[0],
            tooltip="what new thresholds do to a masks layer you corrected: keep every cell "
                    "you touched and update the others, or leave it and write a new layer. "
                    "Run always writes a new layer next to a corrected one.")
        self.more = CheckBox(text="3D, test-time augmentation and device options", value=False)
        self.do_3d = CheckBox(text="3D (segment the volume, not slices)", value=False)
        self.stitch = FloatSpinBox(label="stitch threshold", min=0.0, max=1.0, step=0.05,
                                   value=0.0, tooltip="slice by slice: IoU to join 2D masks "
                                                      "across Z")
        self.anisotropy = FloatSpinBox(label="anisotropy (Z/XY)", min=0.01, max=100.0, step=0.1,
                                       value=1.0)
        self.augment = CheckBox(text="augment (flip averaging)", value=False)
        self.device = ComboBox(label="device", choices=devices())
        self.advanced = Container(widgets=[self.do_3d, self.stitch, self.anisotropy,
                                           self.augment, self.device], labels=True,
                                  visible=False)
        self.extend([self.image, self.channel_axis, self.z_axis, self.cyto, self.nucleus,
                     self.model, self.diameter, self.estimate_btn, self.shapes,
                     self.shapes_btn, self.preview, self.cellprob, self.flow_threshold,
                     self.min_size, self.after_edits, self.more, self.advanced])
        # the footer stays visible below the scrolling controls (placed by the dock)
        self.run_btn = PushButton(text="Run")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.bar = ProgressBar(visible=False)
        self.status = Label(value="")
        self.footer = Container(widgets=[Container(widgets=[self.run_btn, self.cancel_btn],
                                                   layout="horizontal", labels=False),
                                         self.bar, self.status], labels=False)
        self.footer.margins = (4, 0, 4, 4)
        shared = {"bar": self.bar.native, "label": self.status.native,
                      "cancel_button": self.cancel_btn.native}
        self.segment_job = Job("segmentation", **shared)
        self.estimate_job = Job("diameter estimate", **shared)
        self.recompute_job = Job("mask update", **shared)
        self.jobs = (self.segment_job, self.estimate_job, self.recompute_job)

    def _connect(self) -> None:
        self.image.changed.connect(self.state.on_image_changed)
        self.channel_axis.changed.connect(self.state.on_axes_changed)
        self.z_axis.changed.connect(self.state.on_axes_changed)
        self.model.changed.connect(self._on_model_changed)
        self.diameter.changed.connect(self._update_preview)
        self.preview.changed.connect(self._update_preview)
        self.more.changed.connect(lambda on: setattr(self.advanced, "visible", bool(on)))
        self.estimate_btn.changed.connect(lambda *_: self.estimate_diameter())
        self.shapes_btn.changed.connect(lambda *_: self.diameter_from_shapes())
        for t in (self.cellprob, self.flow_threshold, self.min_size):
            t.changed.connect(self._on_threshold_changed)
        self.run_btn.changed.connect(lambda *_: self.run())
        self.results.edited.connect(self._on_edited)
        for job in self.jobs:
            job.started.connect(self._update_buttons)
            job.finished.connect(self._job_finished)
        self.viewer.layers.selection.events.active.connect(self.state.follow_active_layer)

    # ------------------------------------------------------------------ choices
    def image_choices(self, widget: Any = None) -> list:
        """Image layers of the viewer (not ours; labels cannot be segmented)."""
        return [(ly.name, ly) for ly in self.viewer.layers
                if isinstance(ly, Image) and _layers.role_of(ly) is None]

    def shapes_choices(self, widget: Any = None) -> list:
        """Shapes layers that may hold circles drawn around cells."""
        return [(ly.name, ly) for ly in self.viewer.layers
                if isinstance(ly, Shapes) and _layers.role_of(ly) is None]

    def reset_choices(self, *args: Any) -> None:
        """Refresh the layer pickers (the axis and channel pickers are set per image)."""
        alive = {Session.key(ly) for ly in self.viewer.layers}
        self.session.forget_missing(alive)
        self.image.reset_choices()
        self.shapes.reset_choices()

    def _on_model_changed(self, value: Any = None) -> None:
        if value == LOAD_FILE:
            self._load_model_file()
            return
        if not self.state.quiet:
            d = self.models.default_diameter(value, self.device.value)
            if d is not None:
                self.diameter.value = d
        self.model_changed.emit(value)

    def _load_model_file(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self.native, "Load a flowseg or Cellpose model file")
        if path:
            try:
                self.select_model(self.models.add_file(path))
                return
            except ValueError as exc:
                show_error(str(exc))
        choices = [v for _, v in self.models.choices() if v != LOAD_FILE]
        if choices:
            self.model.value = choices[0]

    def select_model(self, path: str | None = None) -> None:
        """Re-read the model lists; select ``path`` if given."""
        self.model.reset_choices()
        if path is not None:
            self.model.value = str(path)

    # ------------------------------------------------------------------ jobs
    @property
    def busy(self) -> bool:
        """Whether a segmentation, estimate or mask update is running."""
        return any(job.running for job in self.jobs)

    def _update_buttons(self) -> None:
        idle = not self.busy
        self.run_btn.enabled = idle
        self.estimate_btn.enabled = idle

    def _job_finished(self) -> None:
        self._update_buttons()
        if self._pending_recompute and not self.busy:
            self._pending_recompute = False
            self.recompute_masks()

    def _error(self, what: str) -> Any:
        def on_error(exc: BaseException) -> None:
            if isinstance(exc, Cancelled):
                show_info(f"{what} cancelled")
            else:
                show_error(f"{what} failed: {type(exc).__name__}: {exc}")
        return on_error

    # ------------------------------------------------------------------ running
    def request(self, layer: Any = None) -> SegmentRequest:
        """Validated engine arguments for ``layer`` (default: the picked image).

        The picked image uses the controls; another layer its remembered (or default)
        settings.  Raises ValueError with a message for the user.
        """
        layer = self.image.value if layer is None else layer
        settings = self.state.settings_for(layer)
        return make_request(layer, settings, device=self.device.value,
                            augment=self.augment.value, cellprob_threshold=self.cellprob.value,
                            flow_threshold=self.flow_threshold.value,
                            min_size=self.min_size.value)

    def run(self, layer: Any = None) -> Any:
        """Segment ``layer`` (default: the picked image) in a worker; returns the worker."""
        if self.busy:
            show_warning("the Segment tab is busy; wait for it or press Cancel")
            return None
        try:
            req = self.request(layer)
        except ValueError as exc:
            show_error(str(exc))
            return None
        self.state.remember(req.layer)
        self.preview_circle.hide()
        store = self.models

        def work(progress: Any, cancel: Any) -> Any:
            model = store.load(req.model_path, req.device)
            return model.segment(np.asarray(req.data), progress=progress, cancel=cancel,
                                 **req.engine_kwargs())

        return self.segment_job.start(work, on_done=lambda seg: self._add_outputs(req, seg),
                                      on_error=self._error("segmentation"),
                                      message=f"Loading the model for {req.layer.name}")

    def _add_outputs(self, req: SegmentRequest, seg: Any) -> None:
        source = req.layer
        if source not in self.viewer.layers:
            show_warning(f"image layer {source.name!r} was removed during the run; "
                         "result dropped")
            self.segment_job.set_text("Result dropped: the image was removed.")
            return
        params = req.record()
        params["diameter_used"] = float(seg.diameter)
        res, kept = self.results.add(source, seg, params, req.channel_axis)
        if self.image.value is source:
            self.viewer.layers.selection.active = res.masks
        text = f"{seg.n_objects} cells (diameter {seg.diameter:.1f} px)"
        if kept:
            names = ", ".join(repr(ly.name) for ly in kept)
            text += f". Your corrected {names} was kept; this run is in {res.masks.name!r}"
            show_info(f"{names} holds your corrections and was kept; the new result is "
                      f"{res.masks.name!r}")
        self.segment_job.set_text(text)
        cax, zax = req.channel_axis, req.z_axis
        if cax is not None and zax is not None and zax < cax and not source.rgb:
            show_warning("the image has Z before its channel axis; napari lines up the "
                         "(Z, Y, X) outputs with the image's last axes, so they may look "
                         "misplaced: put the channel axis first (e.g. numpy.moveaxis) for an "
                         "exact overlay")
        self.segmented.emit(source, res.masks)

    # ------------------------------------------------------------------ diameter
    def estimate_diameter(self) -> Any:
        """Estimate the diameter with the model's size model in a worker; returns it."""
        if self.busy:
            show_warning("the Segment tab is busy; wait for it or press Cancel")
            return None
        try:
            req = self.request()
        except ValueError as exc:
            show_error(str(exc))
            return None
        store = self.models

        def work(progress: Any, cancel: Any) -> float:
            model = store.load(req.model_path, req.device)
            data, cax, zax = np.asarray(req.data), req.channel_axis, req.z_axis
            if zax is not None:  # the size model works in 2D: use the middle slice
                data = np.take(data, data.shape[zax] // 2, axis=zax)
                if cax is not None and cax > zax:
                    cax -= 1
            return model.estimate_diameter(data, channels=req.channels, channel_axis=cax,
                                           progress=progress, cancel=cancel)

        def done(d: float) -> None:
            if self.image.value is req.layer:
                self.diameter.value = round(float(d), 1)
            self.state.remember(req.layer, diameter=round(float(d), 1))
            self.estimate_job.set_text(f"Estimated diameter: {float(d):.1f} px")

        return self.estimate_job.start(work, on_done=done,
                                       on_error=self._error("diameter estimate"),
                                       message="Measuring cell size")

    def diameter_from_shapes(self) -> float | None:
        """Set the diameter from the circles drawn in the chosen Shapes layer."""
        layer, shapes = self.image.value, self.shapes.value
        try:
            if shapes is None:
                raise ValueError("no Shapes layer: add one and draw circles around a few cells")
            px = float(np.mean(np.asarray(layer.scale)[-2:])) if layer is not None else 1.0
            d = diameter_from_shapes(shapes, px)
        except ValueError as exc:
            show_error(str(exc))
            return None
        self.diameter.value = round(d, 1)
        return d

    def _update_preview(self, value: Any = None) -> None:
        if self.state.quiet or not self.preview.value:
            self.preview_circle.hide()
            return
        self.preview_circle.show(self.image.value, float(self.diameter.value))

    # ------------------------------------------------------------------ thresholds
    def _on_threshold_changed(self, value: Any = None) -> None:
        if not self.state.quiet:
            self._debounce.start()

    def recompute_masks(self) -> Any:
        """New masks of the picked image from its stored flows (no network run).

        A masks layer with corrections keeps them (see the "after corrections" choice).
        Returns the worker, or None when there is nothing to do or a job is running (it
        then runs when the job ends).
        """
        res = self.session.current(self.image.value)
        if res is None:
            return None
        if self.busy:
            self._pending_recompute = True
            return None
        kw = {"cellprob_threshold": float(self.cellprob.value),
                  "flow_threshold": float(self.flow_threshold.value),
                  "min_size": int(self.min_size.value)}
        mode = self.after_edits.value
        if all(res.seg.params.get(k) == v for k, v in kw.items()):
            return None  # nothing changed
        seg = res.seg

        def done(new: Any) -> None:
            if res.masks not in self.viewer.layers:
                return
            now = self.results.update(res, new, mode)
            n = int(len(np.unique(np.asarray(now.masks.data))) - 1)
            text = f"{n} cells (thresholds updated"
            text += f", {res.n_edited_objects()} corrected cells kept)" if res.edited else ")"
            if now is not res:
                text = f"{n} cells in the new layer {now.masks.name!r}; your corrected " \
                       f"{res.masks.name!r} is unchanged"
                self.viewer.layers.selection.active = now.masks
            self.recompute_job.set_text(text)

        return self.recompute_job.start(
            lambda progress, cancel: seg.recompute(**kw, progress=progress, cancel=cancel),
            on_done=done, on_error=self._error("mask update"), message="Updating the masks")

    def _on_edited(self, res: Any) -> None:
        if self.session.current(self.image.value) is res and not self.busy:
            self.status.value = (f"{res.n_edited_objects()} cells corrected in "
                                 f"{res.masks.name!r}: they are kept on re-run and threshold "
                                 "changes")

    def close_jobs(self) -> None:
        """Cancel every running job and drop the preview (the dock is closing)."""
        for job in self.jobs:  # no Qt calls: the widgets may be gone already
            job.cancel_event.set()
        try:
            self.preview_circle.hide()
        except RuntimeError:  # Qt objects already deleted
            pass
