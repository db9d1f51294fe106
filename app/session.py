"""What every workspace session shares: the hand work being curated, its selection, its undo history.

A workspace's session (:mod:`app.ephys.session`, :mod:`app.calcium.session`) holds what is shown now,
once, and says every change with a signal; the panel and its views read the session and follow the
signals (as Phy's and napari's views follow their model). The curated object is any engine hand-work
model with an :class:`engine.undo.History` as ``history``.
"""

from __future__ import annotations

from PyQt6.QtCore import QObject, pyqtSignal


class from_session:
    """A panel attribute that reads the session's attribute of the same name: the panel shows the state,
    the session holds it (``curation = from_session()`` in a panel class whose ``self.session`` is set)."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, panel, owner=None):
        return self if panel is None else getattr(panel.session, self.name)

    def __set__(self, panel, value) -> None:  # a change goes through the session, which signals it
        raise AttributeError(f"{self.name} belongs to the session: change it through self.session")


class CurationSession(QObject):
    curation_changed = pyqtSignal()  # another result to curate, or none; the selection is emptied first
    selection_changed = pyqtSignal(list)  # the selected ids, the current one first
    history_changed = pyqtSignal()  # what Undo / Redo can do changed (an edit, an undo, a redo)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.curation = None
        self.selected: list[int] = []

    def set_curation(self, curation) -> None:
        """Curate ``curation`` (None: nothing to curate); nothing stays selected."""
        if self.curation is not None:
            self.curation.history.on_change = None
        self.curation = curation
        if curation is not None:
            curation.history.on_change = self.history_changed.emit
        self.selected = []
        self.curation_changed.emit()

    def _announce_selection(self, ids) -> None:
        self.selected = [int(i) for i in dict.fromkeys(ids)]
        self.selection_changed.emit(list(self.selected))
