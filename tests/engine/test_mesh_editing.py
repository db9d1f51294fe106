"""Picking a vertex with a ray, and hand-label editing (brush, undo/redo, autosave)."""

import numpy as np
import pytest
import trimesh

from engine.errors import InputError
from engine.mesh.labels import UNLABELLED, LabelEditor, edge_graph, vertices_within
from engine.mesh.picking import Picker, pick


@pytest.fixture
def sphere():
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def test_ray_from_outside_picks_the_vertex_it_points_at(sphere):
    vertices, faces = sphere
    rng = np.random.default_rng(0)
    picker = Picker(vertices, faces)
    for target in rng.choice(len(vertices), 20, replace=False):
        origin = vertices[target] * 5.0  # outside, looking back at the center through the target
        hit = picker.pick(origin, -vertices[target])
        assert hit is not None and hit.vertex == target
        assert np.linalg.norm(hit.point - vertices[target]) < 0.1
        assert hit.distance == pytest.approx(4.0, abs=0.01)


def test_ray_hits_the_nearest_surface_and_misses_cleanly(sphere):
    vertices, faces = sphere
    hit = pick(vertices, faces, np.array([0.0, 0.0, 10.0]), np.array([0.0, 0.0, -1.0]))
    assert hit.point[2] > 0.99  # front of the sphere, not the back
    assert pick(vertices, faces, np.array([0.0, 3.0, 10.0]), np.array([0.0, 0.0, -1.0])) is None
    assert pick(vertices, faces, np.array([0.0, 0.0, 10.0]), np.array([0.0, 0.0, 1.0])) is None  # pointing away


def test_edge_graph_and_geodesic_brush(sphere):
    vertices, faces = sphere
    graph = edge_graph(vertices, faces)
    assert (graph != graph.T).nnz == 0
    assert graph.nnz == 2 * len(trimesh.Trimesh(vertices, faces, process=False).edges_unique)
    inside = vertices_within(graph, 0, 0.3)
    assert 0 in inside and 5 < len(inside) < len(vertices) // 4
    # geodesic ≥ euclidean, and about equal at this small scale on a sphere
    assert np.linalg.norm(vertices[inside] - vertices[0], axis=1).max() <= 0.3 + 1e-9
    assert list(vertices_within(graph, 7, 0)) == [7]


def test_strokes_undo_redo_and_autosave(sphere, tmp_path):
    vertices, faces = sphere
    path = tmp_path / "labels" / "spine_labels.npy"
    editor = LabelEditor.for_mesh(vertices, faces, path)
    assert (editor.labels == UNLABELLED).all()
    first = editor.paint(0, 0.2, 1)
    assert len(first) > 1 and (editor.labels[first] == 1).all()
    np.testing.assert_array_equal(np.load(path), editor.labels)  # saved after the stroke
    second = editor.paint(0, 0.1, 0)  # overwrite part of it
    assert set(second) <= set(first)
    counts = editor.counts()
    assert counts[0] == len(second) and counts[1] == len(first) - len(second)
    editor.undo()
    assert (editor.labels[first] == 1).all()
    np.testing.assert_array_equal(np.load(path), editor.labels)
    editor.undo()
    assert (editor.labels == UNLABELLED).all() and not editor.can_undo
    editor.redo()
    assert (editor.labels[first] == 1).all() and editor.can_redo
    # a new stroke clears the redo stack
    editor.paint(100, 0.1, 2)
    assert not editor.can_redo
    # reopening restores what was saved
    again = LabelEditor.for_mesh(vertices, faces, path)
    np.testing.assert_array_equal(again.labels, editor.labels)


def test_drag_is_one_undo_step(sphere):
    vertices, faces = sphere
    editor = LabelEditor.for_mesh(vertices, faces)
    editor.assign(np.array([1, 2, 3]), 1)
    editor.merge_into_last(np.array([3, 4, 5]), 1)
    assert (editor.labels[[1, 2, 3, 4, 5]] == 1).all()
    editor.undo()
    assert (editor.labels == UNLABELLED).all()


def test_labels_for_another_mesh_are_refused_with_advice(sphere, tmp_path):
    vertices, faces = sphere
    path = tmp_path / "spine_labels.npy"
    np.save(path, np.zeros(10, dtype=np.int8))
    with pytest.raises(InputError, match="10 vertices.*move the labels file aside"):
        LabelEditor.for_mesh(vertices, faces, path)
