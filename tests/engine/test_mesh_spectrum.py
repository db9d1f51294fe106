"""Laplacians and the band-by-band eigensolver against dense LAPACK."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as la
import scipy.sparse as sp
import trimesh

from engine.errors import InputError
from engine.mesh.io import Mesh, face_areas, load_mesh
from engine.mesh.laplacian import components, laplacian, orphan_vertices
from engine.mesh.spectrum import dense_spectrum, iterate_bands
from engine.progress import Cancelled, Progress


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """One BLAS thread: dense references with 2 threads ran 10x slower on a busy 2-core machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def icosphere(level=3) -> Mesh:
    s = trimesh.creation.icosphere(level)
    return Mesh(s.vertices, s.faces, name=f"ico{level}")


def capsule(height=6.0, count=24) -> Mesh:
    c = trimesh.creation.capsule(height=height, radius=1.0, count=[count, count])
    return Mesh(c.vertices, c.faces, name="capsule")


def messy() -> Mesh:
    """A capsule plus a lone triangle, a zero-area triangle, a duplicated face and an unreferenced vertex."""
    c = capsule()
    n = c.n_vertices
    extra_v = np.array([[5, 0, 0], [6, 0, 0], [5, 1, 0], [9, 9, 9], [7, 0, 0], [8, 0, 0], [7.5, 0, 0]], float)
    extra_f = np.array([[n, n + 1, n + 2], [n + 4, n + 5, n + 6], [n, n + 1, n + 2]])  # n+3 unreferenced; n+4..6 collinear
    return Mesh(np.vstack([c.vertices, extra_v]), np.vstack([c.faces, extra_f]), name="messy")


@pytest.mark.parametrize("kind", ["robust", "cotangent"])
@pytest.mark.parametrize("make", [icosphere, capsule, messy])
def test_laplacian_is_symmetric_psd_with_constants_in_its_kernel(kind, make):
    mesh = make()
    L, M = laplacian(mesh, kind)
    assert sp.isspmatrix_csr(L) or isinstance(L, sp.csr_array)
    dense = L.toarray()
    scale = np.abs(dense).max()
    assert np.allclose(dense, dense.T, atol=1e-14 * scale)
    assert np.abs(dense.sum(axis=1)).max() <= 1e-12 * scale  # rows sum to zero: L·1 = 0
    assert np.abs(L @ np.ones(mesh.n_vertices)).max() <= 1e-12 * scale
    assert la.eigvalsh(dense).min() >= -1e-10 * scale  # positive semi-definite
    mass = M.diagonal()
    assert np.all(mass > 0) and M.nnz == mesh.n_vertices  # diagonal, positive
    # The lumped mass is the surface area (within the robust Laplacian's mollification).
    area = face_areas(mesh).sum()
    orphans = orphan_vertices(L)
    assert mass[~orphans].sum() == pytest.approx(area, rel=1e-3)


