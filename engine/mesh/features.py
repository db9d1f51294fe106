"""Per-vertex geometric features that complement the heat kernel signature.

The spine classifier (:mod:`engine.mesh.spines`) feeds a random forest with log-HKS per
vertex and, optionally, with the features built here:

* **neighbourhood smoothing** (:func:`diffuse`): each feature column averaged over a
  neighbourhood of a given radius ``r`` by one implicit heat-diffusion step
  ``(M + r² L) y = M x``. Unlike k-ring averaging it is in mesh units, so it means the same
  on a coarse decimated EM mesh and on a dense confocal one;
* **curvature** (:func:`mean_curvature`, :func:`gaussian_curvature`): signed mean curvature
  from the Laplacian of the positions (positive on convex bumps such as spine heads, with
  outward normals) and Gaussian curvature from the angle defect, both per unit length
  (area) in mesh units.

Everything takes a :class:`~engine.mesh.io.Mesh` and uses the robust Laplacian of Sharp &
Crane (2020), which copes with the non-manifold, fragmented meshes of real neurons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from engine.mesh.io import Mesh

# Relative mass given to vertices that no face uses (their M entry is 0), so that every
# linear system below is non-singular and such a vertex simply keeps its own value.
_MASS_FLOOR = 1e-9


@dataclass
class Operators:
    """Laplacian ``L`` (n×n, positive semi-definite, CSC) and lumped mass ``M`` (n,) of a mesh.

    Factorizations of ``M + r² L`` are cached per radius, so several :func:`diffuse` calls
    at the same radius cost one sparse LU.
    """

    L: sp.csc_matrix
    mass: np.ndarray
    _lu: dict = field(default_factory=dict, repr=False)

    def solver(self, radius: float):
        """A cached ``splu`` of ``M + radius² L``."""
        from scipy.sparse.linalg import splu

        key = float(radius)
        if key not in self._lu:
            self._lu[key] = splu(sp.csc_matrix(sp.diags(self.mass) + key**2 * self.L))
        return self._lu[key]


def laplacian(mesh: Mesh, kind: str = "robust") -> Operators:
    """Laplacian and lumped mass of ``mesh``: those of the HKS engine (:mod:`engine.mesh.laplacian`).

    ``kind`` is "robust" (intrinsic Delaunay of the tufted cover, Sharp & Crane 2020) or
    "cotangent", the names a :class:`~engine.mesh.spines.FeatureSpec` stores.
    """
    try:
        from engine.mesh.laplacian import laplacian as engine_laplacian
    except ImportError:  # pragma: no cover - the HKS engine ships it
        engine_laplacian = None
    if engine_laplacian is not None:
        L, M = engine_laplacian(mesh, kind)
        mass = np.asarray(M.diagonal(), dtype=np.float64)
    elif kind == "robust":  # pragma: no cover
        import robust_laplacian

        L, M = robust_laplacian.mesh_laplacian(np.ascontiguousarray(mesh.vertices), np.ascontiguousarray(mesh.faces))
        mass = np.asarray(M.diagonal(), dtype=np.float64)
    else:  # pragma: no cover
        raise ValueError(f"unknown Laplacian {kind!r}")
    floor = _MASS_FLOOR * (float(mass[mass > 0].mean()) if np.any(mass > 0) else 1.0)
    mass = np.where(mass > 0, mass, floor)
    n = mesh.n_vertices
    return Operators(L=sp.csc_matrix(L, shape=(n, n)), mass=mass)


def vertex_adjacency(mesh: Mesh) -> sp.csr_matrix:
    """Symmetric 0/1 adjacency of the vertex graph (face edges), no self loops."""
    n = mesh.n_vertices
    f = mesh.faces
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    keep = rows != cols
    A = sp.coo_matrix((np.ones(int(keep.sum()), dtype=np.float32), (rows[keep], cols[keep])), shape=(n, n)).tocsr()
    A.data[:] = 1.0  # duplicate edges were summed
    return A


def vertex_normals(mesh: Mesh, outward: bool = True) -> np.ndarray:
    """Unit area-weighted vertex normals (n, 3); zero for vertices used by no face.

    With ``outward`` each connected component whose signed volume is negative (faces wound
    inwards) gets its normals flipped, so that on closed surfaces they point outwards.
    """
    v, f = mesh.vertices, mesh.faces
    n = mesh.n_vertices
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 × area
    normals = np.zeros((n, 3))
    for i in range(3):
        np.add.at(normals, f[:, i], fn)
    if outward and len(f):
        from scipy.sparse.csgraph import connected_components

        _, comp = connected_components(vertex_adjacency(mesh), directed=False)
        face_comp = comp[f[:, 0]]
        # Signed volume of each component (divergence theorem; exact for closed surfaces).
        vol = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])) / 6.0
        comp_vol = np.bincount(face_comp, weights=vol, minlength=comp.max() + 1)
        normals[comp_vol[comp] < 0] *= -1.0
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)


def diffuse(ops: Operators, X: np.ndarray, radius: float) -> np.ndarray:
    """``X`` (n × d) averaged over neighbourhoods of about ``radius`` (mesh units).

    One implicit heat step ``(M + r² L) Y = M X``: a weighted average that decays over a
    geodesic distance of the order of ``r`` whatever the mesh resolution. Returns float64.
    """
    X = np.asarray(X, dtype=np.float64)
    squeeze = X.ndim == 1
    X2 = X[:, None] if squeeze else X
    Y = ops.solver(radius).solve(np.ascontiguousarray(ops.mass[:, None] * X2))
    return Y[:, 0] if squeeze else Y


def mean_curvature(mesh: Mesh, ops: Operators, normals: np.ndarray | None = None) -> np.ndarray:
    """Signed mean curvature per vertex (1/mesh units): +1/R on a sphere of radius R with outward normals."""
    if normals is None:
        normals = vertex_normals(mesh)
    hn = (ops.L @ mesh.vertices) / ops.mass[:, None]  # = 2 H n for L = -Δ (weak form)
    return 0.5 * np.einsum("ij,ij->i", hn, normals)


def gaussian_curvature(mesh: Mesh, ops: Operators) -> np.ndarray:
    """Gaussian curvature per vertex (1/mesh units²) from the angle defect over the lumped area."""
    v, f = mesh.vertices, mesh.faces
    angle_sum = np.zeros(mesh.n_vertices)
    for i in range(3):
        a, b, c = f[:, i], f[:, (i + 1) % 3], f[:, (i + 2) % 3]
        e1, e2 = v[b] - v[a], v[c] - v[a]
        cos = np.einsum("ij,ij->i", e1, e2) / np.maximum(np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1), 1e-300)
        np.add.at(angle_sum, a, np.arccos(np.clip(cos, -1.0, 1.0)))
    used = np.zeros(mesh.n_vertices, dtype=bool)
    used[f.ravel()] = True
    defect = np.where(used, 2.0 * np.pi - angle_sum, 0.0)
    return defect / ops.mass


def protrusion(mesh: Mesh, ops: Operators, radius: float, normals: np.ndarray | None = None) -> np.ndarray:
    """How far each vertex sticks out of its neighbourhood of size ``radius`` (n × 3, float64).

    The vertex positions are averaged over the neighbourhood (:func:`diffuse`); on a tube
    much thinner than ``radius`` the average lies near the centre line. Columns: the
    distance ``|x − x̄|`` from that average, its component along the outward normal, and
    the distance relative to its own neighbourhood mean (≈ 1 on the shaft, > 1 at the tip
    of a protrusion such as a spine, < 1 at its base). Distances are in mesh units.
    """
    if normals is None:
        normals = vertex_normals(mesh)
    d = mesh.vertices - diffuse(ops, mesh.vertices, radius)
    dist = np.linalg.norm(d, axis=1)
    outward = np.einsum("ij,ij->i", d, normals)
    local = diffuse(ops, dist, radius)
    rel = dist / np.maximum(local, 1e-12 * max(float(local.max()), 1e-300))
    return np.column_stack([dist, outward, rel])


def scale_invariant_hks(log_hks: np.ndarray, n_frequencies: int) -> np.ndarray:
    """Scale-invariant HKS (Bronstein & Kokkinos 2010) from log-HKS at log-spaced timescales (n × T).

    Scaling a surface by β scales its eigenvalues by 1/β² and its HKS by 1/β²:
    ``k'_t = β⁻² k_{t/β²}``. On timescales ``t = t₀ α^τ`` that is a constant added to log k
    and a shift of τ by ``log_α β²``. The difference along τ removes the constant, and the
    magnitude of its Fourier transform along τ removes the shift. Returns the first
    ``n_frequencies`` magnitudes (n × n_frequencies, float32). The invariance holds as far as
    the signal lies inside the sampled range at both scales (the sampling bounds) and the
    eigenvalue cut-off keeps the same eigenpairs.
    """
    d = np.diff(np.asarray(log_hks, dtype=np.float64), axis=1)
    return np.abs(np.fft.rfft(d, axis=1))[:, :n_frequencies].astype(np.float32)
