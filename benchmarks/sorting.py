"""Spike sorting benchmark: our deconvolution sorter against ground truth and SpikeInterface's sorters.

Run: ``OMP_NUM_THREADS=1 python -m benchmarks.sorting [--duration 60] [--cases easy,hard,own,locust,threads,drift-zigzag-128,...] [--no-peers]``

Cases
-----
* **easy** — SpikeInterface ``generate_ground_truth_recording``: 32 channels, 30 kHz, 16 units,
  noise 5 µV, 2-column probe at 20 µm pitch (SpikeInterface's default generated probe).
* **hard** — the same with 32 units and noise 10 µV.
  Both are saved once as a binary folder; every sorter reads that same file. Ours is timed end to
  end (open raw file → filter/whiten → detect → cluster → deconvolve → Phy folder written), in a fresh
  process whose peak memory is reported (``peak_anon_mb``: its own memory; ``peak_rss_mb``: RSS, which also
  counts the pages of the memory-mapped whitened file read so far);
  peers through ``run_sorter`` (their own preprocessing and output included). Scores with
  ``compare_sorter_to_ground_truth(delta_time=0.4 ms)``: accuracy = tp/(tp+fn+fp) per ground-truth
  unit, well detected = accuracy ≥ 0.8, false-positive units = best agreement < 0.2.
* **own** — our simulator (engine/ephys/synth.py), scored with engine/ephys/groundtruth.py (same
  definitions). Note: it places units at random heights with similar waveforms, so some pairs have
  template cosine ≥ 0.99 and differ only in amplitude — harder than SpikeInterface's generator.
* **drift-*** — SpikeInterface ``generate_drifting_recording`` (its ellipsoid templates, 2–8 Hz units,
  noise 6–8 µV) on a Neuropixels-like probe: four staggered columns 16 µm apart, contacts every 40 µm in
  a column shifted by 20 µm in alternate columns (20 µm rows, as Neuropixels 1.0), 128 or 384 sites:
  ``drift-zigzag`` rigid ±25 µm reversing every minute (period 120 s); ``drift-ramp`` a slow rigid ramp
  (60 µm over the recording); ``drift-nonrigid`` zigzag ±30 µm scaled from 20 % at one end of the probe
  to 100 % at the other. Rows (every SpikeInterface case): ours with its default (``motion='auto'``), ours
  with ``motion='off'`` (the sorter before drift correction), and the peers on the same saved file, scored as
  above. Kilosort 4 (``--peers ...,kilosort4``) needs the ``kilosort`` package where the benchmark runs; it is
  kept out of our environment (e.g. a separate venv that sees ours through a ``.pth`` file), on the CPU.
* **throughput-384** — ours on 384 × 30 kHz int16 files of each ``--throughput-durations`` (the drift-zigzag
  384-site recording repeated to length): × real time, and peak memory of the sorting process (every sort of ours
  runs in a fresh process: its own peak anonymous memory and its peak RSS, which also counts the pages of the
  memory-mapped whitened file); an hour is extrapolated from the two longest.
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
from types import SimpleNamespace

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
    os.sync()  # finish writing it first: the sorter that read it first (ours) filtered 1.2-2.7x slower than the next one
    return load(folder / "recording") if saved is None else saved, gt


def _own_threads() -> None:
    """Reset torch/BLAS pools to OMP_NUM_THREADS before each of our runs: SpikeInterface's sorters
    change them in this process, and more threads than free cores made our next run 3-4x slower."""
    from engine.device import configure_threads

    configure_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def _run_ours(raw_path: Path, n_channels: int, fs: float, positions: np.ndarray, dtype: str, out: Path, offset: float = 0.0,
              motion: str = "auto", gain: float = 1.0) -> tuple[SimpleNamespace, float]:
    """Sort in a fresh process, so its peak memory is the sort's alone (not the generator's or the peers'):
    (result with spike_times, spike_units, n_units, info, peak_rss_mb, peak_anon_mb; wall seconds). The time
    is taken in that process around the sort, after its imports (as in this one, where they are loaded)."""
    import json
    import subprocess

    job = dict(raw=str(raw_path), n_channels=n_channels, fs=fs, dtype=dtype, out=str(out), offset=offset, motion=motion, gain=gain,
               positions=np.asarray(positions, float).tolist())
    proc = subprocess.run([sys.executable, "-c", "from benchmarks.sorting import _sort_child; _sort_child()", json.dumps(job)],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if proc.returncode:
        raise RuntimeError(f"our sort failed: {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    spikes = np.load(out.with_name(f"{out.name}_spikes.npz"))
    result = SimpleNamespace(spike_times=spikes["times"], spike_units=spikes["units"], n_units=report["n_units"], info=report["info"],
                             peak_rss_mb=report["peak_rss_mb"], peak_anon_mb=report["peak_anon_mb"])
    return result, report["wall_s"]


def _sort_child() -> None:
    """The child of :func:`_run_ours`: sorts the job in ``sys.argv[1]`` (JSON), saves the spikes beside the Phy
    folder (``<folder>_spikes.npz``) and prints one JSON line. Peak memory two ways: the peak RSS (``ru_maxrss``: it also counts the pages of
    the memory-mapped whitened file that were read, which the kernel drops under pressure and which grow with the
    recording's length up to the free RAM) and the peak of the process's own (anonymous) memory, sampled every 20 ms."""
    import json
    import resource
    import threading

    import scipy.signal  # noqa: F401 -- loaded before the clock starts, as in the benchmark's own process
    import torch  # noqa: F401

    import engine.ephys.sorter  # noqa: F401
    from engine.progress import Progress

    job = json.loads(sys.argv[1])
    out = Path(job["out"])
    peak_anon = [0]
    stage = ["Starting"]  # the sort's current stage (its progress message up to the first colon)
    per_stage: dict[str, int] = {}  # peak own memory (kB) seen during each stage: where memory goes
    done = threading.Event()

    def sample_anon() -> None:
        while not done.wait(0.02):
            with open("/proc/self/status") as f:
                kb = next((int(line.split()[1]) for line in f if line.startswith("RssAnon:")), 0)
            peak_anon[0] = max(peak_anon[0], kb)
            per_stage[stage[0]] = max(per_stage.get(stage[0], 0), kb)

    def on_progress(_fraction: float, message: str) -> None:
        stage[0] = message.split(":")[0] or stage[0]

    sampler = threading.Thread(target=sample_anon, daemon=True)
    sampler.start()
    _own_threads()
    start = time.perf_counter()
    result = _sort(Path(job["raw"]), job["n_channels"], job["fs"], np.array(job["positions"]), job["dtype"], out, job["offset"],
                   job["motion"], job["gain"], progress=Progress(on_progress, min_interval=0.0))
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    np.savez(out.with_name(f"{out.name}_spikes.npz"), times=result.spike_times, units=result.spike_units)
    info = {k: v for k, v in result.info.items() if k != "params"}
    info["peak_anon_mb_by_stage"] = {k: round(v / 1024) for k, v in per_stage.items()}
    print(json.dumps({"wall_s": wall, "n_units": result.n_units, "info": info, "peak_anon_mb": peak_anon[0] / 1024,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, default=str))


def _sort(raw_path: Path, n_channels: int, fs: float, positions: np.ndarray, dtype: str, out: Path, offset: float = 0.0,
          motion: str = "auto", gain: float = 1.0, progress=None):
    """Raw file → Phy folder with the threads as they are set."""
    from engine.ephys.io import RawRecording, RecordingParams
    from engine.ephys.phy import write_phy
    from engine.ephys.probe import Probe
    from engine.ephys.sorter import SortParams, sort_recording

    params = RecordingParams(n_channels=n_channels, sample_rate=fs, dtype=dtype, gain_uv=gain, offset=offset)
    result = sort_recording(RawRecording(raw_path, params), Probe(positions, np.arange(n_channels)), SortParams(motion=motion),
                            progress=progress)
    write_phy(result, out, raw_path=raw_path, recording_params=params)
    return result


def _stages(result) -> str:
    """Seconds per stage: preprocess / detect / drift / cluster / deconvolve."""
    i = result.info
    return "/".join(f"{i.get(k, 0.0):.1f}" for k in ("preprocess_s", "detect_s", "drift_s", "cluster_s", "deconvolve_s"))


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


def _drifting_recording(kind: str, n_sites: int, n_units: int, duration: float, seed: int, folder: Path):
    """A SpikeInterface drifting ground truth (see the module docstring), saved as a binary folder."""
    from probeinterface import generate_multi_columns_probe
    from spikeinterface.core import load
    from spikeinterface.generation import generate_drifting_recording

    probe = generate_multi_columns_probe(num_columns=4, num_contact_per_column=n_sites // 4, xpitch=16, ypitch=40,
                                         y_shift_per_column=[20, 0, 20, 0], contact_shapes="square", contact_shape_params={"width": 12})
    probe.set_device_channel_indices(np.arange(n_sites))
    zigzag = dict(drift_mode="zigzag", non_rigid_gradient=None, t_start_drift=0.0, t_end_drift=None, period_s=120.0)
    motion, amplitude = {"zigzag": (zigzag, 25.0), "ramp": ({**zigzag, "period_s": 4 * duration}, 30.0),
                         "nonrigid": ({**zigzag, "non_rigid_gradient": 0.2}, 30.0)}[kind]
    _static, rec, gt = generate_drifting_recording(
        num_units=n_units, duration=duration, probe=probe, seed=seed,
        generate_displacement_vector_kwargs=dict(displacement_sampling_frequency=5.0, drift_start_um=[0, amplitude],
                                                 drift_stop_um=[0, -amplitude], drift_step_um=1, motion_list=[motion]))
    saved = rec.save(folder=folder / "recording", format="binary", n_jobs=1, progress_bar=False, verbose=False)
    os.sync()  # finish writing it first: the sorter that read it first (ours) filtered 1.2-2.7x slower than the next one
    return load(folder / "recording") if saved is None else saved, gt


def si_case(name: str, n_units: int, noise: float, duration: float, seed: int, peers: list[str], work: Path,
            drift: tuple[str, int] | None = None) -> list[dict]:
    import spikeinterface.full as si
    from spikeinterface.core import NumpySorting

    si.set_global_job_kwargs(n_jobs=1, progress_bar=False)
    folder = work / name.split()[0]
    if drift is None:
        rec, gt = _si_recording(n_units, noise, duration, seed, folder)
    else:
        rec, gt = _drifting_recording(drift[0], drift[1], n_units, duration, seed, folder)
    raw = next((folder / "recording").glob("traces_cached_seg0.raw"))
    positions = rec.get_probe().contact_positions
    rows = []

    def ours(motion: str) -> None:
        result, wall = _run_ours(raw, rec.get_num_channels(), 30000.0, positions, str(rec.get_dtype()), folder / f"ours_{motion}_phy",
                                 motion=motion)
        found = NumpySorting.from_samples_and_labels([result.spike_times], [result.spike_units], 30000.0)
        label = "neurowb (ours)" if motion == "auto" else "neurowb, motion off"
        rows.append({"case": name, "sorter": label, **_score_si(gt, found), "wall_s": wall, "x_realtime": duration / wall,
                     "stages": _stages(result), "drift": result.info.get("drift_correction"), "peak_anon_mb": result.peak_anon_mb,
                     "peak_rss_mb": result.peak_rss_mb})
        print(f"{name}: ours ({motion}) done in {wall:.1f} s: {rows[-1]}", file=sys.stderr, flush=True)  # a long run's partial results

    def peer(name_: str) -> None:
        start = time.perf_counter()
        try:
            extra = {"torch_device": "cpu"} if name_ == "kilosort4" else {}  # Kilosort 4 runs where it is installed (its own venv)
            sorting = si.run_sorter(name_, rec, folder=folder / name_, remove_existing_folder=True, verbose=False, **extra)
        except Exception as exc:  # a peer failing must not sink the benchmark
            rows.append({"case": name, "sorter": name_, "well": f"failed: {type(exc).__name__}: {str(exc)[:80]}"})
            return
        wall = time.perf_counter() - start
        rows.append({"case": name, "sorter": name_, **_score_si(gt, sorting), "wall_s": wall, "x_realtime": duration / wall})
        print(f"{name}: {name_} done in {wall:.1f} s: {rows[-1]}", file=sys.stderr, flush=True)

    # ours, the first peer, ours with motion off (the sorter before drift correction), the other peers
    ours("auto")
    for p in peers[:1]:
        peer(p)
    ours("off")
    for p in peers[1:]:
        peer(p)
    return rows


def throughput_case(durations: list[float], base_duration: float, seed: int, work: Path) -> list[dict]:
    """Ours on 384 × 30 kHz int16 files of each duration (the drift-zigzag 384-site recording of ``base_duration`` s,
    at 0.25 µV per count, repeated to length: the same spikes and drift again, enough for time and memory), each
    sorted in a fresh process with the defaults (non-rigid drift correction)."""
    folder = work / "throughput-384"
    rec, _gt = _drifting_recording("zigzag", 384, 100, base_duration, seed, folder)
    base = np.memmap(next((folder / "recording").glob("traces_cached_seg0.raw")), dtype=np.float32, mode="r").reshape(-1, 384)
    positions = rec.get_probe().contact_positions
    rows = []
    for duration in durations:
        raw = folder / f"tiled_{duration:g}s.raw"
        n = int(duration * 30000)
        with open(raw, "wb") as f:
            for a in range(0, n, len(base)):
                f.write(np.clip(np.round(base[: min(len(base), n - a)] / 0.25), -32768, 32767).astype(np.int16).tobytes())
        os.sync()
        result, wall = _run_ours(raw, 384, 30000.0, positions, "int16", folder / f"phy_{duration:g}s", gain=0.25)
        rows.append({"duration_s": duration, "wall_s": wall, "x_realtime": duration / wall, "stages": _stages(result),
                     "units": result.n_units, "spikes": len(result.spike_times), "peak_anon_mb": result.peak_anon_mb,
                     "peak_rss_mb": result.peak_rss_mb,
                     "peak_anon_mb_by_stage": " / ".join(f"{k} {v}" for k, v in result.info.get("peak_anon_mb_by_stage", {}).items())})
        print(f"throughput-384 {duration:g} s: {rows[-1]}", file=sys.stderr, flush=True)
        raw.unlink()
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
    parser.add_argument("--duration-384", type=float, default=30.0, help="seconds of the 384-site drift cases (default 30)")
    parser.add_argument("--throughput-durations", default="30,120", help="seconds of the throughput-384 files (default 30,120)")
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
        for case in sorted(c for c in cases if have_si and c.startswith("drift-")):  # drift-zigzag-128, drift-ramp-128, drift-nonrigid-384, ...
            _, kind, sites = case.split("-")
            n_units = 40 if int(sites) <= 128 else 100
            duration = args.duration if int(sites) <= 128 else args.duration_384
            rows += si_case(f"{case} ({n_units} units, {duration:g} s)", n_units, 0.0, duration, args.seed, peers, work, drift=(kind, int(sites)))
        if have_si and "throughput-384" in cases:
            durations = [float(v) for v in args.throughput_durations.split(",")]
            print("Throughput and peak memory, ours on 384 × 30 kHz int16 (each duration sorted in a fresh process):\n")
            tp = throughput_case(durations, args.duration_384, args.seed, work)
            markdown_table(tp, ["duration_s", "wall_s", "x_realtime", "stages", "units", "spikes", "peak_anon_mb", "peak_rss_mb",
                                "peak_anon_mb_by_stage"])
            if len(tp) >= 2:  # a fixed cost plus a cost per recorded second, from the two longest
                (d0, w0), (d1, w1) = [(r["duration_s"], r["wall_s"]) for r in tp[-2:]]
                hour = w1 + (w1 - w0) / (d1 - d0) * (3600 - d1)
                print(f"\nan hour extrapolated: {hour / 60:.0f} min ({3600 / hour:.2f}x real time); whitened scratch file "
                      f"(int16) {3600 * 30000 * 384 * 2 / 1e9:.0f} GB")
            print()
        if have_si and "threads" in cases:
            print("Throughput, ours on the easy recording (best of 2, alternating):\n")
            markdown_table(threads_case(args.duration, args.seed, work), ["threads", "wall_s", "x_realtime", "stages"])
            print()
        if "own" in cases:
            rows.append(own_case("16 units, 5 µV", 16, 5.0, args.duration, args.seed, work))
            rows.append(own_case("32 units, 10 µV", 32, 10.0, args.duration, args.seed, work))
        if rows:
            markdown_table(rows, ["case", "sorter", "well", "mean_acc", "units", "fp_units", "redundant", "wall_s", "x_realtime", "stages", "drift",
                                  "peak_anon_mb", "peak_rss_mb"])
            print("\nstages: our seconds for preprocess / detect / drift (estimate, correct, detect again) / cluster / deconvolve; "
                  "peak_anon_mb: our sort's peak own memory, peak_rss_mb: its peak RSS with the mapped whitened file's pages (MiB)")
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
