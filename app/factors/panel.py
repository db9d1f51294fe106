"""Microarchitecture workspace: the NMF factor heatmap browser.

The loop: open a large brain image (the label map beside it, if any, gives the first regions)
→ draw named regions by polygon (P: click vertices, double-click or Enter to close) or brush
(B; E erases) → Train the patch CNN → Extract dense latents at a stride → NMF (k factors) →
the coverage–leakage selection (instant for any λ and p) → GMM clusters inside one region.
Each step is a background job with progress and Cancel; its result is saved in the image's
project folder (engine.factors.workflow) and restored on opening. Browse: click a factor (list
or score matrix) to overlay its heatmap, or show an RGB composite of three factors, or the
cluster map; hover for every factor's value and the region there; export the view.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QColor, QIcon, QKeySequence, QPixmap
from PyQt6.QtWidgets import (
    QButtonGroup, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGridLayout, QGroupBox, QHBoxLayout,
    QInputDialog, QLabel, QListWidget, QListWidgetItem, QPushButton, QSizePolicy, QSlider, QSpinBox,
    QSplitter, QVBoxLayout, QWidget,
)

from app.factors.views import (
    CLUSTER_COLORS, COLORMAPS, FactorList, HoverBars, RegionCanvas, ScoreMatrix, cluster_rgba, colormap_table,
    composite_rgba, heat_rgba,
)
from app.dialogs import confirm, show_error
from app.factors.session import PIPELINE_DEFAULTS, FactorsSession
from app.session import from_session
from app.widgets.image_view import labels_for_display
from app.jobs import Job
from app.widgets.job_box import JobBox
from app.workspace import InfoBox, Workspace
from engine.errors import InputError
from engine.factors import workflow
from engine.factors.io import IMAGE_EXTENSIONS, LABEL_EXTENSIONS

OVERLAYS = ("Regions only", "Factor heatmap", "RGB composite", "Clusters")

def _spin(minimum, maximum, value, tip, step=1, suffix=""):
    box = QSpinBox(minimum=minimum, maximum=maximum, value=value, singleStep=step, suffix=suffix)
    box.setToolTip(tip)
    return box


class FactorsWorkspace(Workspace):
    key = "factors"
    title = "Microarchitecture"
    sidebar_label = "Micro-\narchitecture"
    icon_name = "factors"
    extensions = IMAGE_EXTENSIONS

    def __init__(self, window):
        super().__init__(window)
        # the image, settings, regions, results, factor shown and running job: held there once
        self.session = FactorsSession(self)
        self._outlines = None  # (labels, their outlines as drawn, the drawing's step)
        self._build_views()
        self._build_controls()
        self._follow_session()
        add = self.registry.add
        for key, tool, name in (("P", "polygon", "Polygon"), ("B", "brush", "Brush"), ("E", "erase", "Eraser"), ("V", "pan", "Pan")):
            add(name, lambda tool=tool: self.set_tool(tool), key, group="Regions")
        add("Close polygon", None, ("Return", "double-click"), group="Regions", hint=False)
        add("Drop last vertex", None, "Backspace", group="Regions", hint=False)
        add("Cancel shape", None, "Esc", group="Regions", hint=False)
        add("Undo", self.undo, QKeySequence.StandardKey.Undo, group="Regions",
            enabled=lambda: self.session.can_undo,
            help="Take back the last shape, new region, renaming, deletion or label file")
        add("Redo", self.redo, "Ctrl+Shift+Z", group="Regions", hint=False,
            enabled=lambda: self.session.can_redo)
        add("Zoom / pan", None, ("wheel", "drag"), group="View", hint=False)
        self.keys_hint.setText(self.registry.hint() + " · Enter/double-click closes a polygon · Backspace drops a vertex · "
                               "Esc cancels · wheel zooms, drag pans")
        self.assemble([self.info, self.region_box, self.pipeline_box, self.select_box, self.cluster_box, self.display_box],
                      self.splitter, "No image open",
                      "Open a brain image (PNG, TIFF — large TIFFs are memory-mapped). Draw regions on it (or keep the "
                      "label map <image>_labels.npz/.npy/.png found beside it), then Train → Extract → NMF → Cluster.",
                      "Open image…")
        self._refresh_controls()

    # -- layout ----------------------------------------------------------------------------
    def _build_controls(self) -> None:
        self.info = InfoBox("Image", [("file", "File"), ("shape", "Size (px)"), ("folder", "Project")])
        self.info.setMaximumHeight(130)

        self.region_box = QGroupBox("Regions")
        box = QVBoxLayout(self.region_box)
        self.region_list = QListWidget()
        self.region_list.setMaximumHeight(120)
        self.region_list.currentRowChanged.connect(lambda row: self.session.select_region(self._row_label(row)))
        self.region_list.itemDoubleClicked.connect(lambda _item: self.rename_region())
        box.addWidget(self.region_list)
        grid = QGridLayout()
        self.tools = QButtonGroup(self)
        self.tool_buttons = {}
        for i, (mode, text, tip) in enumerate((("pan", "Pan (V)", "Drag pans, the wheel zooms"),
                                               ("polygon", "Polygon (P)", "Click vertices; double-click or Enter closes"),
                                               ("brush", "Brush (B)", "Drag to paint the current region"),
                                               ("erase", "Eraser (E)", "Drag to unlabel pixels"))):
            button = self._button(text, None)
            button.setCheckable(True)
            button.setToolTip(tip)
            self.tools.addButton(button)
            self.tool_buttons[mode] = button
            button.toggled.connect(lambda on, m=mode: on and self.canvas.set_mode(m))
            grid.addWidget(button, i // 2, i % 2)
        self.tool_buttons["pan"].setChecked(True)
        self.add_region_button = self._button("New region", self.add_region)
        self.rename_button = self._button("Rename…", self.rename_region)
        self.delete_region_button = self._button("Delete", self.delete_region)
        self.load_labels_button = self._button("Load labels…", self.load_labels_dialog)
        self.load_labels_button.setToolTip("Use a label image (.npz/.npy/.png/.tif, 0 = unlabelled) as regions")
        for i, button in enumerate((self.add_region_button, self.rename_button, self.delete_region_button,
                                    self.load_labels_button)):
            grid.addWidget(button, 2 + i // 2, i % 2)
        box.addLayout(grid)
        form = QFormLayout()
        self.brush_radius = _spin(1, 500, 25, "Brush radius in image pixels", suffix=" px")
        self.brush_radius.valueChanged.connect(lambda v: setattr(self.canvas, "brush_radius", float(v)))
        self.show_labels = QCheckBox("Show regions")
        self.show_labels.setChecked(True)
        self.show_labels.toggled.connect(self._update_overlay)
        self.opacity = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=100, value=35)
        self.opacity.valueChanged.connect(lambda v: self.view.set_overlay_opacity(v / 100))
        form.addRow("Brush:", self.brush_radius)
        form.addRow(self.show_labels)
        form.addRow("Opacity:", self.opacity)
        box.addLayout(form)
        self.keys_hint = QLabel("", objectName="Hint")  # filled from the registry; F1 lists them all
        self.keys_hint.setWordWrap(True)
        box.addWidget(self.keys_hint)

        self.pipeline_box = QGroupBox("Pipeline")
        form = QFormLayout(self.pipeline_box)
        defaults = PIPELINE_DEFAULTS
        self.patch_size = _spin(54, 512, defaults["patch_size"], "Patch side in pixels (128 ≈ 150 µm at 1.17 µm/px, the paper's)", 2, " px")
        self.epochs = _spin(1, 500, defaults["epochs"], "Passes over freshly drawn patches; a few are enough to see factors on a CPU")
        self.patches = _spin(32, 100000, defaults["patches"], "Patches drawn per epoch, balanced over the regions", 64)
        self.pixel_size = QDoubleSpinBox(minimum=0.0, maximum=1000.0, value=defaults["pixel_size_um"], decimals=3, suffix=" µm")
        self.pixel_size.setSpecialValueText("unknown")
        self.pixel_size.setToolTip("Pixel size, saved with the model (later images must match it)")
        self.train_button = self._button("Train", self.train, primary=True)
        self.stride = _spin(1, 64, defaults["stride"], "Pixels between latent positions (1 = every pixel; 8–16 for a whole slice on a CPU)")
        self.estimate = QLabel("", objectName="Hint")
        self.estimate.setWordWrap(True)
        self.extract_button = self._button("Extract", self.extract, primary=True)
        self.k = _spin(1, 64, defaults["k"], "Number of NMF factors (15 in the paper)")
        self.nmf_button = self._button("NMF", self.run_nmf, primary=True)
        self.job_box = JobBox("Draw at least two regions, then Train.", shows=self.shows)
        self.cancel_button, self.progress_bar, self.stage_label = (self.job_box.cancel_button, self.job_box.progress_bar,
                                                                   self.job_box.stage_label)
        self.mask_background = QCheckBox("Leave out the background")
        self.mask_background.setChecked(defaults["mask_background"])
        self.mask_background.setToolTip("NMF fits the tissue only: the dark field around the slice (dark pixels connected "
                                         "to the image border) is left out and its codes are zero, so no factor is spent "
                                         "on it and leakage counts tissue only. An image without a dark margin is "
                                         "unaffected.")
        form.addRow("Patch size:", self.patch_size)
        form.addRow("Epochs:", self.epochs)
        form.addRow("Patches/epoch:", self.patches)
        form.addRow("Pixel size:", self.pixel_size)
        form.addRow(self.train_button)
        form.addRow("Stride:", self.stride)
        form.addRow(self.estimate)
        form.addRow(self.extract_button)
        form.addRow("Factors k:", self.k)
        form.addRow(self.mask_background)
        form.addRow(self.nmf_button)
        form.addRow(self.job_box)

        self.select_box = QGroupBox("Factor selection")
        form = QFormLayout(self.select_box)
        self.lam = QDoubleSpinBox(minimum=0.0, maximum=100.0, value=0.5, decimals=2, singleStep=0.1)
        self.lam.setToolTip("λ: weight of leakage (positive codes outside the region) against coverage inside it")
        self.lam.valueChanged.connect(lambda v: self.session.set_weights(lam=v))
        self.p = _spin(1, 64, 1, "p: how many (factor, region) pairs to pick greedily")
        self.p.valueChanged.connect(lambda v: self.session.set_weights(pairs=v))
        self.selection_label = QLabel("Run NMF first.")
        self.selection_label.setWordWrap(True)
        self.score_note = QLabel("", objectName="Hint")  # what the score means; why all may be negative
        self.score_note.setWordWrap(True)
        form.addRow("λ (leakage):", self.lam)
        form.addRow("p (pairs):", self.p)
        form.addRow(self.selection_label)
        form.addRow(self.score_note)

        self.cluster_box = QGroupBox("Clusters (GMM)")
        form = QFormLayout(self.cluster_box)
        self.cluster_region = QComboBox()
        self.cluster_region.setToolTip("Cluster the factor codes inside this region (eroded by half a patch)")
        self.n_clusters = _spin(0, 12, 4, "Number of clusters; 0 = choose 2–8 by the lowest BIC")
        self.n_clusters.setSpecialValueText("best BIC")
        self.cluster_button = self._button("Cluster", self.cluster, primary=True)
        self.cluster_label = QLabel("")
        self.cluster_label.setWordWrap(True)
        self.cluster_label.setTextFormat(Qt.TextFormat.RichText)
        form.addRow("Region:", self.cluster_region)
        form.addRow("Clusters:", self.n_clusters)
        form.addRow(self.cluster_button)
        form.addRow(self.cluster_label)

        self.display_box = QGroupBox("Display")
        form = QFormLayout(self.display_box)
        self.overlay_kind = QComboBox()
        self.overlay_kind.addItems(OVERLAYS)
        self.overlay_kind.currentTextChanged.connect(lambda _t: (self.redraw_layer(), self._update_overlay()))
        self.colormap = QComboBox()
        self.colormap.addItems(COLORMAPS)
        self.colormap.currentTextChanged.connect(lambda _t: self.redraw_layer())
        self.heat_opacity = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=100, value=85)
        self.heat_opacity.valueChanged.connect(lambda v: self.view.heatmap.setOpacity(v / 100))
        self.threshold = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=95, value=5)
        self.threshold.setToolTip("Codes below this fraction of the factor's display scale are transparent")
        self.threshold.valueChanged.connect(lambda _v: self.redraw_layer())
        rgb_row = QHBoxLayout()
        self.rgb = []
        for i, color in enumerate(("red", "green", "blue")):
            box = _spin(0, 63, i, f"Factor shown in {color}")
            box.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)  # three share the column's width
            box.valueChanged.connect(lambda _v: self._composite_changed())
            rgb_row.addWidget(box)
            self.rgb.append(box)
        self.rotate = QCheckBox("Rotate 90°")
        self.rotate.setToolTip("Show the image turned counter-clockwise (a wide slice as a vertical strip); "
                               "display only, positions stay image pixels")
        self.rotate.toggled.connect(self._rotate_view)
        self.export_button = self._button("Export view…", self.export_dialog)
        self.export_button.setToolTip("Save what the image view shows as PNG or SVG")
        form.addRow("Layer:", self.overlay_kind)
        form.addRow("Colour map:", self.colormap)
        form.addRow("Opacity:", self.heat_opacity)
        form.addRow("Threshold:", self.threshold)
        form.addRow("R G B:", rgb_row)
        form.addRow(self.rotate)
        form.addRow(self.export_button)

    def _build_views(self) -> None:
        self.canvas = RegionCanvas()
        self.view = self.canvas.view
        self.canvas.polygon_finished.connect(self._polygon_drawn)
        self.canvas.stroke_finished.connect(self._stroke_drawn)
        self.canvas.hovered.connect(self._hovered)
        self.factor_list = FactorList()
        self.factor_list.factor_clicked.connect(self.show_factor)
        self.scores = ScoreMatrix()
        self.scores.factor_clicked.connect(self.show_factor)
        self.bars = HoverBars()
        self.legend = QLabel("")
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setWordWrap(True)
        side = QSplitter(Qt.Orientation.Vertical)
        factor_panel = QWidget()
        layout = QVBoxLayout(factor_panel)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Factors (click to show)"))
        layout.addWidget(self.factor_list, 1)
        layout.addWidget(self.legend)
        side.addWidget(factor_panel)
        side.addWidget(self.scores)
        side.addWidget(self.bars)
        side.setSizes([380, 260, 200])
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.canvas)
        self.splitter.addWidget(side)
        self.splitter.setStretchFactor(0, 4)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([900, 290])

    def _follow_session(self) -> None:
        """The views follow the session; the settings typed in go to it."""
        session = self.session
        session.image_changed.connect(self._show_image)
        session.parameters_changed.connect(self._show_parameters)
        session.regions_changed.connect(self._show_regions)
        session.region_selected.connect(self._show_current_region)
        session.results_changed.connect(self._factors_changed)
        session.clusters_changed.connect(self._show_cluster_legend)
        session.selection_changed.connect(self._show_selection)
        session.factor_shown.connect(self._show_factor)
        session.busy_changed.connect(self._refresh_controls)
        for name, box in self._parameter_boxes().items():
            changed = box.toggled if isinstance(box, QCheckBox) else box.valueChanged
            changed.connect(lambda value, name=name: self.session.set_parameter(name, value))
        self.stride.valueChanged.connect(lambda _v: self._update_estimate())

    def _parameter_boxes(self) -> dict:
        return {"patch_size": self.patch_size, "epochs": self.epochs, "patches": self.patches,
                "pixel_size_um": self.pixel_size, "stride": self.stride, "k": self.k,
                "mask_background": self.mask_background}

    def _show_parameters(self) -> None:
        """The settings the session restored for an image (a box keeps a value within its range)."""
        for name, box in self._parameter_boxes().items():
            box.blockSignals(True)
            if isinstance(box, QCheckBox):
                box.setChecked(self.session.parameters[name])
            else:
                box.setValue(self.session.parameters[name])
                self.session.set_parameter(name, box.value())
            box.blockSignals(False)
        self._update_estimate()

    def _button(self, text: str, slot, primary: bool = False) -> QPushButton:
        button = QPushButton(text, objectName="Primary" if primary else "")
        button.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        if slot is not None:
            button.clicked.connect(lambda checked=False: slot())
        return button

    # -- opening ---------------------------------------------------------------------------
    def open_file(self, path: Path) -> Job:
        return self.window.run_job(f"Open {path.name}", workflow.open_project_job, path,
                                   on_result=lambda result: self._opened(path, result))

    def _opened(self, path: Path, result: dict) -> None:
        project = self.session.open(path, result, self.window.settings.remembered("factors_pipeline", path))
        for problem in project.problems:
            self.window.show_status(problem, 15000)
        for notice in project.notices:  # hand work set aside, never overwritten: say so plainly
            show_error(self, "Saved regions set aside", notice)

    def _show_image(self) -> None:
        """The session's image, with its regions and what its project folder held."""
        path = self.session.path
        self.info.update_values({"file": path.name, "shape": self.image.shape, "folder": str(self.folder)})
        self.view.set_image(self.image)
        self.canvas.set_rotated(self.rotate.isChecked())  # the turn depends on the image's width
        self.loaded(path)
        self._show_regions()
        self._factors_changed()
        self._show_selection()
        if self.clusters is not None:
            self.overlay_kind.setCurrentText("Clusters")
        self._show_cluster_legend()  # or clear the previous image's
        restored = [name for name, thing in (("model", self.model), ("latents", self.latents), ("factors", self.factors),
                                             ("clusters", self.clusters)) if thing is not None]
        self.stage_label.setText(f"Restored {', '.join(restored)} from the project folder." if restored else
                                 "Draw at least two regions, then Train.")
        self._update_estimate()
        self._refresh_controls()

    # -- regions ---------------------------------------------------------------------------
    def set_tool(self, mode: str) -> None:
        if self.image is not None:
            self.tool_buttons[mode].setChecked(True)
            self.canvas.setFocus()

    def current_region(self) -> int | None:
        return self.session.current_region

    def _row_label(self, row: int) -> int | None:
        item = self.region_list.item(row)
        return int(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None

    def add_region(self, name: str | None = None) -> int | None:
        return self.session.add_region(name)

    def rename_region(self, name: str | None = None) -> None:
        label = self.current_region()
        if label is None:
            return
        if name is None:
            name, ok = QInputDialog.getText(self, "Rename region", "Name:", text=self.regions.region(label).name)
            if not ok:
                return
        try:
            self.session.rename_region(label, name)
        except InputError as exc:
            self.window.show_status(exc.message)

    def delete_region(self) -> None:
        label = self.current_region()
        if label is None:
            return
        name = self.regions.region(label).name
        self.session.delete_region(label)
        self.window.show_status(f"Deleted region “{name}”.")

    def undo(self) -> None:
        what = self.session.undo()
        if what is not None:
            self.window.show_status(f"Undid the {what} (Ctrl+Shift+Z redoes it).")

    def redo(self) -> None:
        what = self.session.redo()
        if what is not None:
            self.window.show_status(f"Redid the {what}.")

    def load_labels_dialog(self) -> None:
        if self.image is None:
            return
        patterns = " ".join(f"*{e}" for e in LABEL_EXTENSIONS)
        path, _ = QFileDialog.getOpenFileName(self, "Load a label image", str(self.current_path.parent),
                                              f"Label images ({patterns})")
        if path:
            self.load_labels(Path(path))

    def load_labels(self, path: Path) -> None:
        """Use a label file as the regions' first layer (drawn shapes of other regions are kept on top)."""
        try:
            self.session.load_labels(path)
        except InputError as exc:
            self.window.show_job_error("Load labels", _as_job_error(exc))

    def _polygon_drawn(self, vertices: list) -> None:
        label = self.session.add_polygon(vertices)
        if label is not None:
            self.window.show_status(f"Polygon added to “{self.regions.region(label).name}” (Ctrl+Z undoes it).")

    def _stroke_drawn(self, points: list, radius: float, erase: bool) -> None:
        self.session.add_stroke(points, radius, erase)

    def _select_region(self, label: int) -> None:
        self.session.select_region(label)

    def _show_current_region(self) -> None:
        """The list selects the session's current region."""
        self.region_list.blockSignals(True)
        for row in range(self.region_list.count()):
            if self._row_label(row) == self.session.current_region:
                self.region_list.setCurrentRow(row)
        self.region_list.blockSignals(False)
        self._refresh_controls()

    def _show_regions(self) -> None:
        """After every edit (the session saved and rasterized it): the list, the clusters' region choice, the overlay."""
        if self.regions is None:
            return
        counts = self.session.counts
        self.region_list.blockSignals(True)
        self.region_list.clear()
        for region in self.regions.regions:
            swatch = QPixmap(14, 14)
            swatch.fill(QColor(region.color))
            item = QListWidgetItem(QIcon(swatch), f"{region.name}  ({counts[region.label]:,} px)")
            item.setData(Qt.ItemDataRole.UserRole, region.label)
            self.region_list.addItem(item)
        self.region_list.blockSignals(False)
        self._show_current_region()
        self.cluster_region.blockSignals(True)
        chosen = self.cluster_region.currentData()
        self.cluster_region.clear()
        for region in self.regions.regions:
            self.cluster_region.addItem(region.name, region.label)
        if chosen is not None and self.cluster_region.findData(chosen) >= 0:
            self.cluster_region.setCurrentIndex(self.cluster_region.findData(chosen))
        self.cluster_region.blockSignals(False)
        self._update_overlay()
        self._refresh_controls()

    def region_colors(self) -> np.ndarray:
        table = np.zeros((self.regions.next_label() + 1, 4), dtype=np.uint8)
        for region in self.regions.regions:
            table[region.label] = [*QColor(region.color).getRgb()[:3], 255]
        return table

    def _update_overlay(self) -> None:
        """Regions filled; over a factor layer only their outlines, so the heatmap stays readable."""
        show = self.show_labels.isChecked() and self.labels is not None and self.regions is not None
        if not show:
            self.view.set_labels(None)
            return
        labels = self.labels
        if self.overlay_kind.currentText() != OVERLAYS[0] and self.factors is not None:
            if self._outlines is None or self._outlines[0] is not labels:  # computed once per region edit
                # ~1/600 of the long side: still visible when a whole slice fits the screen; on the labels as drawn
                shown, step = labels_for_display(labels)
                self._outlines = (labels, outlines(shown, width=max(1, max(labels.shape) // 600 // step)), step)
            self.view.set_labels(self._outlines[1], opacity=0.9, colors=self.region_colors(), step=self._outlines[2])
        else:
            self.view.set_labels(labels, opacity=self.opacity.value() / 100, colors=self.region_colors())

    def _region_name(self, label: int) -> str:
        return self.session.region_name(label)

    # -- jobs ------------------------------------------------------------------------------
    def _start(self, name: str, func, *args, on_result, **kwargs) -> Job | None:
        if self.session.busy:
            self.window.show_status(f"Wait for “{self.job.name}” to finish (or cancel it).")
            return None
        return self.session.set_job(self.job_box.follow(self.run_dataset_job(name, func, *args, on_result=on_result,
                                                                             **kwargs)))

    def cancel(self) -> None:
        self.job_box.cancel()

    def pixel_size_um(self) -> float | None:
        return self.session.pixel_size_um()

    def train(self) -> Job | None:
        if self.image is None or self.labels is None:
            self.window.show_status("Draw at least two regions first.")
            return None
        made = [name for name, thing in (("latents", self.latents), ("factors", self.factors), ("clusters", self.clusters))
                if thing is not None]
        if made and not self.session.busy and not confirm(
                self, "Train a new model?", f"The {', '.join(made)} in {self.folder.name}/ come from the current model: a new "
                "model makes them meaningless, so they are deleted once it is trained (a cancelled training keeps "
                "everything). Your regions are kept.", "Train"):
            return None
        self._remember_parameters()
        settings = self.session.parameters
        return self._start("Train CNN", workflow.train_job, self.image, self.labels, self.folder,
                           names=self.regions.names, patch_size=settings["patch_size"], epochs=settings["epochs"],
                           patches_per_epoch=settings["patches"], batch_size=32, pixel_size_um=self.pixel_size_um(),
                           on_result=self._trained)

    def _remember_parameters(self) -> None:
        """The pipeline's settings for this image, offered again when it is reopened (saved results win)."""
        self.window.settings.remember("factors_pipeline", self.current_path, dict(self.session.parameters))

    def _trained(self, result) -> None:
        self.session.take_model(result.model)  # the views follow (results_changed)
        acc = result.val_accuracy
        self.stage_label.setText(f"Trained: validation accuracy {acc:.0%} (held-out blocks, epoch {result.best_epoch} of "
                                 f"{len(result.history)}; chance {1 / max(1, result.model.n_classes):.0%}). Now Extract.")
        self.progress_bar.setValue(1000)

    def extract(self) -> Job | None:
        if self.model is None:
            self.window.show_status("Train the CNN first.")
            return None
        self._remember_parameters()
        return self._start("Dense latents", workflow.extract_job, self.model, self.image, self.folder,
                           stride=self.session.parameters["stride"], pixel_size_um=self.pixel_size_um(), on_result=self._extracted)

    def _extracted(self, latents) -> None:
        self.session.take_latents(latents)
        rows, cols = latents.grid_shape
        self.stage_label.setText(f"Latents: {rows} × {cols} positions × 64 at stride {latents.stride} in "
                                 f"{latents.seconds:.0f} s. Now NMF.")
        self.progress_bar.setValue(1000)

    def run_nmf(self) -> Job | None:
        if self.latents is None:
            self.window.show_status("Extract the latents first.")
            return None
        self._remember_parameters()
        settings = self.session.parameters
        return self._start("NMF", workflow.nmf_job, self.latents, self.folder, k=settings["k"],
                           image=self.image if settings["mask_background"] else None, on_result=self._factorized)

    def _factorized(self, factors) -> None:
        self.progress_bar.setValue(1000)  # first: a progress bar repaints the window's changed parts at once
        self.overlay_kind.blockSignals(True)  # the new factors are drawn once, as the heatmap of the first chosen factor
        self.overlay_kind.setCurrentText("Factor heatmap")
        self.overlay_kind.blockSignals(False)
        self.session.take_factors(factors)  # the views follow (results_changed, selection_changed)
        left_out = getattr(factors, "background_positions", 0)
        background = (f" {left_out:,} of {int(np.prod(factors.grid_shape)):,} positions were background outside the tissue, "
                      "left out." if left_out else "")
        self.stage_label.setText(f"NMF: {factors.k} factors, relative error {factors.relative_error:.3f} after {factors.n_iter} "
                                 f"iterations ({factors.seconds:.1f} s).{background}")

    def cluster(self) -> Job | None:
        if self.factors is None or self.cluster_region.currentData() is None:
            self.window.show_status("Run NMF and pick a region first.")
            return None
        n = self.n_clusters.value() or None
        return self._start("GMM clusters", workflow.cluster_job, self.factors, self.labels,
                           int(self.cluster_region.currentData()), self.folder, n_clusters=n, on_result=self._clustered)

    def _clustered(self, clusters) -> None:
        self.session.take_clusters(clusters)  # the legend follows (clusters_changed)
        self.overlay_kind.setCurrentText("Clusters")
        self.redraw_layer()
        self.progress_bar.setValue(1000)
        self.stage_label.setText(f"Clusters: {clusters.n_clusters} in {self.cluster_region.currentText()}.")

    def _update_estimate(self) -> None:
        if self.image is None:
            self.estimate.setText("")
            return
        stride = self.session.parameters["stride"]
        rows, cols = -(-self.image.shape[0] // stride), -(-self.image.shape[1] // stride)
        seconds = workflow.estimate_extract_seconds(self.image.shape, stride)
        when = f"~{seconds:.0f} s" if seconds < 120 else f"~{seconds / 60:.0f} min"
        self.estimate.setText(f"{rows:,} × {cols:,} positions: {when} on this CPU (much less on a GPU)")

    # -- factors ----------------------------------------------------------------------------
    def _factors_changed(self) -> None:
        """New (or no) NMF result: thumbnails, spin box ranges, layer (the selection follows: selection_changed)."""
        self._show_cluster_legend()  # the clusters go with the factors they were computed from
        f = self.factors
        if f is None:
            self.factor_list.set_factors([])
            self.redraw_layer()
            self._refresh_controls()
            return
        self._update_thumbnails()
        for box in self.rgb:
            box.setMaximum(f.k - 1)
        self.factor_list.select_factor(self.current_factor)
        self.redraw_layer()
        self._update_overlay()
        self._refresh_controls()

    def _update_thumbnails(self) -> None:
        """One heatmap thumbnail per factor over the image in gray, turned like the view."""
        f = self.factors
        table = colormap_table(self.colormap.currentText())
        thumbs = []
        step = max(1, max(f.grid_shape) // 96)
        # the image at the thumbnail's grid positions, in gray, under each heatmap (as in the paper's figure)
        (r0, c0), every = f.grid.offset, f.stride * step
        gray = np.asarray(self.image[r0::every, c0::every], dtype=np.float32)
        lo, hi = np.percentile(gray, [0.5, 99.5])
        gray = np.clip((gray - lo) / max(hi - lo, 1e-6) * 200 + 40, 0, 255)[..., None]
        for i in range(f.k):
            heat = heat_rgba(f.heatmap(i)[::step, ::step], table).astype(np.float32)
            h, w = min(gray.shape[0], heat.shape[0]), min(gray.shape[1], heat.shape[1])
            alpha = heat[:h, :w, 3:] / 255
            rgb = heat[:h, :w, :3] * alpha + gray[:h, :w] * (1 - alpha)
            thumb = np.concatenate([rgb, np.full((h, w, 1), 255.0)], axis=-1).astype(np.uint8)
            thumbs.append(np.rot90(thumb) if self.canvas.rotated else thumb)  # rot90: counter-clockwise, as the view
        self.factor_list.set_factors(thumbs)

    def _rotate_view(self, rotated: bool) -> None:
        self.canvas.set_rotated(rotated)
        if self.factors is not None:
            self._update_thumbnails()
            self._show_selection()  # the captions of the chosen factors
            if self.current_factor is not None:
                self.factor_list.select_factor(self.current_factor)

    def show_factor(self, i: int) -> None:
        self.session.show_factor(i)  # the views follow (factor_shown)

    def _show_factor(self, i: int) -> None:
        self.factor_list.select_factor(i)
        self.overlay_kind.setCurrentText("Factor heatmap")
        self.redraw_layer()

    def _composite_changed(self) -> None:
        if self.factors is not None:
            self.overlay_kind.setCurrentText("RGB composite")
            self.redraw_layer()

    def redraw_layer(self) -> None:
        kind = self.overlay_kind.currentText()
        f = self.factors
        threshold = self.threshold.value() / 100
        opacity = self.heat_opacity.value() / 100
        if kind == "Factor heatmap" and f is not None and self.current_factor is not None:
            rgba = heat_rgba(f.heatmap(self.current_factor), colormap_table(self.colormap.currentText()), threshold)
            self.canvas.set_layer(rgba, f.grid, opacity)
            self.canvas.hint.setText(f"Factor {self.current_factor}: {self._factor_caption(self.current_factor)}")
        elif kind == "RGB composite" and f is not None:
            chosen = tuple(box.value() for box in self.rgb)
            self.canvas.set_layer(composite_rgba(f.composite(chosen), threshold), f.grid, opacity)
            self.canvas.hint.setText(f"Red = factor {chosen[0]}, green = factor {chosen[1]}, blue = factor {chosen[2]}")
        elif kind == "Clusters" and self.clusters is not None and f is not None:
            self.canvas.set_layer(cluster_rgba(self.clusters.cluster_map), f.grid, opacity)
            self.canvas.hint.setText("GMM clusters (legend beside the factor list)")
        else:
            self.canvas.set_layer(None)
            self.canvas.hint.setText("")

    def _factor_caption(self, i: int) -> str:
        if self.selection is not None:
            for factor, region, score in self.selection.pairs:
                if factor == i:
                    return f"chosen for {self._region_name(region)} (score {score:,.0f})"
        return "not chosen"

    def _show_selection(self) -> None:
        """The session's choice of factors for the regions: score matrix, pairs, captions (p as it was counted)."""
        session, sel = self.session, self.selection
        if sel is None:
            self.scores.set_scores(None, [], [])
            self.score_note.setText("")
            self.selection_label.setText(session.selection_error or ("Run NMF first." if self.factors is None else
                                                                     "Draw regions to score the factors."))
            return
        self.p.blockSignals(True)
        self.p.setMaximum(session.max_pairs)
        self.p.setValue(session.pairs)
        self.p.blockSignals(False)
        column = {label: a for a, label in enumerate(sel.roi_labels)}
        self.scores.set_scores(sel.scores, [self._region_name(v) for v in sel.roi_labels],
                               [(fi, column[region]) for fi, region, _ in sel.pairs])
        self.selection_label.setText("; ".join(f"{self._region_name(region)} → factor {fi}" for fi, region, _ in sel.pairs))
        note = ("Score = latent positions of the region where the factor is on − λ × positions outside it where it "
                "is on.")
        if (sel.scores < 0).all():
            note += (" Every score is negative: each factor is on at more places outside the region (× λ) than inside "
                     "it — usual when the regions are small parts of the image. The highest score is still the most "
                     "region-specific factor; a smaller λ weighs coverage more.")
        self.score_note.setText(note)
        self.factor_list.set_captions({fi: f"→ {self._region_name(region)}" for fi, region, _ in sel.pairs})
        if self.overlay_kind.currentText() == "Factor heatmap" and self.current_factor is not None:
            self.canvas.hint.setText(f"Factor {self.current_factor}: {self._factor_caption(self.current_factor)}")

    def _show_cluster_legend(self) -> None:
        c = self.clusters
        if c is None:
            self.legend.setText("")
            self.cluster_label.setText("")
            return
        total = max(1, int(np.sum(c.sizes)))
        rows = [f"<span style='color:{CLUSTER_COLORS[i % len(CLUSTER_COLORS)]}'>■</span> cluster {i}: "
                f"{int(c.sizes[i]) / total:.0%}" for i in range(c.n_clusters)]
        self.legend.setText("<b>Clusters</b><br>" + "<br>".join(rows))
        bic = ", ".join(f"{n}: {b:,.0f}" + (" ◀" if n == c.n_clusters else "") for n, b in sorted(c.bic.items()))
        self.cluster_label.setText(f"BIC (lower is better) — {bic}")

    # -- hover -------------------------------------------------------------------------------
    def _hovered(self, row: int, col: int) -> None:
        if row < 0 or self.image is None:
            return
        label = int(self.labels[row, col]) if self.labels is not None else 0
        where = f"(row {row}, col {col}) · {self._region_name(label) if label else 'no region'}"
        if self.factors is None:
            self.bars.show_values(None, where)
            return
        values = self.factors.values_at(row, col) / self.factors.scales
        colors = ["#64748b"] * self.factors.k
        if self.selection is not None:
            for fi, region, _ in self.selection.pairs:
                try:
                    colors[fi] = self.regions.region(region).color
                except InputError:
                    pass
        if self.current_factor is not None:
            colors[self.current_factor] = "#facc15"
        self.bars.show_values(values, where, colors)
        self.window.show_status(where, 3000)

    # -- export ------------------------------------------------------------------------------
    def export_dialog(self) -> None:
        if self.image is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export view", str(self.current_path.with_suffix("")) + "_view.png",
                                              "PNG image (*.png);;SVG drawing (*.svg)")
        if path:
            self.export_view(Path(path))

    def export_view(self, path: Path) -> Path:
        """Save the image view as it is on screen: PNG (pixels) or SVG (the scene painted into an SVG
        generator: images embedded, outlines as vectors; pyqtgraph's own SVG exporter fails on Qt 6 paths)."""
        path = Path(path)
        if path.suffix.lower() == ".svg":
            from PyQt6.QtCore import QRectF, QSize
            from PyQt6.QtGui import QPainter
            from PyQt6.QtSvg import QSvgGenerator

            widget = self.view.graphics
            generator = QSvgGenerator()
            generator.setFileName(str(path))
            generator.setSize(QSize(widget.width(), widget.height()))
            generator.setViewBox(QRectF(0, 0, widget.width(), widget.height()))
            generator.setTitle(f"{self.current_path.name if self.current_path else 'view'} — NeuroWorkbench")
            painter = QPainter(generator)
            widget.render(painter)
            painter.end()
        else:
            if not self.view.graphics.grab().save(str(path.with_suffix(".png") if not path.suffix else path)):
                raise OSError(f"could not write {path}")
        self.window.show_status(f"Exported the view to {path}.")
        return path

    # -- state -------------------------------------------------------------------------------
    def _refresh_controls(self) -> None:
        has_image = self.image is not None
        running = self.session.busy
        n_regions = self.session.n_regions
        for button in self.tool_buttons.values():
            button.setEnabled(has_image)
        for button in (self.add_region_button, self.load_labels_button):
            button.setEnabled(has_image)
        for button in (self.rename_button, self.delete_region_button):
            button.setEnabled(has_image and self.current_region() is not None)
        self.train_button.setEnabled(has_image and n_regions >= 2 and not running)
        self.extract_button.setEnabled(self.model is not None and not running)
        self.nmf_button.setEnabled(self.latents is not None and not running)
        self.cluster_button.setEnabled(self.factors is not None and self.cluster_region.count() > 0 and not running)
        self.cancel_button.setEnabled(running)
        for box in (self.lam, self.p, *self.rgb):
            box.setEnabled(self.factors is not None)
        self.export_button.setEnabled(has_image)
        self.rotate.setEnabled(has_image)

    # -- session state (read here, changed through self.session) ------------------------------
    image = from_session()
    folder = from_session()
    regions = from_session()
    labels = from_session()  # the regions as a label image (0 = none)
    model = from_session()
    latents = from_session()
    factors = from_session()
    clusters = from_session()
    selection = from_session()
    current_factor = from_session()
    job = from_session()

    # -- demo ----------------------------------------------------------------------------------
    def demo_steps(self) -> list:
        """On the demo mosaic: a quick train (64-px patches, 2 short epochs), stride-4 latents, NMF,
        the best factor per texture, and clusters in the first region."""
        def settings() -> None:
            self.patch_size.setValue(64)
            self.epochs.setValue(2)
            self.patches.setValue(384)
            self.stride.setValue(4)
            self.k.setValue(8)

        def composite() -> None:
            chosen = [fi for fi, _, _ in self.selection.pairs][:3] if self.selection else [0, 1, 2]
            for box, fi in zip(self.rgb, chosen + [0, 1, 2][len(chosen):]):
                box.blockSignals(True)
                box.setValue(fi)
                box.blockSignals(False)
            self._composite_changed()

        def cluster() -> Job | None:
            self.n_clusters.setValue(3)
            return self.cluster()

        return [("regions", settings), ("train", self.train), ("extract", self.extract), ("nmf", self.run_nmf),
                ("composite", composite), ("clusters", cluster)]


def outlines(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """The label map kept only on region borders (``width`` px inside each region), 0 elsewhere."""
    from scipy.ndimage import maximum_filter

    edge = np.zeros(labels.shape, dtype=np.uint8)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    if width > 1:
        edge = maximum_filter(edge, size=2 * width - 1)
    return np.where(edge.astype(bool), labels, 0)


def _as_job_error(exc: Exception):
    import traceback

    from app.jobs import JobError

    return JobError(exc, "".join(traceback.format_exception(exc)))
