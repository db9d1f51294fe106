"""What every workspace session shares, and the curation sessions' selection.

A workspace's session (:mod:`app.ephys.session`, :mod:`app.calcium.session`,
:mod:`app.morphology.session`, :mod:`app.factors.session`) holds what is shown now, once, and says
every change with a signal; the panel and its views read the session and follow the signals (as
Phy's and napari's views follow their model). Every session hears the undo history of the hand
work it shows (an engine hand-work model with an :class:`engine.undo.History` as ``history``) and
follows the jobs that make it busy.
"""

from __future__ import annotations

from PyQt6.QtCore import QObject, pyqtSignal

from app.jobs import Job


class from_session:
    """A panel attribute that reads the session's attribute of the same name: the panel shows the state,
    the session holds it (``curation = from_session()`` in a panel class whose ``self.session`` is set)."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, panel, owner=None):
        return self if panel is None else getattr(panel.session, self.name)

    def __set__(self, panel, value) -> None:  # a change goes through the session, which signals it
        raise AttributeError(f"{self.name} belongs to the session: change it through self.session")


class Session(QObject):
    history_changed = pyqtSignal()  # what Undo / Redo can do changed (an edit, an undo, a redo)
    busy_changed = pyqtSignal()  # a job of the session started or ended

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._heard = None

    def _hear(self, handwork) -> None:
        """Say ``history_changed`` for ``handwork``'s history (None: none), no longer for the one heard before."""
        if self._heard is not None:
            self._heard.history.on_change = None
        self._heard = handwork
        if handwork is not None:
            handwork.history.on_change = self.history_changed.emit

    @property
    def can_undo(self) -> bool:
        return self._heard is not None and self._heard.history.can_undo

    @property
    def can_redo(self) -> bool:
        return self._heard is not None and self._heard.history.can_redo

    def _follow(self, job: Job) -> Job:
        """Say ``busy_changed`` now (``job`` has started) and when ``job`` ends."""
        job.ended.connect(lambda _job: self.busy_changed.emit())
        self.busy_changed.emit()
        return job


class CurationSession(Session):
    """A session curating one result at a time, with a selection of its items (units, ROIs)."""

    curation_changed = pyqtSignal()  # another result to curate, or none; the selection is emptied first
    selection_changed = pyqtSignal(list)  # the selected ids, the current one first

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.curation = None
        self.selected: list[int] = []

    def set_curation(self, curation) -> None:
        """Curate ``curation`` (None: nothing to curate); nothing stays selected."""
        self._hear(curation)
        self.curation = curation
        self.selected = []
        self.curation_changed.emit()

    def _announce_selection(self, ids) -> None:
        self.selected = [int(i) for i in dict.fromkeys(ids)]
        self.selection_changed.emit(list(self.selected))
