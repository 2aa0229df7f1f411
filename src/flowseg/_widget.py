"""The "Segment cells" dock widget: the Segment, Edit and Train tabs in one dock.

:class:`SegmentWidget` builds the tabs, keeps the layer pickers up to date and offers a
small public API used by the Train tab and by scripts: :meth:`~SegmentWidget.run`,
:meth:`~SegmentWidget.refresh_models`, :meth:`~SegmentWidget.current_model_name`, and the
Qt signal ``segmented(image_layer, labels_layer)``.  The work itself happens in the panels
(:class:`~flowseg._segment_panel.SegmentPanel`, :class:`~flowseg._edit_tools.EditPanel`,
the Train tab's ``TrainPanel``), each with its own jobs and Cancel.
"""

from __future__ import annotations

from typing import Any

import napari
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFrame,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ._edit_tools import EditPanel
from ._model_store import ModelStore
from ._segment_panel import SegmentPanel
from ._segment_request import SegmentRequest
from ._train_widget import TrainPanel

__all__ = ["SegmentWidget"]


def _page(controls: QWidget, footer: QWidget | None = None) -> QWidget:
    """A tab page: the controls scroll (top-aligned), the footer stays visible below them."""
    inner = QWidget()
    inner_lay = QVBoxLayout(inner)
    inner_lay.setContentsMargins(0, 0, 0, 0)
    inner_lay.addWidget(controls)
    inner_lay.addStretch(1)  # controls at the top, not spread over the height
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.NoFrame)
    scroll.setWidget(inner)
    for combo in controls.findChildren(QComboBox):  # long layer names must not widen the dock
        combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(10)
    bar = scroll.verticalScrollBar().sizeHint().width()
    scroll.setMinimumWidth(controls.minimumSizeHint().width() + bar)
    page = QWidget()
    lay = QVBoxLayout(page)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(0)
    lay.addWidget(scroll, 1)
    if footer is not None:
        lay.addWidget(footer)
    return page


class SegmentWidget(QWidget):
    """Dock widget segmenting image layers with a flow model, editing and training.

    Signals
    -------
    segmented(image_layer, labels_layer)
        Emitted when a segmentation result (a masks Labels layer) was added.
    """

    segmented = Signal(object, object)

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        from .engine.flows.dynamics import warmup_in_background

        warmup_in_background()  # compile the flow engine while the user sets up the run
        # napari hands plugin widgets a PublicOnlyProxy of the viewer, which wraps every
        # object it returns in a new proxy: layers would then fail identity checks
        # (``layer is other``) against the same layer reached another way (events, the
        # user's scripts).  We use only public API, so we keep the viewer itself.
        viewer = getattr(viewer, "__wrapped__", viewer)
        self.viewer = viewer
        self.models = ModelStore()
        self._model_cache = self.models.cache  # (path, device) -> loaded model
        self.segment_panel = SegmentPanel(viewer, self.models)
        self.edit_panel = EditPanel(viewer, self.segment_panel.session,
                                    self.segment_panel.results)
        self.train_panel = TrainPanel(viewer, self)
        tabs = QTabWidget()
        tabs.addTab(_page(self.segment_panel.native, self.segment_panel.footer.native),
                    "Segment")
        tabs.addTab(_page(self.edit_panel.native), "Edit")
        tabs.addTab(_page(self.train_panel.native), "Train")
        self.tabs = tabs
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(tabs)

        self.segment_panel.segmented.connect(self._on_segmented)
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed,
                   viewer.layers.events.reordered):
            ev.connect(self._reset_choices)
        self._reset_choices()
        self.segment_panel.state.on_image_changed()
        self.destroyed.connect(self.segment_panel.close_jobs)

    @property
    def controls(self) -> SegmentPanel:
        """The Segment tab (its widgets: ``image``, ``model``, ``diameter``, ``device``, ...)."""
        return self.segment_panel

    # ------------------------------------------------------------------ layer lists
    def _reset_choices(self, event: Any = None) -> None:
        self.segment_panel.reset_choices()
        self.edit_panel.reset_choices()
        self.train_panel.reset_choices()

    def _on_segmented(self, image: Any, labels: Any) -> None:
        self.train_panel.reset_choices()
        self.segmented.emit(image, labels)

    # ------------------------------------------------------------------ models
    def model_choices(self, widget: Any = None) -> list:
        """``(label, path)`` of the models offered, ending with "load file…"."""
        return self.models.choices()

    def refresh_models(self, select: str | None = None) -> None:
        """Re-read the model folders; select the model file ``select`` if given."""
        self.segment_panel.select_model(select)

    def add_model_file(self, path: str) -> None:
        """Add a model file (ours or Cellpose 1-3) to the picker and select it."""
        self.segment_panel.select_model(self.models.add_file(path))

    def current_model_name(self) -> str | None:
        """The chosen model as :meth:`flowseg.Model.load` accepts it (its file path).

        ``self.models.label_of(path)`` gives the name shown in the picker.
        """
        value = self.segment_panel.model.value
        return None if value in (None, "load file…") else str(value)

    def current_device(self) -> str:
        """The torch device chosen in the Segment tab."""
        return str(self.segment_panel.device.value)

    def load_model(self, path: str, device: str = "cpu") -> Any:
        """Load (and cache) a model; safe in worker threads."""
        return self.models.load(path, device)

    # ------------------------------------------------------------------ Segment tab API
    @property
    def image_layer(self) -> Any:
        """The image layer the Segment tab works on."""
        return self.segment_panel.image.value

    @property
    def worker(self) -> Any:
        """The running segmentation's worker (None when idle)."""
        return self.segment_panel.segment_job.worker

    def request(self, layer: Any = None) -> SegmentRequest:
        """Validated engine arguments (ValueError with a clear message)."""
        return self.segment_panel.request(layer)

    def run(self, layer: Any = None) -> Any:
        """Segment ``layer`` (default: the picked image) in a worker; returns the worker."""
        return self.segment_panel.run(layer)

    def estimate_diameter(self) -> Any:
        """Estimate the picked image's diameter in a worker; returns the worker."""
        return self.segment_panel.estimate_diameter()

    def diameter_from_shapes(self) -> float | None:
        """Diameter from the circles of the chosen Shapes layer."""
        return self.segment_panel.diameter_from_shapes()

    def recompute_masks(self) -> Any:
        """New masks from the stored flows with the current thresholds."""
        return self.segment_panel.recompute_masks()

    def cancel(self) -> None:
        """Cancel the Segment tab's running job (never a training)."""
        for job in self.segment_panel.jobs:
            job.cancel()
