"""How long the window stops responding during each step of the four loops, on the shared real data.

A 10 ms QTimer ticks in the real window while each step runs (its button's action, its background job,
and what the window does with the result); the longest interval between two ticks is the step's
worst stall. Goal (issue 13): no stall above 100 ms. Steps: Microarchitecture on the X-ray slice
(open, CNN training, dense latents, NMF, reopen the project with its saved results); Morphology
(open the fragmented MICrONS neuron, open the MICrONS dendrite, its HKS); Ephys on the locust
recording (open, sort, select units one after another); Calcium on the demo movie (open, CNMF).

Known to stay over the goal on a machine without a GPU: opening a mesh, whose first frame (its triangles drawn
once, directly) is rasterized by Mesa's llvmpipe on the GUI thread, as every OpenGL draw must be; everything
else of that step (normals, buffers, the G-buffer that makes recolors cheap) is done in the job or a turn later.

Run (needs a display for the 3D view; the shared data beside the repository):
``xvfb-run -a -s "-screen 0 1600x1000x24" python -m benchmarks.gui_stalls``; name loops to run only
those (``... gui_stalls ephys calcium``; the loops are microarchitecture, morphology, ephys, calcium).
``--without-3d`` builds the window without the Morphology workspace and its OpenGL view (which, until it
got its own native window, made Qt composite the whole window through OpenGL at every repaint: on Mesa's
software rasterizer tens of ms a frame), so the other loops run with and without it tell what it costs.
Each row names the packages a step imported first (a C extension's import holds the GIL). ``NEUROWB_STALL_DUMPS=file``
(py-spy on the PATH) appends every thread's native stack once per stall: which thread held the GIL, and
where (each dump pauses the process, so the stall numbers of such a run are not the measurement).
"""

from __future__ import annotations

import collections
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from benchmarks.common import machine_header, markdown_table

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TICK_MS = 10
GOAL_MS = 100
NATIVE_DUMPS = os.environ.get("NEUROWB_STALL_DUMPS")  # a file: py-spy's native dump of every thread, once per stall


class StallMeter:
    """Ticks every TICK_MS on the GUI thread; :meth:`longest` is the longest interval since :meth:`reset`."""

    def __init__(self):
        from PyQt6.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.reset()
        self.timer.start()

    def reset(self) -> None:
        self.last = time.perf_counter()
        self.worst = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        self.worst = max(self.worst, now - self.last)
        self.last = now

    def longest(self) -> float:
        self._tick()  # a stall still going on counts too
        return self.worst


class StallSampler(threading.Thread):
    """Looks at the GUI thread every 5 ms and, while it has not ticked for more than GOAL_MS, notes where it
    is: the innermost frames of our code and the library call below them. A GUI thread seen inside the event
    loop's own ``exec`` is in Qt's C++ (painting, layout) or waiting for the GIL a worker holds."""

    def __init__(self, meter: StallMeter):
        super().__init__(daemon=True)
        self.meter, self.gui = meter, threading.main_thread().ident
        self.where: collections.Counter = collections.Counter()
        self.step = ""

    def run(self) -> None:
        dumped = None
        while True:
            time.sleep(0.005)
            if time.perf_counter() - self.meter.last > GOAL_MS / 1000:
                frame = sys._current_frames().get(self.gui)
                if frame is not None:
                    self.where[_describe(traceback.extract_stack(frame))] += 1
                if NATIVE_DUMPS and dumped != self.meter.last:  # once per stall: every thread's native stack
                    dumped = self.meter.last
                    dump = subprocess.run(["py-spy", "dump", "--native", "--pid", str(os.getpid())], capture_output=True, text=True)
                    with open(NATIVE_DUMPS, "a") as out:
                        out.write(f"=== {self.step} stalled {time.perf_counter() - dumped:.3f} s\n{dump.stdout}{dump.stderr}\n")

    def take(self) -> str:
        """Where the GUI thread was seen stalled most often since the last call ('' when never)."""
        top = self.where.most_common(1)
        self.where.clear()
        return f"{top[0][0]} ({top[0][1] * 5} ms seen)" if top else ""


class GcMeter:
    """The longest cyclic garbage collection since :meth:`take`: it holds the GIL throughout, so a full
    collection of a process with a few hundred thousand objects stalls the GUI thread whichever thread ran it."""

    def __init__(self):
        self.started, self.worst = 0.0, (0.0, "")
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            took = time.perf_counter() - self.started
            if took > self.worst[0]:
                self.worst = (took, f"gen {info['generation']} in {threading.current_thread().name}")

    def take(self) -> str:
        took, what = self.worst
        self.worst = (0.0, "")
        return f"{took * 1000:.0f} ({what})" if what else "0"


