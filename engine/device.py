"""One place that picks the compute device and sets thread counts.

Device: ``NEUROWB_DEVICE`` (``cuda``, ``cuda:1``, ``mps``, ``cpu``) overrides the app setting,
which overrides the automatic choice cuda > mps > cpu. A request for a device that is not
there falls back to the CPU with a warning instead of failing later inside torch.

Threads: torch and the BLAS behind numpy/scipy each start one thread per core by default.
When two such pools (or several Dask workers) share a small machine they oversubscribe it:
on a busy 2-core machine torch element-wise ops and shift-invert eigensolvers ran 2-4x slower
with 2 threads than with 1 (``python -m benchmarks.threads``; others measured far worse, up to
700x). :func:`configure_threads` sets both pools at once; parallel workers call it with 1.
Code whose parallelism comes from its own worker threads wraps its work in
:func:`single_threaded`.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEVICE_ENV = "NEUROWB_DEVICE"
THREADS_ENV = "NEUROWB_THREADS"

# Environment variables read by BLAS/OpenMP runtimes when they start (child processes).
_THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def available_cores() -> int:
    """CPU cores this process may run on (respects affinity / container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _cuda_ok(torch) -> bool:
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # broken driver installs raise instead of returning False
        return False


def _mps_ok(torch) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(preference: str | None = None):
    """The torch device to compute on.

    Parameters
    ----------
    preference:
        ``"auto"``/None, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (e.g. the app setting).
        The environment variable ``NEUROWB_DEVICE`` wins over it.
    """
    import torch

    wanted = (os.environ.get(DEVICE_ENV) or preference or "auto").strip().lower()
    if wanted == "auto":
        if _cuda_ok(torch):
            return torch.device("cuda")
        if _mps_ok(torch):
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(wanted)
    except RuntimeError:
        log.warning("unknown device %r (from %s or settings); using the CPU", wanted, DEVICE_ENV)
        return torch.device("cpu")
    if device.type == "cuda":
        index = device.index or 0
        if not _cuda_ok(torch) or index >= torch.cuda.device_count():
            log.warning("device %r is not available; using the CPU", wanted)
            return torch.device("cpu")
    elif device.type == "mps" and not _mps_ok(torch):
        log.warning("device 'mps' is not available; using the CPU")
        return torch.device("cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        log.warning("device %r is not supported; using the CPU", wanted)
        return torch.device("cpu")
    return device


def device_name(device) -> str:
    """Human-readable name: 'NVIDIA H200 (cuda:0)', 'Apple GPU (mps)', 'CPU: <model> (2 cores)'."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"{torch.cuda.get_device_name(index)} (cuda:{index})"
    if device.type == "mps":
        return "Apple GPU (mps)"
    return f"CPU: {cpu_model()} ({available_cores()} cores)"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def configure_threads(n: int | None = None) -> int:
    """Set torch and BLAS/OpenMP thread pools to ``n`` threads (default: ``NEUROWB_THREADS`` or all cores).

    Returns the number used. Also exports the usual environment variables so child
    processes (Dask workers, subprocesses) start with the same limit. While some thread is
    inside :func:`single_threaded`, BLAS stays at one thread and takes ``n`` when it leaves.
    """
    if n is None:
        env = os.environ.get(THREADS_ENV)
        n = int(env) if env and env.isdigit() and int(env) > 0 else available_cores()
    n = max(1, int(n))
    for var in _THREAD_ENV_VARS:
        os.environ[var] = str(n)
    _limit("openmp", n)
    # Only touch torch when it is already loaded: importing it costs ~1 s, and a later import
    # picks up OMP_NUM_THREADS set above anyway.
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    with _blas.lock:
        if _blas.sections:
            _blas.restore_to = n
        else:
            _limit("blas", n)
    return n


def _limit(user_api: str, n: int):
    """threadpoolctl limits on one kind of pool (``"blas"`` or ``"openmp"``), or None without it.

    OpenMP pools (and torch's) are per thread: this sets the calling thread's. OpenBLAS's pool
    is process-wide, and threadpoolctl >= 3.8 lets only the first Python thread that set it
    change it afterwards, silently ignoring the others (a job thread that once limited BLAS
    froze the settings for the whole app). Callers hold ``_blas.lock``, so control is taken
    and handed back around each change.
    """
    controller = _controller()
    if controller is None:  # no threadpoolctl: the environment variables must do
        return None
    if user_api != "blas":
        return controller.limit(limits=n, user_api=user_api)
    with _openblas_control():
        return controller.limit(limits=n, user_api=user_api)


_controller_cache: tuple = (None, None)


def _controller():
    """A threadpoolctl controller of the pools loaded so far, or None without threadpoolctl.

    Finding the loaded libraries costs ~2 ms, too much for the mesh solver's hundreds of
    sections; native pools only arrive with imports, so the count of modules tells when to
    look again.
    """
    global _controller_cache
    key, controller = _controller_cache
    if controller is None or key != len(sys.modules):
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            return None
        controller = ThreadpoolController()
        _controller_cache = (len(sys.modules), controller)
    return controller


@contextmanager
def _openblas_control():
    try:
        from threadpoolctl import OpenBLASController

        release = OpenBLASController.clear_controlling_thread
    except (ImportError, AttributeError):  # threadpoolctl < 3.8: any thread may set
        yield
        return
    release(force=True)
    try:
        yield
    finally:
        release(force=True)


class _BlasSections:
    """Process-wide state of :func:`single_threaded` for BLAS: callers inside, what to restore."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sections = 0
        self.saved = None  # threadpoolctl limits from before the first caller entered
        self.restore_to: int | None = None  # set by a configure_threads(n) made meanwhile


_blas = _BlasSections()


@contextmanager
def single_threaded():
    """torch, BLAS and OpenMP at one thread inside the block, for the calling thread.

    For work that gets its parallelism from its own worker threads (sorter batches, mesh
    chunks, NMF row workers): pool threads on top of those oversubscribe the cores. OpenMP and
    torch limits belong to the calling thread and are restored on leaving. BLAS's pool is
    shared by the whole process, so it stays at one thread while any caller is inside and is
    restored when the last leaves; a plain ``with threadpool_limits(1)`` in each of several
    overlapping threads would leave the count of whichever left last.
    """
    with _blas.lock:
        if _blas.sections == 0:
            _blas.saved, _blas.restore_to = _limit("blas", 1), None
        _blas.sections += 1
    openmp = _limit("openmp", 1)
    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        if openmp is not None:
            openmp.restore_original_limits()
        with _blas.lock:
            _blas.sections -= 1
            if _blas.sections == 0:
                if _blas.restore_to is not None:
                    _limit("blas", _blas.restore_to)
                elif _blas.saved is not None:
                    with _openblas_control():
                        _blas.saved.restore_original_limits()


@dataclass(frozen=True)
class DeviceInfo:
    device: str
    name: str
    torch_version: str
    cuda_version: str | None
    threads: int
    cores: int

    def summary(self) -> str:
        cuda = f", CUDA {self.cuda_version}" if self.cuda_version else ""
        return f"{self.name}; torch {self.torch_version}{cuda}; {self.threads} of {self.cores} cores"


def describe(preference: str | None = None) -> DeviceInfo:
    """What the engine will compute on, for About boxes, logs and benchmark headers."""
    import torch

    device = select_device(preference)
    return DeviceInfo(
        device=str(device),
        name=device_name(device),
        torch_version=torch.__version__,
        cuda_version=torch.version.cuda,
        threads=torch.get_num_threads(),
        cores=available_cores(),
    )


def measure_speed(preference: str | None = None, seconds: float = 5.0, size: int = 1024, progress=None) -> dict:
    """Measure matrix-multiply throughput (GFLOP/s, float32) on the selected device.

    Runs for about ``seconds``, checking for cancellation after every multiply, so it doubles
    as the app's "check compute speed" job. Returns device, name, gflops, matmuls, seconds.
    """
    import time

    import torch

    from engine.progress import as_progress

    progress = as_progress(progress)
    device = select_device(preference)
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    progress.report(0.0, f"matrix multiplies on {device_name(device)}")
    count, start = 0, time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds:
        progress.check()
        a = torch.tanh(a @ b)  # tanh keeps values bounded over many repeats
        synchronize()
        count += 1
        elapsed = time.perf_counter() - start
        progress.report(min(elapsed / seconds, 1.0), f"{count} multiplies")
    gflops = 2.0 * size**3 * count / elapsed / 1e9
    return {"device": str(device), "name": device_name(device), "gflops": gflops, "matmuls": count, "seconds": elapsed}
