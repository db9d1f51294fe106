"""Morphology workspace: meshes in 3D, heat kernel signatures, spine labels painted by hand,
and a random-forest spine classifier retrained from those labels (pseudo-active learning).

The loop: open mesh → Compute HKS (job) → paint shaft/spine labels with the brush → Train
(job) → P(spine) painted on the mesh → Next uncertain region (N) → correct it → Train again.
Hand labels are autosaved after every stroke (engine.mesh.labels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QKeySequence, QShortcut
from PyQt6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDoubleSpinBox,
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

from app.jobs import Job
from app.widgets.colorbar import ColorBar
from app.widgets.colormaps import lut
from app.widgets.mesh_view import MeshView
from app.workspace import InfoBox, Workspace
from engine.mesh import active, spines
from engine.mesh.hks import HKSResult, compute_hks, log_hks
from engine.errors import InputError
from engine.mesh.io import MESH_EXTENSIONS, Mesh, find_vertex_label_file, load_mesh, mesh_summary
from engine.mesh.labels import UNLABELLED, LabelEditor, vertices_within
from engine.mesh.picking import Picker

# Brush tools: (name, label code, key). Codes follow engine.mesh.spines (0 shaft, 1 spine, 2 soma).
TOOLS = (("Navigate", None, "V"), ("Shaft", 0, "1"), ("Spine", 1, "2"), ("Soma", 2, "3"), ("Erase", UNLABELLED, "E"))
LABEL_COLORS = {UNLABELLED: (0.80, 0.81, 0.84, 1.0), 0: (0.23, 0.45, 0.85, 1.0), 1: (0.90, 0.30, 0.20, 1.0),
                2: (0.55, 0.35, 0.75, 1.0)}
COLOR_MODES = ("Surface", "HKS", "Hand labels", "File labels", "P(spine)", "Uncertainty")


@dataclass
class MeshEntry:
    """One opened mesh and everything computed or drawn on it."""

    path: Path
    mesh: Mesh
    summary: dict
    file_labels: np.ndarray | None  # labels found beside the mesh, mapped to class codes
    editor: LabelEditor
    spec: spines.FeatureSpec  # how this mesh's HKS features are defined (its units' defaults)
    picker: Picker
    hks: HKSResult | None = None
    proba: np.ndarray | None = None  # (n_vertices, n_classes) from the classifier
    regions: list = field(default_factory=list)  # uncertain regions, most uncertain first


def open_mesh_entry(path: Path, progress=None) -> MeshEntry:
    """Job body: the mesh, its summary, labels found beside it, and the hand-label editor (restored)."""
    progress.report(0.1, "reading mesh")
    mesh = load_mesh(path)
    progress.check()
    progress.report(0.5, "inspecting components")
    summary = mesh_summary(mesh)
    progress.check()
    progress.report(0.7, "building the label brush graph")
    editor = LabelEditor.for_mesh(mesh.vertices, mesh.faces, LabelEditor.default_path(path))
    found = find_vertex_label_file(path, mesh.n_vertices)
    file_labels = None
    if found is not None:
        label_path, raw = found
        try:
            file_labels = spines.map_labels(raw, spines.guess_label_map(label_path, raw))
        except InputError:  # labels of an unknown convention: show the mesh without them
            file_labels = None
    progress.report(0.9, "preparing picking")
    return MeshEntry(path, mesh, summary, file_labels, editor, spines.FeatureSpec.default(mesh.units),
                     Picker(mesh.vertices, mesh.faces))


def compute_entry_hks(entry: MeshEntry, method: str, progress=None) -> HKSResult:
    """Job body: the HKS of a mesh at its feature spec's timescales."""
    return compute_hks(entry.mesh, timescales=np.asarray(entry.spec.timescales), max_eigenvalue=entry.spec.max_eigenvalue,
                       laplacian=entry.spec.laplacian, method=method, progress=progress)


