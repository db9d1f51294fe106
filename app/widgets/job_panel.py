"""The job panel in the status bar: one row per running job (name, progress, time, Cancel)."""

from __future__ import annotations

from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QToolButton, QWidget

from app.jobs import Job, JobManager, JobState

KEEP_ENDED_MS = 2500  # an ended job's row stays this long so its outcome can be read
NAME_WIDTH = 240  # px: a longer name (a long file name) is elided in the middle, whole in the tooltip


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "…"
    seconds = int(round(seconds))
    if seconds < 3600:
        return f"{seconds // 60}:{seconds % 60:02d}"
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class JobRow(QWidget):
    def __init__(self, job: Job, parent: QWidget | None = None):
        super().__init__(parent)
        self.job = job
        self.setObjectName("JobRow")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 1, 2, 1)
        layout.setSpacing(4)
        self.name = QLabel()
        self._show_name(job.name)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setFixedWidth(140)
        self.bar.setFormat("%p%")
        self.time = QLabel()
        self.time.setMinimumWidth(120)
        self.cancel_button = QToolButton(objectName="CancelJob")
        self.cancel_button.setText("✕")
        self.cancel_button.setToolTip(f"Cancel “{job.name}”")
        self.cancel_button.clicked.connect(self._cancel)
        for widget in (self.name, self.bar, self.time, self.cancel_button):
            layout.addWidget(widget)
        job.progressed.connect(self._on_progress)
        job.ended.connect(self._on_ended)
        self.refresh()

    def _show_name(self, text: str) -> None:
        self.name.setText(self.name.fontMetrics().elidedText(text, Qt.TextElideMode.ElideMiddle, NAME_WIDTH))
        self.name.setToolTip(text)

    def _cancel(self) -> None:
        self.job.cancel()
        self.cancel_button.setEnabled(False)
        self.time.setText("cancelling…")

    def _on_progress(self, fraction: float, message: str) -> None:
        self.bar.setValue(int(round(fraction * 1000)))
        self.setToolTip(message)
        self.bar.setToolTip(message)
        if message:
            self._show_name(f"{self.job.name}: {message}" if len(message) < 40 else self.job.name)
        self.refresh()

    def refresh(self) -> None:
        if self.job.is_running and not self.job.cancel_requested:
            self.time.setText(f"{format_seconds(self.job.elapsed)} · ETA {format_seconds(self.job.eta)}")

    def _on_ended(self, job: Job) -> None:
        self.cancel_button.hide()
        self.bar.hide()  # the outcome is in words; the row narrows for the jobs still running beside it
        self._show_name(job.name)
        outcome = {JobState.FINISHED: "done", JobState.FAILED: "failed", JobState.CANCELLED: "cancelled"}[job.state]
        if job.state is JobState.FINISHED:
            self.bar.setValue(1000)
        self.time.setText(f"{outcome} after {format_seconds(job.elapsed)}")


class JobPanel(QWidget):
    """Lists the manager's jobs side by side; rows of ended jobs linger briefly, then go.

    Rows sit in one line, so a second job leaves the panel's height alone (the window that holds the
    panel keeps its status bar at a row's height once it has shown one)."""

    def __init__(self, manager: JobManager, parent: QWidget | None = None):
        super().__init__(parent)
        self.manager = manager
        self.rows: dict[Job, JobRow] = {}
        self.layout_ = QHBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.layout_.setSpacing(1)
        self.timer = QTimer(self)
        self.timer.setInterval(500)
        self.timer.timeout.connect(self._tick)
        manager.job_added.connect(self.add_job)
        self.setVisible(False)

    def add_job(self, job: Job) -> None:
        row = JobRow(job, self)
        self.rows[job] = row
        self.layout_.addWidget(row)
        self.setVisible(True)
        self.timer.start()

    def _tick(self) -> None:
        for job, row in list(self.rows.items()):
            row.refresh()
            if not job.is_running and job.elapsed_since_end * 1000 > KEEP_ENDED_MS:
                self.remove_job(job)

    def remove_job(self, job: Job) -> None:
        row = self.rows.pop(job, None)
        if row is not None:
            self.layout_.removeWidget(row)
            row.deleteLater()
        if not self.rows:
            self.timer.stop()
            self.setVisible(False)
