"""`neurowb sort`, `neurowb qc` and `neurowb simulate-ephys` (registered through the neurowb.commands entry point).

``neurowb sort RAW --n-channels N --fs F [--dtype int16] [--gain G] [--offset O] [--probe PROBE.json] -o PHY_DIR``
    sorts a flat binary recording (samples × channels) into a Phy folder. Without ``--probe`` the
    channels are assumed to form one straight column 20 µm apart (a warning says so).
``neurowb qc PHY_DIR [-o metrics.csv]``
    prints the per-unit quality table (definitions in engine/ephys/qc.py) and optionally saves it.
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
    p.add_argument("raw", metavar="RAW", help="flat binary file, samples × channels, C order")
    p.add_argument("--n-channels", type=positive_int, required=True, metavar="N", help="channels in the file")
    p.add_argument("--fs", type=positive_float, required=True, metavar="F", help="sample rate in Hz")
    p.add_argument("--dtype", default="int16", choices=DTYPES, help="sample type (default int16)")
    p.add_argument("--gain", type=number(float, nonzero=True), default=1.0, metavar="G", help="µV per unit after subtracting the offset (default 1)")
    p.add_argument("--offset", type=finite_float, default=0.0, metavar="O", help="value subtracted first, e.g. 2056 for offset-binary ADCs")
    p.add_argument("--probe", metavar="PROBE", help="probeinterface .json or Kilosort channel map (.json / .mat)")
    p.add_argument("-o", "--output", metavar="PHY_DIR", required=True, help="output folder (created)")
    p.add_argument("--threshold", type=positive_float, help="spike score threshold in noise SDs (default 6)")
    p.set_defaults(run=_run_sort)

    q = subparsers.add_parser("qc", help="quality metrics of every unit in a Phy folder")
    q.add_argument("phy_dir", metavar="PHY_DIR")
    q.add_argument("-o", "--output", metavar="metrics.csv", help="also save the table as CSV")
    q.set_defaults(run=_run_qc)

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
    from engine.ephys.io import RawRecording, RecordingParams
    from engine.ephys.phy import write_phy
    from engine.ephys.probe import linear_probe, read_probe
    from engine.ephys.sorter import SortParams, sort_recording

    check_output(args.output, folder=True)  # before the sort, not after it
    params = RecordingParams(n_channels=args.n_channels, sample_rate=args.fs, dtype=args.dtype, gain_uv=args.gain, offset=args.offset)
    rec = RawRecording(args.raw, params)
    if args.probe:
        probe = read_probe(args.probe, rec.n_channels)
    else:
        print(f"warning: no --probe given: assuming a linear probe, {rec.n_channels} channels 20 µm apart", file=sys.stderr)
        probe = linear_probe(rec.n_channels, warn=False)
    sort_params = SortParams()
    if args.threshold is not None:
        sort_params.threshold = args.threshold
    logging.getLogger("engine.ephys").setLevel(logging.WARNING)
    with progress_bar("sorting") as progress:
        result = sort_recording(rec, probe, sort_params, progress=progress)
    from engine.ephys.curation import backup_for
    from engine.storage import staged_folder

    backup = backup_for(args.output)  # curation is never overwritten
    with staged_folder(args.output, keep_old=backup) as staging:  # a kill while writing leaves the old folder
        write_phy(result, staging, raw_path=args.raw, recording_params=params)
    folder = args.output
    if backup is not None:
        print(f"the curated folder that was there is kept as {backup}", file=sys.stderr)
    info = result.info
    print(f"{result.n_units} units, {len(result.spike_times)} spikes in {info['duration_s']:.1f} s of recording; "
          f"sorted in {info['total_s']:.1f} s on {info['device']} ({info['duration_s'] / max(info['total_s'], 1e-9):.1f}x real time)")
    print(f"Phy folder: {folder}")
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
