"""The ephys trace panel: stacked channels of the visible window, with the model and the residual
drawn over (or instead of) the data, and spike markers.

Each layer (data, model, residual) is ONE pyqtgraph curve for all channels (segments split by a
``connect`` mask), min/max-decimated to about two points per screen pixel per channel: 384
channels × a few thousand points redraw in a few tens of ms, where 384 curves of 15 000 samples
would not. The model is drawn only around spikes (not its zeros between them).

:class:`TraceLoader` reads, filters and decimates windows off the GUI thread, latest request wins;
the panel draws what it is given (:meth:`TracePanel.show_curves`), so the GUI thread only draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QObject, Qt, pyqtSignal
from PyQt6.QtGui import QPainterPath
from PyQt6.QtWidgets import QGraphicsPathItem, QHBoxLayout, QLabel, QScrollBar, QSizePolicy, QVBoxLayout, QWidget

from app.jobs import Job

LAYER_PENS = {
    "data": ("#1f3a68", 1.0),
    "model": ("#e4572e", 1.4),
    "residual": ("#0f8b6e", 1.0),
}
OTHER_SPIKE_COLOR = (120, 120, 120, 110)
FLAT_LAYERS = ("model",)  # mostly zeros: only the ends of a flat run are kept, and zero runs are left blank
THICK_PEN_MAX_POINTS = 20_000  # a wider-than-1 px pen costs ~30× more per point: beyond this, draw 1 px


def minmax_decimate(t: np.ndarray, data: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(t, data) with at most ~2·n_bins samples per channel: each bin's min then max, both at the bin's start.

    Peaks survive (unlike striding), so spikes stay visible when zoomed out. Bins are no wider
    than a pixel (n_bins = the plot's pixel width) and each is drawn as a vertical min–max line:
    every pixel column gets one. (Slanted min→max lines over bins of a pixel's width left
    empty columns where they drifted against the pixel grid: white lines through every channel.)
    """
    n = len(t)
    if n <= 2 * n_bins or n_bins < 1:
        return t, data
    per = n // n_bins  # floor: bins no wider than a pixel
    n_bins = n // per
    m = per * n_bins
    blocks = data[:m].reshape(n_bins, per, data.shape[1])
    lo, hi = blocks.min(axis=1), blocks.max(axis=1)
    t0 = t[:m:per]
    if m < n:  # the remainder is one more (shorter) bin, so the window's end is drawn too
        lo, hi = np.vstack([lo, data[m:].min(axis=0)]), np.vstack([hi, data[m:].max(axis=0)])
        t0 = np.append(t0, t[m])
    out = np.empty((2 * len(lo), data.shape[1]), data.dtype)
    out[0::2], out[1::2] = lo, hi
    return np.repeat(t0, 2), out


def prepare_curves(start: int, rate: float, layers: dict[str, np.ndarray | None], spacing: float,
                   n_bins: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, QPainterPath] | None]:
    """(x, y, connect, path) of each layer's single curve: channel i at y = −i·spacing, min/max-decimated to
    ``n_bins``, no line from one channel's end to the next one's start. Runs in the loader's thread:
    building the QPainterPath (a value type, fine off the GUI thread) is half the cost of a frame."""
    out = {}
    for name, data in layers.items():
        if data is None or data.size == 0:
            out[name] = None
            continue
        t = (start + np.arange(len(data))) / rate
        t, data = minmax_decimate(t, data, n_bins)
        n, c = data.shape
        offsets = -np.arange(c, dtype=np.float32) * np.float32(spacing)
        y = (data + offsets[None, :]).T.reshape(-1)  # channel after channel
        x = np.tile(t, c)
        connect = np.ones(n * c, dtype=bool)
        connect[n - 1::n] = False
        if name in FLAT_LAYERS and n > 2:  # drop the inside of flat runs (same pixels drawn); zero runs are not drawn
            inner = np.zeros(n * c, dtype=bool)
            inner[1:-1] = (y[1:-1] == y[:-2]) & (y[1:-1] == y[2:]) & connect[1:-1] & connect[:-2]
            if inner.any():
                zero = (data == 0).T.reshape(-1)
                connect = connect & ~(zero & np.r_[inner[1:], False])  # no line across a zero run
                keep = ~inner
                x, y, connect = x[keep], y[keep], connect[keep]
        out[name] = (x, y, connect, pg.functions.arrayToQPath(x, y, connect, finiteCheck=False))
    return out


