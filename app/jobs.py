"""Background jobs: run any engine callable in a QThread.

A :class:`Job` calls ``func(*args, progress=progress, **kwargs)`` in its own QThread. The
engine reports through :class:`engine.progress.Progress`; its callback emits Qt signals from
the worker thread, which Qt queues to the GUI thread, so every slot connected to a Job
(``progressed``, ``finished``, ``failed``, ``cancelled``) runs on the GUI thread and may touch
widgets, while the job itself never does. Cancel is cooperative: ``cancel()`` flags the
Progress, and the engine's next ``progress.check()`` raises ``Cancelled``.

:class:`JobManager` owns running jobs (keeps them alive, lists them for the job panel, cancels
them all when the window closes).

Two things keep the window responsive while jobs run, because every thread shares one GIL and the
machine's cores: a job thread (and the threads it starts) runs at a lower scheduling priority than the
GUI thread (:data:`JOB_NICENESS`), and :func:`freeze_long_lived` keeps Python's cyclic garbage collector
from walking every long-lived object — a full collection holds the GIL throughout, and with Qt, torch,
scipy and trimesh loaded it walked ~300,000 objects for 200–500 ms, stopping the window whichever
thread triggered it.
"""

from __future__ import annotations

import enum
import gc
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from PyQt6.QtCore import QObject, QThread, pyqtSignal

from engine.errors import InputError
from engine.progress import Cancelled, Progress


class JobState(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class JobError:
    """What went wrong in a job, ready for a dialog."""

    exception: BaseException
    traceback: str

    @property
    def is_input_error(self) -> bool:
        return isinstance(self.exception, InputError)

    @property
    def message(self) -> str:
        if isinstance(self.exception, InputError):
            return self.exception.message
        return f"Unexpected {type(self.exception).__name__}: {self.exception}"

    @property
    def details(self) -> str:
        extra = getattr(self.exception, "details", None)
        return f"{extra}\n\n{self.traceback}" if extra else self.traceback


# Added to a job thread's nice value (Linux: per thread, inherited by the threads it starts, e.g. a
# slice pool): when a job and the window want the CPU at once, the window (and the OpenGL rasterizer
# threads that composite it) go first; a job alone on the machine runs at full speed.
JOB_NICENESS = 5

_modules_at_freeze = 0


def freeze_long_lived() -> None:
    """Move every object alive now out of the cyclic collector's sight (:func:`gc.freeze`).

    Called once the window is built and again when a job has imported new modules: modules, classes and
    functions live until exit, and once frozen a full collection walks only what was made since (tens of
    thousands of objects, a few ms). A young collection first drops the latest garbage; an object frozen
    while alive is still freed by reference counting, only a reference cycle that becomes garbage after
    its freeze stays (bounded: freezes happen at start-up and after the few jobs that import modules), until
    the window closes and unfreezes everything.
    """
    global _modules_at_freeze
    gc.collect(1)
    gc.freeze()
    _modules_at_freeze = len(sys.modules)


# What the first recording open, sort, CNMF, mesh open and HKS would import inside their job (measured by
# benchmarks/gui_stalls.py): loading a C extension holds the GIL, stopping the window for up to 0.2 s.
# Imported while the window is built instead (~0.3 s once, before it is shown). "module:name" also loads a
# name that the package loads lazily (scikit-image does). torch (CNN jobs, CNMF's NMF) is left to its job:
# 700 modules and seconds of start-up, and its import in a job stalled the window < 100 ms.
JOB_MODULES = ("scipy.signal", "sklearn.cluster", "sklearn.decomposition", "sklearn.mixture", "sklearn.ensemble",
               "skimage.measure:find_contours", "skimage.measure:regionprops",
               "skimage.morphology:convex_hull_image",  # regionprops' solidity loads it (the ROI classifier)
               "trimesh", "robust_laplacian")


def preload_job_modules() -> None:
    """Import :data:`JOB_MODULES` now, on the GUI thread before it shows anything; a missing one is left to its job."""
    import importlib

    for entry in JOB_MODULES:
        module, _, name = entry.partition(":")
        try:
            loaded = importlib.import_module(module)
            if name:
                getattr(loaded, name)
        except (ImportError, AttributeError):  # an optional extra not installed: the job says so when it runs
            pass


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + JOB_NICENESS)
    except (AttributeError, OSError):  # not Linux: jobs keep the window's priority
        pass


class _Worker(QThread):
    """Runs the callable; emits from the worker thread (delivered queued to the GUI thread)."""

    progressed = pyqtSignal(float, str)
    succeeded = pyqtSignal(object)
    errored = pyqtSignal(object)
    was_cancelled = pyqtSignal()

    def __init__(self, func: Callable, args: tuple, kwargs: dict, progress_interval: float):
        super().__init__()
        self._func, self._args, self._kwargs = func, args, kwargs
        self.progress = Progress(self.progressed.emit, min_interval=progress_interval)

    def run(self) -> None:
        _lower_priority()
        try:
            self.progress.check()  # cancelled before it started
            result = self._func(*self._args, progress=self.progress, **self._kwargs)
        except Cancelled:
            self.was_cancelled.emit()
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the GUI, not kill the thread
            self.errored.emit(JobError(exc, traceback.format_exc()))
        else:
            self.succeeded.emit(result)


