"""A short-lived circle of the chosen diameter drawn in the image's corner.

As in the Cellpose GUI, a circle shows how big the diameter setting is compared with the
cells.  It is a Shapes layer that exists only while the user is changing the diameter: it
disappears ``HIDE_AFTER_MS`` after the last change (and when a run starts), so no helper
layer is left in the layer list.  Adding it does not steal the active layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer

from . import _layers

__all__ = ["HIDE_AFTER_MS", "DiameterPreview"]

HIDE_AFTER_MS = 2500


def _circle(layer: Any, diameter: float) -> np.ndarray:
    """Bounding box of a circle in the image's bottom-left corner (data coordinates)."""
    shape = np.asarray(layer.data.shape)[-3:-1] if layer.rgb else np.asarray(layer.data.shape)[-2:]
    d = float(diameter)
    y0, x0 = shape[0] - d - 2, 2.0
    return np.array([[y0, x0], [y0, x0 + d], [y0 + d, x0 + d], [y0 + d, x0]])


class DiameterPreview(QObject):
    """Shows a diameter circle over an image layer for a moment."""

    def __init__(self, viewer: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.layer: Any = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(HIDE_AFTER_MS)
        self._timer.timeout.connect(self.hide)

    def show(self, image: Any, diameter: float) -> None:
        """Draw (or move) the circle for ``image``; it hides itself after a moment."""
        if image is None or not diameter or image not in self.viewer.layers:
            self.hide()
            return
        ellipse = _circle(image, diameter)
        scale = np.asarray(image.scale, float)[-2:]
        translate = np.asarray(image.translate, float)[-2:]
        if self.layer is None or self.layer not in self.viewer.layers:
            selection = self.viewer.layers.selection
            active, selected = selection.active, set(selection)
            self.layer = self.viewer.add_shapes(
                [ellipse], shape_type="ellipse", name="diameter preview",
                face_color=[1, 0, 1, 0.4], edge_color=[1, 0, 1, 1], edge_width=0.5,
                scale=scale, translate=translate, opacity=0.8,
                metadata=_layers.tag("diameter_preview"))
            selection.clear()
            selection.update(selected)
            selection.active = active
        else:
            self.layer.data = [ellipse]
            self.layer.shape_type = ["ellipse"]
            self.layer.scale, self.layer.translate = scale, translate
        self._timer.start()

    def hide(self) -> None:
        """Remove the circle's layer now."""
        self._timer.stop()
        layer, self.layer = self.layer, None
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)
