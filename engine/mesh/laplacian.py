"""Mesh Laplacians with lumped mass, and the component structure the HKS solvers rely on.

``laplacian(mesh)`` returns ``(L, M)`` for the generalized eigenproblem ``L φ = λ M φ``:
``L`` is a symmetric positive semi-definite CSR matrix whose rows sum to zero (so constants
are in its kernel, one per connected component) and ``M`` a diagonal lumped-mass matrix
(vertex areas, in squared mesh units; the diagonal sums to the surface area).

Kinds
-----
``"robust"`` (default)
    The intrinsic-Delaunay Laplacian of the tufted cover (Sharp & Crane 2020, package
    ``robust-laplacian``, mollification 1e-5 of the mean edge length). It is well defined on
    non-manifold, fragmented and degenerate meshes and its edge weights are non-negative.
``"cotangent"``
    The classic cotangent Laplacian ``w_ij = (cot α + cot β) / 2`` with lumped (one-third)
    face areas as mass. Faces of zero area are skipped; weights may be negative on obtuse
    triangles (``L`` is still PSD: it is a sum of per-triangle PSD forms).

Degenerate vertices
-------------------
A vertex used by no face, or only by zero-area faces, has no surface around it: its row of
``L`` is zero and it would form a one-vertex component with eigenvalue 0 and an arbitrary
mass. Such vertices are "orphans" (:func:`orphan_vertices`); in ``L`` they keep a zero row and
get the mean vertex mass in ``M`` (so ``M`` stays positive definite). The HKS code does not
solve for them: it copies the values of the nearest non-orphan vertex (see engine.mesh.hks).

Off-diagonal weights smaller than 1e-12 of the largest (round-off from the intrinsic
triangulation, e.g. 1e-16 between two vertices of a sliver) are removed and the diagonal is
recomputed, so that components of the sparsity graph are exactly the blocks of ``L``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from engine.errors import InputError
from engine.mesh.io import Mesh

KINDS = ("robust", "cotangent")
#: Off-diagonal weights below this fraction of the largest one are treated as exact zeros.
_WEIGHT_FLOOR = 1e-12
#: robust_laplacian's C++ holds the GIL for the whole call (0.1-0.3 s on a 64,000-face dendrite), which stops a
#: window's event loop however the work is threaded. Where that matters (the app sets it), meshes with at least
#: this many faces get it built in a child process (~0.5 s to start); None: always here (CLI, scripts).
ISOLATE_FACES: int | None = None


def _in_child_process(func, *args):
    """``func(*args)`` in a fresh child process (spawned: forking a process with threads is unsafe)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(func, *args).result()


def laplacian(mesh: Mesh, kind: str = "robust", *, mollify_factor: float = 1e-5) -> tuple[sp.csr_matrix, sp.dia_matrix]:
    """``(L, M)``: symmetric PSD stiffness (CSR, rows sum to 0) and diagonal lumped mass.

    See the module docstring for the kinds and the handling of degenerate vertices.
    Raises InputError for an unknown kind or a mesh without any face of non-zero area.
    """
    if kind not in KINDS:
        raise InputError(f"Unknown Laplacian kind {kind!r}: use one of {', '.join(KINDS)}.")
    if mesh.n_faces == 0:
        raise InputError(f"Mesh '{mesh.name or 'mesh'}' has no faces: a surface mesh is needed for its Laplacian.")
    if kind == "robust":
        import robust_laplacian

        args = (np.ascontiguousarray(mesh.vertices, dtype=np.float64), np.ascontiguousarray(mesh.faces, dtype=np.int64),
                mollify_factor)
        if ISOLATE_FACES is not None and mesh.n_faces >= ISOLATE_FACES:
            L, M = _in_child_process(robust_laplacian.mesh_laplacian, *args)
        else:
            L, M = robust_laplacian.mesh_laplacian(*args)
        mass = np.asarray(M.diagonal(), dtype=np.float64)
    else:
        L, mass = _cotangent(mesh.vertices, mesh.faces)
    L = _clean(sp.csr_matrix(L, dtype=np.float64))
    orphans = np.diff(L.indptr) == 0  # after cleaning, orphan rows are empty
    if orphans.all():
        raise InputError(
            f"Mesh '{mesh.name or 'mesh'}' has no face of non-zero area (all faces are degenerate): "
            "nothing to diffuse heat on. Repair or re-export the mesh."
        )
    # Orphans get a neutral mass (the robust Laplacian gives them a mollified ~0 area).
    mass = mass.copy()
    mass[orphans] = mass[~orphans].mean()
    mass = np.where(mass > 0, mass, mass[~orphans].mean())  # zero-area vertex of a valid face (cotangent)
    return L, sp.diags(mass, format="dia")


