"""A workspace's box for its long job: Run and Cancel, a thin progress bar and a stage line.

Every workspace shows its main job (a sort, CNMF, Train / Extract / NMF) the same way: the run
button(s) start it, :meth:`JobBox.follow` shows its progress as "stage — 40 %", Cancel asks it to
stop, and its end says "cancelled; … kept" or "failed" on the stage line. A job computed from a
dataset that is no longer shown (``shows`` says) leaves the box alone: its progress is in the
window's job panel.
"""

from __future__ import annotations

from typing import Callable

from PyQt6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from app.jobs import Job, JobState


class JobBox(QWidget):
    """Run button (optional: several run buttons may sit elsewhere), Cancel, progress bar, stage line."""

    def __init__(self, idle_text: str, run_button: QPushButton | None = None, *,
                 shows: Callable[[Job], bool] = lambda job: True,
                 kept: str = "earlier results are kept.", parent: QWidget | None = None):
        super().__init__(parent)
        self.shows = shows
        self.kept = kept  # what a cancelled job leaves: said after "cancelled;"
        self.job: Job | None = None
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar(textVisible=False)
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setFixedHeight(8)
        self.stage_label = QLabel(idle_text)
        self.stage_label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        if run_button is not None:
            row.addWidget(run_button, 2)
        row.addWidget(self.cancel_button, 1)
        layout.addLayout(row)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.stage_label)

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.is_running

    def follow(self, job: Job) -> Job:
        """Show ``job`` here until it ends (the stage line says it is starting)."""
        self.job = job
        job.progressed.connect(lambda fraction, message, job=job: self._progressed(job, fraction, message))
        job.ended.connect(self._ended)
        self.show_stage(f"{job.name}: starting…", 0.0)
        self.cancel_button.setEnabled(True)
        return job

    def cancel(self) -> None:
        if self.running:
            self.job.cancel()
            self.stage_label.setText("Cancelling…")

    def show_stage(self, text: str, fraction: float | None = None) -> None:
        """Say where things stand (and set the bar when ``fraction`` is given)."""
        self.stage_label.setText(text)
        if fraction is not None:
            self.progress_bar.setValue(int(round(fraction * 1000)))

    def _progressed(self, job: Job, fraction: float, message: str) -> None:
        if job is self.job and self.shows(job) and not job.cancel_requested:
            self.show_stage(f"{job.name}: {message or 'working'} — {fraction:.0%}", fraction)

    def _ended(self, job: Job) -> None:
        if job is not self.job:
            return
        self.cancel_button.setEnabled(False)
        if not self.shows(job):
            return
        if job.state is JobState.CANCELLED:
            self.show_stage(f"{job.name}: cancelled; {self.kept}", 0.0)
        elif job.state is JobState.FAILED:
            self.show_stage(f"{job.name} failed: {job.error.message}")