def test_robust_laplacian_built_in_a_child_process_is_the_same(monkeypatch):
    """Where a window must keep running (the app sets ISOLATE_FACES), the GIL-holding C++ call runs in a child."""
    import engine.mesh.laplacian as module

    mesh = messy()
    L, M = laplacian(mesh, "robust")
    calls = []
    real = module._in_child_process
    monkeypatch.setattr(module, "_in_child_process", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(module, "ISOLATE_FACES", mesh.n_faces)
    L_child, M_child = laplacian(mesh, "robust")
    assert calls == [1]
    assert (L_child != L).nnz == 0 and np.array_equal(M_child.diagonal(), M.diagonal())


@pytest.mark.parametrize("kind", ["robust", "cotangent"])
def test_laplacian_marks_degenerate_vertices_as_orphans_and_rejects_bad_input(kind):
    mesh = messy()
    L, M = laplacian(mesh, kind)
    n = mesh.n_vertices
    orphans = orphan_vertices(L)
    assert orphans[n - 4]  # unreferenced
    # Vertices only in a zero-area face: orphans for the cotangent Laplacian; the robust one
    # mollifies the face into a sliver of tiny area (engine.mesh.hks treats it like an orphan).
    assert orphans[n - 3 :].all() if kind == "cotangent" else M.diagonal()[n - 3 :].sum() < 0.1 * np.median(M.diagonal())
    assert not orphans[: n - 7].any() and not orphans[n - 7 : n - 4].any()
    n_comp, labels = components(L)
    assert len(set(labels[n - 7 : n - 4])) == 1 and labels[n - 7] != labels[0]
    with pytest.raises(InputError):
        laplacian(mesh, "graph")
    with pytest.raises(InputError):
        laplacian(Mesh(np.zeros((3, 3)), np.array([[0, 1, 2]])))  # all faces degenerate


def _bands(L, M, lam, **kw):
    stats = {}
    ws, vs = [], []
    for w, v in iterate_bands(L, M, lam, dense_max=0, stats=stats, **kw):
        assert np.all(np.diff(w) >= 0)
        ws.append(w)
        vs.append(v)
    return np.concatenate(ws), np.hstack(vs), stats


@pytest.mark.parametrize("band_size", [30, 70])
def test_bands_match_the_dense_spectrum_on_a_sphere_with_degenerate_eigenvalues(band_size):
    mesh = icosphere(3)  # eigenvalues ≈ l(l+1) with multiplicity 2l+1 (slightly split)
    L, M = laplacian(mesh)
    lam = 75.0  # between l=7 (≈55.5) and l=8 (≈71-72, split) clusters and l=9 (≈88)
    w_dense, phi_dense = dense_spectrum(L, M, lam)
    w, phi, stats = _bands(L, M, lam, band_size=band_size)
    assert len(w) == len(w_dense)  # none missing, none counted twice
    assert np.allclose(w, w_dense, rtol=1e-7, atol=1e-9)
    # Eigenvectors: M-orthonormal, and they span the same invariant subspace (projector check).
    mass = M.diagonal()
    assert np.allclose(phi.T @ (mass[:, None] * phi), np.eye(len(w)), atol=1e-6)
    P = phi @ phi.T * mass
    P_dense = phi_dense @ phi_dense.T * mass
    assert np.abs(P - P_dense).max() < 1e-6
    assert stats["n_inertia_mismatches"] == 0 and stats["n_inertia_checks"] >= 1
    assert stats["n_eigenpairs"] == len(w_dense)


def test_bands_on_a_capsule_float32_and_arpack():
    L, M = laplacian(capsule(height=10.0, count=24))
    lam = 40.0
    w_dense, _ = dense_spectrum(L, M, lam)
    w64, _, _ = _bands(L, M, lam, band_size=20)
    w32, phi32, _ = _bands(L, M, lam, band_size=20, dtype="float32")
    wa, _, _ = _bands(L, M, lam, band_size=20, solver="arpack")
    assert len(w64) == len(w32) == len(wa) == len(w_dense)
    assert np.allclose(w64, w_dense, rtol=1e-8, atol=1e-9)
    assert np.allclose(wa, w_dense, rtol=1e-8, atol=1e-9)
    assert phi32.dtype == np.float32
    assert np.allclose(w32, w_dense, rtol=1e-4, atol=1e-6)


def test_bands_on_a_real_mesh_crop(shared_data):
    mesh = load_mesh(shared_data / "meshes" / "microns_dendrite_864691136371550856.ply")
    keep = np.flatnonzero(mesh.vertices[:, 0] < np.quantile(mesh.vertices[:, 0], 0.06))
    from engine.mesh.chunks import submesh

    crop, _ = submesh(mesh, keep)
    L, M = laplacian(crop)
    n_comp, labels = components(L)
    big = np.flatnonzero(labels == np.bincount(labels).argmax())
    L, M = L[big][:, big], sp.diags(M.diagonal()[big])
    lam = 3e-5  # nm⁻²
    w_dense, _ = dense_spectrum(L, M, lam)
    w, _, stats = _bands(L, M, lam, band_size=25)
    assert len(w_dense) > 30
    assert len(w) == len(w_dense)
    assert np.allclose(w, w_dense, rtol=1e-7, atol=1e-14)


def test_bands_can_be_cancelled():
    L, M = laplacian(icosphere(3))
    progress = Progress()
    progress.cancel()
    with pytest.raises(Cancelled):
        list(iterate_bands(L, M, 50.0, dense_max=0, progress=progress))