def _describe(stack) -> str:
    root = str(Path(__file__).resolve().parents[1]) + os.sep
    ours = [f for f in stack if f.filename.startswith(root) and "benchmarks" not in f.filename]
    if not ours:
        return "Qt's C++ (painting, layout) or waiting for the GIL"
    inner = ours[-1]
    below = stack[-1] if stack[-1] is not inner else None
    text = f"{inner.filename[len(root):]}:{inner.lineno} {inner.name}"
    if below is not None:
        text += f" → {Path(below.filename).parent.name}/{Path(below.filename).name}:{below.name}"
    return text


def run_step(meter: StallMeter, action, done, timeout: float = 900.0, settle: float = 0.3) -> tuple[float, float]:
    """(longest stall ms, wall s) of ``action()`` run from the event loop, until ``done()`` and ``settle``
    seconds more (what the window does with a result arrives after the job)."""
    from PyQt6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    state = {"ended": None}
    start = time.perf_counter()

    def check():
        now = time.perf_counter()
        if state["ended"] is None and done():
            state["ended"] = now
        if (state["ended"] is not None and now - state["ended"] >= settle) or now - start > timeout:
            loop.quit()
        else:
            QTimer.singleShot(20, check)

    def begin():
        meter.reset()
        result = action()
        state["job"] = result
        QTimer.singleShot(20, check)

    QTimer.singleShot(0, begin)
    loop.exec()
    return meter.longest() * 1000, time.perf_counter() - start


def job_done(ws_or_job):
    return lambda: ws_or_job() is None or not ws_or_job().is_running


def main(args: list[str]) -> None:
    without_3d = "--without-3d" in args
    loops = [name.lower() for name in args if not name.startswith("--")]
    loops = loops or (["microarchitecture", "ephys", "calcium"] if without_3d else
                      ["microarchitecture", "morphology", "ephys", "calcium"])
    if not DATA.is_dir():
        print(f"the shared data is not at {DATA}: nothing to measure")
        return
    work = Path(tempfile.mkdtemp(prefix="gui_stalls_"))
    os.environ["NEUROWB_CONFIG_DIR"] = str(work / "config")
    os.environ["NEUROWB_DATA_DIR"] = str(work / "data")
    import numpy as np

    from app.main import MainWindow, create_application
    from app.settings import Settings
    if without_3d:
        import app.main

        every = app.main.workspace_classes
        app.main.workspace_classes = lambda: [cls for cls in every() if cls.__name__ != "MorphologyWorkspace"]
        loops = [name for name in loops if name != "morphology"]
    _app = create_application()  # held for the whole run
    window = MainWindow(Settings())
    window.show()
    meter = StallMeter()
    sampler = StallSampler(meter)
    sampler.start()
    collections_meter = GcMeter()
    rows = []

    def step(loop: str, name: str, action, done, **kw):
        sampler.take()
        sampler.step = f"{loop}: {name}"
        collections_meter.take()
        before = set(sys.modules)
        stall, wall = run_step(meter, action, done, **kw)
        imported = collections.Counter(name.split(".")[0] for name in set(sys.modules) - before)
        imported = ", ".join(f"{package} {n}" for package, n in imported.most_common(4))
        where = sampler.take() if stall > GOAL_MS else ""
        collected = collections_meter.take()
        rows.append([loop, name, f"{stall:.0f}", f"{wall:.1f}", "yes" if stall <= GOAL_MS else "**no**", collected, imported, where])
        print(f"{loop:18s} {name:40s} {stall:8.0f} ms  {wall:6.1f} s  gc {collected}  imports {imported}  {where}", file=sys.stderr, flush=True)

    def opening(path):
        jobs = []
        return (lambda: jobs.extend(window.open_files([path]))), (lambda: bool(jobs) and not any(j.is_running for j in jobs))

    # -- the floor: nothing running (what the machine's other load alone costs the event loop) ---------
    from PyQt6.QtCore import QTimer

    settled = {}  # the window's first paint (GL contexts, style) is not what a person waits for later
    run_step(meter, lambda: QTimer.singleShot(2000, lambda: settled.setdefault("done", 1)), lambda: "done" in settled, settle=0.0)
    idle = {}
    step("(reference)", "idle window, 3 s, nothing running", lambda: QTimer.singleShot(3000, lambda: idle.setdefault("done", 1)),
         lambda: "done" in idle, settle=0.0)

    if "microarchitecture" in loops:
        microarchitecture(window, work, step, opening)
    if "morphology" in loops:
        morphology(window, step, opening)
    if "ephys" in loops:
        ephys(window, work, step, opening)
    if "calcium" in loops:
        calcium(window, work, step, opening)

    print(machine_header("GUI stalls: longest gap in the event loop per step" + (" (window without the 3D view)" if without_3d else "")))
    print(f"- load average at the end: {os.getloadavg()[0]:.1f} (2 cores); a 10 ms timer on the GUI thread, the real window on Xvfb")
    print()
    markdown_table(rows, ["loop", "step", "longest stall (ms)", "step wall (s)", f"≤ {GOAL_MS} ms", "longest garbage collection (ms)",
                          "modules first imported (top packages)", "where the GUI thread was"])
    window.jobs.shutdown(5000)
    window.close()
    shutil.rmtree(work, ignore_errors=True)
    np.seterr()


