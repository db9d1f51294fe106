"""Interactive costs of the ephys trace panel on a 384-channel, 30 kHz probe.

Goal (issue 4): the trace panel stays smooth with 384 channels at 30 kHz. Measured on a
simulated 20 s recording (engine/ephys/synth pieces, int16, in /tmp) with a Phy folder built
from its ground truth (64 units), so the model and residual layers have real spikes:

1. per redraw, split into read/compute (engine), prepare (min/max decimation to the screen and
   the curve arrays) and draw (setData + a synchronous repaint of the plot), for 0.1 / 0.5 / 2 s
   windows of all 384 channels, raw vs preprocessed vs preprocessed + model + residual; the old
   read (every window filtered whole in float64, the model summed spike by spike over every
   channel) beside the new one (float32 tiles in an LRU cache, the model summed over the
   visible channels only), cold and after a 10 % scroll with and without the neighbours prefetched;
2. scroll steps as the user feels them, in the real workspace: time from the scroll event to the
   painted frame, and the longest the GUI thread was blocked (a 2 ms timer's largest gap: the
   freeze), for the old synchronous path (``async_traces = False`` with the old read) and the new
   one (background loader, latest request wins, prefetch) — each step followed by a pause (a user
   reading), and a held arrow key (a step every 30 ms).

Run: ``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m benchmarks.ephys_traces``
"""

# ruff: noqa: B023  (the timed closures run within their loop iteration)

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import StallProbe, machine_header, markdown_table, peak_rss_mb, ratio

N_CHANNELS, RATE, DURATION, N_UNITS = 384, 30000.0, 20.0, 64
WINDOWS = (0.1, 0.5, 2.0)
KINDS = {"raw": dict(data="raw"), "preprocessed": dict(data="preprocessed"),
         "pre + model + residual": dict(data="preprocessed", model=True, residual=True)}
FOLDER = Path(tempfile.gettempdir()) / "neurowb_bench_ephys_traces"


# -- data ------------------------------------------------------------------------------------------

def make_recording(folder: Path = FOLDER) -> Path:
    """A 384-channel int16 recording written in 2 s pieces (the synth holds a piece in memory, not
    the whole) with a Phy folder of its ground truth beside it; reused when already there."""
    from engine.ephys.io import RecordingParams, write_sidecar
    from engine.ephys.phy import write_phy
    from engine.ephys.preprocess import Preprocessor
    from engine.ephys.sorter import Sorting
    from engine.ephys.synth import DEMO_GAIN_UV, _spike_train, demo_probe, demo_recording, template_trough

    raw = folder / "probe384.raw"
    done = folder / ".complete"
    if done.exists():
        return raw
    folder.mkdir(parents=True, exist_ok=True)
    _, _, _, templates = demo_recording(duration=0.05, n_channels=N_CHANNELS, n_units=N_UNITS, seed=0)
    d, trough = templates.shape[1], template_trough(RATE)
    rng = np.random.default_rng(1)
    n_samples = int(DURATION * RATE)
    times, units = [], []
    for u, rate in enumerate(rng.uniform(2.0, 20.0, N_UNITS)):
        st = np.round(_spike_train(rate, DURATION, rng) * RATE).astype(np.int64)
        times.append(st[(st >= trough) & (st < n_samples - d)])
        units.append(np.full(len(times[-1]), u))
    times, units = np.concatenate(times), np.concatenate(units)
    order = np.argsort(times, kind="stable")
    times, units = times[order], units[order]
    piece = int(2.0 * RATE)
    with open(raw, "wb") as f:
        for i, a in enumerate(range(0, n_samples, piece)):
            data = demo_recording(duration=piece / RATE, n_channels=N_CHANNELS, n_units=0, seed=100 + i)[0]
            inside = (times - trough >= a) & (times - trough + d <= a + piece)
            for t, u in zip(times[inside], units[inside]):
                data[t - trough - a: t - trough - a + d] += templates[u]
            np.clip(np.round(data / DEMO_GAIN_UV), -32768, 32767).astype("<i2").tofile(f)
    params = RecordingParams(n_channels=N_CHANNELS, sample_rate=RATE, dtype="int16", gain_uv=DEMO_GAIN_UV)
    write_sidecar(raw, params)
    channels = np.arange(N_CHANNELS)
    sorting = Sorting(spike_times=times, spike_units=units, amplitudes=np.ones(len(times), np.float32),
                      templates=np.ascontiguousarray(templates.transpose(0, 2, 1)), template_troughs=np.full(N_UNITS, trough),
                      sample_rate=RATE, channels=channels, positions=demo_probe(N_CHANNELS),
                      whitening=np.eye(N_CHANNELS, dtype=np.float32),
                      preprocess_state=Preprocessor(RATE, channels).state(), info={"duration_s": DURATION})
    write_phy(sorting, folder / "probe384_phy", raw_path=raw, recording_params=params)
    done.write_text("ok")
    return raw


# -- the old read, as the panel did it until 2026-11-22 ---------------------------------------------

