"""Thread oversubscription: 1 thread vs all cores, on an idle and on a busy machine.

Why engine.device.configure_threads exists: torch and the BLAS behind numpy/scipy start one
thread per core. Their parallel regions end in a barrier, so when another process holds a
core, every op waits for the thread that shares a core with it. Parallel workers (and the
app's own GUI and loaders) are exactly such other processes.

Run: ``python -m benchmarks.threads [--repeat 3]`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
import torch

from benchmarks.common import machine_header, markdown_table, peak_rss_mb, ratio, time_call
from engine.device import available_cores, configure_threads


def _workloads():
    """name -> zero-argument callable; inputs are built here, outside the timing."""
    x0 = torch.randn(40_000)  # above torch's 32k grain size, so element-wise ops go parallel

    def torch_elementwise():
        x = x0
        for _ in range(3000):  # many short parallel regions: one barrier each
            x = torch.sin(x) * 0.5 + x

    n = 40_000  # 1-D Laplacian-like tridiagonal matrix, as in graph/spectral methods
    rng = np.random.default_rng(0)
    lap = scipy.sparse.diags(
        [-np.ones(n - 1), 2.0 + 0.1 * rng.random(n), -np.ones(n - 1)], [-1, 0, 1], format="csc"
    )

    def eigsh_shift_invert():
        scipy.sparse.linalg.eigsh(lap, k=20, sigma=0.0)

    a = rng.normal(size=(800, 800))
    sym = a + a.T

    def dense_eigh():
        scipy.linalg.eigh(sym)

    return {
        "torch element-wise (40k x 3000 ops)": torch_elementwise,
        "scipy eigsh shift-invert (n=40k, k=20)": eigsh_shift_invert,
        "scipy dense eigh (800x800)": dense_eigh,
    }


def _measure(workloads, threads, repeat):
    out = {}
    for n in threads:
        configure_threads(n)
        for name, func in workloads.items():
            func()  # warm-up: thread pools start, caches fill
            out[name, n] = time_call(func, repeat=repeat, max_seconds=20)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    cores = available_cores()
    threads = (1, cores) if cores > 1 else (1,)
    workloads = _workloads()
    print(machine_header("Thread oversubscription (benchmarks.threads)"))
    print()

    start = time.perf_counter()
    results = {"idle": _measure(workloads, threads, args.repeat)}
    # A competitor that keeps one core busy, like a parallel worker or the GUI thread.
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        results["1 core busy"] = _measure(workloads, threads, args.repeat)
    finally:
        busy.kill()
        busy.wait()

    rows = []
    for name in workloads:
        for machine, res in results.items():
            one_best, one_med = res[name, 1]
            all_best, all_med = res[name, threads[-1]]
            rows.append([
                name, machine, one_best, one_med, all_best, all_med, ratio(all_med, one_med),
            ])  # fmt: skip
    markdown_table(
        rows,
        ["workload", "machine", "1 thread best s", "1 thread median s",
         f"{threads[-1]} threads best s", f"{threads[-1]} threads median s",
         f"{threads[-1]} threads / 1 thread (median)"],
    )  # fmt: skip
    print()
    print(f"best/median of {args.repeat} runs after one warm-up; total {time.perf_counter() - start:.0f} s, "
          f"peak RSS {peak_rss_mb():.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
