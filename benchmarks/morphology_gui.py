"""Interactive costs of the morphology workspace on a 1M-vertex mesh.

Goals (issue): recoloring when the timescale slider moves ≤ 50 ms (colors only, no
recompute), a pick ≤ 50 ms. Also the brush stroke and, when a display is available, each
recolor of the panel (timescale, colormap, label overlay) with its upload and a full redraw,
side by side on the old path (vispy's Mesh visual) and on MeshView, forward and deferred. The
mesh is a long tube (a procedural "neuron" of 1M vertices) so the picking ray crosses a
realistic number of candidate faces.

Run: ``python -m benchmarks.morphology_gui``; for the OpenGL rows under a display, e.g.
``xvfb-run -a -s "-screen 0 1600x1000x24" python -m benchmarks.morphology_gui``.
"""

from __future__ import annotations

import gc
import itertools
import os
import statistics
import time
from functools import partial

import numpy as np

from benchmarks.common import machine_header, markdown_table, peak_rss_mb, ratio, time_call

CANVAS_SIZE = (1200, 800)


def tube(n_around: int = 100, n_along: int = 10_000, radius: float = 0.5, length: float = 500.0):
    """A closed-ish tube of n_around × n_along vertices along x, gently bent."""
    theta = np.linspace(0, 2 * np.pi, n_around, endpoint=False)
    x = np.linspace(0, length, n_along)
    bend = 3.0 * np.sin(x / 40.0)
    X = np.repeat(x, n_around)
    Y = np.tile(radius * np.cos(theta), n_along) + np.repeat(bend, n_around)
    Z = np.tile(radius * np.sin(theta), n_along)
    vertices = np.c_[X, Y, Z]
    i = np.arange(n_along - 1)[:, None] * n_around
    j = np.arange(n_around)[None, :]
    a, b = (i + j).ravel(), (i + (j + 1) % n_around).ravel()
    c, d = a + n_around, b + n_around
    faces = np.r_[np.c_[a, b, c], np.c_[b, d, c]]
    return vertices, faces


