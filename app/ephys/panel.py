"""Ephys workspace: raw recording → Sort (background job) → Phy folder → traces with model and
residual, unit table, unit views, curation with Phy's keys.

The loop: open a raw recording (its layout from a sidecar, or asked once) → Sort (per-stage
progress, Cancel) writes ``<raw stem>_phy/`` beside the raw and loads it → pick units in the table
(Ctrl-click a second one) → look at waveforms, correlograms, amplitudes, and at the traces with the
model Σ a·W and the residual → merge (G), split (Ctrl-click a lasso on the amplitude or feature view, then K),
label good / mua / noise (Alt+G / Alt+M / Alt+N), undo (Ctrl+Z) / redo (Ctrl+Shift+Z, Ctrl+Y).
Each change rewrites spike_clusters.npy and cluster_group.tsv in the Phy folder (atomically), so
the folder opens in Phy as it is. An existing Phy folder opens directly (its params.py, or the
folder), and opening a raw file that has a ``_phy`` folder beside it loads that folder's curation.
All curation logic lives in engine/ephys/curation.py; this file only draws and dispatches.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PyQt6 import sip
from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtGui import QKeySequence
from PyQt6.QtWidgets import (QApplication, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGridLayout, QGroupBox, QHBoxLayout,
                             QLabel, QPushButton, QSizePolicy, QSpinBox, QSplitter, QToolButton, QVBoxLayout)

from app.dialogs import ask_nwb_metadata, ask_nwb_path, confirm, show_error
from app.ephys.driftmap import DriftMapView
from app.ephys.params_dialog import RecordingParamsDialog
from app.ephys.session import EphysSession
from app.session import from_session
from app.ephys.traces import TraceLoader, TracePanel, TraceRequest, load_traces
from app.ephys.views import MAX_SHOWN, SimilarList, UnitTable, UnitViews, selection_color
from app.jobs import Job
from app.widgets.job_box import JobBox
from app.workspace import InfoBox, Workspace
from engine.calcium.io import is_suite2p_binary
from engine.ephys import curation as engine_curation
from engine.ephys.curation import Curation, TraceSource, phy_folder_for
from engine.ephys.io import RAW_EXTENSIONS, RawRecording, RecordingParams, read_sidecar
from engine.ephys.formats import FORMAT_EXTENSIONS, detect_format
from engine.ephys.nwb import export_units
from engine.ephys.sorter import SortParams
from engine.errors import InputError
from engine.nwb import ELECTRICAL_TYPES, has_series

SCROLL_STEPS_PER_SECOND = 100  # scroll bar resolution: 10 ms
MAX_WINDOW_VALUES = 40_000_000  # samples × channels read per redraw at most (~80 MB of int16)
SYNC_MAX_VALUES = 500_000  # a window this cheap to read (samples × channels, a few ms) is drawn at once on the GUI thread
DATA_KINDS = ("Preprocessed", "Raw")
NOISE_SPACING = 10.0  # default trace spacing: this many times the median channel's robust noise SD

class EphysWorkspace(Workspace):
    key = "ephys"
    title = "Ephys"
    icon_name = "ephys"
    extensions = RAW_EXTENSIONS + (".nwb",) + FORMAT_EXTENSIONS

    def __init__(self, window):
        super().__init__(window)
        self.session = EphysSession(self)  # recording, curation, selection, running sort: held there once
        self.probe_path: Path | None = None
        self._waveforms: dict[int, dict] = {}
        self._waveform_job: Job | None = None  # reading the selected units' spikes (latest selection wins)
        self.view_start = 0.0  # s: left edge of the trace window
        self._restoring_view = False

        self.info = InfoBox("Recording", [("file", "File"), ("n_channels", "Channels"), ("sample_rate", "Sample rate (Hz)"),
                                          ("duration", "Duration (s)"), ("dtype", "Data type"), ("gain_uv", "Gain (µV/bit)"),
                                          ("probe", "Probe")])
        self.info.setMaximumHeight(230)
        self._build_sort_box()
        self._build_display_box()
        self._build_curation_box()

        self.traces = TracePanel()
        self.traces.add_control(QLabel("Spacing"))  # beside the traces it spaces
        self.traces.add_control(self.spacing)
        self.traces.add_control(self.spacing_auto)
        self.scroll = self.traces.scroll
        self.scroll.valueChanged.connect(self._scrolled)
        self.traces.view_changed.connect(self._view_changed)
        self.traces.spike_clicked.connect(lambda c: self.select([c]))
        self.units = UnitTable()
        self.units.current_selection = lambda: self.session.selected  # Ctrl-click order
        self.units.selection_changed.connect(self.session.select)  # a click on the table
        self.session.selection_changed.connect(self.units.show_selection)  # the table shows any selection …
        self.session.selection_changed.connect(self._selection_changed)  # … and the views follow it
        for changed in (self.session.recording_changed, self.session.curation_changed, self.session.busy_changed):
            changed.connect(lambda *_: self._refresh_controls())
        self.session.history_changed.connect(lambda: self.registry.refresh())  # Undo / Redo buttons
        self.table = self.units.table
        self.similar = SimilarList()
        self.similar.picked.connect(self._similar_picked)
        self.views = UnitViews()
        self.views.lasso_changed.connect(lambda _n: self._refresh_controls())

        # traces (large) beside the unit table and similar units; the unit views span the width below
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.units)
        right.addWidget(self.similar)
        right.setSizes([380, 160])
        top = QSplitter(Qt.Orientation.Horizontal)
        self.drift = DriftMapView(window.run_job)  # spike depth over time, with the estimated motion: a tab beside the traces
        self.drift.unit_clicked.connect(lambda c: self.select([c]))
        top.addWidget(self.drift.tabbed_with(self.traces, "Traces"))
        top.addWidget(right)
        top.setStretchFactor(0, 1)
        top.setStretchFactor(1, 0)
        top.setCollapsible(0, False)
        top.setSizes([700, 440])
        main = QSplitter(Qt.Orientation.Vertical)
        main.addWidget(top)
        main.addWidget(self.views)
        main.setStretchFactor(0, 3)
        main.setStretchFactor(1, 2)
        main.setSizes([540, 320])
        self.table_splitter = top
        self.splitter = main

        self.redraw_timer = QTimer(self)  # mouse pans/zooms arrive in bursts: request once per burst
        self.redraw_timer.setSingleShot(True)
        self.redraw_timer.setInterval(15)
        self.redraw_timer.timeout.connect(self.redraw)
        # the unit views and the drift map follow a selection one event-loop turn after the table, traces and
        # similar units (what was clicked answers first); selections in between draw only the latest
        self.views_timer = QTimer(self)
        self.views_timer.setSingleShot(True)
        self.views_timer.setInterval(0)
        self.views_timer.timeout.connect(self._show_selected_units)
        self.view_state_timer = QTimer(self)  # the view is saved once a burst of scrolling or clicking settles
        self.view_state_timer.setSingleShot(True)
        self.view_state_timer.setInterval(500)
        self.view_state_timer.timeout.connect(self.save_view_state)
        # bigger windows are read, filtered and decimated off the GUI thread, latest request wins;
        # the previous frame stays on screen until the new one arrives
        self.async_traces = True
        self.loader = TraceLoader(parent=self)
        self.loader.loaded.connect(self._traces_loaded)
        self.loader.failed.connect(self._traces_failed)
        QApplication.instance().aboutToQuit.connect(self.loader.wait)  # no trace thread may outlive the app
        QApplication.instance().aboutToQuit.connect(lambda: self._waveform_job is not None and self._waveform_job.wait(5000))
        self._request_id = 0
        self._frame_id = 0  # the request on screen

        add = self.registry.add
        units = lambda: self.curation is not None  # noqa: E731
        add("Merge", self.merge_selected, "G", group="Curation", enabled=lambda: units() and len(self.selected) >= 2,
            help="Select two or more units (click one, Ctrl-click the others): they become one new unit")
        add("Split", self.split_selected, "K", group="Curation",
            enabled=lambda: units() and bool(self.selected) and len(self.views.lasso) >= 3,
            help="Ctrl-click a lasso of three or more points on the amplitudes or features first")
        for label in ("good", "mua", "noise"):
            add(f"Label {label}", lambda label=label: self.label_selected(label), f"Alt+{label[0].upper()}", group="Curation",
                enabled=lambda: units() and bool(self.selected), help="Select one or more units first")
        add("Undo", self.undo, QKeySequence.StandardKey.Undo, group="Curation",
            enabled=lambda: units() and self.curation.can_undo)
        add("Redo", self.redo, ("Ctrl+Shift+Z", "Ctrl+Y"), group="Curation",
            enabled=lambda: units() and self.curation.can_redo)
        for name, button in (("Merge", self.merge_button), ("Split", self.split_button), ("Label good", self.good_button),
                             ("Label mua", self.mua_button), ("Label noise", self.noise_button), ("Undo", self.undo_button),
                             ("Redo", self.redo_button)):
            self.registry.bind(name, button)
        add("Next similar unit", lambda: self.next_similar(1), "Space", group="Wizard",
            help="Pair the selected unit with its most similar one, then the next most similar")
        add("Previous similar unit", lambda: self.next_similar(-1), "Shift+Space", group="Wizard", hint=False)
        add("Clear lasso", self.views.clear_lasso, "Esc", group="Views")
        add("Traces / drift map", self.drift.toggle, "D", group="Views",
            help="Switch between the traces and the drift map (spike depth over time, with the estimated motion)")
        add("Lasso point", None, "Ctrl+click", group="Views", hint=False,
            help="On the amplitude or feature view; Ctrl-click in the unit table selects several units")
        add("Scroll traces forward", lambda: self.step_time(0.5), "Right", group="Traces", hint=False)
        add("Scroll traces back", lambda: self.step_time(-0.5), "Left", group="Traces", hint=False)
        self.keys_hint.setText(self.registry.hint() + " · ←/→ scroll traces")

        self.assemble([self.info, self.sort_box, self.curation_box, self.display_box], main, "No recording open",
                      "Open a raw binary recording (.raw, .bin, .dat; samples × channels) — its layout is read from a "
                      ".json sidecar, or asked for once — or a Phy folder (its params.py).", "Open recording…")
        self.empty.add_button("Open Phy folder…", self.open_phy_dialog)
        self._refresh_controls()

    # -- control boxes ---------------------------------------------------------------------------
    def _build_sort_box(self) -> None:
        defaults = SortParams()
        self.sort_box = QGroupBox("Spike sorting")
        form = QFormLayout(self.sort_box)
        self.probe_label = QLabel("linear (assumed)")
        self.probe_label.setWordWrap(True)
        self.probe_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        probe_button = QPushButton("Probe…")
        probe_button.setToolTip("A probeinterface .json or .prb, a Kilosort channel map (Kilosort 4 .json, MATLAB .mat), a "
                                "SpikeGLX .meta or an Open Ephys settings.xml. Without one, the channels are "
                                "taken as one straight column 20 µm apart. A file named <raw stem>.probe.json, probe.json or "
                                "chanMap.mat beside the recording is picked up by itself.")
        probe_button.clicked.connect(self.choose_probe)
        self.probe_button = probe_button
        probe_row = QHBoxLayout()
        probe_row.addWidget(self.probe_label, 1)
        probe_row.addWidget(probe_button)
        self.threshold = QDoubleSpinBox(minimum=3.0, maximum=20.0, value=defaults.threshold, decimals=1, singleStep=0.5,
                                        suffix=" SD")
        self.threshold.setToolTip("Deconvolution: a spike needs a template score above this many noise SDs (lower finds "
                                  "smaller spikes, and more noise)")
        self.detect_threshold = QDoubleSpinBox(minimum=3.0, maximum=20.0, value=defaults.detect_threshold, decimals=1,
                                               singleStep=0.5, suffix=" SD")
        self.detect_threshold.setToolTip("Threshold crossings that seed the templates (whitened noise SDs)")
        self.template_ms = QDoubleSpinBox(minimum=1.0, maximum=6.0, value=defaults.template_ms, decimals=1, singleStep=0.5,
                                          suffix=" ms")
        self.template_ms.setToolTip("Template length; also the shortest interval between two spikes of one unit")
        self.output_label = QLabel("—", objectName="Hint")
        self.output_label.setWordWrap(True)
        self.sort_button = QPushButton("Sort", objectName="Primary")
        self.sort_button.setToolTip("Filter, whiten, find templates and deconvolve (a background job), then write a Phy folder")
        self.sort_button.clicked.connect(self.run_sort)
        self.job_box = JobBox("Not sorted yet.", self.sort_button, shows=self.shows,
                              kept="the previous result (if any) is unchanged.")
        self.cancel_button, self.progress_bar, self.stage_label = (self.job_box.cancel_button, self.job_box.progress_bar,
                                                                   self.job_box.stage_label)
        self._stage_counts_units = False  # the stage line shows the open folder's unit count (not a running sort)
        self.open_phy_button = QPushButton("Open Phy folder…")
        self.open_phy_button.setToolTip("Curate an existing Phy / Kilosort output folder; the raw file comes from its params.py")
        self.open_phy_button.clicked.connect(self.open_phy_dialog)
        form.addRow("Probe:", probe_row)
        form.addRow("Threshold:", self.threshold)
        form.addRow("Detection:", self.detect_threshold)
        form.addRow("Template:", self.template_ms)
        form.addRow(self.output_label)
        form.addRow(self.job_box)
        form.addRow(self.open_phy_button)

    def _build_display_box(self) -> None:
        self.display_box = QGroupBox("Traces")
        form = QFormLayout(self.display_box)
        self.data_kind = QComboBox()
        self.data_kind.addItems(DATA_KINDS)
        self.data_kind.setToolTip("Preprocessed: band-pass + common median reference (what the sorter sees, unwhitened, µV)")
        self.show_data = QCheckBox("Data")
        self.show_data.setChecked(True)
        self.show_model = QCheckBox("Model Σa⊛W")
        self.show_model.setToolTip("The sorter's reconstruction: every spike's template × its amplitude (orange)")
        self.show_residual = QCheckBox("Residual")
        self.show_residual.setToolTip("Preprocessed data minus the model (green): what the sorter left unexplained")
        self.show_spikes = QCheckBox("Spikes")
        self.show_spikes.setChecked(True)
        self.show_spikes.setToolTip("A marker under each spike's peak channel: selected units in color, others gray; click one "
                                    "to select its unit")
        for box in (self.show_data, self.show_model, self.show_residual, self.show_spikes):
            box.toggled.connect(self._layers_toggled)
        self.data_kind.currentTextChanged.connect(lambda _t: self._auto_spacing() if self.spacing_auto.isChecked() else self.redraw())
        layers = QGridLayout()
        layers.addWidget(self.show_data, 0, 0)
        layers.addWidget(self.show_model, 0, 1)
        layers.addWidget(self.show_residual, 1, 0)
        layers.addWidget(self.show_spikes, 1, 1)
        self.window_seconds = QDoubleSpinBox(minimum=0.01, maximum=10.0, value=0.5, decimals=2, singleStep=0.1, suffix=" s")
        self.window_seconds.setToolTip("Width of the time window (the mouse wheel over the traces zooms it too)")
        self.spacing = QDoubleSpinBox(minimum=0.1, maximum=1e7, value=150.0, decimals=1, suffix=" µV",
                                      buttonSymbols=QDoubleSpinBox.ButtonSymbols.NoButtons)
        self.spacing.setStepType(QDoubleSpinBox.StepType.AdaptiveDecimalStepType)
        self.spacing.setMaximumWidth(74)  # the line under the traces must not widen the window
        self.spacing.setToolTip("Vertical distance between channels: smaller makes the traces taller")
        self.spacing_auto = QToolButton(text="Auto", checkable=True, checked=True)
        self.spacing_auto.setToolTip(f"Spacing = {NOISE_SPACING:g} × the median channel's noise SD (MAD / 0.6745 of the data "
                                     "shown, measured on short windows across the recording), so traces never form a wall "
                                     "whatever the gain. Editing the spacing turns this off.")
        self.first_channel = QSpinBox(minimum=0, maximum=0)
        self.n_shown = QSpinBox(minimum=1, maximum=1)
        channel_row = QHBoxLayout()
        channel_row.addWidget(self.first_channel)
        channel_row.addWidget(QLabel("count"))
        channel_row.addWidget(self.n_shown)
        self.window_seconds.valueChanged.connect(lambda _value: self._window_changed())
        self.spacing.valueChanged.connect(self._spacing_edited)
        self.spacing_auto.toggled.connect(lambda on: on and self._auto_spacing())
        self.first_channel.valueChanged.connect(lambda _v: self.redraw())
        self.n_shown.valueChanged.connect(lambda _v: self.redraw())
        form.addRow("Show:", self.data_kind)
        form.addRow(layers)
        form.addRow("Window:", self.window_seconds)
        form.addRow("Channels:", channel_row)

    def _build_curation_box(self) -> None:
        self.curation_box = QGroupBox("Curation")
        column = QVBoxLayout(self.curation_box)
        self.counts = QLabel("Sort, or open a Phy folder, to curate units.")
        self.counts.setWordWrap(True)
        column.addWidget(self.counts)
        grid = QGridLayout()
        self.merge_button = self._button("Merge (G)")  # these run their action in the registry (see __init__)
        self.split_button = self._button("Split (K)")
        self.split_button.setToolTip("Ctrl-click at least three points around spikes on the amplitude or feature view, then split the "
                                     "unit into the spikes inside and the rest")
        self.good_button = self._button("Good")
        self.mua_button = self._button("MUA")
        self.noise_button = self._button("Noise")
        self.undo_button = self._button("Undo")
        self.redo_button = self._button("Redo")
        grid.addWidget(self.merge_button, 0, 0, 1, 3)
        grid.addWidget(self.split_button, 0, 3, 1, 3)
        grid.addWidget(self.good_button, 1, 0, 1, 2)
        grid.addWidget(self.mua_button, 1, 2, 1, 2)
        grid.addWidget(self.noise_button, 1, 4, 1, 2)
        grid.addWidget(self.undo_button, 2, 0, 1, 3)
        grid.addWidget(self.redo_button, 2, 3, 1, 3)
        self.export_nwb_button = self._button("Export units to NWB…", self.export_nwb)
        self.export_nwb_button.setToolTip("Write the curated units (spike times, labels, metrics, mean waveforms, probe) "
                                          "as an NWB Units table, for DANDI or any NWB reader")
        grid.addWidget(self.export_nwb_button, 3, 0, 1, 6)
        self.merge_button.setToolTip("Merge the selected units into a new one (Ctrl-click to select several)")
        column.addLayout(grid)
        self.saved_label = QLabel("", objectName="Hint")
        self.saved_label.setWordWrap(True)
        column.addWidget(self.saved_label)
        self.keys_hint = QLabel("", objectName="Hint")  # filled from the registry; F1 lists them all
        self.keys_hint.setWordWrap(True)
        column.addWidget(self.keys_hint)

    def _button(self, text: str, slot=None) -> QPushButton:
        button = QPushButton(text)
        button.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        if slot is not None:
            button.clicked.connect(lambda checked=False: slot())
        return button

    # -- opening -------------------------------------------------------------------------------
    def can_open(self, path: Path) -> bool:
        if path.suffix.lower() == ".nwb":  # also the Calcium workspace's type: look inside
            return has_series(path, ELECTRICAL_TYPES)
        if path.is_dir():  # a Phy folder (complete or not: opening says what is missing), or a recording folder
            return (path / "params.py").is_file() or detect_format(path) is not None
        if is_suite2p_binary(path):  # a calcium movie (Suite2p's data.bin), not a recording
            return False
        return path.suffix.lower() in self.extensions or path.name == "params.py"

    def file_filter(self) -> str:
        return ("Ephys recordings and Phy folders (*.raw *.bin *.dat *.nwb *.meta *.oebin *.rhd *.rhs *.ncs *.ns5 *.ns6 "
                "*.ns4 *.ns3 *.ns2 *.ns1 params.py)")

    def open_file(self, path: Path) -> Job | None:
        if path.name == "params.py" or (path / "params.py").is_file():
            return self.open_phy(path)
        if detect_format(path) is not None:  # the file states its layout (and often its probe): nothing to ask
            return self.window.run_job(f"Open {path.name}", engine_curation.open_recording_job, path, None,
                                       on_result=lambda out: self._show_recording(path, out))
        params = read_sidecar(path)
        save = False
        if params is None:
            dialog = RecordingParamsDialog(path.name, path.stat().st_size, self, last=self._last_layout(path.parent))
            if not dialog.exec():
                return None
            params, save = dialog.params(), dialog.save_sidecar.isChecked()
            self.window.settings.remember("ephys_layout", path.parent, dataclasses.asdict(params))  # for the next file here
        return self.window.run_job(f"Open {path.name}", engine_curation.open_recording_job, path, params, save,
                                   on_result=lambda out: self._show_recording(path, out))

    def _last_layout(self, folder: Path) -> RecordingParams | None:
        """The layout given for the last raw file opened from ``folder`` (None if none, or unreadable)."""
        stored = self.window.settings.remembered("ephys_layout", folder)
        try:
            return RecordingParams(**stored) if stored else None
        except (TypeError, InputError):
            return None

    def open_phy_dialog(self) -> None:
        start = str(self.raw_path.parent) if self.raw_path else self.window.settings.last_folder("open")
        folder = QFileDialog.getExistingDirectory(self, "Open a Phy folder (with params.py) or a recording folder "
                                                          "(SpikeGLX run, Open Ephys, Neuralynx)", start)
        if folder:
            self.window.open_files([folder])

    def open_phy(self, folder: Path) -> Job:
        folder = Path(folder)
        return self.window.run_job(f"Open Phy folder {folder.name if folder.name != 'params.py' else folder.parent.name}",
                                   engine_curation.open_phy_job, folder, on_result=self._show_phy)

    def _show_recording(self, path: Path, out: dict) -> None:
        self._flush_view_state()
        self._set_recording(path, out["recording"], out.get("source") or TraceSource(out["recording"]))
        self.set_probe(out["probe"])  # found beside the file: shown in the info and sorting boxes
        self._set_curation(None)
        self._stage_counts_units = False
        self.stage_label.setText("Not sorted yet: press Sort.")
        self.progress_bar.setValue(0)
        self.loaded(path)
        if out.get("note"):
            self.window.show_status(out["note"], 10000)
        if out["phy_folder"] is not None:  # an earlier sort of this file: show it and its curation
            self.stage_label.setText(f"Loading the earlier sort in {out['phy_folder'].name}/ …")
            self.open_phy(out["phy_folder"])

    # -- session state (read here, changed through self.session) ----------------------------------
    recording = from_session()
    source = from_session()
    raw_path = from_session()
    curation = from_session()
    selected = from_session()
    sort_job = from_session()

    def _set_recording(self, path: Path, recording: RawRecording, source: TraceSource, redraw: bool = True) -> None:
        self.session.set_recording(path, recording, source)
        p = recording.params
        self.info.update_values({"file": path.name, "n_channels": recording.n_channels, "sample_rate": recording.sample_rate,
                                 "duration": recording.duration, "dtype": p.dtype, "gain_uv": p.gain_uv,
                                 "probe": self._probe_text()})
        n = source.n_channels
        for spin, maximum in ((self.first_channel, n - 1), (self.n_shown, n)):
            spin.blockSignals(True)
            spin.setMaximum(maximum)
            spin.blockSignals(False)
        self.n_shown.blockSignals(True)
        self.n_shown.setValue(min(n, 64))
        self.n_shown.blockSignals(False)
        self.first_channel.setValue(min(self.first_channel.value(), n - 1))
        folder = phy_folder_for(path)
        self.output_label.setText(f"Output: {folder.name}/ beside the recording (Phy folder; an earlier curated one is "
                                  "kept under a dated name).")
        self.output_label.setToolTip(str(folder))
        self._auto_spacing(redraw=False)
        self._window_changed(redraw)

    def _probe_text(self) -> str:
        return self.probe_path.name if self.probe_path is not None else "linear (assumed)"

    def choose_probe(self) -> None:
        start = str(self.raw_path.parent) if self.raw_path else ""
        path, _ = QFileDialog.getOpenFileName(self, "Probe geometry", start, "Probe files (*.json *.mat *.prb *.meta *.xml);;All files (*)")
        if path:
            self.set_probe(Path(path))

    def set_probe(self, path: Path | None) -> None:
        self.probe_path = path
        self.probe_label.setText(self._probe_text())
        self.info.values["probe"].setText(self._probe_text())

    def _show_phy(self, out: dict, restore_view: bool = True) -> None:
        self._flush_view_state()
        self.progress_bar.setValue(1000)  # first: a progress bar repaints the window's changed parts at once
        curation, recording = out["curation"], out["recording"]
        if recording is not None:
            path = recording.path
            if self.recording is not None and self.recording.path == recording.path:
                recording = self.recording  # keep the open memmap
                out["source"].recording = recording
            self._set_recording(path, recording, out["source"], redraw=False)  # the curation's selection redraws
        if out["note"]:
            show_error(self, "Raw recording not found", out["note"])
        self._set_curation(curation)
        if restore_view:
            self.restore_view_state(engine_curation.read_view_state(curation.folder))
        self._stage_counts_units = True
        self._update_counts()
        if self.recording is not None:
            self.loaded(self.recording.path)
        else:
            self.loaded(curation.folder)

    # -- sorting -------------------------------------------------------------------------------------
    def sort_params(self) -> SortParams:
        return SortParams(threshold=self.threshold.value(), detect_threshold=self.detect_threshold.value(),
                          template_ms=self.template_ms.value())

    def run_sort(self) -> Job | None:
        if self.recording is None:
            self.window.show_status("Open a recording first.")
            return None
        if self.sort_job is not None and self.sort_job.is_running:
            return self.sort_job
        path, params = self.raw_path, self.recording.params
        folder = phy_folder_for(path)
        if engine_curation.is_curated(folder) and not confirm(
                self, "Sort again?", f"'{folder.name}' holds your curation (merges, splits or labels). Sorting again "
                f"shows new, uncurated units; your curated folder is kept beside it as '{folder.name}_<date-time>'.",
                "Sort again"):
            return None
        job = self.run_dataset_job(f"Sort {path.name}", engine_curation.sort_job, path, params, self.probe_path,
                                   self.sort_params(), folder, on_result=self._sorted)
        self.session.set_sort_job(self.job_box.follow(job))
        self._stage_counts_units = False
        return job

    def cancel_sort(self) -> None:
        self.job_box.cancel()

    def _sorted(self, out: dict) -> None:
        self._show_phy(out, restore_view=False)
        backup = out.get("backup")
        note = f" The earlier curated folder was kept as {backup.name}/." if backup else ""
        self.window.show_status(f"Sorted: {len(out['curation'].cluster_ids)} units written to {out['folder']}.{note}", 10000)

    # -- the view of a Phy folder, kept in it so reopening returns there ---------------------------------
    def view_state(self) -> dict:
        return {"sort": self._sort_fingerprint(), "selected": [int(c) for c in self.selected], "start_s": round(self.view_start, 4),
                "window_s": self.window_seconds.value(), "first_channel": self.first_channel.value(),
                "n_shown": self.n_shown.value(), "data": self.data_kind.currentText(), "show_data": self.show_data.isChecked(),
                "model": self.show_model.isChecked(), "residual": self.show_residual.isChecked(),
                "spacing_uv": None if self.spacing_auto.isChecked() else self.spacing.value()}

    def _sort_fingerprint(self) -> list[int]:
        return [len(self.curation.spike_times), len(self.curation.templates_uv)] if self.curation is not None else []

    def save_view_state(self) -> None:
        self.view_state_timer.stop()
        if self.curation is None or self._restoring_view:
            return
        try:
            engine_curation.save_view_state(self.curation.folder, self.view_state())
        except OSError:  # only a convenience: the curation itself is saved on every change
            pass

    def closing(self) -> None:
        self._flush_view_state()

    def _flush_view_state(self) -> None:
        """Save a view still waiting for its timer (before the folder is left or the window closes)."""
        if self.view_state_timer.isActive():
            self.save_view_state()

    def restore_view_state(self, state: dict) -> None:
        """Apply a :meth:`view_state` (values out of range are clamped, unknown units dropped); a state
        saved for another sort written to the same folder is ignored."""
        if not state or self.curation is None or state.get("sort") != self._sort_fingerprint():
            return
        self._restoring_view = True
        try:
            if self.recording is not None:
                for spin, key in ((self.first_channel, "first_channel"), (self.n_shown, "n_shown")):
                    if isinstance(state.get(key), int):
                        spin.setValue(state[key])  # QSpinBox clamps to its range
                if state.get("data") in DATA_KINDS:
                    self.data_kind.setCurrentText(state["data"])
                for box, key in ((self.show_data, "show_data"), (self.show_model, "model"), (self.show_residual, "residual")):
                    if isinstance(state.get(key), bool) and box.isEnabled():
                        box.setChecked(state[key])
                if isinstance(state.get("spacing_uv"), (int, float)):
                    self.spacing.setValue(float(state["spacing_uv"]))  # a spacing set by hand (else Auto stays)
                if isinstance(state.get("window_s"), (int, float)):
                    self.window_seconds.setValue(float(state["window_s"]))
                if isinstance(state.get("start_s"), (int, float)):
                    self.scroll.setValue(int(round(float(state["start_s"]) * SCROLL_STEPS_PER_SECOND)))
            known = set(int(c) for c in self.curation.cluster_ids)
            listed = state.get("selected") if isinstance(state.get("selected"), list) else []
            selected = [c for c in listed if isinstance(c, int) and c in known]
            if selected:
                self.select(selected)
        finally:
            self._restoring_view = False

    # -- curation state --------------------------------------------------------------------------
    def _set_curation(self, curation: Curation | None) -> None:
        self._waveforms = {}
        self.session.set_curation(curation)
        self.drift.load(curation.folder if curation is not None else None)
        if curation is not None:
            if self.source is not None and not self.source.has_model and self.recording is not None:
                self.session.set_source(TraceSource(self.recording, curation.phy))
            self.saved_label.setText(f"Autosaved to {curation.folder}")
            self.saved_label.setToolTip(str(curation.folder))
        else:
            self.saved_label.setText("")
        self._fill_table([])
        self.select(self.units.visible_clusters()[:1] if curation is not None else [])  # redraws the traces

    def _fill_table(self, selected: list[int]) -> None:
        self.units.set_rows(self.curation.rows() if self.curation is not None else [], selected)
        left, right = self.table_splitter.sizes()
        needed = self.units.minimumWidth()
        if 0 < right < needed:  # widen the table until every column shows
            self.table_splitter.setSizes([max(left + right - needed, 300), needed])

    def select(self, clusters: list[int]) -> None:
        """Select units (the first is the current one; units not in the table are left out): the table,
        views and trace markers follow the session."""
        self.session.select([int(c) for c in dict.fromkeys(clusters) if self.units.row_of(int(c)) is not None])

    def export_nwb(self, path: str | Path | None = None) -> Job | None:
        if self.curation is None:
            return None
        folder = self.curation.folder
        path = Path(path) if path else ask_nwb_path(self, "Export the units as NWB", folder.with_name(f"{folder.name}.nwb"))
        if path is None:
            return None
        metadata = ask_nwb_metadata(self, self.window.settings, folder.parent)
        if metadata is None:
            return None
        return self.window.run_job(f"Export units {path.name}", export_units, self.curation.snapshot(), path, metadata,
                                   on_result=lambda out: self.window.show_status(f"Exported the units to {out}", 10000))

    def next_similar(self, step: int = 1) -> None:
        """Phy's wizard: pair the current unit with its next (step 1) or previous (-1) most similar unit."""
        if self.curation is None or not self.selected:
            return
        best = self.selected[0]
        similar = [cid for cid, _ in self.curation.similar(best)]
        paired = self.selected[1] if len(self.selected) > 1 and self.selected[1] in similar else None
        i = (similar.index(paired) + step) if paired is not None else (0 if step > 0 else len(similar) - 1)
        if not 0 <= i < len(similar):
            self.window.show_status(f"No {'more' if step > 0 else 'earlier'} similar units for unit {best}.")
            return
        self.select([best, similar[i]])

    def _similar_picked(self, cluster: int) -> None:
        if self.selected:
            self.select([self.selected[0], cluster])

    def _selection_changed(self, clusters: list[int]) -> None:
        c = self.curation
        if c is not None and self.selected:
            self.similar.show_similar([(cid, s, c.groups.get(cid, "unsorted")) for cid, s in c.similar(self.selected[0])],
                                      paired=self.selected[1] if len(self.selected) > 1 else None)
        else:
            self.similar.show_similar([])
        self._update_counts()
        self._refresh_controls()
        self.redraw()
        self.views_timer.start()

    def _show_selected_units(self) -> None:
        """Draw the selected units on the unit views and the drift map (the model's mean waveforms until their
        spikes are read in the background, latest selection wins)."""
        c = self.curation
        shown = self._waveforms
        if c is not None:
            missing = [cid for cid in self.selected[:MAX_SHOWN] if cid not in self._waveforms]
            if missing:
                shown = {**self._waveforms, **{cid: c.waveforms(None, cid) for cid in missing}}
                self._load_waveforms(c, missing)
        self.views.show_units(c, self.selected[:MAX_SHOWN], shown)
        self.drift.show_units(c.spike_clusters if c is not None else None, self.selected)

    def _load_waveforms(self, curation: Curation, clusters: list[int]) -> None:
        """Read the spike waveforms of ``clusters`` off the GUI thread (40 short preprocessed windows each); a newer
        selection cancels the read, and a result arriving for an older selection or curation is dropped."""
        if self._waveform_job is not None and self._waveform_job.is_running:
            self._waveform_job.cancel()
        source = self.source if self.source is not None and self.source.has_model else None
        if source is None:
            self._waveforms.update({cid: curation.waveforms(None, cid) for cid in clusters})
            return
        n = 40 if curation.templates_uv.shape[2] <= 64 else 20
        job = self._waveform_job = Job("waveforms", engine_curation.waveforms_job, curation, source, clusters, n)
        selection = list(self.selected)

        def done(result: dict) -> None:
            if sip.isdeleted(self.views) or curation is not self.curation:  # the workspace closed meanwhile
                return
            self._waveforms.update(result)
            if self.selected == selection:
                self.views.update_waveforms(curation, self.selected[:MAX_SHOWN], self._waveforms)
                self.redraw()  # the highlighted spikes on the traces use the waveforms' trough

        job.finished.connect(done)
        job.start()

    def _update_counts(self) -> None:
        c = self.curation
        if c is None:
            self.counts.setText("Sort, or open a Phy folder, to curate units.")
            return
        n = c.counts()
        if self._stage_counts_units:  # the folder's line follows merges and splits, as the table does
            labelled = sum(v for k, v in n.items() if k != "unsorted")
            self.stage_label.setText(f"{len(c.cluster_ids)} units in {c.folder.name}/"
                                     + (f" ({labelled} labelled)." if labelled else "."))
        current = ""
        if self.selected:
            r = c.row(self.selected[0])
            current = (f"\nUnit {r['cluster_id']}: {r['n_spikes']:,} spikes, {r['firing_rate']:.1f} Hz, "
                       f"{r['amplitude_uv']:.0f} µV, SNR {r['snr']:.1f}, {r['group']}.")
        self.counts.setText(f"{len(c.cluster_ids)} units: {n['good']} good, {n['mua']} mua, {n['noise']} noise, "
                            f"{n['unsorted']} unsorted.{current}")

    def _refresh_controls(self) -> None:
        has_rec = self.recording is not None
        running = self.sort_job is not None and self.sort_job.is_running
        has_units = self.curation is not None
        self.sort_button.setEnabled(has_rec and not running)
        self.cancel_button.setEnabled(running)
        self.probe_button.setEnabled(has_rec and not running)
        self.registry.refresh()  # merge, split, labels, undo, redo
        self.export_nwb_button.setEnabled(has_units)
        model = self.source is not None and self.source.has_model
        for box in (self.show_model, self.show_residual):
            box.setEnabled(model)
            box.setToolTip(box.toolTip().split("\n")[0] + ("" if model else "\nSort first: there is no model yet."))

    # -- curation actions ---------------------------------------------------------------------------
    def _edit(self, action, *args):
        """Run a curation change; InputError (bad selection, unwritable folder) goes to the user."""
        if self.curation is None:
            return None
        try:
            return action(*args)
        except InputError as exc:  # a selection that does not fit the action: the status bar says why
            self.window.show_status(exc.message, 8000)
            return None
        except OSError as exc:  # the folder vanished or the disk is full: say so, keep the window alive
            show_error(self, "Cannot save the curation", f"Saving into {self.curation.folder} failed: {exc}")
            return None

    def _after_change(self, selection: list[int], message: str) -> None:
        present = set(self.curation.cluster_ids.tolist())
        self._fill_table([])
        self.select([c for c in selection if c in present])
        self.window.show_status(message, 8000)

    def merge_selected(self) -> None:
        if self.curation is None:
            return
        if len(self.selected) < 2:
            self.window.show_status("Select two or more units to merge: click one, Ctrl-click the others.")
            return
        ids = list(self.selected)
        new = self._edit(self.curation.merge, ids)
        if new is not None:
            self._after_change([new], f"Merged {', '.join(map(str, ids))} into unit {new} (Ctrl+Z undoes). Saved.")

    def split_selected(self) -> None:
        if self.curation is None or not self.selected:
            return
        cluster = self.selected[0]
        mask = self.views.lasso_mask(cluster)
        if mask is None:
            self.window.show_status("Draw the lasso first: Ctrl-click three or more points around spikes on the amplitude or feature view.")
            return
        parts = self._edit(self.curation.split, cluster, mask)
        if parts is not None:
            self.views.clear_lasso()
            self._after_change(list(parts), f"Split unit {cluster} into {parts[0]} (lasso, {int(mask.sum())} spikes) and "
                                            f"{parts[1]} (the rest). Saved.")

    def label_selected(self, group: str) -> None:
        if self.curation is None or not self.selected:
            return
        ids = list(self.selected)
        if self._edit(self.curation.label, ids, group) is None:
            return
        self._after_change(ids, f"Labelled {', '.join(map(str, ids))} {group}. Saved.")

    def undo(self) -> None:
        change = self._edit(self.curation.undo) if self.curation is not None else None
        if change is not None:
            old = list(dict.fromkeys(change.old.tolist())) or change.selection
            self._after_change(old, f"Undid the {change.description}.")

    def redo(self) -> None:
        change = self._edit(self.curation.redo) if self.curation is not None else None
        if change is not None:
            self._after_change(change.selection, f"Redid the {change.description}.")

    # -- traces ---------------------------------------------------------------------------------
    def _max_window(self) -> float:
        if self.source is None:
            return 10.0
        return min(10.0, MAX_WINDOW_VALUES / max(self.source.n_channels, 1) / self.recording.sample_rate)

    def _window_changed(self, redraw: bool = True) -> None:
        if self.recording is None:
            return
        width = min(self.window_seconds.value(), self._max_window(), self.recording.duration)
        steps = int(max(0.0, self.recording.duration - width) * SCROLL_STEPS_PER_SECOND)
        self.scroll.blockSignals(True)
        self.scroll.setRange(0, steps)
        self.scroll.setPageStep(max(1, int(width * SCROLL_STEPS_PER_SECOND)))
        self.scroll.setSingleStep(max(1, int(width * SCROLL_STEPS_PER_SECOND / 10)))
        self.view_start = min(self.view_start, steps / SCROLL_STEPS_PER_SECOND)
        self.scroll.setValue(int(round(self.view_start * SCROLL_STEPS_PER_SECOND)))
        self.scroll.blockSignals(False)
        if redraw:
            self.redraw()

    def _scrolled(self, value: int) -> None:
        self.view_start = value / SCROLL_STEPS_PER_SECOND
        self.redraw()

    def _view_changed(self, start: float, width: float) -> None:
        """The mouse panned or zoomed the traces: follow it (clamped), read the new window a moment later."""
        if self.recording is None:
            return
        width = float(np.clip(width, 0.005, min(self._max_window(), self.recording.duration)))
        self.view_start = float(np.clip(start, 0.0, max(self.recording.duration - width, 0.0)))
        self.window_seconds.blockSignals(True)
        self.window_seconds.setValue(width)
        self.window_seconds.blockSignals(False)
        self.scroll.blockSignals(True)
        steps = int(max(0.0, self.recording.duration - width) * SCROLL_STEPS_PER_SECOND)
        self.scroll.setRange(0, steps)
        self.scroll.setPageStep(max(1, int(width * SCROLL_STEPS_PER_SECOND)))
        self.scroll.setValue(int(round(self.view_start * SCROLL_STEPS_PER_SECOND)))
        self.scroll.blockSignals(False)
        self.redraw_timer.start()

    def step_time(self, fraction: float) -> None:
        """Scroll by ``fraction`` of the window (←/→)."""
        self.scroll.setValue(self.scroll.value() + int(round(fraction * self.scroll.pageStep())))

    def go_to(self, seconds: float) -> None:
        """Center the trace window on ``seconds``."""
        half = self.window_seconds.value() / 2
        self.scroll.setValue(int(round(max(seconds - half, 0.0) * SCROLL_STEPS_PER_SECOND)))

    def _auto_spacing(self, redraw: bool = True) -> None:
        """With Auto on, space the traces by :data:`NOISE_SPACING` × the median channel's noise SD of the data shown."""
        if not self.spacing_auto.isChecked() or self.source is None:
            return
        sd = float(np.median(self.source.noise_uv(self.data_kind.currentText().lower())))
        value = float(f"{NOISE_SPACING * sd:.2g}") if np.isfinite(sd) and sd > 0 else 150.0  # two significant digits
        self.spacing.blockSignals(True)
        self.spacing.setValue(value)
        self.spacing.blockSignals(False)
        if redraw:
            self.redraw()

    def _spacing_edited(self, _value: float) -> None:
        self.spacing_auto.blockSignals(True)
        self.spacing_auto.setChecked(False)  # a spacing chosen by hand stays until Auto is pressed again
        self.spacing_auto.blockSignals(False)
        self.redraw()

    def _layers_toggled(self) -> None:
        if (self.show_model.isChecked() or self.show_residual.isChecked()) and self.data_kind.currentText() == "Raw":
            self.data_kind.setCurrentText("Preprocessed")  # the model lives in the preprocessed signal
            self.window.show_status("Showing preprocessed data: the model and residual are band-passed and re-referenced.")
        self.redraw()

    def trace_request(self) -> TraceRequest | None:
        """The window the controls ask for (bounded), as a request for :func:`load_traces`."""
        if self.source is None or self.recording is None:
            return None
        rate = self.recording.sample_rate
        width = min(self.window_seconds.value(), self._max_window())
        start = int(round(self.view_start * rate))
        stop = min(start + int(round(width * rate)), self.recording.n_samples)
        first = self.first_channel.value()
        count = min(self.n_shown.value(), self.source.n_channels - first)
        model_on = self.source.has_model and (self.show_model.isChecked() or self.show_residual.isChecked())
        self._request_id += 1
        return TraceRequest(self._request_id, self.source, start, stop, slice(first, first + count),
                            self.data_kind.currentText().lower() if self.show_data.isChecked() else None,
                            model_on and self.show_model.isChecked(), model_on and self.show_residual.isChecked(),
                            self.spacing.value(), self.traces.pixel_width(),
                            {"first": first, "count": count, "labels": [f"{self.source.channels[i]}" for i in range(first, first + count)]})

    def _cheap(self, request: TraceRequest) -> bool:
        n = request.stop - request.start
        rows = request.extra["count"]
        if (request.data == "preprocessed" or request.residual) and not request.source.is_cached(request.start, request.stop):
            return (n + 2 * request.source.preprocessor.margin) * request.source.n_channels <= SYNC_MAX_VALUES
        return n * rows <= SYNC_MAX_VALUES

    def redraw(self) -> None:
        """Ask for the visible window: drawn now when cheap (or ``async_traces`` is off), else loaded in the background."""
        request = self.trace_request()
        if request is None:
            return
        if self.curation is not None:
            self.view_state_timer.start()
        if not self.async_traces or self._cheap(request):
            self.loader.drop_pending()
            self._show_frame(request, load_traces(request))
        else:
            self.loader.request(request)

    def _traces_loaded(self, request: TraceRequest, result: dict) -> None:
        if request.id > self._frame_id and request.source is self.source:  # an older frame never replaces a newer one
            self._show_frame(request, result)

    def _traces_failed(self, request: TraceRequest, error) -> None:
        if request.id > self._frame_id and request.source is self.source:
            self.window.show_status(f"Cannot read the traces: {error.message}", 8000)

    def _show_frame(self, request: TraceRequest, result: dict) -> None:
        """Draw a loaded window: the curves, then spikes, highlights, legend and position."""
        self._frame_id = request.id
        start, stop, rate = request.start, request.stop, request.rate
        first, count = request.extra["first"], request.extra["count"]
        self.traces.show_curves(result["curves"], request.spacing, request.extra["labels"], (start / rate, stop / rate),
                                start, stop, rate)
        self._draw_spikes(start, stop, first, count)
        self._highlight_spikes(result["layers"]["data"], start, rate, first, count)
        curves = result["curves"]
        legend = []
        if curves.get("data") is not None:
            legend.append(f"<span style='color:#1f3a68'>■</span> {request.data}")
        if curves.get("model") is not None:
            legend.append("<span style='color:#e4572e'>■</span> model Σa⊛W")
        if curves.get("residual") is not None:
            legend.append("<span style='color:#0f8b6e'>■</span> residual")
        self.traces.set_legend(" &nbsp; ".join(legend))
        self.traces.position.setText(f"{start / rate:.3f}–{stop / rate:.3f} s / {self.recording.duration:.1f} s · "
                                     f"ch {first}–{first + count - 1} / {self.source.n_channels}")

    def _draw_spikes(self, start: int, stop: int, first: int, count: int) -> None:
        c = self.curation
        if c is None or not self.show_spikes.isChecked():
            self.traces.show_spikes(np.zeros(0), np.zeros(0), np.zeros(0, np.int64), {})
            return
        lo, hi = np.searchsorted(c.spike_times, [start, stop])
        clusters = c.spike_clusters[lo:hi]
        peak = {int(k): c.row(int(k))["peak_channel"] for k in np.unique(clusters)}
        rows = np.array([peak[int(k)] for k in clusters], dtype=np.int64) - first
        keep = (rows >= 0) & (rows < count)
        colors = {cid: selection_color(i) for i, cid in enumerate(self.selected)}
        self.traces.show_spikes(c.spike_times[lo:hi][keep] / c.sample_rate, rows[keep], clusters[keep], colors)

    def _highlight_spikes(self, data: np.ndarray | None, start: int, rate: float, first: int, count: int) -> None:
        """Redraw the selected units' spikes in their colors, on the channels of their footprint (as Phy does)."""
        c = self.curation
        segments = []
        if c is not None and data is not None and len(data):
            spacing = self.spacing.value()
            d = c.templates_uv.shape[1]
            for i, cid in enumerate(self.selected[:3]):
                foot = c.footprint(cid)
                channels = np.flatnonzero(foot >= 0.3 * foot.max())
                channels = channels[(channels >= first) & (channels < first + count)]
                trough = self._waveforms[cid]["trough"] if cid in self._waveforms else d // 3
                times = c.spike_times[c.spikes(cid)]
                lo, hi = np.searchsorted(times, [start - d + trough, start + len(data) + trough])
                xs, ys = [], []
                for t in times[lo:hi]:
                    a = int(t) - trough - start
                    s0, s1 = max(a, 0), min(a + d, len(data))
                    if s1 <= s0:
                        continue
                    tt = (start + np.arange(s0, s1)) / rate
                    for ch in channels:
                        xs += [tt, [np.nan]]
                        ys += [data[s0:s1, ch - first] - (ch - first) * spacing, [np.nan]]
                if xs:
                    segments.append((np.concatenate(xs), np.concatenate(ys), selection_color(i)))
                else:
                    segments.append((np.zeros(0), np.zeros(0), selection_color(i)))
        self.traces.show_highlights(segments)

    # -- demo -----------------------------------------------------------------------------------
    def demo_steps(self) -> list:
        """Sort the demo recording, pick its best unit, then look at the model and residual around one of its spikes."""
        def best_unit() -> None:
            rows = self.curation.rows()
            best = max(rows, key=lambda r: r["snr"])["cluster_id"]
            similar = self.curation.similar(best, n=1)
            self.select([best] + [similar[0][0]] if similar else [best])
            t = self.curation.spike_times[self.curation.spikes(best)[len(self.curation.spikes(best)) // 2]] / self.curation.sample_rate
            self.window_seconds.setValue(0.2)
            self.go_to(t)

        def model() -> None:
            self.select(self.selected[:1])
            self.show_model.setChecked(True)

        def residual() -> None:
            self.show_data.setChecked(False)
            self.show_residual.setChecked(True)

        return [("sort", self.run_sort), ("units", best_unit), ("model", model), ("residual", residual),
                ("driftmap", self.drift.toggle)]
