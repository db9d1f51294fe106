"""The procedural spiny dendrites (engine.mesh.synth): one closed manifold surface, exact labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from engine.mesh import synth
from engine.mesh.io import Mesh, find_vertex_labels, load_mesh, mesh_summary, vertex_components
from engine.mesh.synth import (
    SPINE_TYPES,
    demo_dendrite,
    demo_dendrite_spines,
    demo_neurons,
    spiny_dendrite,
    write_demo_dendrite,
    write_demo_neurons,
)


@pytest.fixture(scope="module")
def default():
    return spiny_dendrite()  # the arguments of demo_dendrite() and of the bundled demo


@pytest.fixture(scope="module")
def with_soma():
    return spiny_dendrite(n_spines=8, length=8.0, seed=5, soma=True, soma_radius=2.0, voxel_size=0.06)


@pytest.fixture(scope="module")
def neurons():
    return demo_neurons()


def graph(mesh: Mesh):
    f = mesh.faces
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    g = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(mesh.n_vertices,) * 2).tocsr()
    return (g + g.T).tocsr()


def n_components_of(g, members: np.ndarray) -> int:
    return connected_components(g[members][:, members], directed=False)[0] if len(members) else 0


def assert_closed_manifold_sphere(mesh: Mesh):
    """One component, every edge in exactly two consistently oriented faces, every vertex a
    single fan of faces, genus 0, outward normals, no degenerate faces."""
    s = mesh_summary(mesh)
    assert s["n_components"] == 1 and s["n_isolated_vertices"] == 0 and s["n_degenerate_faces"] == 0
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    assert tm.is_watertight and tm.is_winding_consistent and tm.volume > 0
    assert len(np.unique(np.sort(mesh.faces, axis=1), axis=0)) == mesh.n_faces  # no duplicate faces
    # vertex manifoldness: the corners around each vertex, joined across shared edges, form one fan
    f = mesh.faces
    n_faces = len(f)
    corner = lambda face, k: 3 * face + k  # noqa: E731
    he_from = f.ravel()
    he_to = f[:, [1, 2, 0]].ravel()
    he_face = np.repeat(np.arange(n_faces), 3)
    he_k = np.tile(np.arange(3), n_faces)
    key = he_from * mesh.n_vertices + he_to
    twin_key = he_to * mesh.n_vertices + he_from
    order = np.argsort(key)
    pos = np.searchsorted(key[order], twin_key)
    twin = order[pos]
    assert np.array_equal(key[twin], twin_key)  # every half-edge has its opposite
    # corners (from, face) ~ (from, twin face): the twin half-edge ends at `from`, at corner (k+1)%3
    a = corner(he_face, he_k)
    b = corner(he_face[twin], (he_k[twin] + 1) % 3)
    g = coo_matrix((np.ones(len(a)), (a, b)), shape=(3 * n_faces,) * 2)
    n_fans = connected_components(g, directed=False)[0]
    assert n_fans == mesh.n_vertices
    assert mesh.n_vertices - len(tm.edges_unique) + mesh.n_faces == 2  # Euler: a sphere


def assert_labels_exact(d, with_soma: bool):
    mesh, labels, ids = d.mesh, d.labels, d.spine_ids
    assert labels.shape == ids.shape == (mesh.n_vertices,)
    assert np.issubdtype(labels.dtype, np.integer) and np.issubdtype(ids.dtype, np.integer)
    assert set(np.unique(labels)) == ({0, 1, 2} if with_soma else {0, 1})
    n = len(d.spines)
    assert np.array_equal(ids > 0, labels == 1)
    assert set(np.unique(ids[ids > 0])) == set(range(1, n + 1))
    assert [s.id for s in d.spines] == list(range(1, n + 1))
    g = graph(mesh)
    assert n_components_of(g, np.flatnonzero(labels == 1)) == n  # separate spines
    for s in d.spines:
        members = np.flatnonzero(ids == s.id)
        assert n_components_of(g, members) == 1
        # the patch reaches the head: from the shaft axis out to ~ shaft radius + spine length
        reach = (mesh.vertices[members] - s.base) @ s.direction
        assert s.length + 0.3 < reach.max() < s.length + 1.3
    assert n_components_of(g, np.flatnonzero(labels == 0)) == 1  # one shaft
    if with_soma:
        assert n_components_of(g, np.flatnonzero(labels == 2)) == 1


# -- the default demo dendrite -------------------------------------------------------------------

def test_default_is_one_closed_manifold_surface(default):
    mesh = default.mesh
    assert mesh.units == "um" and mesh.name == "demo_dendrite"
    assert 20_000 <= mesh.n_vertices <= 60_000
    assert_closed_manifold_sphere(mesh)


def test_default_labels_and_spines(default):
    assert_labels_exact(default, with_soma=False)
    spines = default.spines
    assert len(spines) == 24 and set(default.spine_types) == set(SPINE_TYPES)
    for s in spines:  # realistic sizes (µm)
        assert 0.15 <= s.head_radius <= 0.5 and 0.3 <= s.length <= 2.0
        assert np.linalg.norm(s.direction) == pytest.approx(1.0)
        if s.kind != "stubby":
            assert 0.07 <= s.neck_radius <= 0.12 and s.length >= 0.5
    # the shaft runs along x for ~20 µm (rounded ends), spines stick out of it
    v, labels = default.mesh.vertices, default.labels
    shaft, spine = v[labels == 0], v[labels == 1]
    assert 20.0 <= np.ptp(shaft[:, 0]) <= 21.5
    assert np.abs(spine[:, 1:]).max() > np.abs(shaft[:, 1:]).max() + 0.5
    # a thin-necked spine really is thin: some spine vertices lie within 0.13 µm of their axis
    thin = [s for s in spines if s.kind == "thin"][0]
    p = v[default.spine_ids == thin.id] - thin.base
    off_axis = np.linalg.norm(p - np.outer(p @ thin.direction, thin.direction), axis=1)
    assert off_axis.min() < 0.13


def test_demo_dendrite_api_matches(default):
    mesh, labels = demo_dendrite(n_spines=24, length=20.0, seed=0)
    np.testing.assert_array_equal(mesh.vertices, default.mesh.vertices)  # deterministic
    np.testing.assert_array_equal(mesh.faces, default.mesh.faces)
    np.testing.assert_array_equal(labels, default.labels)
    other, other_labels = demo_dendrite(seed=1)
    assert other.n_vertices != mesh.n_vertices or not np.array_equal(other.vertices, mesh.vertices)
    assert len(other_labels) == other.n_vertices
    spines = demo_dendrite_spines(24, 20.0, 0)  # no meshing, same layout
    assert [(s.kind, s.id) for s in spines] == [(s.kind, s.id) for s in default.spines]
    np.testing.assert_allclose([s.base for s in spines], [s.base for s in default.spines])


# -- options ------------------------------------------------------------------------------------

def test_soma_option(with_soma):
    assert_closed_manifold_sphere(with_soma.mesh)
    assert_labels_exact(with_soma, with_soma=True)
    v, labels = with_soma.mesh.vertices, with_soma.labels
    assert v[labels == 2, 0].max() < 1.0 < v[labels == 0, 0].max()  # soma at x < 0, dendrite along +x
    assert np.ptp(v[labels == 2], axis=0).max() > 3.0  # a ~4 µm wide soma
    assert len(with_soma.spines) == 8 and min(s.base[0] for s in with_soma.spines) >= 1.5


def test_density_radius_and_errors():
    d = spiny_dendrite(length=6.0, spine_density=1.5, radius=0.8, seed=2, voxel_size=0.06)
    assert len(d.spines) == 9
    assert_labels_exact(d, with_soma=False)
    assert vertex_components(d.mesh)[0] == 1
    shaft = d.mesh.vertices[d.labels == 0]
    assert np.abs(shaft[:, 1:]).max() > 0.75  # thicker shaft
    bare = spiny_dendrite(n_spines=0, length=4.0, seed=0)
    assert set(np.unique(bare.labels)) == {0} and not bare.spine_ids.any()
    with pytest.raises(ValueError, match="could not fit"):
        demo_dendrite_spines(length=4.0, spine_density=10.0)
    for bad in (dict(n_spines=-1), dict(length=1.0), dict(radius=0.0), dict(voxel_size=1.0)):
        with pytest.raises(ValueError):
            spiny_dendrite(**bad)


def test_demo_neurons(neurons):
    assert len(neurons) == 4 and len({name for name, _, _ in neurons}) == 4
    densities, radii = [], []
    for name, mesh, labels in neurons:
        assert mesh.name == name and mesh.units == "um" and labels.shape == (mesh.n_vertices,)
        assert 20_000 <= mesh.n_vertices <= 65_000
        assert vertex_components(mesh)[0] == 1
        assert trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).is_watertight
        kw = synth.DEMO_NEURONS[name]
        densities.append(kw["n_spines"] / kw["length"])
        radii.append(kw["radius"])
        assert n_components_of(graph(mesh), np.flatnonzero(labels == 1)) == kw["n_spines"]
    assert sum(2 in np.unique(labels) for _, _, labels in neurons) == 1  # exactly one has a soma
    assert max(densities) >= 1.8 and min(densities) <= 0.7 and max(radii) / min(radii) > 1.8


# -- files --------------------------------------------------------------------------------------

def test_write_demo_dendrite_round_trip(tmp_path, default):
    path = write_demo_dendrite(tmp_path / "demo_dendrite.ply")  # as engine.demo calls it
    loaded = load_mesh(path)
    assert loaded.units == "um"
    np.testing.assert_allclose(loaded.vertices, default.mesh.vertices, atol=1e-6)
    np.testing.assert_array_equal(loaded.faces, default.mesh.faces)
    np.testing.assert_array_equal(np.load(tmp_path / "demo_dendrite_spine_labels.npy"), default.labels)
    np.testing.assert_array_equal(find_vertex_labels(path, loaded.n_vertices), default.labels)
    assert find_vertex_labels(path, loaded.n_vertices + 1) is None  # wrong length: ignored
    np.testing.assert_array_equal(np.load(tmp_path / "demo_dendrite_spine_ids.npy"), default.spine_ids)
    info = json.loads((tmp_path / "demo_dendrite_spines.json").read_text())
    assert info["units"] == "um" and [s["kind"] for s in info["spines"]] == default.spine_types


def test_write_demo_neurons(tmp_path, monkeypatch):
    # the real set is checked in test_demo_neurons; write two small ones
    small = {
        "a": dict(n_spines=3, length=4.0, radius=0.5),
        "b": dict(n_spines=2, length=4.0, radius=0.5, soma=True, soma_radius=1.5, voxel_size=0.07),
    }
    monkeypatch.setattr(synth, "DEMO_NEURONS", small)
    paths = write_demo_neurons(tmp_path / "neurons")
    assert [p.name for p in paths] == ["a.ply", "b.ply"]
    for p, n_spines in zip(paths, (3, 2)):
        mesh = load_mesh(p)
        labels = find_vertex_labels(p, mesh.n_vertices)
        assert labels is not None and n_components_of(graph(mesh), np.flatnonzero(labels == 1)) == n_spines
    assert 2 in find_vertex_labels(paths[1], load_mesh(paths[1]).n_vertices)
