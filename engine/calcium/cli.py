"""`neurowb cnmf`, `neurowb deconvolve` and `neurowb simulate-calcium` (registered through the
``neurowb.commands`` entry point ``calcium``).

``neurowb cnmf MOVIE -o OUT_DIR [--plane K] [--channel C] [--nwb FILE.nwb] [--nwb-metadata META]``
``    [--fs HZ] [--neuron-diameter PX] [--register …] [--patch-size PX] [--classifier [FILE]]``
    runs :func:`engine.calcium.pipeline.run_cnmf` on one plane and channel of MOVIE (``--classifier``: ROIs
    accepted by the classifier learnt from accept/reject decisions, :mod:`engine.calcium.classifier`) and writes
    the Suite2p folder, ``footprints.npz`` and ``traces.npz`` (:mod:`engine.calcium.export`) into OUT_DIR; ``--nwb`` also an NWB file, with the
    session metadata of ``--nwb-metadata`` (JSON or YAML, NWB's field names).
``neurowb deconvolve TRACES.npy [--fs HZ] [--method fast|cvxpy] -o OUT.npz``
    deconvolves every row (traces × frames; a 1-D array is one trace) and writes ``c``, ``s``,
    ``b``, ``g``, ``sigma``, ``tau`` (s, when --fs is given).
``neurowb simulate-calcium -o DIR [--size 128 --frames 3000 --cells 50 --seed S] [--kind recording|doughnut|dense]``
    writes ``movie.tif`` and ``ground_truth.npz`` (:func:`engine.calcium.synth.write_recording`).
"""

from __future__ import annotations