# Jobs whose thread is still alive. Python must not collect a Job (and its QThread) while the
# thread runs: Qt aborts on "QThread: Destroyed while thread is still running".
_LIVE_JOBS: set["Job"] = set()


class Job(QObject):
    """One engine call in the background. Connect to its signals, then :meth:`start`."""

    progressed = pyqtSignal(float, str)  # fraction 0..1, message
    finished = pyqtSignal(object)  # the callable's return value
    failed = pyqtSignal(object)  # JobError
    cancelled = pyqtSignal()
    ended = pyqtSignal(object)  # self, after any of the three above

    def __init__(self, name: str, func: Callable, *args: Any, progress_interval: float = 0.05, **kwargs: Any):
        super().__init__()
        self.name = name
        self.state = JobState.PENDING
        self.fraction = 0.0
        self.message = ""
        self.result: Any = None
        self.error: JobError | None = None
        self._started_at: float | None = None
        self._ended_at: float | None = None
        self._worker = _Worker(func, args, kwargs, progress_interval)
        self._worker.progressed.connect(self._on_progress)
        self._worker.succeeded.connect(self._on_success)
        self._worker.errored.connect(self._on_error)
        self._worker.was_cancelled.connect(self._on_cancelled)
        self._worker.finished.connect(self._release)

    # -- control -----------------------------------------------------------------------
    def start(self) -> "Job":
        if self.state is not JobState.PENDING:
            raise RuntimeError(f"job {self.name!r} was already started")
        self.state = JobState.RUNNING
        self._started_at = time.monotonic()
        _LIVE_JOBS.add(self)
        self._worker.start()
        return self

    def cancel(self) -> None:
        """Ask the job to stop; it ends with ``cancelled`` at its next progress check."""
        self._worker.progress.cancel()

    def wait(self, timeout_ms: int = -1) -> bool:
        """Block until the thread has ended (for shutdown and tests). Signals still need the event loop."""
        return self._worker.wait() if timeout_ms < 0 else self._worker.wait(timeout_ms)

    # -- status ------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self.state is JobState.RUNNING

    @property
    def cancel_requested(self) -> bool:
        return self._worker.progress.cancelled

    @property
    def elapsed(self) -> float:
        if self._started_at is None:
            return 0.0
        return (self._ended_at or time.monotonic()) - self._started_at

    @property
    def elapsed_since_end(self) -> float:
        return 0.0 if self._ended_at is None else time.monotonic() - self._ended_at

    @property
    def eta(self) -> float | None:
        """Seconds left, extrapolated linearly; None until there is enough progress to tell."""
        if not self.is_running or self.fraction < 0.02:
            return None
        return self.elapsed * (1.0 - self.fraction) / self.fraction

    # -- worker signals (GUI thread) -------------------------------------------------------
    def _on_progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = fraction, message
        self.progressed.emit(fraction, message)

    def _end(self, state: JobState) -> None:
        self.state = state
        self._ended_at = time.monotonic()

    def _on_success(self, result: Any) -> None:
        self.result = result
        self.fraction = 1.0
        self._end(JobState.FINISHED)
        self.finished.emit(result)
        self.ended.emit(self)

    def _on_error(self, error: JobError) -> None:
        self.error = error
        self._end(JobState.FAILED)
        self.failed.emit(error)
        self.ended.emit(self)

    def _on_cancelled(self) -> None:
        self._end(JobState.CANCELLED)
        self.cancelled.emit()
        self.ended.emit(self)

    def _release(self) -> None:
        self._worker.wait()  # QThread.finished fires just before the thread exits
        _LIVE_JOBS.discard(self)


class JobManager(QObject):
    """Starts jobs and keeps them alive until they end; the job panel listens to it."""

    job_added = pyqtSignal(object)
    job_ended = pyqtSignal(object)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._jobs: list[Job] = []

    def submit(
        self,
        name: str,
        func: Callable,
        *args: Any,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[JobError], None] | None = None,
        **kwargs: Any,
    ) -> Job:
        """Create and start a job; ``on_result``/``on_error`` run on the GUI thread."""
        job = Job(name, func, *args, **kwargs)
        if on_result is not None:
            job.finished.connect(on_result)
        if on_error is not None:
            job.failed.connect(on_error)
        job.ended.connect(self._on_ended)
        self._jobs.append(job)
        job.start()
        self.job_added.emit(job)  # after start: listeners see a running job (its signals are queued)
        return job

    def running(self) -> list[Job]:
        return [job for job in self._jobs if job.is_running]

    def cancel_all(self) -> None:
        for job in self.running():
            job.cancel()

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Cancel everything and wait for the threads; True if all ended in time."""
        self.cancel_all()
        deadline = time.monotonic() + timeout_ms / 1000
        ok = True
        for job in list(self._jobs):
            left = max(0, int((deadline - time.monotonic()) * 1000))
            ok = job.wait(left) and ok
        return ok

    def _on_ended(self, job: Job) -> None:
        if job in self._jobs:
            self._jobs.remove(job)
        if len(sys.modules) > _modules_at_freeze and not self.running():
            freeze_long_lived()  # the job imported modules: keep full collections short
        self.job_ended.emit(job)
