"""The microarchitecture workspace's views: the region canvas (image, label overlay, factor layer,
polygon and brush drawing), the factor list with thumbnails, the coverage–leakage score
matrix, and the bar chart of all factor values under the mouse. Display only: the numbers
come from engine.factors.workflow."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QPointF, QRectF, QSize, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QFontMetrics, QIcon, QImage, QPixmap, QTransform
from PyQt6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from app.widgets.image_view import ImageView

MODES = ("pan", "polygon", "brush", "erase")
DRAW_COLOR = "#facc15"
#: Heatmap colour maps: pyqtgraph's bundled ones; "viridis, reversed" is the paper's figure (light
#: green for low, dark blue for high values).
COLORMAPS = ("viridis, reversed", "viridis", "magma", "inferno", "cividis")
CLUSTER_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                  "#17becf")


def colormap_table(name: str) -> np.ndarray:
    """(256, 3) uint8 RGB lookup table."""
    base = name.split(",")[0]
    table = pg.colormap.get(base).getLookupTable(0.0, 1.0, 256, alpha=False).astype(np.uint8)
    return table[::-1].copy() if name.endswith("reversed") else table


def heat_rgba(values: np.ndarray, table: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Values in 0..1 → RGBA: colour from the table, transparent at and below ``threshold``,
    opacity rising with the value above it (so weak codes fade into the image, as in the paper)."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float32))
    out = np.empty(v.shape + (4,), dtype=np.uint8)
    out[..., :3] = table[np.clip(v * 255, 0, 255).astype(np.int32)]
    ramp = np.clip((v - threshold) / max(1e-6, 0.6 * (1.0 - threshold)), 0.0, 1.0)
    out[..., 3] = (np.where(v > threshold, ramp, 0.0) * 255).astype(np.uint8)
    return out


def composite_rgba(rgb: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """(rows, cols, 3) in 0..1 → RGBA, transparent where all three channels are at or below ``threshold``."""
    out = np.empty(rgb.shape[:2] + (4,), dtype=np.uint8)
    out[..., :3] = np.clip(rgb * 255, 0, 255).astype(np.uint8)
    peak = rgb.max(axis=-1)
    out[..., 3] = (np.clip((peak - threshold) / max(1e-6, 0.5 * (1.0 - threshold)), 0, 1) * 255).astype(np.uint8)
    return out


def cluster_rgba(cluster_map: np.ndarray) -> np.ndarray:
    table = np.array([[*QColor(c).getRgb()[:3], 255] for c in CLUSTER_COLORS], dtype=np.uint8)
    out = np.zeros(cluster_map.shape + (4,), dtype=np.uint8)
    inside = cluster_map >= 0
    out[inside] = table[cluster_map[inside] % len(table)]
    return out


def rgba_pixmap(rgba: np.ndarray, size: int = 64) -> QPixmap:
    """A QPixmap of an RGBA array, scaled to fit ``size`` (thumbnails)."""
    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    h, w = rgba.shape[:2]
    image = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
    return QPixmap.fromImage(image).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                                           Qt.TransformationMode.SmoothTransformation)


class RegionCanvas(QWidget):
    """The image with its region overlay and factor layer; draws polygons and brush strokes.

    Polygon mode: click vertices, double-click or Enter to close, Esc or Backspace to drop the last
    vertex. Brush/eraser mode: drag to paint. Pan mode: drag to pan, wheel to zoom (always).
    The same methods the mouse calls (:meth:`add_vertex`, :meth:`finish_polygon`,
    :meth:`paint_stroke`) let scripts draw.

    :meth:`set_rotated` turns the picture 90° counter-clockwise (a wide slice becomes a vertical
    strip, as in the paper's figures). Display only: the image, its layers and the drawing sit in
    one group that is rotated, and every position (click, drag, hover) is read in the image item's
    own coordinates, so rows and columns stay image pixels either way.
    """

    polygon_finished = pyqtSignal(list)  # [(x, y), ...] pixel vertices
    stroke_finished = pyqtSignal(list, float, bool)  # points, radius, erase
    hovered = pyqtSignal(int, int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.view = ImageView(histogram=False)  # the image gets the width; contrast is not what this view is about
        self.mode = "pan"
        self.brush_radius = 20.0
        self.vertices: list[tuple[int, int]] = []
        self.stroke: list[tuple[float, float]] = []
        self.outline = pg.PlotCurveItem(pen=pg.mkPen(DRAW_COLOR, width=2))
        self.outline.setZValue(30)
        self.dots = pg.ScatterPlotItem(size=7, pen=pg.mkPen("k"), brush=pg.mkBrush(DRAW_COLOR))
        self.dots.setZValue(31)
        for item in (self.outline, self.dots):
            item.mouseClickEvent = lambda event: event.ignore()  # clicks on a vertex dot reach the image
            self.view.viewbox.addItem(item)
        self.content = pg.ItemGroup()  # what turns with the view; the items stay in the view box's list (autorange)
        self.view.viewbox.addItem(self.content)
        for item in (self.view.image, self.view.heatmap, self.view.overlay, self.outline, self.dots):
            item.setParentItem(self.content)
        self.rotated = False
        self.view.clicked.connect(self._clicked)
        self.view.double_clicked.connect(lambda r, c: self.finish_polygon())
        self.view.graphics.scene().sigMouseMoved.connect(self._mouse_moved)
        self.view.image.mouseDragEvent = self._dragged
        self.hint = QLabel("", objectName="Hint")
        self.hint.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.hint)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    def set_layer(self, rgba: np.ndarray | None, grid=None, opacity: float | None = None) -> None:
        """An RGBA layer on the latent ``grid`` (engine.factors.files.Grid): value [i, j] covers the stride × stride
        pixels around grid centre (offset + i·stride, offset + j·stride); None hides it."""
        self.view.set_heatmap(rgba, 1 if grid is None else grid.stride, opacity)
        if rgba is not None and grid is not None:
            (r0, c0), s = grid.offset, grid.stride
            rows, cols = rgba.shape[:2]
            self.view.heatmap.setRect(QRectF(c0 - s / 2 + 0.5, r0 - s / 2 + 0.5, cols * s, rows * s))

    def set_rotated(self, rotated: bool) -> None:
        """Show the image turned 90° counter-clockwise (its right edge on top), or upright."""
        self.rotated = bool(rotated)
        width = self.view.shape[1] if self.view.shape is not None else 0
        # (x = col, y = row) → (x' = row, y' = width − col); y points down in the view
        self.content.setTransform(QTransform(0, -1, 1, 0, 0, width) if self.rotated else QTransform())
        self.view.viewbox.autoRange(padding=0.01)
        self.view.viewbox.updateMatrix()  # now, not at the next paint: positions read before it must be right

    def pixel_at(self, scene_pos) -> tuple[int, int]:
        """Image (row, col) under a scene position, rotated or not; (-1, -1) off the image."""
        point = self.view.image.mapFromScene(scene_pos)
        row, col = int(np.floor(point.y())), int(np.floor(point.x()))
        shape = self.view.shape
        inside = shape is not None and 0 <= row < shape[0] and 0 <= col < shape[1]
        return (row, col) if inside else (-1, -1)

    def scene_position(self, row: float, col: float):
        """Where image pixel (row, col) is in the coordinates of the view's click target, rotated or not (tests)."""
        return self.view.graphics.mapFromScene(self.view.image.mapToScene(QPointF(col + 0.5, row + 0.5)))

    def _mouse_moved(self, scene_pos) -> None:
        if self.view.shape is not None:
            self.hovered.emit(*self.pixel_at(scene_pos))

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self.cancel_polygon()
        cursor = Qt.CursorShape.ArrowCursor if mode == "pan" else Qt.CursorShape.CrossCursor
        self.view.graphics.viewport().setCursor(cursor)

    # -- polygon ------------------------------------------------------------------------
    def add_vertex(self, row: int, col: int) -> None:
        point = (int(col), int(row))
        if not self.vertices or self.vertices[-1] != point:  # a double click repeats its pixel
            self.vertices.append(point)
        self._draw_outline()

    def finish_polygon(self) -> bool:
        """Close the polygon being drawn (≥ 3 vertices) and announce it."""
        if self.mode != "polygon" or len(self.vertices) < 3:
            return False
        vertices, self.vertices = list(self.vertices), []
        self._draw_outline()
        self.polygon_finished.emit(vertices)
        return True

    def cancel_polygon(self) -> None:
        self.vertices = []
        self._draw_outline()

    def _draw_outline(self) -> None:
        if not self.vertices:
            self.outline.setData([], [])
            self.dots.setData([], [])
            return
        xs = np.array([x for x, _ in self.vertices], float) + 0.5
        ys = np.array([y for _, y in self.vertices], float) + 0.5
        closed_x, closed_y = np.append(xs, xs[0]), np.append(ys, ys[0])
        self.outline.setData(closed_x, closed_y)
        self.dots.setData(xs, ys)

    def _clicked(self, row: int, col: int) -> None:
        if self.mode == "polygon":
            self.add_vertex(row, col)
        elif self.mode in ("brush", "erase"):
            self.paint_stroke([(col, row)])

    # -- brush --------------------------------------------------------------------------
    def paint_stroke(self, points: list[tuple[float, float]]) -> None:
        if self.mode in ("brush", "erase") and points:
            self.stroke_finished.emit([(float(x), float(y)) for x, y in points], float(self.brush_radius),
                                      self.mode == "erase")

    def _dragged(self, event) -> None:
        if self.mode not in ("brush", "erase") or event.button() != Qt.MouseButton.LeftButton:
            event.ignore()  # the view pans
            return
        event.accept()
        pos = event.pos()
        if event.isStart():
            self.stroke = []
        self.stroke.append((float(pos.x()), float(pos.y())))
        xs, ys = zip(*self.stroke)
        self.outline.setData(np.array(xs), np.array(ys))
        if event.isFinish():
            points, self.stroke = self.stroke, []
            self.outline.setData([], [])
            self.paint_stroke(points)

    def keyPressEvent(self, event) -> None:
        key = event.key()
        if self.mode == "polygon" and key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.finish_polygon()
        elif self.mode == "polygon" and key == Qt.Key.Key_Backspace and self.vertices:
            self.vertices.pop()
            self._draw_outline()
        elif key == Qt.Key.Key_Escape and self.vertices:
            self.cancel_polygon()
        else:
            super().keyPressEvent(event)


class FactorList(QListWidget):
    """One row per factor: a thumbnail of its heatmap, its number and the region it was chosen for."""

    factor_clicked = pyqtSignal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setIconSize(QSize(72, 72))
        self.setSpacing(1)
        self.itemClicked.connect(lambda item: self.factor_clicked.emit(int(item.data(Qt.ItemDataRole.UserRole))))

    def set_factors(self, thumbnails: list[np.ndarray]) -> None:
        self.blockSignals(True)
        self.clear()
        for i, rgba in enumerate(thumbnails):
            item = QListWidgetItem(QIcon(rgba_pixmap(rgba, 72)), f"Factor {i}")
            item.setData(Qt.ItemDataRole.UserRole, i)
            self.addItem(item)
        self.blockSignals(False)

    def set_captions(self, captions: dict[int, str]) -> None:
        for row in range(self.count()):
            item = self.item(row)
            i = int(item.data(Qt.ItemDataRole.UserRole))
            extra = captions.get(i)
            item.setText(f"Factor {i}" + (f"\n{extra}" if extra else ""))
            font = item.font()
            font.setBold(extra is not None)
            item.setFont(font)

    def select_factor(self, i: int) -> None:
        self.blockSignals(True)
        self.setCurrentRow(i)
        self.blockSignals(False)


class ScoreMatrix(pg.GraphicsLayoutWidget):
    """Scores s_t = coverage − λ·leakage (factors × regions) as a heatmap; chosen pairs are outlined."""

    factor_clicked = pyqtSignal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.plot = self.addPlot()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(False, False)
        self.plot.invertY(True)
        self.plot.setLabel("left", "factor")
        self.plot.setTitle("coverage − λ·leakage", size="9pt")
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setLookupTable(colormap_table("viridis"))
        self.plot.addItem(self.image)
        self.marks = pg.ScatterPlotItem(symbol="s", size=14, pen=pg.mkPen("#f43f5e", width=2.5), brush=None, pxMode=True)
        self.plot.addItem(self.marks)
        self.scores: np.ndarray | None = None
        self.pairs: list[tuple[int, int]] = []  # (factor, column) of the chosen pairs
        self.region_names: list[str] = []
        self.setToolTip("Score of each factor (row) for each region (column): latent positions of the region where the "
                        "factor is on, minus λ × positions outside it where it is on. Click a row to show that factor.")
        self.scene().sigMouseClicked.connect(self._clicked)
        self.plot.vb.sigResized.connect(lambda _vb: self._fit_region_labels())

    def set_scores(self, scores: np.ndarray | None, region_names: list[str], chosen: list[tuple[int, int]]) -> None:
        self.scores = scores
        self.pairs = chosen
        if scores is None:
            self.region_names = []
            self.image.clear()
            self.marks.setData([], [])
            for axis in ("bottom", "left"):
                self.plot.getAxis(axis).setTicks([[]])
            self.plot.setTitle("coverage − λ·leakage (after NMF)", size="9pt")
            return
        self.plot.setTitle("coverage − λ·leakage (□ chosen)", size="9pt")
        k, r = scores.shape
        lo, hi = float(scores.min()), float(scores.max())
        self.image.setImage(scores, levels=(lo, hi if hi > lo else lo + 1))
        self.marks.setData([a + 0.5 for _, a in chosen], [f + 0.5 for f, _ in chosen])
        self.region_names = list(region_names)
        self.plot.getAxis("left").setTicks([[(f + 0.5, str(f)) for f in range(k)]])
        self.plot.setXRange(0, r, padding=0.02)
        self.plot.setYRange(0, k, padding=0.02)
        self._fit_region_labels()

    def column_labels(self) -> list[str]:
        """The region names as the bottom axis shows them."""
        ticks = self.plot.getAxis("bottom")._tickLevels
        return [label for _, label in ticks[0]] if ticks else []

    def column_width(self) -> float:
        """Pixels per region column."""
        return self.plot.vb.width() / max(len(self.region_names), 1)

    def _fit_region_labels(self) -> None:
        """Each region's name shortened until it fits its column with a gap: no "striatumthalamus"."""
        if not self.region_names:
            return
        axis = self.plot.getAxis("bottom")
        metrics = QFontMetrics(axis.style.get("tickFont") or axis.font())
        room = self.column_width() - 8
        short = []
        for a, name in enumerate(self.region_names):
            fitting = (label for label in [name] + [_abbreviate(name, w) for w in range(len(name) - 1, 2, -1)]
                       if metrics.horizontalAdvance(label) <= room)
            short.append(next(fitting, str(a + 1)))  # too narrow for three letters: the column number
        axis.setTicks([[(a + 0.5, label) for a, label in enumerate(short)]])

    def _clicked(self, event) -> None:
        if self.scores is None:
            return
        point = self.plot.vb.mapSceneToView(event.scenePos())
        f = int(np.floor(point.y()))
        if 0 <= f < self.scores.shape[0] and 0 <= point.x() < self.scores.shape[1]:
            self.factor_clicked.emit(f)


def _abbreviate(name: str, width: int = 9) -> str:
    """Short enough for a tick label, and distinct for names that differ in their last word
    ("thalamus centre" → "t. centre", "thalamus posterior" → "t. poster")."""
    if len(name) <= width:
        return name
    words = name.split()
    if len(words) > 1:
        initials = "".join(w[0] for w in words[:-1]) + ". "
        return initials + words[-1][:max(1, width - len(initials))]
    return name[:width - 1] + "…"


class HoverBars(pg.PlotWidget):
    """All factor values at the pixel under the mouse; chosen factors in their region's colour."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setMenuEnabled(False)
        self.setMouseEnabled(False, False)
        self.setLabel("bottom", "factor")
        self.setLabel("left", "code / display scale")
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.8, brush="#64748b")
        self.addItem(self.bars)
        self.setYRange(0, 1.05)
        self.getAxis("bottom").setTicks([[]])
        self.setTitle("hover the image", size="9pt")

    def show_values(self, values: np.ndarray | None, title: str, colors: list[str] | None = None) -> None:
        self.setTitle(title, size="9pt")
        if values is None:
            self.bars.setOpts(x=[], height=[])
            return
        x = np.arange(len(values))
        brushes = [pg.mkBrush(c) for c in colors] if colors else None
        self.bars.setOpts(x=x, height=np.asarray(values, float), brushes=brushes, brush="#64748b")
        step = max(1, len(values) // 8)
        self.getAxis("bottom").setTicks([[(i, str(i)) for i in range(0, len(values), step)]])
        self.setXRange(-0.6, len(values) - 0.4, padding=0)
        self.setYRange(0, max(1.05, float(np.max(values)) * 1.05) if len(values) else 1.05)
