"""2D image view (pyqtgraph): pan/zoom, a histogram with contrast levels, an optional label overlay."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import QHBoxLayout, QWidget

# Distinct colors for label overlays (label 0 = transparent).
LABEL_COLORS = np.array([
    [0, 0, 0, 0], [230, 25, 75, 255], [60, 180, 75, 255], [0, 130, 200, 255], [245, 130, 48, 255],
    [145, 30, 180, 255], [70, 240, 240, 255], [240, 50, 230, 255], [210, 245, 60, 255], [250, 190, 212, 255],
], dtype=np.ubyte)


class ImageView(QWidget):
    clicked = pyqtSignal(int, int)  # row, column of a left click on the image

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.graphics = pg.GraphicsLayoutWidget()
        self.viewbox = self.graphics.addViewBox(lockAspect=True, invertY=True)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.overlay = pg.ImageItem(axisOrder="row-major")
        self.overlay.setZValue(10)
        self.overlay.setOpacity(0.35)
        self.viewbox.addItem(self.image)
        self.viewbox.addItem(self.overlay)
        self.histogram = pg.HistogramLUTWidget(image=self.image)
        self.histogram.setFixedWidth(110)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graphics, 1)
        layout.addWidget(self.histogram)
        self.image.mouseClickEvent = self._on_click
        self.shape: tuple[int, int] | None = None

    def set_image(self, image: np.ndarray, levels: tuple[float, float] | None = None, autorange: bool = True) -> None:
        image = np.asarray(image)
        if levels is None:
            finite = image[np.isfinite(image)] if image.dtype.kind == "f" else image
            sample = finite.ravel()[:: max(1, finite.size // 1_000_000)]
            levels = (float(np.percentile(sample, 0.5)), float(np.percentile(sample, 99.8))) if sample.size else (0.0, 1.0)
        self.image.setImage(image, levels=levels, autoLevels=False)
        self.histogram.setLevels(*levels)
        if autorange or self.shape != image.shape[:2]:
            self.viewbox.autoRange(padding=0.01)
        self.shape = image.shape[:2]

    def set_labels(self, labels: np.ndarray | None, opacity: float | None = None) -> None:
        if labels is None:
            self.overlay.clear()
            return
        self.overlay.setImage(LABEL_COLORS[np.asarray(labels) % len(LABEL_COLORS)], autoLevels=False)
        if opacity is not None:
            self.overlay.setOpacity(opacity)

    def set_overlay_opacity(self, opacity: float) -> None:
        self.overlay.setOpacity(opacity)

    def _on_click(self, event) -> None:
        if self.shape is None:
            return
        pos = event.pos()
        row, col = int(pos.y()), int(pos.x())
        if 0 <= row < self.shape[0] and 0 <= col < self.shape[1]:
            self.clicked.emit(row, col)
            event.accept()
