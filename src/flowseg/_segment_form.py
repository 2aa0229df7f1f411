"""The widgets of the Segment tab, their layout and the layer and model pickers.

:class:`SegmentForm` only builds and lists; :class:`~flowseg._segment_panel.SegmentPanel`
adds the behaviour (jobs, results, per-image settings).
"""

from __future__ import annotations

from typing import Any

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
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QSizePolicy

from . import _layers
from ._jobs import Job
from ._model_store import ModelStore, devices
from ._results import AFTER_EDITS
from ._segment_request import LOAD_FILE
from .engine.flows.params import MaskParams

__all__ = ["SegmentForm"]


class SegmentForm(Container):
    """The Segment tab's widgets (``image``, ``model``, ``diameter``, ``run_btn``, ...).

    The controls scroll; ``footer`` (Run, Cancel, progress bar, status) is placed below
    them by the dock.  Its three jobs share the footer's bar, status and Cancel button.
    """

    def __init__(self, viewer: Any, models: ModelStore) -> None:
        super().__init__(labels=True)
        self.viewer, self.models = viewer, models
        self._build()

    # ------------------------------------------------------------------ building
    def mask_params(self) -> MaskParams:
        """The mask parameters the threshold controls are set to."""
        return MaskParams(cellprob_threshold=self.cellprob.value,
                          flow_threshold=self.flow_threshold.value,
                          min_size=self.min_size.value)

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
        defaults = MaskParams()
        self.cellprob = FloatSlider(label="cellprob threshold", min=-6.0, max=6.0, step=0.1,
                                    value=defaults.cellprob_threshold)
        self.flow_threshold = FloatSlider(label="flow threshold", min=0.0, max=3.0, step=0.05,
                                          value=defaults.flow_threshold)
        self.min_size = SpinBox(label="min size (px)", min=-1, max=1_000_000,
                                value=defaults.min_size)
        self.after_edits = ComboBox(
            label="after corrections", choices=list(AFTER_EDITS), value=AFTER_EDITS[0],
            tooltip="what new thresholds do to a masks layer you corrected: keep every cell "
                    "you touched and update the others, or leave it and write a new layer. "
                    "Run always writes a new layer next to a corrected one.")
        self.more = CheckBox(text="more options (3D, augment, device)", value=False)
        self.do_3d = CheckBox(text="3D (segment the volume, not slices)", value=False)
        self.stitch = FloatSpinBox(label="stitch threshold", min=0.0, max=1.0, step=0.05,
                                   value=0.0, tooltip="slice by slice: IoU to join 2D masks "
                                                      "across Z")
        self.anisotropy = FloatSpinBox(label="anisotropy (Z/XY)", min=0.01, max=100.0, step=0.1,
                                       value=1.0)
        self.augment = CheckBox(text="augment (flip averaging)", value=False)
        self.device = ComboBox(label="device", choices=devices())
        self.advanced = (self.do_3d, self.stitch, self.anisotropy, self.augment, self.device)
        self.extend([self.image, self.channel_axis, self.z_axis, self.cyto, self.nucleus,
                     self.model, self.diameter, self.estimate_btn, self.shapes,
                     self.shapes_btn, self.preview, self.cellprob, self.flow_threshold,
                     self.min_size, self.after_edits, self.more, *self.advanced])
        self._show_more(False)
        # the footer stays visible below the scrolling controls (placed by the dock)
        self.run_btn = PushButton(text="Run")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.bar = ProgressBar(visible=False)
        self.status = Label(value="")
        buttons = Container(widgets=[self.run_btn, self.cancel_btn], layout="horizontal",
                            labels=False)
        buttons.margins = (0, 0, 0, 0)
        self.footer = Container(widgets=[buttons, self.bar, self.status], labels=False)
        self.footer.margins = (9, 4, 9, 6)
        self.status.native.setWordWrap(True)
        self.status.native.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Minimum)
        shared = {"bar": self.bar.native, "label": self.status.native,
                      "cancel_button": self.cancel_btn.native}
        self.segment_job = Job("segmentation", **shared)
        self.estimate_job = Job("diameter estimate", **shared)
        self.recompute_job = Job("mask update", **shared)
        self.jobs = (self.segment_job, self.estimate_job, self.recompute_job)

    def _show_more(self, on: bool) -> None:
        for w in self.advanced:
            w.visible = bool(on)

    # ------------------------------------------------------------------ choices
    def image_choices(self, widget: Any = None) -> list:
        """Image layers of the viewer (not ours; labels cannot be segmented)."""
        return [(ly.name, ly) for ly in self.viewer.layers
                if isinstance(ly, Image) and _layers.role_of(ly) is None]

    def shapes_choices(self, widget: Any = None) -> list:
        """Shapes layers that may hold circles drawn around cells."""
        return [(ly.name, ly) for ly in self.viewer.layers
                if isinstance(ly, Shapes) and _layers.role_of(ly) is None]

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
