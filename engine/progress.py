"""Progress reporting and cooperative cancellation for long engine functions.

Every long engine function takes ``progress=None`` and calls ``progress.check()`` at least
every ~100 ms of work. The same object feeds a tqdm bar on the command line and a progress
bar in the app's job panel; the app cancels a job by calling ``cancel()`` from the GUI thread,
and the next ``check()`` in the worker raises :class:`Cancelled`.

Nested stages map a child's 0..1 onto a slice of its parent::

    def pipeline(data, progress=None):
        progress = as_progress(progress)
        load, solve = progress.split([1, 9], ["Loading", "Solving"])
        for i, chunk in enumerate(chunks):
            load.report(i / n)        # parent sees 0 .. 0.1
            load.check()
        for item in solve.iterate(items):   # parent sees 0.1 .. 1, check() on every item
            ...
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")

Callback = Callable[[float, str], None]


class Cancelled(Exception):
    """Raised by :meth:`Progress.check` once a cancel was requested."""


class _Shared:
    """State shared by a root Progress and all its stages (one per job)."""

    def __init__(self, callback: Callback | None, min_interval: float):
        self.callback = callback
        self.min_interval = min_interval
        self.cancel_event = threading.Event()
        self.lock = threading.Lock()
        self.fraction = 0.0
        self.message = ""
        self.last_emit = -float("inf")


class Progress:
    """Reports a fraction in [0, 1] with a message; carries a cancel request.

    Parameters
    ----------
    callback:
        ``callback(fraction, message)`` called on updates, throttled to one call per
        ``min_interval`` seconds (a message change or completion always goes through).
        Called in the thread that does the work.
    min_interval:
        Throttle interval in seconds, so a tight loop cannot flood a GUI event queue.
    """

    def __init__(self, callback: Callback | None = None, min_interval: float = 0.05):
        self._shared = _Shared(callback, min_interval)
        self._start = 0.0
        self._span = 1.0
        self._prefix = ""

    # -- reporting -------------------------------------------------------------------
    def report(self, fraction: float, message: str | None = None) -> None:
        """Report progress of this stage (0..1) and an optional message."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        shared = self._shared
        with shared.lock:
            total = self._start + self._span * fraction
            # Stages may overlap slightly through rounding; never let the bar go backwards.
            shared.fraction = max(shared.fraction, min(total, 1.0))
            changed = False
            if message is not None:
                text = f"{self._prefix}{message}" if self._prefix else message
                changed = text != shared.message
                shared.message = text
            elif self._prefix and shared.message != self._prefix.rstrip(": "):
                shared.message = self._prefix.rstrip(": ")
                changed = True
            now = time.monotonic()
            due = changed or shared.fraction >= 1.0 or now - shared.last_emit >= shared.min_interval
            if not due or shared.callback is None:
                return
            shared.last_emit = now
            args = (shared.fraction, shared.message)
        shared.callback(*args)

    @property
    def fraction(self) -> float:
        """Overall fraction done (of the whole job, not of this stage)."""
        return self._shared.fraction

    @property
    def message(self) -> str:
        return self._shared.message

    # -- cancellation ----------------------------------------------------------------
    def cancel(self) -> None:
        """Request cancellation; safe to call from any thread."""
        self._shared.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self._shared.cancel_event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if a cancel was requested."""
        if self._shared.cancel_event.is_set():
            raise Cancelled("cancelled by the user")

    # -- nesting ---------------------------------------------------------------------
    def stage(self, start: float, end: float, message: str | None = None) -> "Progress":
        """A child whose 0..1 maps onto [start, end] of this stage."""
        if not 0.0 <= start <= end <= 1.0:
            raise ValueError(f"stage bounds must satisfy 0 <= start <= end <= 1, got {start}, {end}")
        child = Progress.__new__(Progress)
        child._shared = self._shared
        child._start = self._start + self._span * start
        child._span = self._span * (end - start)
        child._prefix = f"{self._prefix}{message}: " if message else self._prefix
        return child

    def split(self, weights: Sequence[float], messages: Sequence[str | None] | None = None) -> list["Progress"]:
        """Consecutive child stages whose sizes are proportional to ``weights``."""
        weights = [float(w) for w in weights]
        if not weights or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("split() needs non-negative weights with a positive sum")
        if messages is not None and len(messages) != len(weights):
            raise ValueError("split() needs one message per weight")
        total = sum(weights)
        children, cursor = [], 0.0
        for i, w in enumerate(weights):
            end = 1.0 if i == len(weights) - 1 else min(cursor + w / total, 1.0)
            children.append(self.stage(cursor, end, messages[i] if messages else None))
            cursor = end
        return children

    def iterate(self, items: Iterable[T], total: int | None = None, message: str | None = None) -> Iterator[T]:
        """Yield items, calling check() before each and reporting after each."""
        if total is None:
            try:
                total = len(items)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.report(0.0, message)
        for i, item in enumerate(items):
            self.check()
            yield item
            if total:
                self.report((i + 1) / total, f"{message} {i + 1}/{total}" if message else None)
        self.report(1.0)


def as_progress(progress: Progress | None) -> Progress:
    """The given Progress, or a silent one (the no-op default of every engine function)."""
    return progress if progress is not None else Progress()
