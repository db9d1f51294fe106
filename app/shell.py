"""What a workspace may ask of the window around it: the shell interface.

Workspaces hold a ``Shell`` (the main window implements it), never the main window's class, so
``app.main`` imports the workspaces and no workspace imports ``app.main``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from app.jobs import Job, JobError
from app.settings import Settings


class Shell(Protocol):
    settings: Settings

    def run_job(self, name: str, func: Callable, *args: Any, on_result: Callable[[Any], None] | None = None,
                on_error: Callable[[JobError], None] | None = None, **kwargs: Any) -> Job:
        """Run ``func(*args, progress=..., **kwargs)`` in the background, listed in the job panel."""

    def show_status(self, message: str, timeout_ms: int = 6000) -> None:
        """A line in the status bar."""

    def show_job_error(self, name: str, error: JobError) -> object:
        """The error box of a failed job."""

    def open_files(self, paths: Sequence[str | Path]) -> list[Job]:
        """Open files, each in the workspace that reads it."""

    def open_dialog(self) -> None:
        """File ▸ Open."""

    def open_demo(self, on_opened: Callable[[list[Job]], None] | None = None) -> Job:
        """Generate (once) and open the demo datasets."""
