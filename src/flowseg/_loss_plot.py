"""A small loss-curve plot for the Train tab, drawn with Qt's painter.

One line of the mean training loss per epoch, a light frame, and the first and last
values written in the corners; it adds no plotting library to the plugin's dependencies.
"""

from __future__ import annotations

from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["LossPlot"]


class LossPlot(QWidget):
    """Training loss against epoch.

    Parameters
    ----------
    parent : QWidget, optional
        The parent widget.

    Attributes
    ----------
    epochs, losses : list
        The points shown (1-based epochs, mean loss of the epoch).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.epochs: list[int] = []
        self.losses: list[float] = []
        self.setMinimumHeight(90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("mean training loss per epoch (lower is better)")

    def clear(self) -> None:
        """Remove every point."""
        self.epochs, self.losses = [], []
        self.update()

    def add_point(self, epoch: int, loss: float) -> None:
        """Append the loss of one epoch (a repeated epoch replaces its point)."""
        if self.epochs and int(epoch) <= self.epochs[-1]:
            k = self.epochs.index(int(epoch)) if int(epoch) in self.epochs else len(self.epochs)
            del self.epochs[k:], self.losses[k:]
        self.epochs.append(int(epoch))
        self.losses.append(float(loss))
        self.update()

    def sizeHint(self) -> QSize:
        """A wide, short plot."""
        return QSize(260, 100)

    def paintEvent(self, event) -> None:
        """Draw the frame, the curve and the end values."""
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fg = self.palette().windowText().color()
        grey = QColor(fg)
        grey.setAlpha(90)
        frame = QRectF(self.rect()).adjusted(4, 16, -4, -16)
        p.setPen(QPen(grey, 1))
        p.drawRect(frame)
        font = p.font()
        font.setPointSizeF(max(6.0, font.pointSizeF() * 0.85))
        p.setFont(font)
        p.setPen(fg)
        top = QRectF(self.rect()).adjusted(4, 0, -4, 0)
        if not self.losses:
            p.drawText(frame, int(Qt.AlignmentFlag.AlignCenter), "loss curve (while training)")
            p.end()
            return
        lo, hi = min(self.losses), max(self.losses)
        span = hi - lo if hi > lo else max(abs(hi), 1e-9)
        e0, e1 = self.epochs[0], self.epochs[-1]
        esp = max(e1 - e0, 1)

        def at(e: int, v: float) -> QPointF:
            x = frame.left() + (e - e0) / esp * frame.width()
            y = frame.bottom() - (v - lo) / span * frame.height()
            return QPointF(x, y)

        path = QPainterPath(at(self.epochs[0], self.losses[0]))
        for e, v in zip(self.epochs[1:], self.losses[1:]):
            path.lineTo(at(e, v))
        p.setPen(QPen(QColor(255, 160, 40), 2))
        p.drawPath(path)
        if len(self.losses) == 1:
            p.drawEllipse(at(e0, self.losses[0]), 2.5, 2.5)
        p.setPen(fg)
        align_l = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        align_r = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
        p.drawText(top, align_l, f"loss {self.losses[0]:.3g}")
        p.drawText(top, align_r, f"now {self.losses[-1]:.3g}")
        bottom = QRectF(self.rect()).adjusted(4, 0, -4, 0)
        bottom.setTop(frame.bottom() + 1)
        p.drawText(bottom, align_l, f"epoch {e0}")
        p.drawText(bottom, align_r, f"epoch {e1}")
        p.end()
