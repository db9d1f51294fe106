"""engine.parallel: results, processes, progress, cancel, errors, threads, bad addresses.

One local cluster (2 worker processes) is shared by the whole module and shut down at the
end; task functions live at module level so they pickle into the worker processes.
"""

import os
import socket
import threading
import time

import numpy as np
import pytest

from engine import parallel
from engine.errors import InputError
from engine.parallel import parallel_map
from engine.progress import Cancelled, Progress

WORKERS = 2  # explicit, so the cached cluster is the same on any machine


@pytest.fixture(scope="module", autouse=True)
def _cluster():
    yield
    parallel.shutdown()
    assert not parallel._clients


def _spectrum(seed):
    """A small but real numpy computation, different for every item."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(60, 60))
    return np.linalg.eigvalsh(a + a.T)


def _pid(_):
    time.sleep(0.05)  # long enough that both workers get some of the items
    return os.getpid()


def _sleep(seconds):
    time.sleep(seconds)
    return seconds


def _fail_on_three(x):
    return 1 / (x - 3)


def _torch_threads(_):
    import torch

    return torch.get_num_threads()


def test_results_in_input_order_equal_serial():
    seeds = list(range(12))
    serial = parallel_map(_spectrum, seeds, scheduler="serial")
    local = parallel_map(_spectrum, seeds, scheduler="local", n_workers=WORKERS)
    assert len(local) == len(seeds)
    for s, p in zip(serial, local):
        np.testing.assert_allclose(p, s, rtol=1e-10, atol=1e-10)
    # Items differ, so a shuffled order could not pass the comparison above by accident.
    assert not np.allclose(serial[0], serial[1])


def test_local_cluster_runs_in_other_processes():
    pids = parallel_map(_pid, range(8), scheduler="local", n_workers=WORKERS)
    assert os.getpid() not in pids
    assert 1 <= len(set(pids)) <= WORKERS


def test_progress_fractions_increase_to_one():
    seen = []
    progress = Progress(lambda fraction, message: seen.append((fraction, message)), min_interval=0)
    out = parallel_map(_sleep, [0.05] * 10, scheduler="local", n_workers=WORKERS, progress=progress, label="nap")
    assert out == [0.05] * 10
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert len(set(fractions)) >= 3  # intermediate steps, not just 0 and 1
    assert seen[-1][1] == "nap 10/10"
    assert all(m.startswith("nap ") for _, m in seen)


def test_cancel_stops_a_batch_quickly():
    progress = Progress()
    timer = threading.Timer(0.5, progress.cancel)
    # 16 tasks of 1 s on 2 workers: ~8 s if the cancel were ignored.
    start = time.monotonic()
    timer.start()
    with pytest.raises(Cancelled):
        parallel_map(_sleep, [1.0] * 16, scheduler="local", n_workers=WORKERS, progress=progress)
    assert time.monotonic() - start < 1.5
    # The queued tasks were dropped: a new small batch does not wait behind ~7 s of them
    # (only behind the at most 1 s that the running tasks still need).
    start = time.monotonic()
    assert parallel_map(_sleep, [0.0, 0.0], scheduler="local", n_workers=WORKERS) == [0.0, 0.0]
    assert time.monotonic() - start < 3.0


def test_cancel_in_serial_mode():
    progress = Progress()
    progress.cancel()
    with pytest.raises(Cancelled):
        parallel_map(_sleep, [0.0, 0.0], scheduler="serial", progress=progress)


def test_task_exception_keeps_its_type():
    with pytest.raises(ZeroDivisionError):
        parallel_map(_fail_on_three, range(8), scheduler="local", n_workers=WORKERS)


def test_single_item_runs_here_without_a_cluster(monkeypatch):
    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was requested for a single item")

    monkeypatch.setattr(parallel, "_client", no_cluster)
    assert parallel_map(_pid, [0], scheduler="local") == [os.getpid()]
    assert parallel_map(_pid, [], scheduler="local") == []


def test_env_var_selects_the_scheduler(monkeypatch):
    monkeypatch.setenv(parallel.SCHEDULER_ENV, "serial")
    assert parallel_map(_pid, range(3)) == [os.getpid()] * 3


def test_threads_scheduler_runs_in_this_process():
    assert parallel_map(_pid, range(4), scheduler="threads", n_workers=2) == [os.getpid()] * 4


def test_workers_get_the_requested_thread_count():
    one = parallel_map(_torch_threads, range(4), scheduler="local", n_workers=WORKERS, threads_per_worker=1)
    assert one == [1] * 4
    # Dask already starts workers with OMP_NUM_THREADS=1, so 2 proves the setting is applied.
    two = parallel_map(_torch_threads, range(4), scheduler="local", n_workers=WORKERS, threads_per_worker=2)
    assert two == [2] * 4


def test_unreachable_scheduler_is_an_input_error(monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT", 1.0)
    start = time.monotonic()
    with pytest.raises(InputError) as info:
        parallel_map(_pid, range(3), scheduler=address)
    assert address in str(info.value)
    assert "dask scheduler" in str(info.value)
    assert time.monotonic() - start < 10
    assert address not in parallel._clients


def _worker_address(_):
    from distributed import get_worker

    return get_worker().address


def test_auto_runs_in_threads_here_without_importing_dask():
    import subprocess
    import sys

    code = ("import os, sys\nfrom engine.parallel import parallel_map\n"
            "pids = parallel_map(lambda _: os.getpid(), range(6))\n"
            "assert pids == [os.getpid()] * 6, pids\n"
            "sys.exit('distributed' in sys.modules or 'dask' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != parallel.SCHEDULER_ENV}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_auto_uses_the_local_process_cluster_for_big_batches(monkeypatch):
    monkeypatch.delenv(parallel.SCHEDULER_ENV, raising=False)
    pids = parallel_map(_pid, range(8), n_workers=WORKERS, processes=True)
    assert os.getpid() not in pids


def test_threads_keep_order_errors_and_cancel():
    assert parallel_map(_spectrum, range(6), scheduler="threads", n_workers=2)[3].tolist() == _spectrum(3).tolist()
    with pytest.raises(ZeroDivisionError):
        parallel_map(_fail_on_three, range(8), scheduler="threads", n_workers=2)
    progress = Progress()
    threading.Timer(0.2, progress.cancel).start()
    start = time.monotonic()
    with pytest.raises(Cancelled):
        parallel_map(_sleep, [1.0] * 16, scheduler="threads", n_workers=2, progress=progress)
    assert time.monotonic() - start < 0.9  # the queued sleeps never started


def test_an_address_sends_every_task_there():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster:
        try:
            address = cluster.scheduler_address
            workers = set(cluster.scheduler.workers)
            assert set(parallel_map(_worker_address, range(4), scheduler=address)) <= workers
            assert set(parallel_map(_worker_address, [0], scheduler=address)) <= workers  # even a batch of one
            parallel.connect(address)  # what `neurowb --scheduler ADDRESS` does first: reuses the client
            assert address in parallel._clients
        finally:
            parallel._close(parallel._clients.pop(address))
