"""An indexed, smooth-shaded triangle mesh for vispy that recolors without redrawing its triangles.

vispy's ``Mesh`` visual draws unindexed triangles: every color change re-uploads three positions
and three colors per face and recomputes normals (778 ms per recolor of 1M vertices on Mesa
llvmpipe). Here geometry is uploaded once per mesh, a scalar recolor uploads one float32 per
vertex (colored through a colormap texture), a colormap or range change only sets uniforms, and
arbitrary colors (label overlays) upload one RGBA per vertex.

Drawing 2M triangles still costs a software renderer about half a second whatever their
colors, so when the context allows it (GL_EXT_gpu_shader4 for gl_PrimitiveID, float textures)
the mesh is drawn deferred: a G-buffer pass stores, per pixel, the face, barycentric
coordinates, depth and lighting, and is redone only when the camera or the viewport has changed;
every draw then colors the pixels from that buffer (a pass over the mesh's screen rectangle
with a few texture reads per pixel), so a recolor or a cursor move costs pixels, not triangles.
While the camera moves, for a new mesh's first frame (its G-buffer follows a turn later), for
vispy's picking renders, and where the context lacks those features, the indexed triangles are
drawn directly ("forward").
"""

from __future__ import annotations

import numpy as np
from PyQt6.QtCore import QTimer
from vispy.geometry import MeshData
from vispy.gloo import FrameBuffer, IndexBuffer, Program, RenderBuffer, Texture2D, VertexBuffer, gl
from vispy.scene.visuals import create_visual_node
from vispy.visuals import Visual
from vispy.visuals.shaders import ModularProgram

from app.widgets.colormaps import LUT_SIZE, lut, map_values

BASE, SCALAR, RGBA = 0, 1, 2  # color modes (u_mode)
# The per-vertex and per-face data textures hold one element per texel, DATA_WIDTH per row: a
# power of two, so that the index → texel arithmetic of the shaders (float32) is exact below MAX_INDEX.
DATA_WIDTH = 4096
MAX_INDEX = 1 << 24
GL_DEPTH_COMPONENT24 = 0x81A6  # vispy's "depth" render buffers are 16-bit: too coarse for long meshes

# Blinn-Phong, lit from the camera, in visual coordinates. Two-sided, so that meshes with
# inconsistent winding or open ends shade the same from either side.
LIGHTING = """
uniform vec3 u_light;  // unit vector toward the light
uniform vec3 u_eye;  // unit vector toward the camera

vec2 lighting(vec3 normal) {  // (diffuse + ambient factor, specular intensity), each in 0-1
    normal = normalize(normal);
    if (dot(normal, u_eye) < 0.0) {
        normal = -normal;
    }
    float diffuse = max(dot(normal, u_light), 0.0);
    return vec2(0.25 + 0.75 * diffuse, pow(max(dot(normal, normalize(u_light + u_eye)), 0.0), 40.0));
}

vec4 shade(vec4 color, vec2 light) {
    return vec4(color.rgb * light.x + 0.2 * light.y, 1.0);
}
"""

COLORING = f"""
uniform int u_mode;
uniform vec4 u_base_color;
uniform vec2 u_clim;  // (low, 1 / (high - low)); scale 0 for an empty range, as map_values
uniform sampler2D u_lut;

vec4 colormap(float value) {{
    float t = clamp((value - u_clim.x) * u_clim.y, 0.0, 1.0);
    // texel centers of the first and last entries at t = 0 and 1
    return texture2D(u_lut, vec2(t * {(LUT_SIZE - 1) / LUT_SIZE} + {0.5 / LUT_SIZE}, 0.5));
}}
"""

TEXEL = f"""
vec2 texel(float index, float rows) {{  // texture coordinates of element ``index`` of a data texture
    float row = floor(index / {DATA_WIDTH}.0);
    return vec2(index - row * {DATA_WIDTH}.0 + 0.5, row + 0.5) / vec2({DATA_WIDTH}.0, rows);
}}
"""

