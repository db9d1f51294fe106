"""`neurowb hks` and `neurowb spines train|predict|evaluate` (registered through the neurowb.commands entry point).

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

``neurowb spines train --mesh M --labels L.npy [--mesh M2 --labels L2 ...] -o MODEL`` fits a
:class:`engine.mesh.spines.SpineClassifier` (extra trees by default, ``--algorithm``) on the
labelled vertices of every mesh and saves it with its feature spec (default
``engine.mesh.spines.DEFAULT_KIND`` at 20 timescales in 0.05–2 µm²; ``--features``,
``--timescales``, ``--t-min``/``--t-max``); ``neurowb spines predict MODEL MESH -o POSTERIOR.npy``
writes the posterior (n_vertices × n_classes float32, columns in the model's class order,
printed), or P(spine) alone with ``--spine-only``; with ``--points SYNAPSES.csv|.npy -o OUT.csv``
it writes, per point, x, y, z, the nearest vertex, the distance to it, the predicted class and
P(class), and P of every class (``p_shaft``, ``p_spine``...); ``neurowb spines evaluate`` prints per-class
precision/recall/F1 and the confusion matrix for a halves split of each mesh or a
leave-one-mesh-out, and ``--json OUT`` saves them (``{"split", "results": [Evaluation...]}``).
Labels are translated by ``--label-map`` (named map or RULE:CLASS rules, see ``--help``).
"""

from __future__ import annotations

import argparse
import io
import json
import sys




def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the morphology commands."""
    _register_hks(subparsers)
    _register_spines(subparsers)


def _register_hks(subparsers: argparse._SubParsersAction) -> None:
    from engine.cli import nonnegative_float, positive_float, positive_int
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
    p.add_argument("--scale", type=positive_float, default=1.0, metavar="S", help="multiply coordinates by S first (1000: µm → nm)")
    p.add_argument("--units", choices=("nm", "um"), help="units of the coordinates after --scale (default: guessed from the extent)")
    p.add_argument("--timescales", type=positive_int, default=32, metavar="N", help="number of log-spaced timescales (default 32)")
    p.add_argument("--t-min", type=positive_float, metavar="T", help="smallest timescale in units² (default 5e4 nm² = 0.05 µm²)")
    p.add_argument("--t-max", type=positive_float, metavar="T", help="largest timescale in units² (default 2e7 nm² = 20 µm²)")
    p.add_argument("--max-eigenvalue", type=positive_float, metavar="L", help="eigenvalue cut-off in units⁻² (default 1e-5 nm⁻² = 10 µm⁻²)")
    p.add_argument("--method", choices=METHODS, default="auto", help="exact, chunked, chebyshev or auto (default)")
    p.add_argument("--chunk-size", type=positive_int, metavar="N",
                   help="vertices per chunk before the overlap (chunked method; default 12k, or 24k if the overlap grows 12k chunks by > 35 %%)")
    p.add_argument("--overlap", type=nonnegative_float, metavar="D", help="geodesic chunk overlap in units (default 0.5·sqrt(t-max))")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="eigensolver precision (default float32)")
    p.add_argument("--laplacian", choices=("robust", "cotangent"), default="robust", help="Laplacian (default robust)")
    p.add_argument("--points", metavar="FILE", help="also save the log-HKS at these xyz points (CSV or NPY, units after --scale)")
    p.set_defaults(run=_run_hks, batches=True)  # batches: its work can go to --scheduler


def _run_hks(args: argparse.Namespace) -> int:
    import numpy as np

    from engine.cli import check_output, progress_bar
    from engine.errors import InputError
    from engine.mesh.hks import compute_hks, default_max_eigenvalue, default_timescales, hks_at_points, read_points
    from engine.mesh.io import Mesh, guess_units, load_mesh
    from engine.storage import atomic_write_bytes

    check_output(args.output, suffixes=(".npz",))
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


_LABEL_MAP_HELP = """\
Label maps (--label-map) translate raw per-vertex labels to classes:
  neurd      0:shaft,1:spine,2:spine,3:spine,-1:ignore   (NEURD: shaft, head, neck, headless spine)
  spinetool  0:shaft,>0:spine,<0:ignore                  (SpineTool spine instance ids)
  binary     0:shaft,1:spine,-1:ignore
  native     0:shaft,1:spine,2:soma,-1:ignore            (NeuroWorkbench label files, the demo meshes)
  or explicit rules RULE:CLASS separated by commas; RULE is an integer, >N, <N, >=N, <=N or *
  (any other value), CLASS is shaft, spine, soma or ignore, e.g. '0:shaft,>0:spine,*:ignore'.
