"""The ephys workspace's unit views: the unit table (sortable, filterable, colored by label), the
similar-units list, and the plots of the selected units — waveforms on the probe, template
footprint, auto/cross-correlogram, ISI histogram, amplitudes over time and Phy's feature view (first
principal component on the unit's two best channels), either of them with the split lasso.

The views only draw: every number comes from :class:`engine.ephys.curation.Curation` getters.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QPointF, Qt, pyqtSignal
from PyQt6.QtGui import QBrush, QColor
from PyQt6.QtWidgets import (QAbstractItemView, QGraphicsItem, QHeaderView, QLabel, QLineEdit, QSizePolicy, QTableWidget, QTableWidgetItem,
                             QVBoxLayout, QWidget)

from app.widgets.number_item import NumberItem
from engine.ephys.curation import REFRACTORY_S, filter_rows
from engine.errors import InputError

# Colors of the selected units, in selection order (the first is the current unit), as Phy.
SELECTION_COLORS = ("#1f77d0", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")
MAX_SHOWN = 3  # selected units drawn on the unit views (Phy's views too show a few)
LABEL_BACKGROUNDS = {"good": "#dcfce7", "mua": "#fef3c7", "noise": "#e5e7eb", "unsorted": None}
LABEL_FOREGROUNDS = {"good": "#166534", "mua": "#92400e", "noise": "#6b7280", "unsorted": "#1f2937"}
COLUMNS = (("cluster_id", "ID", "{:d}", "Cluster id (Phy's)"),
           ("n_spikes", "Spikes", "{:,d}", "Number of spikes"),
           ("firing_rate", "Hz", "{:.2f}", "Firing rate (Hz): spikes / recording duration"),
           ("amplitude_uv", "µV", "{:.0f}", "Amplitude (µV): peak |value| of the mean waveform on the peak channel"),
           ("snr", "SNR", "{:.1f}", "Amplitude / noise SD of the peak channel"),
           ("isi_violations_ratio", "ISI", "{:.2f}",
            "ISI violations ratio (Hill 2011, 1.5 ms): violations relative to a Poisson unit at this rate; 0 is clean"),
           ("presence_ratio", "Pres", "{:.2f}", "Presence ratio: fraction of 100 time bins with at least one spike"),
           ("peak_channel", "Ch", "{:d}", "Peak channel (index into the probe's channel map)"),
           ("group", "Label", "{}", "good / mua / noise / unsorted (Alt+G, Alt+M, Alt+N)"))


def selection_color(i: int) -> str:
    return SELECTION_COLORS[i % len(SELECTION_COLORS)]


class UnitTable(QWidget):
    """The units, one row each; selection (Ctrl-click adds) emits ``selection_changed`` (ids, current first)."""

    selection_changed = pyqtSignal(list)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter: good, snr>5, rate>=1, isi<0.5, ch=12 …")
        self.filter.setClearButtonEnabled(True)
        self.filter.setToolTip("Terms separated by spaces (all must hold): a label (good, mua, noise, unsorted), a cluster id, "
                               "or column<op>number with columns id, spikes, rate, amp, snr, isi, presence, ch, depth")
        self.filter.textChanged.connect(self._apply_filter)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([c[1] for c in COLUMNS])
        for i, column in enumerate(COLUMNS):
            self.table.horizontalHeaderItem(i).setToolTip(column[3])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setStyleSheet("QHeaderView::section { padding: 3px 2px; }")  # compact: every column fits beside the traces
        self.table.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.setSortingEnabled(True)
        self.table.sortItems(0, Qt.SortOrder.AscendingOrder)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.status = QLabel("", objectName="Hint")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(3)
        layout.addWidget(self.filter)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        self.rows: list[dict] = []
        # the selection is kept by the owner (its session): asked for the order of a Ctrl-click
        self.current_selection: Callable[[], list[int]] = lambda: []

    def set_rows(self, rows: list[dict], selected: list[int]) -> None:
        """Refill (keeps the sort column) and select ``selected``."""
        self.rows = rows
        self.table.blockSignals(True)
        self.table.setSortingEnabled(False)  # filling a sorted table moves rows under the loop
        self.table.clearContents()
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, (key, _, fmt, _) in enumerate(COLUMNS):
                value = row[key]
                item = QTableWidgetItem(value) if key == "group" else NumberItem(value, fmt.format(value))
                if key == "cluster_id":
                    item.setData(Qt.ItemDataRole.UserRole, int(value))
                self.table.setItem(r, c, item)
            self._style_row(r, row["group"])
        self.table.setSortingEnabled(True)
        self.table.blockSignals(False)
        self.table.resizeColumnsToContents()
        header = self.table.horizontalHeader()
        columns = sum(max(self.table.sizeHintForColumn(i), header.sectionSizeHint(i)) for i in range(len(COLUMNS)))
        needed = columns + self.table.verticalScrollBar().sizeHint().width() + 6
        self.setMinimumWidth(min(needed, 600))  # every column visible without scrolling sideways
        self._apply_filter()
        self.select(selected, emit=False)

    def _style_row(self, r: int, group: str) -> None:
        background = LABEL_BACKGROUNDS.get(group)
        for c in range(self.table.columnCount()):
            item = self.table.item(r, c)
            item.setBackground(QBrush(QColor(background)) if background else QBrush())
            item.setForeground(QBrush(QColor(LABEL_FOREGROUNDS.get(group, "#1f2937"))))

    def cluster_at(self, row: int) -> int:
        return int(self.table.item(row, 0).data(Qt.ItemDataRole.UserRole))

    def row_of(self, cluster: int) -> int | None:
        for r in range(self.table.rowCount()):
            if self.cluster_at(r) == cluster:
                return r
        return None

    def visible_clusters(self) -> list[int]:
        """Clusters in table order, filtered rows left out."""
        return [self.cluster_at(r) for r in range(self.table.rowCount()) if not self.table.isRowHidden(r)]

    def select(self, clusters: list[int], emit: bool = True) -> None:
        self.table.blockSignals(True)
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)  # selectRow adds, not replaces
        rows = [self.row_of(c) for c in clusters]
        for r in reversed([r for r in rows if r is not None]):  # the current unit last: it becomes current
            self.table.selectRow(r)
        self.table.setSelectionMode(mode)
        if rows and rows[0] is not None:
            self.table.scrollToItem(self.table.item(rows[0], 0))
        self.table.blockSignals(False)
        if emit:
            self.selection_changed.emit([c for c, r in zip(clusters, rows) if r is not None])

    def shown_selection(self) -> list[int]:
        """The selected rows' units, the current row's first."""
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        clusters = [self.cluster_at(r) for r in rows]
        current = self.cluster_at(self.table.currentRow()) if self.table.currentRow() >= 0 else None
        if current in clusters:
            clusters.remove(current)
            clusters.insert(0, current)
        return clusters

    def show_selection(self, clusters: list[int]) -> None:
        """Select these units' rows, unless they are selected already (a click: the table scrolls not)."""
        if set(self.shown_selection()) != set(clusters):
            self.select(clusters, emit=False)

    def _selection_changed(self) -> None:
        clusters = self.shown_selection()  # the clicked row first: it is the "current" unit
        # keep the earlier order of units still selected (Ctrl-click adds the new one second)
        kept = [c for c in self.current_selection() if c in clusters]
        added = [c for c in clusters if c not in kept]
        self.selection_changed.emit(kept + added if kept else clusters)

    def _apply_filter(self) -> None:
        text = self.filter.text()
        try:
            keep = {r["cluster_id"] for r in filter_rows(self.rows, text)} if text.strip() else None
            self.filter.setStyleSheet("")
            self.filter.setToolTip(self.filter.toolTip().split("\n\n")[0])
        except InputError as exc:
            keep = None
            self.filter.setStyleSheet("QLineEdit { border: 1px solid #dc2626; }")
            self.filter.setToolTip(self.filter.toolTip().split("\n\n")[0] + "\n\n" + exc.message)
        for r in range(self.table.rowCount()):
            self.table.setRowHidden(r, keep is not None and self.cluster_at(r) not in keep)
        shown = len(self.rows) if keep is None else len(keep)
        self.status.setText(f"{shown} of {len(self.rows)} units shown" if keep is not None else f"{len(self.rows)} units")


