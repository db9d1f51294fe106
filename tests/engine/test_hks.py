"""Heat kernel signatures: exact vs dense spectrum, chunked, Chebyshev, options, units, real meshes, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from engine.errors import InputError
from engine.mesh.hks import (
    HKSResult,
    compute_hks,
    default_max_eigenvalue,
    default_timescales,
    hks_at_points,
    hks_from_laplacian,
    log_hks,
    read_points,
    vertex_areas,
)
from engine.mesh.io import Mesh, load_mesh
from engine.mesh.laplacian import laplacian
from engine.mesh.spectrum import dense_spectrum
from engine.progress import Cancelled, Progress


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """One BLAS thread: dense references with 2 threads ran 10x slower on a busy 2-core machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def dense_hks(mesh: Mesh, t: np.ndarray, lam: float, kind: str = "robust") -> np.ndarray:
    L, M = laplacian(mesh, kind)
    w, phi = dense_spectrum(L, M, lam)
    return (phi**2) @ np.exp(-np.outer(np.maximum(w, 0), t))


def rel_err(a, b) -> np.ndarray:
    return np.abs(np.asarray(a, float) - b) / np.abs(b)


def sphere(level=4, radius=1.0) -> Mesh:
    s = trimesh.creation.icosphere(level, radius=radius)
    return Mesh(s.vertices, s.faces, units="um", name="sphere")


def capsule(height=8.0, count=(36, 36)) -> Mesh:
    c = trimesh.creation.capsule(height=height, radius=1.0, count=list(count))
    return Mesh(c.vertices, c.faces, units="um", name="capsule")


def tube(length=30.0, radius=1.0, n_around=16, n_along=120) -> Mesh:
    """A closed tube (a smooth "neurite"): rings of vertices plus an apex at each end."""
    z = np.linspace(0.0, length, n_along)
    a = np.linspace(0.0, 2 * np.pi, n_around, endpoint=False)
    ring = np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)
    v = np.concatenate([np.column_stack([np.tile(ring, (n_along, 1)), np.repeat(z, n_around)]),
                        [[0, 0, -radius], [0, 0, length + radius]]])
    i, j = np.meshgrid(np.arange(n_along - 1), np.arange(n_around), indexing="ij")
    p00, p01 = i * n_around + j, i * n_around + (j + 1) % n_around
    p10, p11 = p00 + n_around, p01 + n_around
    f = np.concatenate([np.stack([p00, p01, p11], -1).reshape(-1, 3), np.stack([p00, p11, p10], -1).reshape(-1, 3)])
    bottom, top = n_along * n_around, n_along * n_around + 1
    caps = [[bottom, (k + 1) % n_around, k] for k in range(n_around)]
    caps += [[top, (n_along - 1) * n_around + k, (n_along - 1) * n_around + (k + 1) % n_around] for k in range(n_around)]
    return Mesh(v, np.concatenate([f, caps]), units="um", name="tube")


T_UNIT = np.geomspace(0.02, 2.0, 8)  # µm² on unit-radius shapes


def test_defaults_follow_the_units():
    t_nm, t_um = default_timescales("nm"), default_timescales("um")
    assert len(t_nm) == 32 and t_nm[0] == pytest.approx(5e4) and t_nm[-1] == pytest.approx(2e7)
    assert np.allclose(t_um, t_nm / 1e6)
    assert np.allclose(default_timescales("unknown", 5), default_timescales("um", 5))  # unknown → µm
    assert default_max_eigenvalue("nm") == pytest.approx(1e-5) and default_max_eigenvalue("um") == pytest.approx(10.0)
    with pytest.raises(InputError):
        default_timescales("nm", 0)


