"""Controls and run logic of :class:`flowseg._widget.SegmentWidget` (kept apart for size).

Functions here take the widget as their first argument; all state stays on the widget.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import (CheckBox, ComboBox, Container, FloatSlider, FloatSpinBox,
                              Label, PushButton, SpinBox)
from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning

from . import _layers
from ._inputs import Axes, check_axes, layer_kind, n_channels
from ._progress import start_worker
from .engine.progress import Cancelled

__all__ = ["build_controls", "build_request", "start_segmentation", "start_recompute",
           "update_diameter_preview"]


def build_controls(w: Any) -> Container:
    """The magicgui controls of the Segment tab, wired to the widget ``w``."""
    from ._widget import _devices

    c = Container(labels=True)
    c.image = ComboBox(label="image", choices=w.image_choices)
    c.channel_axis = ComboBox(label="channel axis", choices=[("none", None)])
    c.z_axis = ComboBox(label="Z axis", choices=[("none", None)])
    c.cyto = ComboBox(label="cytoplasm", choices=[("channel 0", 0)])
    c.nucleus = ComboBox(label="nucleus", choices=[("none", None)])
    c.model = ComboBox(label="model", choices=w.model_choices)
    c.diameter = FloatSpinBox(label="diameter (px)", min=0.0, max=2000.0, step=1.0, value=30.0,
                              tooltip="object diameter in pixels; 0 = the model's own size")
    c.estimate_btn = PushButton(text="estimate from image")
    c.shapes = ComboBox(label="circles layer", choices=w.shapes_choices, nullable=True)
    c.shapes_btn = PushButton(text="diameter from Shapes layer")
    c.preview = CheckBox(text="show diameter preview", value=True)
    c.cellprob = FloatSlider(label="cellprob threshold", min=-6.0, max=6.0, step=0.1, value=0.0)
    c.flow_threshold = FloatSlider(label="flow threshold", min=0.0, max=3.0, step=0.05, value=0.4)
    c.min_size = SpinBox(label="min size (px)", min=-1, max=1_000_000, value=15)
    c.do_3d = CheckBox(text="3D (segment the volume, not slices)", value=False)
    c.stitch = FloatSpinBox(label="stitch threshold", min=0.0, max=1.0, step=0.05, value=0.0,
                            tooltip="for slice-by-slice: IoU to join 2D masks across Z")
    c.anisotropy = FloatSpinBox(label="anisotropy (Z/XY)", min=0.01, max=100.0, step=0.1, value=1.0)
    c.augment = CheckBox(text="augment (flip averaging)", value=False)
    c.device = ComboBox(label="device", choices=_devices())
    c.run_btn = PushButton(text="Run")
    c.cancel_btn = PushButton(text="Cancel", enabled=False)
    c.status = Label(value="")
    c.status.native.setWordWrap(True)
    c.extend([c.image, c.channel_axis, c.z_axis, c.cyto, c.nucleus, c.model, c.diameter,
              c.estimate_btn, c.shapes, c.shapes_btn, c.preview, c.cellprob, c.flow_threshold,
              c.min_size, c.do_3d, c.stitch, c.anisotropy, c.augment, c.device, c.run_btn,
              c.cancel_btn, c.status])

    c.image.changed.connect(w._on_image_changed)
    c.channel_axis.changed.connect(w._on_axes_changed)
    c.z_axis.changed.connect(w._on_axes_changed)
    c.model.changed.connect(w._on_model_changed)
    c.diameter.changed.connect(w._update_preview)
    c.preview.changed.connect(w._update_preview)
    c.estimate_btn.changed.connect(lambda *_: w.estimate_diameter())
    c.shapes_btn.changed.connect(lambda *_: w.diameter_from_shapes())
    for t in (c.cellprob, c.flow_threshold, c.min_size):
        t.changed.connect(w._on_threshold_changed)
    c.run_btn.changed.connect(lambda *_: w.run())
    c.cancel_btn.changed.connect(lambda *_: w.cancel())
    return c


def build_request(w: Any, layer: Any = None) -> dict:
    """Validated engine arguments for segmenting ``layer`` (default: the picked image)."""
    c = w.controls
    layer = c.image.value if layer is None else layer
    if layer is None:
        raise ValueError("no image layer: open an image (or File > Open Sample > FlowSeg) first")
    if not isinstance(layer, Image):
        raise ValueError(f"layer {layer.name!r} is a {layer_kind(layer)} layer; pick an image "
                         "layer to segment")
    shape = tuple(layer.data.shape)
    ax = w.axes() if layer is c.image.value else Axes(*_guess(layer))
    check_axes(shape, ax, bool(layer.rgb))
    nch = n_channels(shape, ax)
    cyto, nuc = (c.cyto.value, c.nucleus.value) if layer is c.image.value else (0, None)
    for name, v in (("cytoplasm", cyto), ("nucleus", nuc)):
        if v is not None and not 0 <= v < nch:
            raise ValueError(f"{name} channel {v} does not exist (the image has {nch} channels)")
    model_path = c.model.value
    if model_path in (None, "load file…"):
        raise ValueError("no model chosen: pick a bundled model or load a model file")
    zax = ax.z_axis
    do_3d = bool(c.do_3d.value) and zax is not None
    return {
        "layer": layer, "data": layer.data[0] if layer.multiscale else layer.data,
        "channel_axis": ax.channel_axis, "z_axis": zax,
        "channels": (cyto, nuc) if nch > 1 or nuc is not None else None,
        "model_path": str(model_path), "device": c.device.value,
        "diameter": float(c.diameter.value) or None,
        "do_3d": do_3d,
        "stitch_threshold": float(c.stitch.value) if zax is not None and not do_3d else 0.0,
        "anisotropy": float(c.anisotropy.value) if do_3d else None,
        "augment": bool(c.augment.value),
        "cellprob_threshold": float(c.cellprob.value),
        "flow_threshold": float(c.flow_threshold.value),
        "min_size": int(c.min_size.value),
    }


def _guess(layer: Any) -> tuple:
    from ._inputs import guess_axes

    a = guess_axes(tuple(layer.data.shape), bool(layer.rgb))
    return a.channel_axis, a.z_axis


ENGINE_KEYS = ("channels", "channel_axis", "z_axis", "diameter", "do_3d", "anisotropy",
               "stitch_threshold", "augment", "cellprob_threshold", "flow_threshold", "min_size")


def _params(req: dict) -> dict:
    """JSON-able record of a run (stored in the output layers' metadata)."""
    p = {k: req[k] for k in ENGINE_KEYS}
    p["channels"] = list(p["channels"]) if p["channels"] is not None else None
    p["model"] = req["model_path"]
    p["device"] = req["device"]
    return p


def start_segmentation(w: Any, layer: Any = None) -> Any:
    """Validate, then segment in a worker; outputs appear when it returns."""
    if w.worker is not None:
        show_warning("a segmentation is already running; cancel it first")
        return None
    try:
        req = build_request(w, layer)
    except ValueError as exc:
        show_error(str(exc))
        return None
    w.cancel_event.clear()
    w._run_done = False
    progress, cancel = w.progress, w.cancel_event

    def work():
        data = np.asarray(req["data"])
        model = w.load_model(req["model_path"], req["device"])
        kwargs = {k: req[k] for k in ENGINE_KEYS}
        if kwargs["anisotropy"] is None:
            del kwargs["anisotropy"]
        seg = model.segment(data, progress=progress, cancel=cancel, **kwargs)
        return seg

    w._set_running(True)
    w.controls.status.value = "loading model…"
    progress.start(f"segmenting {req['layer'].name}")
    w.worker = start_worker(work, lambda seg: _add_outputs(w, req, seg),
                            lambda exc: _on_error(w, exc, "segmentation"), lambda: _finish(w))
    return w.worker


def _on_error(w: Any, exc: BaseException, what: str) -> None:
    w._run_done = True
    if isinstance(exc, Cancelled):
        show_info(f"{what} cancelled")
        w.controls.status.value = "cancelled"
    else:
        import logging

        logging.getLogger("flowseg").error("%s failed", what, exc_info=exc)
        show_error(f"{what} failed: {type(exc).__name__}: {exc}")
        w.controls.status.value = f"error: {exc}"


def _finish(w: Any) -> None:
    w.worker = None
    w.progress.close()
    w._set_running(False)


def _add_outputs(w: Any, req: dict, seg: Any) -> None:
    """Replace this image's previous outputs with the new ones."""
    viewer, source = w.viewer, req["layer"]
    w._run_done = True
    if source not in viewer.layers:
        show_warning(f"image layer {source.name!r} was removed during the run; result dropped")
        return
    for old in _layers.find_outputs(viewer.layers, source):
        viewer.layers.remove(old)
    params = _params(req)
    params["diameter_used"] = float(seg.diameter)
    placement = _layers.spatial_placement(source, req["channel_axis"])
    made = {}
    for data, kwargs, kind in _layers.output_layer_data(seg, source, placement, params):
        made[kwargs["metadata"]["flowseg"]["role"]] = getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.layers.selection.active = made["masks"]
    w._results[str(source.unique_id)] = {"seg": seg, "layers": made, "params": params}
    n = int(len(np.unique(seg.masks)) - 1)
    w.controls.status.value = f"{n} objects (diameter {seg.diameter:.1f} px)"
    cax, zax = req["channel_axis"], req["z_axis"]
    if cax is not None and zax is not None and zax < cax and not source.rgb:
        show_warning("the image has Z before its channel axis; napari lines up the (Z, Y, X) "
                     "outputs with the image's last axes, so they may look misplaced: put the "
                     "channel axis first (e.g. numpy.moveaxis) for an exact overlay")
    w.train_panel.reset_choices()


def start_recompute(w: Any) -> Any:
    """Recompute masks of the picked image from its stored flows (latest settings win)."""
    res = w.result_for(w.controls.image.value)
    if res is None:
        return None
    if w._recompute_worker is not None:
        w._recompute_pending = True
        return None
    c = w.controls
    kw = dict(cellprob_threshold=float(c.cellprob.value),
              flow_threshold=float(c.flow_threshold.value), min_size=int(c.min_size.value))
    seg = res["seg"]

    def done(new):
        res["seg"] = new
        layer = res["layers"].get("masks")
        if layer is not None and layer in w.viewer.layers:
            layer.data = new.masks
            meta = dict(layer.metadata)
            info = dict(meta.get(_layers.META_KEY, {}))
            info["params"] = {**info.get("params", {}), **kw}
            meta[_layers.META_KEY] = info
            layer.metadata = meta
        n = int(len(np.unique(new.masks)) - 1)
        c.status.value = f"{n} objects (recomputed)"

    def finished():
        w._recompute_worker = None
        if w._recompute_pending:
            w._recompute_pending = False
            start_recompute(w)

    w._recompute_worker = start_worker(lambda: seg.recompute(**kw), done,
                                       lambda exc: _on_error(w, exc, "mask recomputation"),
                                       finished)
    return w._recompute_worker


def update_diameter_preview(w: Any) -> None:
    """Draw (or move/resize) a circle of the current diameter in the image's corner."""
    viewer, c = w.viewer, w.controls
    layer = c.image.value
    preview = next((ly for ly in viewer.layers if _layers.role_of(ly) == "diameter_preview"), None)
    if layer is None or not c.preview.value or not c.diameter.value:
        if preview is not None:
            preview.visible = False
        return
    scale = np.asarray(layer.scale, float)[-2:] if not layer.rgb else np.asarray(layer.scale, float)[-2:]
    translate = np.asarray(layer.translate, float)[-2:]
    shape = np.asarray(layer.data.shape)[-3:-1] if layer.rgb else np.asarray(layer.data.shape)[-2:]
    d = float(c.diameter.value)
    # bottom-left corner, as in the Cellpose GUI, in the image's pixel coordinates
    y0, x0 = shape[0] - d - 2, 2.0
    ellipse = np.array([[y0, x0], [y0, x0 + d], [y0 + d, x0 + d], [y0 + d, x0]])
    if preview is None:
        viewer.add_shapes([ellipse], shape_type="ellipse", name="diameter preview",
                          face_color=[1, 0, 1, 0.4], edge_color=[1, 0, 1, 1], edge_width=0.5,
                          scale=scale, translate=translate, opacity=0.8,
                          metadata=_layers.tag("diameter_preview"))
        viewer.layers.selection.active = layer
    else:
        preview.data = [ellipse]
        preview.shape_type = ["ellipse"]
        preview.scale, preview.translate = scale, translate
        preview.visible = True
