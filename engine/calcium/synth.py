"""Simulated two-photon calcium-imaging movie with ground truth (demo data and tests).

What it simulates
-----------------
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
