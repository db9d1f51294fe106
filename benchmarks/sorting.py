"""Spike sorting benchmark: our deconvolution sorter against ground truth and SpikeInterface's sorters.

Run: ``OMP_NUM_THREADS=1 python -m benchmarks.sorting [--duration 60] [--cases easy,hard,own,locust,threads] [--no-peers]``

Cases
-----
* **easy** — SpikeInterface ``generate_ground_truth_recording``: 32 channels, 30 kHz, 16 units,
  noise 5 µV, 2-column probe at 20 µm pitch (SpikeInterface's default generated probe).
* **hard** — the same with 32 units and noise 10 µV.
  Both are saved once as a binary folder; every sorter reads that same file. Ours is timed end to
  end (open raw file → filter/whiten → detect → cluster → deconvolve → Phy folder written);
  peers through ``run_sorter`` (their own preprocessing and output included). Scores with
  ``compare_sorter_to_ground_truth(delta_time=0.4 ms)``: accuracy = tp/(tp+fn+fp) per ground-truth
  unit, well detected = accuracy ≥ 0.8, false-positive units = best agreement < 0.2.
* **own** — our simulator (engine/ephys/synth.py), scored with engine/ephys/groundtruth.py (same
  definitions). Note: it places units at random heights with similar waveforms, so some pairs have
  template cosine ≥ 0.99 and differ only in amplitude — harder than SpikeInterface's generator.
* **threads** — throughput: ours on the easy recording with 1 and 2 threads, alternating, best of 2.
* **locust** — the real 4-channel locust recordings in ../shared/data/ephys/locust (15 kHz, int16,
  offset 2056, gain unknown → µV = ADC counts), sorted with a tetrode-like geometry (4 contacts on
  a 20 µm square: every channel is a neighbour of every other); reports units and their QC.

Throughput = recording seconds / wall seconds (× real time).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine_header, markdown_table

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ephys" / "locust"


def _si_recording(n_units: int, noise: float, duration: float, seed: int, folder: Path):
    from spikeinterface.core import generate_ground_truth_recording, load

    rec, gt = generate_ground_truth_recording(
        durations=[duration], sampling_frequency=30000.0, num_channels=32, num_units=n_units, seed=seed,
        generate_probe_kwargs=dict(num_columns=2, xpitch=20, ypitch=20, contact_shapes="circle", contact_shape_params={"radius": 6}),
        noise_kwargs=dict(noise_levels=noise, strategy="on_the_fly"),
    )
    saved = rec.save(folder=folder / "recording", format="binary", n_jobs=1, progress_bar=False, verbose=False)
    return load(folder / "recording") if saved is None else saved, gt


def _own_threads() -> None:
    """Reset torch/BLAS pools to OMP_NUM_THREADS before each of our runs: SpikeInterface's sorters
    change them in this process, and more threads than free cores made our next run 3-4x slower."""
    from engine.device import configure_threads

    configure_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def _run_ours(raw_path: Path, n_channels: int, fs: float, positions: np.ndarray, dtype: str, out: Path, offset: float = 0.0):
    _own_threads()
    start = time.perf_counter()
    result = _sort(raw_path, n_channels, fs, positions, dtype, out, offset)
    return result, time.perf_counter() - start


def _sort(raw_path: Path, n_channels: int, fs: float, positions: np.ndarray, dtype: str, out: Path, offset: float = 0.0):
    """Raw file → Phy folder with the threads as they are set."""
    from engine.ephys.io import RawRecording, RecordingParams
    from engine.ephys.phy import write_phy
    from engine.ephys.probe import Probe
    from engine.ephys.sorter import sort_recording

    params = RecordingParams(n_channels=n_channels, sample_rate=fs, dtype=dtype, offset=offset)
    result = sort_recording(RawRecording(raw_path, params), Probe(positions, np.arange(n_channels)))
    write_phy(result, out, raw_path=raw_path, recording_params=params)
    return result


def _stages(result) -> str:
    """Seconds per stage: preprocess / detect / cluster / deconvolve."""
    i = result.info
    return "/".join(f"{i[k]:.1f}" for k in ("preprocess_s", "detect_s", "cluster_s", "deconvolve_s"))


def _score_si(gt, sorting) -> dict:
    import spikeinterface.full as si

    cmp = si.compare_sorter_to_ground_truth(gt, sorting, delta_time=0.4, exhaustive_gt=True)
    perf = cmp.get_performance()
    return {
        "well": int(cmp.count_well_detected_units(well_detected_score=0.8)),
        "mean_acc": float(perf["accuracy"].mean()),
        "units": len(sorting.unit_ids),
        "fp_units": int(cmp.count_false_positive_units()),
        "redundant": int(cmp.count_redundant_units()),
    }


def si_case(name: str, n_units: int, noise: float, duration: float, seed: int, peers: list[str], work: Path) -> list[dict]:
    import spikeinterface.full as si
    from spikeinterface.core import NumpySorting

    si.set_global_job_kwargs(n_jobs=1, progress_bar=False)
    folder = work / name
    rec, gt = _si_recording(n_units, noise, duration, seed, folder)
    raw = next((folder / "recording").glob("traces_cached_seg0.raw"))
    positions = rec.get_probe().contact_positions
    result, wall = _run_ours(raw, rec.get_num_channels(), 30000.0, positions, str(rec.get_dtype()), folder / "ours_phy")
    ours = NumpySorting.from_samples_and_labels([result.spike_times], [result.spike_units], 30000.0)
    rows = [{"case": name, "sorter": "neurowb (ours)", **_score_si(gt, ours), "wall_s": wall, "x_realtime": duration / wall,
             "stages": _stages(result)}]
    print(f"{name}: ours done in {wall:.1f} s", file=sys.stderr, flush=True)
    for peer in peers:
        start = time.perf_counter()
        try:
            sorting = si.run_sorter(peer, rec, folder=folder / peer, remove_existing_folder=True, verbose=False)
        except Exception as exc:  # a peer failing must not sink the benchmark
            rows.append({"case": name, "sorter": peer, "well": f"failed: {type(exc).__name__}: {str(exc)[:80]}"})
            continue
        wall = time.perf_counter() - start
        rows.append({"case": name, "sorter": peer, **_score_si(gt, sorting), "wall_s": wall, "x_realtime": duration / wall})
        print(f"{name}: {peer} done in {wall:.1f} s", file=sys.stderr, flush=True)
    return rows


def threads_case(duration: float, seed: int, work: Path) -> list[dict]:
    """Our sorter on the easy recording with 1 and 2 threads, alternating (machines are noisy), best of 2."""
    from engine.device import configure_threads

    rec, _gt = _si_recording(16, 5.0, duration, seed, work / "threads")
    raw = next((work / "threads" / "recording").glob("traces_cached_seg0.raw"))
    positions = rec.get_probe().contact_positions
    best: dict[int, tuple[float, str]] = {}
    try:
        for _ in range(2):
            for n in (1, 2):
                configure_threads(n)
                start = time.perf_counter()
                result = _sort(raw, 32, 30000.0, positions, str(rec.get_dtype()), work / f"threads_{n}_phy")
                wall = time.perf_counter() - start
                if wall < best.get(n, (np.inf, ""))[0]:
                    best[n] = (wall, _stages(result))
    finally:
        _own_threads()
    return [{"threads": n, "wall_s": w, "x_realtime": duration / w, "stages": st} for n, (w, st) in sorted(best.items())]


def own_case(name: str, n_units: int, noise: float, duration: float, seed: int, work: Path) -> dict:
    from engine.ephys.groundtruth import compare
    from engine.ephys.synth import DEMO_GAIN_UV, demo_probe, write_demo_recording

    raw = work / f"own_{name}.raw"
    write_demo_recording(raw, duration=duration, n_channels=32, n_units=n_units, noise_uv=noise, seed=seed)
    gt = np.load(raw.with_name(f"{raw.stem}_ground_truth.npz"))
    from engine.ephys.io import RawRecording, RecordingParams
    from engine.ephys.phy import write_phy
    from engine.ephys.probe import Probe
    from engine.ephys.sorter import sort_recording

    _own_threads()
    start = time.perf_counter()
    params = RecordingParams(32, 30000.0, "int16", gain_uv=DEMO_GAIN_UV)
    result = sort_recording(RawRecording(raw, params), Probe(demo_probe(32), np.arange(32)))
    write_phy(result, work / f"own_{name}_phy", raw_path=raw, recording_params=params)
    wall = time.perf_counter() - start
    c = compare(gt["spike_times"], gt["spike_units"], result.spike_times, result.spike_units, 30000.0)
    s = c.summary()
    return {"case": f"own sim {name}", "sorter": "neurowb (ours)", "well": s["well_detected"], "mean_acc": s["mean_accuracy"],
            "units": s["n_sorted_units"], "fp_units": s["false_positive_units"], "redundant": s["redundant_units"],
            "wall_s": wall, "x_realtime": duration / wall, "stages": _stages(result)}


def locust_case(work: Path) -> tuple[list[dict], list[dict]]:
    from engine.ephys.qc import compute_metrics

    square = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])
    summary, units = [], []
    for trial in sorted(SHARED.glob("locust_trial_*.raw")):
        result, wall = _run_ours(trial, 4, 15000.0, square, "int16", work / f"{trial.stem}_phy", offset=2056.0)
        rows = compute_metrics(work / f"{trial.stem}_phy")
        duration = result.info["duration_s"]
        summary.append({"trial": trial.stem, "units": result.n_units, "spikes": len(result.spike_times), "wall_s": wall,
                        "x_realtime": duration / wall})
        for r in rows:
            units.append({"trial": trial.stem, **r})
    return summary, units


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of simulated recording (default 60)")
    parser.add_argument("--cases", default="easy,hard,own,locust")
    parser.add_argument("--no-peers", action="store_true", help="skip SpikeInterface's sorters")
    parser.add_argument("--peers", default="spykingcircus2,tridesclous2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cases = set(args.cases.split(","))
    print(machine_header("Spike sorting (benchmarks/sorting.py)"))
    print(f"- OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; SpikeInterface sorters with n_jobs=1; duration {args.duration:g} s\n")
    rows = []
    with tempfile.TemporaryDirectory(prefix="neurowb_bench_sort_") as tmp:
        work = Path(tmp)
        try:
            import spikeinterface  # noqa: F401

            have_si = True
        except ImportError:
            have_si = False
            print("SpikeInterface not installed: SpikeInterface cases skipped (pip install -e '.[bench]').")
        peers = [] if args.no_peers else [p for p in args.peers.split(",") if p]
        if have_si and "easy" in cases:
            rows += si_case("easy (16 units, 5 µV)", 16, 5.0, args.duration, args.seed, peers, work)
        if have_si and "hard" in cases:
            rows += si_case("hard (32 units, 10 µV)", 32, 10.0, args.duration, args.seed, peers, work)
        if have_si and "threads" in cases:
            print("Throughput, ours on the easy recording (best of 2, alternating):\n")
            markdown_table(threads_case(args.duration, args.seed, work), ["threads", "wall_s", "x_realtime", "stages"])
            print()
        if "own" in cases:
            rows.append(own_case("16 units, 5 µV", 16, 5.0, args.duration, args.seed, work))
            rows.append(own_case("32 units, 10 µV", 32, 10.0, args.duration, args.seed, work))
        if rows:
            markdown_table(rows, ["case", "sorter", "well", "mean_acc", "units", "fp_units", "redundant", "wall_s", "x_realtime", "stages"])
            print("\nstages: our seconds for preprocess / detect / cluster / deconvolve")
        if "locust" in cases:
            if not SHARED.is_dir():
                print(f"\n{SHARED} not found: locust case skipped.")
            else:
                summary, units = locust_case(work)
                print()
                markdown_table(summary, ["trial", "units", "spikes", "wall_s", "x_realtime"])
                print()
                markdown_table(units, ["trial", "cluster_id", "n_spikes", "firing_rate", "amplitude_uv", "snr", "isi_violations_ratio",
                                       "presence_ratio", "amplitude_cutoff", "l_ratio"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
