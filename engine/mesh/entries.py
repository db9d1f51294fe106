"""Opened meshes and the jobs the Morphology workspace runs on them (no Qt).

A :class:`MeshEntry` is one opened mesh with what was computed or drawn on it. The job bodies
below run in worker threads while the person keeps painting, so they never read the live label
arrays: the caller freezes the labels with :func:`labels_snapshot` on the thread that paints, and
passes that copy in. HKS results and meshes are replaced, never changed in place, so jobs may read
them. New HKS results a job computes are returned, never stored on the entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.mesh import active, spines
from engine.mesh.hks import HKSResult, compute_hks, log_hks, read_points
from engine.mesh.io import Mesh, find_vertex_label_file, guess_units, load_mesh, mesh_summary
from engine.mesh.labels import LabelEditor
from engine.mesh.picking import Picker


@dataclass
class Surface:
    """A mesh as a 3-D view uploads it, made in the job that opens the mesh so that the window's thread only
    uploads: vertices as float32 about their mean ``center`` (float32 keeps nm coordinates precise on a GPU),
    faces as uint32, and unit area-weighted vertex normals (float32; a shading that lights both sides of a
    face needs no outward orientation)."""

    center: np.ndarray
    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray

    @classmethod
    def of(cls, mesh: Mesh) -> "Surface":
        from engine.mesh.features import vertex_normals

        center = mesh.vertices.mean(axis=0) if mesh.n_vertices else np.zeros(3)
        return cls(center, np.ascontiguousarray(mesh.vertices - center, dtype=np.float32),
                   np.ascontiguousarray(mesh.faces, dtype=np.uint32),
                   np.ascontiguousarray(vertex_normals(mesh, outward=False), dtype=np.float32))


@dataclass
class MeshEntry:
    """One opened mesh and everything computed or drawn on it."""

    path: Path
    mesh: Mesh
    summary: dict
    file_labels: np.ndarray | None  # labels found beside the mesh, mapped to class codes
    editor: LabelEditor
    spec: spines.FeatureSpec  # how this mesh's HKS features are defined (its units' defaults)
    picker: Picker
    hks: HKSResult | None = None
    proba: np.ndarray | None = None  # (n_vertices, n_classes) from the classifier
    regions: list = field(default_factory=list)  # uncertain regions, most uncertain first
    points: dict | None = None  # a loaded point table: path, points, nearest vertex, distance (locate_points)
    scale: float = 1.0  # the file's coordinates were multiplied by this (e.g. 8: hemibrain voxels → nm)
    log_hks: np.ndarray | None = None  # log of ``hks.hks`` as the view colours it (one timescale contiguous)
    surface: Surface | None = None  # the mesh as the 3-D view uploads it

    @property
    def has_labels(self) -> bool:
        return bool((self.editor.labels >= 0).any())

    def training_labels(self) -> np.ndarray:
        """The labels this mesh contributes to evaluation: its hand labels, or the file's if it has none."""
        if self.has_labels or self.file_labels is None:
            return self.editor.labels
        return self.file_labels


def labels_snapshot(entries: list[MeshEntry], file_fallback: bool = False) -> dict[int, np.ndarray]:
    """Copies of the entries' hand labels ({id(entry): labels}), taken where the painting happens,
    for a job that must see the labels as they were when it was asked for.
    With ``file_fallback``, a mesh without hand labels gives the labels found beside its file."""
    return {id(e): (e.training_labels() if file_fallback else e.editor.labels).copy() for e in entries}


def open_mesh_entry(path: Path, kind: str = spines.DEFAULT_KIND, scale: float = 1.0, units: str | None = None,
                    progress=None) -> MeshEntry:
    """Job body: the mesh, its summary, labels found beside it, and the hand-label editor (restored).

    As the CLI's ``--scale`` / ``--units``: the coordinates are multiplied by ``scale`` first (8: 8 nm voxels → nm),
    then their units are ``units`` ("nm" / "um"), or guessed from the extent (a unit the file states wins)."""
    if not (np.isfinite(scale) and scale > 0):
        raise InputError(f"The scale must be a positive number, got {scale}: 1 keeps the file's coordinates.")
    progress.report(0.1, "reading mesh")
    mesh = load_mesh(path, units=units)
    if scale != 1.0:
        vertices = mesh.vertices * scale
        mesh = Mesh(vertices, mesh.faces, units=units or guess_units(vertices), name=mesh.name)
    progress.check()
    progress.report(0.5, "inspecting components")
    summary = mesh_summary(mesh)
    progress.check()
    progress.report(0.7, "building the label brush graph")
    editor = LabelEditor.for_mesh(mesh.vertices, mesh.faces, LabelEditor.default_path(path))
    found = find_vertex_label_file(path, mesh.n_vertices)
    file_labels = None
    if found is not None:
        label_path, raw = found
        try:
            file_labels = spines.map_labels(raw, spines.guess_label_map(label_path, raw))
        except InputError:  # labels of an unknown convention: show the mesh without them
            file_labels = None
    progress.report(0.9, "preparing picking and drawing")
    return MeshEntry(path, mesh, summary, file_labels, editor, spines.FeatureSpec.default(mesh.units, kind=kind),
                     Picker(mesh.vertices, mesh.faces), scale=float(scale), surface=Surface.of(mesh))


