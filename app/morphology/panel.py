"""Morphology workspace: meshes in 3D, heat kernel signatures, spine labels painted by hand,
and a random-forest spine classifier retrained from those labels (pseudo-active learning).

The loop: open mesh → Compute HKS (job) → paint shaft/spine labels with the brush → Train
(job) → P(spine) painted on the mesh → Next uncertain region (N) → correct it → Train again.
Hand labels are autosaved after every stroke (engine.mesh.labels). A point table (e.g. synapse
centres) can be loaded and is drawn coloured by the class of each point's nearest vertex.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QKeySequence
from PyQt6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QLabel,
    QListWidget,
    QPushButton,
    QSizePolicy,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.dialogs import show_error
from app.jobs import Job
from app.morphology.session import MorphologySession
from app.session import from_session
from app.widgets.colorbar import ColorBar
from app.widgets.colormaps import lut
from app.widgets.mesh_view import MeshView
from app.workspace import InfoBox, Workspace
from engine.mesh import active, spines
from engine.mesh.entries import (MeshEntry, apply_model, evaluate_entries, hks_job, labels_snapshot, locate_points,
                                  open_mesh_entry, train_on_entries)
from engine.mesh.hks import HKSResult
from engine.errors import InputError
from engine.mesh.io import HDF5_EXTENSIONS, MESH_EXTENSIONS, is_hdf5_mesh
from engine.mesh.labels import UNLABELLED

# Brush tools: (name, label code, key). Codes follow engine.mesh.spines (0 shaft, 1 spine, 2 soma).
TOOLS = (("View", None, "V"), ("Shaft", 0, "1"), ("Spine", 1, "2"), ("Soma", 2, "3"), ("Erase", UNLABELLED, "E"))
LABEL_COLORS = {UNLABELLED: (0.80, 0.81, 0.84, 1.0), 0: (0.23, 0.45, 0.85, 1.0), 1: (0.90, 0.30, 0.20, 1.0),
                2: (0.55, 0.35, 0.75, 1.0)}
RANGE_MODES = ("1–99 %", "min–max", "manual")
COLOR_MODES = ("Surface", "HKS", "Hand labels", "File labels", "P(spine)", "Uncertainty")
UNCLASSIFIED_POINT = (0.15, 0.15, 0.15, 1.0)  # a point shown before any model has classified its mesh
REGION_TINT = (1.0, 0.84, 0.0, 0.6)  # the uncertain region N visits: yellow, mixed over the coloring
REGION_VIEW = 3.0  # N frames the region at this many times its extent (the region fills about a third of the view)
# Units of a mesh file, as the CLI's --scale and --units: choice → (scale, units after it; None: guessed)
UNIT_CHOICES = {"Guess from extent": (1.0, None), "nm": (1.0, "nm"), "µm": (1.0, "um"), "8 nm voxels": (8.0, "nm"),
                "Scale ×": (None, None)}


class MorphologyWorkspace(Workspace):
    key = "morphology"
    title = "Morphology"
    icon_name = "morphology"
    extensions = MESH_EXTENSIONS

    def __init__(self, window):
        super().__init__(window)
        # the meshes, the current one, its labels, the classifier, the training, the region N framed: held there once
        self.session = MorphologySession(self)
        self.tool_code: int | None = None  # the brush (None: navigate)
        self.report = None  # the last evaluation dialog

        self.meshes = QListWidget()
        self.meshes.setMaximumHeight(66)
        self.meshes.currentRowChanged.connect(self.session.select)
        meshes_box = QGroupBox("Meshes")
        meshes_layout = QVBoxLayout(meshes_box)
        meshes_layout.addWidget(self.meshes)
        self.units = QComboBox()
        self.units.addItems(UNIT_CHOICES)
        self.units.setToolTip("Units of the file's coordinates (most formats do not say; the guess reads the extent). "
                              "The hemibrain is in 8 nm voxels; “Scale ×” multiplies the coordinates by any factor first, "
                              "as the CLI's --scale. Remembered for each file; the mesh is read again.")
        self.scale = QDoubleSpinBox(minimum=1e-6, maximum=1e6, value=1.0, decimals=4)
        self.scale.setToolTip("Multiply the coordinates by this, then guess their units from the extent")
        self.scale.setVisible(False)
        units_row = QGridLayout()
        units_row.addWidget(QLabel("Units:"), 0, 0)
        units_row.addWidget(self.units, 0, 1)
        units_row.addWidget(self.scale, 0, 2)
        units_row.setColumnStretch(1, 1)
        for widget in (self.units, self.scale):
            widget.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        meshes_layout.addLayout(units_row)
        self.units.activated.connect(lambda _i: self._units_picked())
        self.scale.editingFinished.connect(self._units_changed)

        self.info = InfoBox("Mesh", [("file", "File"), ("units", "Units"), ("n_vertices", "Vertices"), ("n_faces", "Faces"),
                                     ("n_components", "Components"), ("surface_area", "Surface area")])

        hks_box = QGroupBox("Heat kernel signature")
        hks_form = QFormLayout(hks_box)
        self.hks_method = QComboBox()
        self.hks_method.addItems(["auto", "exact", "chunked", "chebyshev"])
        self.hks_method.setToolTip("HKS method: auto chooses by mesh size; exact (one eigensolve), chunked (band by "
                                   "band, overlapping chunks) or chebyshev (polynomial heat kernel, no eigenvectors)")
        self.compute_button = QPushButton("Compute HKS", objectName="Primary")
        self.compute_button.clicked.connect(self.compute_hks)
        self.timescale = QSlider(Qt.Orientation.Horizontal)
        self.timescale.setEnabled(False)
        self.timescale.valueChanged.connect(self._timescale_changed)
        self.timescale_label = QLabel("t = —")
        compute_row = QGridLayout()  # compact rows: Train must stay in view at the default window size
        compute_row.addWidget(self.hks_method, 0, 0)
        compute_row.addWidget(self.compute_button, 0, 1)
        compute_row.setColumnStretch(0, 1)
        compute_row.setColumnStretch(1, 2)
        timescale_row = QGridLayout()
        timescale_row.addWidget(self.timescale, 0, 0)
        timescale_row.addWidget(self.timescale_label, 0, 1)
        timescale_row.setColumnStretch(0, 1)
        timescale_row.setColumnStretch(1, 1)
        for widget in (self.hks_method, self.compute_button, self.timescale, self.timescale_label):
            widget.setSizePolicy(QSizePolicy.Policy.Ignored, widget.sizePolicy().verticalPolicy())  # share the width
        hks_form.addRow(compute_row)  # the whole width, no label: the button's text must fit
        hks_form.addRow("Timescale:", timescale_row)

        display = QGroupBox("Display")
        display_form = QFormLayout(display)
        self.color_by = QComboBox()
        self.color_by.addItems(COLOR_MODES)
        self.color_by.currentTextChanged.connect(self.recolor)
        self.cmap = QComboBox()
        self.cmap.addItems(["viridis", "hot", "grays", "coolwarm"])
        self.cmap.currentTextChanged.connect(self.recolor)
        self.range_mode = QComboBox()
        self.range_mode.addItems(RANGE_MODES)
        self.range_mode.setToolTip("Color range of HKS: 1st–99th percentile, full min–max, or typed limits "
                                   "(kept while the timescale moves, to compare timescales)")
        self.range_mode.currentTextChanged.connect(self._range_mode_changed)
        self.range_min = QDoubleSpinBox(minimum=-1e6, maximum=1e6, decimals=3, singleStep=0.1)
        self.range_max = QDoubleSpinBox(minimum=-1e6, maximum=1e6, decimals=3, singleStep=0.1)
        self.range_limits = QWidget()  # shown in manual mode only
        range_row = QGridLayout(self.range_limits)
        range_row.setContentsMargins(0, 0, 0, 0)
        range_row.addWidget(self.range_min, 0, 0)
        range_row.addWidget(QLabel("to"), 0, 1)
        range_row.addWidget(self.range_max, 0, 2)
        for box in (self.range_min, self.range_max):
            box.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)  # share the column's width
            box.valueChanged.connect(self.recolor)
        self.range_limits.setVisible(False)
        self.colorbar = ColorBar()
        self.colorbar.setVisible(False)
        reset = QPushButton("Reset view")
        reset.clicked.connect(lambda: self.view.reset_view())
        display_form.addRow("Color by:", self.color_by)
        colormap_row = QGridLayout()
        colormap_row.addWidget(self.cmap, 0, 0)
        colormap_row.addWidget(self.range_mode, 0, 1)
        for widget in (self.cmap, self.range_mode):
            widget.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)  # share the column's width
        display_form.addRow("Colormap:", colormap_row)
        display_form.addRow("", self.range_limits)
        display_form.addRow(self.colorbar)
        self.labels_on_top = QCheckBox("Hand labels on top")
        self.labels_on_top.setChecked(True)
        self.labels_on_top.setToolTip("Draw the painted labels over any coloring (P(spine), uncertainty, HKS…), so a "
                                      "correction shows where it was made")
        self.labels_on_top.toggled.connect(lambda _on: self.recolor())
        reset.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        overlay_row = QGridLayout()
        overlay_row.addWidget(self.labels_on_top, 0, 0)
        overlay_row.addWidget(reset, 0, 1)
        display_form.addRow(overlay_row)

        labels_box = QGroupBox("Labels")
        labels_layout = QVBoxLayout(labels_box)
        tools = QGridLayout()
        self.tool_buttons = QButtonGroup(self)
        for i, (name, code, key) in enumerate(TOOLS):
            button = QToolButton()
            button.setText(f"{name} ({key})")
            button.setCheckable(True)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            button.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)  # share the column's width
            button.setToolTip("Rotate, pan and zoom without painting" if code is None else f"Paint {name.lower()} labels")
            self.tool_buttons.addButton(button, i)
            tools.addWidget(button, i // 3, i % 3)
            self.registry.add(f"{name} brush" if code is not None and code >= 0 else name,
                              lambda i=i: self.select_tool(i), key, group="Labels")
        self.registry.add("Back to view", lambda: self.select_tool(0), "Esc", group="Labels", hint=False)
        self.tool_buttons.idClicked.connect(self.select_tool)
        self.tool_buttons.button(0).setChecked(True)
        labels_layout.addLayout(tools)
        brush_form = QFormLayout()
        self.brush = QDoubleSpinBox(minimum=0.0, maximum=1e9, value=0.3, decimals=3, singleStep=0.05)
        self.brush.setToolTip("Brush radius, geodesic, in mesh units ([ and ] change it)")
        brush_form.addRow("Brush radius:", self.brush)
        labels_layout.addLayout(brush_form)
        self.registry.add("Smaller brush", lambda: self.brush.setValue(self.brush.value() / 1.25), "[", group="Labels")
        self.registry.add("Larger brush", lambda: self.brush.setValue(self.brush.value() * 1.25), "]", group="Labels")
        self.counts = QLabel("—")
        self.counts.setWordWrap(True)
        labels_layout.addWidget(self.counts)
        undo_row = QGridLayout()
        self.undo_button = QPushButton("Undo")
        self.redo_button = QPushButton("Redo")
        self.import_button = QPushButton("Use file labels")
        self.import_button.setToolTip("Copy the labels found beside the mesh file into the hand labels (one undo step)")
        self.registry.add("Undo", self.undo, QKeySequence.StandardKey.Undo, group="Labels", hint=False,
                          enabled=lambda: self.session.can_undo)
        self.registry.add("Redo", self.redo, "Ctrl+Shift+Z", group="Labels", hint=False,
                          enabled=lambda: self.session.can_redo)
        self.registry.bind("Undo", self.undo_button)
        self.registry.bind("Redo", self.redo_button)
        self.import_button.clicked.connect(self.import_file_labels)
        for button in (self.undo_button, self.redo_button, self.import_button):
            button.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        undo_row.addWidget(self.undo_button, 0, 0)
        undo_row.addWidget(self.redo_button, 0, 1)
        undo_row.addWidget(self.import_button, 0, 2, 1, 2)
        labels_layout.addLayout(undo_row)

        classifier = QGroupBox("Spine classifier")
        classifier_layout = QVBoxLayout(classifier)
        self.feature_kind = QComboBox()
        self.feature_kind.addItems(spines.FEATURE_KINDS)
        self.feature_kind.setCurrentText(spines.DEFAULT_KIND)
        self.feature_kind.setToolTip("Features of the classifier: log-HKS (hks) or scale-invariant HKS (sihks), with "
                                     "neighbourhood smoothing, curvature and protrusion (shape). The default is the best "
                                     "measured on real dendrites; sihks alone ignores the mesh's scale.")
        self.feature_kind.currentTextChanged.connect(self._feature_kind_changed)
        kind_form = QFormLayout()
        kind_form.addRow("Features:", self.feature_kind)
        classifier_layout.addLayout(kind_form)
        self.registry.add("Train", self.train, "T", group="Spine classifier",
                          enabled=lambda: not self.session.training and any(e.hks is not None for e in self.entries),
                          help="Fit the classifier on the hand labels as they are now (painting may go on meanwhile)")
        self.registry.add("Next uncertain region", self.next_uncertain_region, "N", group="Spine classifier",
                          enabled=lambda: self.entry is not None and self.entry.proba is not None,
                          help="Frame the most uncertain unlabelled region, then the next one")
        self.registry.add("Rotate", None, "drag", group="View", help="Shift-drag pans, the wheel zooms", hint=False)
        self.train_button = self.registry.bind("Train", QPushButton("Train (T)", objectName="Primary"))
        self.next_button = self.registry.bind("Next uncertain region", QPushButton("Next uncertain region (N)"))
        self.apply_button = QPushButton("Apply to all")
        self.apply_button.setToolTip("Paint P(spine) on every open mesh (computes missing HKS)")
        self.apply_button.clicked.connect(self.apply_to_all)
        self.evaluate_button = QPushButton("Evaluate…")
        self.evaluate_button.setToolTip("Leave-one-mesh-out over the labelled meshes (hand labels, else file labels); "
                                        "a halves split when only one mesh has labels")
        self.evaluate_button.clicked.connect(self.evaluate)
        self.save_model_button = QPushButton("Save model…")
        self.save_model_button.clicked.connect(self.save_model)
        self.load_model_button = QPushButton("Load model…")
        self.load_model_button.clicked.connect(self.load_model)
        self.load_points_button = QPushButton("Load points…")
        self.load_points_button.setToolTip("Show a table of points (e.g. synapse centres: CSV with x, y, z columns, or a "
                                           "k × 3 .npy, in the mesh's units) coloured by the class of the nearest vertex")
        self.load_points_button.clicked.connect(self.load_points)
        self.points_status = QLabel("")
        self.points_status.setWordWrap(True)
        self.model_status = QLabel("No model yet.")
        self.model_status.setWordWrap(True)
        model_row = QGridLayout()
        for button in (self.apply_button, self.evaluate_button, self.save_model_button, self.load_model_button):
            button.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)  # share the column's width
        model_row.addWidget(self.train_button, 0, 0, 1, 2)
        model_row.addWidget(self.next_button, 1, 0, 1, 2)
        model_row.addWidget(self.apply_button, 2, 0)
        model_row.addWidget(self.evaluate_button, 2, 1)
        model_row.addWidget(self.save_model_button, 3, 0)
        model_row.addWidget(self.load_model_button, 3, 1)
        model_row.addWidget(self.load_points_button, 4, 0, 1, 2)
        classifier_layout.addLayout(model_row)
        classifier_layout.addWidget(self.model_status)
        classifier_layout.addWidget(self.points_status)

        self.view = MeshView()
        self.view.stroke_started.connect(self._stroke_started)
        self.view.stroke_moved.connect(self._stroke_moved)
        session = self.session  # the views follow it
        session.entries_changed.connect(self._list_entries)
        session.entry_changed.connect(self._show_entry)
        session.labels_changed.connect(self._labels_changed)
        session.hks_changed.connect(self._setup_timescale)
        session.points_changed.connect(self._show_points)
        for changed in (session.model_changed, session.busy_changed):
            changed.connect(self._refresh_controls)
        # the loop's controls first, the mesh's numbers last: Train is in view at the default window size
        self.assemble([meshes_box, hks_box, display, labels_box, classifier, self.info], self.view, "No mesh open",
                      "Open a neuron surface mesh (PLY, OBJ, OFF, STL, GLB, MeshParty HDF5) to view it in 3D.\n"
                      "Drag to rotate, scroll to zoom, Shift-drag to pan.", "Open mesh…")
        self._refresh_controls()

    # -- opening -------------------------------------------------------------------------
    def can_open(self, path: Path) -> bool:
        if path.suffix.lower() in HDF5_EXTENSIONS:  # also a movie type: look inside
            return is_hdf5_mesh(path)
        return super().can_open(path)

    def open_file(self, path: Path) -> Job:
        scale, units = self._units_of(path)
        return self.window.run_job(f"Open {path.name}", open_mesh_entry, path, self.feature_kind.currentText(), scale, units,
                                   on_result=self.session.add_entry)

    def _units_of(self, path: Path) -> tuple[float, str | None]:
        """(scale, units) remembered for ``path`` (the guess when none or unreadable)."""
        stored = self.window.settings.remembered("mesh_units", path) or {}
        scale, units = stored.get("scale", 1.0), stored.get("units")
        if not isinstance(scale, (int, float)) or not scale > 0 or units not in (None, "nm", "um"):
            return 1.0, None
        return float(scale), units

    def _units_picked(self) -> None:
        if self.units.currentText() == "Scale ×":  # the factor is typed next: read the mesh once it is
            self.scale.setVisible(True)
            self.scale.setFocus()
            self.scale.selectAll()
        else:
            self._units_changed()

    def _units_changed(self) -> None:
        """A units choice for the shown mesh: remembered for its file, and the mesh read again in those units."""
        choice = self.units.currentText()
        self.scale.setVisible(choice == "Scale ×")
        entry = self.entry
        if entry is None:
            return
        scale, units = UNIT_CHOICES[choice]
        scale = self.scale.value() if scale is None else scale
        if (scale, units) == self._units_of(entry.path) and entry.scale == scale:
            return
        self.window.settings.remember("mesh_units", entry.path, {"scale": scale, "units": units})
        self.open_file(entry.path)

    def _show_units(self, entry: MeshEntry) -> None:
        """The units control as ``entry`` was opened."""
        scale, units = self._units_of(entry.path)
        choice = next((k for k, v in UNIT_CHOICES.items() if v == (scale, units)), "Scale ×")
        for widget in (self.units, self.scale):
            widget.blockSignals(True)
        self.units.setCurrentText(choice)
        self.scale.setValue(scale)
        self.scale.setVisible(choice == "Scale ×")
        for widget in (self.units, self.scale):
            widget.blockSignals(False)

    def _list_entries(self) -> None:
        """The mesh list names the session's meshes (one opened again keeps its row)."""
        self.meshes.blockSignals(True)
        for i, entry in enumerate(self.entries):
            if i < self.meshes.count():
                self.meshes.item(i).setText(entry.path.name)
            else:
                self.meshes.addItem(entry.path.name)
        self.meshes.blockSignals(False)

    def _show_entry(self) -> None:
        """The session's current mesh: its row, brush size, numbers, units, surface, coloring and points."""
        entry = self.entry
        self.meshes.blockSignals(True)
        self.meshes.setCurrentRow(self.session.row)
        self.meshes.blockSignals(False)
        diagonal = float(np.linalg.norm(entry.mesh.vertices.max(axis=0) - entry.mesh.vertices.min(axis=0)))
        self.brush.setValue(round(diagonal * 0.01, 6))
        units = entry.summary.get("units", entry.mesh.units)
        self.info.update_values({**entry.summary, "file": entry.path.name,
                                 "units": f"{units} (×{entry.scale:g})" if entry.scale != 1 else units})
        self._show_units(entry)
        self.view.set_mesh(entry.mesh.vertices, entry.mesh.faces, entry.picker, entry.surface)  # no ring, no highlight
        mode = "P(spine)" if entry.proba is not None else "HKS" if entry.hks is not None else \
            "File labels" if entry.file_labels is not None else "Hand labels"
        self._setup_timescale()
        self.color_by.setCurrentText(mode)
        self.recolor()
        self._show_points()
        self._refresh_controls()
        self.loaded(entry.path)

    # -- HKS -----------------------------------------------------------------------------
    def compute_hks(self) -> Job | None:
        entry = self.entry
        if entry is None:
            return None
        self.compute_button.setEnabled(False)

        def done(out: tuple[HKSResult, np.ndarray]) -> None:
            result, log = out
            self.session.set_hks(entry, result, log)  # the slider follows (hks_changed)
            if entry is self.entry:
                self.color_by.setCurrentText("HKS")
                self.recolor()
            self.window.show_status(f"HKS of {entry.path.name}: {result.hks.shape[1]} timescales by {result.method} "
                                    f"in {result.info.get('seconds', 0):.1f} s")

        job = self.window.run_job(f"HKS of {entry.path.name}", hks_job, entry, self.hks_method.currentText(),
                                  on_result=done)
        job.ended.connect(lambda _: self._refresh_controls())
        return job

    def _setup_timescale(self) -> None:
        hks = self.entry.hks if self.entry else None
        self.timescale.setEnabled(hks is not None)
        if hks is not None:
            self.timescale.blockSignals(True)
            self.timescale.setRange(0, len(hks.timescales) - 1)
            self.timescale.setValue(len(hks.timescales) // 2)
            self.timescale.blockSignals(False)
            self._log_hks = self.session.log_hks()  # (the HKS job brought it)
        self._update_timescale_label()

    def _update_timescale_label(self) -> None:
        hks = self.entry.hks if self.entry else None
        if hks is None:
            self.timescale_label.setText("t = —")
        else:
            units = {"nm": " nm²", "um": " µm²"}.get(self.entry.mesh.units, "")
            self.timescale_label.setText(f"t = {hks.timescales[self.timescale.value()]:.3g}{units}")

    def _timescale_changed(self) -> None:
        self._update_timescale_label()
        if self.color_by.currentText() == "HKS":
            self.recolor()

    # -- coloring ------------------------------------------------------------------------
    def recolor(self) -> None:
        """Colors only: never recomputes (the HKS slider must stay fast on big meshes)."""
        entry = self.entry
        if entry is None:
            return
        mode = self.color_by.currentText()
        self.view.set_overlay(self._overlay(mode), compose=False)  # drawn by the coloring below
        self.cmap.setEnabled(mode == "HKS")  # the other modes have fixed, meaningful colormaps and ranges
        self.range_mode.setEnabled(mode == "HKS")
        table = title = None
        lo, hi = 0.0, 1.0
        if mode == "HKS" and entry.hks is not None:
            cmap = self.cmap.currentText()
            values = self._log_hks[:, self.timescale.value()]
            lo, hi = self.view.set_scalar(values, cmap, self._hks_range(values))
            table, title = lut(cmap), "log HKS"
        elif mode == "Hand labels":
            self._paint_labels(entry.editor.labels)
        elif mode == "File labels" and entry.file_labels is not None:
            self._paint_labels(entry.file_labels)
        elif mode == "P(spine)" and entry.proba is not None:
            self.view.set_scalar(self._spine_probability(entry), "coolwarm", (0.0, 1.0))
            table, title = lut("coolwarm"), "P(spine)"
        elif mode == "Uncertainty" and entry.proba is not None:
            lo, hi = self.view.set_scalar(active.uncertainty(entry.proba), "reds", (0.0, 1.0))
            table, title = lut("reds"), "uncertainty (normalised entropy)"
        else:
            self.view.set_scalar(None)
        self.colorbar.set_colormap(table, lo, hi, title or "")

    def _overlay(self, mode: str | None = None) -> np.ndarray | None:
        """What is drawn over the coloring: the uncertain region N framed (tinted), and the hand labels on top."""
        entry = self.entry
        mode = mode or self.color_by.currentText()
        labels = entry.editor.labels
        painted = self.labels_on_top.isChecked() and mode != "Hand labels" and (labels >= 0).any()
        region = self.session.region
        if not painted and region is None:
            return None
        overlay = np.zeros((len(labels), 4), dtype=np.float32)
        if region is not None:
            overlay[region] = REGION_TINT
        if painted:
            table = np.array([LABEL_COLORS[0], LABEL_COLORS[1], LABEL_COLORS[2]], dtype=np.float32)
            done = np.flatnonzero(labels >= 0)
            overlay[done] = table[labels[done].astype(np.int64)]
        return overlay

    def _hks_range(self, values: np.ndarray) -> tuple[float, float] | None:
        """The color limits the Range control asks for (None: the view's 1–99 % percentiles)."""
        mode = self.range_mode.currentText()
        if mode == "min–max":
            return float(np.nanmin(values)), float(np.nanmax(values))
        if mode == "manual":
            return self.range_min.value(), self.range_max.value()
        return None

    def _range_mode_changed(self, mode: str) -> None:
        manual = mode == "manual"
        if manual:  # start from the limits on screen
            lo, hi = self.colorbar.lo, self.colorbar.hi
            for box, value in ((self.range_min, lo), (self.range_max, hi)):
                box.blockSignals(True)
                box.setValue(value)
                box.blockSignals(False)
        self.range_limits.setVisible(manual)
        self.recolor()

    def _spine_probability(self, entry: MeshEntry) -> np.ndarray:
        return self.session.spine_probability(entry)

    def _paint_labels(self, labels: np.ndarray) -> None:
        table = np.array([LABEL_COLORS[UNLABELLED], LABEL_COLORS[0], LABEL_COLORS[1], LABEL_COLORS[2]], dtype=np.float32)
        self.view.set_vertex_colors(table[labels.astype(np.int64) + 1])

    # -- labeling ------------------------------------------------------------------------
    def select_tool(self, index: int) -> None:
        name, code, _ = TOOLS[index]
        self.tool_buttons.button(index).setChecked(True)
        self.tool_code = code
        self.view.set_paint_mode(code is not None)
        if code is not None and self.color_by.currentText() not in ("Hand labels", "P(spine)", "Uncertainty"):
            self.color_by.setCurrentText("Hand labels")

    # the session says every change of the labels (labels_changed): the coloring follows
    def _stroke_started(self, vertex: int) -> None:
        if self.entry is not None and self.tool_code is not None:
            self.session.paint(vertex, self.brush.value(), self.tool_code)

    def _stroke_moved(self, vertex: int) -> None:
        if self.entry is not None and self.tool_code is not None:
            self.session.extend_stroke(vertex, self.brush.value(), self.tool_code)

    def paint_at(self, vertex: int, code: int, radius: float | None = None) -> np.ndarray:
        """Programmatic stroke (as a click would do); returns the vertices labelled."""
        return self.session.paint(vertex, self.brush.value() if radius is None else radius, code)

    def undo(self) -> None:
        self.session.undo()

    def redo(self) -> None:
        self.session.redo()

    def import_file_labels(self) -> None:
        self.session.import_file_labels()

    def _labels_changed(self) -> None:
        if self.color_by.currentText() == "Hand labels":
            self._paint_labels(self.entry.editor.labels)
        else:  # the labels drawn over the coloring
            self.view.set_overlay(self._overlay())
        self._refresh_controls()

    # -- classifier ----------------------------------------------------------------------
    def train(self) -> Job | None:
        """Train on the hand labels as they are now: painting goes on while the job runs, on a copy."""
        if not self.entries or self.entry is None or self.session.training:
            return None

        def done(result: dict) -> None:
            self.session.take_training(result)
            message = self._training_summary(result)
            self.model_status.setText(message + " Press N to visit the most uncertain unlabelled region.")
            self.window.show_status(message, 15000)
            self.color_by.setCurrentText("P(spine)")
            self.recolor()
            self._show_points()

        entries = list(self.entries)
        return self.session.set_train_job(self.window.run_job(  # Train waits until it ends (busy_changed)
            "Train spine classifier", train_on_entries, entries, labels_snapshot(entries), self.entry.spec, self.model,
            on_result=done))

    def _training_summary(self, result: dict) -> str:
        """What training learned from and what it now predicts; where the file has labels, the accuracy of the
        prediction on the vertices not painted by hand (labels the model never saw)."""
        n = result["counts"]
        names = {0: "shaft", 1: "spine", 2: "soma"}
        learned = ", ".join(f"{names.get(c, c)} {k:,}" for c, k in sorted(n.items()))
        text = f"Trained on {result['n_labelled']:,} labelled vertices ({learned})."
        entry = self.entry
        proba = result["probas"].get(id(entry)) if entry is not None else None
        if proba is not None:
            predicted = np.asarray(self.model.classes_)[np.argmax(proba, axis=1)]
            text += f" This mesh: {np.mean(predicted == 1):.0%} of vertices predicted spine"
            truth = entry.file_labels
            unseen = np.flatnonzero((entry.editor.labels < 0) & (truth >= 0)) if truth is not None else np.zeros(0, int)
            if len(unseen):
                text += (f"; {np.mean(predicted[unseen] == truth[unseen]):.1%} agree with the file labels on the "
                         f"{len(unseen):,} vertices not painted")
            text += "."
        return text

    def apply_to_all(self) -> Job | None:
        if self.model is None or not self.entries:
            self.window.show_status("Train or load a model first, then apply it to every open mesh.")
            return None
        model, entries = self.model, list(self.entries)

        def done(result: dict) -> None:
            self.session.take_hks(result["hks"])
            self.session.take_predictions(entries, result["probas"])
            self.model_status.setText(f"Model applied to {len(entries)} mesh{'es' if len(entries) != 1 else ''}.")
            self.color_by.setCurrentText("P(spine)")
            self.recolor()
            self._show_points()

        job = self.window.run_job("Apply spine model to all meshes", apply_model, entries, model,
                                  self.hks_method.currentText(), on_result=done)
        job.ended.connect(lambda _: self._refresh_controls())
        return job

    def evaluate(self) -> Job | None:
        if not self.entries:
            return None
        entries = list(self.entries)

        def done(result: dict) -> None:
            from app.morphology.report import EvaluationDialog

            self.session.take_hks(result["hks"])
            self.report = EvaluationDialog(result["evaluation"], f"Features: {result['spec'].describe()}.", self)
            self.report.show()

        job = self.window.run_job("Evaluate spine classifier", evaluate_entries, entries,
                                  labels_snapshot(entries, file_fallback=True), self.hks_method.currentText(), on_result=done)
        job.ended.connect(lambda _: self._refresh_controls())
        return job

    def save_model(self) -> None:
        if self.model is None:
            return
        start = str(self.entry.path.with_name("spines.nwbspine")) if self.entry else "spines.nwbspine"
        path, _ = QFileDialog.getSaveFileName(self, "Save spine model", start, "Spine models (*.nwbspine)")
        if path:
            self.model.save(path, info={"meshes": [e.path.name for e in self.entries]})
            self.window.show_status(f"Saved the spine model to {path}")

    def load_model(self) -> None:
        start = str(self.entry.path.parent) if self.entry else ""
        path, _ = QFileDialog.getOpenFileName(self, "Load spine model", start, "Spine models (*.nwbspine);;All files (*)")
        if path:
            self.use_model_file(Path(path))

    def use_model_file(self, path: Path) -> bool:
        """Load a saved model (a bad file shows why); it is applied with “Apply to all”."""
        try:
            model = spines.SpineClassifier.load(path)
            if model.feature_spec_ is None:
                raise InputError(f"'{path.name}' does not say which features it was trained on: retrain it.")
        except InputError as error:
            show_error(self, "Cannot use this model", str(error), error.details)
            return False
        self.session.set_model(model)
        self.model_status.setText(f"Loaded {path.name} ({model.feature_spec_.describe()}). Press “Apply to all”.")
        return True

    def _feature_kind_changed(self, kind: str) -> None:
        """Every open mesh's features become ``kind``'s defaults; an HKS at other timescales is dropped."""
        dropped = self.session.set_feature_kind(kind)  # the slider follows (hks_changed)
        if self.entry is not None:
            self.recolor()
        self._refresh_controls()
        self.window.show_status(f"Features: {kind}" + (f"; compute the HKS again ({dropped} mesh{'es' if dropped != 1 else ''} "
                                                       "need other timescales)" if dropped else ""))

    # -- points (synapses) ----------------------------------------------------------------
    def load_points(self) -> Job | None:
        if self.entry is None:
            return None
        path, _ = QFileDialog.getOpenFileName(self, "Load points", str(self.entry.path.parent),
                                              "Point tables (*.csv *.txt *.npy);;All files (*)")
        return self.load_points_file(Path(path)) if path else None

    def load_points_file(self, path: Path) -> Job | None:
        """Read a point table for the current mesh in a job; the points are drawn when it ends."""
        entry = self.entry
        if entry is None:
            return None

        def done(result: dict) -> None:
            self.session.set_points(entry, result)  # drawn if still shown (points_changed)

        return self.window.run_job(f"Points {Path(path).name}", locate_points, entry, Path(path), on_result=done)

    def point_predictions(self, entry: MeshEntry | None = None) -> spines.PointPredictions | None:
        """The class of each loaded point from its mesh's posterior (None without points or a posterior)."""
        return self.session.point_predictions(entry)

    def _show_points(self) -> None:
        entry = self.entry
        if entry is None or entry.points is None:
            self.view.set_points(None)
            self.points_status.setText("")
            return
        p = entry.points
        n, name = len(p["points"]), p["path"].name
        units = {"nm": " nm", "um": " µm"}.get(entry.mesh.units, "")
        where = f"nearest vertex at median {np.median(p['distance']):.3g}{units}"
        result = self.point_predictions(entry)
        if result is None:
            self.view.set_points(p["points"], np.tile(UNCLASSIFIED_POINT, (n, 1)))
            self.points_status.setText(f"{n:,} points from {name} ({where}); train or apply a model to classify them.")
            return
        self.view.set_points(p["points"], np.array([LABEL_COLORS[c] for c in result.predicted], dtype=np.float32))
        counts = " · ".join(f"{cls} {count:,}" for cls, count in result.counts().items())
        self.points_status.setText(f"{n:,} points from {name}: {counts} ({where}).")

    def next_uncertain_region(self) -> None:
        entry = self.entry
        if entry is None or entry.proba is None:
            self.window.show_status("Train the classifier first: uncertain regions come from its posterior.")
            return
        region = self.session.next_uncertain_region()
        if region is None:
            self.window.show_status("No uncertain unlabelled region left.")
            return
        extent = np.ptp(entry.mesh.vertices[region.vertices], axis=0).max() if len(region.vertices) > 1 else self.brush.value()
        self.view.focus_on(region.center, max(extent * REGION_VIEW, self.brush.value() * 4))
        if self.color_by.currentText() not in ("P(spine)", "Uncertainty", "Hand labels"):
            self.color_by.setCurrentText("P(spine)")
        self.recolor()  # the region tinted over the coloring
        self.window.show_status(f"Uncertain region {self.session.region_index + 1} of {len(entry.regions)}: "
                                f"{len(region.vertices):,} vertices, score {region.score:.2f}")

    def demo_steps(self) -> list:
        """The loop on the demo dendrite: HKS → labels → posterior → the most uncertain region."""
        def labels() -> None:  # as if a person had labelled the first third of the dendrite
            entry = self.entry
            if entry.file_labels is None:
                return
            entry.editor.assign(np.arange(entry.mesh.n_vertices), UNLABELLED)  # the tour starts afresh (one undo step)
            along = entry.mesh.vertices[:, np.argmax(np.ptp(entry.mesh.vertices, axis=0))]
            first_third = along <= np.quantile(along, 1 / 3)
            for code in (0, 1):
                entry.editor.assign(np.flatnonzero(first_third & (entry.file_labels == code)), code)
            self.color_by.setCurrentText("Hand labels")

        def uncertain() -> None:
            self.next_uncertain_region()
            self.color_by.setCurrentText("Uncertainty")

        return [("hks", self.compute_hks), ("labels", labels), ("posterior", self.train), ("uncertain", uncertain)]

    # -- session state (read here, changed through self.session) ---------------------------
    entries = from_session()
    entry = from_session()  # the current mesh
    model = from_session()  # the spine classifier

    def _refresh_controls(self) -> None:
        entry = self.entry
        has = entry is not None
        self.compute_button.setEnabled(has)
        self.registry.refresh()  # Train, Next uncertain region, Undo, Redo
        self.apply_button.setEnabled(self.model is not None and has)
        self.evaluate_button.setEnabled(has)
        self.save_model_button.setEnabled(self.model is not None)
        self.load_points_button.setEnabled(has)
        self.import_button.setEnabled(has and entry.file_labels is not None)
        if has:
            counts = entry.editor.counts()
            self.counts.setText(f"shaft {counts[0]:,} · spine {counts[1]:,} · soma {counts[2]:,} · "
                                f"unlabelled {counts[UNLABELLED]:,}")
