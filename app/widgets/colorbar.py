"""A horizontal colorbar with its range and a title."""

from __future__ import annotations

import numpy as np
from PyQt6.QtCore import QRectF, Qt
from PyQt6.QtGui import QColor, QLinearGradient, QPainter
from PyQt6.QtWidgets import QWidget


class ColorBar(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.table: np.ndarray | None = None
        self.lo, self.hi, self.title = 0.0, 1.0, ""
        self.setMinimumHeight(46)

    def set_colormap(self, table: np.ndarray | None, lo: float = 0.0, hi: float = 1.0, title: str = "") -> None:
        self.table, self.lo, self.hi, self.title = table, lo, hi, title
        self.setVisible(table is not None)
        self.update()

    def paintEvent(self, event) -> None:
        if self.table is None:
            return
        painter = QPainter(self)
        bar = QRectF(8, 18, self.width() - 16, 12)
        gradient = QLinearGradient(bar.left(), 0, bar.right(), 0)
        for i in range(0, len(self.table), 8):
            r, g, b, a = (self.table[i] * 255).astype(int)
            gradient.setColorAt(i / (len(self.table) - 1), QColor(r, g, b, a))
        r, g, b, a = (self.table[-1] * 255).astype(int)
        gradient.setColorAt(1.0, QColor(r, g, b, a))
        painter.fillRect(bar, gradient)
        painter.setPen(QColor("#4a5568"))
        painter.drawRect(bar)
        painter.drawText(QRectF(8, 0, self.width() - 16, 16), Qt.AlignmentFlag.AlignCenter, self.title)
        below = QRectF(8, 31, self.width() - 16, 14)
        painter.drawText(below, Qt.AlignmentFlag.AlignLeft, f"{self.lo:.3g}")
        painter.drawText(below, Qt.AlignmentFlag.AlignRight, f"{self.hi:.3g}")
        painter.end()
