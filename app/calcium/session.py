"""The calcium workspace's session: what is shown now, held once, with a signal for each change.

The movie and its summary images, the curated CNMF result, the selected ROIs and the jobs in
flight (CNMF; an add or merge, which other edits wait for) live here. The panel and its views
read them from the session and follow its signals (as in :mod:`app.ephys.session`).
"""

from __future__ import annotations

import numpy as np
from PyQt6.QtCore import QObject, pyqtSignal

from app.jobs import Job
from app.session import CurationSession
from engine.calcium.curation import Curation
from engine.calcium.io import Movie


class CalciumSession(CurationSession):
    movie_changed = pyqtSignal()  # another movie (and its summary images)
    # busy_changed (Session): CNMF or an edit job started or ended

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.movie: Movie | None = None
        self.summaries: dict[str, np.ndarray] = {}
        self.curation: Curation | None = None  # the CNMF result being curated; selected: ROI indices
        self.cnmf_job: Job | None = None
        self.edit_job: Job | None = None  # add or merge in flight: other edits wait for it

    def set_movie(self, movie: Movie, summaries: dict[str, np.ndarray]) -> None:
        """Show ``movie``; the one shown before is closed."""
        if self.movie is not None and self.movie is not movie:
            self.movie.close()
        self.movie, self.summaries = movie, summaries
        self.movie_changed.emit()

    def select(self, indices: list[int]) -> None:
        """Select ROIs (the first is the current one; indices the result has not are left out)."""
        n = self.curation.result.n_components if self.curation is not None else 0
        self._announce_selection(k for k in indices if 0 <= k < n)

    @property
    def editing(self) -> bool:
        """Whether an add or a merge is being fitted (decisions wait for it)."""
        return self.edit_job is not None and self.edit_job.is_running

    def set_cnmf_job(self, job: Job) -> Job:
        self.cnmf_job = job
        return self._follow(job)

    def set_edit_job(self, job: Job) -> Job:
        self.edit_job = job
        return self._follow(job)