class SimilarList(QTableWidget):
    """Units most similar to the current one (template similarity); clicking one selects the pair."""

    picked = pyqtSignal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(0, 3, parent)
        self.setHorizontalHeaderLabels(["Similar", "Similarity", "Label"])
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(22)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.setToolTip("Units whose templates resemble the current unit's (best-lag cosine similarity): merge candidates. "
                        "Click one to show it beside the current unit; Space / Shift+Space step through them.")
        self.cellClicked.connect(lambda row, _col: self.picked.emit(int(self.item(row, 0).data(Qt.ItemDataRole.UserRole))))

    def show_similar(self, items: list[tuple[int, float, str]], paired: int | None = None) -> None:
        """List ``(cluster, similarity, label)`` rows; the row of ``paired`` (the unit shown beside) is selected."""
        self.clearSelection()
        self.setRowCount(len(items))
        for r, (cid, sim, group) in enumerate(items):
            item = NumberItem(cid, str(cid))
            item.setData(Qt.ItemDataRole.UserRole, int(cid))
            self.setItem(r, 0, item)
            self.setItem(r, 1, NumberItem(sim, f"{sim:.2f}"))
            label = QTableWidgetItem(group)
            label.setForeground(QBrush(QColor(LABEL_FOREGROUNDS.get(group, "#1f2937"))))
            self.setItem(r, 2, label)
            if cid == paired:
                self.selectRow(r)


