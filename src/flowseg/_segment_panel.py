"""The Segment tab: pick an image, a model and the cell size, run, refine the thresholds.

:class:`SegmentPanel` follows the active image layer and remembers its settings per image
layer (:class:`~flowseg._session.ImageSettings`).  Segmentation, the diameter estimate and
mask recomputation each run as a :class:`~flowseg._jobs.Job` (own cancel event) sharing
the tab's progress bar, plain-word status and Cancel button; only one runs at a time.
Results are written by :class:`~flowseg._results.ResultLayers`, which never overwrites the
user's corrections.  The panel talks to the rest of the dock through psygnal signals.

Big images go block by block (:mod:`flowseg._segment_big`): a multiscale or big lazy layer
always, another image when the memory check before the run finds too little free memory
and the user agrees.  Their labels are a lazy, zarr-backed layer without flows.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal
from qtpy.QtCore import QTimer

from . import _segment_big as big
from ._diameter_preview import DiameterPreview
from ._inputs import diameter_from_shapes
from ._model_store import ModelStore
from ._panel_state import PanelState
from ._results import ResultLayers
from ._segment_form import SegmentForm
from ._segment_request import LOAD_FILE, SegmentRequest, make_request
from ._session import Session
from .engine.progress import Cancelled

__all__ = ["SegmentPanel"]


class SegmentPanel(SegmentForm):
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
        super().__init__(viewer, models)
        self.session = Session()
        self.results = ResultLayers(viewer, self.session)
        self.preview_circle = DiameterPreview(viewer)
        self.state = PanelState(self)
        self._pending_recompute = False
        self._debounce = QTimer()
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(150)
        self._debounce.timeout.connect(self.recompute_masks)
        self._connect()

    def _connect(self) -> None:
        self.image.changed.connect(self.state.on_image_changed)
        for w in (self.channel_axis, self.z_axis):  # Qt's signal: magicgui says nothing
            w.native.currentIndexChanged.connect(self.state.on_axes_changed)  # on "none"
        self.model.changed.connect(self._on_model_changed)
        self.diameter.changed.connect(self._update_preview)
        self.preview.changed.connect(self._update_preview)
        self.more.changed.connect(self._show_more)
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
            elif isinstance(exc, ValueError):  # our input errors: the message says it all
                show_error(f"{what} failed: {exc}")
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
                            augment=self.augment.value, mask=self.mask_params())

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
        how = self._how_to_run(req)
        if how == big.CANCEL:
            self.status.value = f"{req.layer.name}: not run (not enough free memory)."
            return None
        self.state.remember(req.layer)
        self.preview_circle.hide()
        store = self.models
        chosen: dict = {}  # the model "auto" chose

        def load(data: Any, cax: Any, zax: Any, cancel: Any = None) -> Any:
            model, chosen["name"] = store.resolve(req.model_path, data, channels=req.channels,
                                                  channel_axis=cax, z_axis=zax,
                                                  device=req.device, cancel=cancel)
            return model

        if how == big.BLOCKWISE:  # "auto" chooses on the central window of the middle slice
            return self.segment_job.start(
                big.blockwise_work(lambda: load(*big.estimate_crop(req.data, req.channel_axis,
                                                                   req.z_axis), None), req),
                on_done=lambda res: self._add_block_outputs(req, res, chosen.get("name")),
                on_error=self._error("segmentation"),
                message=f"Loading the model for {req.layer.name} (block by block)")

        def work(progress: Any, cancel: Any) -> Any:
            data = np.asarray(req.data)
            model = load(data, req.channel_axis, req.z_axis, cancel)
            # memory: checked above (and the user may have chosen to run anyway)
            seg = model.segment(data, progress=progress, cancel=cancel, check_memory=False,
                                **req.engine_kwargs())
            return seg, (_why_empty(data, req) if seg.n_objects == 0 else "")

        return self.segment_job.start(
            work, on_done=lambda out: self._add_outputs(req, *out, chosen=chosen.get("name")),
            on_error=self._error("segmentation"),
            message=f"Loading the model for {req.layer.name}")

    def _how_to_run(self, req: SegmentRequest) -> str:
        """Block by block (big or multiscale layer), in memory (it fits), or what the user
        chooses when the in-memory run would need more than the free memory."""
        if big.goes_blockwise(req.layer):
            return big.BLOCKWISE
        try:
            est = big.memory_check(req, self.models.load(req.model_path, req.device))
        except Exception:  # noqa: BLE001 - a model that does not load fails in the job
            return big.IN_MEMORY
        if est.fits:
            return big.IN_MEMORY
        return big.ask_blockwise(self.native, est, req.layer.name)

    def _add_block_outputs(self, req: SegmentRequest, res: Any, chosen: str | None = None
                           ) -> None:
        source = req.layer
        if source not in self.viewer.layers:
            show_warning(f"image layer {source.name!r} was removed during the run; the "
                         f"labels are in {res.path}")
            self.segment_job.set_text(f"The image was removed; labels in {res.path}.")
            return
        params = {**req.record(), "diameter_used": float(res.diameter), "model_chosen": chosen}
        rec, kept = self.results.add_blocks(source, res, params, req.channel_axis)
        if self.image.value is source:
            self.viewer.layers.selection.active = rec.masks
        text = (f"{res.n_objects} cells (diameter {res.diameter:.1f} px{_chosen(chosen)}), "
                f"block by block ({res.plan.n_blocks} blocks); labels saved in {res.path}. "
                f"{big.NO_FLOWS}")
        if kept:
            text += f" Your corrected {', '.join(repr(ly.name) for ly in kept)} was kept."
        self.segment_job.set_text(text)
        self.segmented.emit(source, rec.masks)

    def _add_outputs(self, req: SegmentRequest, seg: Any, why_empty: str = "",
                     chosen: str | None = None) -> None:
        source = req.layer
        if source not in self.viewer.layers:
            show_warning(f"image layer {source.name!r} was removed during the run; "
                         "result dropped")
            self.segment_job.set_text("Result dropped: the image was removed.")
            return
        params = req.record()
        params["diameter_used"] = float(seg.diameter)
        params["model_chosen"] = chosen
        res, kept = self.results.add(source, seg, params, req.channel_axis)
        if self.image.value is source:
            self.viewer.layers.selection.active = res.masks
        text = f"{seg.n_objects} cells (diameter {seg.diameter:.1f} px{_chosen(chosen)})"
        if why_empty:
            text = f"0 cells: {why_empty}, nothing to segment"
            if "channel (" in why_empty:
                text += "; choose another channel"
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

        crop = big.goes_blockwise(req.layer)

        def work(progress: Any, cancel: Any) -> float:
            data, cax, zax = req.data, req.channel_axis, req.z_axis
            if crop:  # a big image: its middle slice's central window, read alone
                data, cax = big.estimate_crop(data, cax, zax)
            elif zax is not None:  # the size model works in 2D: use the middle slice
                data = np.take(np.asarray(data), data.shape[zax] // 2, axis=zax)
                if cax is not None and cax > zax:
                    cax -= 1
            model, _ = store.resolve(req.model_path, np.asarray(data), channels=req.channels,
                                     channel_axis=cax, device=req.device, cancel=cancel)
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
        if self.state.quiet:
            return
        if self.session.current_blocks(self.image.value) is not None and not self.busy:
            self.status.value = big.NO_FLOWS  # nothing to recompute: say so
            return
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
        wanted = self.mask_params()
        kw = {"cellprob_threshold": wanted.cellprob_threshold,
              "flow_threshold": wanted.flow_threshold, "min_size": wanted.min_size}
        mode = self.after_edits.value
        if all(res.seg.params.get(k) == v for k, v in kw.items()):
            return None  # nothing changed
        seg = res.seg

        def done(new: Any) -> None:
            if res.masks not in self.viewer.layers:
                return
            now = self.results.update(res, new, mode)
            n = int(np.count_nonzero(np.unique(np.asarray(now.masks.data))))
            text = f"{n} cells (thresholds updated{'; your corrections kept' * res.edited})"
            if now is not res:
                text = (f"{n} cells in the new layer {now.masks.name!r}; your corrected "
                        f"{res.masks.name!r} is unchanged")
                self.viewer.layers.selection.active = now.masks
            self.recompute_job.set_text(text)

        return self.recompute_job.start(
            lambda progress, cancel: seg.recompute(**kw, progress=progress, cancel=cancel),
            on_done=done, on_error=self._error("mask update"), message="Updating the masks")

    def _on_edited(self, res: Any) -> None:
        if self.session.current(self.image.value) is res and not self.busy:
            self.status.value = (f"Your corrections in {res.masks.name!r} are kept when you "
                                 "run again or change a threshold.")

    def close_jobs(self) -> None:
        """Cancel every running job and drop the preview (the dock is closing)."""
        for job in self.jobs:  # no Qt calls: the widgets may be gone already
            job.cancel_event.set()
        with contextlib.suppress(RuntimeError):  # a pending threshold update: not any more
            self._debounce.stop()
        with contextlib.suppress(RuntimeError):  # Qt objects already deleted
            self.preview_circle.hide()


def _chosen(name: str | None) -> str:
    """``"; model 'nuclei' (auto)"`` for the status line when "auto" chose, else ``""``."""
    return "" if name is None else f"; model {name!r}, chosen by style (auto)"


def _why_empty(data: np.ndarray, req: SegmentRequest) -> str:
    """Why an image gave no cells when it cannot hold any (constant channels, too small),
    in words for the status line; ``""`` otherwise."""
    from .engine.errors import InputError
    from .engine.inference.checks import check_image

    names = ("red", "green", "blue", "alpha") if req.layer.rgb else None
    try:
        info = check_image(data, channels=req.channels, channel_axis=req.channel_axis,
                           z_axis=req.z_axis, do_3d=req.do_3d,
                           stitch_threshold=req.mask.stitch_threshold)
    except InputError:
        return ""
    return info.nothing_to_segment(names)