@pytest.mark.parametrize("make", [lambda: sphere(3), tube])
def test_exact_matches_the_dense_spectrum(make, monkeypatch):
    import engine.mesh.spectrum

    monkeypatch.setattr(engine.mesh.spectrum, "DENSE_MAX", 100)  # small meshes, yet solved in bands
    mesh = make()  # a sphere (degenerate eigenvalues) and a tube
    lam = 60.0 if mesh.name == "sphere" else 8.0  # 64 and ~140 eigenpairs
    result = compute_hks(mesh, timescales=T_UNIT, max_eigenvalue=lam, method="exact", dtype="float64", band_size=30)
    assert isinstance(result, HKSResult) and result.method == "exact"
    assert result.hks.dtype == np.float32 and result.hks.shape == (mesh.n_vertices, len(T_UNIT))
    assert result.info["n_bands"] >= 2 and result.info["n_inertia_mismatches"] == 0
    ref = dense_hks(mesh, T_UNIT, lam)
    assert result.info["n_eigenpairs"] == int(np.count_nonzero(dense_spectrum(*laplacian(mesh), lam)[0] <= lam))
    assert np.median(rel_err(result.hks, ref)) <= 1e-3
    assert rel_err(result.hks, ref).max() <= 1e-2


def test_exact_on_a_small_real_mesh_crop(shared_data):
    from engine.mesh.chunks import submesh

    mesh = load_mesh(shared_data / "meshes" / "microns_dendrite_864691136371550856.ply")
    keep = np.flatnonzero(mesh.vertices[:, 0] < np.quantile(mesh.vertices[:, 0], 0.05))
    crop, _ = submesh(mesh, keep)  # ~1,600 vertices
    t = default_timescales("nm", 8)
    result = compute_hks(crop, timescales=t, max_eigenvalue=1e-5, method="exact", dtype="float64")
    ref = dense_hks(crop, t, 1e-5)
    ok = np.isfinite(ref[:, 0]) & (np.abs(laplacian(crop)[0]).sum(axis=1).A1 > 0)
    assert np.median(rel_err(result.hks[ok], ref[ok])) <= 1e-3
    assert np.all(np.isfinite(result.hks)) and np.all(result.hks > 0)


def test_float32_is_close_to_float64():
    mesh = tube()
    h64 = compute_hks(mesh, timescales=T_UNIT, max_eigenvalue=8.0, method="exact", dtype="float64").hks
    h32 = compute_hks(mesh, timescales=T_UNIT, max_eigenvalue=8.0, method="exact", dtype="float32").hks
    assert np.median(rel_err(h32, h64)) <= 1e-4
    assert rel_err(h32, h64).max() <= 1e-2


def test_chunked_agrees_with_exact_on_an_elongated_mesh():
    mesh = tube()  # a 30 µm "neurite", 1,922 vertices
    t = np.geomspace(0.02, 1.0, 6)
    exact = compute_hks(mesh, timescales=t, max_eigenvalue=10.0, method="exact").hks
    chunked = compute_hks(mesh, timescales=t, max_eigenvalue=10.0, method="chunked", chunk_size=600, overlap=3.0)
    assert chunked.method == "chunked" and chunked.info["n_chunks"] >= 4
    err = rel_err(chunked.hks, exact)
    assert np.median(err) <= 1e-2
    assert np.median(err, axis=0).max() <= 5e-2


def test_auto_picks_exact_for_small_meshes():
    assert compute_hks(sphere(2), timescales=T_UNIT, max_eigenvalue=30.0).method == "exact"


def test_chebyshev_is_close_to_the_untruncated_heat_kernel():
    from engine.mesh.chebyshev import TOLERANCE

    mesh = sphere(3)
    t = np.geomspace(0.005, 0.05, 4)  # short times: the regime the method is meant for
    result = compute_hks(mesh, timescales=t, method="chebyshev")
    assert result.method == "chebyshev" and result.info["chebyshev_degree"] > 0
    ref = dense_hks(mesh, t, np.inf)  # all eigenpairs: the untruncated heat kernel
    assert np.median(rel_err(result.hks, ref)) <= TOLERANCE


def test_scaled_and_log_options():
    mesh = sphere(3)
    plain = compute_hks(mesh, timescales=T_UNIT, max_eigenvalue=30.0)
    scaled = compute_hks(mesh, timescales=T_UNIT, max_eigenvalue=30.0, scaled=True)
    areas = vertex_areas(mesh)
    assert np.allclose((areas[:, None] * scaled.hks).sum(axis=0), 1.0, rtol=1e-4)
    assert np.allclose(scaled.hks / plain.hks, scaled.hks[0] / plain.hks[0], rtol=1e-4)  # one factor per t
    logged = log_hks(plain.hks)
    assert np.allclose(logged, np.log(plain.hks), rtol=1e-6)
    floored = log_hks(np.array([[0.0, np.nan, 1.0]]))
    assert np.all(np.isfinite(floored)) and floored[0, 2] == 0.0


