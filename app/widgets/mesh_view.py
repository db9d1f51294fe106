"""3D surface view (vispy, OpenGL): a shaded mesh, optionally colored by a per-vertex value."""

from __future__ import annotations

import numpy as np
import vispy

vispy.use(app="pyqt6", gl="gl2")

from PyQt6.QtWidgets import QVBoxLayout, QWidget  # noqa: E402
from vispy import scene  # noqa: E402
from vispy.color import get_colormap  # noqa: E402
from vispy.visuals.filters import ShadingFilter  # noqa: E402

BASE_COLOR = (0.78, 0.80, 0.84, 1.0)


class MeshView(QWidget):
    """Turntable camera (drag to rotate, wheel to zoom, shift-drag to pan)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.canvas = scene.SceneCanvas(keys=None, bgcolor="#ffffff", show=False)
        self.view = self.canvas.central_widget.add_view()
        self.view.camera = scene.TurntableCamera(fov=35, elevation=25, azimuth=40)
        self.mesh: scene.visuals.Mesh | None = None
        self.shading = ShadingFilter(shading="smooth", shininess=40, specular_light=(1, 1, 1, 0.25))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas.native)
        self.vertices = np.zeros((0, 3))
        self.faces = np.zeros((0, 3), dtype=np.uint32)

    def set_mesh(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        """Show a new mesh in the base color and frame the camera on it."""
        # Center for float32 precision on the GPU (nm coordinates are large numbers).
        self.center = vertices.mean(axis=0) if len(vertices) else np.zeros(3)
        self.vertices = np.ascontiguousarray(vertices - self.center, dtype=np.float32)
        self.faces = np.ascontiguousarray(faces, dtype=np.uint32)
        if self.mesh is not None:
            self.mesh.parent = None
        self.mesh = scene.visuals.Mesh(vertices=self.vertices, faces=self.faces, color=BASE_COLOR, parent=self.view.scene)
        self.mesh.attach(self.shading)
        if len(self.vertices):
            lo, hi = self.vertices.min(axis=0), self.vertices.max(axis=0)
            self.view.camera.set_range(x=(lo[0], hi[0]), y=(lo[1], hi[1]), z=(lo[2], hi[2]), margin=0.05)
        self.canvas.update()

    def set_vertex_values(self, values: np.ndarray | None, cmap: str = "viridis", clim: tuple[float, float] | None = None) -> None:
        """Color vertices by a scalar (None: back to the base color)."""
        if self.mesh is None:
            return
        if values is None:
            colors = np.tile(np.array(BASE_COLOR, dtype=np.float32), (len(self.vertices), 1))
        else:
            values = np.asarray(values, dtype=np.float64)
            lo, hi = clim if clim is not None else (np.nanpercentile(values, 1), np.nanpercentile(values, 99))
            scaled = np.clip((values - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
            colors = get_colormap(cmap).map(scaled).astype(np.float32)
        self.set_vertex_colors(colors)

    def set_vertex_colors(self, colors: np.ndarray) -> None:
        if self.mesh is None:
            return
        self.mesh.set_data(vertices=self.vertices, faces=self.faces, vertex_colors=colors)
        self.canvas.update()

    def clear(self) -> None:
        if self.mesh is not None:
            self.mesh.parent = None
            self.mesh = None
        self.canvas.update()