FORWARD_VERTEX = """
attribute vec3 a_position;
attribute vec3 a_normal;
attribute float a_value;
attribute vec4 a_color;
varying vec3 v_normal;
varying float v_value;
varying vec4 v_color;

void main() {
    v_normal = a_normal;
    v_value = a_value;
    v_color = a_color;
    gl_Position = $transform(vec4(a_position, 1.0));
}
"""

FORWARD_FRAGMENT = LIGHTING + COLORING + f"""
varying vec3 v_normal;
varying float v_value;
varying vec4 v_color;

void main() {{
    vec4 color = u_mode == {SCALAR} ? colormap(v_value) : u_mode == {RGBA} ? v_color : u_base_color;
    gl_FragColor = shade(color, lighting(v_normal));
}}
"""

GBUFFER_VERTEX = """
attribute vec3 a_position;
attribute vec3 a_normal;
varying vec3 v_position;
varying vec3 v_normal;

void main() {
    v_position = a_position;
    v_normal = a_normal;
    gl_Position = $transform(vec4(a_position, 1.0));
}
"""

# Per pixel: (face + 1, barycentrics b1 and b2 packed as 12-bit integers, depth, lighting packed
# as 10-bit integers). Integers below 2^24 are exact in float32; 0 marks the background.
GBUFFER_FRAGMENT = "#extension GL_EXT_gpu_shader4 : require\n" + LIGHTING + TEXEL + """
uniform sampler2D u_faces;  // vertex indices of each face
uniform sampler2D u_positions;
uniform float u_face_rows;
uniform float u_vertex_rows;
varying vec3 v_position;
varying vec3 v_normal;

void main() {
    float face = float(gl_PrimitiveID);
    vec3 corners = texture2D(u_faces, texel(face, u_face_rows)).xyz;
    vec3 a = texture2D(u_positions, texel(corners.x, u_vertex_rows)).xyz;
    vec3 e0 = texture2D(u_positions, texel(corners.y, u_vertex_rows)).xyz - a;
    vec3 e1 = texture2D(u_positions, texel(corners.z, u_vertex_rows)).xyz - a;
    vec3 e2 = v_position - a;
    float d00 = dot(e0, e0), d01 = dot(e0, e1), d11 = dot(e1, e1), d20 = dot(e2, e0), d21 = dot(e2, e1);
    float det = d00 * d11 - d01 * d01;
    vec2 b = det > 0.0 ? clamp(vec2(d11 * d20 - d01 * d21, d00 * d21 - d01 * d20) / det, 0.0, 1.0) : vec2(0.0);
    vec2 light = lighting(v_normal);
    gl_FragColor = vec4(face + 1.0, floor(b.x * 4095.0 + 0.5) * 4096.0 + floor(b.y * 4095.0 + 0.5),
                        gl_FragCoord.z, floor(light.x * 1023.0 + 0.5) * 1024.0 + floor(light.y * 1023.0 + 0.5));
}
"""

RESOLVE_VERTEX = """
attribute vec2 a_corner;  // (0 or 1, 0 or 1)
uniform vec4 u_rect;  // the mesh's screen rectangle, in normalized device coordinates: only its pixels are colored

void main() {
    gl_Position = vec4(mix(u_rect.xy, u_rect.zw, a_corner), 0.0, 1.0);
}
"""

RESOLVE_FRAGMENT = COLORING + TEXEL + f"""
uniform sampler2D u_gbuffer;
uniform vec4 u_viewport;
uniform sampler2D u_faces;
uniform sampler2D u_values;
uniform sampler2D u_colors;
uniform float u_face_rows;
uniform float u_vertex_rows;

void main() {{
    vec4 g = texture2D(u_gbuffer, (gl_FragCoord.xy - u_viewport.xy) / u_viewport.zw);
    if (g.x == 0.0) {{
        discard;
    }}
    vec3 corners = texture2D(u_faces, texel(g.x - 1.0, u_face_rows)).xyz;
    float b1 = floor(g.y / 4096.0);
    vec3 w = vec3(0.0, b1, g.y - b1 * 4096.0) / 4095.0;
    w.x = max(1.0 - w.y - w.z, 0.0);
    vec4 color = u_base_color;
    if (u_mode == {SCALAR}) {{
        color = colormap(w.x * texture2D(u_values, texel(corners.x, u_vertex_rows)).x
                         + w.y * texture2D(u_values, texel(corners.y, u_vertex_rows)).x
                         + w.z * texture2D(u_values, texel(corners.z, u_vertex_rows)).x);
    }} else if (u_mode == {RGBA}) {{
        color = w.x * texture2D(u_colors, texel(corners.x, u_vertex_rows))
                + w.y * texture2D(u_colors, texel(corners.y, u_vertex_rows))
                + w.z * texture2D(u_colors, texel(corners.z, u_vertex_rows));
    }}
    float lit = floor(g.w / 1024.0);  // as lighting(): (ambient + diffuse, specular), unpacked
    gl_FragColor = vec4(color.rgb * lit / 1023.0 + 0.2 * (g.w - lit * 1024.0) / 1023.0, 1.0);
    gl_FragDepth = g.z;
}}
"""

