"""Morphology workspace: neuron surface meshes in 3D, colored by labels (HKS and spine posterior to come)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PyQt6.QtWidgets import QComboBox, QFormLayout, QGroupBox

from app.jobs import Job
from app.widgets.mesh_view import MeshView
from app.workspace import InfoBox, Workspace
from engine.mesh.io import MESH_EXTENSIONS, find_vertex_labels, load_mesh, mesh_summary


def load_mesh_for_view(path: Path, progress=None) -> dict:
    """Job body: mesh, its summary and any per-vertex labels found beside it."""
    progress.report(0.1, "reading mesh")
    mesh = load_mesh(path)
    progress.check()
    progress.report(0.6, "inspecting components")
    summary = mesh_summary(mesh)
    progress.check()
    labels = find_vertex_labels(path, mesh.n_vertices)
    return {"mesh": mesh, "summary": summary, "labels": labels}


class MorphologyWorkspace(Workspace):
    key = "morphology"
    title = "Morphology"
    icon_name = "morphology"
    extensions = MESH_EXTENSIONS

    def __init__(self, window):
        super().__init__(window)
        self.info = InfoBox("Mesh", [("file", "File"), ("units", "Units"), ("n_vertices", "Vertices"), ("n_faces", "Faces"),
                                     ("n_components", "Components"), ("n_isolated_vertices", "Isolated vertices"),
                                     ("n_degenerate_faces", "Zero-area faces"), ("surface_area", "Surface area")])
        display = QGroupBox("Display")
        form = QFormLayout(display)
        self.color_by = QComboBox()
        self.color_by.addItem("Surface")
        self.color_by.currentTextChanged.connect(self._recolor)
        form.addRow("Color by:", self.color_by)
        self.view = MeshView()
        self.assemble([self.info, display], self.view, "No mesh open",
                      "Open a neuron surface mesh (PLY, OBJ, OFF, STL, GLB, MeshParty HDF5) to view it in 3D.\n"
                      "Drag to rotate, scroll to zoom, Shift-drag to pan.", "Open mesh…")
        self.labels: np.ndarray | None = None

    def open_file(self, path: Path) -> Job:
        return self.window.run_job(f"Open {path.name}", load_mesh_for_view, path,
                                   on_result=lambda result: self._show(path, result))

    def _show(self, path: Path, result: dict) -> None:
        mesh, summary = result["mesh"], result["summary"]
        self.labels = result["labels"]
        self.info.update_values({**summary, "file": path.name})
        self.view.set_mesh(mesh.vertices, mesh.faces)
        self.color_by.blockSignals(True)
        self.color_by.clear()
        self.color_by.addItem("Surface")
        if self.labels is not None:
            self.color_by.addItem("Labels")
        self.color_by.blockSignals(False)
        if self.labels is not None:
            self.color_by.setCurrentText("Labels")
            self._recolor("Labels")
        self.loaded(path)

    def _recolor(self, mode: str) -> None:
        if mode == "Labels" and self.labels is not None:
            self.view.set_vertex_values(self.labels.astype(float), cmap="coolwarm",
                                        clim=(float(self.labels.min()), float(max(self.labels.max(), 1))))
        else:
            self.view.set_vertex_values(None)
