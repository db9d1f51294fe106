"""The calcium workspace's two views: the field of view (image, ROI contours, hover) and the
trace panel (F, C and S of the selected ROIs on linked time axes)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QPointF, Qt, pyqtSignal
from PyQt6.QtWidgets import QLabel, QVBoxLayout, QWidget

from engine.calcium.curation import RoiGeometry
from app.widgets.image_view import ImageView

ACCEPTED_COLOR = "#22c55e"
REJECTED_COLOR = "#f43f5e"
SELECTED_COLOR = "#facc15"
# Traces of the selected ROIs, in selection order (the first one is the "current" ROI).
TRACE_COLORS = ("#1d4ed8", "#c2410c", "#7e22ce", "#0f766e", "#be185d", "#4d7c0f")


def _joined(contours: list) -> tuple[np.ndarray, np.ndarray]:
    """One x and one y array for many closed contours, split by NaN (drawn with connect="finite")."""
    xs, ys = [], []
    for x, y in contours:
        xs += [x, [np.nan]]
        ys += [y, [np.nan]]
    if not xs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(xs), np.concatenate(ys)


class FieldOfView(QWidget):
    """An ImageView with ROI contours drawn over it: accepted green, rejected red, selected yellow."""

    clicked = pyqtSignal(int, int)  # row, column
    hovered = pyqtSignal(int, int)  # row, column under the mouse (-1, -1 off the image)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.view = ImageView()
        self.view.clicked.connect(self.clicked)
        self.hint = QLabel("", objectName="Hint")
        self.hint.setWordWrap(True)
        self.curves = {}
        for name, color, width, z in (("accepted", ACCEPTED_COLOR, 1.4, 20), ("rejected", REJECTED_COLOR, 1.4, 21),
                                      ("selected", SELECTED_COLOR, 3.0, 22)):
            curve = pg.PlotCurveItem(pen=pg.mkPen(color, width=width), connect="finite")
            curve.setZValue(z)
            self.view.viewbox.addItem(curve)
            self.curves[name] = curve
        self.curves["rejected"].setPen(pg.mkPen(REJECTED_COLOR, width=1.4, style=Qt.PenStyle.DashLine))
        self.label = pg.TextItem("", color=SELECTED_COLOR, anchor=(0.5, 1.0), fill=pg.mkBrush(0, 0, 0, 150))
        self.label.setZValue(30)
        self.view.viewbox.addItem(self.label)
        self.marker = pg.ScatterPlotItem(size=12, pen=pg.mkPen("#ff3b30", width=2), brush=None, symbol="o")
        self.marker.setZValue(25)
        self.view.viewbox.addItem(self.marker)
        self.view.graphics.scene().sigMouseMoved.connect(self._mouse_moved)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.hint)
        self.show_contours = True

    def set_rois(self, geometry: RoiGeometry | None, accepted: np.ndarray | None, selected: list[int],
                 centers: np.ndarray | None = None) -> None:
        """Redraw every contour (a few thousand points per hundred ROIs: fast)."""
        if geometry is None or not self.show_contours:
            for curve in self.curves.values():
                curve.setData([], [])
            self.label.setText("")
            return
        groups = {"accepted": [], "rejected": [], "selected": []}
        for k, contours in enumerate(geometry.contours):
            groups["accepted" if accepted[k] else "rejected"].extend(contours)
        for k in selected:
            if 0 <= k < len(geometry.contours):
                groups["selected"].extend(geometry.contours[k])
        for name, contours in groups.items():
            self.curves[name].setData(*_joined(contours))
        if selected and centers is not None and 0 <= selected[0] < len(centers):
            k = selected[0]
            top = min((float(np.min(y)) for _, y in geometry.contours[k]), default=centers[k][0])
            self.label.setText(f"#{k}" if accepted[k] else f"#{k} rejected")
            self.label.setPos(QPointF(float(centers[k][1]) + 0.5, top - 0.5))
        else:
            self.label.setText("")

    def center_on(self, row: float, col: float, span: float) -> None:
        """Put image point (row, col) in the middle of the view, zoomed in to show at most ``span`` pixels
        across (a closer zoom is kept)."""
        vb = self.view.viewbox
        (x0, x1), (y0, y1) = vb.viewRange()
        scale = min(1.0, span / max(x1 - x0, y1 - y0))
        cx, cy, hx, hy = col + 0.5, row + 0.5, scale * (x1 - x0) / 2, scale * (y1 - y0) / 2
        vb.setRange(xRange=(cx - hx, cx + hx), yRange=(cy - hy, cy + hy), padding=0)

    def set_cross_cursor(self, on: bool) -> None:
        shape = Qt.CursorShape.CrossCursor if on else Qt.CursorShape.ArrowCursor
        self.view.graphics.viewport().setCursor(shape)

    def scene_position(self, row: float, col: float):
        """Where image point (row, col) is, in the coordinates of the widget that takes clicks (tests, demo)."""
        scene = self.view.viewbox.mapViewToScene(QPointF(col + 0.5, row + 0.5))
        return self.view.graphics.mapFromScene(scene)

    def click_target(self) -> QWidget:
        return self.view.graphics.viewport()

    def _mouse_moved(self, scene_pos) -> None:
        if self.view.shape is None:
            return
        point = self.view.viewbox.mapSceneToView(scene_pos)
        row, col = int(np.floor(point.y())), int(np.floor(point.x()))
        if 0 <= row < self.view.shape[0] and 0 <= col < self.view.shape[1]:
            self.hovered.emit(row, col)
        else:
            self.hovered.emit(-1, -1)


class TracePanel(QWidget):
    """Raw demixed F, denoised C and spikes S of the selected ROIs; the three time axes are linked
    (zoom with the wheel or right-drag on any of them), a line marks the movie player's frame."""

    frame_picked = pyqtSignal(float)  # time (s) clicked on a plot

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.graphics = pg.GraphicsLayoutWidget()
        self.plots: dict[str, pg.PlotItem] = {}
        self.lines: list[pg.InfiniteLine] = []
        for row, (key, label) in enumerate((("F", "F raw"), ("C", "C denoised"), ("S", "S spikes"))):
            plot = self.graphics.addPlot(row=row, col=0)
            plot.setLabel("left", label)
            plot.showGrid(x=True, y=False, alpha=0.2)
            plot.setMouseEnabled(x=True, y=False)  # zoom time only: amplitudes auto-range
            plot.enableAutoRange(axis="y")
            plot.setAutoVisible(y=True)
            plot.getAxis("left").setWidth(54)
            if key != "F":
                plot.setXLink(self.plots["F"])
            if key != "S":
                plot.getAxis("bottom").setStyle(showValues=False)
            line = pg.InfiniteLine(angle=90, pen=pg.mkPen("#b42318", width=1))
            plot.addItem(line)
            self.lines.append(line)
            self.plots[key] = plot
        self.plots["S"].setLabel("bottom", "time", units="s")
        self.graphics.ci.layout.setRowStretchFactor(0, 3)
        self.graphics.ci.layout.setRowStretchFactor(1, 3)
        self.graphics.ci.layout.setRowStretchFactor(2, 2)
        self.curves: dict[str, list[pg.PlotDataItem]] = {key: [] for key in self.plots}
        # The old click-a-pixel trace, for movies without a CNMF result yet.
        self.pixel_curve = self.plots["F"].plot(pen=pg.mkPen("#1f6f3a", width=1.2))
        self.title = QLabel("Run CNMF, then click an ROI to see its traces (or click a pixel for its raw trace).")
        self.title.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.title)
        layout.addWidget(self.graphics, 1)
        self.graphics.scene().sigMouseClicked.connect(self._clicked)

    def _curve(self, key: str, i: int) -> pg.PlotDataItem:
        curves = self.curves[key]
        while len(curves) <= i:
            curve = self.plots[key].plot()
            curve.setClipToView(True)
            curve.setDownsampling(auto=True, method="peak")
            curves.append(curve)
        return curves[i]

    def show_rois(self, result, indices: list[int]) -> None:
        """Plot the traces of ``indices`` (first = current ROI), or clear when none."""
        self.pixel_curve.setData([], [])
        t = np.arange(result.F.shape[1]) / result.fps if result is not None else None
        for key in self.plots:
            for i, curve in enumerate(self.curves[key]):
                if i >= len(indices):
                    curve.setData([], [])
        if result is None:
            self.title.setText("Run CNMF, then click an ROI to see its traces (or click a pixel for its raw trace).")
            return
        if not indices:
            self.title.setText("Click an ROI (Ctrl-click adds a second one) to see its traces.")
            return
        for i, k in enumerate(indices):
            pen = pg.mkPen(TRACE_COLORS[i % len(TRACE_COLORS)], width=1.2)
            self._curve("F", i).setData(t, result.F[k], pen=pen)
            self._curve("C", i).setData(t, result.C[k], pen=pen)
            self._curve("S", i).setData(t, result.S[k], pen=pen)
        names = ", ".join(f"#{k}" for k in indices)
        self.title.setText(f"ROI {names}: F = demixed raw fluorescence, C = deconvolved calcium, S = spikes "
                           "(wheel or right-drag to zoom time)")

    def show_pixel_trace(self, trace: np.ndarray, fps: float, title: str) -> None:
        for curves in self.curves.values():
            for curve in curves:
                curve.setData([], [])
        self.pixel_curve.setData(np.arange(len(trace)) / fps, trace)
        self.title.setText(title)

    def set_time_range(self, duration: float) -> None:
        self.plots["F"].setXRange(0, duration, padding=0.01)

    def set_cursor(self, seconds: float) -> None:
        for line in self.lines:
            line.setValue(seconds)

    def _clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or event.double():
            return
        for plot in self.plots.values():
            if plot.sceneBoundingRect().contains(event.scenePos()):
                self.frame_picked.emit(float(plot.vb.mapSceneToView(event.scenePos()).x()))
                return
