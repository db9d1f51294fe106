"""3D surface view (vispy, OpenGL): a shaded mesh colored per vertex, with vertex picking and a brush.

Navigation: drag to rotate, wheel or right-drag to zoom, Shift-drag to pan. In paint mode a
left drag paints instead (``stroke_started`` / ``stroke_moved`` / ``stroke_ended`` with the
picked vertex); hold Space to navigate temporarily, as in napari.
"""

from __future__ import annotations

import numpy as np
import vispy

vispy.use(app="pyqt6", gl="gl2")

from PyQt6.QtCore import Qt, pyqtSignal  # noqa: E402
from PyQt6.QtWidgets import QVBoxLayout, QWidget  # noqa: E402
from vispy import scene  # noqa: E402

from app.widgets.colormaps import lut, map_values  # noqa: E402
from app.widgets.mesh_visual import IndexedMesh  # noqa: E402
from engine.mesh.entries import Surface  # noqa: E402
from engine.mesh.io import Mesh  # noqa: E402
from engine.mesh.picking import Picker  # noqa: E402

BASE_COLOR = (0.78, 0.80, 0.84, 1.0)
CLIM_SAMPLE = 100_000  # values sampled for the automatic color range


class MeshView(QWidget):
    stroke_started = pyqtSignal(int)  # vertex index under the cursor when a paint drag starts
    stroke_moved = pyqtSignal(int)
    stroke_ended = pyqtSignal()
    hovered = pyqtSignal(int)  # vertex under the cursor (-1: none), in paint mode

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.canvas = scene.SceneCanvas(keys=None, bgcolor="#ffffff", show=False)
        self.view = self.canvas.central_widget.add_view()
        self.view.camera = scene.TurntableCamera(fov=35, elevation=25, azimuth=40)
        self.mesh: IndexedMesh | None = None
        self.cursor = scene.visuals.Markers(parent=self.view.scene)
        self.cursor.visible = False
        self.cursor.order = -1
        self.points = scene.visuals.Markers(parent=self.view.scene)  # e.g. synapses, coloured by class
        self.points.visible = False
        self.points.order = -1
        self.points_data = np.zeros((0, 3), dtype=np.float32)  # as drawn (centered), with their colors
        self.points_colors = np.zeros((0, 4), dtype=np.float32)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas.native)
        # The canvas (a QOpenGLWidget) gets its own native window: in a window without one, Qt composites every
        # repaint of the WHOLE window through OpenGL (on Mesa's software rasterizer, tens of ms per progress-bar
        # tick, in every workspace); as a native child it is composited alone and the rest stays raster.
        self.canvas.native.setAttribute(Qt.WidgetAttribute.WA_NativeWindow)
        self.vertices = np.zeros((0, 3), dtype=np.float32)
        self.faces = np.zeros((0, 3), dtype=np.uint32)
        self.center = np.zeros(3)
        self.picker: Picker | None = None
        self._auto_clim: tuple[float, float] | None = None  # percentile range of the values shown
        # Colors drawn over any coloring where their alpha > 0 (hand labels, a highlighted region), mixed by
        # alpha; with one, the view composes on the CPU and uploads RGBA (else scalars go through the colormap)
        self.overlay: np.ndarray | None = None
        self._coloring: tuple = ("base",)  # what set_scalar / set_vertex_colors asked for last, to recompose
        self.paint_mode = False
        self._painting = False
        self._space_held = False
        self.canvas.events.mouse_press.connect(self._on_press)
        self.canvas.events.mouse_move.connect(self._on_move)
        self.canvas.events.mouse_release.connect(self._on_release)
        self.canvas.native.installEventFilter(self)
        self.canvas.native.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    # -- data ----------------------------------------------------------------------------
    def set_mesh(self, vertices: np.ndarray, faces: np.ndarray, picker: Picker | None = None,
                 surface: Surface | None = None) -> None:
        """Show a new mesh in the base color and frame the camera on it.

        ``picker`` and ``surface`` (built on the mesh in the background job that opened it) enable vertex
        picking and give what is uploaded; made here when not given.
        """
        self.overlay, self._coloring = None, ("base",)
        self.show_cursor(None)  # a ring on the previous mesh means nothing here
        surface = surface if surface is not None else Surface.of(Mesh(vertices, faces))
        self.center, self.vertices, self.faces = surface.center, surface.vertices, surface.faces
        self.picker = picker if picker is not None else Picker(vertices, faces)
        if self.mesh is not None:
            self.mesh.parent = None
        # Geometry is uploaded here once; recolors upload only per-vertex values or colors.
        self.mesh = IndexedMesh(self.vertices, self.faces, surface.normals, color=BASE_COLOR, parent=self.view.scene)
        self.reset_view()

    def reset_view(self) -> None:
        if len(self.vertices):
            lo, hi = self.vertices.min(axis=0), self.vertices.max(axis=0)
            self.view.camera.set_range(x=(lo[0], hi[0]), y=(lo[1], hi[1]), z=(lo[2], hi[2]), margin=0.05)
        self.canvas.update()

    def set_scalar(self, values: np.ndarray | None, cmap: str = "viridis", clim: tuple[float, float] | None = None) -> tuple[float, float]:
        """Color vertices by a scalar (None: base color); returns the color range used.

        Setting the same values again (a colormap or range change) uploads nothing but uniforms.
        """
        if values is None:
            self._coloring = ("base",)
            if self.mesh is not None:
                if self.overlay is not None:
                    self._compose()
                else:
                    self.mesh.set_base_color()
                self.canvas.update()
            return (0.0, 1.0)
        # One contiguous copy: the HKS slider passes a column of a (vertices × timescales) array,
        # strided, so every pass over it reads a cache line per value.
        values = np.array(values, dtype=np.float32)
        shown = self._coloring[1] if self._coloring[0] == "scalar" else None
        if shown is None or not np.array_equal(values, shown):
            self._auto_clim = None  # the range belongs to the values it was measured on
        unchanged = self.mesh is not None and self.mesh.values is not None and np.array_equal(values, self.mesh.values)
        if clim is None:
            if self._auto_clim is None:
                # Percentiles of an evenly strided sample: within ~0.05 percentile points of the
                # exact ones, and 10x cheaper on 1M vertices (the HKS slider recolors through here).
                sample = values[:: max(1, len(values) // CLIM_SAMPLE)]
                sample = sample[np.isfinite(sample)]
                self._auto_clim = tuple(float(q) for q in np.percentile(sample, [1, 99])) if sample.size else (0.0, 1.0)
            clim = self._auto_clim
        self._coloring = ("scalar", values, cmap, clim)
        if self.mesh is not None and self.overlay is not None:
            self._compose()
            self.canvas.update()
        elif self.mesh is not None:
            if unchanged:
                self.mesh.show_values()
            else:
                self.mesh.set_values(values)
            self.mesh.set_colormap(cmap, clim)
            self.canvas.update()
        return clim

    def set_vertex_colors(self, colors: np.ndarray) -> None:
        """One RGBA (0–1) per vertex, e.g. a label overlay (alpha is ignored: the mesh is opaque)."""
        self._coloring = ("colors", np.asarray(colors, dtype=np.float32))
        if self.mesh is None:
            return
        if self.overlay is not None:
            self._compose()
        else:
            self.mesh.set_colors(colors)
        self.canvas.update()

    def set_overlay(self, colors: np.ndarray | None, compose: bool = True) -> None:
        """RGBA (0–1) per vertex drawn over the coloring where alpha > 0, mixed by alpha (1: only the overlay);
        None, or an all-transparent array, removes it. Kept until replaced or another mesh is shown.
        ``compose=False``: only remember it, for a coloring call that follows (one upload, not two)."""
        colors = None if colors is None else np.asarray(colors, dtype=np.float32)
        if colors is not None and not (colors[:, 3] > 0).any():
            colors = None
        if colors is None and self.overlay is None:
            return
        self.overlay = colors
        if self.mesh is None or not compose:
            return
        kind = self._coloring[0]
        if colors is not None:
            self._compose()
        elif kind == "scalar":  # back to the colormap on the GPU
            _, values, cmap, clim = self._coloring
            self.mesh.set_values(values)
            self.mesh.set_colormap(cmap, clim)
        elif kind == "colors":
            self.mesh.set_colors(self._coloring[1])
        else:
            self.mesh.set_base_color()
        self.canvas.update()

    def _compose(self) -> None:
        """The last coloring with the overlay mixed over it, uploaded as RGBA."""
        kind = self._coloring[0]
        if kind == "scalar":
            _, values, cmap, clim = self._coloring
            under = map_values(values, lut(cmap), *clim)
        elif kind == "colors":
            under = self._coloring[1]
        else:
            under = np.broadcast_to(np.asarray(BASE_COLOR, np.float32), (len(self.vertices), 4))
        alpha = self.overlay[:, 3:4]
        colors = under * (1 - alpha) + self.overlay * alpha
        colors[:, 3] = 1.0
        self.mesh.set_colors(colors)

    def set_points(self, points: np.ndarray | None, colors: np.ndarray | None = None, size: float = 11) -> None:
        """Markers at ``points`` (k × 3, mesh coordinates), one RGBA each (0–1); None hides them."""
        if points is None or not len(points):
            self.points.visible = False
            self.points_data = np.zeros((0, 3), dtype=np.float32)
            self.points_colors = np.zeros((0, 4), dtype=np.float32)
        else:
            self.points_data = np.asarray(points, dtype=np.float64) - self.center
            self.points_data = self.points_data.astype(np.float32)
            self.points_colors = np.asarray(colors, dtype=np.float32)
            self.points.set_data(self.points_data, size=size, face_color=self.points_colors, edge_color=(0.1, 0.1, 0.1, 1),
                                 edge_width=1.5)
            self.points.visible = True
        self.canvas.update()

    def clear(self) -> None:
        if self.mesh is not None:
            self.mesh.parent = None
            self.mesh = None
        self.picker = None
        self.canvas.update()

    # -- camera --------------------------------------------------------------------------
    def focus_on(self, point: np.ndarray, size: float) -> None:
        """Center the camera on ``point`` (mesh coordinates) with about ``size`` in view."""
        self.view.camera.center = tuple(np.asarray(point, dtype=np.float64) - self.center)
        self.view.camera.scale_factor = max(float(size), 1e-9)
        self.show_cursor(point)
        self.canvas.update()

    def show_cursor(self, point: np.ndarray | None) -> None:
        if point is None:
            self.cursor.visible = False
        else:
            self.cursor.set_data(np.asarray([point], dtype=np.float32) - self.center.astype(np.float32), size=14,
                                 face_color=(1, 1, 1, 0), edge_color=(0.9, 0.1, 0.1, 1), edge_width=2)
            self.cursor.visible = True
        self.canvas.update()

    # -- picking -------------------------------------------------------------------------
    def screen_position(self, vertex: int) -> tuple[float, float]:
        """Canvas pixel position of a vertex (logical pixels, as mouse events use)."""
        transform = self.view.scene.transform
        x, y, _, w = transform.map(np.append(self.vertices[vertex], 1.0))
        return float(x / w), float(y / w)

    def ray_at(self, pos: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """The ray under canvas position ``pos`` as (origin, direction) in view (centered mesh) coordinates."""
        transform = self.view.scene.transform
        near = transform.imap([pos[0], pos[1], -1.0, 1.0])
        far = transform.imap([pos[0], pos[1], 1.0, 1.0])
        near, far = near[:3] / near[3], far[:3] / far[3]
        return near, far - near

    def vertex_at(self, pos: tuple[float, float]) -> int:
        """Index of the vertex under ``pos``, or -1."""
        if self.picker is None:
            return -1
        origin, direction = self.ray_at(pos)
        hit = self.picker.pick(origin + self.center, direction)  # the picker works in mesh coordinates
        return -1 if hit is None else hit.vertex

    # -- interaction ---------------------------------------------------------------------
    def set_paint_mode(self, on: bool) -> None:
        self.paint_mode = on
        self.view.camera.interactive = not on
        self.canvas.native.setCursor(Qt.CursorShape.CrossCursor if on else Qt.CursorShape.ArrowCursor)

    def eventFilter(self, obj, event) -> bool:
        # Space held in paint mode: navigate temporarily.
        if self.paint_mode and event.type() in (event.Type.KeyPress, event.Type.KeyRelease) and event.key() == Qt.Key.Key_Space:
            if not event.isAutoRepeat():
                self._space_held = event.type() == event.Type.KeyPress
                self.view.camera.interactive = self._space_held
            return True
        return super().eventFilter(obj, event)

    def _painting_allowed(self, event) -> bool:
        return self.paint_mode and not self._space_held and event.button == 1

    def _on_press(self, event) -> None:
        if not self._painting_allowed(event):
            return
        vertex = self.vertex_at(event.pos)
        if vertex >= 0:
            self._painting = True
            self.stroke_started.emit(vertex)

    def _on_move(self, event) -> None:
        if not self.paint_mode or self._space_held:
            return
        vertex = self.vertex_at(event.pos)
        self.show_cursor(None if vertex < 0 else self.vertices[vertex] + self.center)
        if self._painting and vertex >= 0:
            self.stroke_moved.emit(vertex)

    def _on_release(self, event) -> None:
        if self._painting:
            self._painting = False
            self.stroke_ended.emit()
