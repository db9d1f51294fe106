"""Map a function over chunks, patches or files: threads here, a Dask cluster, or a real one.

``parallel_map(func, items)`` returns ``[func(item) for item in items]``, in input order,
computed in parallel, with progress reporting and cancellation through
:class:`engine.progress.Progress`.

Schedulers (the ``scheduler`` argument; default: ``NEUROWB_SCHEDULER`` env var, else ``auto``):

``"auto"``
    Threads of this process, unless the caller says the batch is big enough to repay
    worker processes (``processes=True``: then ``"local"``). Starting a process cluster
    costs seconds and imports Dask, more than most single-machine jobs gain from it;
    the numeric work of our tasks (SuperLU, BLAS, torch) releases the GIL, so threads
    use the cores too. Where processes start to pay off is measured by each caller
    (e.g. engine.mesh.hks.PROCESSES_ABOVE, benchmarks/hks.py).
``"threads"``
    A pool of threads in this process (no Dask); each task runs with one BLAS/torch
    thread (:func:`engine.device.single_threaded`) so the pools do not oversubscribe.
``"local"``
    A Dask ``LocalCluster`` of worker *processes* on this machine (one per core by default),
    started on first use, reused by later calls and closed at exit (or by :func:`shutdown`).
``"serial"``
    A plain loop in this process (debugging, profiling, tiny inputs).
``"tcp://host:8786"``
    A running Dask scheduler, so the same batch scales from a laptop to a cluster. Every
    task goes there (even a batch of one); an unreachable address is an InputError after
    at most :data:`CONNECT_TIMEOUT` seconds. Workers open input files by their path, so
    they need the data on a shared filesystem at the same path.

Dask's own log lines (``INFO distributed...``) stay out of the terminal unless the root
logger is at DEBUG (``neurowb --debug``).

Pointing it at a real cluster::

    # on the head node (dashboard on :8787)
    dask scheduler --port 8786
    # on every compute node, in an environment with neuroworkbench installed
    dask worker tcp://head-node:8786 --nworkers 8 --nthreads 1
    # then on the machine that submits the batch
    neurowb --scheduler tcp://head-node:8786 ...
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
import warnings
from typing import Any, Callable, Iterable, TypeVar

from engine.device import available_cores, configure_threads, single_threaded
from engine.errors import InputError
from engine.progress import Progress, as_progress

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

SCHEDULER_ENV = "NEUROWB_SCHEDULER"
#: Scheduler names; any other value is a Dask scheduler address.
SCHEDULERS = ("auto", "threads", "local", "serial")
# Seconds to wait for a remote scheduler: long enough for a slow network, short enough
# that a typo in the address gives an error instead of an apparently hung job.
CONNECT_TIMEOUT = 5.0
# How often the caller wakes up to check for a cancel while tasks run (engine rule: <= 0.1 s).
_POLL_S = 0.05

# Cached clients, so a cluster started by one call is reused by the next (starting worker
# processes costs seconds). Key: "local" or an address -> (client, cluster, n_workers).
_clients: dict[str, tuple[Any, Any, int | None]] = {}
_lock = threading.Lock()  # parallel_map may be called from several job threads at once
_atexit_registered = False


# In a worker process: the thread count configure_threads last set there. Setting it costs
# ~3 ms (threadpoolctl scans the loaded libraries), as much as a small task, so only on change.
_worker_threads: int | None = None


def requested_scheduler(scheduler: str | None = None) -> str:
    """The scheduler a batch uses: ``scheduler``, else ``NEUROWB_SCHEDULER``, else ``"auto"``."""
    return (scheduler or os.environ.get(SCHEDULER_ENV) or "auto").strip() or "auto"


def is_address(scheduler: str | None) -> bool:
    """True for a Dask scheduler address (anything that is not one of :data:`SCHEDULERS`)."""
    return scheduler is not None and scheduler.strip() not in SCHEDULERS


def connect(scheduler: str | None = None) -> None:
    """Connect now to the scheduler address requested (argument or environment), if any.

    Raises InputError within :data:`CONNECT_TIMEOUT` seconds when it cannot be reached, so
    a command fails before its work starts instead of at its first batch. The client is
    cached for the batches that follow. Does nothing for the local schedulers.
    """
    scheduler = requested_scheduler(scheduler)
    if is_address(scheduler):
        _client(scheduler, 1)


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
    processes: bool = False,
    progress: Progress | None = None,
    label: str | None = None,
) -> list[R]:
    """``[func(item) for item in items]`` computed in parallel, results in input order.

    Parameters
    ----------
    func:
        A picklable function of one argument (defined at module top level, or a
        ``functools.partial`` of one); it may run in other processes or on other machines.
    items:
        The chunks/patches/file names to map over.
    scheduler:
        ``"auto"``, ``"threads"``, ``"local"``, ``"serial"`` or a scheduler address such as
        ``"tcp://host:8786"``; None reads ``NEUROWB_SCHEDULER`` and defaults to ``"auto"``.
    n_workers:
        Threads (``"threads"``) or worker processes (``"local"``); default
        ``available_cores() // threads_per_worker``. A different value restarts the cached
        local cluster. Ignored for a remote scheduler, whose size is set where it runs.
    threads_per_worker:
        torch/BLAS threads each task may use (set in the worker before ``func`` runs; in
        threads of this process only 1 can be enforced, the pools being process-wide).
    processes:
        For ``"auto"``: True when the batch is big enough to repay starting worker
        processes (then the local Dask cluster is used), False for threads here.
    progress:
        Receives ``"label done/total"`` as tasks complete; a cancel request stops the batch
        within ~0.1 s and raises :class:`~engine.progress.Cancelled`. Tasks already running
        finish in the background (Python cannot interrupt them); queued ones never start.
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
    scheduler = requested_scheduler(scheduler)
    if scheduler == "auto":
        scheduler = "local" if processes else "threads"
    threads_per_worker = max(1, int(threads_per_worker))

    # Starting (or even talking to) a local pool costs more than running one item here; an
    # address, though, means the user wants the work there.
    if scheduler == "serial" or (len(items) <= 1 and not is_address(scheduler)):
        return [func(item) for item in progress.iterate(items, message=label)]

    if n_workers is None:
        n_workers = max(1, available_cores() // threads_per_worker)
    if scheduler == "threads":
        return _thread_map(func, items, n_workers, threads_per_worker, progress, label)
    client = _client(scheduler, n_workers)

    from distributed import as_completed

    total = len(items)
    progress.report(0.0, f"{label} 0/{total}")
    # pure=False: tasks may be non-deterministic (random init, file reads), and equal items
    # must still run once each; key= only names them in the Dask dashboard.
    with warnings.catch_warnings():
        # Our tasks carry their data (chunks, patches): Dask's "Sending large graph" advice does not apply.
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        futures = client.map(functools.partial(_run_task, func, threads_per_worker), items, pure=False, key=label)
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


def _thread_map(func, items: list, n_threads: int, threads_per_task: int, progress: Progress, label: str) -> list:
    """parallel_map on a pool of threads in this process (no Dask, nothing to start)."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    def run(item):
        if threads_per_task > 1:
            return func(item)
        with single_threaded():  # n threads x all-core BLAS pools would oversubscribe the cores
            return func(item)

    total = len(items)
    progress.report(0.0, f"{label} 0/{total}")
    pool = ThreadPoolExecutor(max_workers=min(n_threads, total), thread_name_prefix=f"neurowb-{label}")
    futures = {pool.submit(run, item): i for i, item in enumerate(items)}
    pending = set(futures)
    results: list[Any] = [None] * total
    try:
        while pending:
            progress.check()
            finished, pending = wait(pending, timeout=_POLL_S, return_when=FIRST_COMPLETED)
            for future in finished:
                results[futures[future]] = future.result()  # re-raises the task's exception
            if finished:
                progress.report((total - len(pending)) / total, f"{label} {total - len(pending)}/{total}")
    except BaseException:
        # Queued tasks never start; running ones finish in the background.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


def _client(scheduler: str, n_workers: int):
    """The cached Dask client for ``scheduler`` ("local" or an address), creating (or reconnecting) it if needed."""
    global _atexit_registered
    with _lock:
        entry = _clients.get(scheduler)
        if entry is not None:
            client, cluster, size = entry
            remote = scheduler != "local"
            if client.status == "running" and (remote or size == n_workers):
                return client
            _close(_clients.pop(scheduler))
        entry = _start_local(n_workers) if scheduler == "local" else (_connect(scheduler), None, None)
        _clients[scheduler] = entry
        if not _atexit_registered:
            # Registered once distributed is imported, so it runs before distributed's own
            # exit hooks (atexit is last-in first-out) and closes clusters while they work.
            atexit.register(shutdown)
            _atexit_registered = True
        return entry[0]


def _quiet_dask_logs() -> None:
    """Keep Dask's INFO lines (cluster start, worker registration, ...) off the user's terminal
    unless debug logging is on (``neurowb --debug``). distributed sets its loggers' levels when
    imported, so this runs after the import."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        for name in ("distributed", "dask"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _start_local(n_workers: int):
    from distributed import Client, LocalCluster

    _quiet_dask_logs()
    cluster = LocalCluster(
        # One task at a time per worker process (threads_per_worker of parallel_map sets the
        # BLAS threads inside).
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        # Even without a dashboard the scheduler serves HTTP (health checks) on port 8787,
        # and warns when a second cluster finds it taken: use any free port on localhost.
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        silence_logs=logging.ERROR if not logging.getLogger().isEnabledFor(logging.DEBUG) else False,
    )
    # set_as_default=False: do not hijack dask.compute() calls elsewhere in the app.
    return Client(cluster, set_as_default=False), cluster, n_workers


def _connect(address: str):
    from distributed import Client

    _quiet_dask_logs()
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except Exception as exc:  # OSError/TimeoutError when unreachable, ValueError for a bad address
        raise InputError(
            f"Cannot reach the Dask scheduler at {address!r}. Start one there with "
            f"'dask scheduler' (and workers with 'dask worker {address}'), fix the address, "
            f"or run on this machine: --scheduler auto / unset {SCHEDULER_ENV}.",
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