def train_on_entries(entries: list[MeshEntry], current: MeshEntry, previous=None, progress=None) -> dict:
    """Job body: fit the spine classifier on the hand labels of every mesh with an HKS in the current
    mesh's units, then predict P(class) on each of them."""
    spec = current.spec
    usable = [e for e in entries if e.hks is not None and e.spec == spec]
    if not usable:
        raise InputError("Compute the HKS of this mesh first (Compute HKS): the classifier learns from HKS features.")
    fit_stage, predict_stage = progress.split([1, 1], ["Training", "Predicting"])
    features = {id(e): spines.vertex_features(e.mesh, e.hks, spec) for e in usable}
    labelled = [(features[id(e)], e.editor.labels) for e in usable if (e.editor.labels >= 0).any()]
    if not labelled:
        raise InputError("No labelled vertices yet. Paint some shaft (1) and spine (2) vertices with the brush, "
                         "or press “Use file labels”, then train.")
    X = np.concatenate([x[y >= 0] for x, y in labelled])
    y = np.concatenate([y[y >= 0] for _, y in labelled])
    fit_stage.report(0.1, f"{len(y):,} labelled vertices")
    fit_stage.check()
    if previous is not None and getattr(previous, "feature_spec_", None) == spec:
        model = active.retrain(previous, X, y)
    else:
        model = spines.SpineClassifier().fit(X, y, feature_spec=spec)
    fit_stage.report(1.0)
    probas = {}
    for e in predict_stage.iterate(usable, message="mesh"):
        probas[id(e)] = model.predict_proba(features[id(e)])
    return {"model": model, "probas": probas, "n_labelled": len(y)}