def microarchitecture(window, work, step, opening) -> None:
    """The X-ray slice with three regions drawn: open, train, dense latents, NMF, reopen."""
    from engine.factors import workflow
    from engine.factors.rois import RegionSet

    xray = work / "xray" / "xray_thalamocortical_slice159.png"
    xray.parent.mkdir()
    shutil.copy(DATA / "images" / xray.name, xray)
    regions = RegionSet((1420, 5805))
    for name, (x0, x1) in (("cortex", (0.80, 0.95)), ("striatum", (0.45, 0.6)), ("thalamus", (0.15, 0.3))):
        label = regions.add_region(name).label
        regions.add_polygon(label, [(x0 * 5805, 426), (x1 * 5805, 426), (x1 * 5805, 994), (x0 * 5805, 994)])
    regions.save(workflow.project_folder(xray))
    window.show_workspace("factors")
    action, done = opening(xray)
    step("Microarchitecture", "open the X-ray slice", action, done)
    ws = window.current_workspace
    ws.epochs.setValue(1)
    ws.patches.setValue(128)
    ws.stride.setValue(16)
    ws.pixel_size.setValue(1.17)
    running = lambda: ws.job  # noqa: E731
    step("Microarchitecture", "CNN training (1 epoch, 128 patches)", ws.train, job_done(running))
    step("Microarchitecture", "dense latents (stride 16)", ws.extract, job_done(running))
    step("Microarchitecture", "NMF (k = 15)", ws.run_nmf, job_done(running))
    action, done = opening(xray)
    step("Microarchitecture", "reopen the project with saved results", action, done)


def morphology(window, step, opening) -> None:
    window.show_workspace("morphology")
    ws = window.current_workspace
    action, done = opening(DATA / "meshes" / "microns_neuron_7666_decimated_fragmented.off")
    step("Morphology", "open the fragmented MICrONS neuron", action, done)
    action, done = opening(DATA / "meshes" / "microns_dendrite_864691136371550856.ply")
    step("Morphology", "open the MICrONS dendrite", action, done)
    hks = {}
    step("Morphology", "HKS of the dendrite", lambda: hks.setdefault("job", ws.compute_hks()), job_done(lambda: hks.get("job")))


def ephys(window, work, step, opening) -> None:
    from engine.ephys.io import RecordingParams, write_sidecar

    raw = work / "locust" / "locust_trial_01.raw"
    raw.parent.mkdir()
    shutil.copy(DATA / "ephys" / "locust" / raw.name, raw)
    write_sidecar(raw, RecordingParams(4, 15000.0, "int16", 1.0, 2056.0))
    window.show_workspace("ephys")
    ws = window.current_workspace
    action, done = opening(raw)
    step("Ephys", "open the locust recording", action, done)
    sort = {}
    step("Ephys", "sort", lambda: sort.setdefault("job", ws.run_sort()), job_done(lambda: sort.get("job")), timeout=1800)
    ids = [int(c) for c in ws.curation.cluster_ids] if ws.curation is not None else []

    def select_each():
        from PyQt6.QtCore import QTimer

        for i, cid in enumerate(ids[:6]):
            QTimer.singleShot(250 * i, lambda cid=cid: ws.select([cid]))

    selected = lambda: len(ids) == 0 or ws.selected == ids[:6][-1:]  # noqa: E731
    step("Ephys", f"select {min(len(ids), 6)} units one after another", select_each, selected, settle=1.0)


def calcium(window, work, step, opening) -> None:
    from engine.demo import ensure_demo_data

    movie = ensure_demo_data(work / "demo")["calcium"]
    window.show_workspace("calcium")
    ws = window.current_workspace
    action, done = opening(movie)
    step("Calcium", "open the demo movie", action, done)
    cnmf = {}
    step("Calcium", "CNMF", lambda: cnmf.setdefault("job", ws.run_cnmf()), job_done(lambda: cnmf.get("job")), timeout=1800)


if __name__ == "__main__":
    main(sys.argv[1:])
