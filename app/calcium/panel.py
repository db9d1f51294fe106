"""Calcium workspace: imaging movies → CNMF (background job) → ROI and trace QC → Suite2p export.

The loop: open a movie → Run CNMF (per-stage progress, Cancel) → ROI contours on the summary
image (accepted green, rejected red dashed, selected yellow) → click an ROI or a table row →
its F / C / S traces → accept (A) / reject (R), Left / Right to the next ROI in table order,
N to the ROI where the classifier is least sure, merge two (M), delete (Del), add one by clicking
its center (+, then click), undo (Ctrl+Z) → Export (Suite2p folder). Every decision is autosaved
(engine.calcium.curation) and restored when the movie is opened or run again; accepts, rejects and
deletes also teach the ROI classifier (engine.calcium.classifier), kept across movies in the user's
data folder, re-trained in a background job after each one; its P(cell) is a column of the table.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtGui import QColor, QKeySequence
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
)

from engine.calcium import classifier, curation
from engine.calcium.curation import MOVIE_SOURCES, Curation
from app.calcium.session import CalciumSession
from app.session import from_session
from app.calcium.views import FieldOfView, TracePanel
from app.dialogs import ask_nwb_metadata, ask_nwb_path, show_error
from app.jobs import Job
from app.widgets.job_box import JobBox
from app.widgets.number_item import NumberItem
from app.workspace import InfoBox, Workspace
from engine.calcium.io import MOVIE_EXTENSIONS, is_suite2p_binary, recording_layout, region_trace
from engine.calcium.pipeline import REGISTER
from engine.errors import InputError
from engine.mesh.io import HDF5_EXTENSIONS, is_hdf5_mesh
from engine.nwb import ELECTRICAL_TYPES, has_series
from engine.storage import workdir_for

TRACE_RADIUS = 2  # pixels around a click averaged into its trace (movies without ROIs)
IMAGE_KINDS = ("Mean", "Max", "Correlation", "Std", "Frame")
TABLE_COLUMNS = ("ROI", "SNR", "r", "P(cell)", "Size", "Accepted")
P_COLUMN, SIZE_COLUMN, STATUS_COLUMN = 3, 4, 5


class CalciumWorkspace(Workspace):
    key = "calcium"
    title = "Calcium"
    icon_name = "calcium"
    extensions = MOVIE_EXTENSIONS

    def __init__(self, window):
        super().__init__(window)
        self.session = CalciumSession(self)  # movie, curation, selected ROIs, jobs in flight: held there once
        self.selection: dict = {}  # the plane / channel shown, of a multi-plane or multi-channel recording
        self._shown_kind = None  # (image kind, source) on screen: contrast resets when it changes
        self._hover = (-1, -1)  # the pixel under the mouse, to refresh its description after a decision
        # The ROI classifier: the user's decisions (loaded on first use), the features and P(cell) of the
        # current result's ROIs (from a background job: None until it ends), labels waiting for features.
        self.decisions: classifier.Decisions | None = None
        self.features: np.ndarray | None = None
        self.scores: classifier.Scores | None = None
        self.score_job: Job | None = None
        self._score_again = False
        self._pending_labels: list[tuple[np.ndarray, bool]] = []  # (centers, accept)
        self._last_uncertain: int | None = None  # the ROI "Next uncertain ROI" selected last
        # The store is written by one background thread, in order (an fsync can take 100 ms on a busy disk).
        self._store_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roi-classifier-store")
        self._store_saved: Future | None = None

        self.info = InfoBox("Movie", [("file", "File"), ("n_frames", "Frames"), ("size", "Size (px)"), ("fps", "Frame rate (Hz)"),
                                      ("dtype", "Data type")])
        self.info.setMaximumHeight(170)

        cnmf_box = QGroupBox("CNMF")
        cnmf_form = QFormLayout(cnmf_box)
        self.diameter = QDoubleSpinBox(minimum=2.0, maximum=200.0, value=10.0, decimals=1, singleStep=1.0, suffix=" px")
        self.diameter.setToolTip("Typical soma diameter; sets the search radius, patch overlap and the size limits")
        self.register = QComboBox()
        self.register.addItems(REGISTER)
        self.register.setToolTip("Motion correction before demixing: none, rigid (phase correlation) or piecewise-rigid")
        self.fps = QDoubleSpinBox(minimum=0.0, maximum=10000.0, value=0.0, decimals=2, suffix=" Hz")
        self.fps.setSpecialValueText("from file")
        self.fps.setToolTip("Frame rate; “from file” uses the movie's metadata (30 Hz when it has none)")
        self.run_button = QPushButton("Run CNMF", objectName="Primary")
        self.run_button.clicked.connect(self.run_cnmf)
        self.job_box = JobBox("Not run yet.", self.run_button, shows=self.shows,
                              kept="the previous ROIs (if any) are kept.")
        self.cancel_button, self.progress_bar, self.stage_label = (self.job_box.cancel_button, self.job_box.progress_bar,
                                                                   self.job_box.stage_label)
        cnmf_form.addRow("Cell diameter:", self.diameter)
        cnmf_form.addRow("Registration:", self.register)
        cnmf_form.addRow("Frame rate:", self.fps)
        cnmf_form.addRow(self.job_box)

        display = QGroupBox("Display")
        form = QFormLayout(display)
        self.image_kind = QComboBox()
        self.image_kind.addItems(IMAGE_KINDS)
        self.image_kind.setToolTip("Summary image behind the ROIs, or “Frame” for the movie player")
        self.image_kind.currentTextChanged.connect(self._kind_changed)
        self.source = QComboBox()
        self.source.addItems(MOVIE_SOURCES)
        self.source.setToolTip("What the player shows: the raw movie, the model's cells A·C, the residual "
                               "(raw − cells − background) or the background b·f")
        self.source.currentTextChanged.connect(self._source_changed)
        self.frame_slider = QSlider(Qt.Orientation.Horizontal)
        self.frame_slider.valueChanged.connect(self._frame_changed)
        self.play_button = QToolButton()
        self.play_button.setText("▶")
        self.play_button.setCheckable(True)
        self.play_button.setToolTip("Play / pause the movie (Space)")
        self.play_button.toggled.connect(self._play_toggled)
        frame_row = QHBoxLayout()
        frame_row.addWidget(self.play_button)
        frame_row.addWidget(self.frame_slider, 1)
        self.frame_label = QLabel("—")
        self.contrast_button = QPushButton("Auto contrast")
        self.contrast_button.setToolTip("Reset the gray levels to the 0.5–99.8 % percentiles of the image on screen; "
                                        "drag the levels in the histogram beside the image to set them by hand")
        self.contrast_button.clicked.connect(lambda: self.redraw(reset_levels=True))
        self.show_contours = QCheckBox("Show ROI contours")
        self.show_contours.setChecked(True)
        self.show_contours.toggled.connect(self._contours_toggled)
        form.addRow("Image:", self.image_kind)
        form.addRow("Movie:", self.source)
        form.addRow("Frame:", frame_row)
        form.addRow("", self.frame_label)
        form.addRow(self.contrast_button)
        form.addRow(self.show_contours)
        self.play_timer = QTimer(self)
        self.play_timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._play_origin = (0.0, 0)  # (clock, frame) when playing started
        self._play_shown: int | None = None  # the frame playing showed last
        self.play_timer.timeout.connect(self._next_frame)

        qc = QGroupBox("ROI curation")
        qc_layout = QVBoxLayout(qc)
        self.counts = QLabel("No ROIs yet.")
        self.counts.setWordWrap(True)
        qc_layout.addWidget(self.counts)
        buttons = QGridLayout()
        self.accept_button = self._button("Accept (A)", None)  # these run their action in the registry (below)
        self.reject_button = self._button("Reject (R)", None)
        self.merge_button = self._button("Merge (M)", None)
        self.merge_button.setToolTip("Merge the two selected ROIs (Ctrl-click the second one) into one")
        self.delete_button = self._button("Delete (Del)", None)
        self.add_button = self._button("Add ROI (+)", None)
        self.add_button.setCheckable(True)
        self.add_button.setToolTip("Then click the center of a cell the pipeline missed: a local NMF fits it in the background")
        self.add_button.toggled.connect(self._add_mode_toggled)
        self.undo_button = self._button("Undo (Ctrl+Z)", None)
        self.export_button = self._button("Export Suite2p…", self.export)
        self.export_button.setToolTip("Write stat.npy, F.npy, Fneu.npy, spks.npy, iscell.npy, ops.npy, "
                                      "footprints.npz and traces.npz into a folder")
        for i, button in enumerate((self.accept_button, self.reject_button, self.merge_button, self.delete_button,
                                    self.add_button, self.undo_button)):
            buttons.addWidget(button, i // 2, i % 2)
        self.export_nwb_button = self._button("Export NWB…", self.export_nwb)
        self.export_nwb_button.setToolTip("Write one .nwb file (PlaneSegmentation, F, neuropil, denoised C, spikes S, summary "
                                          "images) for DANDI or any NWB reader")
        buttons.addWidget(self.export_button, 3, 0, 1, 2)
        buttons.addWidget(self.export_nwb_button, 4, 0, 1, 2)
        qc_layout.addLayout(buttons)
        self.classifier_label = QLabel("", objectName="Hint")
        self.classifier_label.setWordWrap(True)
        self.uncertain_button = self._button("Next uncertain ROI (N)", None)
        self.uncertain_button.setToolTip("Select and centre the undecided ROI where the classifier is least sure")
        self.load_classifier_button = self._button("Load classifier…", self.load_classifier)
        self.load_classifier_button.setToolTip("Add the decisions of a classifier file (a colleague's, a backup) to yours")
        self.save_classifier_button = self._button("Save classifier…", self.save_classifier)
        self.save_classifier_button.setToolTip("Write your decisions (features and labels, .npz) to a file; "
                                               "`neurowb cnmf --classifier FILE` uses it")
        learn = QGridLayout()
        learn.addWidget(self.uncertain_button, 0, 0, 1, 2)
        learn.addWidget(self.load_classifier_button, 1, 0)
        learn.addWidget(self.save_classifier_button, 1, 1)
        qc_layout.addWidget(self.classifier_label)
        qc_layout.addLayout(learn)
        self.keys_hint = QLabel("", objectName="Hint")  # filled from the registry; F1 lists them all
        self.keys_hint.setWordWrap(True)
        qc_layout.addWidget(self.keys_hint)

        self.fov = FieldOfView()
        self.fov.clicked.connect(self._image_clicked)
        self.fov.hovered.connect(self._hovered)
        self.view = self.fov.view  # the image view (tests and the old API)
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(TABLE_COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        # every column as wide as its values and title (six columns share ~330 px: stretched ones were cut to "…"),
        # the last one takes what is left
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.horizontalHeaderItem(2).setToolTip("Spatial correlation of the footprint with the data")
        self.table.horizontalHeaderItem(P_COLUMN).setToolTip(
            "Probability that the ROI is a cell: the classifier's, learnt from your accepts and rejects on every movie "
            "(gray: the fixed metric thresholds', until it has enough decisions of both kinds)")
        self.table.horizontalHeaderItem(SIZE_COLUMN).setToolTip("Pixels of the footprint at ≥ 20 % of its peak")
        self.table.sortItems(0, Qt.SortOrder.AscendingOrder)
        self.table.setSortingEnabled(True)
        self.table.itemSelectionChanged.connect(self._table_selection_changed)
        self.session.selection_changed.connect(self._show_selection)  # the table, contours and traces follow
        self.session.busy_changed.connect(self._refresh_controls)
        self.session.history_changed.connect(lambda: self.registry.refresh())  # the Undo button
        self.table.setMinimumWidth(300)
        self.traces = TracePanel()
        self.traces.frame_picked.connect(self._time_picked)
        self.trace_curve = self.traces.pixel_curve  # the click-a-pixel trace (movies without ROIs)
        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(self.fov)
        top.addWidget(self.table)
        top.setStretchFactor(0, 3)
        top.setStretchFactor(1, 1)
        top.setSizes([600, 430])  # the table shows its six columns whole
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(top)
        splitter.addWidget(self.traces)
        splitter.setSizes([560, 330])

        add = self.registry.add
        editable = lambda: self.curation is not None and not (self.edit_job is not None and self.edit_job.is_running)  # noqa: E731
        chosen = lambda: editable() and self.curation.result.n_components > 0 and bool(self.selected)  # noqa: E731
        add("Accept", lambda: self.set_accepted(True), "A", group="Quality control", enabled=chosen,
            help="Accept the selected ROIs")
        add("Reject", lambda: self.set_accepted(False), "R", group="Quality control", enabled=chosen,
            help="Reject the selected ROIs")
        add("Next ROI", lambda: self.step_roi(1), "Right", group="Quality control", help="In table order", hint=False)
        add("Previous ROI", lambda: self.step_roi(-1), "Left", group="Quality control", hint=False)
        add("Merge", self.merge_selected, "M", group="Quality control", enabled=lambda: chosen() and len(self.selected) == 2,
            help="Select two ROIs (Ctrl-click the second) first")
        add("Delete", self.delete_selected, ("Del", "Backspace"), group="Quality control", enabled=chosen,
            help="Delete the selected ROIs")
        add("Next uncertain ROI", self.next_uncertain_roi, "N", group="Quality control",
            enabled=lambda: self.curation is not None and self.curation.result.n_components > 0,
            help="Select and centre the undecided ROI where the classifier is least sure; again: the next one")
        add("Add ROI", self.add_button.toggle, "+", group="Quality control", help="Then click the center of a cell")
        add("Leave add mode", lambda: self.add_button.setChecked(False), "Esc", group="Quality control", hint=False)
        add("Undo", self.undo, QKeySequence.StandardKey.Undo, group="Quality control",
            enabled=lambda: editable() and self.curation.can_undo)
        add("Redo", self.redo, ("Ctrl+Shift+Z", "Ctrl+Y"), group="Quality control", hint=False,
            enabled=lambda: editable() and self.curation.can_redo)
        for name, button in (("Accept", self.accept_button), ("Reject", self.reject_button), ("Merge", self.merge_button),
                             ("Delete", self.delete_button), ("Undo", self.undo_button), ("Next uncertain ROI", self.uncertain_button)):
            self.registry.bind(name, button)
        add("Play", self.play_button.toggle, "Space", group="Movie", help="Play or pause the movie")
        self.keys_hint.setText(self.registry.hint() + " · ←/→ previous/next ROI")

        self.assemble([self.info, cnmf_box, display, qc], splitter, "No movie open",
                      "Open a calcium imaging movie (multi-page TIFF, NPY, HDF5; frames × height × width). "
                      "It is read lazily, chunk by chunk; Run CNMF finds, demixes and deconvolves the cells.", "Open movie…")
        self._refresh_controls()

    def _button(self, text: str, slot) -> QPushButton:
        button = QPushButton(text)
        button.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)  # share the column's width
        if slot is not None:
            button.clicked.connect(lambda checked=False: slot())
        return button

    # -- opening -------------------------------------------------------------------------
    def can_open(self, path: Path) -> bool:
        if path.suffix.lower() == ".nwb":  # an ephys recording goes to Ephys; movies, results and bad files here
            return not has_series(path, ELECTRICAL_TYPES)
        if path.suffix.lower() in HDF5_EXTENSIONS:  # a MeshParty mesh goes to Morphology; movies and bad files here
            return not is_hdf5_mesh(path)
        if path.suffix.lower() == ".bin":  # Suite2p's data.bin (ops.npy beside it); other .bin files are ephys recordings
            return is_suite2p_binary(path)
        return super().can_open(path)

    def open_file(self, path: Path, selection: dict | None = None) -> Job | None:
        layout = recording_layout(path) if selection is None else None  # several planes / channels: which one?
        if layout is not None and layout.needs_choice:
            from app.calcium.chooser import ask_plane_channel

            selection = ask_plane_channel(self, path, layout)
            if selection is None:
                return None
        return self.window.run_job(f"Open {path.name}", curation.open_movie_job, path, selection or {},
                                   on_result=lambda result: self._show(path, result, selection or {}))

    def _show(self, path: Path, result: dict, selection: dict | None = None) -> None:
        self.play_button.setChecked(False)
        self.session.set_movie(result["movie"], result["summaries"])
        self.current_path, self.selection = path, dict(selection or {})
        m = self.movie
        where = "".join(f", {k} {v}" for k, v in self.selection.items())
        self.info.update_values({"file": path.name + where, "n_frames": m.n_frames, "size": (m.height, m.width),
                                 "fps": m.fps if m.fps else "unknown", "dtype": str(m.dtype)})
        self.frame_slider.blockSignals(True)
        self.frame_slider.setRange(0, m.n_frames - 1)
        self.frame_slider.setValue(0)
        self.frame_slider.blockSignals(False)
        self.frame_label.setText(f"1 / {m.n_frames}")
        self.traces.set_time_range(m.n_frames / (m.fps or 1.0))
        self.fov.marker.clear()
        self.stage_label.setText("Not run yet: press Run CNMF." if result["curation"] is None else
                                 "Restored the saved CNMF result and decisions.")
        self.progress_bar.setValue(0)
        self._set_curation(result["curation"], skipped=result.get("skipped", 0))
        self.loaded(path)
        self._show_notice(result.get("notice"))

    def _set_curation(self, curation: Curation | None, skipped: int = 0) -> None:
        self.session.set_curation(curation)
        self.add_button.setChecked(False)
        if curation is not None:
            self.fov.marker.clear()  # ROIs replace the clicked pixel and its trace
        if curation is not None and self.image_kind.currentText() in ("Mean", "Std"):
            self.image_kind.setCurrentText("Correlation")  # cells stand out best there
        self._shown_kind = None
        self.features, self.scores, self._scored_A, self._pending_labels = None, None, None, []
        self.redraw()
        self._fill_table()
        if curation is not None and curation.result.n_components:
            self.select([self._roi_at_row(0)])  # the table's first ROI: its traces show at once, as in ephys
        else:
            self._roi_changed()
        if curation is not None and curation.decisions:
            note = f"; {skipped} could not be matched to an ROI and were dropped" if skipped else ""
            self.window.show_status(f"Restored {len(curation.decisions)} curation decisions{note}.", 10000)

    # -- CNMF ----------------------------------------------------------------------------
    def run_cnmf(self) -> Job | None:
        if self.current_path is None or self.movie is None:
            self.window.show_status("Open a movie first.")
            return None
        if self.cnmf_job is not None and self.cnmf_job.is_running:
            return self.cnmf_job
        path = self.current_path
        fs = self.fps.value() or None
        job = self.run_dataset_job(f"CNMF on {path.name}", curation.run_cnmf_job, path, fs, self.diameter.value(),
                                   self.register.currentText(), self.selection, classifier=self._decisions(),
                                   on_result=self._cnmf_done)
        return self.session.set_cnmf_job(self.job_box.follow(job))

    def cancel_cnmf(self) -> None:
        self.job_box.cancel()

    def _cnmf_done(self, out: dict) -> None:
        curation = out["curation"]
        r = curation.result
        seconds = r.info.get("timings", {}).get("total", 0.0)
        judge = "the classifier" if "p_cell" in r.metrics else "the metrics"
        self.stage_label.setText(f"Done in {seconds:.1f} s: {r.n_components} ROIs "
                                 f"({int(r.accepted.sum())} accepted by {judge}).")
        self.progress_bar.setValue(1000)
        self._set_curation(curation, skipped=out.get("skipped", 0))
        self._show_notice(out.get("notice"))

    def _show_notice(self, notice: str | None) -> None:
        if notice:  # a damaged decisions file, kept aside (engine.storage.read_hand_work)
            show_error(self, "Damaged curation file set aside", notice)

    # -- image ----------------------------------------------------------------------------
    def _kind_changed(self, kind: str) -> None:
        if kind != "Frame":
            self.play_button.setChecked(False)
        self.redraw()
        self._refresh_controls()

    def _source_changed(self, _source: str) -> None:
        if self.image_kind.currentText() != "Frame":
            self.image_kind.setCurrentText("Frame")  # choosing a movie source means watching it
        else:
            self.redraw()

    def _frame_changed(self, index: int) -> None:
        if self.movie is None:
            return
        fps = self._fps()
        self.traces.set_cursor(index / fps)
        self.frame_label.setText(f"{index + 1} / {self.movie.n_frames} · {index / fps:.2f} s")
        if self.image_kind.currentText() == "Frame":
            self.redraw()

    def _fps(self) -> float:
        if self.curation is not None:
            return self.curation.result.fps
        return self.movie.fps if self.movie is not None and self.movie.fps else 1.0

    def redraw(self, reset_levels: bool = False) -> None:
        """Draw the chosen image; the contrast is kept while scrubbing, reset when the kind changes."""
        if self.movie is None:
            return
        kind = self.image_kind.currentText()
        result = self.curation.result if self.curation is not None else None
        if kind == "Frame":
            image = curation.player_frame(self.source.currentText(), self.movie, result, self.frame_slider.value())
        else:
            images = result.images if result is not None else {}
            name = kind.lower()
            image = images.get(name, self.summaries.get(name))
            if image is None:  # the correlation image comes with the CNMF run
                self.window.show_status("The correlation image is computed by Run CNMF; showing the mean image.")
                image = self.summaries["mean"]
        shown = (kind, self.source.currentText() if kind == "Frame" else None)
        levels = None
        if not reset_levels and shown == self._shown_kind and self.view.shape == image.shape:
            levels = tuple(self.view.histogram.getLevels())
        self.view.set_image(image, levels=levels, autorange=False)
        self._shown_kind = shown

    def _contours_toggled(self, on: bool) -> None:
        self.fov.show_contours = on
        self._draw_rois()

    def _play_toggled(self, playing: bool) -> None:
        if playing and self.movie is None:
            self.play_button.setChecked(False)
            return
        self.play_button.setText("❚❚" if playing else "▶")
        if playing:
            if self.image_kind.currentText() != "Frame":
                self.image_kind.setCurrentText("Frame")
            self._play_origin = (time.monotonic(), self.frame_slider.value())
            # at most ~30 redraws per second; the frame shown follows the clock, so a slow redraw skips
            # frames instead of slowing the movie down
            self.play_timer.start(int(max(33, 1000 / self._fps())))
        else:
            self.play_timer.stop()

    def _next_frame(self) -> None:
        if self.movie is None:
            self.play_button.setChecked(False)
            return
        start, first = self._play_origin
        if self.frame_slider.value() != self._play_shown:  # moved by hand while playing: go on from there
            start, first = self._play_origin = (time.monotonic(), self.frame_slider.value())
        frame = (first + int((time.monotonic() - start) * self._fps())) % self.movie.n_frames
        self._play_shown = frame
        self.frame_slider.setValue(frame)

    def _time_picked(self, seconds: float) -> None:
        if self.movie is not None:
            self.frame_slider.setValue(int(np.clip(round(seconds * self._fps()), 0, self.movie.n_frames - 1)))

    # -- selection -------------------------------------------------------------------------
    def _image_clicked(self, row: int, col: int) -> None:
        if self.movie is None:
            return
        if self.add_button.isChecked():
            self.add_roi((float(row), float(col)))
            return
        if self.curation is None:
            self.show_trace_at(row, col)
            return
        k = int(self.curation.geometry.owner[row, col])
        extend = bool(QApplication.keyboardModifiers() & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier))
        if k < 0:
            if not extend:
                self.select([])
            return
        if extend and self.selected:
            self.select([i for i in self.selected if i != k] + [k] if k not in self.selected else
                        [i for i in self.selected if i != k])
        else:
            self.select([k])

    def select(self, indices: list[int]) -> None:
        """Select ROIs (the first is the current one): table rows, contours and traces follow."""
        self.session.select(indices)

    def _show_selection(self, selected: list[int]) -> None:
        """The session's selection: the table selects its rows (unless a click there made it), then the
        contours and traces follow."""
        shown = {self._roi_at_row(index.row()) for index in self.table.selectionModel().selectedRows()}
        if shown != set(selected):
            self.table.blockSignals(True)
            self.table.clearSelection()
            rows = self._rows_by_roi()
            mode = self.table.selectionMode()
            self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)  # selectRow adds, not replaces
            for k in reversed(selected):  # the current ROI last: it becomes the table's current row
                self.table.selectRow(rows[k])
            self.table.setSelectionMode(mode)
            if selected:
                self.table.scrollToItem(self.table.item(rows[selected[0]], 0))
            self.table.blockSignals(False)
        self._roi_changed()

    def _table_selection_changed(self) -> None:
        if self.curation is None:
            return
        chosen = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        rois = [self._roi_at_row(r) for r in chosen]
        current = self._roi_at_row(self.table.currentRow()) if self.table.currentRow() >= 0 else None
        if current in rois:
            rois.remove(current)
            rois.insert(0, current)
        self.session.select(rois)

    def _rows_by_roi(self) -> dict[int, int]:
        return {self._roi_at_row(r): r for r in range(self.table.rowCount())}

    def _roi_at_row(self, row: int) -> int:
        return int(self.table.item(row, 0).data(Qt.ItemDataRole.UserRole))

    def step_roi(self, step: int) -> None:
        """Select the next (+1) or previous (-1) ROI in the table's current order."""
        if self.curation is None or self.table.rowCount() == 0:
            return
        rows = self._rows_by_roi()
        row = rows[self.selected[0]] + step if self.selected else (0 if step > 0 else self.table.rowCount() - 1)
        self.select([self._roi_at_row(row % self.table.rowCount())])

    def _hovered(self, row: int, col: int) -> None:
        self._hover = (row, col)
        if self.curation is None or row < 0:
            self.fov.hint.setText("")
            return
        k = int(self.curation.geometry.owner[row, col])
        if k < 0:
            self.fov.hint.setText(f"(row {row}, col {col}): no ROI")
            return
        text = f"ROI #{k} at (row {row}, col {col}): {self._describe(k)}"
        self.fov.hint.setText(text)
        self.window.show_status(text, 3000)

    def _describe(self, k: int) -> str:
        r = self.curation.result
        m = r.metrics
        status = "accepted" if r.accepted[k] else "rejected"
        return f"SNR {m['snr'][k]:.1f}, spatial r {m['r_value'][k]:.2f}, size {int(m['size'][k])} px, {status}"

    # -- drawing ---------------------------------------------------------------------------
    def _fill_table(self) -> None:
        self.table.blockSignals(True)
        self.table.setSortingEnabled(False)  # filling a sorted table moves rows under the loop
        self.table.clearContents()
        result = self.curation.result if self.curation is not None else None
        n = result.n_components if result is not None else 0
        self.table.setRowCount(n)
        for k in range(n):
            m = result.metrics
            roi = NumberItem(k, f"#{k}")
            roi.setData(Qt.ItemDataRole.UserRole, k)
            self.table.setItem(k, 0, roi)
            self.table.setItem(k, 1, NumberItem(m["snr"][k], f"{m['snr'][k]:.1f}"))
            self.table.setItem(k, 2, NumberItem(m["r_value"][k], f"{m['r_value'][k]:.2f}"))
            self.table.setItem(k, P_COLUMN, NumberItem(np.nan, "…"))
            self.table.setItem(k, SIZE_COLUMN, NumberItem(m["size"][k], f"{int(m['size'][k])}"))
            self.table.setItem(k, STATUS_COLUMN, QTableWidgetItem())
            self._style_status(k, k, bool(result.accepted[k]))
        self.table.setSortingEnabled(True)
        self.table.blockSignals(False)
        self._score()

    def _style_status(self, row: int, k: int, accepted: bool) -> None:
        item = self.table.item(row, STATUS_COLUMN)
        item.setText("yes" if accepted else "no")
        item.setForeground(QColor("#15803d" if accepted else "#be123c"))
        item.setData(Qt.ItemDataRole.UserRole, int(accepted))

    def _roi_changed(self) -> None:
        """After any selection or decision: contours, traces, counts, buttons."""
        self._draw_rois()
        result = self.curation.result if self.curation is not None else None
        if result is not None:
            self.traces.show_rois(result, self.selected)
            row, col = self._hover
            if 0 <= row < result.image_shape[0] and 0 <= col < result.image_shape[1]:
                self._hovered(row, col)
            accepted, rejected = self.curation.counts()
            current = f" Selected #{self.selected[0]}: {self._describe(self.selected[0])}." if self.selected else ""
            self.counts.setText(f"{result.n_components} ROIs: {accepted} accepted, {rejected} rejected; "
                                f"{len(self.curation.decisions)} decisions (autosaved).{current}")
        else:
            self.traces.show_rois(None, [])
            self.counts.setText("No ROIs yet: run CNMF.")
        self._refresh_controls()

    def _draw_rois(self) -> None:
        c = self.curation
        if c is None:
            self.fov.set_rois(None, None, [])
        else:
            self.fov.set_rois(c.geometry, c.result.accepted, self.selected, c.result.centers)

    def _refresh_controls(self) -> None:
        has_movie = self.movie is not None
        running = self.cnmf_job is not None and self.cnmf_job.is_running
        editing = self.edit_job is not None and self.edit_job.is_running
        self.run_button.setEnabled(has_movie and not running)
        self.cancel_button.setEnabled(running)
        self.source.setEnabled(has_movie)
        self.frame_slider.setEnabled(has_movie)
        self.play_button.setEnabled(has_movie)
        self.registry.refresh()  # accept, reject, merge, delete, undo
        self.add_button.setEnabled(self.curation is not None and not editing)
        self.export_button.setEnabled(self.curation is not None and not editing)
        self.export_nwb_button.setEnabled(self.export_button.isEnabled())

    # -- session state (read here, changed through self.session) ------------------------------
    movie = from_session()
    summaries = from_session()
    curation = from_session()
    selected = from_session()
    cnmf_job = from_session()
    edit_job = from_session()

    # -- decisions -------------------------------------------------------------------------
    def _editable(self) -> bool:
        if self.curation is None:
            return False
        if self.edit_job is not None and self.edit_job.is_running:
            self.window.show_status(f"Wait for “{self.edit_job.name}” to finish.")
            return False
        return True

    def set_accepted(self, accept: bool) -> None:
        if not self._editable() or not self.selected:
            return
        self._learn(self.selected, accept)  # confirming the current state teaches the classifier too
        decision = self.curation.set_accepted(self.selected, accept)
        if decision is None:
            self._roi_changed()
            return
        rows = self._rows_by_roi()
        self.table.setSortingEnabled(False)
        for k in self.selected:
            self._style_status(rows[k], k, accept)
        self.table.setSortingEnabled(True)
        self._roi_changed()
        self.window.show_status(f"{'Accepted' if accept else 'Rejected'} ROI {', '.join(f'#{k}' for k in self.selected)}.")

    def delete_selected(self) -> None:
        if not self._editable() or not self.selected:
            return
        gone = list(self.selected)
        self._learn(gone, False)  # a deleted ROI is not a cell
        aligned = self._scored_A is self.curation.result.A
        self.curation.delete(gone)
        if aligned:  # the other ROIs keep their features and scores
            keep = np.setdiff1d(np.arange(len(self.features)), gone)
            self.features, self._scored_A = self.features[keep], self.curation.result.A
            self.scores = classifier.Scores(self.scores.probability[keep], self.scores.from_classifier, self.scores.message)
        self._fill_table()
        self.select([min(min(gone), self.curation.result.n_components - 1)] if self.curation.result.n_components else [])
        self.window.show_status(f"Deleted ROI {', '.join(f'#{k}' for k in gone)} (Ctrl+Z to undo).")

    def merge_selected(self) -> Job | None:
        if not self._editable():
            return None
        if len(self.selected) != 2:
            self.window.show_status("Select exactly two ROIs to merge: click one, Ctrl-click the other.")
            return None
        i, j = self.selected
        decision = self.curation.decision("merge", [i, j])
        return self._edit_job(f"Merge ROIs #{i} and #{j}", decision, curation.merge_rois_job, self.curation.result, i, j)

    def add_roi(self, center: tuple[float, float]) -> Job | None:
        """Fit a new ROI at ``center`` (row, col) in the background; it is selected when it appears."""
        if not self._editable():
            return None
        decision = {"op": "add", "center": [round(float(v), 3) for v in center]}
        return self._edit_job(f"Add ROI at ({center[0]:.0f}, {center[1]:.0f})", decision, curation.add_roi_job,
                              self.curation.result, self.current_path, center, self.selection)

    def _edit_job(self, name: str, decision: dict, func, *args) -> Job:
        curation = self.curation

        def done(out: dict) -> None:
            if curation is not self.curation:
                return  # the movie or the run changed meanwhile
            curation.commit(decision, out["result"], out["geometry"])
            self._fill_table()
            self.select([curation.result.n_components - 1])  # add and merge append the new ROI last
            self.window.show_status(f"{name}: done (Ctrl+Z to undo).")

        return self.session.set_edit_job(self.window.run_job(name, func, *args, on_result=done))

    def _add_mode_toggled(self, on: bool) -> None:
        if on and self.curation is None:
            self.add_button.setChecked(False)
            self.window.show_status("Run CNMF first: added ROIs are fitted together with the others.")
            return
        self.fov.set_cross_cursor(on)
        if on:
            self.window.show_status("Add mode: click the center of a cell (Esc to leave).", 10000)

    def undo(self) -> None:
        if not self._editable():
            return
        decision = self.curation.undo()
        if decision is None:
            return
        if decision["op"] in ("accept", "reject", "delete"):
            self._forget(decision["centers"])
        self._fill_table()
        self.select([k for k in self.selected if k < self.curation.result.n_components])
        self.window.show_status(f"Undid {self.curation.describe(decision)} (Ctrl+Shift+Z redoes it).")

    def redo(self) -> None:
        if not self._editable():
            return
        decision = self.curation.redo()
        if decision is None:
            return
        self._fill_table()
        self.select([k for k in self.selected if k < self.curation.result.n_components])
        self.window.show_status(f"Redid {self.curation.describe(decision)}.")

    # -- the ROI classifier ----------------------------------------------------------------------
    def _decisions(self) -> classifier.Decisions:
        """The user's decisions, read from the store on first use (a damaged store: set aside and said)."""
        if self.decisions is None:
            self.decisions, notice = classifier.load_store()
            if notice:
                show_error(self, "Damaged classifier file set aside", notice)
        return self.decisions

    def _store(self, decisions: classifier.Decisions) -> None:
        """Keep ``decisions`` and save them (atomically, in the background; :meth:`flush_store` waits)."""
        self._report_store_error()
        self.decisions = decisions
        self._store_saved = self._store_writer.submit(decisions.save, classifier.default_store_path())

    def flush_store(self) -> None:
        """Wait until the decisions are on disk (closing, tests)."""
        if self._store_saved is not None:
            self._store_saved.exception()  # waits
            self._report_store_error()

    def _report_store_error(self) -> None:
        saved, self._store_saved = self._store_saved, None
        if saved is not None and not saved.done():
            self._store_saved = saved
        elif saved is not None and saved.exception() is not None:
            self.window.show_status(f"Could not save the classifier's decisions: {saved.exception()}", 10000)

    def _movie_key(self) -> str:
        return classifier.movie_key(self.current_path)

    def _score(self) -> None:
        """Re-train on the decisions and score the current ROIs, in a job (features take ~10 ms per ROI);
        asked while one runs, once more when it ends."""
        if self.curation is None:
            self.classifier_label.setText(self._decisions().status())
            return
        if self.score_job is not None and self.score_job.is_running:
            self._score_again = True
            return
        result = self.curation.result
        features = self.features if self._scored_A is result.A else None
        # A quiet job (not in the job panel: one follows every decision): ~0.2-1 s for the features, as much to train.
        self.score_job = Job("Score the ROIs (classifier)", classifier.score_job, result, self._decisions(), features)
        self.score_job.finished.connect(self._scored)
        self.score_job.failed.connect(lambda error: self.window.show_status(f"The ROI classifier failed: {error.message}", 10000))
        self.score_job.ended.connect(self._score_ended)
        self.score_job.start()

    def closing(self) -> None:
        """The scoring job is not the job manager's (which waits for its own): stop it here; finish saving."""
        self.flush_store()
        if self.score_job is not None and self.score_job.is_running:
            self._score_again = False
            self.score_job.cancel()
            self.score_job.wait(5000)

    def _score_ended(self, _job) -> None:
        if self._score_again:
            self._score_again = False
            self._score()

    _scored_A = None  # the footprints (result.A) that ``features`` and ``scores`` belong to

    def _scored(self, out: dict) -> None:
        if self.curation is None or out["A"] is not self.curation.result.A:
            return  # ROIs changed meanwhile: a newer job follows (_score_again)
        self.features, self.scores, self._scored_A = out["features"], out["scores"], out["A"]
        if self._pending_labels:  # decisions made before the features were there
            pending, self._pending_labels = self._pending_labels, []
            for centers, accept in pending:
                found = [self._roi_near(c) for c in centers]
                found = [k for k in found if k is not None]
                if found:
                    self._store(self._in_context(self._decisions().add(self._movie_key(), self.curation.result.centers[found],
                                                                       self.features[found], accept)))
            self._score_again = True
        self._show_scores()

    def _roi_near(self, center) -> int | None:
        d = np.hypot(*(self.curation.result.centers - np.asarray(center, float)).T)
        return int(np.argmin(d)) if len(d) and d.min() <= classifier.SAME_ROI_PX else None

    def _show_scores(self) -> None:
        s = self.scores
        self.classifier_label.setText(s.message)
        gray = QColor("#6b7280")
        tip = ("P(cell) from the classifier" if s.from_classifier else
               "P(cell) from the fixed metric thresholds (≥ 0.5: accepted by them) — the classifier needs more decisions")
        self.table.setSortingEnabled(False)
        for row in range(self.table.rowCount()):
            k = self._roi_at_row(row)
            item = self.table.item(row, P_COLUMN)
            item.value = float(s.probability[k])
            item.setText(f"{s.probability[k]:.2f}")
            item.setForeground(QColor(self.table.palette().text().color()) if s.from_classifier else gray)
            item.setToolTip(tip)
        self.table.setSortingEnabled(True)

    def _learn(self, indices, accept: bool) -> None:
        """Add these ROIs, labelled, to the decisions (saved at once) and re-train."""
        centers = self.curation.result.centers[list(indices)]
        if self.features is not None and self._scored_A is self.curation.result.A:
            self._store(self._in_context(self._decisions().add(self._movie_key(), centers, self.features[list(indices)], accept)))
            self._score()
        else:
            self._pending_labels.append((centers.copy(), accept))

    def _forget(self, centers) -> None:
        """Undo: the decisions on these ROIs leave the classifier (re-trained by the table's refill)."""
        decisions = self._decisions().without(self._movie_key(), centers)
        self._store(self._in_context(decisions) if self._scored_A is self.curation.result.A else decisions)

    def _in_context(self, decisions: classifier.Decisions) -> classifier.Decisions:
        """``decisions`` with the movie's other ROIs labelled by the metric thresholds (engine.calcium.classifier)."""
        r = self.curation.result
        return decisions.with_context(self._movie_key(), r.centers, self.features, classifier.threshold_probability(r) >= 0.5)

    def probability(self) -> np.ndarray:
        """P(cell) of the current ROIs: the last scores, or the metric thresholds' while they are computed."""
        r = self.curation.result
        if self.scores is not None and self._scored_A is r.A:
            return self.scores.probability
        return classifier.threshold_probability(r)

    def next_uncertain_roi(self) -> None:
        """Select and centre the undecided ROI where P(cell) is nearest 0.5 (pressed again: the next one)."""
        if self.curation is None or self.curation.result.n_components == 0:
            return
        r = self.curation.result
        p = self.probability()
        decided = self._decisions().decided(self._movie_key(), r.centers)
        # From the ROI N showed last (pressed again: the next one); any other selection starts from the least sure.
        current = self.selected[0] if self.selected and self.selected[0] == self._last_uncertain else None
        k = self._last_uncertain = classifier.next_uncertain(p, decided, current)
        if k is None:
            self.window.show_status("Every ROI of this movie has a decision: nothing uncertain is left.", 8000)
            return
        self.select([k])
        self.fov.center_on(*r.centers[k], span=8 * r.params.get("neuron_diameter", 10.0))  # the cell and its neighbours
        self.window.show_status(f"ROI #{k}: P(cell) {p[k]:.2f}, the least sure of {int((~decided).sum())} undecided ROIs "
                                "— A accept, R reject, N the next.", 10000)

    def load_classifier(self, path: str | Path | None = None) -> None:
        """Add the decisions of a classifier file to the user's (where both decided an ROI, the user's win)."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load a classifier", str(Path.home()), "ROI classifier (*.npz)")
            if not path:
                return
        try:
            other = classifier.import_decisions(path)
        except InputError as exc:
            show_error(self, "Cannot use this classifier file", str(exc), getattr(exc, "details", None))
            return
        before = len(self._decisions())
        self._store(self._decisions().merged(other))
        self.window.show_status(f"Added {len(self.decisions) - before} decisions from {Path(path).name}. {self.decisions.status()}", 10000)
        self._score()

    def save_classifier(self, path: str | Path | None = None) -> Path | None:
        """Write the user's decisions to a file of their choice (to share, back up, or `neurowb cnmf --classifier`)."""
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save the classifier", str(Path.home() / classifier.STORE_NAME),
                                                  "ROI classifier (*.npz)")
            if not path:
                return None
        path = Path(path).with_suffix(".npz")
        try:
            self._decisions().save(path)
        except OSError as exc:
            show_error(self, "Could not save the classifier", f"Writing {path} failed: {exc}")
            return None
        self.window.show_status(f"Saved {len(self.decisions)} decisions to {path}.", 10000)
        return path

    # -- export -----------------------------------------------------------------------------
    def export(self, directory: str | Path | None = None) -> Job | None:
        if self.curation is None:
            return None
        if directory is None:
            start = str(workdir_for(self.current_path) / "suite2p")
            directory = QFileDialog.getExistingDirectory(self, "Export a Suite2p folder", start)
            if not directory:
                return None
        directory = Path(directory)
        return self.window.run_job(f"Export Suite2p to {directory.name}", curation.export_job, self.curation.result, directory,
                                   self.current_path,
                                   on_result=lambda out: self.window.show_status(f"Exported the ROIs to {out}", 10000))

    def export_nwb(self, path: str | Path | None = None) -> Job | None:
        if self.curation is None:
            return None
        path = Path(path) if path else ask_nwb_path(self, "Export an NWB file", workdir_for(self.current_path) / f"{self.current_path.stem}.nwb")
        if path is None:
            return None
        metadata = ask_nwb_metadata(self, self.window.settings, self.current_path.parent)
        if metadata is None:
            return None
        return self.window.run_job(f"Export NWB {path.name}", curation.export_nwb_job, self.curation.result, path,
                                   self.current_path, metadata,
                                   on_result=lambda out: self.window.show_status(f"Exported the ROIs to {out}", 10000))

    # -- pixel traces (before CNMF) ---------------------------------------------------------
    def show_trace_at(self, row: int, col: int) -> Job | None:
        """Extract the mean trace of a small disk around the clicked pixel (a job: it reads every frame)."""
        if self.movie is None:
            return None
        self.fov.marker.setData([col + 0.5], [row + 0.5])
        fps = self.movie.fps or 1.0

        def show(trace: np.ndarray) -> None:
            self.traces.show_pixel_trace(trace, fps, f"Pixel (row {row}, column {col}), radius {TRACE_RADIUS} px")

        return self.window.run_job(f"Trace at ({row}, {col})", region_trace, self.movie, row, col, TRACE_RADIUS, on_result=show)

    # -- demo ---------------------------------------------------------------------------------
    def demo_steps(self) -> list:
        """Run CNMF on the demo movie, pick its best ROI, then watch the model at that ROI's peak."""
        def best_roi() -> None:
            r = self.curation.result
            snr = np.where(r.accepted, r.metrics["snr"], -np.inf)
            self.image_kind.setCurrentText("Correlation")
            self.select([int(np.argmax(snr))])

        def denoised() -> None:
            k = self.selected[0]
            self.source.setCurrentText(MOVIE_SOURCES[1])
            self.image_kind.setCurrentText("Frame")
            self.frame_slider.setValue(int(np.argmax(self.curation.result.C[k])))
            self.redraw(reset_levels=True)

        return [("cnmf", self.run_cnmf), ("roi", best_roi), ("denoised", denoised)]
