"""CNMF pipeline benchmark: ROI F1 and trace correlation against ground truth, and wall time.

Movie: :func:`engine.calcium.synth.recording` (documented there): 128 × 128 px × 3000 frames at
30 Hz, 50 cells, neuropil, drift, shot and read noise; once without motion (pipeline run without
registration) and once with 1.5 px RMS rigid motion (run with rigid registration).
Scoring: footprints and true cells binarized at 20 % of their peak; IoU; Hungarian matching
(``scipy.optimize.linear_sum_assignment``); a match counts at IoU ≥ 0.5; F1 over accepted
components; Pearson correlation of each matched component's deconvolved calcium ``C`` with the
true calcium. Scale: ``--scale`` runs a larger memmapped movie and extrapolates linearly in pixels × frames.

    .venv/bin/python -m benchmarks.cnmf [--frames 3000] [--scale 256x256x3000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

from benchmarks.common import machine_header, markdown_table, peak_rss_mb


def score(result, sim) -> dict:
    true = sim["footprints"]
    tm = (true >= 0.2 * true.max(axis=(1, 2), keepdims=True)).reshape(len(true), -1).astype(np.float32)
    acc = np.flatnonzero(result.accepted)
    if len(acc) == 0:
        return {"f1": 0.0, "precision": 0.0, "recall": 0.0, "median_corr": float("nan"), "accepted": 0}
    em = np.stack([result.roi_mask(k) for k in acc]).reshape(len(acc), -1).astype(np.float32)
    inter = em @ tm.T
    iou = inter / (em.sum(1)[:, None] + tm.sum(1)[None] - inter)
    rows, cols = linear_sum_assignment(-iou)
    ok = iou[rows, cols] >= 0.5
    tp = int(ok.sum())
    corr = [np.corrcoef(result.C[acc[r]], sim["calcium"][c])[0, 1] for r, c in zip(rows[ok], cols[ok])]
    return {"f1": 2 * tp / (len(acc) + len(true)), "precision": tp / len(acc), "recall": tp / len(true),
            "median_corr": float(np.median(corr)) if corr else float("nan"), "accepted": len(acc),
            "components": result.n_components}  # fmt: skip


def main() -> None:
    from engine.calcium import synth
    from engine.calcium.pipeline import run_cnmf
    from engine.device import configure_threads

    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--cells", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", default=None, help="HxWxT of a memmapped scale run, e.g. 256x256x3000")
    args = parser.parse_args()
    configure_threads(1)
    print(machine_header("CNMF pipeline (benchmarks.cnmf)"))
    print(f"- load average at start: {os.getloadavg()[0]:.1f}\n")
    rows = []
    for register, motion in (("none", 0.0), ("rigid", 1.5)):
        sim = synth.recording(args.frames, args.size, args.size, args.cells, seed=args.seed, motion=motion)
        start = time.perf_counter()
        result = run_cnmf(sim["movie"], fs=30.0, neuron_diameter=10, register=register)
        wall = time.perf_counter() - start
        s = score(result, sim)
        t = result.info["timings"]
        rows.append({"registration": register, "motion RMS px": motion, "wall s": wall, "F1": s["f1"], "precision": s["precision"],
                     "recall": s["recall"], "median corr C": s["median_corr"], "accepted / components": f"{s['accepted']} / {s.get('components', 0)}",
                     "stages s": ", ".join(f"{k} {v:.2f}" for k, v in t.items() if k != "total")})  # fmt: skip
        if register == "rigid":
            err = result.shifts - sim["shifts"]
            err -= np.median(err, axis=0)
            rows[-1]["shift RMS error px"] = float(np.sqrt((err**2).mean()))
    markdown_table(rows, ["registration", "motion RMS px", "wall s", "F1", "precision", "recall", "median corr C",
                          "accepted / components", "shift RMS error px", "stages s"])  # fmt: skip
    if args.scale:
        h, w, T = (int(v) for v in args.scale.lower().split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "movie.npy")
            mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(T, h, w))
            sim = synth.recording(T, h, w, int(args.cells * h * w / 128**2), seed=2, out=mm)
            mm.flush()
            del sim["movie"], mm
            from engine.calcium.io import open_movie

            start = time.perf_counter()
            result = run_cnmf(open_movie(path, fps=30.0), neuron_diameter=10)
            wall = time.perf_counter() - start
            s = score(result, sim)
        factor = (512 * 512 * 10000) / (h * w * T)
        markdown_table([{"movie": f"{h}x{w}x{T} memmap", "wall s": wall, "F1": s["f1"], "median corr C": s["median_corr"],
                         "extrapolated 512x512x10000 s": wall * factor, "peak RSS MiB": peak_rss_mb()}],
                       ["movie", "wall s", "F1", "median corr C", "extrapolated 512x512x10000 s", "peak RSS MiB"])  # fmt: skip
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}; peak RSS {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()
