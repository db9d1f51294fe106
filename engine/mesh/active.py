"""Active learning for the spine classifier: where to click next, merging clicks, retraining.

The loop of the published "pseudo-active learning": paint the posterior on the mesh, look
where it seems wrong, label there, retrain. This module makes the "where" systematic:

* :func:`uncertainty` scores each vertex by the normalised entropy of its posterior (0 sure,
  1 all classes equally likely);
* :func:`uncertain_regions` groups unlabelled vertices of high uncertainty into connected
  patches of the mesh graph, most uncertain first, each with a centre and a view direction
  so a viewer can fly to it;
* :func:`merge_labels` applies a click or brush stroke (or another label array) to the
  labels, with explicit overwrite and erase semantics;
* :func:`retrain` refits the classifier on the labelled vertices only, bounded so that it
  stays interactive (benchmarks/spines.py measures it at 100k labelled vertices).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from engine.errors import InputError
from engine.mesh.io import Mesh
from engine.mesh.spines import CLASSES, UNLABELLED, SpineClassifier

#: Default cap on trees and per-tree sample for :func:`retrain` (see its docstring).
RETRAIN_TREES = 40
RETRAIN_MAX_SAMPLES = 10_000


def uncertainty(proba: np.ndarray) -> np.ndarray:
    """Normalised entropy of each row of a posterior (n × k): 0 = certain, 1 = uniform. float32.

    Rows need not sum exactly to 1 (they are renormalised); with a single class every
    vertex scores 0.
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 1:  # P(spine) alone: binary posterior
        p = np.column_stack([1.0 - p, p])
    if p.ndim != 2:
        raise InputError(f"A posterior must be vertices × classes; got shape {p.shape}.")
    k = p.shape[1]
    if k < 2:
        return np.zeros(len(p), dtype=np.float32)
    p = np.clip(p, 0.0, None)
    total = p.sum(axis=1, keepdims=True)
    p = np.divide(p, total, out=np.full_like(p, 1.0 / k), where=total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    return np.clip(h / np.log(k), 0.0, 1.0).astype(np.float32)


def margin(proba: np.ndarray) -> np.ndarray:
    """1 − (difference between the two most probable classes): another uncertainty score in [0, 1]."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 1:
        p = np.column_stack([1.0 - p, p])
    if p.shape[1] < 2:
        return np.zeros(len(p), dtype=np.float32)
    top2 = np.sort(p, axis=1)[:, -2:]
    return (1.0 - (top2[:, 1] - top2[:, 0])).astype(np.float32)


@dataclass
class Region:
    """A connected patch of uncertain, unlabelled vertices.

    ``score`` is the summed uncertainty of its vertices (roughly how many vertices a label
    there could fix); ``center`` is the xyz of ``center_vertex``, the region vertex nearest
    its centroid (so it lies on the surface); ``normal`` is the region's mean outward normal,
    a good direction to look from (camera at ``center + d * normal`` looking at ``center``).
    """

    vertices: np.ndarray
    score: float
    center: np.ndarray
    normal: np.ndarray
    center_vertex: int
    mean_uncertainty: float

    @property
    def size(self) -> int:
        return int(len(self.vertices))


def _graph(mesh: Mesh):
    from engine.mesh.features import vertex_adjacency

    return vertex_adjacency(mesh)


def uncertain_regions(mesh: Mesh, proba: np.ndarray, labelled_mask: np.ndarray | None = None, *, min_size: int = 10,
                      top: int | None = 10, threshold: float = 0.5, max_size: int | None = 1000,
                      score: np.ndarray | None = None) -> list[Region]:
    """Connected regions of unlabelled vertices whose uncertainty is at least ``threshold``.

    Parameters
    ----------
    mesh:
        The mesh (its faces give the vertex graph).
    proba:
        Posterior (n × k) from :meth:`SpineClassifier.predict_proba`, or P(spine) (n,).
    labelled_mask:
        True for vertices that already have a label (bool (n,)) or a label array where
        ``UNLABELLED`` (-1) means unlabelled; these never enter a region.
    min_size:
        Regions with fewer vertices are dropped (isolated noisy vertices).
    top:
        Return at most this many regions (None: all).
    threshold:
        Minimum normalised entropy (:func:`uncertainty`) of a region vertex; 0.5 means the
        runner-up class has at least ~11 % probability in a two-class problem.
    max_size:
        Regions larger than this are cut into pieces of at most ``max_size`` vertices, each
        grown breadth-first from its most uncertain vertex, so a region stays a local patch
        one can look at and label. None keeps whole connected components.
    score:
        A per-vertex uncertainty to use instead of the entropy of ``proba`` (e.g. :func:`margin`).

    Returns regions sorted by ``score`` (summed uncertainty), highest first.
    """
    n = mesh.n_vertices
    u = uncertainty(proba) if score is None else np.asarray(score, dtype=np.float32).ravel()
    if len(u) != n:
        raise InputError(f"The posterior has {len(u):,} rows but the mesh has {n:,} vertices.")
    if labelled_mask is None:
        labelled = np.zeros(n, dtype=bool)
    else:
        labelled_mask = np.asarray(labelled_mask)
        labelled = labelled_mask.astype(bool) if labelled_mask.dtype == bool else labelled_mask != UNLABELLED
        if labelled.shape != (n,):
            raise InputError(f"The labelled mask has shape {labelled.shape} but the mesh has {n:,} vertices.")
    candidate = (~labelled) & (u >= threshold)
    if not candidate.any():
        return []
    from scipy.sparse.csgraph import connected_components

    A = _graph(mesh).tocsr()
    idx = np.flatnonzero(candidate)
    sub = A[idx][:, idx].tocsr()
    n_comp, comp = connected_components(sub, directed=False)
    sizes = np.bincount(comp, minlength=n_comp)
    groups: list[np.ndarray] = []
    order = np.argsort(comp, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    for c in range(n_comp):
        if sizes[c] < min_size:
            continue
        members = order[bounds[c]:bounds[c + 1]]  # indices into idx
        if max_size is not None and sizes[c] > max_size:
            groups.extend(_split(sub, members, u[idx], max_size, min_size))
        else:
            groups.append(members)
    from engine.mesh.features import vertex_normals

    normals = vertex_normals(mesh)
    regions = []
    for members in groups:
        verts = idx[members]
        pts = mesh.vertices[verts]
        centroid = pts.mean(axis=0)
        cv = int(verts[np.argmin(np.sum((pts - centroid) ** 2, axis=1))])
        nrm = normals[verts].sum(axis=0)
        length = np.linalg.norm(nrm)
        nrm = nrm / length if length > 1e-12 else normals[cv]
        uu = u[verts]
        regions.append(Region(np.sort(verts).astype(np.int64), float(uu.sum()), mesh.vertices[cv].copy(), nrm,
                              cv, float(uu.mean())))
    regions.sort(key=lambda r: (-r.score, -r.mean_uncertainty))
    return regions if top is None else regions[:top]


def _split(sub, members: np.ndarray, u_sub: np.ndarray, max_size: int, min_size: int) -> list[np.ndarray]:
    """Cut one large component into breadth-first patches of at most ``max_size`` vertices."""
    indptr, indices = sub.indptr, sub.indices
    free = np.zeros(sub.shape[0], dtype=bool)
    free[members] = True
    pieces = []
    for seed in members[np.argsort(-u_sub[members], kind="stable")]:
        if not free[seed]:
            continue
        free[seed] = False
        piece = [seed]
        queue = deque([seed])
        while queue and len(piece) < max_size:
            v = queue.popleft()
            for w in indices[indptr[v]:indptr[v + 1]]:
                if free[w]:
                    free[w] = False
                    piece.append(w)
                    queue.append(w)
                    if len(piece) >= max_size:
                        break
        if len(piece) >= min_size:
            pieces.append(np.asarray(piece, dtype=np.int64))
    return pieces


def merge_labels(existing: np.ndarray, new: np.ndarray | int, mask: np.ndarray | None = None, *,
                 overwrite: bool = True) -> np.ndarray:
    """Labels after applying ``new`` (a copy, int8; ``existing`` is not modified).

    * ``mask`` (bool (n,) or vertex indices) selects the vertices to change; ``new`` is one
      class code for all of them or an array (n,) read at those vertices. Without ``mask``,
      ``new`` must be an array and its labelled entries (≠ -1) are applied.
    * A new label of ``UNLABELLED`` (-1) under the mask **erases**: those vertices become
      unlabelled, always.
    * A class code **overwrites** existing labels when ``overwrite`` (a correction click);
      with ``overwrite=False`` it only fills vertices that were unlabelled.
    """
    out = np.asarray(existing).astype(np.int8, copy=True)
    n = len(out)
    new_arr = np.asarray(new)
    if mask is None:
        if new_arr.ndim == 0:
            raise InputError("merge_labels needs a mask of vertices when the new label is a single value.")
        if new_arr.shape != (n,):
            raise InputError(f"New labels have shape {new_arr.shape}, the existing ones {out.shape}.")
        sel = np.flatnonzero(new_arr != UNLABELLED)
    else:
        mask = np.asarray(mask)
        if mask.dtype == bool:
            if mask.shape != (n,):
                raise InputError(f"The mask has shape {mask.shape} but there are {n:,} vertices.")
            sel = np.flatnonzero(mask)
        else:
            sel = mask.astype(np.int64).ravel()
            if len(sel) and (sel.min() < 0 or sel.max() >= n):
                raise InputError(f"Vertex indices in the mask must be in 0..{n - 1}.")
    if new_arr.ndim == 0:
        values = np.full(len(sel), int(new_arr), dtype=np.int64)
    else:
        if new_arr.shape != (n,):
            raise InputError(f"New labels have shape {new_arr.shape}; give one value or one per vertex ({n:,}).")
        values = new_arr[sel].astype(np.int64)
    bad = (values != UNLABELLED) & ((values < 0) | (values >= len(CLASSES)))
    if bad.any():
        raise InputError(f"Label {int(values[bad][0])} is not a class code: use 0 shaft, 1 spine, 2 soma or -1 to erase.")
    erase = values == UNLABELLED
    out[sel[erase]] = UNLABELLED
    put = ~erase
    if not overwrite:
        put &= out[sel] == UNLABELLED
    out[sel[put]] = values[put]
    return out


def retrain(clf: SpineClassifier, X: np.ndarray, labels: np.ndarray, *, n_estimators: int | None = RETRAIN_TREES,
            max_samples: int | None = RETRAIN_MAX_SAMPLES, sample_weight: np.ndarray | None = None) -> SpineClassifier:
    """Refit ``clf`` (in place, returned) on the labelled vertices (label ≥ 0) only.

    For interactive speed the refit uses at most ``n_estimators`` trees, each on a bootstrap
    sample of at most ``max_samples`` vertices (None: keep the classifier's own settings).
    A random forest cannot add labels to trees already grown, so every retrain starts
    afresh; with these caps it costs about the same at 10k or 1M labelled vertices. The
    classifier's feature spec is kept. ``sample_weight`` (one per row of ``X``) can weight
    fresh clicks above a large base of labels from other meshes.
    """
    labels = np.asarray(labels).ravel()
    if len(labels) != len(X):
        raise InputError(f"{len(X):,} feature rows but {len(labels):,} labels.")
    if n_estimators is not None:
        clf.set_params(n_estimators=min(int(clf.n_estimators), int(n_estimators)))
    if max_samples is not None:
        current = clf.max_samples
        if current is None or not isinstance(current, (int, np.integer)) or current > max_samples:
            clf.set_params(max_samples=int(max_samples))
    return clf.fit(X, labels, feature_spec=getattr(clf, "feature_spec_", None), sample_weight=sample_weight)
