"""Simulated extracellular probe recording with ground-truth spikes (demo data and tests).

What it simulates
-----------------
* **Probe**: ``n_channels`` sites in two staggered columns 32 µm apart, 20 µm vertical pitch
  (a Neuropixels/Cambridge-style shank); :func:`demo_probe` gives the positions.
* **Units**: ``n_units`` neurons at random heights along the probe, 10–60 µm from the shank.
  Each has a biphasic extracellular spike — a sharp negative trough (0.12–0.20 ms wide)
  followed ~0.35–0.6 ms later by a broader positive repolarisation peak, 1.5–2 ms in all —
  scaled on each site by ``exp(-distance / 28 µm)`` so it covers a few neighbouring sites,
  with a propagation delay of up to ~0.1 ms across the footprint. Peak amplitudes on the
  best site are 60–250 µV (negative).
* **Firing**: Poisson spike trains, 2–20 Hz per unit, with a 2 ms absolute refractory period
  (inter-spike intervals are 2 ms + exponential).
* **Noise**: independent Gaussian noise per site, band-limited to 300–6000 Hz (4th-order
  Butterworth, zero phase), scaled to ``noise_uv`` µV standard deviation.

Ground truth
------------
``spike_times`` (sample index of each spike's trough, sorted) and ``spike_units`` (its unit),
``templates`` (n_units, n_template_samples, n_channels) in µV, the trough at sample
:data:`TEMPLATE_TROUGH` of the template. ``data[t + k - TEMPLATE_TROUGH] ≈ Σ templates`` for
each spike at ``t``, plus noise.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from engine.ephys.io import RecordingParams, write_sidecar

#: Template length in ms and the index of the trough within it.
TEMPLATE_MS = 2.5
TEMPLATE_TROUGH_FRACTION = 0.3
REFRACTORY_S = 0.002
DEMO_GAIN_UV = 0.195  # µV per bit, as an Intan RHD headstage


def demo_probe(n_channels: int = 16) -> np.ndarray:
    """Site positions (n_channels, 2) in µm: two staggered columns (x 0/32 µm), 20 µm pitch."""
    i = np.arange(n_channels)
    return np.stack([np.where(i % 2 == 0, 0.0, 32.0), 20.0 * i + np.where(i % 2 == 0, 0.0, 10.0)], axis=1)


def template_trough(sample_rate: float) -> int:
    """Index of the trough within a template at this sample rate."""
    return int(round(TEMPLATE_MS * 1e-3 * sample_rate * TEMPLATE_TROUGH_FRACTION))


def _waveform(t_ms: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A biphasic spike with trough -1 at t = 0 (t in ms)."""
    trough_w = rng.uniform(0.12, 0.20)
    peak_lag = rng.uniform(0.35, 0.6)
    peak_w = rng.uniform(0.25, 0.4)
    peak_amp = rng.uniform(0.2, 0.45)
    w = -np.exp(-0.5 * (t_ms / trough_w) ** 2) + peak_amp * np.exp(-0.5 * ((t_ms - peak_lag) / peak_w) ** 2)
    w -= peak_amp * 0.25 * np.exp(-0.5 * ((t_ms + 0.25) / 0.12) ** 2)  # small pre-trough positivity dip
    w *= np.clip(1.0 - t_ms / (TEMPLATE_MS * (1 - TEMPLATE_TROUGH_FRACTION)), 0.0, 1.0) ** 0.5  # fade to 0
    return w / -w.min()


