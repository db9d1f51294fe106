"""The drift map of a Phy folder: every spike's depth along the probe over time, with its amplitude,
and the motion the sorter estimated (Kilosort 4's drift plot, SpikeInterface's ``plot_motion``).

Depths, best source first:

1. ``spike_positions.npy`` (n × 2 float32, x and y in µm in the recording's own coordinates, before
   any motion correction): written by our sorter and by Kilosort 4.
2. The PC features (``pc_features.npy`` n × n_pcs × P, ``pc_feature_ind.npy`` K × P), as Phy
   (``phylib``'s ``TemplateModel.get_depths``) and Kilosort's ``ksDriftmap`` do it: the centre of mass
   of the channels' y positions weighted by the squared positive part of the first PC. That assumes
   Kilosort's sign (spikes project positively on the first PC); a template whose spikes project
   negatively on its first feature channel (our sorts before we took that sign) is turned over first.
3. The spike's template: centre of mass of the channels' y weighted by the unwhitened template's
   energy (Σ over samples of value²) on each channel — Kilosort 2/3 folders without PC features,
   SpikeInterface exports; also for a spike whose first PC is ≤ 0 on all its channels.

Amplitudes: ``amplitudes.npy`` × the template's peak |value| after unwhitening (the unit table's
amplitude), in µV for our own sorts (``neurowb_sort.json``), arbitrary units otherwise.

``motion.npz`` (only when motion was estimated): ``temporal_bins_s`` (T,), ``spatial_bins_um`` (D,),
``displacement_um`` (T × D float32, D = 1 when rigid) and the scalar ``rigid`` — the displacement of
the tissue at each time and depth block, so a unit at depth y appears at y + displacement(t).

A big folder is not copied: the per-spike files are memory-mapped and, past ``max_spikes``, a fixed
random subset (seed 0, kept in time order) is read, so the map of a folder is always the same.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.ephys.phy import read_params_py
from engine.progress import as_progress

MAX_SPIKES = 500_000  # spikes read for the map; past it a deterministic random subset
MOTION_FILE = "motion.npz"
POSITIONS_FILE = "spike_positions.npy"
CHUNK = 50_000  # spikes per step (phylib's batch size): bounded memory, cancellable


@dataclass(frozen=True)
class Motion:
    """Estimated motion: the displacement (µm) at each time bin and depth block."""

    temporal_bins_s: np.ndarray  # (T,)
    spatial_bins_um: np.ndarray  # (D,) centre depth of each block
    displacement_um: np.ndarray  # (T, D)
    rigid: bool

    def lines(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(times s, depths µm) of each block's line: its centre depth + its displacement over time."""
        return [(self.temporal_bins_s, self.spatial_bins_um[d] + self.displacement_um[:, d])
                for d in range(len(self.spatial_bins_um))]


@dataclass
class DriftMap:
    """The spikes of a Phy folder as the drift map draws them (a subset past ``max_spikes``)."""

    folder: Path
    times_s: np.ndarray  # (n,) float64
    depths_um: np.ndarray  # (n,) float32
    amplitudes: np.ndarray  # (n,) float32, ≥ 0
    spikes: np.ndarray  # (n,) int64: index of each shown spike in the folder's spike files
    n_total: int  # spikes in the folder
    duration_s: float
    probe_depth_um: tuple[float, float]  # y range of the channels
    depth_source: str  # "spike positions", "PC features" or "templates"
    amplitude_unit: str  # "µV" or "a.u."
    motion: Motion | None

    @property
    def subsampled(self) -> bool:
        return len(self.spikes) < self.n_total

    def amplitude_limits(self) -> tuple[float, float]:
        """Colour range: the 5th to the 95th percentile of the amplitudes (low ones faint, as SpikeInterface's
        ``plot_drift_raster_map`` clips at its 95th)."""
        if not len(self.amplitudes):
            return 0.0, 1.0
        lo, hi = np.percentile(self.amplitudes, [5, 95])
        return float(lo), float(max(hi, lo + 1e-6))

    def raster(self, n_time: int = 1200, n_depth: int = 600, dot: int = 2) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """The map as an image, for more spikes than a scatter draws quickly: (n_time × n_depth) largest
        amplitude of the spikes whose dot (``dot`` × ``dot`` bins) covers each bin (NaN where none) — the
        dots with the largest drawn last — and its extent (t0, t1, y0, y1)."""
        t0, t1 = 0.0, max(self.duration_s, float(self.times_s[-1]) if len(self.times_s) else 0.0, 1e-3)
        y0, y1 = self.probe_depth_um
        if len(self.depths_um):
            y0, y1 = min(y0, float(self.depths_um.min())), max(y1, float(self.depths_um.max()))
        y0, y1 = y0 - 10.0, y1 + 10.0
        ti = np.clip(((self.times_s - t0) / (t1 - t0) * n_time).astype(np.int64), 0, n_time - 1)
        di = np.clip(((self.depths_um - y0) / (y1 - y0) * n_depth).astype(np.int64), 0, n_depth - 1)
        image = np.full(n_time * n_depth, -np.inf, dtype=np.float32)
        np.maximum.at(image, ti * n_depth + di, self.amplitudes)
        image = image.reshape(n_time, n_depth)
        single = image.copy()
        for dt in range(dot):
            for dd in range(dot):
                np.maximum(image[dt:, dd:], single[:n_time - dt, :n_depth - dd], out=image[dt:, dd:])
        image[np.isneginf(image)] = np.nan
        return image, (t0, t1, y0, y1)


