"""Per-unit quality metrics, with the standard definitions (Allen Institute ecephys / SpikeInterface).

* ``firing_rate`` (Hz): spikes / recording duration.
* ``amplitude_uv``: peak |value| of the unit's mean waveform (unwhitened template × median
  spike amplitude) on its peak channel.
* ``snr``: ``amplitude_uv`` / noise SD of the peak channel. Whitened noise has identity
  covariance, so the unwhitened noise SD of channel c is sqrt((W⁻¹W⁻ᵀ)_cc); no raw data needed.
* ``isi_violations_ratio`` (Hill et al. 2011, J Neurosci; ecephys ``isi_violations``): with N spikes
  in T seconds and n_v inter-spike intervals shorter than t_r = 1.5 ms (minimum ISI t_c = 0),
  ratio = n_v · T / (2 N² (t_r − t_c)) — the rate of violations relative to what a Poisson process
  at the unit's rate would make; 0 for a clean unit, ~1 for pure noise.
* ``rp_contamination`` (Hill 2011; UltraMegaSort's ``ss_rpv_contamination``): the false-positive
  fraction c solving n_v = 2 (t_r − t_c) N² c (1 − c) / T, i.e. c (1 − c) = ratio and
  c = (1 − sqrt(1 − 4·ratio)) / 2; 1.0 when it has no real solution (ratio > 0.25: more
  violations than any c ≤ 0.5 explains).
* ``presence_ratio``: fraction of 100 equal time bins holding at least one spike.
* ``amplitude_cutoff`` (Hill 2011; ecephys): estimated fraction of spikes missed below the
  detection threshold: amplitude histogram (100 bins, density, Gaussian smoothing σ = 3 bins),
  the mass above the amplitude where the upper tail falls to the height of the lowest bin;
  capped at 0.5.
* ``l_ratio`` (Schmitzer-Torbert et al. 2005): with the unit's spikes' features (3 temporal PCs
  on its 4 largest channels, df = 12) and Mahalanobis distance D² of every *other* spike to the
  unit's cluster, L = Σ_others (1 − χ²_df.cdf(D²)) / N. Other units' spikes are used when their
  feature channels include those 4 channels (as ecephys does). Small = well isolated.

Note: the sorter keeps one unit's spikes at least a template length (2 ms) apart, so ISI
violations of its raw output are 0 by construction; they become informative after merges.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

REFRACTORY_S = 0.0015
COLUMNS = ("cluster_id", "n_spikes", "firing_rate", "amplitude_uv", "snr", "isi_violations_ratio", "rp_contamination",
           "presence_ratio", "amplitude_cutoff", "l_ratio", "group")


def isi_violations(spike_times_s: np.ndarray, duration: float, refractory: float = REFRACTORY_S, min_isi: float = 0.0) -> tuple[float, int]:
    """(ratio, n_violations) — Hill 2011, see module docstring."""
    t = np.sort(np.asarray(spike_times_s, dtype=np.float64))
    n = len(t)
    if n < 2:
        return 0.0, 0
    n_v = int((np.diff(t) < refractory).sum())
    ratio = n_v * duration / (2.0 * n * n * (refractory - min_isi))
    return float(ratio), n_v


def rp_contamination(ratio: float) -> float:
    disc = 1.0 - 4.0 * ratio
    return 1.0 if disc < 0 else float((1.0 - np.sqrt(disc)) / 2.0)


def presence_ratio(spike_times_s: np.ndarray, duration: float, n_bins: int = 100) -> float:
    if duration <= 0:
        return 0.0
    counts, _ = np.histogram(spike_times_s, bins=n_bins, range=(0.0, duration))
    return float((counts > 0).mean())


def amplitude_cutoff(amplitudes: np.ndarray, n_bins: int = 100, smoothing: float = 3.0) -> float:
    from scipy.ndimage import gaussian_filter1d

    amplitudes = np.asarray(amplitudes, dtype=np.float64)
    if len(amplitudes) < 10 or np.ptp(amplitudes) == 0:
        return float("nan")
    pdf, edges = np.histogram(amplitudes, n_bins, density=True)
    pdf = gaussian_filter1d(pdf, smoothing)
    peak = int(np.argmax(pdf))
    g = int(np.argmin(np.abs(pdf[peak:] - pdf[0]))) + peak
    missing = float(np.sum(pdf[g:]) * np.mean(np.diff(edges)))
    return min(missing, 0.5)


def l_ratio(own: np.ndarray, others: np.ndarray) -> float:
    """Schmitzer-Torbert L-ratio from feature rows of the unit (own) and of other spikes."""
    from scipy.stats import chi2

    if len(own) <= own.shape[1] + 1:
        return float("nan")
    if len(others) == 0:
        return 0.0
    mean = own.mean(0)
    cov = np.cov(own, rowvar=False)
    inv = np.linalg.pinv(cov)
    d = others - mean
    d2 = np.einsum("ij,jk,ik->i", d, inv, d)
    return float(np.sum(1.0 - chi2.cdf(d2, own.shape[1])) / len(own))


def mean_waveform(templates_uv: np.ndarray, spike_templates: np.ndarray, amplitudes: np.ndarray) -> np.ndarray:
    """A unit's mean waveform (D, C) µV: its spikes' templates weighted by their amplitudes."""
    tids, inverse = np.unique(spike_templates, return_inverse=True)
    weights = np.bincount(inverse, weights=amplitudes) / max(len(spike_templates), 1)
    return np.tensordot(weights, templates_uv[tids], axes=1)


def unit_metrics(spike_times_s: np.ndarray, mean_wave: np.ndarray, noise_sd: np.ndarray, duration: float) -> dict:
    """The metrics that need only a unit's spike times and mean waveform: ``n_spikes``,
    ``firing_rate``, ``amplitude_uv``, ``snr``, ``isi_violations_ratio`` (and the count
    ``isi_violations``), ``presence_ratio``, ``peak_channel``."""
    n = len(spike_times_s)
    peak = int(np.abs(mean_wave).max(axis=0).argmax()) if mean_wave.size else 0
    amplitude = float(np.abs(mean_wave[:, peak]).max()) if mean_wave.size else 0.0
    ratio, n_violations = isi_violations(spike_times_s, duration)
    return {"n_spikes": int(n), "firing_rate": n / duration if duration > 0 else float("nan"), "amplitude_uv": amplitude,
            "snr": amplitude / float(noise_sd[peak]), "isi_violations_ratio": ratio, "isi_violations": n_violations,
            "presence_ratio": presence_ratio(spike_times_s, duration), "peak_channel": peak}


def compute_metrics(folder: str | os.PathLike, duration: float | None = None) -> list[dict]:
    """One dict per cluster (columns :data:`COLUMNS`) for a Phy folder, curated or not."""
    from engine.ephys.phy import read_phy

    phy = read_phy(folder)
    fs = phy.sample_rate
    times = phy.spike_times
    clusters = phy.spike_clusters
    templates_of_spike = phy.arrays["spike_templates"].astype(np.int64)
    amps = phy.arrays["amplitudes"].astype(np.float64)
    if duration is None:
        duration = phy.duration_s
    templates_uv = phy.templates_uv()  # (K, D, C)
    noise_sd = phy.noise_sd()
    all_spikes = np.arange(len(times))
    pci = phy.arrays.get("pc_feature_ind")
    rows = []
    for cid in np.unique(clusters):
        sel = clusters == cid
        unit = unit_metrics(times[sel] / fs, mean_waveform(templates_uv, templates_of_spike[sel], amps[sel]), noise_sd, duration)
        lr = float("nan")
        if phy.has_features:
            main_t = int(np.bincount(templates_of_spike[sel]).argmax())  # the unit's most used template
            f = phy.features_on(all_spikes, pci[main_t][:4]).reshape(len(times), -1)
            usable = ~np.isnan(f).any(1)  # spikes with features on all 4 of its channels
            lr = l_ratio(f[sel & usable], f[~sel & usable])
        rows.append({
            "cluster_id": int(cid),
            **{k: unit[k] for k in ("n_spikes", "firing_rate", "amplitude_uv", "snr", "isi_violations_ratio")},
            "rp_contamination": rp_contamination(unit["isi_violations_ratio"]),
            "presence_ratio": unit["presence_ratio"],
            "amplitude_cutoff": amplitude_cutoff(amps[sel]),
            "l_ratio": lr,
            "group": phy.groups.get(int(cid), "unsorted"),
        })
    return rows


def format_table(rows: list[dict]) -> str:
    """A fixed-width text table of the metrics."""
    head = ["id", "spikes", "rate Hz", "amp µV", "SNR", "ISI viol", "RP cont", "presence", "amp cut", "L-ratio", "group"]
    lines = ["  ".join(f"{h:>8}" for h in head)]
    for r in rows:
        vals = [r["cluster_id"], r["n_spikes"], r["firing_rate"], r["amplitude_uv"], r["snr"], r["isi_violations_ratio"],
                r["rp_contamination"], r["presence_ratio"], r["amplitude_cutoff"], r["l_ratio"], r["group"]]
        lines.append("  ".join(f"{v:>8.3g}" if isinstance(v, float) else f"{v:>8}" for v in vals))
    return "\n".join(lines)


def write_csv(rows: list[dict], path: str | os.PathLike) -> Path:
    from engine.storage import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    return atomic_write_text(path, buffer.getvalue())