class OldMeshView:
    """What MeshView drew until 2026-11-22: vispy's Mesh visual (unindexed triangles) with its smooth
    ShadingFilter; every color change re-uploads positions, normals and colors of 3 corners per face."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        from vispy import scene
        from vispy.visuals.filters import ShadingFilter

        from app.widgets.mesh_view import BASE_COLOR

        self.canvas = scene.SceneCanvas(size=CANVAS_SIZE, bgcolor="#ffffff", show=True)
        self.view = self.canvas.central_widget.add_view()
        self.view.camera = scene.TurntableCamera(fov=35, elevation=25, azimuth=40)
        vertices = np.ascontiguousarray(vertices - vertices.mean(axis=0), dtype=np.float32)
        self.mesh = scene.visuals.Mesh(vertices=vertices, faces=np.ascontiguousarray(faces, dtype=np.uint32),
                                       color=BASE_COLOR, parent=self.view.scene)
        self.mesh.attach(ShadingFilter(shading="smooth", shininess=40, specular_light=(1, 1, 1, 0.25)))
        lo, hi = vertices.min(axis=0), vertices.max(axis=0)
        self.view.camera.set_range(x=(lo[0], hi[0]), y=(lo[1], hi[1]), z=(lo[2], hi[2]), margin=0.05)

    def set_scalar(self, values: np.ndarray, cmap: str = "viridis", clim: tuple[float, float] | None = None) -> None:
        from app.widgets.colormaps import lut, map_values

        if clim is None:
            finite = values[np.isfinite(values)]
            clim = (float(np.percentile(finite, 1)), float(np.percentile(finite, 99)))
        self.set_vertex_colors(map_values(values, lut(cmap), *clim))

    def set_vertex_colors(self, colors: np.ndarray) -> None:
        self.mesh.mesh_data.set_vertex_colors(np.asarray(colors, dtype=np.float32))
        self.mesh.mesh_data_changed()

    def close(self) -> None:
        self.canvas.close()


def new_mesh_view(vertices: np.ndarray, faces: np.ndarray, picker, deferred: bool):
    from app.widgets.mesh_view import MeshView

    view = MeshView()
    view.resize(*CANVAS_SIZE)
    view.show()
    view.set_mesh(vertices, faces, picker)
    view.mesh.allow_deferred = deferred
    return view


def opengl_rows(vertices: np.ndarray, faces: np.ndarray, picker, rng: np.random.Generator) -> list[list]:
    """The interactive operations of the morphology panel, each followed by a redraw, on the old
    path and on the new MeshView drawing its indexed triangles directly ("forward", the fallback)
    or deferred (the default: a recolor reuses the per-pixel G-buffer of the last camera)."""
    from PyQt6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    n = len(vertices)
    log_hks = rng.random((n, 32), dtype=np.float32)  # as the panel's (vertices × timescales) log HKS, float32
    label_sets = [rng.integers(-1, 3, n) for _ in range(2)]
    label_colors = np.array([(0.80, 0.81, 0.84, 1.0), (0.23, 0.45, 0.85, 1.0), (0.90, 0.30, 0.20, 1.0),
                             (0.55, 0.35, 0.75, 1.0)], dtype=np.float32)
    step = itertools.count(1)

    def rotate(view) -> None:
        view.view.camera.azimuth += 2

    operations = {  # name → (untimed preparation, timed action before the redraw, goal ms)
        "redraw only (camera, colors unchanged: a brush-cursor move)": (None, lambda v: None, None),
        "timescale change (HKS column, auto 1–99 % range)": (
            None, lambda v: v.set_scalar(log_hks[:, next(step) % 32]), 50),
        "colormap change (same values)": (None, lambda v: v.set_scalar(log_hks[:, 0], ("hot", "viridis")[next(step) % 2]), 50),
        "hand-label overlay change (labels → RGBA)": (
            None, lambda v: v.set_vertex_colors(label_colors[label_sets[next(step) % 2] + 1]), 50),
        "camera change (rotate 2°)": (None, rotate, None),
        "first redraw once the camera stops": (partial(act_and_redraw, rotate), lambda v: None, None),
    }
    variants = {"old": lambda: OldMeshView(vertices, faces),
                "forward": lambda: new_mesh_view(vertices, faces, picker, deferred=False),
                "deferred": lambda: new_mesh_view(vertices, faces, picker, deferred=True)}
    medians: dict[str, dict[str, float]] = {}
    for variant, make in variants.items():
        start = time.perf_counter()
        view = make()
        redraw = partial(repaint, app, view.canvas)
        redraw()
        medians.setdefault("show a new mesh (upload geometry, first draw)", {})[variant] = time.perf_counter() - start
        view.set_scalar(log_hks[:, 0], "viridis")
        redraw()
        for name, (prepare, action, _) in operations.items():
            times = []
            for _ in range({"old": 3, "forward": 5, "deferred": 15}[variant]):  # the fast path is the noisiest
                if prepare is not None:
                    prepare(view, redraw)
                start = time.perf_counter()
                act_and_redraw(action, view, redraw)
                times.append(time.perf_counter() - start)
            medians.setdefault(name, {})[variant] = statistics.median(times)
        if variant == "deferred":
            view.mesh.visible = False
            medians["frame without the mesh (Qt + Xvfb floor)"] = {"deferred": time_call(redraw, repeat=7)[1]}
        view.close()
        del view
        gc.collect()
    goals = {name: goal for name, (_, _, goal) in operations.items()}
    rows = []
    for name, by_variant in medians.items():
        cells = [f"{by_variant[v] * 1e3:.0f}" if v in by_variant else "—" for v in variants]
        goal = goals.get(name)
        met = "—" if goal is None else "yes" if by_variant["deferred"] * 1e3 <= goal else "no"
        speedup = ratio(by_variant["old"], by_variant["deferred"]) if "old" in by_variant else "—"
        rows.append([name, *cells, speedup, "—" if goal is None else f"≤ {goal}", met])
    return rows


def act_and_redraw(action, view, redraw) -> None:
    action(view)
    redraw()


def repaint(app, canvas) -> None:
    canvas.native.repaint()
    app.processEvents()


def main() -> None:
    from app.widgets.colormaps import lut, map_values
    from engine.mesh.labels import LabelEditor
    from engine.mesh.picking import Picker

    print(machine_header("Morphology workspace interactivity (benchmarks.morphology_gui)"))
    vertices, faces = tube()
    n = len(vertices)
    rng = np.random.default_rng(0)
    hks_column = rng.random(n).astype(np.float32)
    table = lut("viridis")
    rows = []

    best, median = time_call(lambda: map_values(hks_column, table, 0.0, 1.0), repeat=5)
    rows.append(["recolor (value → RGBA via LUT)", f"{n:,}", f"{median * 1e3:.1f}", "≤ 50", "yes" if median <= 0.05 else "no"])

    start = time.perf_counter()
    picker = Picker(vertices, faces)
    build = time.perf_counter() - start
    rows.append(["picker set-up (once per mesh)", f"{len(faces):,} faces", f"{build * 1e3:.0f}", "—", "—"])
    origins = [np.array([x, 10.0, 0.0]) for x in rng.uniform(10, 490, 10)]
    best, median = time_call(lambda: [picker.pick(o, np.array([0.0, -1.0, 0.0])) for o in origins], repeat=3)
    rows.append(["pick (ray → vertex)", f"{len(faces):,} faces", f"{median / len(origins) * 1e3:.1f}", "≤ 50",
                 "yes" if median / len(origins) <= 0.05 else "no"])

    start = time.perf_counter()
    editor = LabelEditor.for_mesh(vertices, faces)
    graph = time.perf_counter() - start
    rows.append(["label editor set-up (edge graph, once)", f"{n:,}", f"{graph * 1e3:.0f}", "—", "—"])
    centers = rng.integers(0, n, 10)
    best, median = time_call(lambda: [editor.paint(int(c), 1.0, 1) for c in centers], repeat=3)
    rows.append(["brush stroke, radius 1 µm (no autosave)", f"{n:,}", f"{median / len(centers) * 1e3:.1f}", "—", "—"])

    markdown_table(rows, ["operation", "size", "median ms", "goal ms", "met"])
    if os.environ.get("DISPLAY"):
        print("\n#### Recolor and redraw in OpenGL (median ms; a redraw includes the Qt/X frame)\n")
        markdown_table(opengl_rows(vertices, faces, picker, rng),
                       ["operation", "old: vispy Mesh", "new: forward", "new: deferred", "deferred vs old", "goal ms", "met"])
    print(f"\npeak RSS {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
