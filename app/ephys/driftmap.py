"""The drift map: every spike's depth along the probe over time, darker and more opaque the larger its
amplitude (Kilosort 4's drift plot, SpikeInterface's ``plot_motion``), with the motion the sorter
estimated drawn over it, one line per depth block; the selected units' spikes in their colours.

Click a spike to select its unit. The spikes are drawn as one image made in a background job
(:func:`engine.ephys.driftmap.read_drift_map`, ``DriftMap.raster``) at the plot's pixel size, each
spike a 2 × 2-pixel dot holding the largest amplitude that falls there; the GUI thread only hands it
to pyqtgraph. Measured under Xvfb (``benchmarks/driftmap.py``): pyqtgraph's ScatterPlotItem takes
1 s to fill and 0.2 s to repaint 50,000 dots, the image 50 ms to draw and 25–70 ms to repaint
whatever the count; only the selected units' spikes are a (small) scatter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QRectF, Qt, pyqtSignal
from PyQt6.QtWidgets import QHBoxLayout, QLabel, QTabWidget, QVBoxLayout, QWidget

from app.ephys.views import selection_color
from app.widgets.colorbar import ColorBar
from app.widgets.colormaps import LUT_SIZE, map_values
from engine.ephys.driftmap import DriftMap, read_drift_map

MOTION_COLOR = "#e4572e"
MAX_HIGHLIGHT = 6_000  # dots of the selected units drawn at most, all together: a scatter of 5,000 fills and paints in ~45 ms
NO_MOTION = "No motion estimated — sort with motion correction to see it."


def amplitude_lut() -> np.ndarray:
    """(LUT_SIZE, 4) RGBA: small amplitudes light grey and faint, large ones black and opaque."""
    v = np.linspace(0.0, 1.0, LUT_SIZE, dtype=np.float32)
    grey = 0.82 * (1.0 - v)
    return np.stack([grey, grey, grey, 0.25 + 0.75 * v], axis=1)


def prepare(folder: Path, pixels: tuple[int, int] = (1200, 700), progress=None) -> dict:
    """Job body: the folder's drift map and its image, coloured (off the GUI thread). One bin per pixel of the
    plot (``pixels``, width × height): a finer image, shrunk on screen, would drop dots."""
    drift = read_drift_map(folder, progress=progress)
    image, extent = drift.raster(n_time=pixels[0], n_depth=pixels[1])
    lo, hi = drift.amplitude_limits()
    rgba = (map_values(image, amplitude_lut(), lo, hi) * 255).astype(np.uint8)
    rgba[np.isnan(image), 3] = 0
    return {"drift": drift, "rgba": rgba, "extent": extent, "limits": (lo, hi)}


class DriftMapView(QWidget):
    """Drift map of a Phy folder; :meth:`load` reads it in a job started through ``run_job``
    (``MainWindow.run_job``'s signature), the latest folder asked for wins."""

    loaded = pyqtSignal()
    unit_clicked = pyqtSignal(int)  # cluster of the spike nearest a click (within a few pixels)

    def __init__(self, run_job: Callable, parent: QWidget | None = None):
        super().__init__(parent)
        self.run_job = run_job
        self.drift: DriftMap | None = None
        self.folder: Path | None = None
        self.tabs: QTabWidget | None = None
        self._request = 0
        self._selection: tuple[np.ndarray | None, list[int]] = (None, [])  # drawn again when a map arrives
        self.summary = QLabel("Sort, or open a Phy folder, to see the drift map.", objectName="Hint")
        self.summary.setWordWrap(True)
        self.note = QLabel("", objectName="Hint")
        self.note.setWordWrap(True)
        self.plot = pg.PlotWidget(background="w")
        item = self.plot.getPlotItem()
        item.setLabel("bottom", "time (s)")
        item.setLabel("left", "depth (µm)")
        item.showGrid(x=False, y=True, alpha=0.15)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.plot.scene().sigMouseClicked.connect(self._clicked)
        self.plot.addItem(self.image)
        self.legend = item.addLegend(offset=(-10, 10), labelTextColor="#1f2937", brush=pg.mkBrush(255, 255, 255, 200))
        self.motion_lines: list[pg.PlotCurveItem] = []
        self.highlights: list[pg.ScatterPlotItem] = []
        self.colorbar = ColorBar()
        self.colorbar.setFixedWidth(260)
        self.colorbar.setVisible(False)
        bottom = QHBoxLayout()
        bottom.addWidget(self.note, 1)
        bottom.addWidget(self.colorbar)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(2)
        layout.addWidget(self.summary)
        layout.addWidget(self.plot, 1)
        layout.addLayout(bottom)

    def tabbed_with(self, other: QWidget, title: str) -> QTabWidget:
        """A tab widget holding ``other`` (first) and this view; :meth:`toggle` switches between them."""
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(other, title)
        self.tabs.addTab(self, "Drift map")
        return self.tabs

    def toggle(self) -> None:
        if self.tabs is not None:
            self.tabs.setCurrentIndex(1 - self.tabs.currentIndex())

    # -- loading ------------------------------------------------------------------------------
    def load(self, folder: Path | None):
        """Show the drift map of ``folder`` (None clears it); returns the job, or None."""
        self._request += 1
        self.folder = Path(folder) if folder is not None else None
        if folder is None:
            self.clear()
            return None
        request = self._request
        self.summary.setText(f"Reading the drift map of {self.folder.name}/ …")
        size = self.plot.getPlotItem().getViewBox().size()
        pixels = (int(np.clip(size.width(), 400, 2400)), int(np.clip(size.height(), 300, 1600)))
        return self.run_job(f"Drift map {self.folder.name}", prepare, self.folder, pixels,
                            on_result=lambda out: self._show(request, out), on_error=lambda error: self._failed(request, error))

    def _show(self, request: int, out: dict) -> None:
        if request != self._request:  # a later folder was asked for meanwhile
            return
        self.show_map(out)

    def _failed(self, request: int, error) -> None:
        """The folder opened, but its map cannot be drawn: said here, not in a dialog over the units."""
        if request == self._request:
            self.clear()
            self.summary.setText(f"Cannot draw the drift map: {error.message}")

    def clear(self) -> None:
        self.drift = None
        self.image.clear()
        self._set_motion(None)
        self._clear_highlights()
        self.colorbar.set_colormap(None)
        self.summary.setText("Sort, or open a Phy folder, to see the drift map.")
        self.note.setText("")

    def show_map(self, out: dict) -> None:
        """Draw a :func:`prepare` result: the spikes' image, the motion lines, the colour bar and the summary."""
        drift = self.drift = out["drift"]
        t0, t1, y0, y1 = out["extent"]
        self.image.setImage(out["rgba"].transpose(1, 0, 2), autoLevels=False)  # rows: depth, columns: time
        self.image.setRect(QRectF(t0, y0, t1 - t0, y1 - y0))
        self._set_motion(drift.motion)
        self.show_units(*self._selection)
        lo, hi = out["limits"]
        self.colorbar.set_colormap(amplitude_lut(), lo, hi, f"amplitude ({drift.amplitude_unit})")
        n = len(drift.spikes)
        shown = (f"showing {n:,} of {drift.n_total:,} spikes (a fixed random subset)" if drift.subsampled
                 else f"{n:,} spikes")
        self.summary.setText(f"{drift.folder.name}/: {shown} · depth from {drift.depth_source} · darker = larger amplitude")
        self.plot.getPlotItem().setRange(xRange=(t0, t1), yRange=(y0, y1), padding=0.01)
        self.loaded.emit()

    def _set_motion(self, motion) -> None:
        for line in self.motion_lines:
            self.plot.removeItem(line)
        self.motion_lines = []
        self.legend.clear()
        if motion is None:
            self.note.setText(NO_MOTION if self.drift is not None else "")
            return
        pen = pg.mkPen(MOTION_COLOR, width=2)
        for times, depths in motion.lines():
            line = pg.PlotCurveItem(times, depths, pen=pen)
            line.setZValue(10)
            self.plot.addItem(line)
            self.motion_lines.append(line)
        self.legend.addItem(self.motion_lines[0], "estimated motion")
        kind = "rigid" if motion.rigid else f"non-rigid, {len(motion.spatial_bins_um)} depth blocks"
        self.note.setText(f"Estimated motion ({kind}): peak-to-peak {float(np.ptp(motion.displacement_um)):.1f} µm.")

    def spike_near(self, t: float, depth: float, pixels: float = 5.0) -> int | None:
        """Index (into the shown spikes) of the spike nearest (t s, depth µm) on screen, if within ``pixels``."""
        if self.drift is None or not len(self.drift.spikes):
            return None
        sx, sy = self.plot.getPlotItem().getViewBox().viewPixelSize()
        d2 = ((self.drift.times_s - t) / sx) ** 2 + ((self.drift.depths_um - depth) / sy) ** 2
        nearest = int(np.argmin(d2))
        return nearest if d2[nearest] <= pixels ** 2 else None

    def _clicked(self, event) -> None:
        spike_clusters = self._selection[0]
        if event.button() != Qt.MouseButton.LeftButton or spike_clusters is None or self.drift is None:
            return
        point = self.plot.getPlotItem().getViewBox().mapSceneToView(event.scenePos())
        nearest = self.spike_near(point.x(), point.y())
        if nearest is not None:
            self.unit_clicked.emit(int(spike_clusters[self.drift.spikes[nearest]]))

    # -- selected units -------------------------------------------------------------------------
    def _clear_highlights(self) -> None:
        for item in self.highlights:
            self.plot.removeItem(item)
        self.highlights = []

    def show_units(self, spike_clusters: np.ndarray | None, clusters: list[int]) -> None:
        """Draw the shown spikes of ``clusters`` (``spike_clusters``: the folder's spikes' current clusters) in their
        selection colours."""
        self._selection = (spike_clusters, list(clusters))
        self._clear_highlights()
        drift = self.drift
        if drift is None or spike_clusters is None or len(spike_clusters) != drift.n_total:
            return
        shown = np.asarray(spike_clusters)[drift.spikes]
        clusters = clusters[:3]
        for i, cid in enumerate(clusters):
            mine = np.flatnonzero(shown == cid)
            mine = mine[::-(-len(mine) // (MAX_HIGHLIGHT // len(clusters))) or 1]  # every k-th spike past the budget
            item = pg.ScatterPlotItem(drift.times_s[mine], drift.depths_um[mine], size=4, pen=None,
                                      brush=pg.mkBrush(selection_color(i)))
            item.setZValue(5 - i)
            self.plot.addItem(item)
            self.highlights.append(item)
