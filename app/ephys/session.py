"""The ephys workspace's session: what is shown now, held once, with a signal for each change.

The recording (and the trace source that reads it), the curated Phy folder, the selected units
and the running sort live here and nowhere else. The panel and its views read them from the
session and redraw when it says something changed (as Phy's and napari's views follow their
model): the unit table reports a click with :meth:`EphysSession.select` and shows the selection
when ``selection_changed`` fires, whoever made it (a click, the similar-units list, a spike on
the traces, a merge).
"""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import QObject, pyqtSignal

from app.jobs import Job
from app.session import CurationSession
from engine.ephys.curation import Curation, TraceSource
from engine.ephys.io import RawRecording


class EphysSession(CurationSession):
    recording_changed = pyqtSignal()  # another recording, or its trace source (the sort's model arrived)
    # busy_changed (Session): a sort started or ended

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.recording: RawRecording | None = None
        self.source: TraceSource | None = None
        self.raw_path: Path | None = None
        self.curation: Curation | None = None  # the Phy folder (opened or sorted) being curated
        self.sort_job: Job | None = None

    # -- data ----------------------------------------------------------------------------------
    def set_recording(self, path: Path, recording: RawRecording, source: TraceSource) -> None:
        """Show ``recording`` (read through ``source``); the one shown before is closed."""
        if self.recording is not None and self.recording is not recording:
            self.recording.close()
        self.recording, self.source, self.raw_path = recording, source, path
        self.recording_changed.emit()

    def set_source(self, source: TraceSource) -> None:
        self.source = source
        self.recording_changed.emit()

    # -- selection -----------------------------------------------------------------------------
    def select(self, clusters: list[int]) -> None:
        """Select units (the first is the current one). Said even when they are the ones selected:
        after a curation change the same ids show new data (a label, a merged unit's spikes)."""
        self._announce_selection(clusters)

    # -- jobs ----------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Whether a sort is running."""
        return self.sort_job is not None and self.sort_job.is_running

    def set_sort_job(self, job: Job) -> Job:
        self.sort_job = job
        return self._follow(job)