def test_same_surface_in_um_and_nm_gives_the_same_hks():
    mesh_um = capsule(count=(24, 24))
    mesh_nm = Mesh(mesh_um.vertices * 1000.0, mesh_um.faces, units="nm")
    t_um = default_timescales("um", 6)
    h_um = compute_hks(mesh_um, timescales=t_um, method="exact", dtype="float64")
    h_nm = compute_hks(mesh_nm, method="exact", dtype="float64")  # defaults: the same t in nm²
    assert h_nm.info["max_eigenvalue"] == pytest.approx(default_max_eigenvalue("nm"))
    h_nm6 = compute_hks(mesh_nm, timescales=t_um * 1e6, method="exact", dtype="float64")
    # k is 1/area: 1 µm⁻² = 1e-6 nm⁻².
    assert np.median(rel_err(h_nm6.hks * 1e6, h_um.hks)) <= 1e-4
    assert np.allclose(h_nm.timescales[[0, -1]], [5e4, 2e7])


def test_degenerate_pieces_get_finite_values():
    c = capsule(count=(16, 16))
    n = c.n_vertices
    extra_v = np.array([[5, 0, 0], [5.2, 0, 0], [5, 0.2, 0], [9, 9, 9], [7, 0, 0], [8, 0, 0], [7.5, 0, 0]], float)
    extra_f = np.array([[n, n + 1, n + 2], [n + 4, n + 5, n + 6]])  # a tiny fragment, a zero-area face
    mesh = Mesh(np.vstack([c.vertices, extra_v]), np.vstack([c.faces, extra_f]), units="um")
    result = compute_hks(mesh, timescales=T_UNIT, max_eigenvalue=30.0)
    assert np.all(np.isfinite(result.hks)) and np.all(result.hks > 0)
    # The fragment has no non-zero eigenvalue below λmax: its constant mode, 1/area, at all t.
    area = 0.5 * 0.2 * 0.2
    assert np.allclose(result.hks[n : n + 3], 1.0 / area, rtol=1e-4)
    # Unreferenced and zero-area vertices copy their nearest proper vertex.
    assert np.allclose(result.hks[n + 3], result.hks[np.argmin(np.linalg.norm(c.vertices - [9, 9, 9], axis=1))])
    assert result.info["n_orphan_vertices"] == 4


def test_bad_parameters_raise_input_errors():
    mesh = sphere(2)
    for kwargs in ({"method": "magic"}, {"dtype": "float16"}, {"timescales": [-1.0]}, {"max_eigenvalue": 0.0},
                   {"method": "chunked", "chunk_size": 0}):
        with pytest.raises(InputError):
            compute_hks(mesh, **kwargs)


def test_cancel_stops_the_computation():
    progress = Progress()
    progress.cancel()
    with pytest.raises(Cancelled):
        compute_hks(sphere(4), timescales=T_UNIT, max_eigenvalue=60.0, progress=progress)


def test_points_from_csv_and_npy(tmp_path):
    mesh = sphere(3)
    result = compute_hks(mesh, timescales=T_UNIT, max_eigenvalue=30.0)
    pts = mesh.vertices[[5, 17, 99]] * 1.01  # just off the surface
    np.save(tmp_path / "p.npy", pts)
    (tmp_path / "p.csv").write_text("id,x,y,z\n" + "\n".join(f"{i},{x},{y},{z}" for i, (x, y, z) in enumerate(pts)))
    (tmp_path / "plain.csv").write_text("\n".join(f"{x} {y} {z}" for x, y, z in pts))
    for name in ("p.npy", "p.csv", "plain.csv"):
        assert np.allclose(read_points(tmp_path / name), pts)
    values = hks_at_points(mesh, result, pts)
    assert np.allclose(values, np.log(result.hks[[5, 17, 99]]), rtol=1e-6)
    np.save(tmp_path / "bad.npy", np.zeros((4, 2)))
    for bad in ("bad.npy", "missing.csv"):
        with pytest.raises(InputError):
            read_points(tmp_path / bad)