def old_source_class():
    from engine.ephys.curation import TraceSource

    class OldTraceSource(TraceSource):
        """Every window filtered whole (float64, its own margins, every channel), the model summed
        spike by spike over every channel, the visible rows sliced at the end; no cache."""

        def is_cached(self, start, stop) -> bool:
            return False

        def old_model(self, start: int, stop: int) -> np.ndarray:
            out = np.zeros((max(stop - start, 0), self.n_channels), np.float32)
            d = self.templates_uv.shape[1]
            lo, hi = np.searchsorted(self.spike_starts, [start - d, stop])
            for i in range(lo, hi):
                a = int(self.spike_starts[i]) - start
                s0, s1 = max(a, 0), min(a + d, len(out))
                if s1 > s0:
                    out[s0:s1] += self.amplitudes[i] * self.templates_uv[self.spike_templates[i], s0 - a: s1 - a]
            return out

        def layers(self, start, stop, rows=slice(None), data="preprocessed", model=False, residual=False, progress=None):
            out = {"data": None, "model": None, "residual": None}
            pre = self.preprocessor.read(self.recording, start, stop, whiten=False) if data == "preprocessed" or residual else None
            if data == "raw":
                out["data"] = self.raw(start, stop, rows)
            elif data == "preprocessed":
                out["data"] = pre[:, rows]
            if model or residual:
                m = self.old_model(start, stop)
                out["model"] = m[:, rows] if model else None
                out["residual"] = (pre - m)[:, rows] if residual else None
            return out

    return OldTraceSource


# -- 1: the parts of one redraw ----------------------------------------------------------------------