@dataclass
class TraceRequest:
    """One window to read and draw; ``id`` grows with every request, so an older result never replaces a newer frame."""

    id: int
    source: object  # engine TraceSource
    start: int
    stop: int
    rows: slice
    data: str | None  # "raw", "preprocessed" or None
    model: bool
    residual: bool
    spacing: float
    n_bins: int
    extra: dict = field(default_factory=dict)  # what the owner needs to finish drawing (labels, ranges)

    @property
    def rate(self) -> float:
        return self.source.recording.sample_rate


def load_traces(request: TraceRequest, progress=None) -> dict:
    """Read the layers (engine) and prepare the curves: the whole work of a frame but the drawing."""
    layers = request.source.layers(request.start, request.stop, request.rows, data=request.data, model=request.model,
                                   residual=request.residual, progress=progress)
    curves = prepare_curves(request.start, request.rate, layers, request.spacing, request.n_bins)
    return {"layers": layers, "curves": curves}


def prefetch_around(request: TraceRequest, forward: bool, progress=None) -> int:
    """Filter the tiles half a window on each side of the request (the scrolling direction first)."""
    width = request.stop - request.start
    ahead = (request.stop, request.stop + width // 2)
    behind = (request.start - width // 2, request.start)
    done = 0
    for a, b in (ahead, behind) if forward else (behind, ahead):
        done += request.source.prefetch(a, b, progress)
    return done


class TraceLoader(QObject):
    """Loads trace windows in the background: one at a time, latest request wins.

    A request made while another runs waits in a single slot, replacing (dropping) any request
    already waiting there; the running one is cancelled at its next tile when the new window does
    not overlap it (a far jump), otherwise it finishes and is shown, so a continuous scroll keeps
    painting frames. ``loaded(request, result)`` fires on the GUI thread; the owner drops results
    older than its frame. When idle, it prefetches the tiles around the last window (cancelled by
    the next request). Uses :class:`app.jobs.Job` (a QThread per load), not the window's job panel:
    these loads are too short and too many to list.
    """

    loaded = pyqtSignal(object, object)  # TraceRequest, load_traces' dict
    failed = pyqtSignal(object, object)  # TraceRequest, JobError

    def __init__(self, load: Callable = load_traces, prefetch: Callable | None = prefetch_around, parent=None):
        super().__init__(parent)
        self._load, self._prefetch = load, prefetch
        self.running: tuple[Job, TraceRequest] | None = None
        self.pending: TraceRequest | None = None
        self.prefetching: Job | None = None
        self.dropped = 0  # requests replaced before they started
        self.cancelled = 0  # requests cancelled while running
        self._last_start = 0

    @property
    def busy(self) -> bool:
        return self.running is not None or self.pending is not None

    def request(self, request: TraceRequest) -> None:
        if self.prefetching is not None:
            self.prefetching.cancel()
        if self.pending is not None:
            self.dropped += 1
        self.pending = request
        if self.running is not None:
            job, current = self.running
            far = request.stop <= current.start or request.start >= current.stop
            if far or request.source is not current.source or request.rows != current.rows:
                job.cancel()
            return
        self._start_next()

    def drop_pending(self) -> None:
        """Forget the waiting request (a newer frame was drawn another way)."""
        if self.pending is not None:
            self.dropped += 1
            self.pending = None

    def _start_next(self) -> None:
        request, self.pending = self.pending, None
        if request is None:
            return
        job = Job("Read traces", self._load, request)
        job.finished.connect(lambda result: self.loaded.emit(request, result))
        job.failed.connect(lambda error: self.failed.emit(request, error))
        job.cancelled.connect(lambda: setattr(self, "cancelled", self.cancelled + 1))
        job.ended.connect(lambda _job: self._ended(request))
        self.running = (job, request)
        job.start()

    def _ended(self, request: TraceRequest) -> None:
        self.running = None
        forward = request.start >= self._last_start
        self._last_start = request.start
        if self.pending is not None:
            self._start_next()
        elif self._prefetch is not None and request.data in ("preprocessed", None):
            job = Job("Prefetch traces", self._prefetch, request, forward)
            job.ended.connect(lambda j: setattr(self, "prefetching", None) if self.prefetching is j else None)
            self.prefetching = job
            job.start()

    def wait(self, timeout_ms: int = 5000) -> None:
        """Stop the prefetch, drop what waits, and block until the running load ends (closing, tests)."""
        self.pending = None
        for job in ([self.running[0]] if self.running else []) + ([self.prefetching] if self.prefetching else []):
            job.cancel()
            job.wait(timeout_ms)


class TraceCurve(QGraphicsPathItem):
    """One layer drawn from a path built in the loader's thread: the GUI thread only paints it.

    ``getData()`` and ``opts["connect"]`` mirror PlotCurveItem's, for tests and tools."""

    def __init__(self, color: str, width: float):
        super().__init__()
        self.width = width
        self.pen = pg.mkPen(color, width=width)
        self.thin = pg.mkPen(color, width=1.0)
        self.setPen(self.pen)
        self.x, self.y = np.zeros(0), np.zeros(0)
        self.opts = {"connect": np.zeros(0, bool)}
        self._bounds = QPainterPath().controlPointRect()

    def setData(self, x=(), y=(), connect=None, path: QPainterPath | None = None) -> None:
        self.x, self.y = np.asarray(x, float), np.asarray(y, float)
        self.opts["connect"] = np.ones(len(self.x), bool) if connect is None else connect
        if path is None:
            path = pg.functions.arrayToQPath(self.x, self.y, self.opts["connect"]) if len(self.x) else QPainterPath()
        self.setPen(self.pen if len(self.x) <= THICK_PEN_MAX_POINTS else self.thin)
        self.prepareGeometryChange()
        self._bounds = path.controlPointRect()
        self.setPath(path)

    def getData(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x, self.y

    # Qt's defaults stroke the whole path (a pen wider than 0 makes even boundingRect do it): far too slow here
    def boundingRect(self):
        return self._bounds

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addRect(self._bounds)
        return path


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
        self.curves: dict[str, TraceCurve] = {}
        for z, (name, (color, width)) in enumerate(LAYER_PENS.items()):
            curve = TraceCurve(color, width)
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
        self.legend.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # must not widen the panel
        self.position.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        bottom = QHBoxLayout()
        bottom.setContentsMargins(4, 0, 4, 0)
        bottom.addWidget(self.legend, 1)
        bottom.addWidget(self.position)  # "12.345–14.345 s / 600.0 s · ch 0–383 / 384" is shown whole
        self.bottom = bottom
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

    def add_control(self, widget: QWidget) -> None:
        """A control of the traces (spacing…) on the line under them, right of the position."""
        self.bottom.addWidget(widget)

    # -- drawing ----------------------------------------------------------------------------------
    def pixel_width(self) -> int:
        return max(int(self.view.width()), 200)

    def show_window(self, start: int, rate: float, layers: dict[str, np.ndarray | None], spacing: float,
                    channel_labels: list[str], x_range: tuple[float, float]) -> None:
        """Draw each layer (samples × shown channels, µV; None hides it); channel i at y = −i·spacing."""
        curves = prepare_curves(start, rate, layers, spacing, self.pixel_width())
        stop = start + max((len(d) for d in layers.values() if d is not None), default=0)
        self.show_curves(curves, spacing, channel_labels, x_range, start, stop, rate)

    def show_curves(self, curves: dict[str, tuple | None], spacing: float, channel_labels: list[str],
                    x_range: tuple[float, float], start: int, stop: int, rate: float) -> None:
        """Draw prepared curves (:func:`prepare_curves`); None hides a layer."""
        self.spacing = spacing
        n_channels = len(channel_labels)
        for name, curve in self.curves.items():
            prepared = curves.get(name)
            if prepared is None:
                curve.setData([], [])
                curve.hide()
                continue
            x, y, connect, path = prepared
            curve.setData(x, y, connect, path)
            curve.show()
        step = max(1, int(np.ceil(n_channels / max(self.view.height() / 14, 1))))
        self.plot.getAxis("left").setTicks([[(-i * spacing, channel_labels[i]) for i in range(0, n_channels, step)], []])
        self._setting_range = True
        self.view.setXRange(*x_range, padding=0)
        self.view.setYRange(-(max(n_channels, 1) - 0.5) * spacing, 0.6 * spacing, padding=0)
        self._setting_range = False
        self.shown = {"start": start, "stop": stop, "rate": rate}

    def show_spikes(self, times_s: np.ndarray, rows: np.ndarray, clusters: np.ndarray, colors: dict[int, str]) -> None:
        """Markers under the spikes' peak channels; selected clusters in their colors, others gray."""
        self.marker_clusters = np.asarray(clusters, np.int64)
        if len(times_s) == 0:
            self.markers.setData([], [])
            return
        y = -np.asarray(rows, float) * self.spacing + 0.42 * self.spacing  # just above the trace, pointing at it
        other = pg.mkBrush(*OTHER_SPIKE_COLOR)
        chosen = {c: pg.mkBrush(color) for c, color in colors.items()}  # one brush per color, shared by its spikes
        brushes = [chosen.get(c, other) for c in self.marker_clusters.tolist()]
        sizes = np.where(np.isin(self.marker_clusters, list(colors)), 11, 7)
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