def read_drift_map(folder: str | os.PathLike, max_spikes: int = MAX_SPIKES, progress=None) -> DriftMap:
    """Read the drift map of a Phy folder (or its params.py); see the module docstring."""
    progress = as_progress(progress)
    folder = Path(folder)
    if folder.name == "params.py":
        folder = folder.parent
    if not (folder / "params.py").is_file():
        raise InputError(f"'{folder}' is not a Phy folder (no params.py): pick the folder a sort wrote.")
    params = read_params_py(folder / "params.py")
    rate = params.get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not np.isfinite(rate) or rate <= 0:
        raise InputError(f"'{folder / 'params.py'}' must give a positive sample_rate (e.g. sample_rate = 30000.0), got {rate!r}.")
    times = _per_spike(folder, "spike_times.npy", None)
    n = len(times)
    if not np.issubdtype(times.dtype, np.integer):
        raise InputError(f"'{folder}': spike_times.npy must hold integer sample numbers, got {times.dtype}; the folder is damaged.")
    amplitudes = _per_spike(folder, "amplitudes.npy", n)
    positions = _array(folder, "channel_positions.npy", required=True)
    if positions.ndim != 2 or positions.shape[1] < 2 or not len(positions) or not np.isfinite(positions).all():
        raise InputError(f"'{folder}': channel_positions.npy must be channels × 2 finite µm, got shape {positions.shape}.")
    spike_positions = _array(folder, POSITIONS_FILE)
    if spike_positions is not None and (spike_positions.ndim != 2 or spike_positions.shape != (n, 2)):
        raise InputError(f"'{folder}': {POSITIONS_FILE} must be {n:,} spikes × 2 (x, y µm), got shape {spike_positions.shape}; "
                         f"delete it to fall back to the PC features, or sort again.")
    spike_templates = _per_spike(folder, "spike_templates.npy", n, required=spike_positions is None)
    templates = _array(folder, "templates.npy", required=spike_positions is None)
    if templates is not None and templates.ndim != 3:
        raise InputError(f"'{folder}': templates.npy must be templates × samples × channels, got shape {templates.shape}.")
    if templates is not None and templates.shape[2] != len(positions):
        raise InputError(f"'{folder}': templates.npy has {templates.shape[2]} channels, channel_positions.npy "
                         f"{len(positions)}; the folder is inconsistent: sort again.")
    if spike_templates is not None and templates is not None and n and int(spike_templates.max()) >= len(templates):
        raise InputError(f"'{folder}': spike_templates.npy refers to template {int(spike_templates.max())} but templates.npy "
                         f"has {len(templates)}; the folder is inconsistent: sort again.")
    motion = load_motion(folder)

    chosen = subsample(n, max_spikes)
    times_s = np.asarray(times[chosen], dtype=np.float64) / float(rate)
    amps = np.asarray(amplitudes[chosen], dtype=np.float64)
    templates_unwhitened = None
    if templates is not None:
        inv = _array(folder, "whitening_mat_inv.npy")
        templates_unwhitened = np.asarray(templates, dtype=np.float64)
        if inv is not None and inv.shape == (templates.shape[2],) * 2:
            templates_unwhitened = templates_unwhitened @ np.asarray(inv, dtype=np.float64)
    if templates_unwhitened is not None and spike_templates is not None:
        peak = np.abs(templates_unwhitened).max(axis=(1, 2))
        amps = amps * peak[np.asarray(spike_templates[chosen], dtype=np.int64)]
    amps = np.abs(amps)
    if not np.isfinite(amps).all() or not np.isfinite(times_s).all():
        raise InputError(f"'{folder}': amplitudes.npy or templates.npy hold NaN or infinite values; the folder is damaged: sort again.")

    if spike_positions is not None:
        depths = np.asarray(spike_positions[chosen, 1], dtype=np.float32)
        source = "spike positions"
        bad = ~np.isfinite(depths)
        if bad.any():
            raise InputError(f"'{folder}': {POSITIONS_FILE} has NaN or infinite depths (first: spike "
                             f"{int(chosen[np.flatnonzero(bad)[0]]):,}); delete it to fall back to the PC features, or sort again.")
    else:
        template_y = template_depths(templates_unwhitened, positions)
        pc_features, pc_ind = _array(folder, "pc_features.npy"), _array(folder, "pc_feature_ind.npy")
        usable = (pc_features is not None and pc_ind is not None and pc_features.ndim == 3 and len(pc_features) == n
                  and pc_ind.ndim == 2 and pc_ind.shape == (len(templates), pc_features.shape[2])
                  and (not pc_ind.size or 0 <= int(pc_ind.min()) and int(pc_ind.max()) < len(positions)))
        st = np.asarray(spike_templates[chosen], dtype=np.int64)
        if usable:
            depths = np.empty(len(chosen), dtype=np.float32)
            pc_ind = np.asarray(pc_ind, dtype=np.int64)
            sign = np.zeros(len(templates))  # Σ of each template's first feature: its spikes' sign on the first PC
            for start in range(0, len(chosen), CHUNK):
                progress.check()
                sign += np.bincount(st[start:start + CHUNK], np.asarray(pc_features[chosen[start:start + CHUNK], 0, 0],
                                                                          dtype=np.float64), minlength=len(templates))
            sign = np.where(sign < 0, -1.0, 1.0)
            for start in range(0, len(chosen), CHUNK):
                progress.check()
                progress.report(start / max(len(chosen), 1), "spike depths from the PC features")
                rows, units = chosen[start:start + CHUNK], st[start:start + CHUNK]
                first_pc = np.asarray(pc_features[rows, 0, :], dtype=np.float64) * sign[units, None]
                depths[start:start + CHUNK] = pc_feature_depths(first_pc, pc_ind[units], positions)
            missing = ~np.isfinite(depths)  # no positive first PC on any channel: the template's depth
            depths[missing] = template_y[st[missing]]
            source = "PC features"
        else:
            depths = template_y[st].astype(np.float32)
            source = "templates"
    meta = _read_meta(folder)
    unit = "µV" if meta.get("preprocess") is not None and templates is not None else "a.u."
    duration = float(meta.get("info", {}).get("duration_s") or 0.0) or ((int(times[-1]) + 1) / rate if n else 0.0)
    ys = positions[:, 1].astype(np.float64)
    return DriftMap(folder, times_s, depths.astype(np.float32), amps.astype(np.float32), chosen, n, duration,
                    (float(ys.min()), float(ys.max())), source, unit, motion)