@pytest.mark.parametrize("name", ["microns_neuron_7666_decimated_fragmented.off", "hemibrain_DA1_1734350788.ply"])
def test_real_robustness_meshes_get_finite_hks(shared_data, name):
    mesh = load_mesh(shared_data / "meshes" / name)
    # A low cut-off keeps this quick; the chunked path exercises partitioning of thousands of fragments.
    result = compute_hks(mesh, timescales=default_timescales("nm", 4), max_eigenvalue=5e-7, method="chunked", chunk_size=8000)
    assert result.hks.shape == (mesh.n_vertices, 4)
    assert np.all(np.isfinite(result.hks)) and np.all(result.hks > 0)


def test_cli_writes_the_documented_npz(tmp_path):
    from engine import cli
    from engine.mesh.cli import register

    s = trimesh.creation.icosphere(3, radius=2.0)  # µm
    path = tmp_path / "sphere.ply"
    s.export(path)
    out = tmp_path / "out.npz"
    pts = tmp_path / "pts.npy"
    np.save(pts, s.vertices[:3] * 1000.0)
    code = cli.main(["hks", str(path), "-o", str(out), "--scale", "1000", "--timescales", "5", "--max-eigenvalue", "3e-6",
                     "--method", "exact", "--dtype", "float64", "--points", str(pts)], registrations=[register])
    assert code == 0
    with np.load(out) as z:
        assert z["hks"].dtype == np.float32 and z["hks"].shape == (len(s.vertices), 5)
        assert np.allclose(z["timescales"][[0, -1]], [5e4, 2e7])  # guessed nm after --scale 1000
        assert str(z["method"]) == "exact" and str(z["units"]) == "nm"
        assert np.allclose(z["vertices"], s.vertices * 1000.0) and np.array_equal(z["faces"], s.faces)
        assert z["points_log_hks"].shape == (3, 5) and np.all(z["hks"] > 0)
    assert cli.main(["hks", str(tmp_path / "nope.ply"), "-o", str(out)], registrations=[register]) == 2


@pytest.mark.parametrize("scale", [1e12, 1e-9])
def test_coordinates_far_from_unit_scale_give_the_scaled_hks(scale, monkeypatch):
    """A mesh in odd units (coordinates ~1e12 used to overflow float32 in the band solver for minutes) gets the
    HKS of the same mesh at unit scale, relabelled: k(x, s²t) = k(x, t) / s²."""
    import engine.mesh.spectrum

    monkeypatch.setattr(engine.mesh.spectrum, "DENSE_MAX", 100)  # the band solver, where float32 overflowed
    mesh = sphere(3)
    big = Mesh(mesh.vertices * scale, mesh.faces, units="unknown", name="big")
    ref = compute_hks(mesh, timescales=T_UNIT, max_eigenvalue=60.0, method="exact", dtype="float32").hks
    out = compute_hks(big, timescales=T_UNIT * scale**2, max_eigenvalue=60.0 / scale**2, method="exact", dtype="float32")
    assert out.info["n_inertia_mismatches"] == 0
    assert np.median(rel_err(out.hks.astype(np.float64) * scale**2, ref)) <= 1e-4


def test_degenerate_mesh_and_wrong_units_are_refused():
    flat = Mesh(np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0.0]]), np.array([[0, 1, 2]]), units="um", name="flat")
    with pytest.raises(InputError, match="no face of non-zero area"):
        compute_hks(flat, timescales=T_UNIT)
    big = Mesh(sphere(3).vertices * 1e12, sphere(3).faces, units="um", name="big")
    with pytest.raises(InputError, match="less than one edge"):
        compute_hks(big)  # µm defaults on a mesh 1e12 µm across
    with pytest.raises(InputError, match="eigenpairs"):
        compute_hks(Mesh(sphere(4).vertices * 1e6, sphere(4).faces, units="um"), timescales=[1e12])