def _spike_train(rate: float, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Spike times (s) of a Poisson process with an absolute refractory period."""
    mean_isi = 1.0 / rate
    n = int(duration / mean_isi * 1.5) + 20
    isis = REFRACTORY_S + rng.exponential(max(mean_isi - REFRACTORY_S, 1e-4), n)
    times = np.cumsum(isis) + rng.uniform(0, mean_isi)
    return times[times < duration]


def demo_recording(
    duration: float = 10.0,
    n_channels: int = 16,
    sample_rate: float = 30000.0,
    n_units: int = 8,
    noise_uv: float = 10.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Simulate a recording: ``(data, spike_times, spike_units, templates)``.

    ``data`` float32 samples × channels in µV; ``spike_times`` int64 trough samples (sorted);
    ``spike_units`` int64; ``templates`` float32 (n_units, n_template_samples, n_channels) µV.
    """
    from scipy.signal import butter, sosfiltfilt

    if duration <= 0 or n_channels < 1 or sample_rate < 2000 or n_units < 0:
        raise ValueError("demo_recording needs duration > 0, n_channels >= 1, sample_rate >= 2 kHz, n_units >= 0")
    rng = np.random.default_rng(seed)
    n_samples = int(round(duration * sample_rate))
    positions = demo_probe(n_channels)

    n_t = int(round(TEMPLATE_MS * 1e-3 * sample_rate))
    trough = template_trough(sample_rate)
    t_ms = (np.arange(n_t) - trough) / sample_rate * 1e3
    templates = np.zeros((n_units, n_t, n_channels), dtype=np.float64)
    for u in range(n_units):
        height = rng.uniform(positions[:, 1].min(), positions[:, 1].max())
        lateral = rng.uniform(10.0, 60.0) * rng.choice([-1.0, 1.0])
        soma = np.array([16.0 + lateral, height])
        distance = np.linalg.norm(positions - soma, axis=1)
        amplitude = rng.uniform(60.0, 250.0) * np.exp(-(distance - distance.min()) / 28.0)
        delay_ms = (distance - distance.min()) / 300.0  # ~0.3 m/s apparent propagation
        for c in range(n_channels):
            if amplitude[c] < 0.5:
                continue
            # same seed per unit → same shape on every site, just delayed and scaled
            shape_rng = np.random.default_rng([seed, u])
            templates[u, :, c] = amplitude[c] * _waveform(t_ms - delay_ms[c], shape_rng)

    # Band-limited noise.
    low, high = 300.0, min(6000.0, 0.45 * sample_rate)
    sos = butter(4, [low, high], btype="bandpass", fs=sample_rate, output="sos")
    noise = sosfiltfilt(sos, rng.standard_normal((n_samples, n_channels)), axis=0)
    noise *= noise_uv / max(noise.std(), 1e-12)
    data = noise

    times, units = [], []
    rates = rng.uniform(2.0, 20.0, n_units)
    for u in range(n_units):
        st = np.round(_spike_train(rates[u], duration, rng) * sample_rate).astype(np.int64)
        st = st[(st >= trough) & (st < n_samples - (n_t - trough))]
        times.append(st)
        units.append(np.full(len(st), u, dtype=np.int64))
        if len(st):
            idx = st[:, None] + (np.arange(n_t) - trough)[None, :]
            np.add.at(data, idx, templates[u][None, :, :])
    spike_times = np.concatenate(times) if times else np.zeros(0, np.int64)
    spike_units = np.concatenate(units) if units else np.zeros(0, np.int64)
    order = np.argsort(spike_times, kind="stable")
    return data.astype(np.float32), spike_times[order], spike_units[order], templates.astype(np.float32)


def probe_path(raw_path: str | os.PathLike) -> Path:
    """Where :func:`write_demo_recording` puts the probe: ``<stem>.probe.json`` beside the raw file
    (a name the ephys workspace finds by itself)."""
    raw_path = Path(raw_path)
    return raw_path.with_name(f"{raw_path.stem}.probe.json")


def write_demo_recording(path: str | os.PathLike, gain_uv: float = DEMO_GAIN_UV, **kwargs) -> RecordingParams:
    """Write an int16 raw file, its sidecar JSON, its probe ``<stem>.probe.json`` (probeinterface) and
    ``<stem>_ground_truth.npz``.

    Keyword arguments go to :func:`demo_recording`. Returns the parameters in the sidecar.
    """
    from engine.ephys.probe import Probe, write_probe
    from engine.storage import atomic_write_bytes

    path = Path(path)
    sample_rate = float(kwargs.get("sample_rate", 30000.0))
    data, spike_times, spike_units, templates = demo_recording(**kwargs)
    counts = np.clip(np.round(data / gain_uv), -32768, 32767).astype("<i2")
    atomic_write_bytes(path, counts.tobytes(order="C"))
    params = RecordingParams(n_channels=data.shape[1], sample_rate=sample_rate, dtype="int16", gain_uv=gain_uv, offset=0.0)
    write_sidecar(path, params)
    write_probe(probe_path(path), Probe(demo_probe(data.shape[1]), range(data.shape[1]), name="neurowb demo probe"))
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        spike_times=spike_times,
        spike_units=spike_units,
        templates=templates,
        template_trough=np.int64(template_trough(sample_rate)),
        channel_positions=demo_probe(data.shape[1]),
        sample_rate=np.float64(sample_rate),
    )
    atomic_write_bytes(path.with_name(f"{path.stem}_ground_truth.npz"), buffer.getvalue())
    return params
