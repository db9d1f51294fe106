"""CNMF pipeline benchmark: ROI F1 and trace correlation against ground truth, and wall time, on
every simulator's movies, ours beside Suite2p in the same run.

Movies (``KINDS``; 128 × 128 px × ``--frames`` 3000 at 30 Hz, each for every ``--seeds``):
``synth`` (:func:`engine.calcium.synth.recording`, the simulator the pipeline was first written
against), ``doughnut`` and ``doughnut-dim`` (:func:`engine.calcium.simulators.doughnut_recording`,
the issue's independent-simulator movie and its smaller, dimmer, slower variant) and ``dense``
(:func:`engine.calcium.simulators.dense_recording`); ``--motion`` adds a synth movie with 1.5 px RMS
rigid motion, run with rigid registration. Each movie is written as an int16 TIFF, and both pipelines
are timed from that file as a user runs them: ours as ``neurowb cnmf MOVIE -o OUT`` does with its
defaults (:func:`run_ours`: open, ``run_cnmf``, write the Suite2p folder), Suite2p's ``run_s2p``.
Scoring: footprints and true cells binarized at 20 % of their peak; IoU; Hungarian matching
(``scipy.optimize.linear_sum_assignment``); a match counts at IoU ≥ 0.5; F1 over accepted
components; median Pearson correlation of each matched component's deconvolved calcium ``C`` with the
true calcium. Scale: ``--scale`` runs a larger memmapped movie (see :func:`run_scale`: generated and
processed in separate child processes, memory measured on the pipeline's only) and extrapolates
linearly in pixels × frames.

    .venv/bin/python -m benchmarks.cnmf [--frames 3000] [--kinds synth,doughnut,doughnut-dim,dense] [--seeds 1,2,3]
        [--motion] [--scale 256x256x3000 [--scale-dir DIR]] [--suite2p /work/s2penv/bin/python [--suite2p-register]]

Suite2p side by side (``--suite2p PYTHON``, the interpreter of a separate environment where
``pip install suite2p`` worked; never our .venv): :func:`run_suite2p` runs ``suite2p.run_s2p`` on the
same TIFF in a subprocess (fs 30, tau 1.0, diameter [10, 10], 1 thread, CPU, ``do_registration`` 0,
or 1 with ``nonrigid`` False for the motion movie when ``--suite2p-register``). Its accepted ROIs
(``iscell``) are scored the same way: masks = stat pixels with ``lam`` ≥ 20 % of the ROI's peak,
trace = ``F - 0.7 Fneu`` (its closest output to the calcium). Its wall time counts ``run_s2p`` (TIFF →
binary included), not the interpreter start. Ours also gets ``cpu s``, this process's CPU time over
the same call (on a machine shared with other jobs it is swayed less than the wall time).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

from benchmarks.common import machine_header, markdown_table, peak_rss_mb


def score_masks(masks: np.ndarray, traces: np.ndarray, sim) -> dict:
    """F1 at IoU ≥ 0.5 (Hungarian) of accepted ROI masks (n × pixels, bool) against the true cells
    (binarized at 20 % of their peak), and the median correlation of matched traces with the true calcium."""
    true = sim["footprints"]
    tm = (true >= 0.2 * true.max(axis=(1, 2), keepdims=True)).reshape(len(true), -1).astype(np.float32)
    if len(masks) == 0:
        return {"f1": 0.0, "precision": 0.0, "recall": 0.0, "median_corr": float("nan"), "accepted": 0}
    em = masks.reshape(len(masks), -1).astype(np.float32)
    inter = em @ tm.T
    iou = inter / (em.sum(1)[:, None] + tm.sum(1)[None] - inter)
    rows, cols = linear_sum_assignment(-iou)
    ok = iou[rows, cols] >= 0.5
    tp = int(ok.sum())
    corr = [np.corrcoef(traces[r], sim["calcium"][c])[0, 1] for r, c in zip(rows[ok], cols[ok])]
    return {"f1": 2 * tp / (len(masks) + len(true)), "precision": tp / len(masks), "recall": tp / len(true),
            "median_corr": float(np.median(corr)) if corr else float("nan"), "accepted": len(masks)}  # fmt: skip


def score(result, sim) -> dict:
    acc = np.flatnonzero(result.accepted)
    masks = np.stack([result.roi_mask(k) for k in acc]) if len(acc) else np.zeros((0,) + result.image_shape, bool)
    return {**score_masks(masks, result.C[acc], sim), "components": result.n_components}


# Runs in the Suite2p environment (its own interpreter): argv = tiff folder, save folder, do_registration.
SUITE2P_RUNNER = """
import json, sys, time
import torch
torch.set_num_threads(1)
from suite2p import default_settings, run_s2p, version
settings = default_settings()
settings.update(fs=30.0, tau=1.0, diameter=[10.0, 10.0], torch_device="cpu")
settings["run"]["do_registration"] = int(sys.argv[3])
settings["registration"]["nonrigid"] = False
start = time.perf_counter()
run_s2p(db={"data_path": [sys.argv[1]], "save_path0": sys.argv[2], "input_format": "tif"}, settings=settings)
print("SUITE2P_RESULT " + json.dumps({"wall": time.perf_counter() - start, "version": version}))
"""


def write_tiff(folder: str, movie: np.ndarray) -> str:
    """The movie as ``folder/movie.tif`` (int16, what both pipelines read), fps 30 in its metadata."""
    import tifffile

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "movie.tif")
    tifffile.imwrite(path, np.clip(np.round(movie), -32768, 32767).astype(np.int16), imagej=True,
                     metadata={"axes": "TYX", "fps": 30.0, "finterval": 1 / 30.0})  # fmt: skip
    return path


def run_suite2p(python: str, sim, register: bool, tiff: str | None = None) -> dict:
    """Suite2p's whole pipeline (TIFF → binary, registration if asked, detection, extraction,
    deconvolution, classification) on the same movie in a subprocess; its ROIs scored like ours:
    masks = stat pixels with lam ≥ 20 % of the ROI's peak, accepted = iscell, trace = F - 0.7 Fneu.
    ``tiff`` an already written movie (alone in its folder), else it is written here."""
    import json
    import shutil
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        if tiff is None:
            write_tiff(data, sim["movie"])
        else:
            os.makedirs(data)
            shutil.copy(tiff, os.path.join(data, "movie.tif"))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        start = time.perf_counter()
        proc = subprocess.run([python, "-c", SUITE2P_RUNNER, data, tmp, str(int(register))], capture_output=True, text=True, env=env)
        process_wall = time.perf_counter() - start
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("SUITE2P_RESULT ")]
        if proc.returncode != 0 or not line:
            raise RuntimeError(f"Suite2p failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        info = json.loads(line[-1].split(" ", 1)[1])
        plane = os.path.join(tmp, "suite2p", "plane0")
        stat = np.load(os.path.join(plane, "stat.npy"), allow_pickle=True)
        iscell = np.load(os.path.join(plane, "iscell.npy"))
        F, Fneu = np.load(os.path.join(plane, "F.npy")), np.load(os.path.join(plane, "Fneu.npy"))
    _, h, w = sim["movie"].shape
    acc = np.flatnonzero(iscell[:, 0] > 0.5)
    masks = np.zeros((len(acc), h, w), bool)
    for i, k in enumerate(acc):
        s = stat[k]
        keep = s["lam"] >= 0.2 * s["lam"].max()
        masks[i, s["ypix"][keep], s["xpix"][keep]] = True
    out = score_masks(masks, (F - 0.7 * Fneu)[acc], sim)
    return {**out, "components": len(stat), "wall": info["wall"], "process_wall": process_wall, "version": info["version"]}


# -- scale run: movie generation and the pipeline each in a child process ----------------------

def _generate_scale(path: str, h: int, w: int, T: int, n_cells: int) -> None:
    """Child process: the simulated movie written into a .npy memmap, ground truth beside it."""
    from engine.calcium import synth

    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(T, h, w))
    sim = synth.recording(T, h, w, n_cells, seed=2, out=mm)
    mm.flush()
    np.savez(path + ".truth.npz", footprints=sim["footprints"], calcium=sim["calcium"])


def _tree_memory() -> tuple[int, int]:
    """(RSS, anonymous RSS) bytes summed over this process and its descendants (the Dask
    workers that fit the patches). Anonymous = RSS minus file-backed pages: memmapped movie pages
    count in RSS but are page cache the kernel can drop, so they do not bound the memory needed."""
    import psutil

    rss = anon = 0
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            info = proc.memory_info()
            rss += info.rss
            anon += info.rss - getattr(info, "shared", 0)  # Linux: shared = RssFile + RssShmem
        except psutil.Error:
            pass
    return rss, anon


def _run_scale_pipeline(path: str, out: str) -> None:
    """Child process: run_cnmf on the memmapped movie while a thread samples the memory of this
    process and its workers every 0.2 s; the accepted masks' result and the figures go to ``out``."""
    import json
    import resource
    import threading

    from engine.calcium.io import open_movie
    from engine.calcium.pipeline import run_cnmf
    from engine.device import configure_threads
    from engine.parallel import shutdown

    configure_threads(1)
    peaks = {"rss": 0, "anon": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            rss, anon = _tree_memory()
            peaks["rss"], peaks["anon"] = max(peaks["rss"], rss), max(peaks["anon"], anon)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    result = run_cnmf(open_movie(path, fps=30.0), neuron_diameter=10)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    shutdown()
    acc = np.flatnonzero(result.accepted)
    masks = np.stack([result.roi_mask(k) for k in acc]) if len(acc) else np.zeros((0,) + result.image_shape, bool)
    np.savez(out + ".npz", masks=np.packbits(masks.reshape(len(acc), -1), axis=1), C=result.C[acc])
    info = {"wall": wall, "components": int(result.n_components), "timings": result.info["timings"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_tree_rss_mb": peaks["rss"] / 2**20, "peak_anon_mb": peaks["anon"] / 2**20}  # fmt: skip
    with open(out + ".json", "w") as fh:
        json.dump(info, fh)


def run_scale(folder: str, h: int, w: int, T: int, n_cells: int) -> dict:
    """The scale run, measured honestly: the movie is generated in one child process (its dirty
    memmap pages are not the pipeline's), dropped from the page cache (the pipeline reads it from
    disk, as a movie larger than memory would be), and the pipeline runs in a second child whose
    peak RSS (``ru_maxrss``, file-backed movie pages included) and peak anonymous memory summed
    with its Dask workers are reported. Scored here like the small runs."""
    import json
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    path = os.path.join(folder, "movie.npy")
    for target, args in ((_generate_scale, (path, h, w, T, n_cells)), (_run_scale_pipeline, (path, os.path.join(folder, "result")))):
        proc = ctx.Process(target=target, args=args)
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"{target.__name__} failed (exit {proc.exitcode})")
        if target is _generate_scale and hasattr(os, "posix_fadvise"):
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # cold start: evict the movie from the page cache
            os.close(fd)
    with open(os.path.join(folder, "result.json")) as fh:
        info = json.load(fh)
    saved = np.load(os.path.join(folder, "result.npz"))
    truth = dict(np.load(path + ".truth.npz"))
    masks = np.unpackbits(saved["masks"], axis=1, count=h * w).astype(bool).reshape(-1, h, w)
    return {**info, **score_masks(masks, saved["C"], truth)}


# The movie kinds: each simulator (and the two variants of the doughnut one), 128 × 128 px.
KINDS = {
    "synth": ("synth.recording: soft disks r 4–6, AR(1) calcium, neuropil, drift (50 cells)",
              lambda T, seed: _synth().recording(T, 128, 128, 50, seed=seed)),
    "doughnut": ("simulators.doughnut_recording: doughnuts r 5 ± 20 %, vignetting, 2 neuropil components (50 cells)",
                 lambda T, seed: _sims().doughnut_recording(T, seed=seed)),
    "doughnut-dim": ("doughnut_recording: 80 smaller (r 4), dimmer (25 photons), slower (0.25 Hz) cells",
                     lambda T, seed: _sims().doughnut_recording(T, n_cells=80, radius=4.0, photons=25.0, rate=0.25, seed=seed)),
    "dense": ("simulators.dense_recording: touching filled somata r 3–8, a decade of brightness, bursts, 25 photons (90 cells)",
              lambda T, seed: _sims().dense_recording(T, seed=seed)),
}


def _synth():
    from engine.calcium import synth

    return synth


def _sims():
    from engine.calcium import simulators

    return simulators


def run_ours(tiff: str, out_dir: str, register: str = "none"):
    """What ``neurowb cnmf MOVIE -o OUT`` does, defaults included: open the TIFF, run_cnmf, write the
    Suite2p folder. Returns (result, wall seconds)."""
    from engine.calcium.export import export_suite2p
    from engine.calcium.io import open_movie
    from engine.calcium.pipeline import run_cnmf

    start = time.perf_counter()
    with open_movie(tiff) as movie:
        result = run_cnmf(movie, register=register)
    export_suite2p(result, out_dir, data_path=tiff)
    return result, time.perf_counter() - start


def main() -> None:
    from engine.calcium import synth
    from engine.device import configure_threads

    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated simulator seeds, each kind")
    parser.add_argument("--motion", action="store_true", help="also a synth movie with 1.5 px RMS rigid motion, registered")
    parser.add_argument("--scale", default=None, help="HxWxT of a memmapped scale run, e.g. 256x256x3000")
    parser.add_argument("--scale-dir", default=None, help="where the scale movie is written (default the system's temporary folder)")
    parser.add_argument("--suite2p", default=None, metavar="PYTHON",
                        help="interpreter of a separate environment with suite2p, e.g. /work/s2penv/bin/python: run it side by side")
    parser.add_argument("--suite2p-register", action="store_true", help="also run Suite2p with rigid registration on the motion movie")
    args = parser.parse_args()
    configure_threads(1)
    print(machine_header("CNMF pipeline (benchmarks.cnmf)"))
    print(f"- load average at start: {os.getloadavg()[0]:.1f}\n")
    seeds = [int(v) for v in args.seeds.split(",")]
    jobs = [(kind, seed, "none") for seed in seeds for kind in args.kinds.split(",")]  # every kind early: partial runs cover all
    if args.motion:
        jobs.append(("synth+motion", seeds[0], "rigid"))
    rows, summary = [], {}
    columns = ["movie", "method", "cells", "wall s", "cpu s", "F1", "precision", "recall", "median corr C", "accepted / components",
               "time ratio Suite2p / ours", "stages s"]  # fmt: skip

    def progress_line(row: dict) -> None:  # each row as soon as it is measured (a long run may be cut short)
        print("<!-- " + " | ".join(f"{row[c]:.3g}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns) + " -->",
              flush=True)

    for kind, seed, register in jobs:
        if kind == "synth+motion":
            sim = synth.recording(args.frames, 128, 128, 50, seed=seed, motion=1.5)
        else:
            sim = KINDS[kind][1](args.frames, seed)
        with tempfile.TemporaryDirectory() as tmp:
            tiff = write_tiff(os.path.join(tmp, "movie"), sim["movie"])
            cpu = time.process_time()
            result, wall = run_ours(tiff, os.path.join(tmp, "out"), register)
            cpu = time.process_time() - cpu  # this process's CPU seconds: less swayed than wall time by other jobs
            s = score(result, sim)
            t = result.info["timings"]
            ours = {"movie": f"{kind} seed {seed}", "method": "neurowb cnmf (defaults)", "cells": len(sim["footprints"]),
                    "wall s": wall, "cpu s": cpu, "F1": s["f1"], "precision": s["precision"], "recall": s["recall"],
                    "median corr C": s["median_corr"], "accepted / components": f"{s['accepted']} / {s.get('components', 0)}",
                    "stages s": ", ".join(f"{k} {v:.1f}" for k, v in t.items() if k != "total")}  # fmt: skip
            if register == "rigid":
                err = result.shifts - sim["shifts"]
                err -= np.median(err, axis=0)
                ours["stages s"] += f"; shift RMS error {float(np.sqrt((err**2).mean())):.2f} px"
            rows.append(ours)
            progress_line(ours)
            summary.setdefault((kind, "ours"), []).append(ours)
            if args.suite2p and (register == "none" or args.suite2p_register):
                s2p = run_suite2p(args.suite2p, sim, register == "rigid", tiff=tiff)
                row = {"movie": f"{kind} seed {seed}", "method": f"Suite2p {s2p['version']}", "cells": len(sim["footprints"]),
                       "wall s": s2p["wall"], "F1": s2p["f1"], "precision": s2p["precision"], "recall": s2p["recall"],
                       "median corr C": s2p["median_corr"], "accepted / components": f"{s2p['accepted']} / {s2p['components']}",
                       "stages s": f"process incl. imports {s2p['process_wall']:.1f}", "time ratio Suite2p / ours": s2p["wall"] / wall}  # fmt: skip
                rows.append(row)
                progress_line(row)
                summary.setdefault((kind, "Suite2p"), []).append(row)
        print(f"<!-- {kind} seed {seed} done, load {os.getloadavg()[0]:.1f} -->", flush=True)
    markdown_table(rows, columns)
    print("\nMeans over seeds, per movie kind:\n")
    means = []
    for (kind, method), group in summary.items():
        means.append({"movie kind": kind, "method": method, "movies": len(group),
                      **{k: float(np.mean([g[k] for g in group])) for k in ("F1", "precision", "recall", "median corr C", "wall s")},
                      "max wall s": float(np.max([g["wall s"] for g in group])),
                      "cpu s": float(np.mean([g["cpu s"] for g in group])) if "cpu s" in group[0] else "",
                      "min F1": float(np.min([g["F1"] for g in group]))})  # fmt: skip
    markdown_table(means, ["movie kind", "method", "movies", "F1", "min F1", "precision", "recall", "median corr C", "wall s",
                           "max wall s", "cpu s"])  # fmt: skip
    print("\nKinds: " + "; ".join(f"**{k}** {v[0]}" for k, v in KINDS.items()))
    if args.scale:
        h, w, T = (int(v) for v in args.scale.lower().split("x"))
        with tempfile.TemporaryDirectory(dir=args.scale_dir) as tmp:
            s = run_scale(tmp, h, w, T, int(50 * h * w / 128**2))
        factor = (512 * 512 * 10000) / (h * w * T)
        markdown_table([{"movie": f"{h}x{w}x{T} memmap ({h * w * T * 4 / 2**30:.1f} GiB)", "wall s": s["wall"], "F1": s["f1"],
                         "precision": s["precision"], "recall": s["recall"], "median corr C": s["median_corr"],
                         "accepted / components": f"{s['accepted']} / {s['components']}",
                         "extrapolated 512x512x10000 s": s["wall"] * factor, "peak RSS MiB": s["peak_rss_mb"],
                         "peak anonymous MiB (all processes)": s["peak_anon_mb"],
                         "stages s": ", ".join(f"{k} {v:.1f}" for k, v in s["timings"].items() if k != "total")}],
                       ["movie", "wall s", "F1", "precision", "recall", "median corr C", "accepted / components",
                        "extrapolated 512x512x10000 s", "peak RSS MiB", "peak anonymous MiB (all processes)", "stages s"])  # fmt: skip
        print(f"\nscale run: peak RSS of the pipeline and its workers summed {s['peak_tree_rss_mb']:.0f} MiB "
              "(file-backed movie pages mapped by each process counted once per process)")
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}; peak RSS {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()