import argparse
import io
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the calcium commands."""
    from engine.cli import nonnegative_float, nonnegative_int, number, positive_float, positive_int

    p = subparsers.add_parser("cnmf", help="demix, deconvolve and evaluate the cells of a calcium movie",
                              description="CNMF pipeline: registration, detection, fast NMF per patch, merging, "
                              "deconvolution, evaluation.")
    p.add_argument("movie", metavar="MOVIE", help="movie: TIFF (ScanImage too), NPY, HDF5, NWB, Suite2p data.bin, CaImAn .mmap, "
                   "Bruker <folder>.xml, Miniscope .avi, Inscopix .isxd")
    p.add_argument("-o", "--output", metavar="OUT_DIR", required=True, help="output folder (Suite2p files, footprints.npz, traces.npz)")
    p.add_argument("--plane", type=nonnegative_int, metavar="K", help="plane of a multi-plane recording (0 = the first, as Suite2p's plane0)")
    p.add_argument("--channel", type=positive_int, metavar="C", help="channel of a multi-channel recording, by the acquisition's own "
                   "number (ScanImage's 1 for 'Channel 1')")
    p.add_argument("--fs", type=positive_float, metavar="HZ", help="frame rate (default: from the file, else 30)")
    p.add_argument("--neuron-diameter", type=number(float, 2), default=10.0, metavar="PX", help="typical cell diameter in pixels (default 10)")
    p.add_argument("--register", choices=("rigid", "piecewise", "none"), default="none", help="motion correction (default none)")
    p.add_argument("--patch-size", type=positive_int, metavar="PX", help="patch core size in pixels (default max(64, 6 diameters))")
    p.add_argument("--nwb", metavar="FILE.nwb", help="also write the ROIs, traces and summary images as an NWB file")
    p.add_argument("--nwb-metadata", metavar="META", help="JSON or YAML with NWB's field names: session_description, experimenter, "
                   "institution, lab, keywords, experiment_description, subject {subject_id, species, sex, age}, location")
    p.add_argument("--classifier", nargs="?", const="", metavar="FILE",
                   help="accept or reject each ROI by the classifier learnt from accept/reject decisions: FILE (.npz, from the "
                   "Calcium workspace's Save classifier…), or without FILE the user's own store; until it holds "
                   "5 accepts and 5 rejects the metric thresholds decide, and the command says so")
    p.set_defaults(run=_run_cnmf, batches=True)  # batches: patches and deconvolution can go to --scheduler

    p = subparsers.add_parser("deconvolve", help="AR(1) spike deconvolution of fluorescence traces",
                              description="Deconvolve traces (rows of an .npy array) into calcium and spikes.")  # fmt: skip
    p.add_argument("traces", metavar="TRACES.npy", help="traces × frames array (.npy)")
    p.add_argument("-o", "--output", metavar="OUT.npz", required=True, help="output .npz (c, s, b, g, sigma)")
    p.add_argument("--fs", type=positive_float, metavar="HZ", help="frame rate, to report time constants in seconds")
    p.add_argument("--method", choices=("fast", "cvxpy"), default="fast", help="exact fast solver (default) or the CVXPY reference")
    p.set_defaults(run=_run_deconvolve, batches=True)

    p = subparsers.add_parser("simulate-calcium", help="write a simulated two-photon movie with its ground truth",
                              description="Simulated movie (somata, AR(1) calcium, neuropil, drift, noise) as "
                              "movie.tif + ground_truth.npz.")
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="output folder")
    p.add_argument("--size", type=number(int, 24), default=128, help="height and width in pixels (default 128)")
    p.add_argument("--frames", type=number(int, 40), default=3000, help="number of frames (default 3000)")
    p.add_argument("--cells", type=nonnegative_int, default=50, help="number of cells (default 50)")
    p.add_argument("--fs", type=positive_float, default=30.0, metavar="HZ", help="frame rate (default 30)")
    p.add_argument("--motion", type=nonnegative_float, default=0.0, metavar="PX", help="RMS rigid motion in pixels (default 0)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    p.add_argument("--kind", choices=("recording", "doughnut", "dense"), default="recording",
                   help="simulator: soft disks (default), doughnut somata with neuropil and vignetting, or dense touching somata")
    p.set_defaults(run=_run_simulate)


def _run_cnmf(args: argparse.Namespace) -> int:
    from engine.calcium.export import check_output_folder, export_suite2p
    from engine.calcium.io import open_movie
    from engine.calcium.pipeline import run_cnmf
    from engine.cli import check_output, progress_bar
    from engine.errors import InputError

    check_output(args.output, folder=True)
    if args.nwb:
        check_output(args.nwb, suffixes=(".nwb",))
    if args.fs is not None and not args.fs > 0:
        raise InputError(f"--fs must be a positive frame rate in Hz, got {args.fs:g}.")
    if not args.neuron_diameter >= 2:
        raise InputError(f"--neuron-diameter must be at least 2 px, got {args.neuron_diameter:g}.")
    check_output_folder(args.output)  # before the work, not after it
    from engine.nwb import command_metadata

    metadata = command_metadata(args.nwb, args.nwb_metadata)
    decisions = None
    if args.classifier is not None:  # read before the work: a bad file ends the command at once
        from engine.calcium.classifier import import_decisions, load_store

        if args.classifier:
            decisions = import_decisions(args.classifier)
        else:
            decisions, notice = load_store()
            if notice:
                print(f"warning: {notice}", file=sys.stderr)
    movie = open_movie(args.movie, fps=args.fs, plane=args.plane, channel=args.channel)
    print(f"{movie!r}", file=sys.stderr)
    with progress_bar("CNMF") as progress:
        result = run_cnmf(movie, fs=args.fs, neuron_diameter=args.neuron_diameter, register=args.register,
                          patch_size=args.patch_size, progress=progress)  # fmt: skip
    if decisions is not None:
        from engine.calcium.classifier import rescore

        result = rescore(result, decisions)
        print(result.info["classifier"], file=sys.stderr)
    export_suite2p(result, args.output, data_path=args.movie)
    if args.nwb:
        from engine.calcium.nwb import export_nwb

        export_nwb(result, args.nwb, movie_path=args.movie, metadata=metadata)
    t = result.info["timings"]["total"]
    print(f"wrote {args.output}: {result.n_components} components, {int(result.accepted.sum())} accepted, "
          f"{result.F.shape[1]} frames at {result.fps:g} Hz, in {t:.1f} s", file=sys.stderr)
    return 0


def _run_deconvolve(args: argparse.Namespace) -> int:
    import numpy as np

    from engine.calcium.deconvolution import deconvolve, deconvolve_batch
    from engine.cli import check_output, progress_bar
    from engine.errors import InputError, check_input_file
    from engine.storage import atomic_write_bytes

    check_output(args.output, suffixes=(".npz",))
    if args.fs is not None and not args.fs > 0:
        raise InputError(f"--fs must be a positive frame rate in Hz, got {args.fs:g}.")
    path = check_input_file(args.traces, (".npy",), "traces")
    try:
        Y = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"Could not read '{path.name}' as a NumPy array: re-save it with numpy.save.", details=str(exc)) from exc
    if Y.ndim == 1:
        Y = Y[None]
    if Y.ndim != 2 or not np.issubdtype(Y.dtype, np.number):
        raise InputError(f"'{path.name}' must hold numbers as traces × frames (2-D) or one trace (1-D), got shape {Y.shape} {Y.dtype}.")
    if args.method == "fast":
        with progress_bar("Deconvolving") as progress:
            out = deconvolve_batch(Y, progress=progress)
        c, s, b, g, sigma = out.C, out.S, out.b, out.g, out.sigma
    else:
        rows = [deconvolve(y, method="cvxpy") for y in Y]
        c, s = np.stack([r.c for r in rows]), np.stack([r.s for r in rows])
        b, g, sigma = (np.array([getattr(r, k) for r in rows]) for k in ("b", "g", "sigma"))
    arrays = {"c": c.astype(np.float32), "s": s.astype(np.float32), "b": b, "g": g, "sigma": sigma, "method": np.array(args.method)}
    if args.fs:
        arrays["tau"] = -1.0 / (np.log(np.clip(g, 1e-9, 1 - 1e-9)) * args.fs)
        arrays["fs"] = np.float64(args.fs)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(args.output, buffer.getvalue())
    print(f"wrote {args.output}: {len(c)} traces × {c.shape[1]} frames ({args.method})", file=sys.stderr)
    return 0


def _run_simulate(args: argparse.Namespace) -> int:
    from engine.calcium.synth import write_recording
    from engine.cli import check_output
    from engine.errors import InputError

    check_output(args.output, folder=True)

    if args.size < 24 or args.frames < 40 or args.cells < 0 or not args.fs > 0:
        raise InputError("simulate-calcium needs --size >= 24, --frames >= 40, --cells >= 0 and --fs > 0.")
    if args.motion > 0 and args.kind == "doughnut":
        raise InputError("The doughnut simulator has no motion: drop --motion or use --kind recording or dense.")
    options = {"motion": args.motion} if args.motion > 0 else {}
    movie, truth = write_recording(args.output, kind=args.kind, n_frames=args.frames, height=args.size, width=args.size,
                                   n_cells=args.cells, fps=args.fs, seed=args.seed, **options)  # fmt: skip
    print(f"wrote {movie} and {truth}", file=sys.stderr)
    return 0
