"""Approximate HKS by Chebyshev expansion of the heat operator and probing (torch; CUDA if available).

What it computes
----------------
The *untruncated* heat kernel diagonal ``k_t(x, x) = [exp(-tA)]_xx / m_x`` (``A = M^-1/2 L
M^-1/2``), i.e. the HKS with no eigenvalue cut-off. It equals the exact method's result when
``max_eigenvalue`` is large enough that ``exp(-λmax t)`` is negligible (t ≳ 10/λmax); at
shorter times the two differ by definition (the published cut-off drops the high modes).

How
---
* ``exp(-tA) ≈ Σ_k c_k(t) T_k(Ã)`` with ``Ã = 2A/λ_top - I`` (λ_top a Gershgorin bound) and
  ``c_k = (2 - δ_k0) (-1)^k I_k(a) e^(-a)``, ``a = t λ_top / 2`` (Hammond et al. 2009; Huang et
  al. 2020). The degree is the smallest with a coefficient tail below ``tol`` of the flat-surface
  diagonal ``m/(4πt)`` at every t; it grows like ``sqrt(t λ_top)``, so long times are costly.
* The diagonal is read off with probing vectors: the mesh is cut into patches of a few vertices,
  patches are colored so that two patches of a color are at least ``probe_factor · sqrt(t_max)``
  apart (Euclidean, a lower bound of the geodesic distance), and each probe vector holds one
  vertex slot of every patch of one color. The error is the heat that reaches a same-colored
  vertex, ~ ``exp(-d²/4t)``; when more than ``max_probes`` vectors would be needed, ``d``
  shrinks to fit and long times lose accuracy (reported in ``info``).
* All recurrences run in torch sparse–dense products on :func:`engine.device.select_device`.

Tolerance
---------
:data:`TOLERANCE` is the median relative error tested (tests/engine/test_hks.py) against the
dense untruncated heat kernel for times whose diffusion length ``sqrt(t)`` is up to ~10 edge
lengths. With the published defaults on neuron meshes (sqrt(t_max) ≈ 35 edges) the required
degree (~thousands) and number of probes (~n) make this method slower than the exact
band-by-band solver on CPU; it is meant for short timescales and the GPU.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from engine.mesh.io import Mesh
from engine.progress import Progress, as_progress

#: Median relative error vs the dense untruncated heat kernel in the documented regime.
TOLERANCE = 0.02
_PATCH = 8  # vertices per probing patch


def chebyshev_coefficients(t: np.ndarray, lam_top: float, tol: float, floor: np.ndarray, max_degree: int) -> tuple[np.ndarray, bool]:
    """(K+1) × T coefficients of exp(-tλ) on [0, λ_top] in T_k(2λ/λ_top - 1); True if capped at max_degree."""
    from scipy.special import ive

    k = np.arange(max_degree + 1)
    a = np.asarray(t, dtype=np.float64) * lam_top / 2.0
    c = ive(k[:, None], a[None, :]) * np.where(k % 2, -1.0, 1.0)[:, None]
    c[1:] *= 2.0
    # Tail sum from k on; the degree is where it drops below tol·floor for every t.
    tail = np.cumsum(np.abs(c[::-1]), axis=0)[::-1]
    ok = tail <= (tol * floor)[None, :]
    need = np.where(ok.any(axis=0), ok.argmax(axis=0), max_degree + 1)
    degree = int(min(need.max(), max_degree))
    return c[: degree + 1], bool(need.max() > max_degree)


def probe_colors(vertices: np.ndarray, graph: sp.spmatrix, distance: float, max_probes: int) -> tuple[np.ndarray, float]:
    """Probe column of every vertex, and the separation distance actually achieved."""
    from scipy.spatial import cKDTree

    from engine.mesh.chunks import partition

    parts = partition(graph, _PATCH)
    patch = np.empty(len(vertices), dtype=np.int64)
    slot = np.empty(len(vertices), dtype=np.int64)
    centres = np.empty((len(parts), 3))
    radii = np.empty(len(parts))
    for i, p in enumerate(parts):
        patch[p] = i
        slot[p] = np.arange(len(p))
        centres[i] = vertices[p].mean(axis=0)
        radii[i] = np.linalg.norm(vertices[p] - centres[i], axis=1).max()
    tree = cKDTree(centres)
    while True:
        colors = _greedy_colors(tree, centres, radii, distance)
        if (colors.max() + 1) * _PATCH <= max_probes or distance <= 0:
            break
        distance *= 0.8  # too many probes for the budget: accept a shorter separation
    return colors[patch] * _PATCH + slot, distance


def _greedy_colors(tree, centres: np.ndarray, radii: np.ndarray, distance: float) -> np.ndarray:
    """Greedy coloring of patches; two conflict when their bounding spheres are closer than ``distance``."""
    pairs = tree.query_pairs(distance + 2 * float(radii.max()), output_type="ndarray")
    n = len(centres)
    if len(pairs):
        gap = np.linalg.norm(centres[pairs[:, 0]] - centres[pairs[:, 1]], axis=1) - radii[pairs[:, 0]] - radii[pairs[:, 1]]
        pairs = pairs[gap < distance]
    adj = sp.csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)) if len(pairs) else sp.csr_matrix((n, n))
    adj = (adj + adj.T).tocsr()
    colors = np.full(n, -1, dtype=np.int64)
    for v in np.argsort(-np.diff(adj.indptr), kind="stable"):  # most constrained patches first
        used = set(colors[adj.indices[adj.indptr[v] : adj.indptr[v + 1]]].tolist())
        c = 0
        while c in used:
            c += 1
        colors[v] = c
    return colors


def chebyshev_hks(
    mesh: Mesh,
    timescales: np.ndarray,
    *,
    laplacian: str = "robust",
    dtype: str = "float32",
    tol: float = 1e-3,
    probe_factor: float = 3.0,
    max_probes: int = 2048,
    max_degree: int = 3000,
    block: int = 256,
    device=None,
    progress: Progress | None = None,
    info: dict | None = None,
) -> np.ndarray:
    """Untruncated HKS (n × T, float64) by Chebyshev expansion and probing; see the module docstring."""
    import torch

    from engine.device import select_device
    from engine.mesh.chunks import edge_graph
    from engine.mesh.io import vertex_areas
    from engine.mesh.laplacian import fill_orphans, orphan_vertices
    from engine.mesh.laplacian import laplacian as build_laplacian
    from engine.mesh.spectrum import standard_form

    progress = as_progress(progress)
    info = info if info is not None else {}
    t = np.asarray(timescales, dtype=np.float64)
    L, M = build_laplacian(mesh, laplacian)
    A, s = standard_form(L, M)
    mass = 1.0 / s**2
    lam_top = float(np.abs(A).sum(axis=1).max())  # Gershgorin bound of the spectrum
    floor = np.median(mass) / (4 * math.pi * t)  # flat-surface diagonal of exp(-tA) at a median vertex
    coef, capped = chebyshev_coefficients(t, lam_top, tol, floor, max_degree)
    graph = edge_graph(mesh)
    columns, distance = probe_colors(mesh.vertices, graph, probe_factor * math.sqrt(float(t.max())), max_probes)
    n_probes = int(columns.max()) + 1
    info.update(chebyshev_degree=len(coef) - 1, chebyshev_capped=capped, chebyshev_probes=n_probes,
                chebyshev_probe_distance=distance, chebyshev_lambda_top=lam_top)

    device = select_device(device)
    tdtype = torch.float32 if dtype == "float32" else torch.float64
    info["chebyshev_device"] = str(device)
    At = A.tocsr()
    # Ã = 2A/λ_top - I as one sparse matrix.
    At = (2.0 / lam_top) * At - sp.eye(At.shape[0], format="csr")
    At.sort_indices()
    op = torch.sparse_csr_tensor(torch.from_numpy(At.indptr.astype(np.int64)), torch.from_numpy(At.indices.astype(np.int64)),
                                 torch.from_numpy(At.data).to(tdtype), size=At.shape).to(device)
    coef_t = torch.from_numpy(coef).to(tdtype).to(device)  # (K+1) × T
    n = mesh.n_vertices
    out = np.zeros((n, len(t)))
    blocks = list(range(0, n_probes, block))
    for bi, start in enumerate(blocks):
        stop = min(start + block, n_probes)
        rows = np.flatnonzero((columns >= start) & (columns < stop))
        if len(rows) == 0:
            continue
        rows_t = torch.from_numpy(rows).to(device)
        cols_t = torch.from_numpy(columns[rows] - start).to(device)
        Z = torch.zeros((n, stop - start), dtype=tdtype, device=device)
        Z[rows_t, cols_t] = 1.0
        acc = torch.zeros((len(rows), len(t)), dtype=tdtype, device=device)
        prev, cur = Z, op @ Z
        acc += Z[rows_t, cols_t][:, None] * coef_t[0][None, :]
        if len(coef) > 1:
            acc += cur[rows_t, cols_t][:, None] * coef_t[1][None, :]
        for k in range(2, len(coef)):
            if k % 32 == 0:
                progress.check()
                progress.report((bi + k / len(coef)) / len(blocks), f"Chebyshev probes {start}/{n_probes}")
            prev, cur = cur, 2.0 * (op @ cur) - prev
            acc += cur[rows_t, cols_t][:, None] * coef_t[k][None, :]
        out[rows] = acc.double().cpu().numpy()
    # diag(exp(-tA)) / m: the generalized eigenvectors are M^-1/2 ψ.
    out /= mass[:, None]
    orphans = orphan_vertices(L) | (vertex_areas(mesh) <= 1e-12 * float(np.ptp(mesh.vertices, axis=0).max()) ** 2)
    out[orphans] = np.nan
    info["n_orphan_vertices"] = int(orphans.sum())
    fill_orphans(mesh.vertices, out, orphans)
    progress.report(1.0)
    # The polynomial can dip just below zero where the kernel is tiny: keep values positive.
    return np.maximum(out, np.finfo(np.float32).tiny)
