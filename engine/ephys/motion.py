"""Drift (motion) of the probe along its depth: estimated from detected peaks, undone on the traces.

The brain moves along a probe during a session (tens of µm on Neuropixels recordings), so a neuron's
spikes appear at changing depths and a fixed template loses them. Model (the convention of
SpikeInterface's ``Motion``)::

    y_observed(t) = y_reference + displacement(t, y_reference)

**Estimation** (decentralized registration, the method of DREDge — Windolf et al. 2023 — and of
Kilosort 4's drift step; written on torch here):

1. every detected peak is localised at the amplitude-weighted centre of mass of the channels within
   ``radius`` µm of its peak channel (:func:`localize_peaks`; done while detecting, on the block in memory);
2. a raster: time bins of ``bin_s`` × depth bins of 1 µm, each peak adding log(1 + amplitude), smoothed
   along depth;
3. for every pair of time bins (i, j) within ``horizon_s`` of each other, the cross-correlation of their
   depth profiles gives the relative shift D_ij ≈ p_j − p_i (sub-µm, by a parabola through the peak) and
   its normalised height C_ij (the pair's weight, 0 below ``min_correlation``);
4. p solves min Σ C_ij (p_j − p_i − D_ij)² + λ Σ (p_{t+1} − p_t)², re-weighted twice to drop pairs
   whose residual is far beyond the others (robust to bad pairs); then centred on its median, so the
   corrected coordinates are the recording's typical ones.

Non-rigid: the same per Gaussian depth window (centres every ``win_step_um``, width ``win_sigma_um``);
the displacement at a depth is interpolated linearly between window centres.

**Correction** (:func:`correct_in_place`): on the whitened traces, chunk by chunk, each channel's value at
time t is interpolated at the depth where its reference position is seen at t (y + p(t, y)) from all
channels by kriging with a Gaussian kernel (σ = 20 µm, the interpolation Kilosort 4 also uses):
``M = K(targets, contacts) · (K(contacts, contacts) + 0.01 I)⁻¹``. One matrix per ``step_s`` of data; a
matrix product per piece, on the torch device.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.progress import as_progress

log = logging.getLogger(__name__)

MODES = ("auto", "rigid", "nonrigid", "off")
LOCALIZE_RADIUS_UM = 50.0  # channels around a peak's own that localise it


@dataclass
class Motion:
    """Estimated displacement (µm) of the tissue along the probe: ``displacement_um[t, d]`` at time bin
    centre ``temporal_bins_s[t]`` and depth ``spatial_bins_um[d]`` (one depth when ``rigid``)."""

    temporal_bins_s: np.ndarray
    spatial_bins_um: np.ndarray
    displacement_um: np.ndarray
    rigid: bool

    def at(self, times_s: np.ndarray, depths_um: np.ndarray) -> np.ndarray:
        """Displacement at each (time, depth) pair (1-D arrays of the same length), interpolated linearly
        (clamped at the ends)."""
        times_s = np.asarray(times_s, np.float64)
        depths_um = np.broadcast_to(np.asarray(depths_um, np.float64), times_s.shape)
        per_window = np.stack([np.interp(times_s, self.temporal_bins_s, self.displacement_um[:, d])
                               for d in range(len(self.spatial_bins_um))], axis=-1)  # (n, D)
        if len(self.spatial_bins_um) == 1:
            return per_window[:, 0]
        pos = np.interp(depths_um, self.spatial_bins_um, np.arange(len(self.spatial_bins_um)))
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, len(self.spatial_bins_um) - 1)
        frac = pos - lo
        rows = np.arange(len(times_s))
        return per_window[rows, lo] * (1 - frac) + per_window[rows, hi] * frac

    @property
    def max_displacement_um(self) -> float:
        return float(np.abs(self.displacement_um).max()) if self.displacement_um.size else 0.0

    def to_bytes(self) -> bytes:
        """``motion.npz`` of a Phy folder: temporal_bins_s (T,), spatial_bins_um (D,), displacement_um (T, D) float32, rigid."""
        buffer = io.BytesIO()
        np.savez(buffer, temporal_bins_s=self.temporal_bins_s.astype(np.float64), spatial_bins_um=self.spatial_bins_um.astype(np.float64),
                 displacement_um=self.displacement_um.astype(np.float32), rigid=np.bool_(self.rigid))
        return buffer.getvalue()

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Motion":
        with np.load(Path(path), allow_pickle=False) as f:
            return cls(f["temporal_bins_s"], f["spatial_bins_um"], f["displacement_um"], bool(f["rigid"]))


def depth_rows(positions: np.ndarray, tolerance_um: float = 1.0) -> int:
    """Number of distinct contact depths (y) on the probe."""
    y = np.sort(np.asarray(positions, float)[:, 1])
    return int(1 + (np.diff(y) > tolerance_um).sum()) if len(y) else 0


def check_probe(positions: np.ndarray, mode: str) -> str | None:
    """None when motion can be estimated on this probe, else why not (a sentence)."""
    y = np.asarray(positions, float)[:, 1]
    rows = depth_rows(positions)
    if rows < 4 or np.ptp(y) < 60.0:
        return (f"drift correction ('{mode}') needs contacts along the probe's depth (at least 4 rows over ≥ 60 µm): this probe "
                f"has {rows} row{'s' if rows != 1 else ''} over {np.ptp(y) if len(y) else 0:.0f} µm")
    return None


def localize_peaks(block: np.ndarray, times: np.ndarray, channels: np.ndarray, positions: np.ndarray,
                   neighbours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions (n, 2) µm, amplitudes (n,)) of peaks at (times, channels) of ``block`` (samples × channels,
    negative spikes): the centre of mass of the negative values on each peak channel's ``neighbours``
    ((C, m) indices padded with -1), weighted by (value − the smallest of them): the far channels' weight
    goes to 0, which keeps the estimate from collapsing onto the contact rows."""
    if len(times) == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
    nb = neighbours[channels]  # (n, m)
    valid = nb >= 0
    vals = np.where(valid, -block[times[:, None], np.where(valid, nb, 0)], -np.inf)
    floor = np.where(valid, vals, np.inf).min(axis=1, keepdims=True)
    w = np.where(valid, np.maximum(vals - np.maximum(floor, 0), 0), 0.0)
    w_sum = w.sum(axis=1, keepdims=True)
    w = np.where(w_sum > 0, w / np.maximum(w_sum, 1e-12), valid / valid.sum(axis=1, keepdims=True))
    xy = np.einsum("nm,nmk->nk", w, positions[np.where(valid, nb, 0)])
    return xy.astype(np.float32), (-block[times, channels]).astype(np.float32)


