"""2D image view (pyqtgraph): pan/zoom, a histogram with contrast levels, an optional label overlay,
and an optional heatmap layer on a coarser grid (e.g. one value per stride-th pixel).

Large images (a 5805 × 1420 slice) stay smooth because the ImageItem downsamples automatically
to the screen's resolution when zoomed out.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QPointF, QRectF, pyqtSignal
from PyQt6.QtWidgets import QHBoxLayout, QWidget

# Distinct colors for label overlays (label 0 = transparent).
LABEL_COLORS = np.array([
    [0, 0, 0, 0], [230, 25, 75, 255], [60, 180, 75, 255], [0, 130, 200, 255], [245, 130, 48, 255],
    [145, 30, 180, 255], [70, 240, 240, 255], [240, 50, 230, 255], [210, 245, 60, 255], [250, 190, 212, 255],
], dtype=np.ubyte)


# Above this many pixels the image is drawn from every 2nd, 4th… pixel when zoomed out, switched as the zoom
# changes: pyqtgraph's own downsampling averages the whole image on every zoom (0.2–0.8 s for a slice of 8 Mpx).
DETAIL_PIXELS = 4_000_000
LABELS_MAX_SIDE = 2048  # a label overlay is drawn at most this many pixels per side (regions are large and smooth)


def labels_for_display(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """(labels sampled every ``step`` pixels at the centre of each step × step block, step) so that the long
    side is at most LABELS_MAX_SIDE: colouring and drawing an 8-Mpixel slice's overlay cost seconds, 1/9 of
    it a fraction of a second, and a region border moves by less than a block."""
    step = max(1, -(-max(labels.shape[:2]) // LABELS_MAX_SIDE))
    if step == 1:
        return labels, 1
    return labels[step // 2::step, step // 2::step], step


class ImageView(QWidget):
    clicked = pyqtSignal(int, int)  # row, column of a left click on the image
    double_clicked = pyqtSignal(int, int)  # row, column of a left double click (after its clicked)
    hovered = pyqtSignal(int, int)  # row, column under the mouse (-1, -1 off the image)

    def __init__(self, parent: QWidget | None = None, histogram: bool = True):
        """``histogram``: a histogram with contrast levels beside the image (off where contrast is not the point)."""
        super().__init__(parent)
        self.graphics = pg.GraphicsLayoutWidget()
        self.viewbox = self.graphics.addViewBox(lockAspect=True, invertY=True)
        self.image = pg.ImageItem(axisOrder="row-major", autoDownsample=True)
        # not downsampled by pyqtgraph: that averages the overlay's colours on the GUI thread at every redraw
        # (~100 ms); it is at most LABELS_MAX_SIDE per side already, which Qt scales when painting
        self.overlay = pg.ImageItem(axisOrder="row-major")
        self.overlay.setZValue(10)
        self.overlay.setOpacity(0.35)
        self.heatmap = pg.ImageItem(axisOrder="row-major")  # below the label overlay
        self.heatmap.setZValue(5)
        self.viewbox.addItem(self.image)
        self.viewbox.addItem(self.heatmap)
        self.viewbox.addItem(self.overlay)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graphics, 1)
        self.histogram = None
        if histogram:
            self.histogram = pg.HistogramLUTWidget(image=self.image)
            self.histogram.setFixedWidth(110)
            layout.addWidget(self.histogram)
        self.image.mouseClickEvent = self._on_click
        self._full: np.ndarray | None = None  # a large image, shown every ``self._step``-th pixel
        self._step = 0
        self._levels = (0.0, 1.0)
        self.viewbox.sigRangeChanged.connect(lambda *_: self._show_detail())
        self.graphics.scene().sigMouseMoved.connect(self._mouse_moved)
        self.shape: tuple[int, int] | None = None
        self._labels_shown: tuple | None = None  # (label map, colour table bytes, step) of the overlay drawn

    def set_image(self, image: np.ndarray, levels: tuple[float, float] | None = None, autorange: bool = True) -> None:
        image = np.asarray(image)
        if levels is None:
            finite = image[np.isfinite(image)] if image.dtype.kind == "f" else image
            sample = finite.ravel()[:: max(1, finite.size // 1_000_000)]
            levels = tuple(float(q) for q in np.percentile(sample, [0.5, 99.8])) if sample.size else (0.0, 1.0)  # one partition
        if image.shape[0] * image.shape[1] > DETAIL_PIXELS:
            self._full, self._step, self._levels = image, 0, levels
            self.image.setAutoDownsample(False)
            self._show_detail()
        else:
            self._full = None
            self.image.setAutoDownsample(True)
            self.image.setImage(image, levels=levels, autoLevels=False)
            self.image.setRect(QRectF(0, 0, image.shape[1], image.shape[0]))
        if self.histogram is not None:
            self.histogram.setLevels(*levels)
        if autorange or self.shape != image.shape[:2]:
            self.viewbox.autoRange(padding=0.01)
        self.shape = image.shape[:2]

    def _show_detail(self) -> None:
        """A large image at the detail the zoom shows: every step-th pixel, step the power of two ≤ the image
        pixels per screen pixel (at most 16); drawn again only when the step changes."""
        if self._full is None:
            return
        per_screen = min(self.viewbox.viewPixelSize()) if self.viewbox.width() > 0 else 16.0
        step = int(2 ** np.clip(np.floor(np.log2(max(per_screen, 1.0))), 0, 4))
        if step == self._step:
            return
        self._step = step
        rows, cols = self._full.shape[:2]
        self.image.setImage(self._full[::step, ::step], levels=self._levels, autoLevels=False)
        self.image.setRect(QRectF(0, 0, -(-cols // step) * step, -(-rows // step) * step))

    def set_labels(self, labels: np.ndarray | None, opacity: float | None = None, colors: np.ndarray | None = None,
                   step: int | None = None) -> None:
        """Colour each label value (0 transparent); ``colors`` an optional (n, 4) uint8 table indexed by label.
        ``step``: ``labels`` is already sampled every ``step`` image pixels (:func:`labels_for_display`);
        None: a full-size map, sampled here when large."""
        if labels is None:
            self.overlay.clear()
            self._labels_shown = None
            return
        table = LABEL_COLORS if colors is None else np.asarray(colors, dtype=np.ubyte)
        # a label map is replaced, never written in place: the same map in the same colours is drawn already
        # (a result handler asks for it several times; colouring a 1-Mpixel overlay costs tens of ms)
        shown = (labels, table.tobytes(), step)
        previous = self._labels_shown
        if previous is None or previous[0] is not labels or previous[1:] != shown[1:]:
            self._labels_shown = shown
            if step is None:
                labels, step = labels_for_display(np.asarray(labels))
            # take(mode="wrap") is table[labels % len(table)], 4-5x faster
            self.overlay.setImage(np.take(table, labels, axis=0, mode="wrap"), autoLevels=False, levels=(0, 255))
            rows, cols = labels.shape[:2]
            self.overlay.setRect(QRectF(0, 0, cols * step, rows * step))
        if opacity is not None:
            self.overlay.setOpacity(opacity)

    def set_overlay_opacity(self, opacity: float) -> None:
        self.overlay.setOpacity(opacity)

    def set_heatmap(self, rgba: np.ndarray | None, stride: int = 1, opacity: float | None = None) -> None:
        """An RGBA (rows, cols, 4) layer whose value [i, j] is centred on pixel (i·stride, j·stride); None hides it."""
        if rgba is None:
            self.heatmap.clear()
            return
        self.heatmap.setImage(np.asarray(rgba), autoLevels=False, levels=(0, 255))
        rows, cols = rgba.shape[:2]
        self.heatmap.setRect(QRectF(-stride / 2 + 0.5, -stride / 2 + 0.5, cols * stride, rows * stride))
        if opacity is not None:
            self.heatmap.setOpacity(opacity)

    def scene_position(self, row: float, col: float):
        """Where image pixel (row, col) is in the coordinates of :meth:`click_target` (tests, scripts)."""
        scene = self.viewbox.mapViewToScene(QPointF(col + 0.5, row + 0.5))
        return self.graphics.mapFromScene(scene)

    def click_target(self) -> QWidget:
        return self.graphics.viewport()

    def _on_click(self, event) -> None:
        if self.shape is None:
            return
        pos = event.pos()
        row, col = int(pos.y()), int(pos.x())
        if 0 <= row < self.shape[0] and 0 <= col < self.shape[1]:
            self.clicked.emit(row, col)
            if event.double():
                self.double_clicked.emit(row, col)
            event.accept()

    def _mouse_moved(self, scene_pos) -> None:
        if self.shape is None:
            return
        point = self.viewbox.mapSceneToView(scene_pos)
        row, col = int(np.floor(point.y())), int(np.floor(point.x()))
        inside = 0 <= row < self.shape[0] and 0 <= col < self.shape[1]
        self.hovered.emit(row if inside else -1, col if inside else -1)
