"""Simulated calcium imaging with ground truth (demo data, tests, benchmarks).

* :func:`demo_movie` — a two-photon movie of somata with neuropil and drift (described below);
* :func:`nuclear_patch` — a light-sheet patch of overlapping nuclear-localized cells, the
  setting of the fast-NMF paper (benchmarks/fast_nmf.py);
* :func:`calcium_traces` — fluorescence traces of the AR(1) model itself (deconvolution);
* :func:`recording` / :func:`write_recording` — the CNMF pipeline benchmark's movie: somata, AR(1)
  calcium, neuropil, drift, shot and read noise, optional rigid motion; ground truth; chunked.
  :func:`write_recording` also writes the independent simulators of :mod:`engine.calcium.simulators`
  (doughnut somata; dense touching somata), by ``kind``.

What demo_movie simulates
-------------------------
* **Somata**: ``n_neurons`` cells at random positions (at least ~1.6 radii apart, 8 px from
  the border), each an elliptical Gaussian-ish blob (a soft-edged disk: a generalised Gaussian
  of exponent 3) of radius 4–6 px, random elongation ≤ 1.3 and orientation, peak 1. Footprint
  values below 2 % of the peak are set to 0, so each footprint has compact support.
* **Activity**: Poisson spikes at 0.1–1 Hz per neuron (counts per frame); calcium follows
  AR(1) dynamics ``c[t] = g c[t-1] + a_k s[t]`` with ``g = exp(-1 / (tau fps))``,
  tau 0.6–1.5 s (GCaMP6s-like), and a per-spike amplitude ``a_k`` drawn log-normally
  (median 1, ~30 % spread).
* **Fluorescence** (photons per pixel per frame): ``background + Σ_i footprint_i ·
  (F0_i + dF_i · c_i(t))`` with resting brightness F0 40–80 and response dF 20–50 per unit
  calcium (single-spike ΔF/F ~0.15–0.4, GCaMP6-like). The neuropil/background is a smooth
  spatial pattern (mean ~60) scaled by a slow drift (bleaching-like exponential decay of
  ~10 % plus a slow ±5 % oscillation) and a weak shared neuropil activity term.
* **Noise**: Poisson shot noise on the expected photon count, then Gaussian read noise
  (σ 3) and a camera/PMT offset of 100.

Ground truth
------------
``footprints`` (n, h, w) float32 (peak 1), ``calcium`` (n, T) float32 (the AR(1) traces,
in spike-amplitude units), ``spikes`` (n, T) int32 spike counts per frame. The movie
is float32 with the offset included (≥ 0 in practice); :func:`write_demo_movie` rounds it to
uint16.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

DARK_OFFSET = 100.0
READ_NOISE = 3.0


def _place_centres(n: int, height: int, width: int, min_dist: float, rng: np.random.Generator) -> np.ndarray:
    margin = min(8.0, height / 4, width / 4)
    centres: list[np.ndarray] = []
    tries = 0
    while len(centres) < n and tries < 20000:
        tries += 1
        p = np.array([rng.uniform(margin, height - 1 - margin), rng.uniform(margin, width - 1 - margin)])
        if all(np.hypot(*(p - q)) >= min_dist for q in centres):
            centres.append(p)
        elif tries > 5000:  # crowded field: relax the spacing
            min_dist *= 0.98
    return np.array(centres).reshape(-1, 2)


def _smooth_field(height: int, width: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal((height, width)), scale, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def demo_movie(
    n_frames: int = 600,
    height: int = 128,
    width: int = 128,
    n_neurons: int = 30,
    fps: float = 30.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Simulate a movie: ``(movie (T,h,w) float32, footprints (n,h,w), calcium (n,T), spikes (n,T))``."""
    if n_frames < 2 or height < 16 or width < 16 or n_neurons < 0 or fps <= 0:
        raise ValueError("demo_movie needs n_frames >= 2, height and width >= 16, n_neurons >= 0, fps > 0")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)

    radii = rng.uniform(4.0, 6.0, n_neurons)
    centres = _place_centres(n_neurons, height, width, 1.6 * 5.0, rng)
    n = len(centres)
    footprints = np.zeros((n, height, width), dtype=np.float64)
    for i, (cy, cx) in enumerate(centres):
        r = radii[i]
        elong = rng.uniform(1.0, 1.3)
        theta = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / (r * np.sqrt(elong))
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) * np.sqrt(elong) / r
        f = np.exp(-((u**2 + v**2) ** 1.5) * 1.2)  # soft disk, ~0.3 at the nominal radius
        f[f < 0.02] = 0.0
        footprints[i] = f

    rates = rng.uniform(0.1, 1.0, n)
    spikes = rng.poisson(rates[:, None] / fps, size=(n, n_frames)).astype(np.int32)
    taus = rng.uniform(0.6, 1.5, n)
    g = np.exp(-1.0 / (taus * fps))
    amplitudes = np.exp(rng.normal(0.0, 0.3, size=(n, n_frames))) * spikes  # per-spike amplitude
    calcium = np.zeros((n, n_frames), dtype=np.float64)
    for t in range(n_frames):
        prev = calcium[:, t - 1] if t else 0.0
        calcium[:, t] = g * prev + amplitudes[:, t]

    f0 = rng.uniform(40.0, 80.0, n)
    df = rng.uniform(20.0, 50.0, n)

    tt = np.arange(n_frames) / fps
    duration = n_frames / fps
    drift = (0.9 + 0.1 * np.exp(-tt / max(duration / 2, 1e-3))) * (1 + 0.05 * np.sin(2 * np.pi * tt / max(duration, 1e-3) + rng.uniform(0, 6)))
    neuropil_activity = np.convolve(rng.standard_normal(n_frames), np.ones(int(max(fps, 1))) / max(fps, 1), mode="same")
    background = 60.0 * (1.0 + 0.25 * _smooth_field(height, width, 12.0, rng))
    background = np.clip(background, 10.0, None)
    neuropil_pattern = np.clip(1.0 + 0.5 * _smooth_field(height, width, 3.0, rng), 0.0, None)

    flat_fp = footprints.reshape(n, -1)
    expected = (drift[:, None] * background.reshape(1, -1)
                + 3.0 * neuropil_activity[:, None] * neuropil_pattern.reshape(1, -1))
    expected += (f0[None, :] + df[None, :] * calcium.T) @ flat_fp
    expected = np.clip(expected, 0.0, None)
    movie = rng.poisson(expected).astype(np.float32)
    movie += rng.normal(0.0, READ_NOISE, size=movie.shape).astype(np.float32)
    movie += np.float32(DARK_OFFSET)
    return (
        movie.reshape(n_frames, height, width),
        footprints.astype(np.float32),
        calcium.astype(np.float32),
        spikes,
    )


