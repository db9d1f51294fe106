"""Interactive costs of the morphology workspace on a 1M-vertex mesh.

Goals (issue): recoloring when the timescale slider moves ≤ 50 ms (colors only, no
recompute), a pick ≤ 50 ms. Also the brush stroke and, when a display is available, the
upload of new vertex colors to OpenGL and a full redraw. The mesh is a long tube (a procedural
"neuron" of 1M vertices) so the picking ray crosses a realistic number of candidate faces.

Run: ``python -m benchmarks.morphology_gui`` (under ``xvfb-run -a`` for the OpenGL rows).
"""

from __future__ import annotations

import os
import time

import numpy as np

from benchmarks.common import machine_header, markdown_table, peak_rss_mb, time_call


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

    if os.environ.get("DISPLAY"):
        from PyQt6.QtWidgets import QApplication

        from app.widgets.mesh_view import MeshView

        app = QApplication.instance() or QApplication([])
        view = MeshView()
        view.resize(1200, 800)
        view.show()
        view.set_mesh(vertices, faces)
        app.processEvents()
        view.canvas.native.repaint()

        def recolor_and_draw():
            view.set_vertex_colors(map_values(rng.random(n).astype(np.float32), table, 0.0, 1.0))
            view.canvas.native.repaint()
            app.processEvents()

        best, median = time_call(recolor_and_draw, repeat=5)
        rows.append(["recolor + upload + redraw (OpenGL, Mesa)", f"{n:,}", f"{median * 1e3:.0f}", "≤ 50",
                     "yes" if median <= 0.05 else "no"])
    markdown_table(rows, ["operation", "size", "median ms", "goal ms", "met"])
    print(f"\npeak RSS {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
