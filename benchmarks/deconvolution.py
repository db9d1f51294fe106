"""AR(1) spike deconvolution (engine.calcium.deconvolution): fast exact solver vs CVXPY.

Same problem for both: minimize sum(s) subject to ||y - b - c|| <= sigma sqrt(T), s = G c >= 0,
with g and sigma estimated once per trace and given to both solvers; the baseline b optimized
jointly (default) or fixed. Traces from ``engine.calcium.synth.calcium_traces``: 30 Hz, Poisson
spikes at 0.2-1 Hz with log-normal amplitudes (median 1), tau 0.5-1.5 s, SNR 3-8 (median
spike amplitude over noise σ), baseline 0-2.

Tables:

1. agreement (relative L2 difference of c, objective) and speed, per trace length;
2. a batch of 1000 traces × 3000 frames through ``deconvolve_batch`` (parameters estimated),
   serial and on the local Dask cluster;
3. spike detection on that batch against the simulated spikes: events are runs of frames with
   s > 0.2 (a fifth of the median spike amplitude), matched to true spike frames within ±2
   frames; plus parameter estimates against their true values.

Times are medians per trace (CVXPY: of 3 runs for T <= 5000, else 1; fast: of ``--repeat``), then
the median over traces. CVXPY times are the whole call a user makes (problem construction,
canonicalization, CLARABEL), after one warm-up solve. Run: ``python -m benchmarks.deconvolution [--traces 3]`` (~1 min).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from benchmarks.common import machine_header, markdown_table, peak_rss_mb, ratio, time_call
from engine.device import configure_threads


def agreement(lengths: list[int], n_traces: int, repeat: int) -> list[list]:
    from engine.calcium.deconvolution import deconvolve
    from engine.calcium.synth import calcium_traces

    rows = []
    deconvolve(calcium_traces(1, 500, seed=99)["y"][0], method="cvxpy")  # warm-up: imports, first canonicalization
    for n_frames in lengths:
        data = calcium_traces(n_traces, n_frames, seed=n_frames)
        for optimize_b in (True, False):
            errors, objective, fast_t, cvx_t, projections = [], [], [], [], []
            for i, y in enumerate(data["y"]):
                est = deconvolve(y)  # parameters estimated once, then given to both
                b = None if optimize_b else float(data["b"][i]) - 0.1
                kwargs = dict(g=est.g, sigma=est.sigma, b=b)
                fast = deconvolve(y, **kwargs)
                ref = deconvolve(y, method="cvxpy", **kwargs)
                # Medians on both sides (the machine is shared: best-of-n would flatter the fast side).
                cvx_t.append(time_call(lambda y=y, kw=kwargs: deconvolve(y, method="cvxpy", **kw), repeat=3 if n_frames <= 5000 else 1)[1])
                fast_t.append(time_call(lambda y=y, kw=kwargs: deconvolve(y, **kw), repeat=repeat)[1])
                errors.append(np.linalg.norm(fast.c - ref.c) / np.linalg.norm(ref.c))
                objective.append((fast.s.sum() - ref.s.sum()) / ref.s.sum())
                projections.append(fast.iterations)
            cvx_med, fast_med = statistics.median(cvx_t), statistics.median(fast_t)
            rows.append([f"{n_frames:,}", "optimized" if optimize_b else "fixed", n_traces,
                         f"{max(errors):.1e}", f"{statistics.median(errors):.1e}", f"{max(objective):+.1e}",
                         f"{cvx_med * 1e3:.1f}", f"{fast_med * 1e3:.3f}", ratio(cvx_med, fast_med),
                         f"{statistics.median(projections):.0f}"])  # fmt: skip
            print(f"  T={n_frames} b {'optimized' if optimize_b else 'fixed'}: done", flush=True)
    return rows


def batch(n_traces: int, n_frames: int, workers: int) -> tuple[list[list], list[list], list[list]]:
    from engine import parallel
    from engine.calcium.deconvolution import deconvolve_batch, match_events, spike_events
    from engine.calcium.synth import calcium_traces

    data = calcium_traces(n_traces, n_frames, seed=1)
    timing = []
    start = time.perf_counter()
    result = deconvolve_batch(data["y"], scheduler="serial")
    serial = time.perf_counter() - start
    timing.append(["serial (this process)", f"{serial:.2f}", f"{serial / n_traces * 1e3:.2f}", ""])
    if workers > 1:
        start = time.perf_counter()
        deconvolve_batch(data["y"][:workers * 8], scheduler="local", chunk_size=8)  # start the cluster
        startup = time.perf_counter() - start
        start = time.perf_counter()
        again = deconvolve_batch(data["y"], scheduler="local", chunk_size=max(1, n_traces // (4 * workers)))
        par = time.perf_counter() - start
        assert np.allclose(again.C, result.C)
        timing.append([f"local Dask cluster, {workers} workers (warm)", f"{par:.2f}", f"{par / n_traces * 1e3:.2f}",
                       f"{ratio(serial, par)} vs serial; starting the cluster took {startup:.1f} s"])  # fmt: skip
        parallel.shutdown()

    detection = []
    for threshold in (0.1, 0.2, 0.3):
        tp = fp = fn = 0
        for i in range(n_traces):
            counts = match_events(spike_events(result.S[i], threshold), np.flatnonzero(data["spikes"][i]), tolerance=2)
            tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
        precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        detection.append([threshold, tp + fn, f"{precision:.3f}", f"{recall:.3f}", f"{2 * precision * recall / (precision + recall):.3f}"])
    corr = [np.corrcoef(result.C[i], data["c"][i])[0, 1] for i in range(n_traces)]
    params = [
        ["g", f"{np.median(np.abs(result.g - data['g'])):.4f}", f"{np.percentile(np.abs(result.g - data['g']), 95):.4f}", "absolute error"],
        ["sigma", f"{np.median(result.sigma / data['sigma'] - 1):+.3f}", f"{np.percentile(np.abs(result.sigma / data['sigma'] - 1), 95):.3f}",
         "relative error (spikes add high-frequency power: biased up)"],
        ["b", f"{np.median(np.abs(result.b - data['b'])):.3f}", f"{np.percentile(np.abs(result.b - data['b']), 95):.3f}",
         "absolute error, in median spike amplitudes"],
        ["corr(c, true calcium)", f"{np.median(corr):.3f}", f"{np.percentile(corr, 5):.3f} (5th pct)", ""],
    ]  # fmt: skip
    return timing, detection, params


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=3, help="traces per length for the CVXPY comparison")
    parser.add_argument("--lengths", type=int, nargs="+", default=[3000, 30000])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20, help="fast-solver runs per trace (median kept)")
    args = parser.parse_args(argv)
    threads = configure_threads(1)  # CLARABEL and the fast solver are single-threaded; BLAS too
    print(machine_header("AR(1) deconvolution (benchmarks.deconvolution)"))
    print(f"- threads: {threads}; load average at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print()
    start = time.perf_counter()
    rows = agreement(args.lengths, args.traces, args.repeat)
    markdown_table(rows, ["T", "baseline", "traces", "max rel L2 diff of c", "median", "max objective diff (fast - cvxpy)",
                          "CVXPY ms", "fast ms", "speed-up", "projections"])  # fmt: skip
    print()
    timing, detection, params = batch(args.batch, 3000, args.workers)
    markdown_table(timing, [f"batch of {args.batch} traces x 3000 frames", "seconds", "ms per trace", "note"])
    print()
    markdown_table(detection, ["event threshold (x median spike amplitude)", "true spike frames", "precision", "recall", "F1"])
    print()
    markdown_table(params, ["estimate", "median", "95th percentile", "note"])
    print()
    print(f"total {time.perf_counter() - start:.0f} s, peak RSS {peak_rss_mb():.0f} MiB, load average at end: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip


if __name__ == "__main__":
    main()
