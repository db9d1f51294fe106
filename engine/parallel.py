"""Map a function over chunks, patches or files on a Dask cluster (local or real).

``parallel_map(func, items)`` returns ``[func(item) for item in items]``, in input order,
computed in parallel, with progress reporting and cancellation through
:class:`engine.progress.Progress`.

Schedulers (the ``scheduler`` argument; default: ``NEUROWB_SCHEDULER`` env var, else ``local``):

``"local"``
    A Dask ``LocalCluster`` of worker *processes* on this machine (one per core by default),
    started on first use, reused by later calls and closed at exit (or by :func:`shutdown`).
``"serial"``
    A plain loop in this process (debugging, profiling, tiny inputs).
``"threads"``
    An in-process Dask cluster of threads; cheap to start, useful for tests and for
    functions that release the GIL. Thread pools are *not* reconfigured here (they are
    process-wide), so use it for code that keeps its own thread count in check.
``"tcp://host:8786"``
    A running Dask scheduler, so the same batch scales from a laptop to a cluster.

Pointing it at a real cluster::

    # on the head node (dashboard on :8787)
    dask scheduler --port 8786
    # on every compute node, in an environment with neuroworkbench installed
    dask worker tcp://head-node:8786 --nworkers 8 --nthreads 1
    # then on the machine that submits the batch
    neurowb ... --scheduler tcp://head-node:8786
    # or, for the app and every command at once
    export NEUROWB_SCHEDULER=tcp://head-node:8786

Run workers with ``--nthreads 1`` (one task at a time per process) and let
``threads_per_worker`` set how many torch/BLAS threads each task may use; workers need the
same versions of neuroworkbench, numpy, torch and dask as the submitting machine because
functions and data travel between them by pickle.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
from typing import Any, Callable, Iterable, TypeVar

from engine.device import available_cores, configure_threads
from engine.errors import InputError
from engine.progress import Progress, as_progress

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

SCHEDULER_ENV = "NEUROWB_SCHEDULER"
# Seconds to wait for a remote scheduler: long enough for a slow network, short enough
# that a typo in the address gives an error instead of an apparently hung job.
CONNECT_TIMEOUT = 5.0
# How often the caller wakes up to check for a cancel while tasks run (engine rule: <= 0.1 s).
_POLL_S = 0.05

# Cached clients, so a cluster started by one call is reused by the next (starting worker
# processes costs seconds). Key: "local", "threads" or an address -> (client, cluster, n_workers).
_clients: dict[str, tuple[Any, Any, int | None]] = {}
_lock = threading.Lock()  # parallel_map may be called from several job threads at once
_atexit_registered = False


# In a worker process: the thread count configure_threads last set there. Setting it costs
# ~3 ms (threadpoolctl scans the loaded libraries), as much as a small task, so only on change.
_worker_threads: int | None = None


def _run_task(func: Callable[[T], R], threads: int | None, item: T) -> R:
    """Runs in the worker: limit torch/BLAS threads first, so N workers x all-cores pools
    do not oversubscribe the machine (benchmarks/threads.py measures how bad that gets)."""
    global _worker_threads
    if threads is not None and threads != _worker_threads:
        configure_threads(threads)
        _worker_threads = threads
    return func(item)


def parallel_map(
    func: Callable[[T], R],
    items: Iterable[T],
    *,
    scheduler: str | None = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    progress: Progress | None = None,
    label: str | None = None,
) -> list[R]:
    """``[func(item) for item in items]`` computed in parallel, results in input order.

    Parameters
    ----------
    func:
        A picklable function of one argument (defined at module top level, or a
        ``functools.partial`` of one); it runs in other processes or on other machines.
    items:
        The chunks/patches/file names to map over.
    scheduler:
        ``"local"``, ``"serial"``, ``"threads"`` or a scheduler address such as
        ``"tcp://host:8786"``; None reads ``NEUROWB_SCHEDULER`` and defaults to ``"local"``.
    n_workers:
        Worker processes of the local cluster (threads for ``"threads"``); default
        ``available_cores() // threads_per_worker``. A different value restarts the cached
        local cluster. Ignored for a remote scheduler, whose size is set where it runs.
    threads_per_worker:
        torch/BLAS threads each task may use (set in the worker before ``func`` runs).
        Each local worker process runs one task at a time.
    progress:
        Receives ``"label done/total"`` as tasks complete; a cancel request stops the batch
        within ~0.1 s and raises :class:`~engine.progress.Cancelled`. Tasks already running
        on a worker finish in the background (Python cannot interrupt them); queued ones
        never start.
    label:
        Message prefix for progress; default the function's name.

    Raises
    ------
    Cancelled
        If ``progress`` was cancelled.
    InputError
        If a remote scheduler cannot be reached.
    Exception
        The first exception raised by a task, with its original type.
    """
    items = list(items)
    progress = as_progress(progress)
    label = label or getattr(func, "__name__", None) or "tasks"
    scheduler = (scheduler or os.environ.get(SCHEDULER_ENV) or "local").strip()
    threads_per_worker = max(1, int(threads_per_worker))

    # Starting (or even talking to) a cluster costs more than running one item here.
    if scheduler == "serial" or len(items) <= 1:
        return [func(item) for item in progress.iterate(items, message=label)]

    if n_workers is None:
        n_workers = max(1, available_cores() // threads_per_worker)
    client = _client(scheduler, n_workers)
    # In-process threads share this process's thread pools: reconfiguring them per task
    # would change the caller's settings, so only worker processes get configured.
    threads = None if scheduler == "threads" else threads_per_worker

    from distributed import as_completed

    total = len(items)
    progress.report(0.0, f"{label} 0/{total}")
    # pure=False: tasks may be non-deterministic (random init, file reads), and equal items
    # must still run once each; key= only names them in the Dask dashboard.
    futures = client.map(functools.partial(_run_task, func, threads), items, pure=False, key=label)
    index = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * total
    # loop= explicitly: our clients are not the Dask default client (set_as_default=False).
    pending = as_completed(futures, loop=client.loop, with_results=True, raise_errors=False)
    done = 0
    try:
        while done < total:
            progress.check()
            batch = pending.next_batch(block=False)
            if not batch:
                # as_completed has no "wait at most t" call; a short sleep keeps cancel
                # latency bounded without spinning a core the workers need.
                time.sleep(_POLL_S)
                continue
            for future, result in batch:
                if future.status != "finished":
                    future.result()  # re-raises the task's exception with its original type
                results[index[future.key]] = result
                done += 1
            progress.report(done / total, f"{label} {done}/{total}")
    except BaseException:
        # Cancel, task error or Ctrl+C: drop the queued tasks so the cluster is free for
        # the next job instead of grinding through a batch nobody will read.
        client.cancel([f for f in futures if not f.done()])
        raise
    return results


def _client(scheduler: str, n_workers: int):
    """The cached Dask client for ``scheduler``, creating (or reconnecting) it if needed."""
    global _atexit_registered
    with _lock:
        entry = _clients.get(scheduler)
        if entry is not None:
            client, cluster, size = entry
            remote = scheduler not in ("local", "threads")
            if client.status == "running" and (remote or size == n_workers):
                return client
            _close(_clients.pop(scheduler))
        if scheduler in ("local", "threads"):
            entry = _start_local(processes=scheduler == "local", n_workers=n_workers)
        else:
            entry = (_connect(scheduler), None, None)
        _clients[scheduler] = entry
        if not _atexit_registered:
            # Registered once distributed is imported, so it runs before distributed's own
            # exit hooks (atexit is last-in first-out) and closes clusters while they work.
            atexit.register(shutdown)
            _atexit_registered = True
        return entry[0]


def _start_local(processes: bool, n_workers: int):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        # Processes: one task at a time per worker process (threads_per_worker of
        # parallel_map sets the BLAS threads inside). Threads: one worker, n threads.
        n_workers=n_workers if processes else 1,
        threads_per_worker=1 if processes else n_workers,
        processes=processes,
        dashboard_address=None,
        # Even without a dashboard the scheduler serves HTTP (health checks) on port 8787,
        # and warns when a second cluster finds it taken: use any free port on localhost.
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        silence_logs=logging.ERROR,
    )
    # set_as_default=False: do not hijack dask.compute() calls elsewhere in the app.
    return Client(cluster, set_as_default=False), cluster, n_workers


def _connect(address: str):
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except Exception as exc:  # OSError/TimeoutError when unreachable, ValueError for a bad address
        raise InputError(
            f"Cannot reach the Dask scheduler at {address!r}. Start one there with "
            f"'dask scheduler' (and workers with 'dask worker {address}'), fix the address, "
            f"or use the local cluster: --scheduler local / unset {SCHEDULER_ENV}.",
            details=f"{type(exc).__name__}: {exc}",
        ) from exc
    if not client.scheduler_info().get("workers"):
        # Tasks would wait forever with no visible reason; the progress bar stays at 0.
        log.warning("Dask scheduler %s has no workers yet; tasks wait until one joins", address)
    return client


def _close(entry) -> None:
    client, cluster, _ = entry
    for obj in (client, cluster):
        if obj is not None:
            try:
                obj.close()
            except Exception:  # already gone (interpreter exit, lost connection): nothing to free
                pass


def shutdown() -> None:
    """Close every cached client and local cluster (their worker processes exit).

    Called automatically at interpreter exit; the next ``parallel_map`` starts afresh.
    """
    with _lock:
        while _clients:
            _close(_clients.popitem()[1])

