"""Heat kernel signatures (Sun, Ovsjanikov & Guibas 2009) of neuron surface meshes.

``k_t(x, x) = Σ_i exp(-λ_i t) φ_i(x)²`` over the eigenpairs of ``L φ = λ M φ`` (see
:mod:`engine.mesh.laplacian`) with ``λ_i <= max_eigenvalue``, for a set of timescales ``t``.
The cut-off is part of the definition (as in the published method): with the published
defaults (t from 5e4 nm², λmax = 1e-5 nm⁻², so exp(-λmax t_min) = 0.6) it changes the small-t
values markedly, and all methods except "chebyshev" compute exactly this truncated sum.

Methods
-------
``"exact"``
    Band-by-band shift-invert eigensolver on the whole mesh (:mod:`engine.mesh.spectrum`),
    each band accumulated into the HKS and dropped. The reference. The spectrum below λmax
    is cut into slices solved in parallel threads (one per core, :data:`MIN_SLICE`).
``"chunked"``
    The mesh is cut into chunks of at most ``chunk_size`` vertices, each grown by a geodesic
    ``overlap`` (:mod:`engine.mesh.chunks`); every chunk's HKS is computed exactly and
    independently (its own Laplacian, free boundary at the cut) in parallel through
    :func:`engine.parallel.parallel_map` (threads of this process; worker processes above
    :data:`PROCESSES_ABOVE` vertices), and each vertex keeps the value of its own chunk.
``"chebyshev"``
    Polynomial approximation of the heat operator with diagonal estimation, in torch (CUDA
    when available); see :mod:`engine.mesh.chebyshev` for what it computes and how well.
``"auto"``
    ``"exact"`` up to :data:`AUTO_CHUNK_ABOVE` vertices, ``"chunked"`` above.

Units
-----
Timescales are in squared mesh units and the maximum eigenvalue in inverse squared mesh
units. Defaults (:func:`default_timescales`, :func:`default_max_eigenvalue`) are the published
ones for nanometre meshes (32 log-spaced t in 5e4–2e7 nm², λmax 1e-5 nm⁻²) converted for µm
meshes (0.05–20 µm², 10 µm⁻²), so the same surface in nm and in µm gets the same HKS up to
the unit conversion of k (1/area: k_µm = 1e6 k_nm). Meshes of unknown units are treated as
µm (light-microscopy and NEURD meshes are, and a nm mesh is recognised by its extent when
loaded); the assumption is recorded in ``info["units_assumed"]``.

Degenerate input
----------------
Every vertex gets finite, positive values. Connected components are independent problems:
each is solved on its own, small ones (≤ spectrum.DENSE_MAX vertices) densely and exactly, so
tiny fragments are *not dropped*: a fragment of a few triangles has no non-zero eigenvalue
below λmax and gets ``1 / (its area)`` at all t (its constant mode). Orphan vertices (used by
no face of non-zero area; see laplacian.orphan_vertices) get the values of the nearest
non-orphan vertex. Counts are in ``info``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import InputError
from engine.mesh.io import Mesh, vertex_areas  # noqa: F401  (vertex_areas: part of this module's API)
from engine.progress import Progress, as_progress

if TYPE_CHECKING:
    import scipy.sparse as sp

log = logging.getLogger(__name__)

METHODS = ("auto", "exact", "chunked", "chebyshev")
#: "auto" switches from one exact solve to chunks above this many vertices. At 31.5k vertices
#: (SpineTool 1003-1) both cost the same CPU time (~5 s), but chunks were 1e-3 off (median)
#: and 11 % at the largest timescale; at 54k chunks took 5.7 s on two workers vs 13.5 s for one
#: exact solve (benchmarks/RESULTS.md, 2026-11-22 and 2026-12-07).
AUTO_CHUNK_ABOVE = 40_000
#: Chunks run in threads of this process up to this many vertices (nothing to start, no
#: copies), on a local Dask process cluster above. Measured on 2 cores (benchmarks/hks.py,
#: RESULTS 2026-12-07): threads took 0.49x the cluster's time at 60k vertices and 0.78x at 250k,
#: its start-up amortising (extrapolated crossing ~1M); the robust Laplacian's construction
#: holds the GIL (~15 % of a chunk), which costs threads more with more cores.
PROCESSES_ABOVE = 500_000
#: Chunk sizes (vertices owned by a chunk, before the overlap) tried when none is given;
#: the first whose chunks grow by at most MAX_GROWTH with the overlap is used.
CHUNK_SIZES = (12_000, 24_000)
MAX_GROWTH = 1.35
#: Default overlap as a multiple of sqrt(t_max) (the diffusion length at the largest timescale).
OVERLAP_FACTOR = 0.5
#: Fewest eigenpairs (by Weyl's law) worth a spectrum slice of its own in a parallel thread:
#: each slice costs a factorization and a partly wasted first band.
MIN_SLICE = 60
#: Floor of log_hks (HKS values are 1/area: ~1e-9 nm⁻² or ~1e-3 µm⁻², far above it).
LOG_FLOOR = 1e-30

_T_NM = (5e4, 2e7)  # nm², published defaults
_LAMBDA_NM = 1e-5  # nm⁻²
_UNIT_AREA = {"nm": 1.0, "um": 1e6}  # nm² per squared unit


@dataclass
class HKSResult:
    """``hks``: n_vertices × n_timescales float32 (not log); ``timescales`` in squared mesh units;
    ``method``: the method actually used; ``info``: counts, timings and settings."""

    hks: np.ndarray
    timescales: np.ndarray
    method: str
    info: dict = field(default_factory=dict)


def _unit_area(units: str) -> float:
    return _UNIT_AREA.get(units, _UNIT_AREA["um"])  # "unknown" is treated as µm


def default_timescales(units: str, n: int = 32) -> np.ndarray:
    """``n`` log-spaced timescales, 5e4–2e7 nm² expressed in ``units`` ("unknown" → µm)."""
    if n < 1:
        raise InputError(f"Need at least one timescale, got {n}.")
    scale = _unit_area(units)
    return np.geomspace(_T_NM[0] / scale, _T_NM[1] / scale, int(n))


def default_max_eigenvalue(units: str) -> float:
    """1e-5 nm⁻² expressed in ``units`` (10 µm⁻²; "unknown" → µm)."""
    return _LAMBDA_NM * _unit_area(units)


def default_overlap(timescales: np.ndarray) -> float:
    """Default chunk overlap: :data:`OVERLAP_FACTOR` diffusion lengths at the largest timescale."""
    return OVERLAP_FACTOR * math.sqrt(float(np.max(timescales)))


def log_hks(hks: np.ndarray) -> np.ndarray:
    """``log(hks)`` with values below :data:`LOG_FLOOR` (and NaN) clamped, so never -inf/NaN."""
    hks = np.asarray(hks)
    out_dtype = hks.dtype if np.issubdtype(hks.dtype, np.floating) else np.float64
    with np.errstate(invalid="ignore"):
        return np.log(np.maximum(np.nan_to_num(hks, nan=LOG_FLOOR), LOG_FLOOR)).astype(out_dtype, copy=False)


# -- the exact solver -----------------------------------------------------------------------------


def hks_from_laplacian(
    L: sp.spmatrix,
    M: sp.spmatrix,
    timescales: np.ndarray,
    max_eigenvalue: float,
    *,
    dtype: str = "float32",
    band_size: int | None = None,
    progress: Progress | None = None,
    stats: dict | None = None,
    skip: np.ndarray | None = None,
    solver: str = "block",
    threads: int = 1,
) -> np.ndarray:
    """Exact truncated HKS (n × T, float64) for a Laplacian pair, component by component.

    Orphan rows (no neighbours), and components made only of vertices flagged in ``skip``
    (e.g. the mollified sliver of a zero-area face), are left as NaN for the caller to fill.
    With ``threads`` > 1 the spectrum of a big component is cut into that many slices
    (:func:`engine.mesh.spectrum.slices`, at least :data:`MIN_SLICE` eigenpairs each by
    Weyl's law) solved in parallel threads; the result is the same sum.
    """
    import scipy.sparse as sp

    from engine.mesh.laplacian import components
    from engine.mesh.spectrum import DENSE_MAX

    progress = as_progress(progress)
    stats = stats if stats is not None else {}
    L = sp.csr_matrix(L)
    mass = np.asarray(M.diagonal(), dtype=np.float64)
    n = L.shape[0]
    t = np.asarray(timescales, dtype=np.float64)
    out = np.full((n, len(t)), np.nan)
    n_comp, labels = components(L)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_comp + 1))
    sizes = np.diff(bounds)
    orphan_rows = np.diff(L.indptr) == 0
    stats["n_components"] = stats.get("n_components", 0) + int(np.count_nonzero(sizes > 1))
    stats["n_dense_components"] = stats.get("n_dense_components", 0) + int(np.count_nonzero((sizes > 1) & (sizes <= DENSE_MAX)))
    # Work ~ size^2: weight progress stages accordingly; small components all go in one stage.
    big = [c for c in np.argsort(-sizes) if sizes[c] > DENSE_MAX]
    small = [c for c in range(n_comp) if 1 < sizes[c] <= DENSE_MAX]
    weights = [float(sizes[c]) ** 1.5 for c in big] + [max(float(np.sum(sizes[small] ** 1.5)), 1.0)]
    stages = progress.split(weights)
    for stage, c in zip(stages, big + [None]):
        comps = [c] if c is not None else small
        for i, comp in enumerate(comps):
            if c is None and i % 64 == 0:
                stage.check()
                stage.report(i / max(len(comps), 1))
            idx = np.sort(order[bounds[comp] : bounds[comp + 1]])
            if orphan_rows[idx].all() or (skip is not None and skip[idx].all()):
                continue
            Lc = L[idx][:, idx]
            Mc = sp.diags(mass[idx])
            n_slices = 1
            if c is not None and threads > 1:
                expected = float(mass[idx].sum()) * max_eigenvalue / (4 * math.pi)  # Weyl's law
                n_slices = int(min(threads, max(1, expected // MIN_SLICE)))
            options = dict(band_size=band_size, dtype=dtype, dense_max=DENSE_MAX, solver=solver)
            out[idx] = _sliced_hks(Lc, Mc, t, max_eigenvalue, n_slices, options, stage if c is not None else None, stats)
        stage.report(1.0)
    return out


def _sliced_hks(L, M, t: np.ndarray, max_eigenvalue: float, n_slices: int, options: dict, progress, stats: dict) -> np.ndarray:
    """Σ exp(-λ t) φ² over the eigenpairs below max_eigenvalue, in ``n_slices`` parallel slices."""
    from engine.mesh.spectrum import iterate_bands, slices

    def solve(lower, upper, stage) -> tuple[np.ndarray, dict]:
        acc = np.zeros((L.shape[0], len(t)), dtype=np.float64)
        slice_stats: dict = {}
        for w, phi in iterate_bands(L, M, upper[0], count=upper[1], lower=lower, progress=stage, stats=slice_stats, **options):
            # Σ_i exp(-λ_i t) φ_i(x)²: one (n × b) @ (b × T) product per band.
            coef = np.exp(-np.outer(np.maximum(w, 0.0), t)).astype(phi.dtype)
            acc += np.square(phi) @ coef
        return acc, slice_stats

    if n_slices <= 1:
        parts = [solve(None, (max_eigenvalue, None), progress)]
    else:
        from concurrent.futures import ThreadPoolExecutor

        bounds = slices(L, M, max_eigenvalue, n_slices)
        stats["n_factorizations"] = stats.get("n_factorizations", 0) + n_slices
        stats["n_slices"] = stats.get("n_slices", 0) + len(bounds)
        stages = as_progress(progress).split([1.0] * len(bounds))
        lowers = [None] + bounds[:-1]
        with ThreadPoolExecutor(max_workers=len(bounds), thread_name_prefix="neurowb-slice") as pool:
            parts = list(pool.map(solve, lowers, bounds, stages))
    for _, slice_stats in parts:
        for key, value in slice_stats.items():
            stats[key] = stats.get(key, 0) + value
    return sum(acc for acc, _ in parts)


def _exact(mesh: Mesh, timescales, max_eigenvalue, dtype, kind, band_size, progress, stats, count: np.ndarray | None = None,
           threads: int = 1) -> np.ndarray:
    """Exact HKS of a whole mesh; orphans filled from their nearest vertex and counted (among ``count`` if given)."""
    from engine.mesh.laplacian import fill_orphans, laplacian

    lap_stage, solve_stage = as_progress(progress).split([1, 9], ["Laplacian", "eigenpairs"])
    lap_stage.report(0.0)
    L, M = laplacian(mesh, kind)
    lap_stage.report(1.0)
    # Vertices without any face of non-zero area (the robust Laplacian mollifies such faces
    # into slivers of tiny area, whose 1/area HKS would be meaningless): treated as orphans.
    scale = float(np.ptp(mesh.vertices, axis=0).max()) ** 2
    arealess = vertex_areas(mesh) <= 1e-12 * scale
    out = hks_from_laplacian(L, M, timescales, max_eigenvalue, dtype=dtype, band_size=band_size, progress=solve_stage,
                             stats=stats, skip=arealess, threads=threads)
    orphans = ~np.isfinite(out[:, 0])
    stats["n_orphan_vertices"] = stats.get("n_orphan_vertices", 0) + int(orphans[count].sum() if count is not None else orphans.sum())
    fill_orphans(mesh.vertices, out, orphans)
    return out


# -- chunks ---------------------------------------------------------------------------------------


def _chunk_task(task: dict) -> tuple[np.ndarray, dict]:
    """Worker: exact HKS of one grown chunk, returned for the vertices it owns (float32)."""
    mesh = Mesh(task["vertices"], task["faces"], units="unknown")
    stats: dict = {}
    start = time.perf_counter()
    values = _exact(mesh, task["timescales"], task["max_eigenvalue"], task["dtype"], task["laplacian"], task["band_size"], None, stats,
                    count=task["owned"])  # the overlap's outer rim has faceless vertices: not orphans of the mesh
    stats["seconds"] = time.perf_counter() - start
    return values[task["owned"]].astype(np.float32), stats


def _choose_chunk_size(graph, vertices, overlap: float, progress: Progress, tree=None) -> tuple[int, list[np.ndarray]]:
    """The smallest of :data:`CHUNK_SIZES` whose chunks grow by at most :data:`MAX_GROWTH` with the overlap.

    Why: the cost of a chunk grows faster than its size (every eigenpair costs ~n), so small
    chunks are cheaper, until the overlap dominates; and a chunk whose overlap is a large part
    of it is also less accurate (more of its vertices sit near a cut). On a thin neurite
    (~5 µm around) 12k-vertex chunks grow by ~25 % with the default overlap; on a fat
    SpineTool dendrite (~15 µm around) 24k-vertex chunks are needed for the same.
    """
    from engine.mesh.chunks import grow, partition

    for size in CHUNK_SIZES:
        progress.check()
        parts = partition(graph, size)
        big = [p for p in parts if len(p) >= size // 2]
        sample = big[:: max(1, len(big) // 6)][:6]
        if not sample:  # nothing to cut: every piece is a small component
            return size, parts
        growth = sum(len(grow(graph, p, overlap, vertices=vertices, tree=tree)) for p in sample) / sum(len(p) for p in sample)
        if growth <= MAX_GROWTH:
            return size, parts
    return size, parts


def _chunked(mesh, timescales, max_eigenvalue, dtype, kind, band_size, chunk_size, overlap, progress, stats, scheduler=None):
    """Chunks solved in threads here (or, above PROCESSES_ABOVE vertices, on a local process
    cluster; or wherever ``scheduler`` says)."""
    from scipy.spatial import cKDTree

    from engine.mesh.chunks import edge_graph, grow, partition, submesh, vertex_faces
    from engine.mesh.laplacian import fill_orphans
    from engine.parallel import parallel_map

    start = time.perf_counter()
    split_stage, solve_stage = as_progress(progress).split([1, 20], ["chunks", "HKS"])
    split_stage.report(0.0)
    graph = edge_graph(mesh)
    referenced = np.zeros(mesh.n_vertices, dtype=bool)
    referenced[mesh.faces.ravel()] = True
    tree = cKDTree(mesh.vertices)
    if chunk_size is None:
        chunk_size, parts = _choose_chunk_size(graph, mesh.vertices, overlap, split_stage, tree)
        stats["chunk_size_auto"] = True
    else:
        parts = partition(graph, chunk_size)
    parts = [p[referenced[p]] for p in parts]
    parts = [p for p in parts if len(p)]
    tasks = []
    incidence = vertex_faces(mesh)
    for i, part in enumerate(parts):
        split_stage.check()
        grown = grow(graph, part, overlap, vertices=mesh.vertices, tree=tree)
        sub, _ = submesh(mesh, grown, incidence)
        tasks.append({
            "vertices": sub.vertices, "faces": sub.faces, "owned": np.searchsorted(grown, part),
            "timescales": np.asarray(timescales, dtype=np.float64), "max_eigenvalue": float(max_eigenvalue),
            "dtype": dtype, "laplacian": kind, "band_size": band_size,
        })
        split_stage.report((i + 1) / len(parts))
    # Biggest chunks first, so the last task to finish is a small one.
    order = sorted(range(len(tasks)), key=lambda i: -len(tasks[i]["vertices"]))
    stats["split_seconds"] = time.perf_counter() - start
    results = parallel_map(_chunk_task, [tasks[i] for i in order], progress=solve_stage, label="chunks", scheduler=scheduler,
                           processes=mesh.n_vertices > PROCESSES_ABOVE)
    out = np.full((mesh.n_vertices, len(timescales)), np.nan)
    for i, (values, chunk_stats) in zip(order, results):
        out[parts[i]] = values
        for key, value in chunk_stats.items():
            if key != "seconds" and isinstance(value, (int, float)):
                stats[key] = stats.get(key, 0) + value
    grown_sizes = [len(t["vertices"]) for t in tasks]
    stats.update(n_chunks=len(tasks), chunk_size=int(chunk_size), overlap=float(overlap),
                 chunk_vertices_total=int(sum(grown_sizes)), chunk_vertices_max=int(max(grown_sizes, default=0)),
                 chunk_seconds_total=float(sum(r[1]["seconds"] for r in results)))
    unreferenced = ~referenced
    stats["n_orphan_vertices"] = stats.get("n_orphan_vertices", 0) + int(unreferenced.sum())
    fill_orphans(mesh.vertices, out, ~np.isfinite(out[:, 0]))
    return out


# -- public entry point ---------------------------------------------------------------------------


def compute_hks(
    mesh: Mesh,
    *,
    timescales: np.ndarray | None = None,
    max_eigenvalue: float | None = None,
    method: str = "auto",
    chunk_size: int | None = None,
    overlap: float | None = None,
    dtype: str = "float32",
    laplacian: str = "robust",
    scaled: bool = False,
    band_size: int | None = None,
    scheduler: str | None = None,
    progress: Progress | None = None,
) -> HKSResult:
    """Heat kernel signature of every vertex of ``mesh`` (see the module docstring).

    Parameters
    ----------
    timescales:
        Diffusion times in squared mesh units (default :func:`default_timescales`).
    max_eigenvalue:
        Eigenvalue cut-off in inverse squared mesh units (default :func:`default_max_eigenvalue`).
    method:
        "auto", "exact", "chunked" or "chebyshev".
    chunk_size, overlap:
        Chunked method: vertices per chunk before growing (default: chosen among
        :data:`CHUNK_SIZES` by how much the overlap adds) and geodesic overlap in mesh units
        (default :func:`default_overlap`).
    dtype:
        "float32" or "float64": precision of the eigensolver (the output is float32 anyway).
    laplacian:
        "robust" or "cotangent" (:func:`engine.mesh.laplacian.laplacian`).
    scaled:
        Divide each column by the area-weighted sum ``Σ_x k_t(x, x) m_x`` (the heat trace),
        which makes the signature invariant to a global scaling of the mesh.
    band_size:
        Eigenpairs per band of the exact solver (default spectrum.DEFAULT_BAND_SIZE).
    scheduler:
        Where the work runs (:func:`engine.parallel.parallel_map`; default ``NEUROWB_SCHEDULER``,
        else "auto"): on this machine the exact solve uses threads (spectrum slices) and
        chunks use threads, or worker processes above :data:`PROCESSES_ABOVE` vertices; with
        a Dask scheduler address the exact solve, or every chunk, is a task sent there.
    """
    from engine.parallel import is_address, parallel_map, requested_scheduler

    start = time.perf_counter()
    progress = as_progress(progress)
    if method not in METHODS:
        raise InputError(f"Unknown HKS method {method!r}: use one of {', '.join(METHODS)}.")
    if str(dtype) not in ("float32", "float64"):
        raise InputError(f"dtype must be 'float32' or 'float64', got {dtype!r}.")
    dtype = str(dtype)
    if mesh.n_faces == 0:
        raise InputError(f"Mesh '{mesh.name or 'mesh'}' has no faces: the HKS needs a surface mesh.")
    units = mesh.units if mesh.units in ("nm", "um") else "um"
    t = default_timescales(units) if timescales is None else np.atleast_1d(np.asarray(timescales, dtype=np.float64))
    if t.ndim != 1 or len(t) == 0 or not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise InputError("Timescales must be a non-empty list of positive numbers (squared mesh units).")
    lam = default_max_eigenvalue(units) if max_eigenvalue is None else float(max_eigenvalue)
    if not lam > 0:
        raise InputError(f"The maximum eigenvalue must be positive, got {max_eigenvalue}.")
    if method == "auto":
        method = "exact" if mesh.n_vertices <= AUTO_CHUNK_ABOVE else "chunked"
    size = None if chunk_size is None else int(chunk_size)
    ov = default_overlap(t) if overlap is None else float(overlap)
    if (size is not None and size < 1) or not ov >= 0:
        raise InputError(f"Chunk size must be ≥ 1 vertex and overlap ≥ 0, got {chunk_size} and {overlap}.")
    edge = _check_scale(mesh, t, lam)
    # The solvers see the mesh scaled to edges of about 1 (float32 overflowed, and the eigensolver
    # crawled for minutes, on coordinates ~1e12). A power of 4 keeps every operation exact: the
    # HKS of the mesh scaled by 1/s at t/s² is s² times the HKS at t, so it is only relabelled.
    s = 4.0 ** round(math.log(edge, 4))
    unit_mesh = Mesh(mesh.vertices / s, mesh.faces, units=mesh.units, name=mesh.name)
    t_unit, lam_unit = t / s**2, lam * s**2
    info: dict = {"units": mesh.units, "units_assumed": units, "laplacian": laplacian, "dtype": dtype,
                  "max_eigenvalue": lam, "n_vertices": mesh.n_vertices, "scaled": bool(scaled), "solver_scale": s}
    if method == "exact" and is_address(requested_scheduler(scheduler)):
        task = {"vertices": unit_mesh.vertices, "faces": unit_mesh.faces, "owned": np.arange(mesh.n_vertices), "timescales": t_unit,
                "max_eigenvalue": lam_unit, "dtype": dtype, "laplacian": laplacian, "band_size": band_size}
        values, remote = parallel_map(_chunk_task, [task], scheduler=scheduler, progress=progress, label="HKS")[0]
        info.update({k: v for k, v in remote.items() if k != "seconds"}, n_chunks=1)
    elif method == "exact":
        from engine.device import available_cores

        threads = 1 if requested_scheduler(scheduler) == "serial" else available_cores()
        values = _exact(unit_mesh, t_unit, lam_unit, dtype, laplacian, band_size, progress, info, threads=threads)
        info["n_chunks"] = 1
    elif method == "chunked":
        values = _chunked(unit_mesh, t_unit, lam_unit, dtype, laplacian, band_size, size, ov / s, progress, info, scheduler)
        info["overlap"] = ov
    else:
        from engine.mesh.chebyshev import chebyshev_hks

        values = chebyshev_hks(unit_mesh, t_unit, laplacian=laplacian, dtype=dtype, progress=progress, info=info)
    values = values / s**2
    if scaled:
        # Heat trace Σ_x k_t(x, x) m_x with m the lumped (one-third face) vertex areas.
        values = values / (vertex_areas(mesh)[:, None] * values).sum(axis=0, keepdims=True)
    if not np.all(np.isfinite(values)):  # should not happen; never hand NaN/inf to a classifier
        bad = int((~np.isfinite(values)).any(axis=1).sum())
        log.warning("%d vertices got non-finite HKS values; set to the floor", bad)
        values = np.nan_to_num(values, nan=LOG_FLOOR, posinf=np.finfo(np.float32).max, neginf=LOG_FLOOR)
    info["seconds"] = time.perf_counter() - start
    info["method"] = method
    progress.report(1.0)
    return HKSResult(hks=values.astype(np.float32), timescales=t, method=method, info=info)


def _check_scale(mesh: Mesh, t: np.ndarray, lam: float) -> float:
    """The median edge length of the faces of non-zero area; InputError when there are none, or when the
    units are evidently wrong: the largest timescale diffuses less than one edge (the HKS would describe
    single triangles), or the cut-off takes more eigenpairs than the mesh has vertices (by Weyl's law,
    area·λ/4π), which the band solver would grind through for hours on a large mesh."""
    from engine.mesh.io import face_areas
    from engine.mesh.spectrum import DENSE_MAX

    v, f = mesh.vertices, mesh.faces
    extent = float(np.ptp(v[f.ravel()], axis=0).max())
    real = face_areas(mesh) > 1e-12 * extent**2
    name = mesh.name or "mesh"
    if not real.any():
        raise InputError(f"Mesh '{name}' has no face of non-zero area (its vertices are collinear or coincide): "
                         "the HKS needs a surface. Repair or re-export the mesh.")
    edges = v[f[real]] - v[np.roll(f[real], 1, axis=1)]
    edge = float(np.median(np.linalg.norm(edges, axis=2)))
    if math.sqrt(float(t.max())) < edge:
        units = mesh.units if mesh.units in ("nm", "um") else "units"
        raise InputError(f"Mesh '{name}': its median edge is {edge:.3g} {units} but the largest timescale "
                         f"({t.max():.3g} {units}²) diffuses only {math.sqrt(t.max()):.3g} {units}, less than one edge; "
                         "the coordinates are probably in other units: check --scale and --units (or raise --t-max).")
    weyl = float(face_areas(mesh).sum()) * lam / (4 * math.pi)
    if mesh.n_vertices > DENSE_MAX and weyl > mesh.n_vertices:
        units = mesh.units if mesh.units in ("nm", "um") else "units"
        raise InputError(f"Mesh '{name}': the eigenvalue cut-off {lam:.3g} {units}⁻² would take about {weyl:.3g} eigenpairs, "
                         f"more than its {mesh.n_vertices:,} vertices (median edge {edge:.3g} {units}); the coordinates are "
                         "probably in other units: check --scale and --units (or lower --max-eigenvalue).")
    return edge


# -- features at points ---------------------------------------------------------------------------


def read_points(path: str | os.PathLike) -> np.ndarray:
    """Query points (k × 3 float64) from a .npy array or a CSV/TXT file of x, y, z columns.

    A CSV may have a header line and more columns (ids, types ...); then columns named x, y, z
    are used, or else the first three, which must be numbers. Raises InputError for a missing
    file, a bad shape, no points, or NaN/infinite coordinates.
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise InputError(f"Points file not found: '{path}'.")
    try:
        if path.suffix.lower() == ".npy":
            pts = np.load(path, allow_pickle=False)
        else:
            pts = _read_csv_points(path)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"Could not read points from '{path.name}': expected a .npy array or a CSV of x, y, z numbers.",
                         details=f"{type(exc).__name__}: {exc}") from exc
    pts = np.asarray(pts)
    if pts.ndim == 1 and pts.size == 3:
        pts = pts.reshape(1, 3)
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.issubdtype(pts.dtype, np.number):
        raise InputError(f"Points in '{path.name}' have shape {pts.shape}: expected k × 3 (x, y, z) numbers.")
    if len(pts) == 0:
        raise InputError(f"'{path.name}' holds no points: give one x, y, z row per point.")
    pts = pts.astype(np.float64)
    if not np.all(np.isfinite(pts)):
        rows = np.flatnonzero(~np.isfinite(pts).all(axis=1))
        raise InputError(f"Points in '{path.name}' contain NaN or infinite coordinates (row {rows[0] + 1} and "
                         f"{len(rows) - 1} more): fix or remove those rows." if len(rows) > 1 else
                         f"Points in '{path.name}' contain NaN or infinite coordinates (row {rows[0] + 1}): fix or remove it.")
    return pts


