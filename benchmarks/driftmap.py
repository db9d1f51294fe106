"""The drift map on big Phy folders: reading it (the background job) and drawing it (the GUI thread).

A synthetic Kilosort-like folder (384 channels, 300 templates, 32 PC-feature channels, no
spike_positions.npy: the depths come from pc_features.npy, the costliest path) of 50,000 and
1,200,000 spikes. Rows: the job's wall time and its peak of allocated memory (tracemalloc: numpy
buffers; the memory-mapped files are not copied), the spikes shown, and on the GUI thread the time
to draw the map and paint it, the longest stall of the event loop from the job's start to the map
on screen (in brackets: the same timer's longest gap with nothing to do, what the shared machine
costs alone), and a zoom repaint (medians of 5). Beside it, the same spikes as pyqtgraph's
ScatterPlotItem (one item per grey level, the fast way to colour it): fill, first paint and zoom repaint.

Run: ``xvfb-run -a -s "-screen 0 1600x1000x24" python -m benchmarks.driftmap``.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import numpy as np

from benchmarks.common import StallProbe, machine_header, markdown_table

FOLDER = Path("/tmp/neurowb-bench-driftmap")
N_CH, K, D, P = 384, 300, 61, 32


def make_folder(n: int) -> Path:
    folder = FOLDER / f"phy_{n}"
    if (folder / "pc_features.npy").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    (folder / "params.py").write_text("dat_path = ''\nn_channels_dat = 384\ndtype = 'int16'\noffset = 0\nsample_rate = 30000.0\n"
                                      "hp_filtered = False\n")
    positions = np.stack([np.tile([43.0, 11.0, 59.0, 27.0], N_CH // 4), 20.0 * (np.arange(N_CH) // 2)], 1).astype(np.float32)
    centres = rng.integers(0, N_CH, K)
    shape = -np.exp(-0.5 * ((np.arange(D) - 20) / 3.0) ** 2)
    templates = (shape[None, :, None] * np.exp(-0.5 * ((np.arange(N_CH)[None, :] - centres[:, None]) / 4.0) ** 2)[:, None, :])
    np.save(folder / "templates.npy", templates.astype(np.float32))
    np.save(folder / "channel_positions.npy", positions)
    np.save(folder / "channel_map.npy", np.arange(N_CH, dtype=np.int32))
    np.save(folder / "spike_times.npy", np.sort(rng.integers(0, 3600 * 30000, n)).astype(np.uint64))
    st = rng.integers(0, K, n).astype(np.uint32)
    np.save(folder / "spike_templates.npy", st)
    np.save(folder / "amplitudes.npy", rng.gamma(4, 5, n).astype(np.float32))
    ind = np.stack([np.argsort(np.abs(np.arange(N_CH) - c))[:P] for c in centres]).astype(np.uint32)
    np.save(folder / "pc_feature_ind.npy", ind)
    features = np.lib.format.open_memmap(folder / "pc_features.npy", "w+", np.float32, (n, 3, P))
    for a in range(0, n, 200_000):
        b = min(a + 200_000, n)
        features[a:b] = rng.normal(0, 1, (b - a, 3, P)).astype(np.float32)
        features[a:b, 0] = np.abs(features[a:b, 0]) * np.exp(-np.arange(P) / 8.0)
    features.flush()
    del features
    return folder


def median_ms(func, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def paint(app, widget) -> None:
    """Let pending range changes land, then paint now."""
    app.processEvents()
    widget.repaint()
    app.processEvents()


def case(app, n: int) -> list:
    """One row: reading and drawing the folder of ``n`` spikes."""
    import pyqtgraph as pg

    from app.ephys.driftmap import DriftMapView, amplitude_lut, prepare
    from app.jobs import Job

    folder = make_folder(n)

    def run_job(name, func, *args, on_result=None, on_error=None):
        job = Job(name, func, *args)
        job.finished.connect(on_result)
        job.failed.connect(lambda e: print(e.message))
        return job.start()

    view = DriftMapView(run_job)
    view.resize(1100, 650)
    view.show()
    app.processEvents()
    tracemalloc.start()
    t0 = time.perf_counter()
    out = prepare(folder, (1000, 560))
    job_s = time.perf_counter() - t0
    peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    drift = out["drift"]
    view.show_map(out)  # the first map drawn in a process also fills pyqtgraph's and Qt's caches
    paint(app, view.plot)
    show_ms = median_ms(lambda: (view.show_map(out), paint(app, view.plot)))
    with StallProbe() as idle:  # the same 2 ms timer with nothing to do: what the shared machine costs alone
        end = time.perf_counter() + 2.0
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.001)
    with StallProbe() as stall:  # the whole load as the app runs it: a job, the GUI thread free meanwhile
        view.drift = None
        job = view.load(folder)
        while view.drift is None:
            app.processEvents()
            time.sleep(0.001)
        paint(app, view.plot)
    vb = view.plot.getPlotItem().getViewBox()
    zoom_ms = median_ms(lambda: (vb.scaleBy((0.95, 0.95)), paint(app, view.plot)))
    job.wait()
    view.close()

    # the same spikes as a scatter, one item per grey level
    keep = np.arange(len(drift.spikes))
    if len(keep) > 200_000:  # a scatter of more takes tens of seconds to fill
        keep = keep[:: len(keep) // 200_000]
    plot = pg.PlotWidget(background="w")
    plot.resize(1100, 650)
    plot.show()
    app.processEvents()
    lo, hi = drift.amplitude_limits()
    level = np.clip(((drift.amplitudes[keep] - lo) / (hi - lo) * 16).astype(int), 0, 15)
    lut = (amplitude_lut() * 255).astype(int)
    t0 = time.perf_counter()
    for k in range(16):
        m = keep[level == k]
        plot.addItem(pg.ScatterPlotItem(drift.times_s[m], drift.depths_um[m], size=3, pen=None,
                                        brush=pg.mkBrush(*lut[k * 16 + 8])))
    fill_ms = 1e3 * (time.perf_counter() - t0)
    t0 = time.perf_counter()
    paint(app, plot)
    first_ms = 1e3 * (time.perf_counter() - t0)
    scatter_zoom_ms = median_ms(lambda: (plot.getPlotItem().getViewBox().scaleBy((0.95, 0.95)), paint(app, plot)))
    plot.close()
    return [f"{n:,}", f"{len(drift.spikes):,}", f"{job_s:.2f}", f"{peak_mb:.0f}", f"{show_ms:.0f}",
                 f"{stall.max_gap_ms:.0f} ({idle.max_gap_ms:.0f})", f"{zoom_ms:.0f}", f"{len(keep):,}", f"{fill_ms:.0f}", f"{first_ms:.0f}",
                 f"{scatter_zoom_ms:.0f}"]


def main() -> None:
    from PyQt6.QtWidgets import QApplication


    app = QApplication.instance() or QApplication([])
    print(machine_header("Drift map: reading and drawing big Phy folders"))
    print("\n(shared machine: other jobs ran at the same time)\n")
    rows = [case(app, n) for n in (50_000, 1_200_000)]
    markdown_table(rows, ["spikes in folder", "shown", "job (s)", "job peak alloc (MB)", "image: show (ms)",
                          "longest GUI stall during load (idle) (ms)", "image: zoom repaint (ms)", "scatter: dots",
                          "scatter: fill (ms)", "scatter: first paint (ms)", "scatter: zoom repaint (ms)"])


if __name__ == "__main__":
    main()
