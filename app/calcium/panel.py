"""Calcium workspace: imaging movies, summary images and pixel traces (CNMF demixing to come)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QComboBox, QFormLayout, QGroupBox, QSlider, QSplitter

from app.jobs import Job
from app.widgets.image_view import ImageView
from app.workspace import InfoBox, Workspace
from engine.calcium.io import MOVIE_EXTENSIONS, Movie, open_movie, region_trace, summary_images

TRACE_RADIUS = 2  # pixels around a click averaged into its trace


def load_movie_for_view(path: Path, progress=None) -> dict:
    """Job body: open the movie lazily and compute its summary images chunk by chunk."""
    movie = open_movie(path)
    summaries = summary_images(movie, progress=progress)
    return {"movie": movie, "summaries": summaries}


class CalciumWorkspace(Workspace):
    key = "calcium"
    title = "Calcium"
    icon_name = "calcium"
    extensions = MOVIE_EXTENSIONS

    def __init__(self, window):
        super().__init__(window)
        self.movie: Movie | None = None
        self.summaries: dict[str, np.ndarray] = {}
        self.info = InfoBox("Movie", [("file", "File"), ("n_frames", "Frames"), ("size", "Size (px)"), ("fps", "Frame rate (Hz)"),
                                      ("dtype", "Data type")])
        display = QGroupBox("Display")
        form = QFormLayout(display)
        self.image_kind = QComboBox()
        self.image_kind.addItems(["Mean", "Max", "Std", "Frame"])
        self.image_kind.currentTextChanged.connect(self.redraw)
        self.frame_slider = QSlider(Qt.Orientation.Horizontal)
        self.frame_slider.valueChanged.connect(self._frame_changed)
        form.addRow("Image:", self.image_kind)
        form.addRow("Frame:", self.frame_slider)

        self.view = ImageView()
        self.view.clicked.connect(self.show_trace_at)
        self.trace_plot = pg.PlotWidget()
        self.trace_plot.setLabel("bottom", "time", units="s")
        self.trace_plot.setLabel("left", "fluorescence")
        self.trace_plot.setTitle("Click a pixel to see its trace")
        self.trace_curve = self.trace_plot.plot(pen=pg.mkPen("#1f6f3a", width=1.2))
        self.frame_line = pg.InfiniteLine(angle=90, pen=pg.mkPen("#b42318", width=1))
        self.trace_plot.addItem(self.frame_line)
        self.marker = pg.ScatterPlotItem(size=12, pen=pg.mkPen("#ff3b30", width=2), brush=None, symbol="o")
        self.view.viewbox.addItem(self.marker)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.view)
        splitter.addWidget(self.trace_plot)
        splitter.setSizes([650, 220])

        self.assemble([self.info, display], splitter, "No movie open",
                      "Open a calcium imaging movie (multi-page TIFF, NPY, HDF5; frames × height × width). "
                      "It is read lazily, chunk by chunk.", "Open movie…")

    def open_file(self, path: Path) -> Job:
        return self.window.run_job(f"Open {path.name}", load_movie_for_view, path,
                                   on_result=lambda result: self._show(path, result))

    def _show(self, path: Path, result: dict) -> None:
        if self.movie is not None:
            self.movie.close()
        self.movie, self.summaries = result["movie"], result["summaries"]
        m = self.movie
        self.info.update_values({"file": path.name, "n_frames": m.n_frames, "size": (m.height, m.width),
                                 "fps": m.fps if m.fps else "unknown", "dtype": str(m.dtype)})
        self.frame_slider.setRange(0, m.n_frames - 1)
        self.trace_curve.setData([], [])
        self.trace_plot.setXRange(0, m.n_frames / (m.fps or 1.0), padding=0.01)
        self.trace_plot.setLabel("bottom", "time", units="s" if m.fps else None)
        self.marker.clear()
        self.redraw()
        self.loaded(path)

    def _frame_changed(self, index: int) -> None:
        if self.movie is None:
            return
        self.frame_line.setValue(index / (self.movie.fps or 1.0))
        if self.image_kind.currentText() == "Frame":
            self.redraw()

    def redraw(self) -> None:
        if self.movie is None:
            return
        kind = self.image_kind.currentText()
        if kind == "Frame":
            self.view.set_image(self.movie.frame(self.frame_slider.value()), autorange=False)
        else:
            self.view.set_image(self.summaries[kind.lower()], autorange=False)

    def show_trace_at(self, row: int, col: int) -> Job | None:
        """Extract the mean trace of a small disk around the clicked pixel (a job: it reads every frame)."""
        if self.movie is None:
            return None
        self.marker.setData([col + 0.5], [row + 0.5])
        fps = self.movie.fps or 1.0

        def show(trace: np.ndarray) -> None:
            self.trace_curve.setData(np.arange(len(trace)) / fps, trace)
            self.trace_plot.setTitle(f"Pixel (row {row}, column {col}), radius {TRACE_RADIUS} px")

        return self.window.run_job(f"Trace at ({row}, {col})", region_trace, self.movie, row, col, TRACE_RADIUS, on_result=show)