def write_demo_movie(path: str | os.PathLike, **kwargs) -> Path:
    """Write the demo movie as a multi-page uint16 ImageJ TIFF (fps in its metadata) plus
    ``<stem>_ground_truth.npz`` (footprints, calcium, spikes, fps). Returns the TIFF path.

    Keyword arguments go to :func:`demo_movie`.
    """
    import tifffile

    from engine.storage import atomic_write_bytes

    path = Path(path)
    fps = float(kwargs.get("fps", 30.0))
    movie, footprints, calcium, spikes = demo_movie(**kwargs)
    data = np.clip(np.round(movie), 0, 65535).astype(np.uint16)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data, imagej=True, metadata={"axes": "TYX", "fps": fps, "finterval": 1.0 / fps})
    atomic_write_bytes(path, buffer.getvalue())
    gt = io.BytesIO()
    np.savez_compressed(gt, footprints=footprints, calcium=calcium, spikes=spikes, fps=np.float64(fps))
    atomic_write_bytes(path.with_name(f"{path.stem}_ground_truth.npz"), gt.getvalue())
    return path


def calcium_traces(
    n_traces: int = 1,
    n_frames: int = 3000,
    fps: float = 30.0,
    tau: tuple[float, float] = (0.5, 1.5),
    rate: tuple[float, float] = (0.2, 1.0),
    snr: tuple[float, float] = (3.0, 8.0),
    baseline: tuple[float, float] = (0.0, 2.0),
    seed: int = 0,
) -> dict:
    """Fluorescence traces of the AR(1) model deconvolution assumes, with their ground truth.

    Per trace: Poisson spikes at ``rate`` Hz (uniform in the range), per-spike amplitude
    log-normal (median 1, ~30 % spread), calcium ``c[t] = g c[t-1] + s[t]`` with
    ``g = exp(-1 / (tau fps))``, a constant baseline ``b`` and white Gaussian noise of standard
    deviation ``sigma = 1 / snr`` (snr = median spike amplitude over noise). Returns a dict of
    arrays: ``y`` (n, T) the traces, ``c`` calcium, ``s`` spike amplitudes per frame,
    ``spikes`` spike counts, and per trace ``g``, ``sigma``, ``b``.
    """
    if n_traces < 1 or n_frames < 2 or fps <= 0:
        raise ValueError("calcium_traces needs n_traces >= 1, n_frames >= 2 and fps > 0")
    rng = np.random.default_rng(seed)
    g = np.exp(-1.0 / (rng.uniform(*tau, n_traces) * fps))
    rates = rng.uniform(*rate, n_traces)
    spikes = rng.poisson(rates[:, None] / fps, size=(n_traces, n_frames)).astype(np.int32)
    amplitude = np.exp(rng.normal(0.0, 0.3, size=spikes.shape)) * spikes
    from scipy.signal import lfilter

    calcium = np.stack([lfilter([1.0], [1.0, -gi], a) for gi, a in zip(g, amplitude)])
    sigma = 1.0 / rng.uniform(*snr, n_traces)
    b = rng.uniform(*baseline, n_traces)
    y = b[:, None] + calcium + sigma[:, None] * rng.standard_normal(calcium.shape)
    return {"y": y, "c": calcium, "s": amplitude, "spikes": spikes, "g": g, "sigma": sigma, "b": b}


