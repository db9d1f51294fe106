"""`neurowb hks` and `neurowb spines ...` (registered through the neurowb.commands entry point).

``neurowb hks MESH -o OUT.npz`` computes the heat kernel signature of every vertex
(:func:`engine.mesh.hks.compute_hks`) and writes ``OUT.npz`` with

``hks``            n_vertices × n_timescales float32 (not log);
``timescales``     float64, in squared mesh units (after ``--scale``);
``method``         the method actually used ("exact", "chunked" or "chebyshev");
``vertices``, ``faces``  the mesh as used (coordinates after ``--scale``);
``units``, ``max_eigenvalue``, ``scale``, ``info`` (JSON text with counts and timings);
and, with ``--points FILE``, ``points`` and ``points_log_hks`` (log-HKS of the nearest vertex).

Units: ``--scale S`` multiplies the coordinates first (1000 turns a µm mesh into nm). All
other lengths (``--t-min``/``--t-max`` in units², ``--max-eigenvalue`` in units⁻²,
``--overlap`` in units, query points) are in the units *after* scaling. Those units are
``--units`` when given, otherwise guessed from the scaled extent (> 1000 across → nm, else
µm; see engine.mesh.io.guess_units), and the default timescales and maximum eigenvalue
follow them (5e4–2e7 nm², 1e-5 nm⁻², converted for µm). The command prints what it used.
"""

from __future__ import annotations

import argparse
import io
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the morphology commands."""
    _register_hks(subparsers)


def _register_hks(subparsers: argparse._SubParsersAction) -> None:
    from engine.mesh.hks import METHODS

    p = subparsers.add_parser(
        "hks",
        help="heat kernel signature of every vertex of a mesh",
        description="Heat kernel signature (HKS) of every vertex of a surface mesh, saved as an .npz.",
        epilog="Lengths are in the mesh units after --scale (see --units); e.g. a SpineTool mesh in µm: "
        "neurowb hks dendrite.ply -o dendrite_hks.npz --scale 1000  (then nm, published defaults).",
    )
    p.add_argument("mesh", metavar="MESH", help="mesh file (PLY, OBJ, OFF, STL, GLB/glTF, MeshParty HDF5)")
    p.add_argument("-o", "--output", metavar="OUT.npz", required=True, help="output .npz file")
    p.add_argument("--scale", type=float, default=1.0, metavar="S", help="multiply coordinates by S first (1000: µm → nm)")
    p.add_argument("--units", choices=("nm", "um"), help="units of the coordinates after --scale (default: guessed from the extent)")
    p.add_argument("--timescales", type=int, default=32, metavar="N", help="number of log-spaced timescales (default 32)")
    p.add_argument("--t-min", type=float, metavar="T", help="smallest timescale in units² (default 5e4 nm² = 0.05 µm²)")
    p.add_argument("--t-max", type=float, metavar="T", help="largest timescale in units² (default 2e7 nm² = 20 µm²)")
    p.add_argument("--max-eigenvalue", type=float, metavar="L", help="eigenvalue cut-off in units⁻² (default 1e-5 nm⁻² = 10 µm⁻²)")
    p.add_argument("--method", choices=METHODS, default="auto", help="exact, chunked, chebyshev or auto (default)")
    p.add_argument("--chunk-size", type=int, metavar="N",
                   help="vertices per chunk before the overlap (chunked method; default 12k, or 24k if the overlap grows 12k chunks by > 35 %%)")
    p.add_argument("--overlap", type=float, metavar="D", help="geodesic chunk overlap in units (default 0.5·sqrt(t-max))")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="eigensolver precision (default float32)")
    p.add_argument("--laplacian", choices=("robust", "cotangent"), default="robust", help="Laplacian (default robust)")
    p.add_argument("--points", metavar="FILE", help="also save the log-HKS at these xyz points (CSV or NPY, units after --scale)")
    p.set_defaults(run=_run_hks)


def _run_hks(args: argparse.Namespace) -> int:
    import numpy as np

    from engine.cli import progress_bar
    from engine.errors import InputError
    from engine.mesh.hks import compute_hks, default_max_eigenvalue, default_timescales, hks_at_points, read_points
    from engine.mesh.io import Mesh, guess_units, load_mesh
    from engine.storage import atomic_write_bytes

    if not args.output.lower().endswith(".npz"):
        raise InputError(f"The output file must end in .npz, got '{args.output}'.")
    if not (args.scale > 0 and np.isfinite(args.scale)):
        raise InputError(f"--scale must be a positive number, got {args.scale}.")
    if args.timescales < 1:
        raise InputError(f"--timescales must be at least 1, got {args.timescales}.")
    mesh = load_mesh(args.mesh)
    vertices = mesh.vertices * args.scale
    units = args.units or guess_units(vertices)
    mesh = Mesh(vertices, mesh.faces, units=units, name=mesh.name)
    defaults = default_timescales(units, 2)
    t_min = args.t_min if args.t_min is not None else defaults[0]
    t_max = args.t_max if args.t_max is not None else defaults[-1]
    if not (0 < t_min <= t_max):
        raise InputError(f"Timescales need 0 < --t-min <= --t-max, got {t_min:g} and {t_max:g}.")
    timescales = np.geomspace(t_min, t_max, args.timescales)
    lam = args.max_eigenvalue if args.max_eigenvalue is not None else default_max_eigenvalue(units)
    points = read_points(args.points) if args.points else None
    how = "given" if args.units else "guessed from the extent" + (f" after --scale {args.scale:g}" if args.scale != 1 else "")
    print(f"{mesh.name}: {mesh.n_vertices:,} vertices, units {units} ({how}); t {t_min:.3g}–{t_max:.3g} {units}², "
          f"λmax {lam:.3g} {units}⁻²", file=sys.stderr)

    with progress_bar("HKS") as progress:
        result = compute_hks(mesh, timescales=timescales, max_eigenvalue=lam, method=args.method, chunk_size=args.chunk_size,
                             overlap=args.overlap, dtype=args.dtype, laplacian=args.laplacian, progress=progress)
    info = {k: v for k, v in result.info.items() if isinstance(v, (int, float, str, bool))}
    arrays = {
        "hks": result.hks.astype(np.float32), "timescales": result.timescales, "method": np.array(result.method),
        "vertices": mesh.vertices, "faces": mesh.faces, "units": np.array(units), "max_eigenvalue": np.array(lam),
        "scale": np.array(args.scale), "info": np.array(json.dumps(info)),
    }
    if points is not None:
        arrays["points"] = points
        arrays["points_log_hks"] = hks_at_points(mesh, result, points)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(args.output, buffer.getvalue())
    print(f"wrote {args.output}: hks {result.hks.shape[0]:,} × {result.hks.shape[1]} by {result.method} "
          f"in {result.info.get('seconds', 0):.1f} s", file=sys.stderr)
    return 0
