"""Heat kernel signatures: every way of computing them, side by side, in one run.

0. The whole command as a user runs it: ``python -m engine.cli hks MESH -o OUT.npz --scale
   1000`` (defaults) on a 31,523-vertex SpineTool dendrite, timed as a subprocess from start to
   exit, beside one naive shift-invert ``eigsh`` for the same eigenpairs in the same run, with
   its error against the exact float64 result; and the start-up of ``neurowb --version`` and
   ``neurowb hks --help`` (subprocess timer).
1. SpineTool example dendrite (54,121 vertices, µm × 1000 → nm; 32 timescales 5e4–2e7 nm²,
   λmax 1e-5 nm⁻²): a naive single ``eigsh``, ARPACK band by band (the published algorithm),
   our exact band-by-band solver (float64 = the accuracy reference, and float32), and the
   chunked method that ``method="auto"`` picks, each with its error against the reference.
   The published implementation took 38 s here (shared/data/README.md).
2. Small meshes (≤ 5k vertices): exact and Chebyshev against dense LAPACK.
3. A long procedural neuron of ~1,000,000 vertices at EM resolution (~90 nm edges, in nm):
   the chunked method, its peak memory (this process plus its Dask workers), and the
   accuracy of the same settings against the exact solver on a 60k-vertex neuron of the
   same kind.

4. Where a local process cluster starts to pay for chunks: the chunked method on procedural
   neurons of ``--threshold-sizes`` vertices, in threads of this process vs worker processes
   (cluster start-up included, as a command pays it).

Run: ``python -m benchmarks.hks`` (add ``--skip-naive`` / ``--skip-million`` / ``--skip-threshold``
/ ``--skip-spinetool`` to shorten, or ``--only-command`` for part 0; the whole run takes ~10-20 min on 2 busy cores).
Needs ../shared/data for parts 0-2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine_header, markdown_table, peak_rss_mb, ratio
from engine.device import available_cores, configure_threads

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "meshes"
SPINETOOL = DATA / "spinetool" / "spinetool_example_dendrite_surface.ply"
COMMAND_MESH = DATA / "spinetool" / "spinetool_1003-1_surface.ply"  # 31,523 vertices, µm
ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_SECONDS = 38.0  # published reference implementation on this mesh, one thread (README)


class PeakRSS:
    """Samples the resident memory of this process and all its children (Dask workers) every 50 ms."""

    def __init__(self):
        import psutil

        self._proc = psutil.Process()
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            total = 0
            for p in [self._proc] + self._proc.children(recursive=True):
                try:
                    total += p.memory_info().rss
                except Exception:  # a process that just ended
                    pass
            self.peak = max(self.peak, total / 2**20)
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def errors(values: np.ndarray, reference: np.ndarray) -> dict:
    rel = np.abs(np.asarray(values, np.float64) - reference) / np.abs(reference)
    return {"median rel err": float(np.median(rel)), "worst-t median": float(np.median(rel, axis=0).max()),
            "p90": float(np.quantile(rel, 0.9))}


def naive_eigsh(mesh, t, lam, count: int) -> np.ndarray:
    """One scipy ``eigsh`` call for all ``count`` eigenpairs below λmax (shift-invert at ~0)."""
    import scipy.sparse.linalg as sla

    from engine.mesh.laplacian import laplacian

    L, M = laplacian(mesh)
    w, phi = sla.eigsh(L.tocsc(), k=count, M=M.tocsc(), sigma=-1e-10, which="LM", tol=1e-8)
    keep = w <= lam
    return (phi[:, keep] ** 2) @ np.exp(-np.outer(np.maximum(w[keep], 0), t))


def procedural_neuron(n_target: int, seed: int = 0):
    """A "neuron" of ``n_dendrites`` long closed tubes (radius 0.6-1 µm, gently bent, with spine-like
    bumps), ~90 nm edges, in nm; ~``n_target`` vertices."""
    from engine.mesh.io import Mesh

    rng = np.random.default_rng(seed)
    h = 90.0  # ≈ the MICrONS dendrite (7,500 nm² per vertex)
    verts, faces, offset = [], [], 0
    n_dendrites = max(1, int(round(n_target / 125_000)))
    per = n_target / n_dendrites
    for d in range(n_dendrites):
        r0 = rng.uniform(600, 1000)
        n_around = int(round(2 * math.pi * r0 / h))
        n_along = max(8, int(per / n_around))
        s = np.arange(n_along) * h
        # Centre line: a gentle 3-D wiggle, dendrites side by side 8 µm apart.
        centre = np.stack([8000.0 * d + 1500 * np.sin(s / 23000 + d), 1500 * np.cos(s / 31000 + 2 * d), s], axis=1)
        theta = np.linspace(0, 2 * np.pi, n_around, endpoint=False)
        radius = np.full((n_along, n_around), r0)
        n_spines = int(s[-1] / 1000)  # ~1 spine per µm
        zs, ths = rng.uniform(0, s[-1], n_spines), rng.uniform(0, 2 * np.pi, n_spines)
        for z, th in zip(zs, ths):
            i0, i1 = np.searchsorted(s, [z - 800, z + 800])
            dz = (s[i0:i1, None] - z) / 250.0
            dth = np.angle(np.exp(1j * (theta[None, :] - th))) * r0 / 250.0
            radius[i0:i1] += 0.9 * r0 * np.exp(-0.5 * (dz**2 + dth**2))
        x = centre[:, None, 0] + radius * np.cos(theta)[None, :]
        y = centre[:, None, 1] + radius * np.sin(theta)[None, :]
        z = np.broadcast_to(centre[:, None, 2], x.shape)
        v = np.stack([x, y, z], axis=-1).reshape(-1, 3)
        v = np.vstack([v, centre[0] - [0, 0, r0], centre[-1] + [0, 0, r0]])
        i, j = np.meshgrid(np.arange(n_along - 1), np.arange(n_around), indexing="ij")
        p00, p01 = i * n_around + j, i * n_around + (j + 1) % n_around
        f = np.concatenate([np.stack([p00, p01, p01 + n_around], -1).reshape(-1, 3),
                            np.stack([p00, p01 + n_around, p00 + n_around], -1).reshape(-1, 3)])
        b, tp = n_along * n_around, n_along * n_around + 1
        caps = [[b, (k + 1) % n_around, k] for k in range(n_around)]
        caps += [[tp, (n_along - 1) * n_around + k, (n_along - 1) * n_around + (k + 1) % n_around] for k in range(n_around)]
        verts.append(v)
        faces.append(np.concatenate([f, caps]) + offset)
        offset += len(v)
    return Mesh(np.vstack(verts), np.vstack(faces), units="nm", name=f"procedural_neuron_{n_target}")


def timed(func):
    start = time.perf_counter()
    out = func()
    return out, time.perf_counter() - start


def part_spinetool(args) -> None:
    from engine.mesh.hks import compute_hks, default_max_eigenvalue, default_timescales
    from engine.mesh.io import Mesh, load_mesh
    raw = load_mesh(SPINETOOL)
    mesh = Mesh(raw.vertices * 1000.0, raw.faces, units="nm", name=raw.name)
    t, lam = default_timescales("nm"), default_max_eigenvalue("nm")
    print(f"\n### SpineTool example dendrite ({mesh.n_vertices:,} vertices, µm × 1000 → nm; 32 t in 5e4–2e7 nm², "
          f"λmax {lam:g} nm⁻²)\n")
    ref, ref_s = timed(lambda: compute_hks(mesh, method="exact", dtype="float64"))
    reference = ref.hks.astype(np.float64)
    K = ref.info["n_eigenpairs"]
    rows = []

    def row(name, seconds, values, eig, note=""):
        r = {"method": name, "seconds": seconds, "speed-up vs published 38 s": ratio(PUBLISHED_SECONDS, seconds),
             "eigenpairs": eig}
        r.update({k: f"{v:.1e}" for k, v in errors(values, reference).items()} if values is not None else {})
        r["note"] = note
        rows.append(r)

    rows.append({"method": "published band-by-band implementation (README)", "seconds": PUBLISHED_SECONDS,
                 "speed-up vs published 38 s": "1.00x", "eigenpairs": "", "note": "measured on this machine kind, 1 thread"})
    if not args.skip_naive:
        naive, naive_s = timed(lambda: naive_eigsh(mesh, t, lam, K))
        row("naive: one scipy eigsh for all eigenpairs (shift-invert)", naive_s, naive, K, "float64, 1 thread")
    (arpack, arpack_info), arpack_s = timed(lambda: _exact_with(mesh, t, lam, solver="arpack", band_size=50, dtype="float32"))
    row("ARPACK bands of 50 (published algorithm), exact, float32", arpack_s, arpack, arpack_info["n_eigenpairs"], "1 thread")
    slices = f"{ref.info.get('n_slices', 1)} spectrum slice(s) in threads"
    row("exact, block Krylov bands, float64 (the reference)", ref_s, reference, K, slices)
    ex32, ex32_s = timed(lambda: compute_hks(mesh, method="exact", dtype="float32"))
    row("exact, block Krylov bands, float32", ex32_s, ex32.hks, ex32.info["n_eigenpairs"], slices)

    runs = [timed(lambda: compute_hks(mesh)) for _ in range(args.repeat)]  # auto
    auto, auto_s = min(runs, key=lambda r: r[1])
    info = auto.info
    row(f"auto → {auto.method}, float32, {available_cores()} threads of this process (best of {args.repeat})", auto_s, auto.hks,
        info["n_eigenpairs"], f"{info['n_chunks']} chunks of ≤{info['chunk_size']:,} + {info['overlap']:.0f} nm overlap, "
        f"{info['chunk_vertices_total']:,} vertices solved; median of runs {np.median([r[1] for r in runs]):.2f} s")
    fast, fast_s = timed(lambda: compute_hks(mesh, method="chunked", chunk_size=8000, overlap=0.25 * math.sqrt(t[-1])))
    row("chunked, 8k chunks + 0.25·sqrt(t_max) overlap (speed over accuracy)", fast_s, fast.hks, fast.info["n_eigenpairs"],
        f"{fast.info['n_chunks']} chunks, {fast.info['chunk_vertices_total']:,} vertices solved")
    print(f"(auto: splitting {info['split_seconds']:.2f} s; chunk solves {info['chunk_seconds_total']:.1f} s summed over the threads)\n")
    markdown_table(rows, ["method", "seconds", "speed-up vs published 38 s", "eigenpairs", "median rel err", "worst-t median", "p90", "note"])
    print("\nErrors are relative to the exact float64 result, over all vertices × 32 timescales (median), the worst of the "
          "32 per-timescale medians, and the 90th percentile.")


def _exact_with(mesh, t, lam, **options):
    """Exact HKS with spectrum options (e.g. solver="arpack") that compute_hks does not expose."""
    from engine.mesh.hks import hks_from_laplacian
    from engine.mesh.laplacian import laplacian

    L, M = laplacian(mesh)
    stats: dict = {}
    return hks_from_laplacian(L, M, t, lam, stats=stats, **options), stats


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_cli(argv: list[str]) -> tuple[float, float, str]:
    """Wall and CPU seconds of ``python -m engine.cli ARGV`` from start to exit, and its stderr.

    CPU time (all its threads and child processes) is the steadier figure on a shared machine."""
    cpu, start = _children_cpu(), time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "engine.cli", *argv], cwd=ROOT, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if out.returncode:
        raise RuntimeError(f"neurowb {' '.join(argv)} failed: {out.stderr}")
    return seconds, cpu, out.stderr


def timed_cpu(func):
    """(result, wall seconds, CPU seconds of this process)."""
    cpu, start = time.process_time(), time.perf_counter()
    out = func()
    return out, time.perf_counter() - start, time.process_time() - cpu


def part_command(args) -> None:
    from engine.mesh.hks import compute_hks, default_max_eigenvalue, default_timescales
    from engine.mesh.io import Mesh, load_mesh

    print("\n### The whole command, as a user runs it, beside one naive eigsh (same run)\n")
    startup = []
    for argv in (["--version"], ["hks", "--help"]):
        runs = [_run_cli(argv) for _ in range(5)]
        startup.append({"command": "neurowb " + " ".join(argv), "best wall s": min(r[0] for r in runs),
                        "median wall s": statistics.median(r[0] for r in runs), "median CPU s": statistics.median(r[1] for r in runs)})
    markdown_table(startup, ["command", "best wall s", "median wall s", "median CPU s"])

    raw = load_mesh(COMMAND_MESH)
    mesh = Mesh(raw.vertices * 1000.0, raw.faces, units="nm", name=raw.name)
    t, lam = default_timescales("nm"), default_max_eigenvalue("nm")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "hks.npz")
        argv = ["hks", str(COMMAND_MESH), "-o", out, "--scale", "1000"]
        runs = [_run_cli(argv) for _ in range(args.repeat)]
        stderr = runs[-1][2]
        with np.load(out) as z:
            values, info, method = z["hks"], json.loads(str(z["info"])), str(z["method"])
    ref, ref_s = timed(lambda: compute_hks(mesh, method="exact", dtype="float64"))
    count = ref.info["n_eigenpairs"]
    naive, naive_s, naive_cpu = timed_cpu(lambda: naive_eigsh(mesh, t, lam, count))
    e_cmd = errors(values, ref.hks.astype(np.float64))
    e_naive = errors(naive, ref.hks.astype(np.float64))
    dask_lines = sum("distributed" in line for line in stderr.splitlines())
    best = min(runs, key=lambda r: r[0])
    rows = [
        {"run": f"`neurowb hks {COMMAND_MESH.name} -o OUT.npz --scale 1000` (defaults), whole process, best of {args.repeat}",
         "wall s": best[0], "vs naive (wall)": ratio(best[0], naive_s), "CPU s": best[1], "vs naive (CPU)": ratio(best[1], naive_cpu),
         "median rel err": f"{e_cmd['median rel err']:.1e}", "worst-t median": f"{e_cmd['worst-t median']:.1e}",
         "note": f"median of runs {statistics.median(r[0] for r in runs):.2f} s wall; {method}, {info.get('n_slices', 1)} "
                 f"spectrum slice(s) in threads, {info['seconds']:.2f} s inside compute_hks; {dask_lines} Dask log lines"},
        {"run": f"naive: one scipy eigsh (shift-invert) for the same {count} eigenpairs, in-process", "wall s": naive_s,
         "vs naive (wall)": "1.00x", "CPU s": naive_cpu, "vs naive (CPU)": "1.00x",
         "median rel err": f"{e_naive['median rel err']:.1e}", "worst-t median": f"{e_naive['worst-t median']:.1e}",
         "note": "float64, 1 BLAS thread, Laplacian included"},
        {"run": "exact float64 in-process (the error reference)", "wall s": ref_s, "vs naive (wall)": ratio(ref_s, naive_s),
         "CPU s": "", "vs naive (CPU)": "", "median rel err": "0", "worst-t median": "0",
         "note": f"{ref.info.get('n_slices', 1)} slice(s)"},
    ]
    print(f"\n{mesh.name}: {mesh.n_vertices:,} vertices, µm × 1000 → nm, 32 t in 5e4–2e7 nm², λmax {lam:g} nm⁻², "
          f"{count} eigenpairs\n")
    markdown_table(rows, ["run", "wall s", "vs naive (wall)", "CPU s", "vs naive (CPU)", "median rel err", "worst-t median", "note"])


def part_threshold(args) -> None:
    from engine.mesh.hks import compute_hks
    from engine.parallel import shutdown

    print("\n### Chunks in threads vs a local process cluster (cluster start-up included)\n")
    rows = []
    for n in args.threshold_sizes:
        mesh = procedural_neuron(n, seed=0)
        for scheduler in ("threads", "local"):
            shutdown()
            result, seconds = timed(lambda mesh=mesh, scheduler=scheduler: compute_hks(mesh, method="chunked", scheduler=scheduler))
            rows.append({"vertices": mesh.n_vertices, "scheduler": scheduler, "seconds": seconds, "chunks": result.info["n_chunks"],
                         "load average": f"{os.getloadavg()[0]:.1f}"})
            print(f"({mesh.n_vertices:,} vertices, {scheduler}: {seconds:.1f} s)", file=sys.stderr, flush=True)
        rows[-1]["threads vs processes"] = ratio(rows[-2]["seconds"], rows[-1]["seconds"])
        shutdown()
    markdown_table(rows, ["vertices", "scheduler", "seconds", "chunks", "threads vs processes", "load average"])


def part_small(args) -> None:
    import trimesh

    from engine.mesh.chebyshev import TOLERANCE
    from engine.mesh.chunks import submesh
    from engine.mesh.hks import compute_hks, default_timescales
    from engine.mesh.io import Mesh, load_mesh
    from engine.mesh.laplacian import laplacian
    from engine.mesh.spectrum import dense_spectrum

    print("\n### Small meshes (≤ 5k vertices) against dense LAPACK\n")
    meshes = []
    s = trimesh.creation.icosphere(4, radius=2.0)
    meshes.append((Mesh(s.vertices, s.faces, units="um", name="icosphere(4), r 2 µm"), 15.0, np.geomspace(0.02, 5, 16)))
    for name, q in (("microns_dendrite_864691136371550856.ply", 0.12), ("hemibrain_DA1_1734350788.ply", 0.25)):
        if (DATA / name).is_file():
            m = load_mesh(DATA / name)
            keep = np.flatnonzero(m.vertices[:, 0] < np.quantile(m.vertices[:, 0], q))
            crop, _ = submesh(m, keep)
            crop.name = f"{name.split('_')[0]} crop"
            meshes.append((crop, 1e-5, default_timescales("nm", 16)))
    rows = []
    for mesh, lam, t in meshes:
        L, M = laplacian(mesh)
        w, phi = dense_spectrum(L, M, lam)
        ref = (phi**2) @ np.exp(-np.outer(np.maximum(w, 0), t))
        ok = np.isfinite(ref[:, 0]) & (np.asarray(abs(L).sum(axis=1)).ravel() > 0)
        ex, ex_s = timed(lambda mesh=mesh, t=t, lam=lam: compute_hks(mesh, timescales=t, max_eigenvalue=lam, method="exact", dtype="float64"))
        for label, res, sec in (("exact float64", ex, ex_s),):
            e = errors(res.hks[ok], ref[ok])
            rows.append({"mesh": mesh.name, "vertices": mesh.n_vertices, "eigenpairs": len(w), "method": label, "seconds": sec,
                         "median rel err": f"{e['median rel err']:.1e}", "worst-t median": f"{e['worst-t median']:.1e}"})
    # Chebyshev: against the untruncated heat kernel (all eigenpairs), at short times.
    s3 = trimesh.creation.icosphere(4)
    mesh = Mesh(s3.vertices, s3.faces, units="um", name="icosphere(4), r 1 µm")
    t = np.geomspace(0.002, 0.02, 8)
    L, M = laplacian(mesh)
    w, phi = dense_spectrum(L, M, None)
    ref = (phi**2) @ np.exp(-np.outer(np.maximum(w, 0), t))
    cb, cb_s = timed(lambda: compute_hks(mesh, timescales=t, method="chebyshev"))
    e = errors(cb.hks, ref)
    rows.append({"mesh": mesh.name, "vertices": mesh.n_vertices, "eigenpairs": "all (untruncated)",
                 "method": f"chebyshev (degree {cb.info['chebyshev_degree']}, {cb.info['chebyshev_probes']} probes, "
                           f"{cb.info['chebyshev_device']}); documented tolerance {TOLERANCE}",
                 "seconds": cb_s, "median rel err": f"{e['median rel err']:.1e}", "worst-t median": f"{e['worst-t median']:.1e}"})
    markdown_table(rows, ["mesh", "vertices", "eigenpairs", "method", "seconds", "median rel err", "worst-t median"])


def part_million(args) -> None:
    from engine.mesh.hks import compute_hks

    n = args.million
    small = procedural_neuron(60_000, seed=1)
    mesh = procedural_neuron(n, seed=0)
    print(f"\n### Long procedural neuron ({mesh.n_vertices:,} vertices, {mesh.n_faces:,} faces, ~90 nm edges, nm; "
          f"published defaults)\n")
    ex, ex_s = timed(lambda: compute_hks(small, method="exact", dtype="float64"))
    ch_small, ch_small_s = timed(lambda: compute_hks(small, method="chunked"))
    with PeakRSS() as mem:
        big, big_s = timed(lambda: compute_hks(mesh))
    info = big.info
    e = errors(ch_small.hks, ex.hks.astype(np.float64))
    rows = [
        {"mesh": f"{small.n_vertices:,}-vertex neuron", "method": "exact float64 (reference)", "seconds": ex_s,
         "eigenpairs": ex.info["n_eigenpairs"], "chunks": 1, "peak RSS MiB": "", "median rel err": "", "worst-t median": ""},
        {"mesh": f"{small.n_vertices:,}-vertex neuron", "method": "chunked (defaults)", "seconds": ch_small_s,
         "eigenpairs": ch_small.info["n_eigenpairs"], "chunks": ch_small.info["n_chunks"], "peak RSS MiB": "",
         "median rel err": f"{e['median rel err']:.1e}", "worst-t median": f"{e['worst-t median']:.1e}"},
        {"mesh": f"{mesh.n_vertices:,}-vertex neuron", "method": f"auto → {big.method}, {available_cores()} workers",
         "seconds": big_s, "eigenpairs": info["n_eigenpairs"], "chunks": info["n_chunks"], "peak RSS MiB": mem.peak,
         "median rel err": "(as above)", "worst-t median": ""},
    ]
    markdown_table(rows, ["mesh", "method", "seconds", "eigenpairs", "chunks", "peak RSS MiB", "median rel err", "worst-t median"])
    print(f"\nPeak RSS counts this process and its Dask worker processes (sampled every 50 ms). "
          f"Splitting into chunks took {info['split_seconds']:.1f} s in this process; chunk solves "
          f"{info['chunk_seconds_total']:.0f} s summed over the workers, for {info['chunk_vertices_total']:,} vertices "
          f"solved (overlap included).")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="warm repeats of the auto method on the SpineTool mesh")
    parser.add_argument("--million", type=int, default=1_000_000, help="vertices of the procedural neuron")
    parser.add_argument("--skip-naive", action="store_true", help="skip the naive single-eigsh baseline")
    parser.add_argument("--skip-million", action="store_true")
    parser.add_argument("--skip-threshold", action="store_true")
    parser.add_argument("--only-command", action="store_true", help="only part 0 (the whole command vs naive)")
    parser.add_argument("--skip-spinetool", action="store_true", help="skip parts 1 and 2 (54k SpineTool methods, small meshes)")
    parser.add_argument("--threshold-sizes", type=int, nargs="+", default=[60_000, 250_000],
                        help="procedural neuron sizes for the threads vs processes comparison")
    args = parser.parse_args(argv)
    # One BLAS thread in this process (exact solves run here); chunk workers get 1 each.
    configure_threads(1)
    start = time.perf_counter()
    print(machine_header("HKS (benchmarks.hks)"))
    print(f"- load average at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"(the machine's {available_cores()} cores are shared with other users: timings are pessimistic)")
    if COMMAND_MESH.is_file():
        part_command(args)
    if args.only_command:
        return
    if args.skip_spinetool:
        pass
    elif SPINETOOL.is_file():
        part_spinetool(args)
        part_small(args)
    else:
        print(f"\n(../shared/data not found at {DATA}: SpineTool and small real meshes skipped)")
    if not args.skip_threshold:
        part_threshold(args)
    if not args.skip_million:
        part_million(args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s, peak RSS of this process {peak_rss_mb():.0f} MiB, "
          f"load average at end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
