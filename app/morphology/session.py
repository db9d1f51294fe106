"""The morphology workspace's session: what is shown now, held once, with a signal for each change.

The opened meshes (:class:`engine.mesh.entries.MeshEntry`: mesh, hand labels and their undo
history, HKS, posterior, points) and the current one, the spine classifier, the running training
and the uncertain region N framed live here. The panel and its views read them from the session
and redraw when it says something changed (as in :mod:`app.ephys.session`); the engine computes.
"""

from __future__ import annotations

import numpy as np
from PyQt6.QtCore import QObject, pyqtSignal

from app.jobs import Job
from app.session import Session
from engine.mesh import active, spines
from engine.mesh.entries import MeshEntry
from engine.mesh.hks import HKSResult, log_hks
from engine.mesh.labels import vertices_within


class MorphologySession(Session):
    entries_changed = pyqtSignal()  # a mesh opened, or one read again (other units): the list of meshes
    entry_changed = pyqtSignal()  # another mesh is the current one, or the current one was read again
    labels_changed = pyqtSignal()  # the current mesh's hand labels (a stroke or its growth, undo, redo)
    hks_changed = pyqtSignal()  # the current mesh's HKS was computed, or its features changed
    model_changed = pyqtSignal()  # another classifier (trained or loaded); posteriors may have changed
    region_changed = pyqtSignal()  # the uncertain region N framed, or none
    points_changed = pyqtSignal()  # the current mesh's point table
    # history_changed (Session): the current mesh's label history; busy_changed: a training started or ended

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.entries: list[MeshEntry] = []
        self.entry: MeshEntry | None = None
        self.model: spines.SpineClassifier | None = None
        self.train_job: Job | None = None  # one training at a time
        self.region_index = -1  # which of the current mesh's uncertain regions N framed last
        self.region: np.ndarray | None = None  # its vertices (None: no region framed)
        self.history_changed.connect(self.labels_changed)  # every step of the label history changes the labels

    # -- meshes ---------------------------------------------------------------------------
    def add_entry(self, entry: MeshEntry) -> None:
        """An opened mesh becomes the current one; one opened again (same file) replaces the old."""
        row = next((i for i, e in enumerate(self.entries) if e.path == entry.path), None)
        if row is None:
            self.entries.append(entry)
            row = len(self.entries) - 1
        else:
            self.entries[row] = entry
        self.entries_changed.emit()
        self.select(row, force=True)

    def select(self, row: int, force: bool = False) -> None:
        """Show mesh ``row`` (``force``: show it afresh even when it is the current one)."""
        if not 0 <= row < len(self.entries) or (self.entry is self.entries[row] and not force):
            return
        self.entry = self.entries[row]
        self._hear(self.entry.editor)
        self.region_index, self.region = -1, None
        self.entry_changed.emit()

    @property
    def row(self) -> int:
        """The current mesh's place in :attr:`entries` (-1: none)."""
        return next((i for i, e in enumerate(self.entries) if e is self.entry), -1)

    # -- hand labels (each change is saved by the editor and heard through its history) ----------
    def paint(self, vertex: int, radius: float, code: int) -> np.ndarray:
        """A stroke on the current mesh: ``code`` within ``radius`` of ``vertex``; returns the vertices labelled."""
        return self.entry.editor.paint(vertex, radius, code)

    def extend_stroke(self, vertex: int, radius: float, code: int) -> np.ndarray:
        """The stroke goes on (a drag): one undo step with the stroke it extends."""
        editor = self.entry.editor
        return editor.merge_into_last(vertices_within(editor.graph, vertex, radius), code)

    def undo(self) -> bool:
        return self.entry is not None and self.entry.editor.undo() is not None

    def redo(self) -> bool:
        return self.entry is not None and self.entry.editor.redo() is not None

    def import_file_labels(self) -> bool:
        """Copy the labels found beside the current mesh's file into its hand labels."""
        entry = self.entry
        if entry is None or entry.file_labels is None:
            return False
        labels = entry.file_labels
        keep = np.flatnonzero(labels >= 0)
        for code in np.unique(labels[keep]):
            entry.editor.assign(keep[labels[keep] == code], int(code))
        return True

    # -- HKS ------------------------------------------------------------------------------
    def set_hks(self, entry: MeshEntry, result: HKSResult, log: np.ndarray | None = None) -> None:
        """Store an HKS a job computed (and its log as the view colours it)."""
        entry.hks, entry.log_hks = result, log
        if entry is self.entry:
            self.hks_changed.emit()

    def take_hks(self, new_hks: dict) -> None:
        """Store HKS results a job computed for some meshes ({id(entry): HKSResult})."""
        for entry in self.entries:
            if id(entry) in new_hks:
                entry.hks, entry.log_hks = new_hks[id(entry)], None
        if self.entry is not None and id(self.entry) in new_hks:
            self.hks_changed.emit()

    def log_hks(self) -> np.ndarray | None:
        """The current mesh's log-HKS as the view colours it (a timescale: one column), kept with the mesh.
        The HKS job brings it; HKS stored by Apply or Evaluate get it here, once."""
        entry = self.entry
        if entry is None or entry.hks is None:
            return None
        if entry.log_hks is None or entry.log_hks.shape != entry.hks.hks.shape:
            entry.log_hks = np.asfortranarray(log_hks(entry.hks.hks), dtype=np.float32)
        return entry.log_hks

    def set_feature_kind(self, kind: str) -> int:
        """Every open mesh's features become ``kind``'s defaults; an HKS at other timescales is dropped.
        Returns how many meshes lost theirs."""
        dropped = 0
        for entry in self.entries:
            spec = spines.FeatureSpec.default(entry.mesh.units, kind=kind)
            if entry.hks is not None and not _same_timescales(entry.hks.timescales, spec.timescales):
                entry.hks, entry.log_hks, dropped = None, None, dropped + 1
            entry.spec = spec
        if self.entry is not None:
            self.hks_changed.emit()
        return dropped

    # -- classifier -----------------------------------------------------------------------
    @property
    def training(self) -> bool:
        return self.train_job is not None and self.train_job.is_running

    def set_train_job(self, job: Job) -> Job:
        self.train_job = job
        return self._follow(job)

    def set_model(self, model: spines.SpineClassifier | None) -> None:
        self.model = model
        self.model_changed.emit()

    def take_training(self, result: dict) -> None:
        """A training's result (:func:`engine.mesh.entries.train_on_entries`): the model and its posteriors."""
        self._take_posteriors([e for e in self.entries if id(e) in result["probas"]], result["probas"])
        self.set_model(result["model"])

    def take_predictions(self, entries: list[MeshEntry], probas: dict) -> None:
        """Posteriors the model painted on ``entries`` ({id(entry): proba})."""
        self._take_posteriors(entries, probas)
        self.model_changed.emit()

    def _take_posteriors(self, entries, probas) -> None:
        for entry in entries:
            entry.proba, entry.regions = probas[id(entry)], []  # the uncertain regions come from the posterior
        self.region_index, self.region = -1, None
        self.region_changed.emit()

    def spine_probability(self, entry: MeshEntry) -> np.ndarray:
        return spines.spine_probability(self.model, proba=entry.proba)

    def next_uncertain_region(self):
        """Frame the current mesh's next most uncertain unlabelled region (None: no posterior, or none left)."""
        entry = self.entry
        if entry is None or entry.proba is None:
            return None
        if not entry.regions:
            entry.regions = active.uncertain_regions(entry.mesh, entry.proba, entry.editor.labels >= 0)
            self.region_index = -1
        if not entry.regions:
            return None
        self.region_index = (self.region_index + 1) % len(entry.regions)
        region = entry.regions[self.region_index]
        self.region = np.asarray(region.vertices)
        self.region_changed.emit()
        return region

    # -- points ---------------------------------------------------------------------------
    def set_points(self, entry: MeshEntry, points: dict) -> None:
        """A point table located on ``entry`` (:func:`engine.mesh.entries.locate_points`)."""
        entry.points = points
        if entry is self.entry:
            self.points_changed.emit()

    def point_predictions(self, entry: MeshEntry | None = None) -> spines.PointPredictions | None:
        """The class of each loaded point from its mesh's posterior (None without points or a posterior)."""
        entry = entry or self.entry
        if entry is None or entry.points is None or entry.proba is None or self.model is None:
            return None
        p = entry.points
        return spines.PointPredictions(p["points"], p["vertex"], p["distance"], entry.proba[p["vertex"]],
                                       tuple(int(c) for c in self.model.classes_))


def _same_timescales(a, b) -> bool:
    """Whether two timescale lists are the same (an sihks kind has more of them than an hks kind)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-4))