class MorphologyWorkspace(Workspace):
    key = "morphology"
    title = "Morphology"
    icon_name = "morphology"
    extensions = MESH_EXTENSIONS

    def __init__(self, window):
        super().__init__(window)
        self.entries: list[MeshEntry] = []
        self.entry: MeshEntry | None = None
        self.model = None
        self.tool_code: int | None = None
        self._region_index = -1

        self.meshes = QListWidget()
        self.meshes.setMaximumHeight(90)
        self.meshes.currentRowChanged.connect(self._select_entry)
        meshes_box = QGroupBox("Meshes")
        QVBoxLayout(meshes_box).addWidget(self.meshes)

        self.info = InfoBox("Mesh", [("file", "File"), ("units", "Units"), ("n_vertices", "Vertices"), ("n_faces", "Faces"),
                                     ("n_components", "Components"), ("surface_area", "Surface area")])

        hks_box = QGroupBox("Heat kernel signature")
        hks_form = QFormLayout(hks_box)
        self.hks_method = QComboBox()
        self.hks_method.addItems(["auto", "exact", "chunked", "chebyshev"])
        self.compute_button = QPushButton("Compute HKS", objectName="Primary")
        self.compute_button.clicked.connect(self.compute_hks)
        self.timescale = QSlider(Qt.Orientation.Horizontal)
        self.timescale.setEnabled(False)
        self.timescale.valueChanged.connect(self._timescale_changed)
        self.timescale_label = QLabel("t = —")
        hks_form.addRow("Method:", self.hks_method)
        hks_form.addRow(self.compute_button)
        hks_form.addRow("Timescale:", self.timescale)
        hks_form.addRow("", self.timescale_label)

        display = QGroupBox("Display")
        display_form = QFormLayout(display)
        self.color_by = QComboBox()
        self.color_by.addItems(COLOR_MODES)
        self.color_by.currentTextChanged.connect(self.recolor)
        self.cmap = QComboBox()
        self.cmap.addItems(["viridis", "hot", "grays", "coolwarm"])
        self.cmap.currentTextChanged.connect(self.recolor)
        self.colorbar = ColorBar()
        self.colorbar.setVisible(False)
        reset = QPushButton("Reset view")
        reset.clicked.connect(lambda: self.view.reset_view())
        display_form.addRow("Color by:", self.color_by)
        display_form.addRow("Colormap:", self.cmap)
        display_form.addRow(self.colorbar)
        display_form.addRow(reset)

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
            self.tool_buttons.addButton(button, i)
            tools.addWidget(button, i // 2, i % 2)
            QShortcut(QKeySequence(key), self, activated=lambda i=i: self.select_tool(i))
        QShortcut(QKeySequence("Esc"), self, activated=lambda: self.select_tool(0))
        self.tool_buttons.idClicked.connect(self.select_tool)
        self.tool_buttons.button(0).setChecked(True)
        labels_layout.addLayout(tools)
        brush_form = QFormLayout()
        self.brush = QDoubleSpinBox(minimum=0.0, maximum=1e9, value=0.3, decimals=3, singleStep=0.05)
        self.brush.setToolTip("Brush radius, geodesic, in mesh units ([ and ] change it)")
        brush_form.addRow("Brush radius:", self.brush)
        labels_layout.addLayout(brush_form)
        QShortcut(QKeySequence("["), self, activated=lambda: self.brush.setValue(self.brush.value() / 1.25))
        QShortcut(QKeySequence("]"), self, activated=lambda: self.brush.setValue(self.brush.value() * 1.25))
        self.counts = QLabel("—")
        self.counts.setWordWrap(True)
        labels_layout.addWidget(self.counts)
        undo_row = QGridLayout()
        self.undo_button = QPushButton("Undo")
        self.redo_button = QPushButton("Redo")
        self.import_button = QPushButton("Use file labels")
        self.import_button.setToolTip("Copy the labels found beside the mesh file into the hand labels (one undo step)")
        self.undo_button.clicked.connect(self.undo)
        self.redo_button.clicked.connect(self.redo)
        self.import_button.clicked.connect(self.import_file_labels)
        undo_row.addWidget(self.undo_button, 0, 0)
        undo_row.addWidget(self.redo_button, 0, 1)
        undo_row.addWidget(self.import_button, 1, 0, 1, 2)
        labels_layout.addLayout(undo_row)
        QShortcut(QKeySequence.StandardKey.Undo, self, activated=self.undo)
        QShortcut(QKeySequence("Ctrl+Shift+Z"), self, activated=self.redo)

        classifier = QGroupBox("Spine classifier")
        classifier_layout = QVBoxLayout(classifier)
        self.train_button = QPushButton("Train (T)", objectName="Primary")
        self.train_button.clicked.connect(self.train)
        self.next_button = QPushButton("Next uncertain region (N)")
        self.next_button.clicked.connect(self.next_uncertain_region)
        self.model_status = QLabel("No model yet.")
        self.model_status.setWordWrap(True)
        for widget in (self.train_button, self.next_button, self.model_status):
            classifier_layout.addWidget(widget)
        QShortcut(QKeySequence("T"), self, activated=self.train)
        QShortcut(QKeySequence("N"), self, activated=self.next_uncertain_region)

        self.view = MeshView()
        self.view.stroke_started.connect(self._stroke_started)
        self.view.stroke_moved.connect(self._stroke_moved)
        self.assemble([meshes_box, self.info, hks_box, display, labels_box, classifier], self.view, "No mesh open",
                      "Open a neuron surface mesh (PLY, OBJ, OFF, STL, GLB, MeshParty HDF5) to view it in 3D.\n"
                      "Drag to rotate, scroll to zoom, Shift-drag to pan.", "Open mesh…")
        self._refresh_controls()

    # -- opening -------------------------------------------------------------------------
    def open_file(self, path: Path) -> Job:
        return self.window.run_job(f"Open {path.name}", open_mesh_entry, path, on_result=self._add_entry)

    def _add_entry(self, entry: MeshEntry) -> None:
        for i, existing in enumerate(self.entries):  # reopening replaces
            if existing.path == entry.path:
                self.entries[i] = entry
                self.meshes.item(i).setText(entry.path.name)
                self._select_entry(i, force=True)
                return
        self.entries.append(entry)
        self.meshes.addItem(entry.path.name)
        self.meshes.setCurrentRow(len(self.entries) - 1)

    def _select_entry(self, row: int, force: bool = False) -> None:
        if not 0 <= row < len(self.entries) or (self.entry is self.entries[row] and not force):
            return
        entry = self.entry = self.entries[row]
        diagonal = float(np.linalg.norm(entry.mesh.vertices.max(axis=0) - entry.mesh.vertices.min(axis=0)))
        self.brush.setValue(round(diagonal * 0.01, 6))
        self.info.update_values({**entry.summary, "file": entry.path.name})
        self.view.set_mesh(entry.mesh.vertices, entry.mesh.faces, entry.picker)
        self._region_index = -1
        mode = "P(spine)" if entry.proba is not None else "HKS" if entry.hks is not None else \
            "File labels" if entry.file_labels is not None else "Hand labels"
        self._setup_timescale()
        self.color_by.setCurrentText(mode)
        self.recolor()
        self._refresh_controls()
        self.loaded(entry.path)

    # -- HKS -----------------------------------------------------------------------------
    def compute_hks(self) -> Job | None:
        entry = self.entry
        if entry is None:
            return None
        self.compute_button.setEnabled(False)

        def done(result: HKSResult) -> None:
            entry.hks = result
            if entry is self.entry:
                self._setup_timescale()
                self.color_by.setCurrentText("HKS")
                self.recolor()
            self.window.show_status(f"HKS of {entry.path.name}: {result.hks.shape[1]} timescales by {result.method} "
                                    f"in {result.info.get('seconds', 0):.1f} s")

        job = self.window.run_job(f"HKS of {entry.path.name}", compute_entry_hks, entry, self.hks_method.currentText(),
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
            self._log_hks = log_hks(hks.hks)
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
        self.cmap.setEnabled(mode == "HKS")  # the other modes have fixed, meaningful colormaps
        table = title = None
        lo, hi = 0.0, 1.0
        if mode == "HKS" and entry.hks is not None:
            cmap = self.cmap.currentText()
            lo, hi = self.view.set_scalar(self._log_hks[:, self.timescale.value()], cmap)
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

    def _spine_probability(self, entry: MeshEntry) -> np.ndarray:
        return spines.spine_probability(self.model, proba=entry.proba)

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

    def _stroke_started(self, vertex: int) -> None:
        if self.entry is None or self.tool_code is None:
            return
        self.entry.editor.paint(vertex, self.brush.value(), self.tool_code)
        self._labels_changed()

    def _stroke_moved(self, vertex: int) -> None:
        if self.entry is None or self.tool_code is None:
            return
        editor = self.entry.editor
        editor.merge_into_last(vertices_within(editor.graph, vertex, self.brush.value()), self.tool_code)
        self._labels_changed()

    def paint_at(self, vertex: int, code: int, radius: float | None = None) -> np.ndarray:
        """Programmatic stroke (as a click would do); returns the vertices labelled."""
        changed = self.entry.editor.paint(vertex, self.brush.value() if radius is None else radius, code)
        self._labels_changed()
        return changed

    def undo(self) -> None:
        if self.entry is not None and self.entry.editor.undo() is not None:
            self._labels_changed()

    def redo(self) -> None:
        if self.entry is not None and self.entry.editor.redo() is not None:
            self._labels_changed()

    def import_file_labels(self) -> None:
        entry = self.entry
        if entry is None or entry.file_labels is None:
            return
        labels = entry.file_labels
        keep = np.flatnonzero(labels >= 0)
        for code in np.unique(labels[keep]):
            entry.editor.assign(keep[labels[keep] == code], int(code))
        self._labels_changed()

    def _labels_changed(self) -> None:
        if self.color_by.currentText() == "Hand labels":
            self._paint_labels(self.entry.editor.labels)
        self._refresh_controls()

    # -- classifier ----------------------------------------------------------------------
    def train(self) -> Job | None:
        if not self.entries:
            return None
        self.train_button.setEnabled(False)

        def done(result: dict) -> None:
            self.model = result["model"]
            for entry in self.entries:
                if id(entry) in result["probas"]:
                    entry.proba = result["probas"][id(entry)]
                    entry.regions = []
            self._region_index = -1
            self.model_status.setText(f"Trained on {result['n_labelled']:,} labelled vertices. "
                                      "Press N to visit the most uncertain unlabelled region.")
            self.color_by.setCurrentText("P(spine)")
            self.recolor()

        job = self.window.run_job("Train spine classifier", train_on_entries, list(self.entries), self.entry, self.model,
                                  on_result=done)
        job.ended.connect(lambda _: self._refresh_controls())
        return job

    def next_uncertain_region(self) -> None:
        entry = self.entry
        if entry is None or entry.proba is None:
            self.window.show_status("Train the classifier first: uncertain regions come from its posterior.")
            return
        if not entry.regions:
            entry.regions = active.uncertain_regions(entry.mesh, entry.proba, entry.editor.labels >= 0)
            self._region_index = -1
        if not entry.regions:
            self.window.show_status("No uncertain unlabelled region left.")
            return
        self._region_index = (self._region_index + 1) % len(entry.regions)
        region = entry.regions[self._region_index]
        extent = np.ptp(entry.mesh.vertices[region.vertices], axis=0).max() if len(region.vertices) > 1 else self.brush.value()
        self.view.focus_on(region.center, max(extent * 8, self.brush.value() * 20))
        if self.color_by.currentText() not in ("P(spine)", "Uncertainty", "Hand labels"):
            self.color_by.setCurrentText("P(spine)")
        self.window.show_status(f"Uncertain region {self._region_index + 1} of {len(entry.regions)}: "
                                f"{len(region.vertices):,} vertices, score {region.score:.2f}")

    # -- state ---------------------------------------------------------------------------
    def _refresh_controls(self) -> None:
        entry = self.entry
        has = entry is not None
        self.compute_button.setEnabled(has)
        self.train_button.setEnabled(any(e.hks is not None for e in self.entries))
        self.next_button.setEnabled(has and entry.proba is not None)
        self.undo_button.setEnabled(has and entry.editor.can_undo)
        self.redo_button.setEnabled(has and entry.editor.can_redo)
        self.import_button.setEnabled(has and entry.file_labels is not None)
        if has:
            counts = entry.editor.counts()
            self.counts.setText(f"shaft {counts[0]:,} · spine {counts[1]:,} · soma {counts[2]:,} · "
                                f"unlabelled {counts[UNLABELLED]:,}")
