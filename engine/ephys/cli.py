"""`neurowb sort`, `neurowb qc`, `neurowb driftmap` and `neurowb simulate-ephys` (registered through the neurowb.commands
entry point).

``neurowb sort RECORDING [--probe P] -o PHY_DIR [--motion {auto,rigid,nonrigid,off}] [--nwb UNITS.nwb] [--nwb-metadata META]``
    sorts a recording into a Phy folder (and the units into an NWB file). RECORDING: any format of
    :mod:`engine.ephys.formats` (SpikeGLX, Open Ephys, Intan, Neuralynx, Blackrock, NWB: layout, gains and
    probe from the file), or a flat binary (samples × channels) with its sidecar or
    ``--n-channels N --fs F [--dtype int16] [--gain G] [--offset O]``. Without ``--probe`` the
    channels are assumed to form one straight column 20 µm apart (a warning says so).
``neurowb qc PHY_DIR [-o metrics.csv]``
    prints the per-unit quality table (definitions in engine/ephys/qc.py) and optionally saves it.
``neurowb driftmap PHY_DIR [-o drift.npz] [--max-spikes N]``
    summarises the drift map (engine/ephys/driftmap.py): spikes, where their depths come from, their range,
    the estimated motion; ``-o`` saves times_s, depths_um, amplitudes, spikes (and the motion's arrays).
``neurowb simulate-ephys -o DIR [--channels 32 --units 16 --duration 60 --seed S --noise 10]``
    writes ``DIR/recording.raw`` (int16, with its JSON sidecar), ``DIR/recording.probe.json``
    (probeinterface) and ``DIR/recording_ground_truth.npz`` (spike_times, spike_units, templates).
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    from engine.cli import finite_float, nonnegative_float, nonnegative_int, number, positive_float, positive_int
    from engine.ephys.io import DTYPES

    p = subparsers.add_parser("sort", help="spike-sort a raw recording into a Phy folder",
                              description="Spike sorting by deconvolution (engine/ephys/sorter.py); output opens in Phy.")
    p.add_argument("raw", metavar="RECORDING", help="SpikeGLX .ap.bin (or its run folder), Open Ephys structure.oebin (or its "
                   "folder), Intan .rhd/.rhs, Neuralynx .ncs folder, Blackrock .ns5/.ns6, NWB, or a flat binary file "
                   "(samples × channels, C order; layout from its sidecar or the flags)")
    p.add_argument("--n-channels", type=positive_int, metavar="N", help="channels in the file (default: from its sidecar)")
    p.add_argument("--fs", type=positive_float, metavar="F", help="sample rate in Hz (default: from its sidecar)")
    p.add_argument("--dtype", default="int16", choices=DTYPES, help="sample type (default int16)")
    p.add_argument("--gain", type=number(float, nonzero=True), default=1.0, metavar="G", help="µV per unit after subtracting the offset (default 1)")
    p.add_argument("--offset", type=finite_float, default=0.0, metavar="O", help="value subtracted first, e.g. 2056 for offset-binary ADCs")
    p.add_argument("--probe", metavar="PROBE", help="probeinterface .json or Kilosort channel map (.json / .mat)")
    p.add_argument("-o", "--output", metavar="PHY_DIR", required=True, help="output folder (created)")
    p.add_argument("--threshold", type=positive_float, help="spike score threshold in noise SDs (default 6)")
    p.add_argument("--residual-threshold", type=positive_float, metavar="SD",
                   help="also look for units in the residual of the deconvolution, at this threshold in its SDs (e.g. 4.5; "
                   "default off): finds small units the first detection missed, at the cost of one more matching pass")
    p.add_argument("--motion", choices=("auto", "rigid", "nonrigid", "off"), default="auto",
                   help="drift correction (default auto: estimated when the probe has ≥ 4 rows over ≥ 60 µm, corrected when it "
                   "moves ≥ 5 µm; rigid below 1 mm of probe, per depth window above)")
    p.add_argument("--nwb", metavar="UNITS.nwb", help="also write the units as an NWB file (as the window's Export NWB does)")
    p.add_argument("--nwb-metadata", metavar="META", help="JSON or YAML with NWB's field names: session_description, experimenter, "
                   "institution, lab, keywords, experiment_description, subject {subject_id, species, sex, age}, location")
    p.set_defaults(run=_run_sort)

    q = subparsers.add_parser("qc", help="quality metrics of every unit in a Phy folder")
    q.add_argument("phy_dir", metavar="PHY_DIR")
    q.add_argument("-o", "--output", metavar="metrics.csv", help="also save the table as CSV")
    q.set_defaults(run=_run_qc)

    m = subparsers.add_parser("driftmap", help="spike depths over time and the estimated motion of a Phy folder",
                              description="The Ephys workspace's drift map as numbers (engine/ephys/driftmap.py).")
    m.add_argument("phy_dir", metavar="PHY_DIR")
    m.add_argument("-o", "--output", metavar="drift.npz", help="save times_s, depths_um, amplitudes, spikes (and the motion)")
    m.add_argument("--max-spikes", type=positive_int, default=None, metavar="N",
                   help="read a fixed random subset past N spikes (default 500,000)")
    m.set_defaults(run=_run_driftmap)

    s = subparsers.add_parser("simulate-ephys", help="write a simulated probe recording with ground truth")
    s.add_argument("-o", "--output", metavar="DIR", required=True)
    s.add_argument("--channels", type=positive_int, default=32)
    s.add_argument("--units", type=nonnegative_int, default=16)
    s.add_argument("--duration", type=positive_float, default=60.0, help="seconds (default 60)")
    s.add_argument("--seed", type=nonnegative_int, default=0)
    s.add_argument("--noise", type=nonnegative_float, default=10.0, help="noise SD in µV (default 10)")
    s.add_argument("--fs", type=positive_float, default=30000.0)
    s.set_defaults(run=_run_simulate)


def _run_sort(args: argparse.Namespace) -> int:
    import logging

    from engine.cli import check_output, progress_bar
    from engine.ephys.curation import sort_job
    from engine.ephys.formats import ExtractorRecording, detect_format, open_recording
    from engine.ephys.io import RecordingParams, read_sidecar
    from engine.ephys.probe import read_probe
    from engine.ephys.sorter import SortParams
    from engine.errors import InputError
    from engine.nwb import command_metadata

    check_output(args.output, folder=True)  # before the sort, not after it
    if args.nwb:
        check_output(args.nwb, suffixes=(".nwb",))
    layout = [args.n_channels, args.fs]
    if detect_format(args.raw) is not None:  # SpikeGLX, Open Ephys, Intan, Neuralynx, Blackrock, NWB: the file says
        if any(v is not None for v in layout):
            raise InputError(f"'{args.raw}' states its channel count and rate: drop --n-channels and --fs.")
        params = None
    elif all(v is not None for v in layout):
        params = RecordingParams(n_channels=args.n_channels, sample_rate=args.fs, dtype=args.dtype, gain_uv=args.gain, offset=args.offset)
    elif any(v is not None for v in layout):
        raise InputError("Give both --n-channels and --fs (or neither, when the file has a sidecar).")
    else:
        params = read_sidecar(args.raw)
        if params is None:
            raise InputError(f"'{args.raw}' says neither its channel count nor its sample rate: give --n-channels and --fs, "
                             f"or put a sidecar '{args.raw}.json' beside it.")
    recording = open_recording(args.raw, params)  # a wrong layout or an unreadable file is said before anything else
    metadata = command_metadata(args.nwb, args.nwb_metadata)
    stated = recording.probe() if isinstance(recording, ExtractorRecording) else None
    if args.probe:
        read_probe(args.probe, recording.n_channels)
    elif stated is not None:
        print(f"probe: {stated.name}, {stated.n_channels} channels", file=sys.stderr)
    else:
        print("warning: no --probe given: assuming a linear probe 20 µm apart", file=sys.stderr)
    recording.close()
    sort_params = SortParams(motion=args.motion)
    if args.threshold is not None:
        sort_params.threshold = args.threshold
    if args.residual_threshold is not None:
        sort_params.residual_threshold = args.residual_threshold
    logging.getLogger("engine.ephys").setLevel(logging.WARNING)
    with progress_bar("sorting") as progress:
        out = sort_job(args.raw, params, args.probe, sort_params, folder=args.output, progress=progress)
    curation, folder = out["curation"], out["folder"]
    info = curation.phy.meta.get("info", {})
    print(f"drift correction: {info['drift_correction']}" + (f" (estimated up to {info['drift_max_um']:.1f} µm)" if "drift_max_um" in info else ""))
    print(f"{len(curation.cluster_ids)} units, {len(curation.spike_times)} spikes in {info['duration_s']:.1f} s of recording; "
          f"sorted in {info['total_s']:.1f} s on {info['device']} ({info['duration_s'] / max(info['total_s'], 1e-9):.1f}x real time)")
    if out["backup"] is not None:
        print(f"the curated folder that was there is kept as {out['backup']}", file=sys.stderr)
    print(f"Phy folder: {folder}")
    if args.nwb:
        from engine.ephys.nwb import export_units

        print(f"NWB units: {export_units(curation, args.nwb, metadata=metadata)}")
    return 0


def _run_qc(args: argparse.Namespace) -> int:
    from engine.cli import check_output
    from engine.ephys.qc import compute_metrics, format_table, write_csv

    if args.output:
        check_output(args.output)
    rows = compute_metrics(args.phy_dir)
    print(format_table(rows))
    if args.output:
        write_csv(rows, args.output)
        print(f"saved {args.output}")
    return 0


def _run_driftmap(args: argparse.Namespace) -> int:
    import numpy as np

    from engine.cli import check_output
    from engine.ephys.driftmap import MAX_SPIKES, read_drift_map

    if args.output:
        check_output(args.output, suffixes=(".npz",))
    drift = read_drift_map(args.phy_dir, max_spikes=args.max_spikes or MAX_SPIKES)
    n = len(drift.spikes)
    shown = f"{n:,} of {drift.n_total:,} spikes (a fixed random subset)" if drift.subsampled else f"{n:,} spikes"
    depths = f"{drift.depths_um.min():.0f}–{drift.depths_um.max():.0f} µm" if n else "—"
    print(f"{shown} in {drift.duration_s:.1f} s; depths {depths} (from {drift.depth_source}); "
          f"amplitudes in {drift.amplitude_unit}")
    motion = drift.motion
    if motion is None:
        print("no motion estimated (no motion.npz)")
    else:
        kind = "rigid" if motion.rigid else f"non-rigid, {len(motion.spatial_bins_um)} depth blocks"
        print(f"motion ({kind}): {len(motion.temporal_bins_s)} time bins, peak-to-peak {float(np.ptp(motion.displacement_um)):.1f} µm")
    if args.output:
        extra = {} if motion is None else {"temporal_bins_s": motion.temporal_bins_s, "spatial_bins_um": motion.spatial_bins_um,
                                           "displacement_um": motion.displacement_um, "rigid": np.array(motion.rigid)}
        np.savez(args.output, times_s=drift.times_s, depths_um=drift.depths_um, amplitudes=drift.amplitudes,
                 spikes=drift.spikes, **extra)
        print(f"saved {args.output}")
    return 0


def _run_simulate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.cli import check_output
    from engine.ephys.synth import probe_path, write_demo_recording
    from engine.errors import InputError

    check_output(args.output, folder=True)

    if args.channels < 1 or args.units < 0 or args.duration <= 0:
        raise InputError("simulate-ephys needs --channels ≥ 1, --units ≥ 0 and --duration > 0.")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "recording.raw"
    params = write_demo_recording(raw, duration=args.duration, n_channels=args.channels, n_units=args.units,
                                  noise_uv=args.noise, seed=args.seed, sample_rate=args.fs)
    print(f"wrote {raw} ({params.n_channels} ch, {params.sample_rate:g} Hz, int16, gain {params.gain_uv} µV), "
          f"{probe_path(raw)}, {out / 'recording_ground_truth.npz'}")
    print(f"sort it with: neurowb sort {raw} --n-channels {params.n_channels} --fs {params.sample_rate:g} "
          f"--gain {params.gain_uv} --probe {probe_path(raw)} -o {out / 'phy'}")
    return 0