def nuclear_patch(
    height: int = 100,
    width: int = 100,
    n_frames: int = 3000,
    n_neurons: int = 40,
    fps: float = 10.0,
    min_distance: float = 4.0,
    noise: float = 4.0,
    seed: int = 0,
) -> dict:
    """A patch of a light-sheet movie of nuclear-localized GCaMP (the fast-NMF paper's setting).

    What it simulates
    -----------------
    * **Nuclei**: ``n_neurons`` round-ish Gaussian blobs (σ 1.4–2.2 px, elongation ≤ 1.2, peak 1,
      cut below 5 % of the peak: 7–11 px across), centers uniformly at random but at least
      ``min_distance`` px apart (4 px by default, so neighbours overlap), 3 px from the border.
    * **Activity** of neuron i: ``F0_i + dF_i c_i(t)``, F0 20–40 (nuclei are bright at rest),
      dF 15–40 per spike, calcium AR(1) ``c[t] = g c[t-1] + s[t]`` with Poisson spikes at
      0.05–0.5 Hz, log-normal amplitudes (median 1), tau 0.5–1.5 s (``g = exp(-1/(tau fps))``).
    * **Background**: rank 1, a smooth spatial pattern (mean 60, ±25 %) times a slow drift in
      time (±10 %), the model's extra component.
    * **Noise**: Poisson shot noise on the expected intensity plus Gaussian read noise of
      standard deviation ``noise``; no offset, so the data are non-negative in practice.

    Returns a dict: ``Y`` (height, width, T) float32, pixel-major as :func:`engine.calcium.nmf.hals`
    takes it; ground truth ``footprints`` (n, h, w), ``activity`` (n, T) = F0 + dF c (the
    temporal components), ``calcium``, ``spikes``, ``centers`` (n, 2) as (row, col),
    ``background_image`` (h, w), ``background_trace`` (T,), and ``noise_variance`` (the mean
    expected intensity + noise², i.e. the MSE of the true model: what a fit should approach).
    """
    if n_frames < 2 or height < 8 or width < 8 or n_neurons < 1 or fps <= 0:
        raise ValueError("nuclear_patch needs n_frames >= 2, height and width >= 8, n_neurons >= 1, fps > 0")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    margin = 3.0
    centres: list[np.ndarray] = []
    tries = 0
    dist = float(min_distance)
    while len(centres) < n_neurons:
        tries += 1
        p = np.array([rng.uniform(margin, height - 1 - margin), rng.uniform(margin, width - 1 - margin)])
        if all(np.hypot(*(p - q)) >= dist for q in centres):
            centres.append(p)
        elif tries % 2000 == 0:  # crowded: relax the spacing rather than loop forever
            dist *= 0.95
    centers = np.array(centres)
    n = len(centers)
    footprints = np.zeros((n, height, width))
    for i, (cy, cx) in enumerate(centers):
        s = rng.uniform(1.4, 2.2)
        elong = rng.uniform(1.0, 1.2)
        theta = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / (s * np.sqrt(elong))
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) * np.sqrt(elong) / s
        f = np.exp(-0.5 * (u**2 + v**2))
        f[f < 0.05] = 0.0
        footprints[i] = f

    from scipy.signal import lfilter

    rates = rng.uniform(0.05, 0.5, n)
    spikes = rng.poisson(rates[:, None] / fps, size=(n, n_frames)).astype(np.int32)
    amplitude = np.exp(rng.normal(0.0, 0.3, size=spikes.shape)) * spikes
    g = np.exp(-1.0 / (rng.uniform(0.5, 1.5, n) * fps))
    calcium = np.stack([lfilter([1.0], [1.0, -gi], a) for gi, a in zip(g, amplitude)])
    activity = rng.uniform(20.0, 40.0, n)[:, None] + rng.uniform(15.0, 40.0, n)[:, None] * calcium

    background_image = 60.0 * (1.0 + 0.25 * _smooth_field(height, width, 15.0, rng))
    background_image = np.clip(background_image, 10.0, None)
    tt = np.arange(n_frames) / n_frames
    background_trace = 1.0 + 0.1 * np.sin(2 * np.pi * (tt + rng.uniform())) * np.exp(-tt)

    expected = footprints.reshape(n, -1).T @ activity + background_image.reshape(-1, 1) * background_trace[None, :]
    Y = rng.poisson(np.clip(expected, 0.0, None)).astype(np.float32)
    Y += rng.normal(0.0, noise, size=Y.shape).astype(np.float32)
    return {
        "Y": Y.reshape(height, width, n_frames),
        "footprints": footprints.astype(np.float32),
        "activity": activity.astype(np.float32),
        "calcium": calcium.astype(np.float32),
        "spikes": spikes,
        "centers": centers,
        "background_image": background_image.astype(np.float32),
        "background_trace": background_trace.astype(np.float32),
        "noise_variance": float(expected.mean() + noise**2),
    }