# The light sits just above and left of the camera: a pure headlight lights every face seen
# head-on alike and flattens the relief.
LIGHT_OFFSET = (-0.4, 0.5)  # (right, up) relative to the direction toward the camera


class DataTexture:
    """One element of a float32 array per texel of a float texture DATA_WIDTH texels wide, row
    after row, fetched by index with ``texel()`` in the shaders."""

    def __init__(self, n: int, channels: int):
        self.rows = max(1, -(-n // DATA_WIDTH))
        self.channels = channels
        formats = {1: ("red", "r32f"), 3: ("rgb", "rgb32f"), 4: ("rgba", "rgba32f")}[channels]
        self.texture = Texture2D(shape=(self.rows, DATA_WIDTH, channels), format=formats[0], internalformat=formats[1],
                                 interpolation="nearest")

    def upload(self, data: np.ndarray) -> None:
        """Upload ``data`` (n or n × channels, contiguous float32; read at the next draw, so not
        to be modified until then): whole rows without a copy, then the padded last row."""
        data = data.reshape(len(data), self.channels)
        full = len(data) // DATA_WIDTH
        if full:
            self.texture.set_data(data[: full * DATA_WIDTH].reshape(full, DATA_WIDTH, self.channels), offset=(0, 0))
        if full < self.rows:
            last = np.zeros((1, DATA_WIDTH, self.channels), dtype=np.float32)
            last[0, : len(data) - full * DATA_WIDTH] = data[full * DATA_WIDTH:]
            self.texture.set_data(last, offset=(full, 0))


class IndexedMeshVisual(Visual):
    """Triangles drawn through an index buffer, colored by a uniform color, a scalar + colormap, or
    RGBA per vertex. Used as the scene node IndexedMesh (drawing needs the node's canvas)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, color=(0.5, 0.5, 0.5, 1.0)):
        """``vertices`` float32, ``faces`` uint32 and unit ``normals`` float32 (:class:`engine.mesh.entries.Surface`)."""
        self._gbuffer = ModularProgram(GBUFFER_VERTEX, GBUFFER_FRAGMENT)  # before Visual's init sets transforms
        super().__init__(vcode=FORWARD_VERTEX, fcode=FORWARD_FRAGMENT)
        self.set_gl_state("opaque", depth_test=True, cull_face=False)
        self._draw_mode = "triangles"
        self.vertices = np.ascontiguousarray(vertices, dtype=np.float32)
        self.faces = np.ascontiguousarray(faces, dtype=np.uint32)
        self._bounds = np.c_[self.vertices.min(axis=0), self.vertices.max(axis=0)] if len(vertices) else np.zeros((3, 2))
        self._index_buffer = IndexBuffer(self.faces)
        positions = VertexBuffer(self.vertices)
        normals = VertexBuffer(np.ascontiguousarray(normals, dtype=np.float32))
        self.shared_program["a_position"] = positions
        self.shared_program["a_normal"] = normals
        self._gbuffer["a_position"] = positions
        self._gbuffer["a_normal"] = normals
        self._resolve = Program(RESOLVE_VERTEX, RESOLVE_FRAGMENT)
        self._resolve["a_corner"] = np.array([(0, 0), (1, 0), (0, 1), (1, 1)], dtype=np.float32)
        self.allow_deferred = True  # False: always draw the triangles (the fallback path; for comparisons)
        self._deferred: bool | None = None  # whether the context can draw deferred: known at the first draw
        self._gbuffer_key = None  # (viewport, transform) the G-buffer was drawn for
        self._last_key = None  # and those of the last draw
        self._fbo: FrameBuffer | None = None
        # Per-vertex values and colors are uploaded at draw time, for the path that draws, and
        # only when they changed since that path's last upload.
        self._versions = {"values": 0, "colors": 0}
        self._uploaded: dict[tuple[str, str], int] = {}  # (path, kind) → version
        self._values_buffer: VertexBuffer | None = None
        self._colors_buffer: VertexBuffer | None = None
        self._values_texture: DataTexture | None = None
        self._colors_texture: DataTexture | None = None
        self._textures: dict[str, Texture2D] = {}  # colormap name → LUT texture, uploaded once
        # What is shown, kept on the CPU for uploads and vertex_colors()
        self.mode = BASE
        self.base_color = np.asarray(color, dtype=np.float32)
        self.values: np.ndarray | None = None
        self.colors: np.ndarray | None = None
        self._set_uniform("u_base_color", tuple(self.base_color))
        self.set_colormap("viridis", (0.0, 1.0))
        self._set_mode(BASE)

    # -- colors ------------------------------------------------------------------------
    def set_base_color(self, color=None) -> None:
        """One color for the whole mesh: uniforms only."""
        if color is not None:
            self.base_color = np.asarray(color, dtype=np.float32)
            self._set_uniform("u_base_color", tuple(self.base_color))
        self._set_mode(BASE)

    def set_values(self, values: np.ndarray) -> None:
        """One scalar per vertex, shown through the colormap and range (uploaded as float32)."""
        # Copied: uploads happen at the next draw, and vertex_colors() reads it later. NaN and
        # ±inf become huge finite numbers: the low (high) end of the colormap, as map_values does.
        values = np.array(values, dtype=np.float32).ravel()
        if not np.isfinite(values).all():
            big = np.finfo(np.float32).max
            np.nan_to_num(values, copy=False, nan=-big, posinf=big, neginf=-big)
        self.values = values
        self._versions["values"] += 1
        self._set_mode(SCALAR)

    def show_values(self) -> None:
        """Color by the scalar set last, without uploading it again."""
        self._set_mode(SCALAR)

    def set_colormap(self, cmap: str, clim: tuple[float, float]) -> None:
        """Colormap (a name known to app.widgets.colormaps) and value range: uniforms only, once
        each colormap's 1 KB texture has been uploaded."""
        if cmap not in self._textures:
            table = np.round(lut(cmap) * 255).astype(np.uint8)[None]  # (1, LUT_SIZE, 4)
            self._textures[cmap] = Texture2D(table, interpolation="linear", wrapping="clamp_to_edge")
        self.cmap, self.clim = cmap, (float(clim[0]), float(clim[1]))
        lo, hi = self.clim
        self._set_uniform("u_lut", self._textures[cmap])
        self._set_uniform("u_clim", (lo, 1.0 / (hi - lo) if hi > lo else 0.0))
        self.update()

    def set_colors(self, colors: np.ndarray) -> None:
        """One RGBA (0–1) per vertex; alpha is ignored (the mesh is opaque)."""
        self.colors = np.array(colors, dtype=np.float32).reshape(len(self.vertices), 4)
        self._versions["colors"] += 1
        self._set_mode(RGBA)

    def _set_mode(self, mode: int) -> None:
        self.mode = mode
        self._set_uniform("u_mode", mode)
        self.update()

    def _set_uniform(self, name: str, value) -> None:
        self.shared_program[name] = value
        self._resolve[name] = value

    def vertex_colors(self) -> np.ndarray:
        """(n, 4) float32 color of each vertex as shown (before shading); the colormap applied on
        the CPU as map_values does (the shaders interpolate between its entries)."""
        if self.mode == SCALAR:
            return map_values(self.values, lut(self.cmap), *self.clim)
        if self.mode == RGBA:
            return self.colors
        return np.tile(self.base_color, (len(self.vertices), 1))

    @property
    def mesh_data(self) -> MeshData:
        """A vispy MeshData of what is shown, built on demand (for code written against vispy's Mesh)."""
        return MeshData(vertices=self.vertices, faces=self.faces, vertex_colors=self.vertex_colors())

    # -- uploads -----------------------------------------------------------------------
    def _data_to_upload(self, path: str) -> tuple[str, np.ndarray] | None:
        """("values" | "colors", array) that ``path`` must upload before drawing, or None."""
        if self.mode == BASE:
            return None
        kind, data = ("values", self.values) if self.mode == SCALAR else ("colors", self.colors)
        if self._uploaded.get((path, kind)) == self._versions[kind]:
            return None
        self._uploaded[path, kind] = self._versions[kind]
        return kind, data

    def _sync_forward(self) -> None:
        """Upload (on first use, then in place) and bind only the current mode's vertex buffer,
        so that a draw never fetches an unused 4 or 16 MB attribute."""
        upload = self._data_to_upload("forward")
        if upload is not None:
            kind, data = upload
            name = f"_{kind}_buffer"
            if getattr(self, name) is None:
                setattr(self, name, VertexBuffer(data))
            else:
                getattr(self, name).set_data(data)
        self.shared_program["a_value"] = self._values_buffer if self.mode == SCALAR else 0.0
        self.shared_program["a_color"] = self._colors_buffer if self.mode == RGBA else (0.0, 0.0, 0.0, 0.0)

    def _sync_deferred(self) -> None:
        upload = self._data_to_upload("deferred")
        if upload is None:
            return
        kind, data = upload
        name = f"_{kind}_texture"
        if getattr(self, name) is None:
            setattr(self, name, DataTexture(len(self.vertices), data.shape[1] if data.ndim == 2 else 1))
            self._resolve[f"u_{kind}"] = getattr(self, name).texture
        getattr(self, name).upload(data)

    def _init_deferred(self) -> bool:
        """Whether this context can draw deferred; if so, upload the geometry textures."""
        extensions = gl.glGetParameter(gl.GL_EXTENSIONS) or ""  # none listed this way in a core profile
        if not ({"GL_EXT_gpu_shader4", "GL_ARB_texture_float"} <= set(extensions.split())
                and max(len(self.vertices), len(self.faces)) < MAX_INDEX):
            return False
        faces = DataTexture(len(self.faces), 3)
        faces.upload(self.faces.astype(np.float32))
        positions = DataTexture(len(self.vertices), 3)
        positions.upload(self.vertices)
        for program in (self._gbuffer, self._resolve):
            program["u_faces"] = faces.texture
            program["u_face_rows"] = float(faces.rows)
            program["u_vertex_rows"] = float(positions.rows)
        self._gbuffer["u_positions"] = positions.texture
        # Textures a mode never used are still sampled by name: bind placeholders.
        placeholder = Texture2D(np.zeros((1, 1, 4), dtype=np.float32), internalformat="rgba32f")
        self._resolve["u_values"] = self._resolve["u_colors"] = placeholder
        self._fbo = FrameBuffer(color=Texture2D(shape=(1, 1, 4), internalformat="rgba32f", interpolation="nearest"),
                                depth=RenderBuffer((1, 1), format=GL_DEPTH_COMPONENT24))
        return True

    # -- drawing -----------------------------------------------------------------------
    def draw(self) -> None:
        if not self.visible:
            return
        if self.allow_deferred and self._deferred is None:
            self._deferred = self._init_deferred()
        if not (self.allow_deferred and self._deferred) or self.picking:  # picking colors by object id, in the main program
            self._draw_forward()
            return
        canvas = self.canvas
        # vispy keeps the active viewport only in this stack; the G-buffer must match it pixel for pixel
        viewport = tuple(canvas._vp_stack[-1]) if canvas._vp_stack else (0, 0, *canvas.physical_size)
        key = (viewport, self._transform_fingerprint())
        moving, self._last_key = key != self._last_key, key
        if key != self._gbuffer_key:
            if moving:
                # While the camera moves, draw the triangles directly: with gl_PrimitiveID llvmpipe's
                # G-buffer pass costs ~1.4x a direct draw. The G-buffer is redrawn once it stops.
                # So is a new mesh's first frame, and the G-buffer drawn at the next event-loop turn: the
                # window then waits for one direct draw, not for the texture uploads, G-buffer and resolve.
                self._draw_forward()
                if self._gbuffer_key is None and self.canvas is not None:
                    QTimer.singleShot(0, self.canvas.update)  # vispy ignores an update asked for while it draws
                return
            self._prepare_draw(self)
            self._draw_gbuffer(canvas, viewport)
            self._gbuffer_key = key
        self._sync_deferred()
        self._configure_gl_state()
        self._resolve["u_viewport"] = tuple(float(x) for x in viewport)
        self._resolve.draw("triangle_strip")

    def _draw_forward(self) -> None:
        self._sync_forward()
        super().draw()

    def _draw_gbuffer(self, canvas, viewport) -> None:
        width, height = viewport[2], viewport[3]
        if self._fbo.color_buffer.shape[:2] != (height, width):
            self._fbo.resize((height, width))
        context = canvas.context
        with self._fbo:
            context.set_viewport(0, 0, width, height)
            context.set_state(depth_test=True, blend=False, cull_face=False, depth_mask=True)
            context.set_clear_color((0.0, 0.0, 0.0, 0.0))
            context.clear(color=True, depth=True)
            self._gbuffer.draw("triangles", self._index_buffer)
        context.set_viewport(*viewport)
        # vispy's Qt backend clears the frame's alpha with the current clear color after drawing:
        # left transparent, the widget would grab (screenshots) as the window's background.
        context.set_clear_color(canvas.bgcolor)
        self._resolve["u_gbuffer"] = self._fbo.color_buffer
        self._resolve["u_rect"] = self._screen_rect()

    def _screen_rect(self) -> tuple[float, float, float, float]:
        """The projection of the mesh's bounding box (x0, y0, x1, y1), in normalized device
        coordinates; the whole viewport when the box reaches behind the camera."""
        corners = np.array(np.meshgrid(*self._bounds, indexing="ij")).reshape(3, -1).T
        clip = np.asarray(self.transforms.get_transform().map(np.c_[corners, np.ones(8)]))
        if (clip[:, 3] <= 0).any():
            return (-1.0, -1.0, 1.0, 1.0)
        xy = np.clip(clip[:, :2] / clip[:, 3:4], -1.0, 1.0)
        return (*map(float, xy.min(axis=0)), *map(float, xy.max(axis=0)))

    def _transform_fingerprint(self) -> bytes:
        """Where the visual → render transform sends a few points: changes with the camera."""
        probe = np.array([[0, 0, 0, 1], [1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1]], dtype=float)
        return np.asarray(self.transforms.get_transform().map(probe)).tobytes()

    def _prepare_transforms(self, view) -> None:
        view.view_program.vert["transform"] = view.get_transform()
        self._gbuffer.vert["transform"] = view.get_transform()

    def _prepare_draw(self, view) -> bool:
        light, eye = self._light_and_eye(view)
        for name, value in (("u_light", tuple(light)), ("u_eye", tuple(eye))):
            self.shared_program[name] = value
            self._gbuffer[name] = value
        return True

    @staticmethod
    def _light_and_eye(view) -> tuple[np.ndarray, np.ndarray]:
        """Directions toward the light and the camera in visual coordinates, from the ray through
        the canvas center: the lighting follows the camera."""
        canvas = view.transforms.canvas
        if canvas is None:
            return np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.0, 1.0])
        x, y = np.asarray(canvas.size, dtype=float) / 2
        to_visual = view.transforms.get_transform("canvas", "visual")
        points = to_visual.map(np.array([[x, y, 0.0, 1.0], [x, y, 0.5, 1.0], [x + 1, y, 0.0, 1.0], [x, y - 1, 0.0, 1.0]]))
        near, far, right, up = points[:, :3] / points[:, 3:4]
        eye = _unit(near - far)
        right = _unit(right - near)
        up = _unit(up - near)
        return _unit(eye + LIGHT_OFFSET[0] * right + LIGHT_OFFSET[1] * up), eye

    def _compute_bounds(self, axis, view):
        return tuple(self._bounds[axis])


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector


IndexedMesh = create_visual_node(IndexedMeshVisual)