@pytest.mark.parametrize("make", [lambda: sphere(3), tube])
def test_spectrum_slices_in_threads_give_the_same_eigenpairs(make, monkeypatch):
    import engine.mesh.hks
    import engine.mesh.spectrum

    monkeypatch.setattr(engine.mesh.spectrum, "DENSE_MAX", 100)
    monkeypatch.setattr(engine.mesh.hks, "MIN_SLICE", 10)
    mesh = make()
    lam = 60.0 if mesh.name == "sphere" else 8.0
    L, M = laplacian(mesh)
    stats: dict = {}
    values = hks_from_laplacian(L, M, T_UNIT, lam, dtype="float64", band_size=30, threads=3, stats=stats)
    assert stats["n_slices"] == 3 and stats["n_inertia_mismatches"] == 0
    assert stats["n_eigenpairs"] == int(np.count_nonzero(dense_spectrum(L, M, lam)[0] < lam))
    ref = dense_hks(mesh, T_UNIT, lam)
    assert np.median(rel_err(values, ref)) <= 1e-6
    assert rel_err(values, ref).max() <= 1e-3


def test_exact_runs_on_a_dask_scheduler_given_by_address():
    from distributed import LocalCluster

    from engine import parallel

    mesh = tube()
    here = compute_hks(mesh, timescales=T_UNIT, max_eigenvalue=8.0, method="exact").hks
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster:
        try:
            there = compute_hks(mesh, timescales=T_UNIT, max_eigenvalue=8.0, method="exact", scheduler=cluster.scheduler_address)
            assert "HKS" in cluster.scheduler.task_prefixes  # the solve was a task of that scheduler
        finally:
            parallel.shutdown()
    assert there.method == "exact" and there.info["n_eigenpairs"] > 0
    assert np.median(rel_err(there.hks, here)) <= 1e-4


def _cli_in_subprocess(argv: list[str]) -> tuple[int, str, list[str]]:
    """Run ``neurowb ARGV`` in a fresh interpreter: exit code, stderr, and which of Dask's,
    torch's and scikit-learn's modules it imported."""
    import subprocess
    import sys

    code = ("import sys\nfrom engine.cli import main\ncode = main(%r)\n"
            "print('MODULES', *[m for m in ('distributed', 'dask', 'torch', 'sklearn') if m in sys.modules])\n"
            "sys.exit(code)" % (argv,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    modules = [line for line in out.stdout.splitlines() if line.startswith("MODULES")][-1].split()[1:]
    return out.returncode, out.stderr, modules


def test_cli_chunks_of_a_small_mesh_run_in_threads_without_dask(tmp_path):
    s = trimesh.creation.icosphere(3, radius=2.0)  # µm
    s.export(tmp_path / "sphere.ply")
    code, err, modules = _cli_in_subprocess(["hks", str(tmp_path / "sphere.ply"), "-o", str(tmp_path / "out.npz"),
                                             "--timescales", "4", "--method", "chunked", "--chunk-size", "200"])
    assert code == 0, err
    assert "distributed" not in modules and "dask" not in modules  # no process cluster, not even Dask imported
    assert "distributed" not in err
    with np.load(tmp_path / "out.npz") as z:
        assert str(z["method"]) == "chunked" and np.all(z["hks"] > 0)


def test_cli_process_cluster_keeps_dask_logs_off_the_terminal_unless_debug(tmp_path):
    s = trimesh.creation.icosphere(3, radius=2.0)
    s.export(tmp_path / "sphere.ply")
    argv = ["hks", str(tmp_path / "sphere.ply"), "-o", str(tmp_path / "out.npz"), "--timescales", "4",
            "--method", "chunked", "--chunk-size", "200"]
    code, err, modules = _cli_in_subprocess(["--scheduler", "local"] + argv)
    assert code == 0, err
    assert "distributed" in modules  # the cluster did run
    assert "distributed" not in err and "INFO" not in err, err
    code, err, _ = _cli_in_subprocess(["--debug", "--scheduler", "local"] + argv)
    assert code == 0 and "distributed" in err  # --debug shows them