def subsample(n: int, max_spikes: int) -> np.ndarray:
    """Indices of the spikes to show: all of them, or ``max_spikes`` drawn at random (seed 0), ascending."""
    if n <= max_spikes:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(0).choice(n, size=max_spikes, replace=False)).astype(np.int64)


def pc_feature_depths(first_pc: np.ndarray, channels: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Depth of each spike from its first-PC features ``first_pc`` (n × P) on ``channels`` (n × P indices into
    ``positions``), as phylib's ``get_depths`` and Kilosort's ``ksDriftmap``: Σ y·max(f, 0)² / Σ max(f, 0)².
    NaN where no feature is positive."""
    weight = np.maximum(first_pc, 0.0) ** 2
    total = weight.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weight * positions[channels, 1]).sum(axis=1) / np.where(total > 0, total, np.nan)


def template_depths(templates: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Depth of each template (K × samples × channels, unwhitened): centre of mass of the channels' y
    weighted by the template's energy on each channel."""
    energy = (np.asarray(templates, dtype=np.float64) ** 2).sum(axis=1)  # (K, C)
    total = energy.sum(axis=1)
    y = positions[:, 1].astype(np.float64)
    centre = float(np.mean(y))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, energy @ y / np.where(total > 0, total, 1.0), centre)


def load_motion(folder: str | os.PathLike) -> Motion | None:
    """The estimated motion of a Phy folder (``motion.npz``), or None when it has none."""
    path = Path(folder) / MOTION_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("temporal_bins_s", "spatial_bins_um", "displacement_um", "rigid") if k not in z.files]
            if missing:
                raise InputError(f"'{path}' lacks {', '.join(missing)}: delete it, or sort again with motion correction.")
            t, d, disp, rigid = (np.asarray(z[k]) for k in ("temporal_bins_s", "spatial_bins_um", "displacement_um", "rigid"))
    except InputError:
        raise
    except Exception as exc:  # truncated, not an npz, pickled objects
        raise InputError(f"'{path}' is damaged (not a readable .npz): delete it, or sort again with motion correction.",
                         details=f"{type(exc).__name__}: {exc}") from exc
    if t.ndim != 1 or not len(t) or d.ndim != 1 or not len(d):
        raise InputError(f"'{path}': temporal_bins_s and spatial_bins_um must be non-empty 1-D arrays, got shapes "
                         f"{t.shape} and {d.shape}.")
    if disp.shape != (len(t), len(d)):
        raise InputError(f"'{path}': displacement_um must be time bins × depth blocks = {(len(t), len(d))}, got {disp.shape}.")
    if rigid.shape != () or rigid.dtype != bool:
        raise InputError(f"'{path}': rigid must be a scalar bool, got {rigid.dtype} of shape {rigid.shape}.")
    if bool(rigid) and len(d) != 1:
        raise InputError(f"'{path}': a rigid motion has one depth block, this one {len(d)}.")
    for name, a in (("temporal_bins_s", t), ("spatial_bins_um", d), ("displacement_um", disp)):
        if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
            raise InputError(f"'{path}': {name} holds NaN, infinite or non-numeric values; delete it, or sort again.")
    return Motion(t.astype(np.float64), d.astype(np.float64), disp.astype(np.float32), bool(rigid))