def median_ms(func, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def component_rows(recording, phy, panel, app) -> list[list]:
    from app.ephys.traces import prepare_curves
    from engine.ephys.curation import TraceSource

    old = old_source_class()(recording, phy)
    new = TraceSource(recording, phy)
    rows_all = slice(0, N_CHANNELS)
    labels = [str(i) for i in range(N_CHANNELS)]
    rows = []
    for width in WINDOWS:
        n = int(width * RATE)
        start = int(5.0 * RATE)
        step = n // 10
        for kind, flags in KINDS.items():
            t_old = median_ms(lambda: old.layers(start, start + n, rows_all, **flags))

            def cold():
                new.clear_cache()
                return new.layers(start, start + n, rows_all, **flags)

            t_cold = median_ms(cold)

            def scrolled(prefetch: bool):
                new.clear_cache()
                new.filtered(start, start + n)  # the window on screen is cached
                if prefetch:
                    new.prefetch(start + n, start + n + n // 2)
                begin = time.perf_counter()
                new.layers(start + step, start + step + n, rows_all, **flags)
                return time.perf_counter() - begin

            t_scroll = statistics.median(scrolled(False) for _ in range(3)) * 1e3
            t_prefetched = statistics.median(scrolled(True) for _ in range(3)) * 1e3
            layers = new.layers(start, start + n, rows_all, **flags)
            t_prepare = median_ms(lambda: prepare_curves(start, RATE, layers, 150.0, panel.pixel_width()))
            curves = prepare_curves(start, RATE, layers, 150.0, panel.pixel_width())

            def draw():
                panel.show_curves(curves, 150.0, labels, (start / RATE, (start + n) / RATE), start, start + n, RATE)
                panel.plot.viewport().repaint()
                app.processEvents()

            t_draw = median_ms(draw)
            points = sum(len(c[0]) for c in curves.values() if c is not None)
            rows.append([f"{width:g} s", kind, f"{t_old:.0f}", f"{t_cold:.0f}", f"{t_scroll:.0f}", f"{t_prefetched:.0f}",
                         ratio(t_old, t_prefetched), f"{t_prepare:.0f}", f"{t_draw:.0f}", f"{points:,}"])
            print(rows[-1], flush=True)
    return rows


# -- 2: scrolling in the workspace ---------------------------------------------------------------------


def wait_frame(app, ws, timeout: float = 30.0) -> None:
    """Until the latest request is on screen, then paint it now."""
    deadline = time.perf_counter() + timeout
    while ws._frame_id != ws._request_id:
        app.processEvents()
        if time.perf_counter() > deadline:
            raise TimeoutError("no frame")
        time.sleep(0.0005)
    ws.traces.plot.viewport().repaint()


def idle(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)


def scroll_rows(app, ws, recording, phy, n_steps: int = 6, n_held: int = 15) -> list[list]:
    from engine.ephys.curation import TraceSource

    OldTraceSource = old_source_class()
    rows = []
    for width in WINDOWS:
        for kind, flags in KINDS.items():
            cells = {}
            for variant in ("old", "new"):
                ws.source = OldTraceSource(recording, phy) if variant == "old" else TraceSource(recording, phy)
                ws.async_traces = variant == "new"
                ws.show_data.setChecked(True)
                ws.data_kind.setCurrentText("Raw" if flags["data"] == "raw" else "Preprocessed")
                ws.show_model.setChecked(bool(flags.get("model")))
                ws.show_residual.setChecked(bool(flags.get("residual")))
                ws.window_seconds.setValue(width)
                ws.go_to(5.0)
                wait_frame(app, ws)
                idle(app, 0.5)
                latencies, stalls = [], []
                for _ in range(n_steps):  # a step, then a pause (reading the traces)
                    with StallProbe() as probe:
                        begin = time.perf_counter()
                        ws.scroll.setValue(ws.scroll.value() + ws.scroll.singleStep())
                        wait_frame(app, ws)
                        latencies.append(time.perf_counter() - begin)
                    stalls.append(probe.max_gap_ms)
                    idle(app, 0.4 if variant == "new" else 0.05)  # the new path prefetches meanwhile
                frames = []
                show_frame = ws._show_frame
                ws._show_frame = lambda request, result: (frames.append(request.id), show_frame(request, result))
                with StallProbe() as held:  # a held arrow key: a step every 30 ms (0.45 s in all)
                    begin = time.perf_counter()
                    next_step = begin
                    for _ in range(n_held):
                        last_event = time.perf_counter()
                        ws.scroll.setValue(ws.scroll.value() + ws.scroll.singleStep())
                        next_step += 0.03
                        while time.perf_counter() < next_step:
                            app.processEvents()
                            time.sleep(0.001)
                    wait_frame(app, ws)
                    end = time.perf_counter()
                last_lag, total = end - last_event, end - begin
                del ws._show_frame
                ws.loader.wait()
                idle(app, 0.1)
                cells[variant] = (statistics.median(latencies) * 1e3, max(stalls), total * 1e3, last_lag * 1e3,
                                  len(frames) / total, held.max_gap_ms)
            o, n = cells["old"], cells["new"]
            rows.append([f"{width:g} s", kind, f"{o[0]:.0f}", f"{n[0]:.0f}", f"{o[1]:.0f}", f"{n[1]:.0f}",
                         f"{o[2]:.0f}", f"{n[2]:.0f}", f"{o[3]:.0f}", f"{n[3]:.0f}", f"{o[4]:.0f}", f"{n[4]:.0f}",
                         f"{o[5]:.0f}", f"{n[5]:.0f}"])
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    from app.main import MainWindow, create_application
    from app.settings import Settings
    from engine.ephys.curation import recording_of
    from engine.ephys.phy import read_phy

    print(machine_header("Ephys trace panel, 384 channels at 30 kHz (benchmarks.ephys_traces)"))
    print(f"- load: {os.getloadavg()[0]:.2f} (1 min), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    start = time.perf_counter()
    raw = make_recording()
    print(f"- recording: {N_CHANNELS} channels, {RATE:g} Hz, {DURATION:g} s int16, {N_UNITS} units "
          f"({time.perf_counter() - start:.0f} s to make or find) in {raw.parent}\n")
    phy = read_phy(raw.parent / "probe384_phy")
    recording = recording_of(phy)[0]

    os.environ["NEUROWB_CONFIG_DIR"] = str(Path(tempfile.mkdtemp()) / "config")
    app = create_application()
    window = MainWindow(Settings())
    window.resize(1600, 1000)
    window.show()
    jobs = window.open_files([raw])
    while jobs[0].is_running or window.jobs.running():
        app.processEvents()
        time.sleep(0.01)
    while window.current_workspace.curation is None:  # the _phy folder beside it loads next
        app.processEvents()
        time.sleep(0.01)
    ws = window.current_workspace
    ws.select([])
    ws.n_shown.setValue(N_CHANNELS)
    idle(app, 0.5)
    print(f"trace plot: {ws.traces.plot.width()} × {ws.traces.plot.height()} px, all {N_CHANNELS} channels shown\n")

    print("#### One redraw of all 384 channels, by part (median ms)\n")
    print("read/compute: old = each window filtered whole in float64 + model spike by spike; new = float32 tiles "
          "(0.25 s) in an LRU cache + model on the shown channels only; cold = empty cache; scrolled = 10 % further with the shown "
          "window cached; prefetched = also the next half window cached (the loader does it while idle). "
          "Prepare and draw are the same code in both (draw = setData + synchronous repaint).\n")
    markdown_table(component_rows(recording, phy, ws.traces, app),
                   ["window", "layers", "read old", "read new cold", "new scrolled", "new prefetched",
                    "old / prefetched", "prepare", "draw", "points drawn"])

    print("\n#### Scrolling in the workspace, all 384 channels (ms; old = synchronous on the GUI thread)\n")
    print("step: one scroll-bar step (10 % of the window), time from the event to the painted frame, median of 6 "
          "(a 0.4 s pause after each); freeze: the longest the GUI thread was blocked (2 ms timer gap) during a step; "
          "held key: 15 steps sent every 30 ms (0.45 s), done = until the last step's frame is painted (the old path "
          "handles every step in turn, so the 15 steps take 15 redraws), last = the last step's event → its frame, "
          "fps = frames drawn per second, freeze = longest block.\n")
    markdown_table(scroll_rows(app, ws, recording, phy),
                   ["window", "layers", "step old", "step new", "freeze old", "freeze new", "held done old", "held done new",
                    "held last old", "held last new", "held fps old", "held fps new", "held freeze old", "held freeze new"])
    print(f"\npeak RSS {peak_rss_mb():,.0f} MB")
    window.close()


if __name__ == "__main__":
    main()