def recording(
    n_frames: int = 3000,
    height: int = 128,
    width: int = 128,
    n_cells: int = 50,
    fps: float = 30.0,
    motion: float = 0.0,
    seed: int = 0,
    out: np.ndarray | None = None,
    chunk_frames: int = 500,
) -> dict:
    """A two-photon recording with ground truth, for the CNMF pipeline benchmark and tests.

    What it simulates
    -----------------
    * **Somata**: ``n_cells`` soft-edged elliptical disks (as :func:`demo_movie`: radius 4–6 px,
      i.e. 10–15 µm cells at ~1.2 µm/px, elongation ≤ 1.3, peak 1, cut below 2 %), centers at
      least 1.6 × 5 px apart (neighbours may touch and overlap slightly), 8 px from the border.
    * **Calcium**: AR(1), ``c[t] = g c[t-1] + a s[t]``, Poisson spikes at 0.1–1 Hz per cell,
      log-normal per-spike amplitudes (median 1, ~30 % spread), tau 0.6–1.5 s (``g = exp(-1/(tau fps))``).
    * **Fluorescence** (photons/pixel/frame): each cell ``F0 + dF c(t)`` with F0 40–80 and dF 20–50
      (single-spike ΔF/F 0.15–0.4, GCaMP6-like), on a **neuropil** that is a smooth pattern (mean 60,
      ±25 %) times a **slow baseline drift** (bleaching-like −10 % exponential and a ±5 % oscillation),
      plus a weak shared neuropil activity (3 photons × a 1 s-smoothed random signal × a second pattern).
    * **Motion** (``motion`` > 0 px): rigid, a smooth random walk (~2 s correlation) scaled to an RMS of
      ``motion`` px per axis plus 0.1 × ``motion`` px jitter per frame, applied to the noiseless frames
      (subpixel Fourier shift), so noise is not interpolated.
    * **Noise**: Poisson shot noise on the expected photons, Gaussian read noise σ 3 and an offset of 100.

    Frames are generated in chunks of ``chunk_frames`` and written into ``out`` (e.g. a ``.npy``
    memmap, frames × height × width float32) when given, so a movie larger than memory can be made.

    Returns a dict: ``movie`` (``out`` or a new float32 array), ground truth ``footprints`` (n, h, w)
    float32 (peak 1), ``calcium`` (n, T) float32, ``spikes`` (n, T) int32, ``centers`` (n, 2) (row, col),
    ``shifts`` (T, 2) (dy, dx) of each frame relative to the motionless field, and ``fps``.
    """
    if n_frames < 2 or height < 24 or width < 24 or n_cells < 0 or fps <= 0:
        raise ValueError("recording needs n_frames >= 2, height and width >= 24, n_cells >= 0, fps > 0")
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    centres = _place_centres(n_cells, height, width, 1.6 * 5.0, rng)
    n = len(centres)
    footprints = np.zeros((n, height, width), dtype=np.float32)
    for i, (cy, cx) in enumerate(centres):
        r = rng.uniform(4.0, 6.0)
        elong = rng.uniform(1.0, 1.3)
        theta = rng.uniform(0, np.pi)
        y0, y1 = int(max(cy - 12, 0)), int(min(cy + 13, height))
        x0, x1 = int(max(cx - 12, 0)), int(min(cx + 13, width))
        dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / (r * np.sqrt(elong))
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) * np.sqrt(elong) / r
        f = np.exp(-((u**2 + v**2) ** 1.5) * 1.2)
        f[f < 0.02] = 0.0
        footprints[i, y0:y1, x0:x1] = f

    rates = rng.uniform(0.1, 1.0, n)
    spikes = rng.poisson(rates[:, None] / fps, size=(n, n_frames)).astype(np.int32)
    g = np.exp(-1.0 / (rng.uniform(0.6, 1.5, n) * fps))
    amplitude = np.exp(rng.normal(0.0, 0.3, size=(n, n_frames))) * spikes
    calcium = np.stack([lfilter([1.0], [1.0, -gi], a) for gi, a in zip(g, amplitude)]) if n else np.zeros((0, n_frames))
    f0 = rng.uniform(40.0, 80.0, n)
    df = rng.uniform(20.0, 50.0, n)

    tt = np.arange(n_frames) / fps
    duration = n_frames / fps
    drift = (0.9 + 0.1 * np.exp(-tt / max(duration / 2, 1e-3))) * (1 + 0.05 * np.sin(2 * np.pi * tt / max(duration, 1e-3) + rng.uniform(0, 6)))
    width_s = int(max(fps, 1))
    neuropil_activity = np.convolve(rng.standard_normal(n_frames), np.ones(width_s) / width_s, mode="same")
    background = np.clip(60.0 * (1.0 + 0.25 * _smooth_field(height, width, 12.0, rng)), 10.0, None).astype(np.float32)
    neuropil_pattern = np.clip(1.0 + 0.5 * _smooth_field(height, width, 3.0, rng), 0.0, None).astype(np.float32)

    shifts = np.zeros((n_frames, 2), dtype=np.float32)
    if motion > 0:
        walk = lfilter([1.0], [1.0, -np.exp(-1.0 / (2.0 * fps))], rng.standard_normal((2, n_frames)), axis=1).T
        walk = (walk - walk.mean(axis=0)) / (walk.std(axis=0) + 1e-12)
        shifts = (motion * walk + 0.1 * motion * rng.standard_normal((n_frames, 2))).astype(np.float32)

    movie = out if out is not None else np.empty((n_frames, height, width), dtype=np.float32)
    if tuple(movie.shape) != (n_frames, height, width):
        raise ValueError(f"out has shape {movie.shape}, expected {(n_frames, height, width)}")
    flat_fp = footprints.reshape(n, -1)
    for start in range(0, n_frames, chunk_frames):
        stop = min(start + chunk_frames, n_frames)
        expected = (drift[start:stop, None, None] * background[None]
                    + 3.0 * neuropil_activity[start:stop, None, None] * neuropil_pattern[None])  # fmt: skip
        cells = (f0[None, :] + df[None, :] * calcium[:, start:stop].T) @ flat_fp
        expected = expected + cells.reshape(-1, height, width)
        if motion > 0:
            from engine.calcium.motion import shift_frames

            expected = shift_frames(expected.astype(np.float32), shifts[start:stop])
        frames = rng.poisson(np.clip(expected, 0.0, None)).astype(np.float32)
        frames += rng.normal(0.0, READ_NOISE, size=frames.shape).astype(np.float32)
        frames += np.float32(DARK_OFFSET)
        movie[start:stop] = frames
    return {
        "movie": movie, "footprints": footprints, "calcium": calcium.astype(np.float32), "spikes": spikes,
        "centers": centres, "shifts": shifts, "fps": float(fps),
    }  # fmt: skip