def _array(folder: Path, name: str, required: bool = False) -> np.ndarray | None:
    """A .npy of the folder, memory-mapped (a big folder is not copied), or None when absent."""
    path = folder / name
    if not path.is_file():
        if required:
            raise InputError(f"'{folder}' is not a complete Phy folder: missing {name}. Sort again or pick the right folder.")
        return None
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # truncated, not .npy, or pickled objects
        raise InputError(f"'{path}' is damaged (truncated or not a NumPy array): restore it from a copy, or sort again.",
                         details=f"{type(exc).__name__}: {exc}") from exc
    if not np.issubdtype(a.dtype, np.number):
        raise InputError(f"'{path}' holds {a.dtype}, not numbers; the folder is damaged: sort again.")
    return a


def _per_spike(folder: Path, name: str, n: int | None, required: bool = True) -> np.ndarray | None:
    """A one-value-per-spike file ((n,) or (n, 1)), checked against the spike count ``n``."""
    a = _array(folder, name, required)
    if a is None:
        return None
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1 or (n is not None and len(a) != n):
        raise InputError(f"'{folder}': {name} must hold one value per spike ({'' if n is None else f'{n:,} '}spikes), "
                         f"got shape {a.shape}; the folder is inconsistent: sort again.")
    return a


def _read_meta(folder: Path) -> dict:
    path = folder / "neurowb_sort.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}  # only tells the amplitude unit and duration: the map does without
