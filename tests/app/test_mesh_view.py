"""MeshView's recolor path: the pixels follow the colors, and a recolor uploads only per-vertex
colors or values and draws no triangles (the deferred G-buffer is reused); the forward fallback,
vispy's picking and widget screenshots show the same mesh."""

import numpy as np
import pytest
from vispy.geometry import create_sphere

from app.screenshots import image_to_array
from app.widgets.colormaps import lut
from app.widgets.mesh_view import MeshView
from app.widgets.mesh_visual import DATA_WIDTH


def shown_view(qtbot) -> MeshView:
    view = MeshView()
    qtbot.addWidget(view)
    view.resize(400, 300)
    view.show()
    qtbot.waitExposed(view)
    return view


@pytest.fixture
def view(qtbot):
    sphere = create_sphere(rows=40, cols=40, radius=1.0)
    view = shown_view(qtbot)
    view.set_mesh(sphere.get_vertices() * 1000.0 + 5000.0, sphere.get_faces())  # nm-like, off-origin
    qtbot.waitUntil(lambda: view.mesh._gbuffer_key is not None, timeout=5000)  # drawn, then its G-buffer
    return view


def front_vertex(view):
    """The vertex drawn nearest the canvas center, in front."""
    mapped = view.view.scene.transform.map(np.c_[view.vertices, np.ones(len(view.vertices))])
    xy, depth = mapped[:, :2] / mapped[:, 3:4], mapped[:, 2] / mapped[:, 3]
    width, height = view.canvas.size
    near = np.flatnonzero(np.hypot(xy[:, 0] - width / 2, xy[:, 1] - height / 2) < 20)
    return int(near[np.argmin(depth[near])])


def pixel_at(view, vertex):
    x, y = view.screen_position(vertex)
    return view.canvas.render()[int(round(y)), int(round(x)), :3].astype(int)


class GlirLog:
    """The GL commands the canvas executes (vispy's GLIR), to see what a draw uploads and draws."""

    def __init__(self, canvas):
        self.commands = []
        parser = canvas.context.shared.parser
        parse = parser.parse
        parser.parse = lambda commands: (self.commands.extend(commands), parse(commands))[1]

    def take(self):
        commands, self.commands = self.commands, []
        uploads = [c[3].nbytes for c in commands if c[0] == "DATA" and isinstance(c[3], np.ndarray)]  # not shader code
        triangle_draws = sum(1 for c in commands if c[0] == "DRAW" and c[2] == "triangles")
        return uploads, triangle_draws


