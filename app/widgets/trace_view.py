"""Multi-channel trace view (pyqtgraph): channels stacked with an offset, time on x."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtWidgets import QVBoxLayout, QWidget

pg.setConfigOptions(antialias=False, background="w", foreground="#2d3748")


class TraceView(QWidget):
    """Shows a window of samples × channels; the owner supplies data for the visible window."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.plot = pg.PlotWidget()
        self.plot.setLabel("bottom", "time", units="s")
        self.plot.setLabel("left", "channel")
        self.plot.showGrid(x=True, y=False, alpha=0.2)
        self.plot.setMouseEnabled(x=True, y=True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)
        self.curves: list[pg.PlotDataItem] = []
        self.spacing = 100.0

    def set_traces(self, data: np.ndarray, start_time: float, sample_rate: float, spacing: float,
                   channel_names: list[str] | None = None) -> None:
        """Plot ``data`` (samples × channels, µV) with channel i drawn at y = -i·spacing."""
        n_samples, n_channels = data.shape
        self.spacing = spacing
        t = start_time + np.arange(n_samples) / sample_rate
        while len(self.curves) < n_channels:
            curve = self.plot.plot(pen=pg.mkPen("#1f3a68", width=1))
            curve.setClipToView(True)
            curve.setDownsampling(auto=True, method="peak")
            self.curves.append(curve)
        for i, curve in enumerate(self.curves):
            if i < n_channels:
                curve.setData(t, data[:, i] - i * spacing)
                curve.show()
            else:
                curve.hide()
        names = channel_names or [str(i) for i in range(n_channels)]
        step = max(1, n_channels // 32)
        self.plot.getAxis("left").setTicks([[(-i * spacing, names[i]) for i in range(0, n_channels, step)]])
        self.plot.setXRange(t[0], t[-1] if n_samples > 1 else t[0] + 1, padding=0)
        self.plot.setYRange(-(n_channels - 0.5) * spacing, 0.5 * spacing, padding=0)

    def clear(self) -> None:
        for curve in self.curves:
            curve.setData([], [])