def _read_csv_points(path) -> np.ndarray:
    with open(path, encoding="utf-8-sig") as f:
        lines = [line for line in f if line.strip()]
    if not lines:
        raise InputError(f"Points file '{path.name}' is empty: give one x, y, z row per point.")
    first = lines[0]
    delimiter = "," if "," in first else None
    cells = [c.strip().strip('"').lower() for c in (first.split(",") if delimiter else first.split())]

    def is_number(c: str) -> bool:
        try:
            float(c)
            return True
        except ValueError:
            return False

    header = not all(is_number(c) for c in cells if c)
    if header and len(lines) == 1:
        raise InputError(f"Points file '{path.name}' has a header but no points: give one x, y, z row per point.")
    named = header and all(name in cells for name in ("x", "y", "z"))
    if not named and len(cells) < 3:
        raise InputError(f"Points file '{path.name}' has {len(cells)} column(s): expected x, y, z.")
    columns = [cells.index("x"), cells.index("y"), cells.index("z")] if named else [0, 1, 2]
    return np.loadtxt(lines[1:] if header else lines, delimiter=delimiter, usecols=columns, ndmin=2, dtype=np.float64)


def hks_at_points(mesh: Mesh, hks: np.ndarray | HKSResult, points: np.ndarray) -> np.ndarray:
    """log-HKS of the vertex nearest to each point (k × n_timescales), via a KD-tree.

    ``points`` must be in the mesh's units (after any --scale).
    """
    from scipy.spatial import cKDTree

    values = np.asarray(getattr(hks, "hks", hks))
    if values.ndim != 2 or values.shape[0] != mesh.n_vertices:
        raise InputError(f"The HKS has shape {values.shape} but the mesh has {mesh.n_vertices} vertices.")
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"Points have shape {pts.shape}: expected k × 3.")
    _, nearest = cKDTree(mesh.vertices).query(pts)
    return log_hks(values[nearest])
