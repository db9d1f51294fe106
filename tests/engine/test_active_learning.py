"""Active learning: uncertainty, uncertain regions on the mesh graph, label merging, retraining."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components

from engine.errors import InputError
from engine.mesh.active import margin, merge_labels, retrain, uncertain_regions, uncertainty
from engine.mesh.features import vertex_adjacency
from engine.mesh.io import Mesh
from engine.mesh.spines import SHAFT, SOMA, SPINE, UNLABELLED, FeatureSpec, SpineClassifier


def grid_mesh(nx: int = 40, ny: int = 30) -> Mesh:
    """A flat triangulated nx × ny grid in the z = 0 plane (normals along +z)."""
    xs, ys = np.meshgrid(np.arange(nx, dtype=float), np.arange(ny, dtype=float), indexing="ij")
    v = np.column_stack([xs.ravel(), ys.ravel(), np.zeros(nx * ny)])
    idx = np.arange(nx * ny).reshape(nx, ny)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    faces = np.concatenate([np.column_stack([a, b, c]), np.column_stack([a, c, d])])
    return Mesh(v, faces, units="um", name="grid")


def posterior_from(p_spine: np.ndarray) -> np.ndarray:
    return np.column_stack([1 - p_spine, p_spine]).astype(np.float32)


def test_uncertainty_is_normalised_entropy():
    u = uncertainty(np.array([[1.0, 0.0], [0.5, 0.5], [0.9, 0.1], [1 / 3, 1 / 3, 1 / 3][:2]]))
    assert u[0] == pytest.approx(0.0) and u[1] == pytest.approx(1.0)
    assert u[2] == pytest.approx(-(0.9 * np.log(0.9) + 0.1 * np.log(0.1)) / np.log(2), rel=1e-5)
    assert uncertainty(np.full((2, 3), 1 / 3)) == pytest.approx([1.0, 1.0])
    assert uncertainty(np.array([0.5, 0.0])) == pytest.approx([1.0, 0.0])  # P(spine) alone
    assert uncertainty(np.ones((4, 1))).tolist() == [0, 0, 0, 0]
    m = margin(np.array([[0.5, 0.5], [1.0, 0.0], [0.7, 0.3]]))
    assert m == pytest.approx([1.0, 0.0, 0.6])


def test_uncertain_regions_are_connected_unlabelled_and_sorted():
    mesh = grid_mesh()
    x, y = mesh.vertices[:, 0], mesh.vertices[:, 1]
    p = np.full(mesh.n_vertices, 0.02)
    big = (x >= 2) & (x < 12) & (y >= 2) & (y < 12)  # 100 uncertain vertices
    small = (x >= 25) & (x < 30) & (y >= 20) & (y < 25)  # 25
    tiny = (x == 35) & (y == 5)  # 1: below min_size
    p[big | small | tiny] = 0.5
    p[big & (x < 4)] = 0.4  # slightly less uncertain strip inside the big region
    labelled = np.full(mesh.n_vertices, UNLABELLED, dtype=np.int8)
    labelled[big & (y >= 10)] = SPINE  # 20 vertices already labelled: never in a region
    regions = uncertain_regions(mesh, posterior_from(p), labelled, min_size=5, top=None, max_size=None)
    assert [r.size for r in regions] == [80, 25]
    assert [r.score for r in regions] == sorted((r.score for r in regions), reverse=True)
    A = vertex_adjacency(mesh)
    for r in regions:
        assert np.all(labelled[r.vertices] == UNLABELLED)
        assert connected_components(A[r.vertices][:, r.vertices], directed=False)[0] == 1
        assert r.center_vertex in r.vertices and np.allclose(r.center, mesh.vertices[r.center_vertex])
        assert abs(abs(r.normal[2]) - 1) < 1e-9  # flat grid: looking straight at it
    assert set(regions[1].vertices) == set(np.flatnonzero(small))
    # bool mask works the same; top limits; a high threshold leaves nothing
    again = uncertain_regions(mesh, posterior_from(p), labelled != UNLABELLED, min_size=5, top=1, max_size=None)
    assert len(again) == 1 and np.array_equal(again[0].vertices, regions[0].vertices)
    assert uncertain_regions(mesh, posterior_from(np.full(mesh.n_vertices, 0.001)), None) == []


def test_large_regions_are_cut_into_patches():
    mesh = grid_mesh(30, 30)
    p = np.full(mesh.n_vertices, 0.5)  # everything uncertain: one component of 900
    regions = uncertain_regions(mesh, p, None, min_size=1, top=None, max_size=100)
    sizes = [r.size for r in regions]
    assert max(sizes) <= 100 and sum(sizes) == 900
    all_vertices = np.concatenate([r.vertices for r in regions])
    assert len(np.unique(all_vertices)) == 900  # a partition
    A = vertex_adjacency(mesh)
    assert all(connected_components(A[r.vertices][:, r.vertices], directed=False)[0] == 1 for r in regions)
    with pytest.raises(InputError, match="rows"):
        uncertain_regions(mesh, p[:-1], None)


def test_merge_labels_overwrite_fill_and_erase():
    existing = np.array([-1, 0, 1, -1, 2, 0], dtype=np.int8)
    # a click labels vertices 0-2 as spine: overwrites by default
    assert merge_labels(existing, SPINE, np.array([0, 1, 2])).tolist() == [1, 1, 1, -1, 2, 0]
    # without overwrite only unlabelled vertices are filled
    assert merge_labels(existing, SPINE, np.array([0, 1, 2]), overwrite=False).tolist() == [1, 0, 1, -1, 2, 0]
    # erasing always clears, with or without overwrite
    mask = np.array([False, True, False, False, True, False])
    for ow in (True, False):
        assert merge_labels(existing, UNLABELLED, mask, overwrite=ow).tolist() == [-1, -1, 1, -1, -1, 0]
    # merging a whole label array: its -1 entries leave existing labels alone
    new = np.array([SHAFT, -1, SOMA, SPINE, -1, SPINE])
    assert merge_labels(existing, new).tolist() == [0, 0, 2, 1, 2, 1]
    assert merge_labels(existing, new, overwrite=False).tolist() == [0, 0, 1, 1, 2, 0]
    assert existing.tolist() == [-1, 0, 1, -1, 2, 0]  # input untouched
    with pytest.raises(InputError, match="not a class code"):
        merge_labels(existing, 7, np.array([0]))
    with pytest.raises(InputError, match="mask"):
        merge_labels(existing, SPINE)


def test_retrain_uses_labelled_vertices_only_and_keeps_the_spec():
    rng = np.random.default_rng(0)
    n = 20_000
    y_true = rng.integers(0, 2, n)
    X = (rng.normal(size=(n, 8)) + 2.5 * y_true[:, None] * (np.arange(8) < 2)).astype(np.float32)
    spec = FeatureSpec(timescales=tuple(np.geomspace(0.05, 20, 8)), units="um")
    clf = SpineClassifier(n_estimators=100, max_samples=None).fit(X[:500], y_true[:500], feature_spec=spec)
    labels = np.full(n, UNLABELLED, dtype=np.int8)
    labels[:5000] = y_true[:5000]
    start = time.perf_counter()
    out = retrain(clf, X, labels, n_estimators=20, max_samples=2000)
    seconds = time.perf_counter() - start
    assert out is clf and clf.n_estimators == 20 and clf.max_samples == 2000 and clf.feature_spec_ == spec
    assert sum(clf.counts_.values()) == 5000
    acc = np.mean(clf.predict(X[10_000:]) == y_true[10_000:])
    assert acc > 0.9 and seconds < 10  # generous: 2 shared cores