def locate_points(entry: MeshEntry, path: Path, progress=None) -> dict:
    """Job body: read a point table (x, y, z in the mesh's units) and find each point's nearest vertex."""
    progress.report(0.2, "reading points")
    points = read_points(path)
    progress.check()
    vertex, distance = spines.nearest_vertices(entry.mesh, points)
    return {"path": Path(path), "points": points, "vertex": vertex, "distance": distance}


def hks_job(entry: MeshEntry, method: str, progress=None) -> tuple[HKSResult, np.ndarray]:
    """Job body: :func:`compute_entry_hks` and its log as the view colours it (column-major: a timescale is one
    contiguous column), so the window only stores them."""
    result = compute_entry_hks(entry, method, progress=progress)
    return result, np.asfortranarray(log_hks(result.hks), dtype=np.float32)


def compute_entry_hks(entry: MeshEntry, method: str, progress=None) -> HKSResult:
    """Job body: the HKS of a mesh at its feature spec's timescales."""
    return compute_hks(entry.mesh, timescales=np.asarray(entry.spec.timescales), max_eigenvalue=entry.spec.max_eigenvalue,
                       laplacian=entry.spec.laplacian, method=method, progress=progress)


def train_on_entries(entries: list[MeshEntry], labels: dict[int, np.ndarray], spec: spines.FeatureSpec,
                     previous=None, progress=None) -> dict:
    """Job body: fit the spine classifier on ``labels`` (a :func:`labels_snapshot`) of every mesh with
    an HKS in ``spec``'s units, then predict P(class) on each of them."""
    usable = [e for e in entries if e.hks is not None and e.spec == spec and id(e) in labels]
    if not usable:
        raise InputError("Compute the HKS of this mesh first (Compute HKS): the classifier learns from HKS features.")
    fit_stage, predict_stage = progress.split([1, 1], ["Training", "Predicting"])
    features = {id(e): spines.vertex_features(e.mesh, e.hks, spec) for e in usable}
    labelled = [(features[id(e)], labels[id(e)]) for e in usable if (labels[id(e)] >= 0).any()]
    if not labelled:
        raise InputError("No labelled vertices yet. Paint some shaft (1) and spine (2) vertices with the brush, "
                         "or press “Use file labels”, then train.")
    X = np.concatenate([x[y >= 0] for x, y in labelled])
    y = np.concatenate([y[y >= 0] for _, y in labelled])
    fit_stage.report(0.1, f"{len(y):,} labelled vertices")
    fit_stage.check()
    if previous is not None and getattr(previous, "feature_spec_", None) == spec:
        model = active.retrain(previous, X, y)
    else:
        model = spines.SpineClassifier().fit(X, y, feature_spec=spec)
    fit_stage.report(1.0)
    probas = {}
    for e in predict_stage.iterate(usable, message="mesh"):
        probas[id(e)] = model.predict_proba(features[id(e)])
    classes, counts = np.unique(y, return_counts=True)
    return {"model": model, "probas": probas, "n_labelled": len(y),
            "counts": {int(c): int(k) for c, k in zip(classes, counts)}}


def features_for(entries: list[MeshEntry], spec: spines.FeatureSpec, method: str, progress) -> tuple[list, dict]:
    """Features of every mesh for ``spec``, computing the HKS where a mesh has none in those units.

    Returns (features per entry, {id(entry): new HKSResult}): new results are handed back to the
    caller, which stores them, so a job never mutates the entries it reads.
    """
    features, new_hks = [], {}
    stages = progress.split([1] * len(entries), [e.path.name for e in entries])
    for entry, stage in zip(entries, stages):
        if entry.spec == spec:
            hks = entry.hks
            if hks is None:
                hks = new_hks[id(entry)] = compute_entry_hks(entry, method, progress=stage)
            features.append(spines.vertex_features(entry.mesh, hks, spec))
        else:  # another unit system: rescale the mesh to the model's units (HKS depends on size)
            features.append(spines.mesh_features(entry.mesh, spec, progress=stage, method=method))
        stage.report(1.0)
    return features, new_hks


def apply_model(entries: list[MeshEntry], model, method: str, progress=None) -> dict:
    """Job body: P(class) of every vertex of every mesh under ``model`` (HKS computed where missing)."""
    features, new_hks = features_for(entries, model.feature_spec_, method, progress)
    return {"probas": {id(e): model.predict_proba(X) for e, X in zip(entries, features)}, "hks": new_hks}


def evaluate_entries(entries: list[MeshEntry], labels: dict[int, np.ndarray], method: str, progress=None) -> dict:
    """Job body: leave-one-mesh-out over the labelled meshes (a halves split when only one has labels);
    ``labels`` is a :func:`labels_snapshot` taken with ``file_fallback``."""
    labelled = [e for e in entries if id(e) in labels and (labels[id(e)] >= 0).any()]
    if not labelled:
        raise InputError("No mesh has labels yet: paint shaft and spine vertices, or open meshes with label files.")
    spec = labelled[0].spec
    features_stage, evaluation_stage = progress.split([3, 1], ["features", "evaluation"])
    features, new_hks = features_for(labelled, spec, method, features_stage)
    frozen = [labels[id(e)] for e in labelled]
    if len(labelled) == 1:
        evaluation = spines.evaluate_halves(labelled[0].mesh, features[0], frozen[0], progress=evaluation_stage)
    else:
        evaluation = spines.evaluate_leave_one_out(features, frozen, names=[e.path.name for e in labelled],
                                                   max_train_per_mesh=20_000, progress=evaluation_stage)
    return {"evaluation": evaluation, "hks": new_hks, "spec": spec}
