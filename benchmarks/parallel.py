"""Serial loop vs engine.parallel.parallel_map on a batch of CPU-bound numpy tasks.

Reports wall time and speed-up of each way of running the same 16 tasks (~0.4 s each), and
separately what the local Dask cluster costs to start and what each batch costs on top.

Run: ``python -m benchmarks.parallel [--tasks 16]`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import machine_header, markdown_table, peak_rss_mb, ratio, time_call
from engine.device import available_cores
from engine.parallel import parallel_map, shutdown


def cpu_task(seed: int) -> float:
    """~0.4 s of single-threaded numpy (sort, ufuncs, FFT): no BLAS, so one core per task."""
    x = np.random.default_rng(seed).random(1_500_000)
    acc = 0.0
    for _ in range(4):
        x = np.sort(np.sin(x) + x)
        acc += float(np.abs(np.fft.rfft(x[: 2**18])).sum())
    return acc


def noop(x):
    return x


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    items = list(range(args.tasks))
    cores = available_cores()
    print(machine_header("Serial loop vs parallel_map (benchmarks.parallel)"))
    print()

    start = time.perf_counter()
    expected = [cpu_task(i) for i in items[:2]]  # also a warm-up of numpy in this process
    serial_best, serial_med = time_call(lambda: [cpu_task(i) for i in items], repeat=args.repeat)
    threads_best, threads_med = time_call(
        lambda: parallel_map(cpu_task, items, scheduler="threads"), repeat=args.repeat
    )

    shutdown()  # cold start: the first call pays for starting the worker processes
    t0 = time.perf_counter()
    out = parallel_map(cpu_task, items, scheduler="local")
    cold = time.perf_counter() - t0
    assert np.allclose(out[:2], expected), "parallel results differ from serial ones"
    local_best, local_med = time_call(lambda: parallel_map(cpu_task, items, scheduler="local"), repeat=args.repeat)

    # Overheads, measured with tasks that do nothing.
    shutdown()
    t0 = time.perf_counter()
    parallel_map(noop, range(cores), scheduler="local")  # every worker runs one task
    startup = time.perf_counter() - t0
    batch_best, _ = time_call(lambda: parallel_map(noop, range(cores), scheduler="local"), repeat=5)
    per_task_best, _ = time_call(lambda: parallel_map(noop, range(200), scheduler="local"), repeat=3)
    shutdown()

    print(f"### {args.tasks} CPU-bound numpy tasks (best / median of {args.repeat})\n")
    markdown_table(
        [
            ["serial loop (this process)", serial_best, serial_med, "1.00x"],
            [f"parallel_map threads ({cores} threads, in-process)", threads_best, threads_med,
             ratio(serial_med, threads_med)],
            [f"parallel_map local ({cores} worker processes), warm", local_best, local_med,
             ratio(serial_med, local_med)],
            ["parallel_map local, first call incl. cluster start", cold, cold, ratio(serial_med, cold)],
        ],
        ["how", "best s", "median s", "speed-up vs serial"],
    )  # fmt: skip
    print("\n### Local cluster overheads (tasks that do nothing)\n")
    markdown_table(
        [
            [f"start-up: {cores} worker processes + first task each (imports)", startup],
            [f"warm batch of {cores} trivial tasks (best of 5)", batch_best],
            ["warm batch of 200 trivial tasks, per task (best of 3)", per_task_best / 200],
        ],
        ["what", "seconds"],
    )
    print(f"\ntotal {time.perf_counter() - start:.0f} s, peak RSS of this process {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()
