"""Hand labels on mesh vertices: geodesic brush strokes, undo/redo, atomic autosave.

:class:`LabelEditor` holds one int8 label per vertex (``UNLABELLED`` = -1, else a class code
of :mod:`engine.mesh.spines`: 0 shaft, 1 spine, 2 soma). A stroke paints every vertex within
a geodesic radius (shortest path along mesh edges) of the clicked vertex; each stroke is one
undo step (:class:`engine.undo.History`, the last ``MAX_UNDO`` strokes). After every change the labels are written atomically (temp file + rename), so
killing the app never loses or corrupts them; reopening the mesh restores them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from engine.errors import InputError
from engine.storage import atomic_save_npy, remove_stale_temp, workdir_for
from engine.undo import History

UNLABELLED = -1
MAX_UNDO = 200  # strokes kept for undo (each holds only the vertices it changed)
LABELS_FILE = "spine_labels.npy"


def edge_graph(vertices: np.ndarray, faces: np.ndarray) -> sp.csr_matrix:
    """Symmetric sparse graph of the mesh's unique edges, weighted by their length."""
    faces = np.asarray(faces, dtype=np.int64)
    n = len(vertices)
    a = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    b = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    keys = np.unique(np.minimum(a, b) * n + np.maximum(a, b))  # 1-D keys: much faster than unique rows
    edges = np.c_[keys // n, keys % n]
    edges = edges[edges[:, 0] != edges[:, 1]]  # degenerate faces repeat a vertex
    lengths = np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1)
    # A zero length would read as "no edge" in a sparse matrix: keep coincident vertices connected.
    lengths = np.maximum(lengths, np.finfo(np.float64).tiny)
    i = np.concatenate([edges[:, 0], edges[:, 1]])
    j = np.concatenate([edges[:, 1], edges[:, 0]])
    return sp.csr_matrix((np.concatenate([lengths, lengths]), (i, j)), shape=(n, n))


def vertices_within(graph: sp.csr_matrix, center: int, radius: float) -> np.ndarray:
    """Vertices whose geodesic (edge-path) distance from ``center`` is at most ``radius``."""
    if radius <= 0:
        return np.array([center], dtype=np.int64)
    distances = dijkstra(graph, directed=False, indices=center, limit=radius)
    return np.flatnonzero(np.isfinite(distances))


@dataclass
class _Stroke:
    vertices: np.ndarray
    before: np.ndarray
    after: np.ndarray


@dataclass
class LabelEditor:
    """Per-vertex labels with brush strokes, undo/redo and autosave to ``path`` (None: no autosave)."""

    labels: np.ndarray
    graph: sp.csr_matrix
    path: Path | None = None
    history: History = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.history = History(self._revert, self._reapply, depth=MAX_UNDO)

    @classmethod
    def for_mesh(cls, vertices: np.ndarray, faces: np.ndarray, path: str | os.PathLike | None = None) -> "LabelEditor":
        """An editor for a mesh; restores labels saved at ``path`` if that file exists."""
        n = len(vertices)
        labels = np.full(n, UNLABELLED, dtype=np.int8)
        path = Path(path) if path is not None else None
        if path is not None:
            remove_stale_temp(path.parent)  # what a killed save left
        if path is not None and path.exists():
            try:
                saved = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise InputError(f"The saved labels {path} cannot be read ({exc}). Move the file aside to start afresh.") from exc
            if saved.shape != (n,):
                raise InputError(f"The saved labels {path} are for a mesh with {saved.size:,} vertices, but this mesh has {n:,}. "
                                 "The mesh file changed since labelling: move the labels file aside to start afresh.")
            labels = saved.astype(np.int8)
        return cls(labels=labels, graph=edge_graph(np.asarray(vertices, dtype=np.float64), faces), path=path)

    @staticmethod
    def default_path(mesh_path: str | os.PathLike) -> Path:
        """Where the hand labels of a mesh file live (beside it, or the user's autosave folder)."""
        return workdir_for(mesh_path) / LABELS_FILE

    # -- editing -------------------------------------------------------------------------
    def paint(self, center: int, radius: float, label: int) -> np.ndarray:
        """Label the vertices within ``radius`` of ``center`` (``UNLABELLED`` erases); returns them."""
        vertices = vertices_within(self.graph, int(center), float(radius))
        return self.assign(vertices, label)

    def assign(self, vertices: np.ndarray, label: int) -> np.ndarray:
        """Set ``label`` on ``vertices`` as one undoable step (autosaved)."""
        vertices = np.asarray(vertices, dtype=np.int64)
        before = self.labels[vertices].copy()
        changed = before != label
        if not changed.any():
            return vertices[:0]
        vertices, before = vertices[changed], before[changed]
        after = np.full(len(vertices), label, dtype=np.int8)
        self.labels[vertices] = after
        self.history.record(_Stroke(vertices, before, after))
        self.save()
        return vertices

    def merge_into_last(self, vertices: np.ndarray, label: int) -> np.ndarray:
        """Extend the last step (a brush drag is one stroke, one undo)."""
        last = self.history.last
        if last is None:
            return self.assign(vertices, label)
        vertices = np.setdiff1d(np.asarray(vertices, dtype=np.int64), last.vertices)
        vertices = vertices[self.labels[vertices] != label]
        if len(vertices) == 0:
            return vertices
        before = self.labels[vertices].copy()
        self.labels[vertices] = label
        self.history.amend(_Stroke(np.concatenate([last.vertices, vertices]), np.concatenate([last.before, before]),
                                   np.concatenate([last.after, np.full(len(vertices), label, dtype=np.int8)])))
        self.save()
        return vertices

    def undo(self) -> np.ndarray | None:
        """Take back the last stroke; returns its vertices (None when there is none)."""
        stroke = self.history.undo()
        return stroke.vertices if stroke is not None else None

    def redo(self) -> np.ndarray | None:
        stroke = self.history.redo()
        return stroke.vertices if stroke is not None else None

    def _revert(self, stroke: _Stroke) -> None:
        self.labels[stroke.vertices] = stroke.before
        self.save()

    def _reapply(self, stroke: _Stroke) -> None:
        self.labels[stroke.vertices] = stroke.after
        self.save()

    @property
    def can_undo(self) -> bool:
        return self.history.can_undo

    @property
    def can_redo(self) -> bool:
        return self.history.can_redo

    def counts(self, n_classes: int = 3) -> dict[int, int]:
        """Number of vertices per label code (``UNLABELLED`` included)."""
        values, counts = np.unique(self.labels, return_counts=True)
        result = {code: 0 for code in [UNLABELLED, *range(n_classes)]}
        result.update({int(v): int(c) for v, c in zip(values, counts)})
        return result

    def save(self) -> None:
        if self.path is not None:
            atomic_save_npy(self.path, self.labels)
