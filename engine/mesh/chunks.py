"""Split a mesh into chunks of at most N vertices, and grow them by a geodesic overlap.

The HKS of a vertex depends on the surface within a few diffusion lengths ``sqrt(t)``, so
a big mesh can be cut into pieces, each grown by an overlap, solved independently (in
parallel), and each vertex keeps the value of the piece that owns it.

Partitioning never fails: it works per connected component of the face graph,

* components with at most N vertices are packed whole into bins of at most N vertices (they
  need no overlap: nothing diffuses between components), unreferenced vertices included;
* bigger ones are bisected recursively along a level set of the graph distance from a
  peripheral vertex, split at the median *by count*, so both halves are non-empty and at
  most half the size whatever the graph looks like (zero-degree vertices, non-manifold
  fans, thousands of fragments). When a half falls apart (a cut through spines), its big
  pieces are split further and its small ones packed together, so no swarm of tiny chunks.

On an elongated neurite the level sets are rings, so chunks are slabs with small cuts. (The
published spectral bisection stops with "Split failed to divide mesh" when the Fiedler
vector does not change sign, e.g. on graphs with zero-degree vertices.)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, connected_components, dijkstra

from engine.errors import InputError
from engine.mesh.io import Mesh


def edge_graph(mesh: Mesh) -> sp.csr_matrix:
    """Symmetric vertex adjacency of the face edges, weighted by Euclidean edge length.

    Zero-length edges (duplicate vertices) get a tiny positive weight so they stay edges.
    """
    f = mesh.faces
    n = mesh.n_vertices
    a = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    b = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keys = np.sort(lo[lo != hi] * np.int64(n) + hi[lo != hi])
    if len(keys):
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]  # each undirected edge once (np.unique: 8x slower)
    rows, cols = keys // n, keys % n
    length = np.linalg.norm(mesh.vertices[rows] - mesh.vertices[cols], axis=1)
    scale = float(np.median(length)) if len(length) else 1.0
    length = np.maximum(length, 1e-9 * max(scale, 1e-300))
    # Assemble the CSR arrays directly (scipy's COO → CSR conversion was 5x slower at 1M vertices).
    r, c = np.concatenate([rows, cols]), np.concatenate([cols, rows])
    order = np.argsort(r * np.int64(n) + c, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=n))])
    return sp.csr_matrix((np.concatenate([length, length])[order], c[order], indptr), shape=(n, n))


def partition(mesh_or_graph: Mesh | sp.spmatrix, max_vertices: int) -> list[np.ndarray]:
    """Disjoint vertex sets (sorted index arrays) of at most ``max_vertices`` covering all vertices.

    ``mesh_or_graph`` is a :class:`Mesh` or a symmetric sparse adjacency (e.g. :func:`edge_graph`).
    """
    max_vertices = int(max_vertices)
    if max_vertices < 1:
        raise InputError(f"Chunk size must be at least 1 vertex, got {max_vertices}.")
    graph = edge_graph(mesh_or_graph) if isinstance(mesh_or_graph, Mesh) else sp.csr_matrix(mesh_or_graph)
    n_comp, labels = connected_components(graph, directed=False)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_comp + 1))
    members = [order[bounds[i] : bounds[i + 1]] for i in range(n_comp)]

    parts: list[np.ndarray] = []
    small: list[np.ndarray] = []
    for comp in members:
        if len(comp) <= max_vertices:
            small.append(comp)
        else:
            parts.extend(_bisect(graph, comp, max_vertices))
    parts.extend(_pack(small, max_vertices))
    return [np.sort(p) for p in parts]


def _bisect(graph: sp.csr_matrix, vertices: np.ndarray, max_vertices: int) -> list[np.ndarray]:
    """Recursive median split of a connected vertex set along BFS-hop distance (iterative, no recursion limit)."""
    out: list[np.ndarray] = []
    stack = [vertices]
    while stack:
        verts = stack.pop()
        if len(verts) <= max_vertices:
            out.append(verts)
            continue
        sub = graph[verts][:, verts]
        n_comp, labels = connected_components(sub, directed=False)
        if n_comp > 1:
            # A half fell apart (a cut through spines or branches): split big pieces further,
            # pack the small ones (they lie close together) instead of making tiny chunks.
            pieces = [verts[labels == c] for c in range(n_comp)]
            stack.extend(p for p in pieces if len(p) > max_vertices)
            out.extend(_pack([p for p in pieces if len(p) <= max_vertices], max_vertices))
            continue
        # A peripheral vertex: the farthest (in hops) from an arbitrary one, found twice over.
        start = 0
        for _ in range(2):
            order = breadth_first_order(sub, start, directed=False, return_predecessors=False)
            start = int(order[-1])
        # Geodesic (edge-length) distance from it; ties broken by BFS order, so the split is by count.
        dist = dijkstra(sub, directed=False, indices=start)
        rank = np.lexsort((np.arange(len(verts)), dist))
        half = len(verts) // 2
        # Aim for equal parts that are multiples of max_vertices-sized pieces where that helps.
        n_pieces = -(-len(verts) // max_vertices)
        cut = (n_pieces // 2) * len(verts) // n_pieces if n_pieces > 1 else half
        cut = min(max(cut, 1), len(verts) - 1)
        stack.append(verts[rank[:cut]])
        stack.append(verts[rank[cut:]])
    return out


def _pack(groups: list[np.ndarray], max_vertices: int) -> list[np.ndarray]:
    """First-fit decreasing bin packing of whole small components."""
    bins: list[list[np.ndarray]] = []
    sizes: list[int] = []
    for g in sorted(groups, key=len, reverse=True):
        for i, size in enumerate(sizes):
            if size + len(g) <= max_vertices:
                bins[i].append(g)
                sizes[i] += len(g)
                break
        else:
            bins.append([g])
            sizes.append(len(g))
    return [np.concatenate(b) for b in bins]


def grow(mesh_or_graph: Mesh | sp.spmatrix, part: np.ndarray, overlap: float, vertices: np.ndarray | None = None,
         tree=None) -> np.ndarray:
    """Vertices within geodesic (edge-path) distance ``overlap`` of ``part``, plus its one-ring.

    The one-ring is always included, so every face around an owned vertex is inside the
    grown chunk even for ``overlap=0``. Returns a sorted index array containing ``part``.
    Given the vertex coordinates (a Mesh, or ``vertices``; ``tree`` a scipy cKDTree of them
    saves rebuilding it), the search is restricted to a ball around the part widened by
    ``overlap`` (a geodesic path is never shorter than the straight line), so growing a
    chunk costs in proportion to its size, not to the mesh's.
    """
    if isinstance(mesh_or_graph, Mesh):
        vertices = mesh_or_graph.vertices
        graph = edge_graph(mesh_or_graph)
    else:
        graph = sp.csr_matrix(mesh_or_graph)
    part = np.asarray(part, dtype=np.int64)
    ring = np.unique(graph[part].indices)
    if overlap <= 0 or len(part) == 0:
        return np.union1d(part, ring)
    if vertices is None:
        dist = dijkstra(graph, directed=False, indices=part, min_only=True, limit=float(overlap))
        return np.union1d(np.flatnonzero(np.isfinite(dist)), ring)
    if tree is None:
        from scipy.spatial import cKDTree

        tree = cKDTree(vertices)
    centre = vertices[part].mean(axis=0)
    radius = float(np.linalg.norm(vertices[part] - centre, axis=1).max())
    local = np.union1d(np.asarray(tree.query_ball_point(centre, radius + overlap), dtype=np.int64), part)
    sub = graph[local][:, local]
    dist = dijkstra(sub, directed=False, indices=np.searchsorted(local, part), min_only=True, limit=float(overlap))
    return np.union1d(local[np.isfinite(dist)], ring)


def submesh(mesh: Mesh, vertices: np.ndarray, incidence: sp.csr_matrix | None = None) -> tuple[Mesh, np.ndarray]:
    """The faces whose three vertices are all in ``vertices`` (sorted), re-indexed; plus the face mask.

    ``incidence`` (vertex × face, from :func:`vertex_faces`) makes this proportional to the
    chunk's size instead of the mesh's.
    """
    keep = np.zeros(mesh.n_vertices, dtype=bool)
    keep[vertices] = True
    if incidence is None:
        face_mask = keep[mesh.faces].all(axis=1)
    else:
        candidates = np.sort(incidence[vertices].indices)
        candidates = candidates[np.concatenate([[True], candidates[1:] != candidates[:-1]])] if len(candidates) else candidates
        face_mask = np.zeros(mesh.n_faces, dtype=bool)
        face_mask[candidates[keep[mesh.faces[candidates]].all(axis=1)]] = True
    remap = np.full(mesh.n_vertices, -1, dtype=np.int64)
    remap[vertices] = np.arange(len(vertices))
    return Mesh(mesh.vertices[vertices], remap[mesh.faces[face_mask]], units=mesh.units, name=mesh.name), face_mask


def vertex_faces(mesh: Mesh) -> sp.csr_matrix:
    """Vertex × face incidence (CSR): row v lists the faces that use vertex v."""
    m = mesh.n_faces
    rows = mesh.faces.ravel()
    cols = np.repeat(np.arange(m), 3)
    return sp.csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(mesh.n_vertices, m))