def orphan_vertices(L: sp.spmatrix) -> np.ndarray:
    """Boolean mask of vertices with an empty row in ``L`` (no face of non-zero area around them)."""
    L = sp.csr_matrix(L)
    offdiag = L - sp.diags(L.diagonal())
    offdiag.eliminate_zeros()
    return np.diff(offdiag.indptr) == 0


def fill_orphans(vertices: np.ndarray, values: np.ndarray, orphans: np.ndarray) -> None:
    """Copy to each orphan row the values of the nearest non-orphan vertex (in place)."""
    if not orphans.any():
        return
    from scipy.spatial import cKDTree

    good = np.flatnonzero(~orphans)
    if len(good) == 0:  # a chunk made only of slivers: its vertices are filled from the whole mesh later
        return
    _, nearest = cKDTree(vertices[good]).query(vertices[orphans])
    values[orphans] = values[good[nearest]]


def components(L: sp.spmatrix) -> tuple[int, np.ndarray]:
    """Connected components of the sparsity graph of ``L`` (orphans are one-vertex components).

    Returns ``(n, labels)`` like scipy's ``connected_components``; the blocks of ``L`` are
    independent eigenproblems.
    """
    n, labels = connected_components(sp.csr_matrix(L), directed=False)
    return int(n), labels


def _clean(L: sp.csr_matrix) -> sp.csr_matrix:
    """Drop round-off off-diagonal weights, symmetrize, set the diagonal to minus the row sums."""
    L = L.tocoo()
    off = L.row != L.col
    rows, cols, vals = L.row[off], L.col[off], L.data[off]
    if len(vals):
        keep = np.abs(vals) > _WEIGHT_FLOOR * np.abs(vals).max()
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    n = L.shape[0]
    W = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
    W = 0.5 * (W + W.T)  # exact symmetry (the inputs are symmetric up to round-off)
    W.eliminate_zeros()
    diag = -np.asarray(W.sum(axis=1)).ravel()
    out = (W + sp.diags(diag)).tocsr()
    # Keep orphan rows truly empty (an explicit 0 diagonal would make them look connected to nothing anyway).
    out.eliminate_zeros()
    out.sort_indices()
    return out


def _cotangent(vertices: np.ndarray, faces: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Cotangent stiffness and lumped one-third-area mass; zero-area faces contribute nothing."""
    n = len(vertices)
    v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
    double_area = np.linalg.norm(np.cross(v1 - v0, v2 - v0), axis=1)
    scale = max(float(np.ptp(vertices, axis=0).max()), 1e-300)
    ok = double_area > 1e-14 * scale * scale
    f, v0, v1, v2, double_area = faces[ok], v0[ok], v1[ok], v2[ok], double_area[ok]
    rows, cols, vals = [], [], []
    # The angle at corner a is opposite the edge (j, k); cot = dot / |cross| = dot / (2 area).
    for (j, k), (a, b, c) in (((1, 2), (v0, v1, v2)), ((2, 0), (v1, v2, v0)), ((0, 1), (v2, v0, v1))):
        cot = np.einsum("ij,ij->i", b - a, c - a) / double_area
        rows += [f[:, j], f[:, k]]
        cols += [f[:, k], f[:, j]]
        vals += [-0.5 * cot, -0.5 * cot]
    W = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    mass = np.bincount(f.ravel(), weights=np.repeat(double_area / 6.0, 3), minlength=n)
    return W, mass