@dataclass
class MotionParams:
    bin_s: float = 2.0  # time bin of the raster
    max_shift_um: float = 100.0  # largest relative shift between two time bins looked for
    horizon_s: float = 120.0  # pairs of bins further apart are not compared (bounds the cost of long recordings)
    smooth_um: float = 3.0  # Gaussian smoothing of the depth profiles
    min_correlation: float = 0.1
    time_smoothness: float = 1.0  # λ of the temporal prior
    win_step_um: float = 300.0  # non-rigid: window centres
    win_sigma_um: float = 300.0  # non-rigid: window width (Gaussian σ)


def _raster(times_s, depths, amps, n_bins, bin_s, y0, n_y, smooth_um):
    t_idx = np.clip((times_s / bin_s).astype(int), 0, n_bins - 1)
    y_idx = np.clip(np.round(depths - y0).astype(int), 0, n_y - 1)
    raster = np.zeros((n_bins, n_y), np.float64)
    np.add.at(raster, (t_idx, y_idx), np.log1p(np.maximum(amps, 0)))
    if smooth_um > 0:
        from scipy.ndimage import gaussian_filter1d

        raster = gaussian_filter1d(raster, smooth_um, axis=1, mode="constant")
    return raster


def _pairwise_shifts(raster, max_shift: int, horizon: int, device, progress=None):
    """Banded (T, 2H+1), H = min(``horizon``, T − 1): D[i, o] ≈ p_j − p_i (µm) and the normalised correlation C[i, o]
    of bins i and j = i + o − H (0 where j is outside the recording): only the pairs within the horizon are kept, so
    memory and time grow linearly with the recording's length (dense T × T matrices: 200 MB per window at an hour)."""
    import torch

    t_len, n_y = raster.shape
    h = min(horizon, t_len - 1)
    length = 1 << int(np.ceil(np.log2(n_y + max_shift + 1)))
    r = torch.as_tensor(raster, dtype=torch.float32, device=device)
    r = r - r.mean(dim=1, keepdim=True)
    norm = r.norm(dim=1).clamp_min(1e-9)
    f = torch.fft.rfft(r, n=length, dim=1)
    lags = torch.cat([torch.arange(0, max_shift + 1), torch.arange(length - max_shift, length)]).to(device)
    lag_values = torch.cat([torch.arange(0, max_shift + 1), torch.arange(-max_shift, 0)]).to(device).float()
    shifts = np.zeros((t_len, 2 * h + 1))
    corr = np.zeros((t_len, 2 * h + 1))
    step = max(1, int(2**24 // max(1, length * min(t_len, 2 * horizon + 1))))
    for i0 in range(0, t_len, step):
        if progress is not None:
            progress.check()
        i1 = min(t_len, i0 + step)
        j0, j1 = max(0, i0 - horizon), min(t_len, i1 + horizon)
        cc = torch.fft.irfft(torch.conj(f[i0:i1, None]) * f[None, j0:j1], n=length, dim=2)[:, :, lags]  # (i, j, 2S+1)
        cc = cc / (norm[i0:i1, None, None] * norm[None, j0:j1, None])
        best = cc.argmax(dim=2)
        peak = cc.gather(2, best[..., None])[..., 0]
        # parabola through the peak and its neighbours (in lag order) for a sub-µm shift
        order = torch.argsort(lag_values)
        cc_sorted = cc[:, :, order]
        pos = torch.argsort(order)[best]
        left = cc_sorted.gather(2, (pos - 1).clamp_min(0)[..., None])[..., 0]
        right = cc_sorted.gather(2, (pos + 1).clamp_max(len(order) - 1)[..., None])[..., 0]
        denom = left - 2 * peak + right
        sub = torch.where(denom < -1e-12, 0.5 * (left - right) / denom, torch.zeros_like(denom)).clamp(-0.5, 0.5)
        # (i, j) of the chunk → band (i, o = j − i + H)
        j = np.arange(i0, i1)[:, None] + np.arange(-h, h + 1)[None]
        inside = (j >= 0) & (j < t_len)
        cols = np.clip(j, j0, j1 - 1) - j0
        for band, values in ((shifts, (lag_values[best] + sub).cpu().numpy()), (corr, peak.cpu().numpy())):
            band[i0:i1] = np.where(inside, np.take_along_axis(values, cols, axis=1), 0.0)
    return shifts, corr


def _band_transpose(band: np.ndarray) -> np.ndarray:
    """The band of the transposed matrix: out[i, o] = M[j, i] with j = i + o − H (0 outside the matrix)."""
    t_len, width = band.shape
    h = width // 2
    j = np.arange(t_len)[:, None] + np.arange(-h, h + 1)[None]
    inside = (j >= 0) & (j < t_len)
    return np.where(inside, band[np.clip(j, 0, t_len - 1), width - 1 - np.arange(width)[None]], 0.0)


def _solve(shifts, corr, min_correlation: float, smoothness: float) -> np.ndarray:
    """Robust weighted least squares for p from the banded pairwise shifts (see the module docstring): the normal
    equations are a banded symmetric positive-definite system (graph Laplacian of the weights + λ × the path's + 1e-6 I)."""
    from scipy.linalg import solveh_banded

    t_len, width = shifts.shape
    h = width // 2
    w = np.where(corr >= min_correlation, corr, 0.0)
    w[:, h] = 0.0  # a bin with itself
    w = np.minimum(w, _band_transpose(w))  # symmetric
    d = 0.5 * (shifts - _band_transpose(shifts))  # antisymmetric
    j = np.arange(t_len)[:, None] + np.arange(-h, h + 1)[None]
    inside = (j >= 0) & (j < t_len)
    j = np.clip(j, 0, t_len - 1)
    path = np.full(t_len, 2.0)  # λ × the Laplacian of the path t – t+1: diagonal 2 (1 at the ends), next to it −1
    path[[0, -1]] = 1.0
    if t_len == 1:
        path[:] = 0.0
    p = np.zeros(t_len)
    for _ in range(3):
        upper = np.zeros((h + 1, t_len))  # solveh_banded's upper form: upper[h − k, i + k] = A[i, i + k]
        upper[h] = w.sum(axis=1) + smoothness * path + 1e-6
        for k in range(1, h + 1):
            upper[h - k, k:] = -w[: t_len - k, h + k]
        if h:
            upper[h - 1, 1:] -= smoothness
        b = -(w * d).sum(axis=1)  # Σ_i w_ij d_ij = −Σ_i w_ji d_ji (w symmetric, d antisymmetric)
        p = solveh_banded(upper, b)
        resid = np.where(inside, np.abs(p[j] - p[:, None] - d), 0.0)
        scale = np.median(resid[w > 0]) if (w > 0).any() else 0.0
        w = np.where(resid <= max(4.0 * 1.4826 * scale, 1.0), w, 0.0)  # drop pairs far beyond the others
    return p - np.median(p)


def estimate_motion(times_s: np.ndarray, positions: np.ndarray, amplitudes: np.ndarray, duration_s: float,
                    probe_positions: np.ndarray, rigid: bool, params: MotionParams | None = None, device=None,
                    progress=None) -> Motion:
    """The probe's drift from peaks (times in s, positions (n, 2) µm, amplitudes): see the module docstring."""
    import torch

    params = params or MotionParams()
    progress = as_progress(progress)
    device = device or torch.device("cpu")
    depths = np.asarray(positions, float)[:, 1]
    y_contacts = np.asarray(probe_positions, float)[:, 1]
    margin = params.max_shift_um
    y0 = float(y_contacts.min() - margin)
    n_y = int(np.ceil(np.ptp(y_contacts) + 2 * margin)) + 1
    n_bins = max(1, int(np.ceil(duration_s / params.bin_s)))
    bins_s = (np.arange(n_bins) + 0.5) * params.bin_s
    bins_s[-1] = min(bins_s[-1], 0.5 * ((n_bins - 1) * params.bin_s + duration_s))
    raster = _raster(np.asarray(times_s, float), depths, np.asarray(amplitudes, float), n_bins, params.bin_s, y0, n_y, params.smooth_um)
    yy = y0 + np.arange(n_y)
    if rigid:
        centres = np.array([0.5 * (y_contacts.min() + y_contacts.max())])
        windows = [np.ones(n_y)]
    else:
        lo, hi = y_contacts.min(), y_contacts.max()
        n_win = max(1, int(round((hi - lo) / params.win_step_um)) + 1)
        centres = np.linspace(lo, hi, n_win) if n_win > 1 else np.array([0.5 * (lo + hi)])
        windows = [np.exp(-0.5 * ((yy - c) / params.win_sigma_um) ** 2) for c in centres]
    horizon = max(1, int(round(params.horizon_s / params.bin_s)))
    disp = np.zeros((n_bins, len(centres)), np.float32)
    parts = progress.split([1] * len(windows))
    for k, (win, part) in enumerate(zip(windows, parts)):
        shifts, corr = _pairwise_shifts(raster * win[None], int(params.max_shift_um), horizon, device, part)
        disp[:, k] = _solve(shifts, corr, params.min_correlation, params.time_smoothness)
        part.report(1.0, "estimating drift")
    return Motion(bins_s, centres.astype(np.float64), disp, rigid)


def _kernel(a, b, sigma: float):
    import torch

    return torch.exp(-torch.cdist(a, b) ** 2 / (2 * sigma**2))


def _bands(y: np.ndarray, reach_um: float, block: int = 32) -> list[tuple[np.ndarray, np.ndarray]]:
    """(output channels, source channels) per block of ``block`` channels in depth order: an interpolated channel
    only draws on contacts within ``reach_um`` of it (the kriging weights beyond 150 µm + the largest shift are
    < 3e-4 of the largest), so each block is a small dense product instead of one C × C one."""
    order = np.argsort(y, kind="stable")
    out = []
    for a in range(0, len(order), block):
        rows = order[a: a + block]
        lo, hi = y[rows].min() - reach_um, y[rows].max() + reach_um
        out.append((rows, np.flatnonzero((y >= lo) & (y <= hi))))
    return out


def correct_in_place(data: np.ndarray, sample_rate: float, probe_positions: np.ndarray, motion: Motion, device=None,
                     progress=None, chunk_s: float = 1.0, step_s: float = 0.1, sigma_um: float = 20.0) -> None:
    """Undo ``motion`` on ``data`` (samples × channels, whitened; a writable memmap), chunk by chunk, in place:
    each sample only mixes channels of the same instant, so no chunk needs its neighbours."""
    import torch

    progress = as_progress(progress)
    device = device or torch.device("cpu")
    pos = torch.as_tensor(np.asarray(probe_positions, np.float32), device=device)
    n_ch = pos.shape[0]
    k_ss = _kernel(pos, pos, sigma_um) + 0.01 * torch.eye(n_ch, device=device)
    k_inv = torch.linalg.inv(k_ss.double()).float()
    n_t = data.shape[0]
    chunk = max(1, int(chunk_s * sample_rate))
    step = max(1, int(step_s * sample_rate))
    y = np.asarray(probe_positions, float)[:, 1]
    # banded products on long probes (384 ch: 9x faster than one dense product; 128 ch: dense is as fast)
    bands = _bands(y, 7.5 * sigma_um + motion.max_displacement_um) if n_ch > 192 else [(np.arange(n_ch), np.arange(n_ch))]
    bands = [(torch.as_tensor(r, device=device), torch.as_tensor(c, device=device)) for r, c in bands]
    for a in range(0, n_t, chunk):
        progress.check()
        b = min(n_t, a + chunk)
        starts = np.arange(a, b, step)
        centres = (starts + np.minimum(starts + step, b)) / 2 / sample_rate
        disp = np.stack([motion.at(np.full(n_ch, t), y) for t in centres])  # (pieces, C)
        target = pos[None].repeat(len(starts), 1, 1).clone()
        target[:, :, 1] += torch.as_tensor(disp, dtype=torch.float32, device=device)
        mats = _kernel(target, pos[None].expand(len(starts), -1, -1), sigma_um) @ k_inv  # (pieces, C, C)
        x = torch.as_tensor(np.asarray(data[a:b]), device=device)
        out = torch.empty_like(x)
        for rows, cols in bands:
            xs = x[:, cols]
            sub = mats[:, rows][:, :, cols]  # (pieces, rows, cols)
            for i, s in enumerate(starts - a):
                e = min(s + step, b - a)
                out[s:e, rows] = xs[s:e] @ sub[i].T
        data[a:b] = out.cpu().numpy()
        progress.report(b / n_t, "correcting drift")


def spike_positions(pc_features: np.ndarray, pc_feature_ind: np.ndarray, units: np.ndarray, probe_positions: np.ndarray,
                    times_s: np.ndarray, motion: Motion | None) -> np.ndarray:
    """(n, 2) float32 position of each sorted spike in the recording's coordinates: the centre of mass of its PC
    features' energy over its unit's PC channels (the corrected, reference depth when drift was corrected), plus
    the displacement at its time and depth."""
    if len(units) == 0:
        return np.zeros((0, 2), np.float32)
    w = np.sqrt((pc_features.astype(np.float64) ** 2).sum(axis=1))  # (n, n_pc)
    w = w - w.min(axis=1, keepdims=True)  # the unit's far PC channels (noise) weigh nothing
    w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    xy = np.einsum("nm,nmk->nk", w, np.asarray(probe_positions, np.float64)[pc_feature_ind[units].astype(np.int64)])
    if motion is not None:
        xy[:, 1] += motion.at(times_s, xy[:, 1])
    return xy.astype(np.float32)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise InputError(f"Unknown drift correction '{mode}': use one of {', '.join(MODES)}.")
    return mode


__all__ = ["LOCALIZE_RADIUS_UM", "MODES", "Motion", "MotionParams", "check_mode", "check_probe", "correct_in_place", "depth_rows", "estimate_motion",
           "localize_peaks", "spike_positions"]
