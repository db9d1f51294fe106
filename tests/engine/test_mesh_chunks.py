"""Partitioning meshes into chunks and growing them by a geodesic overlap."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.sparse.csgraph import dijkstra

from engine.errors import InputError
from engine.mesh.chunks import edge_graph, grow, partition, submesh
from engine.mesh.io import Mesh, load_mesh


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """One BLAS thread: dense references with 2 threads ran 10x slower on a busy 2-core machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def _check_partition(parts, n, max_vertices):
    allv = np.concatenate(parts)
    assert len(allv) == n and np.array_equal(np.sort(allv), np.arange(n))  # each vertex exactly once
    assert max(len(p) for p in parts) <= max_vertices
    assert all(len(p) > 0 for p in parts)


def awkward_mesh() -> Mesh:
    """A subdivided tube (like a subdivided dendrite) plus zero-degree vertices and many fragments."""
    c = trimesh.creation.capsule(height=20.0, radius=1.0, count=[16, 16]).subdivide()
    v, f = [c.vertices], [c.faces]
    n = len(c.vertices)
    rng = np.random.default_rng(0)
    v.append(rng.normal(size=(50, 3)) * 30)  # 50 zero-degree (unreferenced) vertices
    n += 50
    for i in range(300):  # 300 single-triangle fragments
        v.append(np.array([[40 + i, 0, 0], [40.5 + i, 0, 0], [40 + i, 0.5, 0]], float))
        f.append(np.array([[n, n + 1, n + 2]]))
        n += 3
    return Mesh(np.vstack(v), np.vstack(f))


@pytest.mark.parametrize("max_vertices", [1, 7, 250, 1000, 10**6])
def test_partition_covers_every_vertex_once_and_never_fails(max_vertices):
    mesh = awkward_mesh()
    parts = partition(mesh, max_vertices)
    _check_partition(parts, mesh.n_vertices, max_vertices)
    if max_vertices >= mesh.n_vertices:
        assert len(parts) == 1
    if max_vertices == 250:
        # Bisection of a tube: about n / 250 pieces, not a swarm of fragments.
        tube = 16 * 16 * 4
        assert len(parts) <= 2 * (mesh.n_vertices // 250 + 1)
        assert sum(len(p) for p in parts if len(p) < 50) < tube // 4


def test_partition_rejects_a_zero_chunk_size():
    with pytest.raises(InputError):
        partition(awkward_mesh(), 0)


def test_grow_adds_the_geodesic_neighbourhood_and_the_one_ring():
    c = trimesh.creation.capsule(height=10.0, radius=1.0, count=[16, 16])
    mesh = Mesh(c.vertices, c.faces)
    graph = edge_graph(mesh)
    part = partition(graph, 200)[0]
    grown0 = grow(graph, part, 0.0)
    ring = np.unique(graph[part].indices)
    assert set(part) <= set(grown0) and set(ring) <= set(grown0)
    grown = grow(graph, part, 1.5)
    dist = dijkstra(graph, directed=False, indices=part, min_only=True)
    assert np.array_equal(np.sort(grown), np.union1d(np.flatnonzero(dist <= 1.5), ring))
    sub, face_mask = submesh(mesh, grown)
    assert sub.n_vertices == len(grown) and sub.faces.max() < len(grown)
    # Every face around an owned vertex is kept in the chunk.
    owned_faces = np.isin(mesh.faces, part).any(axis=1)
    assert face_mask[owned_faces].all()


def test_partition_of_the_fragmented_microns_neuron(shared_data):
    mesh = load_mesh(shared_data / "meshes" / "microns_neuron_7666_decimated_fragmented.off")
    parts = partition(mesh, 3000)
    _check_partition(parts, mesh.n_vertices, 3000)
