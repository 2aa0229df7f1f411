"""The Edit tab: delete or merge cells by clicking them, outlines, measurements as CSV.

Clicks go through a mouse callback on the chosen Labels layer; the changes are made with
``Labels.data_setitem``, so they are napari edits like the brush's: undoable with napari's
undo, and counted as corrections (kept on re-run and threshold changes).
Measurements (area, centroid, mean intensity per channel) use the image the masks were
made from and can be saved as CSV; they also become the layer's ``features``, which napari
shows when the pointer is over a cell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton, Table
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info

from . import _layers
from ._inputs import guess_axes
from ._measure import measure, write_csv
from ._results import ResultLayers
from ._session import Session

__all__ = ["CLICK_MODES", "EditPanel", "delete_label", "merge_labels"]

CLICK_MODES = ("do nothing", "delete it", "merge it with the next one")


def delete_label(layer: Any, label: int) -> int:
    """Erase object ``label`` from a Labels layer (one undoable step); returns its size."""
    idx = np.nonzero(np.asarray(layer.data) == int(label))
    if label and idx[0].size:
        layer.data_setitem(idx, 0)
    return int(idx[0].size) if label else 0


def merge_labels(layer: Any, keep: int, other: int) -> int:
    """Give object ``other`` the label ``keep`` (one undoable step); returns pixels changed."""
    if not keep or not other or keep == other:
        return 0
    idx = np.nonzero(np.asarray(layer.data) == int(other))
    if idx[0].size:
        layer.data_setitem(idx, int(keep))
    return int(idx[0].size)


class EditPanel(Container):
    """Controls of the Edit tab."""

    def __init__(self, viewer: Any, session: Session, results: ResultLayers) -> None:
        super().__init__(labels=False)
        self.viewer, self.session, self.results = viewer, session, results
        self.layer = ComboBox(label="labels", choices=self._labels_choices, nullable=True)
        self.outlines = CheckBox(text="show cells as outlines", value=False)
        self.click = ComboBox(label="click a cell to", choices=list(CLICK_MODES),
                              value=CLICK_MODES[0])
        self.image = ComboBox(label="intensities from", choices=self._image_choices,
                              nullable=True)
        self.measure_btn = PushButton(text="Measure cells")
        self.save_btn = PushButton(text="Save table as CSV…", enabled=False)
        self.table = Table()
        self.info = Label(value="")
        self.info.native.setWordWrap(True)
        form = Container(widgets=[self.layer, self.outlines, self.click, self.image])
        form.margins = (0, 0, 0, 0)
        self.extend([form, self.measure_btn, self.table, self.save_btn, self.info])
        self.table.native.setMinimumHeight(120)
        self.table.native.setMaximumHeight(260)
        self.measurements: dict[str, np.ndarray] = {}
        self._hooked: Any = None  # the Labels layer holding our mouse callback
        self._first: int | None = None  # first cell of a merge
        self.layer.changed.connect(self._on_layer_changed)
        self.click.changed.connect(lambda *_: self._hook())
        self.outlines.changed.connect(self._on_outlines)
        self.measure_btn.changed.connect(lambda *_: self.measure())
        self.save_btn.changed.connect(lambda *_: self._save_dialog())
        viewer.layers.selection.events.active.connect(self._follow_active)

    # ------------------------------------------------------------------ layers
    def _labels_choices(self, widget: Any = None) -> list:
        return [(ly.name, ly) for ly in self.viewer.layers if isinstance(ly, Labels)]

    def _image_choices(self, widget: Any = None) -> list:
        return [(ly.name, ly) for ly in self.viewer.layers
                if isinstance(ly, Image) and _layers.role_of(ly) is None]

    def reset_choices(self, *args: Any) -> None:
        """Refresh the layer pickers."""
        self.layer.reset_choices()
        self.image.reset_choices()
        if self._hooked is not None and self._hooked not in self.viewer.layers:
            self._hooked = None

    def _follow_active(self, event: Any = None) -> None:
        layer = self.viewer.layers.selection.active
        if isinstance(layer, Labels):
            if layer not in self.layer.choices:
                self.layer.reset_choices()
            if layer in self.layer.choices:
                self.layer.value = layer

    def _source_image(self, labels: Any) -> Any:
        sid = _layers.source_of(labels)
        return next((ly for ly in self.viewer.layers if Session.key(ly) == sid), None)

    def _on_layer_changed(self, value: Any = None) -> None:
        src = self._source_image(value) if value is not None else None
        if src is not None:
            self.image.reset_choices()
            if src in self.image.choices:
                self.image.value = src
        self._hook()

    def _on_outlines(self, on: bool) -> None:
        self.results.set_outlines(bool(on))
        if self.layer.value is not None:
            self.layer.value.contour = 2 if on else 0

    # ------------------------------------------------------------------ clicking
    def _hook(self) -> None:
        """Put the click callback on the chosen layer (only while a click tool is on)."""
        if self._hooked is not None and self._on_click in self._hooked.mouse_drag_callbacks:
            self._hooked.mouse_drag_callbacks.remove(self._on_click)
        self._hooked, self._first = None, None
        layer = self.layer.value
        if layer is None or self.click.value == CLICK_MODES[0]:
            self.info.value = ""
            return
        layer.mouse_drag_callbacks.append(self._on_click)
        layer.mode = "pan_zoom"  # a click must not paint as well
        self._hooked = layer
        self.info.value = f"Click a cell in {layer.name!r} to {self.click.value}."

    def _on_click(self, layer: Any, event: Any) -> None:
        if event.type != "mouse_press" or layer.mode != "pan_zoom":
            return
        value = layer.get_value(event.position, view_direction=event.view_direction,
                                dims_displayed=event.dims_displayed, world=True)
        self.click_label(layer, 0 if value is None else int(value))

    def click_label(self, layer: Any, label: int) -> None:
        """Apply the click tool to object ``label`` of ``layer`` (0: background)."""
        mode = self.click.value
        if not label:
            self.info.value = "That is background: click inside a cell."
            return
        if mode == CLICK_MODES[1]:
            n = delete_label(layer, label)
            self.info.value = f"Deleted cell {label} ({n} px). Undo: Ctrl+Z on the layer."
        elif mode == CLICK_MODES[2]:
            if self._first is None or self._first == label:
                self._first = label
                self.info.value = f"Cell {label} chosen: click the cell to merge into it."
            else:
                first, self._first = self._first, None
                merge_labels(layer, first, label)
                self.info.value = f"Merged cell {label} into cell {first}."

    # ------------------------------------------------------------------ measuring
    def measure(self) -> dict[str, np.ndarray]:
        """Measure the chosen labels layer (intensities from the chosen image, if any)."""
        layer = self.layer.value
        if layer is None:
            show_error("no labels layer to measure: segment an image first")
            return {}
        image = self.image.value
        try:
            data, cax = None, None
            if image is not None:
                params = ((layer.metadata or {}).get(_layers.META_KEY) or {}).get("params") or {}
                src = self._source_image(layer)
                cax = params.get("channel_axis") if image is src and "channel_axis" in params \
                    else guess_axes(tuple(image.data.shape), bool(image.rgb)).channel_axis
                data = image.data[0] if image.multiscale else image.data
            table = measure(np.asarray(layer.data), data, channel_axis=cax)
        except ValueError as exc:
            show_error(str(exc))
            return {}
        self.measurements = table
        self.table.value = {k: list(np.asarray(v).tolist()) for k, v in table.items()}
        layer.features = {"index": table["label"], **{k: v for k, v in table.items()
                                                       if k != "label"}}
        self.save_btn.enabled = bool(len(table["label"]))
        self.info.value = f"{len(table['label'])} cells measured in {layer.name!r}."
        return table

    def save_csv(self, path: str | Path) -> Path:
        """Write the last measurements to ``path`` (CSV)."""
        if not self.measurements:
            raise ValueError("nothing measured yet: press 'Measure cells' first")
        out = write_csv(self.measurements, path)
        self.info.value = f"Saved {len(self.measurements['label'])} rows to {out}."
        return out

    def _save_dialog(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        name = f"{self.layer.value.name}.csv" if self.layer.value is not None else "cells.csv"
        path, _ = QFileDialog.getSaveFileName(self.native, "Save measurements", name,
                                              "CSV (*.csv)")
        if path:
            try:
                self.save_csv(path)
                show_info(f"measurements saved to {path}")
            except (OSError, ValueError) as exc:
                show_error(f"could not save the table: {exc}")
