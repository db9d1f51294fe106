"""Ephys workspace: raw extracellular recordings as scrollable multi-channel traces (sorting to come)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QDoubleSpinBox, QFormLayout, QGroupBox, QScrollBar, QVBoxLayout, QWidget

from app.ephys.params_dialog import RecordingParamsDialog
from app.jobs import Job
from app.widgets.trace_view import TraceView
from app.workspace import InfoBox, Workspace
from engine.ephys.io import RAW_EXTENSIONS, RawRecording, RecordingParams, read_sidecar, write_sidecar

SCROLL_STEPS_PER_SECOND = 100  # scroll bar resolution: 10 ms


def open_recording(path: Path, params: RecordingParams, save_sidecar: bool = False, progress=None) -> RawRecording:
    """Job body: validate and memory-map the recording (optionally remembering its layout)."""
    recording = RawRecording(path, params)
    if save_sidecar:
        write_sidecar(path, params)
    return recording


class EphysWorkspace(Workspace):
    key = "ephys"
    title = "Ephys"
    icon_name = "ephys"
    extensions = RAW_EXTENSIONS

    def __init__(self, window):
        super().__init__(window)
        self.recording: RawRecording | None = None
        self.info = InfoBox("Recording", [("file", "File"), ("n_channels", "Channels"), ("sample_rate", "Sample rate (Hz)"),
                                          ("duration", "Duration (s)"), ("dtype", "Data type"), ("gain_uv", "Gain (µV/bit)")])
        display = QGroupBox("Display")
        form = QFormLayout(display)
        self.window_seconds = QDoubleSpinBox(minimum=0.01, maximum=10.0, value=0.5, decimals=2, singleStep=0.1, suffix=" s")
        self.spacing = QDoubleSpinBox(minimum=1.0, maximum=100_000.0, value=150.0, decimals=0, singleStep=25, suffix=" µV")
        form.addRow("Time window:", self.window_seconds)
        form.addRow("Channel spacing:", self.spacing)
        self.window_seconds.valueChanged.connect(self._window_changed)
        self.spacing.valueChanged.connect(self.redraw)

        self.traces = TraceView()
        self.scroll = QScrollBar(Qt.Orientation.Horizontal)
        self.scroll.valueChanged.connect(self.redraw)
        traces_panel = QWidget()
        column = QVBoxLayout(traces_panel)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.traces, 1)
        column.addWidget(self.scroll)
        self.assemble([self.info, display], traces_panel, "No recording open",
                      "Open a raw binary recording (.raw, .bin, .dat; samples × channels). "
                      "Its layout is read from a .json sidecar, or asked for once.", "Open recording…")

    def open_file(self, path: Path) -> Job | None:
        params = read_sidecar(path)
        save = False
        if params is None:
            dialog = RecordingParamsDialog(path.name, path.stat().st_size, self)
            if not dialog.exec():
                return None
            params, save = dialog.params(), dialog.save_sidecar.isChecked()
        return self.window.run_job(f"Open {path.name}", open_recording, path, params, save,
                                   on_result=lambda recording: self._show(path, recording))

    def _show(self, path: Path, recording: RawRecording) -> None:
        self.recording = recording
        p = recording.params
        self.info.update_values({"file": path.name, "n_channels": recording.n_channels, "sample_rate": recording.sample_rate,
                                 "duration": recording.duration, "dtype": p.dtype, "gain_uv": p.gain_uv})
        self._window_changed()
        self.loaded(path)

    def _window_changed(self) -> None:
        if self.recording is None:
            return
        steps = int(max(0.0, self.recording.duration - self.window_seconds.value()) * SCROLL_STEPS_PER_SECOND)
        self.scroll.setRange(0, steps)
        self.scroll.setPageStep(int(self.window_seconds.value() * SCROLL_STEPS_PER_SECOND))
        self.redraw()

    def redraw(self) -> None:
        """Read the visible window from the memory map (bounded: ≤ 10 s) and draw it."""
        if self.recording is None:
            return
        rate = self.recording.sample_rate
        start = int(self.scroll.value() / SCROLL_STEPS_PER_SECOND * rate)
        stop = start + int(self.window_seconds.value() * rate)
        data = self.recording.read(start, stop)
        data = data - np.median(data, axis=0)  # remove each channel's offset for display
        self.traces.set_traces(data, start / rate, rate, self.spacing.value())
