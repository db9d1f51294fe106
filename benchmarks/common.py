"""Shared helpers so every benchmark prints the same kind of report.

Convention: a benchmark is run as ``python -m benchmarks.<name>``, prints
:func:`machine_header` and then markdown tables (:func:`markdown_table`) whose rows put a
variant next to its peer with a ratio (:func:`ratio`), so numbers from one run compare like
with like. Paste the output into benchmarks/RESULTS.md with the date.
"""

from __future__ import annotations

import datetime
import platform
import statistics
import sys
import time
from typing import Any, Callable, Mapping, Sequence


def machine_header(title: str | None = None) -> str:
    """Markdown lines saying when and on what a benchmark ran."""
    import numpy
    import scipy
    import torch

    from engine.device import available_cores, cpu_model, describe

    lines = [f"## {title}", ""] if title else []
    lines += [
        f"- date: {datetime.date.today().isoformat()}",
        f"- CPU: {cpu_model()}, {available_cores()} cores available",
        f"- Python {platform.python_version()} on {platform.system()} {platform.release()}",
        f"- numpy {numpy.__version__}, scipy {scipy.__version__}, torch {torch.__version__}",
        f"- device: {describe().summary()}",
    ]
    return "\n".join(lines)


def time_call(func: Callable[[], Any], repeat: int = 3, max_seconds: float | None = None) -> tuple[float, float]:
    """(best, median) wall seconds of ``func()`` over ``repeat`` runs.

    ``max_seconds`` stops repeating once that much time was spent (at least one run), so a
    pathological case cannot blow the benchmark's time budget.
    """
    times: list[float] = []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
        if max_seconds is not None and sum(times) >= max_seconds:
            break
    return min(times), statistics.median(times)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (NaN where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def ratio(value: float, reference: float) -> str:
    """``value / reference`` as '2.35x' (how many times ``reference`` the value is)."""
    if not reference or reference != reference:  # zero or NaN
        return "n/a"
    r = value / reference
    return f"{r:.2f}x" if r < 100 else f"{r:.0f}x"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def markdown_table(rows: Sequence[Sequence[Any] | Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Print and return a markdown table; rows are sequences or dicts keyed by column."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = [row.get(c, "") for c in columns] if isinstance(row, Mapping) else list(row)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


class StallProbe:
    """A 2 ms timer on the GUI thread; its largest gap is the longest the event loop was blocked."""

    def __init__(self):
        from PyQt6.QtCore import QTimer  # here, so benchmarks without a window never import Qt

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(2)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def __enter__(self):
        self.ticks = [time.perf_counter()]
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.stop()
        self.ticks.append(time.perf_counter())

    @property
    def max_gap_ms(self) -> float:
        return max((b - a) * 1e3 for a, b in zip(self.ticks, self.ticks[1:])) if len(self.ticks) > 1 else 0.0