def simulator(kind: str):
    """The movie simulator called ``kind``: "recording" (:func:`recording`), "doughnut" or "dense"
    (:mod:`engine.calcium.simulators`, written apart from this module)."""
    from engine.calcium import simulators

    kinds = {"recording": recording, "doughnut": simulators.doughnut_recording, "dense": simulators.dense_recording}
    if kind not in kinds:
        from engine.errors import InputError

        raise InputError(f"Unknown simulator {kind!r}: use one of {', '.join(kinds)}.")
    return kinds[kind]


def write_recording(directory: str | os.PathLike, kind: str = "recording", **kwargs) -> tuple[Path, Path]:
    """Simulate a movie (:func:`simulator` ``kind``, keyword arguments passed on) and write ``movie.tif``
    (uint16 ImageJ TIFF, fps in its metadata) and ``ground_truth.npz`` (footprints, calcium, spikes,
    centers, shifts, fps, and whatever else that simulator returns) into ``directory``.
    Returns the two paths."""
    import tifffile

    from engine.storage import atomic_write_bytes

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sim = simulator(kind)(**kwargs)
    fps = sim["fps"]
    data = np.clip(np.round(sim["movie"]), 0, 65535).astype(np.uint16)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data, imagej=True, metadata={"axes": "TYX", "fps": fps, "finterval": 1.0 / fps})
    movie_path = atomic_write_bytes(directory / "movie.tif", buffer.getvalue())
    gt = io.BytesIO()
    np.savez_compressed(gt, **{k: np.asarray(v) for k, v in sim.items() if k != "movie"})
    truth_path = atomic_write_bytes(directory / "ground_truth.npz", gt.getvalue())
    return movie_path, truth_path