def points_in_polygon(x: np.ndarray, y: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule: which points (x, y) lie inside the closed polygon (m, 2)."""
    inside = np.zeros(len(x), dtype=bool)
    if len(polygon) < 3:
        return inside
    px, py = polygon[:, 0], polygon[:, 1]
    for i in range(len(polygon)):
        x1, y1, x2, y2 = px[i - 1], py[i - 1], px[i], py[i]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < at)
    return inside


def _title(plot: pg.PlotItem, text: str) -> None:
    if plot.titleLabel.text != text:  # a new title lays out its label again
        plot.setTitle(text, size="9pt")


def _plot(layout: pg.GraphicsLayout, row: int, col: int, title: str, rowspan: int = 1) -> pg.PlotItem:
    plot = layout.addPlot(row=row, col=col, rowspan=rowspan)
    plot.setTitle(title, size="9pt")
    plot.setMenuEnabled(False)
    plot.hideButtons()
    plot.getAxis("left").setWidth(40)
    for name in ("left", "bottom"):  # an axis whose range stands is drawn from a pixmap, not replayed tick by tick
        plot.getAxis(name).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
    return plot


class UnitViews(QWidget):
    """Plots of the selected units; Ctrl-click on the amplitude or feature view draws the split lasso."""

    lasso_changed = pyqtSignal(int)  # number of lasso points

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.graphics = pg.GraphicsLayoutWidget()
        layout = self.graphics.ci
        self.waveforms = _plot(layout, 0, 0, "Waveforms", rowspan=2)
        self.waveforms.setLabel("left", "depth (µm)")  # no SI prefix: "kµm" reads badly
        self.waveforms.getAxis("bottom").setStyle(showValues=False)
        self.footprint = _plot(layout, 0, 1, "Footprint", rowspan=2)
        self.footprint.getAxis("bottom").setStyle(showValues=False)
        self.footprint.setAspectLocked(False)
        self.correlogram = _plot(layout, 0, 2, "Autocorrelogram")
        self.correlogram.setLabel("bottom", "lag (ms)")
        self.isi = _plot(layout, 1, 2, "ISI histogram")
        self.isi.setLabel("bottom", "ISI (ms)")
        self.amplitude = _plot(layout, 0, 3, "Amplitudes")
        self.amplitude.setLabel("bottom", "time", units="s")
        self.amplitude.setLabel("left", "amplitude", units="V")
        self.features = _plot(layout, 1, 3, "Features")
        for col, stretch in enumerate((3, 1, 2, 3)):
            layout.layout.setColumnStretchFactor(col, stretch)
        self.refractory_lines = []
        for plot, values in ((self.correlogram, (-REFRACTORY_S * 1e3, REFRACTORY_S * 1e3)), (self.isi, (REFRACTORY_S * 1e3,))):
            for v in values:
                line = pg.InfiniteLine(v, angle=90, pen=pg.mkPen("#dc2626", width=1, style=Qt.PenStyle.DashLine))
                line.setZValue(20)
                plot.addItem(line)
                self.refractory_lines.append(line)
        # The lasso lives on one of the two spike scatters; a Ctrl-click on the other starts a new one there.
        self.lasso_curves = {}
        for plot in (self.amplitude, self.features):
            curve = pg.PlotCurveItem(pen=pg.mkPen("#111827", width=1.5, style=Qt.PenStyle.DashLine))
            curve.setZValue(50)
            plot.addItem(curve)
            self.lasso_curves[plot] = curve
        self.lasso: list[tuple[float, float]] = []
        self.lasso_plot = self.amplitude
        # Every item is made once and given new data per selection: adding and removing pyqtgraph items
        # (signal connections, scene bookkeeping, text documents) cost more than drawing them. The unit
        # of selection place i is drawn above place i + 1 (the current unit on top).
        self._faint = [self._item(self.waveforms, pg.PlotCurveItem(), 5 - i) for i in range(2)]  # its spikes
        self._means = [self._item(self.waveforms, pg.PlotCurveItem(), 10 - i) for i in range(MAX_SHOWN)]
        self._channel_labels: list[pg.TextItem] = []  # made as more channels are shown
        self._footprint = self._item(self.footprint, pg.ScatterPlotItem(pen=pg.mkPen("#9ca3af", width=0.5), symbol="s"), 1)
        self._footprint_other = self._item(self.footprint, pg.ScatterPlotItem(size=20, brush=None, symbol="o"), 2)
        self._correlogram = self._item(self.correlogram, pg.BarGraphItem(x=[0], height=[0], width=1, pen=pg.mkPen(None)), 1)
        self._isi = [self._item(self.isi, pg.BarGraphItem(x=[0], height=[0], width=1, pen=pg.mkPen(None)), 2 - i) for i in range(2)]
        self._amplitudes = [self._item(self.amplitude, pg.ScatterPlotItem(size=4, pen=None), 10 - i) for i in range(MAX_SHOWN)]
        self._features = [self._item(self.features, pg.ScatterPlotItem(size=4, pen=None), 10 - i) for i in range(MAX_SHOWN)]
        self.amplitude_points: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # cluster → (t, amp V, spike idx)
        self.feature_points: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # cluster → (x, y, spike idx)
        self.feature_channels: tuple[int, int] | None = None
        self._feature_choice: tuple[int, int] | None = None  # channels picked on the waveform view, for this unit
        self._shown: tuple | None = None  # (curation, clusters) on display
        self._waveform_channels = np.zeros(0, int)
        self.hint = QLabel("Select a unit in the table.", objectName="Hint")
        self.hint.setWordWrap(True)
        self.hint.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # never widens the views
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(2)
        box.addWidget(self.graphics, 1)
        box.addWidget(self.hint)
        self.graphics.scene().sigMouseClicked.connect(self._clicked)

    # -- drawing ------------------------------------------------------------------------------------
    @staticmethod
    def _item(plot, item, z: float):
        item.setZValue(z)
        item.setVisible(False)
        plot.addItem(item)
        return item

    @property
    def drawn(self) -> list:
        """The items showing the selected units now."""
        items = self._faint + self._means + self._channel_labels + [self._footprint, self._footprint_other, self._correlogram]
        return [item for item in items + self._isi + self._amplitudes + self._features if item.isVisible()]

    def clear(self) -> None:
        for item in self.drawn:
            item.setVisible(False)
        self.amplitude_points = {}
        self.feature_points = {}
        self.feature_channels = None
        self.clear_lasso()

    def show_units(self, curation, clusters: list[int], waveforms: dict[int, dict]) -> None:
        """Draw every view for ``clusters`` (the first is the current unit; at most :data:`MAX_SHOWN`);
        ``waveforms``: cluster → :meth:`Curation.waveforms` output."""
        clusters = list(clusters)[:MAX_SHOWN]
        if self._shown is None or not clusters or not self._shown[1] or self._shown[1][0] != clusters[0]:
            self._feature_choice = None  # as in Phy, a new current unit starts on its own best channels
        self.clear()
        self._shown = (curation, clusters) if curation is not None and clusters else None
        if curation is None or not clusters:
            self.hint.setText("Select a unit in the table (Ctrl-click a second one for the cross-correlogram).")
            return
        self._draw_waveforms(curation, clusters, waveforms)
        self._draw_footprint(curation, clusters)
        self._draw_correlograms(curation, clusters)
        self._draw_amplitudes(curation, clusters)
        self._draw_features(curation, clusters)
        names = ", ".join(str(c) for c in clusters)
        self.hint.setText(f"Unit {names}. Split: Ctrl-click points around spikes on the amplitude or feature view, "
                          f"then K (Esc clears). Merge the selection: G. Feature axes: Ctrl-click (x) or Shift-click (y) "
                          f"a channel on the waveforms.")

    def update_waveforms(self, curation, clusters: list[int], waveforms: dict[int, dict]) -> None:
        """Redraw only the waveform view (the spikes read in the background arrived); the other views stand."""
        if self._shown is None or self._shown[0] is not curation or list(self._shown[1]) != list(clusters)[:MAX_SHOWN]:
            return self.show_units(curation, clusters, waveforms)
        self._draw_waveforms(curation, self._shown[1], waveforms)

    def _draw_waveforms(self, curation, clusters, waveforms) -> None:
        pos = curation.positions
        channels = curation.best_channels(clusters[0], n=12)
        self._waveform_channels = channels
        xs, ys = np.unique(pos[:, 0]), np.unique(pos[:, 1])
        dx = np.diff(xs).min() if len(xs) > 1 else 40.0
        dy = np.diff(ys).min() if len(ys) > 1 else 20.0
        width = 0.85 * dx
        peak = max((np.abs(waveforms[c]["mean"][:, channels]).max() for c in clusters if c in waveforms), default=1.0)
        scale = 1.6 * dy / max(peak, 1e-9)  # the largest deflection spans ~1.6 rows: overlaps a little, like Phy
        for item in self._faint + self._means:
            item.setVisible(False)
        for i, c in enumerate(clusters):
            w = waveforms.get(c)
            if w is None:
                continue
            d = w["mean"].shape[0]
            x_local = np.linspace(-width / 2, width / 2, d)
            color = QColor(selection_color(i))
            samples = w["samples"]
            if len(samples) and i < len(self._faint):  # the spikes themselves, faint, under the means
                faint = QColor(color)
                faint.setAlpha(40)
                n = samples.shape[0]
                x = np.concatenate([pos[channels, 0][:, None, None] + np.broadcast_to(x_local, (len(channels), n, d)),
                                    np.full((len(channels), n, 1), np.nan)], axis=2)
                y = np.concatenate([pos[channels, 1][:, None, None] + samples[:, :, channels].transpose(2, 0, 1) * scale,
                                    np.full((len(channels), n, 1), np.nan)], axis=2)
                self._faint[i].setData(x.ravel(), y.ravel(), connect="finite", pen=pg.mkPen(faint, width=1))
                self._faint[i].setVisible(True)
            x = np.concatenate([pos[channels, 0][:, None] + x_local, np.full((len(channels), 1), np.nan)], axis=1)
            y = np.concatenate([pos[channels, 1][:, None] + w["mean"][:, channels].T * scale, np.full((len(channels), 1), np.nan)], axis=1)
            self._means[i].setData(x.ravel(), y.ravel(), connect="finite", pen=pg.mkPen(color, width=2))
            self._means[i].setVisible(True)
        while len(self._channel_labels) < len(channels):
            self._channel_labels.append(self._item(self.waveforms, pg.TextItem("", color="#6b7280", anchor=(1.0, 0.5)), 20))
        for label, ch in zip(self._channel_labels, channels):
            if label.textItem.toPlainText() != str(ch):
                label.setText(str(ch))
            label.setPos(pos[ch, 0] - width / 2, pos[ch, 1])
            label.setVisible(True)
        for label in self._channel_labels[len(channels):]:
            label.setVisible(False)
        shown = pos[channels]
        self.waveforms.setRange(xRange=(shown[:, 0].min() - 0.8 * width, shown[:, 0].max() + 0.55 * width),  # room for labels
                                yRange=(shown[:, 1].min() - dy, shown[:, 1].max() + dy), padding=0)

    def _draw_footprint(self, curation, clusters) -> None:
        pos = curation.positions
        foot = curation.footprint(clusters[0])
        rel = foot / max(foot.max(), 1e-9)
        color = QColor(selection_color(0))
        brushes = []
        for r in rel:
            c = QColor(color)
            c.setAlpha(int(25 + 230 * r))
            brushes.append(pg.mkBrush(c))
        self._footprint.setData(pos[:, 0], pos[:, 1], size=6 + 12 * rel, brush=brushes)
        self._footprint.setVisible(True)
        if len(clusters) > 1:
            top = np.argsort(-curation.footprint(clusters[1]))[:3]
            self._footprint_other.setData(pos[top, 0], pos[top, 1], pen=pg.mkPen(selection_color(1), width=2))
            self._footprint_other.setVisible(True)
        self.footprint.setRange(xRange=(pos[:, 0].min() - 20, pos[:, 0].max() + 20),
                                yRange=(pos[:, 1].min() - 20, pos[:, 1].max() + 20), padding=0)

    def _draw_correlograms(self, curation, clusters) -> None:
        a = clusters[0]
        b = clusters[1] if len(clusters) > 1 else a
        centers, counts = curation.correlogram(a, b)
        _title(self.correlogram, "Autocorrelogram" if a == b else f"Cross-correlogram {a} → {b}")
        color = selection_color(0) if a == b else "#6b21a8"
        self._bars(self.correlogram, self._correlogram, centers * 1e3, counts, color)
        for i, c in enumerate(clusters[:2]):
            edges, isi_counts = curation.isi_histogram(c)
            centers_ms = (edges[:-1] + edges[1:]) / 2 * 1e3
            self._bars(self.isi, self._isi[i], centers_ms, isi_counts, selection_color(i), alpha=180 if i == 0 else 110)
        row = curation.row(a)
        _title(self.isi, f"ISI histogram · {row['isi_violations']} below 1.5 ms")

    @staticmethod
    def _bars(plot, item, centers, counts, color, alpha=200) -> None:
        if len(centers) == 0:
            return
        width = float(np.median(np.diff(centers))) if len(centers) > 1 else 1.0
        c = QColor(color)
        c.setAlpha(alpha)
        item.setOpts(x=centers, height=counts, width=width * 0.95, brush=pg.mkBrush(c))
        item.setVisible(True)
        plot.setRange(xRange=(centers[0] - width, centers[-1] + width), yRange=(0, max(float(np.max(counts)) * 1.1, 1.0)), padding=0)

    def _draw_amplitudes(self, curation, clusters) -> None:
        for i, c in enumerate(clusters):
            t, amp_uv, spikes = curation.amplitudes_of(c)
            amp = amp_uv * 1e-6  # volts: the axis shows µV with its SI prefix
            self.amplitude_points[c] = (t, amp, spikes)
            color = QColor(selection_color(i))
            color.setAlpha(170)
            self._amplitudes[i].setData(t, amp, brush=pg.mkBrush(color))
            self._amplitudes[i].setVisible(True)
        top = max((float(v[1].max()) for v in self.amplitude_points.values() if len(v[1])), default=1e-6)
        margin = 0.01 * curation.duration
        self.amplitude.setRange(xRange=(-margin, curation.duration + margin), yRange=(0, top * 1.08), padding=0)

    def _draw_features(self, curation, clusters) -> None:
        """Phy's feature view: each spike's first PC on two channels (the current unit's best two, or those
        picked on the waveform view)."""
        for item in self._features:
            item.setVisible(False)
        if not curation.has_features:
            _title(self.features, "Features (none in this folder)")
            return
        a, b = self._feature_choice or (int(c) for c in np.argsort(-curation.footprint(clusters[0]))[:2])
        self.feature_channels = (a, b)
        _title(self.features, f"Features · PC1 on ch {a} → ch {b}")
        for i, c in enumerate(clusters):
            f, spikes = curation.features_of(c, [a, b])
            self.feature_points[c] = (f[:, 0], f[:, 1], spikes)
            color = QColor(selection_color(i))
            color.setAlpha(170)
            shown = ~np.isnan(f).any(1)  # spikes whose template has no feature on a or b
            self._features[i].setData(f[shown, 0], f[shown, 1], brush=pg.mkBrush(color))
            self._features[i].setVisible(True)
        self.features.enableAutoRange()

    def set_feature_channel(self, axis: int, channel: int) -> None:
        """Phy's way to pick the feature view's axes: ``axis`` 0 (x) or 1 (y) shows the first PC on ``channel``."""
        if self._shown is None or self.feature_channels is None:
            return
        chosen = list(self.feature_channels)
        if chosen[1 - axis] == channel:  # the other axis's channel: the axes swap
            chosen[1 - axis] = chosen[axis]
        chosen[axis] = int(channel)
        self._feature_choice = (chosen[0], chosen[1])
        self.feature_points = {}
        if self.lasso_plot is self.features:
            self.clear_lasso()
        self._draw_features(*self._shown)

    def _waveform_channel_at(self, x: float, y: float) -> int | None:
        """The shown waveform channel nearest to a point of the waveform view (probe µm)."""
        if self._shown is None or not len(self._waveform_channels):
            return None
        pos = self._shown[0].positions[self._waveform_channels]
        return int(self._waveform_channels[np.argmin(np.hypot(pos[:, 0] - x, pos[:, 1] - y))])

    # -- lasso ---------------------------------------------------------------------------------------
    def add_lasso_point(self, x: float, y: float, plot=None) -> None:
        plot = plot or self.amplitude
        if plot is not self.lasso_plot:
            self.clear_lasso()
            self.lasso_plot = plot
        self.lasso.append((float(x), float(y)))
        closed = self.lasso + self.lasso[:1]
        self.lasso_curves[plot].setData([p[0] for p in closed], [p[1] for p in closed])
        self.lasso_changed.emit(len(self.lasso))

    def clear_lasso(self) -> None:
        self.lasso = []
        for curve in self.lasso_curves.values():
            curve.setData([], [])
        self.lasso_changed.emit(0)

    def lasso_mask(self, cluster: int) -> np.ndarray | None:
        """Which of ``cluster``'s spikes lie in the lasso (None when it is not drawn or not shown)."""
        points = self.amplitude_points if self.lasso_plot is self.amplitude else self.feature_points
        if len(self.lasso) < 3 or cluster not in points:
            return None
        x, y, _ = points[cluster]
        return points_in_polygon(x, y, np.asarray(self.lasso))  # NaN features compare False: outside

    def amplitude_position(self, t: float, amp_uv: float) -> QPointF:
        """Where (time s, amplitude µV) is, in the coordinates of the widget that takes clicks (tests, demo)."""
        return self.plot_position(self.amplitude, t, amp_uv * 1e-6)

    def plot_position(self, plot, x: float, y: float) -> QPointF:
        """Where data point (x, y) of ``plot`` is, in the coordinates of the widget that takes clicks."""
        return self.graphics.mapFromScene(plot.vb.mapViewToScene(QPointF(x, y)))

    def click_target(self) -> QWidget:
        return self.graphics.viewport()

    def _clicked(self, event) -> None:
        ctrl, shift = (bool(event.modifiers() & m) for m in (Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.ShiftModifier))
        if event.button() != Qt.MouseButton.LeftButton or not (ctrl or shift):
            return
        if self.waveforms.sceneBoundingRect().contains(event.scenePos()):
            point = self.waveforms.vb.mapSceneToView(event.scenePos())
            channel = self._waveform_channel_at(point.x(), point.y())
            if channel is not None:
                self.set_feature_channel(0 if ctrl else 1, channel)
                event.accept()
            return
        if not ctrl:
            return
        for plot, points in ((self.amplitude, self.amplitude_points), (self.features, self.feature_points)):
            if points and plot.sceneBoundingRect().contains(event.scenePos()):
                point = plot.vb.mapSceneToView(event.scenePos())
                self.add_lasso_point(point.x(), point.y(), plot)
                event.accept()
                return
