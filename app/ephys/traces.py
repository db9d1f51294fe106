"""The ephys trace panel: stacked channels of the visible window, with the model and the residual
drawn over (or instead of) the data, and spike markers.

Each layer (data, model, residual) is ONE pyqtgraph curve for all channels (segments split by a
``connect`` mask), min/max-decimated to about two points per screen pixel per channel: 384
channels × a few thousand points redraw in a few tens of ms, where 384 curves of 15 000 samples
would not. The panel draws what it is given; the workspace reads the window from the memmap.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import QHBoxLayout, QLabel, QScrollBar, QSizePolicy, QVBoxLayout, QWidget

LAYER_PENS = {
    "data": ("#1f3a68", 1.0),
    "model": ("#e4572e", 1.4),
    "residual": ("#0f8b6e", 1.0),
}
OTHER_SPIKE_COLOR = (120, 120, 120, 110)


def minmax_decimate(t: np.ndarray, data: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(t, data) with at most 2·n_bins samples per channel: each bin's min and max, in time order.

    Peaks survive (unlike striding), so spikes stay visible when zoomed out.
    """
    n = len(t)
    if n <= 2 * n_bins or n_bins < 1:
        return t, data
    per = -(-n // n_bins)  # ceil: the remainder stays shorter than a bin
    n_bins = n // per
    m = per * n_bins
    blocks = data[:m].reshape(n_bins, per, data.shape[1])
    lo, hi = blocks.min(axis=1), blocks.max(axis=1)
    tb = t[:m].reshape(n_bins, per)
    t0, t1 = tb[:, 0], tb[:, -1]
    if m < n:  # the remainder is one more (shorter) bin, so the window's end is drawn too
        lo, hi = np.vstack([lo, data[m:].min(axis=0)]), np.vstack([hi, data[m:].max(axis=0)])
        t0, t1 = np.append(t0, t[m]), np.append(t1, t[-1])
    out = np.empty((2 * len(lo), data.shape[1]), data.dtype)
    out[0::2], out[1::2] = lo, hi
    tt = np.empty(2 * len(lo), t.dtype)
    tt[0::2], tt[1::2] = t0, t1
    return tt, out


class TracePanel(QWidget):
    """Stacked traces with a time scroll bar. ``view_changed(start_s, width_s)`` fires when the user
    pans or zooms with the mouse (the owner then reads and draws the new window)."""

    view_changed = pyqtSignal(float, float)
    spike_clicked = pyqtSignal(int)  # cluster id of a clicked spike marker

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.plot = pg.PlotWidget()
        self.plot.setLabel("bottom", "time", units="s")
        self.plot.showGrid(x=True, y=False, alpha=0.15)
        self.plot.setMouseEnabled(x=True, y=False)  # time pans and zooms; channels by the controls
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setToolTip("Wheel: zoom time · drag: pan · click a spike marker: select its unit")
        self.plot.getAxis("left").setWidth(44)
        self.view = self.plot.getViewBox()
        self.view.sigXRangeChanged.connect(self._x_range_changed)
        self.curves: dict[str, pg.PlotCurveItem] = {}
        for z, (name, (color, width)) in enumerate(LAYER_PENS.items()):
            curve = pg.PlotCurveItem(pen=pg.mkPen(color, width=width), skipFiniteCheck=True)
            curve.setZValue(10 + z)
            self.plot.addItem(curve)
            self.curves[name] = curve
        self.markers = pg.ScatterPlotItem(pxMode=True, symbol="t", hoverable=False)  # a triangle above each spike, pointing at it
        self.markers.setZValue(30)
        self.markers.sigClicked.connect(self._marker_clicked)
        self.plot.addItem(self.markers)
        self.scroll = QScrollBar(Qt.Orientation.Horizontal)
        self.legend = QLabel("", objectName="Hint")
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.position = QLabel("", objectName="Hint")
        for label in (self.legend, self.position):  # long texts must not widen the panel
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.position.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        bottom = QHBoxLayout()
        bottom.setContentsMargins(4, 0, 4, 0)
        bottom.addWidget(self.legend, 3)
        bottom.addWidget(self.position, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.scroll)
        layout.addLayout(bottom)
        self.spacing = 150.0
        self.marker_clusters = np.zeros(0, np.int64)
        self.highlights: list[pg.PlotCurveItem] = []
        self._setting_range = False
        self.shown = {"start": 0, "stop": 0, "rate": 1.0}  # samples of the window on screen

    # -- drawing ----------------------------------------------------------------------------------
    def pixel_width(self) -> int:
        return max(int(self.view.width()), 200)

    def show_window(self, start: int, rate: float, layers: dict[str, np.ndarray | None], spacing: float,
                    channel_labels: list[str], x_range: tuple[float, float]) -> None:
        """Draw each layer (samples × shown channels, µV; None hides it); channel i at y = −i·spacing."""
        self.spacing = spacing
        n_channels = len(channel_labels)
        for name, curve in self.curves.items():
            data = layers.get(name)
            if data is None or data.size == 0:
                curve.setData([], [])
                curve.hide()
                continue
            t = (start + np.arange(len(data))) / rate
            t, data = minmax_decimate(t, data, self.pixel_width())
            n, c = data.shape
            offsets = -np.arange(c, dtype=np.float32) * spacing
            y = (data + offsets[None, :]).T.reshape(-1)  # channel after channel
            x = np.tile(t, c)
            connect = np.ones(n * c, dtype=bool)
            connect[n - 1::n] = False  # no line from one channel's end to the next one's start
            curve.setData(x=x, y=y, connect=connect)
            curve.show()
        step = max(1, int(np.ceil(n_channels / max(self.view.height() / 14, 1))))
        self.plot.getAxis("left").setTicks([[(-i * spacing, channel_labels[i]) for i in range(0, n_channels, step)], []])
        self._setting_range = True
        self.view.setXRange(*x_range, padding=0)
        self.view.setYRange(-(max(n_channels, 1) - 0.5) * spacing, 0.6 * spacing, padding=0)
        self._setting_range = False
        self.shown = {"start": start, "stop": start + max((len(d) for d in layers.values() if d is not None), default=0),
                      "rate": rate}

    def show_spikes(self, times_s: np.ndarray, rows: np.ndarray, clusters: np.ndarray, colors: dict[int, str]) -> None:
        """Markers under the spikes' peak channels; selected clusters in their colors, others gray."""
        self.marker_clusters = np.asarray(clusters, np.int64)
        if len(times_s) == 0:
            self.markers.setData([], [])
            return
        y = -np.asarray(rows, float) * self.spacing + 0.42 * self.spacing  # just above the trace, pointing at it
        brushes = [pg.mkBrush(colors[c]) if c in colors else pg.mkBrush(*OTHER_SPIKE_COLOR) for c in self.marker_clusters.tolist()]
        sizes = [11 if c in colors else 7 for c in self.marker_clusters.tolist()]
        self.markers.setData(x=np.asarray(times_s, float), y=y, brush=brushes, size=sizes, pen=None,
                             data=self.marker_clusters)

    def show_highlights(self, segments: list[tuple[np.ndarray, np.ndarray, str]]) -> None:
        """Selected units' spikes redrawn in their colors over the data: (x, y with NaN breaks, color) per unit."""
        while len(self.highlights) < len(segments):
            curve = pg.PlotCurveItem(connect="finite")
            curve.setZValue(20)
            self.plot.addItem(curve)
            self.highlights.append(curve)
        for i, curve in enumerate(self.highlights):
            if i < len(segments) and len(segments[i][0]):
                x, y, color = segments[i]
                curve.setData(x, y, pen=pg.mkPen(color, width=1.6))
                curve.show()
            else:
                curve.setData([], [])
                curve.hide()

    def set_legend(self, html: str) -> None:
        self.legend.setText(html)

    # -- interaction --------------------------------------------------------------------------------
    def _x_range_changed(self, _view, x_range) -> None:
        if not self._setting_range:
            self.view_changed.emit(float(x_range[0]), float(x_range[1] - x_range[0]))

    def _marker_clicked(self, _item, points, _event=None) -> None:
        if len(points):
            self.spike_clicked.emit(int(points[0].data()))

    def x_range(self) -> tuple[float, float]:
        (x0, x1), _ = self.view.viewRange()
        return float(x0), float(x1)
