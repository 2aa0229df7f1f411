"""The "Track cells" panel: segment every frame of a time-lapse, link cells over time.

Pick the image layer, its T axis (like the Z axis of the Segment tab), the model and the
diameter (one value for every frame; 0 = estimate once), press **Run**: each frame is
segmented (progress per frame, **Cancel** stops within a frame), then cells are linked
(:func:`flowseg.engine.tracking.link.link_masks`).  Results:

* a Labels layer ``(T, [Z,] Y, X)`` in which a cell keeps its id over time;
* a Tracks layer with the lineage graph (daughters -> mother).

Correct the labels in any frame with napari's tools and press **Re-link**: the edited
Labels layer is linked again, keeping its ids where they still fit, and the Tracks layer
follows.  Layers are found through ``layer.metadata["flowseg"]`` (roles ``track_labels``
and ``tracks``), never by name.  All state lives on :class:`TrackWidget`.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning

from . import _layers
from ._jobs import Job
from ._model_store import ModelStore, devices
from ._segment_request import LOAD_FILE
from .engine.flows.params import MaskParams
from .engine.progress import ProgressEvent

__all__ = ["TrackWidget", "describe", "guess_time_axes"]

LABELS_ROLE, TRACKS_ROLE = "track_labels", "tracks"

_WORDS = {"diameter": "Measuring cell size", "frames": "Segmenting frame",
          "measuring": "Measuring cells in frame", "linking": "Linking frame pair",
          "lineage": "Finding divisions"}


def describe(event: ProgressEvent) -> str:
    """Plain words for the tracking stages (``"Segmenting frame 3/40"``)."""
    words = _WORDS.get(event.stage, event.stage.capitalize())
    if event.total > 1:
        words += f" {min(event.done, event.total)}/{event.total}"
    return words


def guess_time_axes(shape: tuple, rgb: bool = False) -> tuple[int | None, int | None,
                                                              int | None]:
    """``(t_axis, channel_axis, z_axis)`` guessed from a layer's shape.

    T is the first axis; a short (<= 4) last axis, or second axis of a 4D array, holds
    channels (RGB: the last axis); a 4D array without channels is ``(T, Z, Y, X)``.
    """
    nd = len(shape)
    if nd < 3:
        return None, None, None
    cax = nd - 1 if rgb or shape[-1] <= 4 else (1 if nd >= 4 and shape[1] <= 4 else None)
    rest = [a for a in range(1, nd) if a != cax]
    zax = rest[0] if len(rest) == 3 else None
    return 0, cax, zax


class TrackWidget(Container):
    """Dock panel tracking cells through a time-lapse image layer."""

    def __init__(self, viewer: napari.viewer.Viewer, models: ModelStore | None = None) -> None:
        super().__init__(labels=True, scrollable=True)
        self.viewer = viewer
        self.models = models if models is not None else ModelStore()
        self._build()
        self.job = Job("tracking", bar=self.bar.native, label=self.status.native,
                       cancel_button=self.cancel_btn.native, describe=describe)
        self.job.started.connect(self._update_buttons)
        self.job.finished.connect(self._update_buttons)
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed,
                   viewer.layers.events.reordered):
            ev.connect(self.reset_choices)
        self.reset_choices()
        self._on_image_changed()
        self.native.destroyed.connect(lambda *_: self.job.cancel_event.set())

    # ------------------------------------------------------------------ building
    def _build(self) -> None:
        self.image = ComboBox(label="image", choices=self.image_choices)
        self.t_axis = ComboBox(label="T axis", choices=[("none", None)])
        self.channel_axis = ComboBox(label="channel axis", choices=[("none", None)])
        self.z_axis = ComboBox(label="Z axis", choices=[("none", None)])
        self.cyto = ComboBox(label="cytoplasm", choices=[("channel 0", 0)])
        self.nucleus = ComboBox(label="nucleus", choices=[("none", None)])
        self.model = ComboBox(label="model", choices=lambda *_: self.models.choices())
        self.diameter = FloatSpinBox(label="diameter (px)", min=0.0, max=2000.0, step=1.0,
                                     value=0.0, tooltip="one diameter for every frame; 0 = "
                                                        "estimate it once from the movie")
        defaults = MaskParams()
        self.cellprob = FloatSpinBox(label="cellprob threshold", min=-6.0, max=6.0, step=0.1,
                                     value=defaults.cellprob_threshold)
        self.flow_threshold = FloatSpinBox(label="flow threshold", min=0.0, max=3.0, step=0.05,
                                           value=defaults.flow_threshold)
        self.do_3d = CheckBox(text="3D frames (segment each volume)", value=False)
        self.max_gap = SpinBox(label="max gap (frames)", min=0, max=10, value=2,
                               tooltip="frames a cell may be missed and keep its id")
        self.max_distance = FloatSpinBox(label="max move (px)", min=0.0, max=10000.0, value=0.0,
                                         tooltip="largest move between frames; 0 = one "
                                                 "cell diameter")
        self.divisions = CheckBox(text="detect divisions", value=True)
        self.device = ComboBox(label="device", choices=devices())
        self.run_btn = PushButton(text="Run")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.relink_btn = PushButton(text="Re-link edited labels",
                                     tooltip="link the selected tracked Labels layer again "
                                             "after you corrected some frames")
        self.bar = ProgressBar(visible=False)
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        buttons = Container(widgets=[self.run_btn, self.cancel_btn], layout="horizontal",
                            labels=False)
        self.extend([self.image, self.t_axis, self.channel_axis, self.z_axis, self.cyto,
                     self.nucleus, self.model, self.diameter, self.cellprob,
                     self.flow_threshold, self.do_3d, self.max_gap,
                     self.max_distance, self.divisions, self.device, buttons, self.relink_btn,
                     self.bar, self.status])
        self.image.changed.connect(self._on_image_changed)
        for w in (self.t_axis, self.channel_axis, self.z_axis):
            w.changed.connect(self._on_axes_changed)
        self.model.changed.connect(self._on_model_changed)
        self.run_btn.changed.connect(lambda *_: self.run())
        self.relink_btn.changed.connect(lambda *_: self.relink())

    # ------------------------------------------------------------------ choices
    def image_choices(self, widget: Any = None) -> list:
        """Image layers of the viewer that are not our own outputs."""
        return [(ly.name, ly) for ly in self.viewer.layers
                if isinstance(ly, Image) and _layers.role_of(ly) is None]

    def reset_choices(self, *args: Any) -> None:
        """Refresh the image picker (layers were added, removed or reordered)."""
        self.image.reset_choices()

    def _on_model_changed(self, value: Any = None) -> None:
        if value != LOAD_FILE:
            return
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self.native, "Load a flowseg or Cellpose model file")
        try:
            if path:
                self.model.reset_choices()
                self.model.value = self.models.add_file(path)
                return
        except ValueError as exc:
            show_error(str(exc))
        self.model.value = next(v for _, v in self.models.choices())

    def _on_image_changed(self, value: Any = None) -> None:
        layer = self.image.value
        if layer is None:
            return
        shape = tuple(layer.data.shape)
        t, c, z = guess_time_axes(shape, bool(layer.rgb))
        choices = [("none", None)] + [(f"{i} (size {n})", i) for i, n in enumerate(shape)]
        for w, v in ((self.t_axis, t), (self.channel_axis, c), (self.z_axis, z)):
            w.choices = choices
            w.value = v
        self.channel_axis.enabled = not layer.rgb
        self._on_axes_changed()

    def _on_axes_changed(self, value: Any = None) -> None:
        layer = self.image.value
        if layer is None:
            return
        cax = self.channel_axis.value
        nch = int(layer.data.shape[cax]) if cax is not None else 1
        names = [f"channel {i}" for i in range(nch)]
        self.cyto.choices = [(names[i], i) for i in range(nch)]
        self.cyto.value = 0
        self.nucleus.choices = [("none", None)] + [(names[i], i) for i in range(nch)]
        self.nucleus.value = 1 if nch == 2 and not layer.rgb else None
        self.do_3d.enabled = self.z_axis.value is not None
        self.do_3d.value = self.z_axis.value is not None

    def _update_buttons(self) -> None:
        idle = not self.job.running
        self.run_btn.enabled = idle
        self.relink_btn.enabled = idle

    # ------------------------------------------------------------------ requests
    def link_params(self) -> Any:
        """The :class:`~flowseg.engine.tracking.link.LinkParams` of the controls."""
        from .engine.tracking.link import LinkParams

        return LinkParams(max_distance=float(self.max_distance.value) or None,
                          max_gap=int(self.max_gap.value),
                          divisions=bool(self.divisions.value)).checked()

    def request(self) -> dict:
        """Validated arguments of a run (ValueError with a clear message)."""
        layer = self.image.value
        if layer is None:
            raise ValueError("no image layer: open a time-lapse first")
        shape = tuple(layer.data.shape)
        t, c, z = self.t_axis.value, self.channel_axis.value, self.z_axis.value
        if t is None:
            raise ValueError("choose the T (time) axis of the image")
        used = [a for a in (t, c, z) if a is not None]
        if len(set(used)) != len(used):
            raise ValueError("the T, channel and Z axes must be different axes")
        if len(shape) - len(used) != 2:
            raise ValueError(f"image of shape {shape}: after the T, channel and Z axes exactly "
                             "two axes (Y, X) must remain; check the axis choices")
        model = self.model.value
        if model in (None, LOAD_FILE):
            raise ValueError("no model chosen: pick a bundled model or load a model file")
        nch = int(shape[c]) if c is not None else 1
        channels = (self.cyto.value, self.nucleus.value) if nch > 1 else None
        data = layer.data[0] if layer.multiscale else layer.data  # full resolution, lazy
        return {"layer": layer, "data": data, "t_axis": t, "channel_axis": c, "z_axis": z,
                "channels": channels, "model": str(model), "device": self.device.value,
                "diameter": float(self.diameter.value) or None,
                "do_3d": bool(self.do_3d.value and z is not None), "link": self.link_params(),
                "mask": MaskParams(cellprob_threshold=self.cellprob.value,
                                   flow_threshold=self.flow_threshold.value)}

    # ------------------------------------------------------------------ running
    def run(self) -> Any:
        """Segment every frame and link, in a worker; returns the worker (None if refused)."""
        from .engine.tracking.driver import track

        if self.job.running:
            show_warning("tracking is already running; cancel it first")
            return None
        try:
            req = self.request()
        except ValueError as exc:
            show_error(str(exc))
            return None
        models = self.models

        def work(progress, cancel):
            t = req["t_axis"]  # "auto" chooses the model on the first frame
            first = np.asarray(np.take(req["data"], 0, axis=t))
            cax, zax = req["channel_axis"], req["z_axis"]
            model, _ = models.resolve(
                req["model"], first, channels=req["channels"], device=req["device"],
                channel_axis=None if cax is None else cax - (cax > t),
                z_axis=None if zax is None else zax - (zax > t), cancel=cancel)
            return track(model, req["data"], t_axis=req["t_axis"],
                         diameter=req["diameter"], link=req["link"], channels=req["channels"],
                         channel_axis=req["channel_axis"], z_axis=req["z_axis"],
                         do_3d=req["do_3d"], progress=progress, cancel=cancel,
                         **req["mask"].as_dict())

        return self.job.start(work, on_done=lambda res: self._show(req, res),
                              message="Loading the model")

    def relink(self, labels_layer: Any = None) -> Any:
        """Link the (edited) tracked Labels layer again; returns the worker."""
        from .engine.tracking.link import link_masks

        layer = labels_layer if labels_layer is not None else self._tracked_labels()
        if layer is None:
            show_error("select the tracked Labels layer to re-link (run the tracking first)")
            return None
        if self.job.running:
            show_warning("tracking is already running; cancel it first")
            return None
        try:
            params = self.link_params()
        except ValueError as exc:
            show_error(str(exc))
            return None
        data = np.asarray(layer.data)

        def work(progress, cancel):
            return link_masks(data, params, keep_ids=True, progress=progress, cancel=cancel)

        return self.job.start(work, on_done=lambda res: self._update(layer, res),
                              message="Linking")

    def _tracked_labels(self) -> Any:
        active = self.viewer.layers.selection.active
        if isinstance(active, Labels) and _layers.role_of(active) == LABELS_ROLE:
            return active
        image = self.image.value
        if image is None:
            return None
        found = _layers.find_outputs(self.viewer.layers, image, (LABELS_ROLE,))
        return found[-1] if found else None

    # ------------------------------------------------------------------ results
    def _show(self, req: dict, result: Any) -> None:
        source = req["layer"]
        if source not in self.viewer.layers:
            show_warning(f"image layer {source.name!r} was removed during the run")
            return
        for old in _layers.find_outputs(self.viewer.layers, source, (LABELS_ROLE, TRACKS_ROLE)):
            self.viewer.layers.remove(old)
        placement = _layers.spatial_placement(source, req["channel_axis"])
        spatial = [a for a in range(source.ndim) if a != req["channel_axis"]]
        cax = req["channel_axis"]
        if spatial.index(req["t_axis"]) != 0 or (cax is not None and not source.rgb and cax != 0):
            show_warning("napari lines up the (T, [Z,] Y, X) results with the image's last "
                         "axes: put T first and the channel axis before it (or open the "
                         "channels as separate layers) for an exact overlay")
        params = {"model": req["model"], "diameter": result.info.get("segment_diameter"),
                  "diameter_source": result.info.get("diameter_source"),
                  "link": result.info.get("params")}
        labels = self.viewer.add_labels(
            result.labels, name=f"{source.name} tracked", **placement,
            metadata=_layers.tag(LABELS_ROLE, source, params=params))
        self._add_tracks(labels, result, source, placement)
        self.viewer.layers.selection.active = labels
        self.status.value = self._summary(result)

    def _add_tracks(self, labels: Any, result: Any, source: Any, placement: dict) -> Any:
        nodes = result.nodes()
        if not len(nodes):
            show_info("no cells were found in any frame")
            return None
        meta = _layers.tag(TRACKS_ROLE, source, labels=str(labels.unique_id),
                           parents=dict(result.parents))
        return self.viewer.add_tracks(nodes, graph=result.graph(), name=f"{source.name} tracks",
                                      tail_length=10, metadata=meta, **placement)

    def tracks_layer_of(self, labels: Any) -> Any:
        """The Tracks layer made with a tracked Labels layer (None when gone)."""
        key = str(labels.unique_id)
        for ly in self.viewer.layers:
            info = (ly.metadata or {}).get(_layers.META_KEY, {})
            if _layers.role_of(ly) == TRACKS_ROLE and info.get("labels") == key:
                return ly
        return None

    def _update(self, labels: Any, result: Any) -> None:
        if labels not in self.viewer.layers:
            show_warning("the tracked Labels layer was removed during re-linking")
            return
        labels.data = result.labels
        tracks = self.tracks_layer_of(labels)
        info = dict((labels.metadata or {}).get(_layers.META_KEY, {}))
        if tracks is not None:
            self.viewer.layers.remove(tracks)
        source = next((ly for ly in self.viewer.layers
                       if str(ly.unique_id) == info.get("source")), None)
        placement = {"scale": tuple(labels.scale), "translate": tuple(labels.translate)}
        self._add_tracks(labels, result, source, placement)
        self.viewer.layers.selection.active = labels
        self.status.value = "Re-linked: " + self._summary(result)

    @staticmethod
    def _summary(result: Any) -> str:
        d = result.info.get("segment_diameter")
        size = f", diameter {d:.1f} px" if d else ""
        return (f"{_plural(result.n_tracks, 'track')}, "
                f"{_plural(result.n_divisions, 'division')} in "
                f"{_plural(result.n_frames, 'frame')}{size}")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")