def test_scalar_colormap_and_overlay_recolor_pixels_without_geometry_uploads(view):
    n = len(view.vertices)
    vertex = front_vertex(view)
    view.set_scalar(np.zeros(n), "viridis", (0.0, 1.0))
    low = pixel_at(view, vertex)
    log = GlirLog(view.canvas)

    view.set_scalar(np.ones(n), "viridis", (0.0, 1.0))
    high = pixel_at(view, vertex)
    uploads, triangle_draws = log.take()
    # viridis runs from dark purple (blue > green) to yellow (red and green ≫ blue)
    assert low[2] > low[1] and high[0] > high[2] + 80 and high[1] > high[2] + 80
    assert uploads == [4 * DATA_WIDTH * -(-n // DATA_WIDTH)]  # the float32 values, and no geometry
    assert triangle_draws == 0  # the G-buffer of the same camera is reused

    view.set_scalar(np.ones(n), "grays", (0.0, 2.0))  # new colormap: its 1 KB table is uploaded once
    pixel_at(view, vertex)
    view.set_scalar(np.ones(n), "viridis", (0.0, 1.0))
    pixel_at(view, vertex)
    log.take()
    view.set_scalar(np.ones(n), "grays", (0.0, 2.0))  # a known colormap and a new range: uniforms only
    gray = pixel_at(view, vertex)
    uploads, triangle_draws = log.take()
    assert uploads == [] and triangle_draws == 0
    assert np.ptp(gray) < 12 and 40 < gray.mean() < 200  # mid-gray, shaded

    red = np.tile(np.array([0.9, 0.1, 0.1, 1.0], dtype=np.float32), (n, 1))
    view.set_vertex_colors(red)
    overlay = pixel_at(view, vertex)
    uploads, triangle_draws = log.take()
    assert overlay[0] > overlay[1] + 100 and overlay[0] > overlay[2] + 100
    assert uploads == [16 * DATA_WIDTH * -(-n // DATA_WIDTH)] and triangle_draws == 0  # RGBA float32
    np.testing.assert_array_equal(view.mesh.mesh_data.get_vertex_colors(), red)

    view.view.camera.azimuth += 30  # while the camera moves, the triangles are drawn directly
    pixel_at(view, vertex)
    assert log.take()[1] == 1
    pixel_at(view, vertex)  # once it stops, into the G-buffer, once, uploading nothing
    assert log.take() == ([], 1)
    pixel_at(view, vertex)
    assert log.take() == ([], 0)


def test_forward_fallback_and_vispy_picking_match_the_deferred_image(view):
    n = len(view.vertices)
    values = view.vertices[:, 0] - view.vertices[:, 0].min()
    view.set_scalar(values, "viridis")
    deferred = view.canvas.render()[..., :3].astype(int)
    vertex = front_vertex(view)
    x, y = view.screen_position(vertex)
    view.mesh.interactive = True  # vispy's picking renders only interactive visuals, through their main program
    assert view.mesh in view.canvas.visuals_at((x, y), radius=2)
    np.testing.assert_array_equal(view.canvas.render()[..., :3], deferred)  # and leave the deferred image intact

    view.mesh.allow_deferred = False  # as in a context without gl_PrimitiveID or float textures
    forward = view.canvas.render()[..., :3].astype(int)
    drawn = (deferred != 255).any(axis=2) | (forward != 255).any(axis=2)
    assert drawn.mean() > 0.1
    # The same shading; the two differ only in how colors are interpolated (LUT per pixel vs
    # per vertex) and in depth precision at the silhouette.
    assert np.abs(forward - deferred)[drawn].mean() < 1
    assert len(view.mesh.mesh_data.get_vertex_colors()) == n


def test_auto_color_range_is_the_1_99_percentile_and_reused_for_a_colormap_change(view):
    n = len(view.vertices)
    values = np.linspace(0.0, 100.0, n)
    lo, hi = view.set_scalar(values, "viridis")
    assert lo == pytest.approx(1.0, abs=0.2) and hi == pytest.approx(99.0, abs=0.2)
    assert view.set_scalar(values.copy(), "hot") == (lo, hi)
    np.testing.assert_allclose(view.mesh.vertex_colors()[-1], lut("hot")[-1])
    assert view.set_scalar(values * 2, "hot")[1] == pytest.approx(198.0, abs=0.4)


def test_widget_screenshot_taken_as_the_gbuffer_is_redrawn_shows_the_mesh(view):
    view.set_scalar(np.ones(len(view.vertices)), "viridis", (0.0, 1.0))
    view.grab()
    view.view.camera.azimuth += 30
    view.grab()  # the camera moved: the triangles are drawn directly
    x, y = view.screen_position(front_vertex(view))
    pixel = image_to_array(view.grab().toImage())[int(round(y)), int(round(x)), :3].astype(int)  # the G-buffer is redrawn
    assert pixel[0] > pixel[2] + 80 and pixel[1] > pixel[2] + 80, pixel  # viridis yellow, not the window background


def test_a_new_mesh_is_first_drawn_directly_and_its_gbuffer_follows(qtbot):
    """The window waits for one direct draw of a new mesh's triangles (on a software renderer the G-buffer pass,
    its texture uploads and the resolve cost more); the G-buffer is drawn at the next turn of the event loop."""
    sphere = create_sphere(rows=40, cols=40, radius=1.0)
    view = shown_view(qtbot)
    draws = []
    parser = view.canvas.context.shared.parser
    parse = parser.parse
    parser.parse = lambda commands: (draws.extend(c[2] for c in commands if c[0] == "DRAW"), parse(commands))[1]
    view.set_mesh(sphere.get_vertices(), sphere.get_faces())
    qtbot.waitUntil(lambda: view.mesh._gbuffer_key is not None, timeout=5000)
    assert draws[:3] == ["triangles", "triangles", "triangle_strip"]  # direct; then G-buffer and resolve
    first_frame = view.mesh._gbuffer_key
    x, y = view.screen_position(front_vertex(view))
    pixel = image_to_array(view.grab().toImage())[int(round(y)), int(round(x)), :3].astype(int)
    assert view.mesh._gbuffer_key == first_frame and 100 < pixel.mean() < 250  # the shaded base colour