Without --label-map it is guessed from each label file's name (*spine_instance* → spinetool,
*spine_labels.npy → native, otherwise neurd).
"""


def _register_spines(subparsers: argparse._SubParsersAction) -> None:
    from engine.cli import positive_float, positive_int
    from engine.mesh.hks import METHODS
    from engine.mesh.feature_kinds import DEFAULT_KIND, DEFAULT_N_TIMESCALES, DEFAULT_T_RANGE_UM, FEATURE_KINDS

    spines = subparsers.add_parser(
        "spines", help="train, apply and evaluate the per-vertex spine classifier",
        description="Spine classifier (extra trees or a random forest) on HKS and shape features of mesh vertices.",
        epilog=_LABEL_MAP_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    spines.set_defaults(batches=True)  # their HKS can go to --scheduler
    commands = spines.add_subparsers(dest="spines_command", metavar="{train,predict,evaluate}", required=True)

    def labelled_meshes(p: argparse.ArgumentParser) -> None:
        p.add_argument("--mesh", action="append", required=True, metavar="M", help="a labelled mesh (repeat for several)")
        p.add_argument("--labels", action="append", required=True, metavar="L.npy",
                       help="its per-vertex labels (.npy, or text with one value per line); one per --mesh, in order")
        p.add_argument("--label-map", metavar="SPEC", help="how to read the labels (see below; default: guessed per file)")
        p.add_argument("--units", choices=("nm", "um"), help="units of the meshes (default: guessed from each mesh's extent)")
        p.add_argument("--features", choices=FEATURE_KINDS, default=DEFAULT_KIND, metavar="KIND",
                       help=f"feature kind: hks or sihks (scale-invariant HKS), optionally +smooth, +curv, +shape "
                       f"(default {DEFAULT_KIND})")
        p.add_argument("--timescales", type=positive_int, metavar="N",
                       help=f"number of log-spaced HKS timescales (default {DEFAULT_N_TIMESCALES}; 44 for sihks)")
        p.add_argument("--t-min", type=positive_float, metavar="T", help=f"smallest timescale in mesh units² (default "
                       f"{DEFAULT_T_RANGE_UM[0]:g} µm²; 0.005 µm² for sihks)")
        p.add_argument("--t-max", type=positive_float, metavar="T", help=f"largest timescale in mesh units² (default "
                       f"{DEFAULT_T_RANGE_UM[1]:g} µm²; 20 µm² for sihks)")
        p.add_argument("--method", choices=METHODS, default="auto", help="HKS method (default auto)")
        p.add_argument("--algorithm", choices=("extra_trees", "random_forest"), default="extra_trees",
                       help="classifier (default extra_trees: as accurate, several times faster to fit)")
        p.add_argument("--n-estimators", type=positive_int, default=100, metavar="N", help="trees (default 100)")

    train = commands.add_parser("train", help="fit a model on labelled meshes", epilog=_LABEL_MAP_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Fit the spine classifier on the labelled vertices of one or more meshes.")
    labelled_meshes(train)
    train.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file to write (e.g. spines.nwbspine)")
    train.set_defaults(run=_run_spines_train)

    predict = commands.add_parser("predict", help="posterior per vertex of a mesh, or the class of points on it",
                                  description="Apply a trained model to a mesh: class posterior per vertex, saved as .npy; "
                                  "with --points, the class of the vertex nearest to each point (e.g. synapse centres), "
                                  "saved as CSV.")
    predict.add_argument("model", metavar="MODEL", help="model file from 'neurowb spines train'")
    predict.add_argument("mesh", metavar="MESH", help="mesh file")
    predict.add_argument("-o", "--output", required=True, metavar="OUT",
                         help="POSTERIOR.npy, or OUT.csv with --points (columns x, y, z, vertex, distance, class, p_class, "
                         "p_<class>...)")
    predict.add_argument("--points", metavar="SYNAPSES.csv|.npy",
                         help="points in the mesh's units: a CSV with x, y, z columns (header optional) or a k × 3 .npy")
    predict.add_argument("--units", choices=("nm", "um"), help="units of the mesh (default: guessed from its extent)")
    predict.add_argument("--method", choices=METHODS, default="auto", help="HKS method (default auto)")
    predict.add_argument("--spine-only", action="store_true", help="save P(spine) only (n_vertices,) instead of all classes")
    predict.set_defaults(run=_run_spines_predict)

    evaluate = commands.add_parser("evaluate", help="precision/recall/F1 and confusion matrix", epilog=_LABEL_MAP_HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   description="Evaluate the classifier on labelled meshes: a spatial split of each mesh "
                                   "(halves along its longest axis, both ways) or leave-one-mesh-out.")
    labelled_meshes(evaluate)
    evaluate.add_argument("--split", choices=("halves", "leave-one-out"),
                          help="halves (default for one mesh) or leave-one-out (default for several)")
    evaluate.add_argument("--json", metavar="OUT", help="also save the results as JSON")
    evaluate.set_defaults(run=_run_spines_evaluate)


def _read_labelled(args: argparse.Namespace):
    """(meshes, class-code labels, feature spec) from --mesh/--labels/--label-map/--units/--features/--timescales."""
    import numpy as np

    from engine.errors import InputError, check_input_file
    from engine.mesh.io import load_mesh
    from engine.mesh.spines import FeatureSpec, guess_label_map, map_labels

    if len(args.mesh) != len(args.labels):
        raise InputError(f"Give one --labels file per --mesh, in the same order: got {len(args.mesh)} meshes and "
                         f"{len(args.labels)} label files.")
    if args.n_estimators < 1:
        raise InputError(f"--n-estimators must be at least 1, got {args.n_estimators}.")
    if args.timescales is not None and args.timescales < 1:
        raise InputError(f"--timescales must be at least 1, got {args.timescales}.")
    meshes, labels = [], []
    for mesh_path, label_path in zip(args.mesh, args.labels):
        mesh = load_mesh(mesh_path, units=args.units)
        path = check_input_file(label_path, (".npy", ".txt", ".csv"), "a label file")
        try:
            if path.suffix.lower() == ".npy":
                raw = np.load(path, allow_pickle=False)
            else:
                raw = np.loadtxt(path, delimiter="," if path.suffix.lower() == ".csv" else None)
        except Exception as exc:
            raise InputError(f"Cannot read labels from '{path.name}': it must be a .npy array or text with one "
                             "integer per line.", details=f"{type(exc).__name__}: {exc}") from exc
        raw = np.asarray(raw).ravel()
        if len(raw) != mesh.n_vertices:
            raise InputError(f"'{path.name}' has {len(raw):,} labels but '{mesh.name}' has {mesh.n_vertices:,} vertices: "
                             "give one label per vertex, in vertex order.")
        meshes.append(mesh)
        labels.append(map_labels(raw, args.label_map or guess_label_map(path)))
    units = meshes[0].units if meshes[0].units in ("nm", "um") else "um"
    t_range = None
    if args.t_min is not None or args.t_max is not None:
        default = FeatureSpec.default(units, kind=args.features).timescales
        t_range = (args.t_min if args.t_min is not None else default[0], args.t_max if args.t_max is not None else default[-1])
    spec = FeatureSpec.default(units, kind=args.features, n_timescales=args.timescales, t_range=t_range)
    return meshes, labels, spec


def _classifier(args: argparse.Namespace):
    from engine.mesh.spines import SpineClassifier

    return SpineClassifier(n_estimators=args.n_estimators, algorithm=args.algorithm)


def _features(meshes, spec, method: str, label: str = "features"):
    from engine.cli import progress_bar
    from engine.mesh.spines import mesh_features

    out = []
    for i, mesh in enumerate(meshes):
        with progress_bar(f"{label} {i + 1}/{len(meshes)} {mesh.name}") as progress:
            out.append(mesh_features(mesh, spec, progress=progress, method=method))
    return out


def _class_counts(y, class_names) -> str:
    import numpy as np

    return ", ".join(f"{name} {int(np.sum(y == code)):,}" for code, name in enumerate(class_names) if np.any(y == code))


def _run_spines_train(args: argparse.Namespace) -> int:
    import numpy as np

    from engine.cli import check_output
    from engine.errors import InputError
    from engine.mesh.spines import CLASSES

    check_output(args.output)
    meshes, labels, spec = _read_labelled(args)
    Xs = _features(meshes, spec, args.method)
    X, y = np.concatenate(Xs), np.concatenate(labels)
    if len(np.unique(y[y >= 0])) < 2:
        raise InputError("The labels hold fewer than two classes (after the label map): a classifier needs labelled "
                         "shaft and spine vertices at least.")
    clf = _classifier(args).fit(X, y, feature_spec=spec)
    clf.save(args.output, info={"meshes": [m.name for m in meshes], "label_map": args.label_map or "guessed per file"})
    print(f"trained on {len(meshes)} mesh{'es' if len(meshes) != 1 else ''} ({_class_counts(y, CLASSES)} labelled vertices); "
          f"features {spec.describe()}; {args.n_estimators} {args.algorithm.replace('_', ' ')}")
    print(f"wrote {args.output}")
    return 0


def _run_spines_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from engine.cli import check_output
    from engine.errors import InputError
    from engine.mesh.hks import read_points
    from engine.mesh.io import load_mesh
    from engine.mesh.spines import SpineClassifier, predict_points, spine_probability
    from engine.storage import atomic_save_npy, atomic_write_text

    want = ".csv" if args.points else ".npy"
    check_output(args.output, suffixes=(want,))
    points = read_points(args.points) if args.points else None  # a bad table fails before the HKS
    clf = SpineClassifier.load(args.model)
    if clf.feature_spec_ is None:
        raise InputError(f"Spine model '{args.model}' does not say which features it was trained on: retrain it with "
                         "'neurowb spines train'.")
    mesh = load_mesh(args.mesh, units=args.units)
    (X,) = _features([mesh], clf.feature_spec_, args.method)
    if points is not None:
        result = predict_points(clf, mesh, points, X=X)
        atomic_write_text(args.output, result.csv_text())
        counts = ", ".join(f"{name} {n:,}" for name, n in result.counts().items())
        print(f"{mesh.name}: {len(points):,} points, nearest vertex at median {np.median(result.distance):.3g} "
              f"(max {result.distance.max():.3g}) {mesh.units}; predicted {counts}")
        print(f"wrote {args.output}: per point x, y, z, vertex, distance, class, p_class, "
              + ", ".join(f"p_{n}" for n in clf.class_names_))
        return 0
    proba = clf.predict_proba(X).astype(np.float32)
    p_spine = spine_probability(clf, proba=proba)
    atomic_save_npy(args.output, p_spine if args.spine_only else proba)
    what = "P(spine)" if args.spine_only else f"posterior, columns {', '.join(clf.class_names_)}"
    print(f"{mesh.name}: {mesh.n_vertices:,} vertices, {int(np.sum(p_spine > 0.5)):,} with P(spine) > 0.5")
    print(f"wrote {args.output}: {what}")
    return 0


def _run_spines_evaluate(args: argparse.Namespace) -> int:
    from engine.cli import check_output
    from engine.errors import InputError
    from engine.mesh.spines import evaluate_halves, evaluate_leave_one_out
    from engine.storage import atomic_save_json

    if args.json:
        check_output(args.json)
    split = args.split or ("halves" if len(args.mesh) == 1 else "leave-one-out")
    if split == "leave-one-out" and len(args.mesh) < 2:
        raise InputError("Leave-one-out needs at least two labelled meshes (--mesh/--labels pairs); use --split halves for one.")
    meshes, labels, spec = _read_labelled(args)
    Xs = _features(meshes, spec, args.method)
    template = _classifier(args)
    if split == "halves":
        results = [(m.name, evaluate_halves(m, X, y, classifier=template)) for m, X, y in zip(meshes, Xs, labels)]
    else:
        results = [("all meshes", evaluate_leave_one_out(Xs, labels, names=[m.name for m in meshes], classifier=template))]
    print(f"features {spec.describe()}; {args.n_estimators} {args.algorithm.replace('_', ' ')}")
    for name, result in results:
        print(f"\n## {name}\n\n{result.table(folds=True)}")
    if args.json:
        atomic_save_json(args.json, {"split": split, "features": spec.to_dict(), "classifier": args.algorithm,
                                     "n_estimators": args.n_estimators, "meshes": [m.name for m in meshes],
                                     "results": [dict(result.to_dict(), name=name) for name, result in results]})
        print(f"\nwrote {args.json}")
    return 0
