"""Microarchitecture workspace: large brain images with region labels (CNN features and NMF factors to come)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QCheckBox, QFormLayout, QGroupBox, QSlider

from app.jobs import Job
from app.widgets.image_view import ImageView
from app.workspace import InfoBox, Workspace
from engine.factors.io import IMAGE_EXTENSIONS, find_labels, load_image


def load_image_for_view(path: Path, progress=None) -> dict:
    """Job body: the image and, when a label map lies beside it, the labels."""
    progress.report(0.1, "reading image")
    image = load_image(path)
    progress.check()
    progress.report(0.7, "looking for a label map")
    labels = find_labels(path, image.shape)
    return {"image": np.asarray(image), "labels": labels}


class FactorsWorkspace(Workspace):
    key = "factors"
    title = "Microarchitecture"
    sidebar_label = "Micro-\narchitecture"
    icon_name = "factors"
    extensions = IMAGE_EXTENSIONS

    def __init__(self, window):
        super().__init__(window)
        self.labels: np.ndarray | None = None
        self.info = InfoBox("Image", [("file", "File"), ("shape", "Size (px)"), ("dtype", "Data type"), ("regions", "Labelled regions")])
        overlay = QGroupBox("Region overlay")
        form = QFormLayout(overlay)
        self.show_labels = QCheckBox("Show labels")
        self.show_labels.setChecked(True)
        self.show_labels.toggled.connect(self._update_overlay)
        self.opacity = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=100, value=35)
        self.opacity.valueChanged.connect(lambda v: self.view.set_overlay_opacity(v / 100))
        form.addRow(self.show_labels)
        form.addRow("Opacity:", self.opacity)
        self.view = ImageView()
        self.assemble([self.info, overlay], self.view, "No image open",
                      "Open a brain image (PNG, TIFF — large TIFFs are memory-mapped). A label map named "
                      "<image>_labels.npz/.npy/.png beside it is shown as an overlay.", "Open image…")

    def open_file(self, path: Path) -> Job:
        return self.window.run_job(f"Open {path.name}", load_image_for_view, path,
                                   on_result=lambda result: self._show(path, result))

    def _show(self, path: Path, result: dict) -> None:
        image, self.labels = result["image"], result["labels"]
        regions = "none" if self.labels is None else ", ".join(str(v) for v in np.unique(self.labels) if v != 0)
        self.info.update_values({"file": path.name, "shape": image.shape, "dtype": str(image.dtype), "regions": regions})
        self.view.set_image(image)
        self._update_overlay()
        self.loaded(path)

    def _update_overlay(self) -> None:
        show = self.show_labels.isChecked() and self.labels is not None
        self.view.set_labels(self.labels if show else None, opacity=self.opacity.value() / 100)
