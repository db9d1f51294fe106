"""Drift: the probe's motion recovered from SpikeInterface's drifting ground truth, corrected before sorting."""

from __future__ import annotations

import numpy as np
import pytest

from engine.ephys.clustering import detect_peaks
from engine.ephys.motion import Motion, estimate_motion, localize_peaks
from engine.ephys.preprocess import ArrayRecording
from engine.ephys.probe import Probe
from engine.ephys.sorter import SortParams, sort_recording
from engine.errors import InputError
from engine.progress import Cancelled, Progress

pytest.importorskip("spikeinterface.generation")
FS = 30000.0


def _drifting(n_sites: int, n_units: int, duration: float, amplitude: float, gradient: float | None = None, seed: int = 0):
    """(traces µV (T, C) float32, contact positions, ground-truth sorting, displacement of each unit (times, units), times s, unit depths)."""
    from probeinterface import generate_multi_columns_probe
    from spikeinterface.generation import generate_drifting_recording

    probe = generate_multi_columns_probe(num_columns=4, num_contact_per_column=n_sites // 4, xpitch=16, ypitch=40,
                                         y_shift_per_column=[20, 0, 20, 0], contact_shapes="square", contact_shape_params={"width": 12})
    probe.set_device_channel_indices(np.arange(n_sites))
    motion = dict(drift_mode="zigzag", non_rigid_gradient=gradient, t_start_drift=0.0, t_end_drift=None, period_s=duration)
    _static, rec, gt, extra = generate_drifting_recording(
        num_units=n_units, duration=duration, probe=probe, seed=seed, extra_outputs=True,
        generate_displacement_vector_kwargs=dict(displacement_sampling_frequency=5.0, drift_start_um=[0, amplitude],
                                                 drift_stop_um=[0, -amplitude], drift_step_um=1, motion_list=[motion]))
    traces = np.asarray(rec.get_traces(), np.float32)
    disp = extra["unit_displacements"][:, :, 1]
    times = np.arange(len(disp)) / extra["displacement_sampling_frequency"]
    return traces, probe.contact_positions.astype(float), gt, disp, times, extra["unit_locations"][:, 1]


def _estimate(traces, positions, rigid: bool) -> Motion:
    probe = Probe(positions, np.arange(len(positions)))
    x = traces - np.median(traces, axis=0)
    x /= np.median(np.abs(x), axis=0) / 0.6745
    t, c, _ = detect_peaks(x, 5.5, probe.neighbours(100.0), 12)
    xy, amp = localize_peaks(x, t, c, positions, probe.neighbours(50.0))
    return estimate_motion(t / FS, xy, amp, len(x) / FS, positions, rigid)


def _error(motion: Motion, disp, times, depths) -> np.ndarray:
    """Estimated minus true displacement of each unit over time, up to one offset per unit (the reference depth is free);
    away from the first and last time bin (clamped there, half a bin of drift off)."""
    inner = (times >= motion.temporal_bins_s[0]) & (times <= motion.temporal_bins_s[-1])
    times, disp = times[inner], disp[inner]
    est = np.stack([motion.at(times, np.full(len(times), y)) for y in depths], axis=1)
    err = est - disp
    return err - np.median(err, axis=0)


def test_rigid_zigzag_is_recovered():
    traces, positions, _gt, disp, times, depths = _drifting(32, 15, 24.0, 20.0)
    motion = _estimate(traces, positions, rigid=True)
    assert motion.rigid and motion.displacement_um.shape == (12, 1) and motion.displacement_um.dtype == np.float32
    err = _error(motion, disp, times, depths)
    assert np.abs(disp - disp.mean()).max() > 15  # there is drift to find (±20 µm)
    assert np.sqrt((err**2).mean()) < 3.0, np.sqrt((err**2).mean())  # no estimate: ~11 µm


def test_nonrigid_drift_is_recovered_per_depth_window():
    """Drift growing from 10 % at one end of a 1.3 mm probe to 100 % at the other: one rigid estimate cannot fit both ends."""
    traces, positions, _gt, disp, times, depths = _drifting(128, 40, 20.0, 30.0, gradient=0.1, seed=1)
    nonrigid = _estimate(traces, positions, rigid=False)
    rigid = _estimate(traces, positions, rigid=True)
    assert not nonrigid.rigid and nonrigid.displacement_um.shape[1] >= 4
    e_nr = np.sqrt((_error(nonrigid, disp, times, depths) ** 2).mean())
    e_r = np.sqrt((_error(rigid, disp, times, depths) ** 2).mean())
    assert e_nr < 3.0 and e_nr < 0.6 * e_r, (e_nr, e_r)


@pytest.fixture(scope="module")
def small_drift():
    traces, positions, gt, disp, times, depths = _drifting(32, 10, 30.0, 25.0, seed=2)
    return ArrayRecording(traces, FS), Probe(positions, np.arange(len(positions))), gt


def _accuracy(result, gt) -> float:
    import spikeinterface.full as si
    from spikeinterface.core import NumpySorting

    ours = NumpySorting.from_samples_and_labels([result.spike_times], [result.spike_units], FS)
    return float(si.compare_sorter_to_ground_truth(gt, ours, delta_time=0.4, exhaustive_gt=True).get_performance()["accuracy"].mean())


def test_correction_improves_sorting_of_a_drifting_recording(small_drift, tmp_path):
    from engine.ephys.phy import write_phy

    rec, probe, gt = small_drift
    fixed = sort_recording(rec, probe, SortParams(motion="auto"))
    raw = sort_recording(rec, probe, SortParams(motion="off"))
    assert fixed.info["drift_correction"] == "rigid" and raw.info["drift_correction"] == "off" and raw.motion is None
    acc_fixed, acc_raw = _accuracy(fixed, gt), _accuracy(raw, gt)
    assert acc_fixed >= acc_raw + 0.1, (acc_fixed, acc_raw)  # measured 0.55 against 0.34
    # what the drift map reads: exact names, shapes and types
    folder = write_phy(fixed, tmp_path / "phy")
    pos = np.load(folder / "spike_positions.npy")
    assert pos.dtype == np.float32 and pos.shape == (len(fixed.spike_times), 2)
    with np.load(folder / "motion.npz") as f:
        assert set(f.files) == {"temporal_bins_s", "spatial_bins_um", "displacement_um", "rigid"}
        assert f["displacement_um"].dtype == np.float32 and f["displacement_um"].shape == (len(f["temporal_bins_s"]), 1)
        assert bool(f["rigid"]) is True
    # positions are in the recording's coordinates: a unit's spikes follow the drift (±25 µm), they are not flat
    biggest = np.bincount(fixed.spike_units).argmax()
    y = pos[fixed.spike_units == biggest, 1]
    t = fixed.spike_times[fixed.spike_units == biggest] / FS
    assert abs(np.median(y[(t > 5) & (t < 10)]) - np.median(y[(t > 20) & (t < 25)])) > 30  # zigzag: +25 µm at 7.5 s, −25 µm at 22.5 s
    plain = write_phy(raw, tmp_path / "phy_off")
    assert (plain / "spike_positions.npy").is_file() and not (plain / "motion.npz").exists()


def test_static_recording_is_not_corrected(small_drift):
    """auto on a recording without drift: estimated flat, nothing corrected, the same sort as with motion off."""
    from engine.ephys.synth import demo_probe, demo_recording

    data, _st, _su, _ = demo_recording(duration=8.0, n_channels=12, n_units=4, noise_uv=10.0, seed=2)
    rec, probe = ArrayRecording(data, FS), Probe(demo_probe(12), np.arange(12))
    auto = sort_recording(rec, probe, SortParams(motion="auto"))
    off = sort_recording(rec, probe, SortParams(motion="off"))
    assert auto.info["drift_correction"].startswith("none") and auto.motion is not None and auto.motion.max_displacement_um < 5
    np.testing.assert_array_equal(auto.spike_times, off.spike_times)
    np.testing.assert_array_equal(auto.spike_units, off.spike_units)


def test_cancel_during_drift_correction(small_drift):
    rec, probe, _gt = small_drift
    seen = []
    progress = Progress(lambda fraction, message: (seen.append(message), progress.cancel() if "correcting drift" in (message or "") else None),
                        min_interval=0.0)
    with pytest.raises(Cancelled):
        sort_recording(rec, probe, SortParams(motion="rigid"), progress=progress)
    assert not any("clustering" in (m or "").lower() for m in seen)  # stopped in the drift stage, not after it


def test_single_row_probe_refuses_explicit_correction():
    rng = np.random.default_rng(0)
    rec = ArrayRecording(rng.standard_normal((30000, 8)).astype(np.float32) * 10, FS)
    row = Probe(np.stack([np.arange(8) * 20.0, np.zeros(8)], axis=1), np.arange(8))
    with pytest.raises(InputError, match="needs contacts along the probe's depth.*1 row"):
        sort_recording(rec, row, SortParams(motion="rigid"))
    with pytest.raises(InputError, match="Unknown drift correction 'sideways'"):
        sort_recording(rec, row, SortParams(motion="sideways"))
    result = sort_recording(rec, row, SortParams(motion="auto"))  # auto skips it and says why
    assert result.info["drift_correction"].startswith("not estimated") and result.motion is None


def test_banded_correction_equals_the_dense_product(monkeypatch):
    """On a 384-site probe the correction multiplies depth blocks by their nearby contacts only: the same traces
    as the full kriging product to < 2e-3 noise SD."""
    import engine.ephys.motion as motion_module
    from engine.ephys.motion import correct_in_place
    from probeinterface import generate_multi_columns_probe

    pos = generate_multi_columns_probe(num_columns=4, num_contact_per_column=96, xpitch=16, ypitch=40,
                                       y_shift_per_column=[20, 0, 20, 0]).contact_positions.astype(float)
    rng = np.random.default_rng(0)
    motion = Motion(np.array([0.05, 0.15]), np.array([0.0, 2000.0, 4000.0]), rng.uniform(-25, 25, (2, 3)).astype(np.float32), False)
    x = rng.standard_normal((6000, 384)).astype(np.float32)
    banded, dense = x.copy(), x.copy()
    correct_in_place(banded, FS, pos, motion)
    monkeypatch.setattr(motion_module, "_bands", lambda y, reach, block=32: [(np.arange(len(y)), np.arange(len(y)))])
    correct_in_place(dense, FS, pos, motion)
    assert np.abs(banded - dense).max() < 2e-3
    assert np.abs(dense - x).mean() > 0.1  # it did move the traces


def _dense_shifts_and_solve(raster, max_shift, horizon, min_correlation=0.1, smoothness=1.0):
    """The estimate as first written, with dense T × T matrices of pairwise shifts and weights (the reference for the
    banded one: the same p)."""
    import torch

    t_len, n_y = raster.shape
    length = 1 << int(np.ceil(np.log2(n_y + max_shift + 1)))
    r = torch.as_tensor(raster, dtype=torch.float32)
    r = r - r.mean(dim=1, keepdim=True)
    norm = r.norm(dim=1).clamp_min(1e-9)
    f = torch.fft.rfft(r, n=length, dim=1)
    lags = torch.cat([torch.arange(0, max_shift + 1), torch.arange(length - max_shift, length)])
    lag_values = torch.cat([torch.arange(0, max_shift + 1), torch.arange(-max_shift, 0)]).float()
    cc = torch.fft.irfft(torch.conj(f[:, None]) * f[None], n=length, dim=2)[:, :, lags] / (norm[:, None, None] * norm[None, :, None])
    best = cc.argmax(dim=2)
    peak = cc.gather(2, best[..., None])[..., 0]
    order = torch.argsort(lag_values)
    cc_sorted = cc[:, :, order]
    pos = torch.argsort(order)[best]
    left = cc_sorted.gather(2, (pos - 1).clamp_min(0)[..., None])[..., 0]
    right = cc_sorted.gather(2, (pos + 1).clamp_max(len(order) - 1)[..., None])[..., 0]
    denom = left - 2 * peak + right
    sub = torch.where(denom < -1e-12, 0.5 * (left - right) / denom, torch.zeros_like(denom)).clamp(-0.5, 0.5)
    shifts = (lag_values[best] + sub).numpy().astype(float)
    corr = peak.numpy().astype(float)
    ii, jj = np.meshgrid(np.arange(t_len), np.arange(t_len), indexing="ij")
    corr[np.abs(ii - jj) > horizon] = 0.0
    w = np.where(corr >= min_correlation, corr, 0.0)
    np.fill_diagonal(w, 0.0)
    w = np.minimum(w, w.T)
    d = 0.5 * (shifts - shifts.T)
    lap_t = np.zeros((t_len, t_len))
    if t_len > 1:
        idx = np.arange(t_len - 1)
        lap_t[idx, idx] += 1
        lap_t[idx + 1, idx + 1] += 1
        lap_t[idx, idx + 1] -= 1
        lap_t[idx + 1, idx] -= 1
    for _ in range(3):
        a = np.diag(w.sum(axis=1)) - w + smoothness * lap_t + 1e-6 * np.eye(t_len)
        p = np.linalg.solve(a, (w * d).sum(axis=0))
        resid = np.abs(p[None, :] - p[:, None] - d)
        scale = np.median(resid[w > 0]) if (w > 0).any() else 0.0
        w = np.where(resid <= max(4.0 * 1.4826 * scale, 1.0), w, 0.0)
    return p - np.median(p)


@pytest.mark.parametrize("t_len, n_y, horizon", [(40, 120, 5), (4, 120, 10), (300, 400, 60)])
def test_banded_motion_solve_equals_the_dense_one(t_len, n_y, horizon):
    """Pairwise shifts kept in a band of ±horizon bins and solved as a banded system: the same displacement as the dense
    T × T matrices (which cost 200 MB per depth window for an hour); a horizon beyond the recording, and a raster
    computed in two pieces (the last case), included. Bad bins (noise only) exercise the weights and the robust drops."""
    from engine.ephys.motion import _pairwise_shifts, _solve

    rng = np.random.default_rng(t_len)
    truth = 12 * np.sin(np.arange(t_len) / 7.0)
    yy = np.arange(n_y)
    peaks = rng.uniform(20, n_y - 20, 8)
    raster = sum(np.exp(-0.5 * ((yy[None] - c - truth[:, None]) / 3.0) ** 2) for c in peaks) + 0.05 * rng.random((t_len, n_y))
    raster[rng.random(t_len) < 0.1] = rng.random((1, n_y))  # a few bins of noise
    shifts, corr = _pairwise_shifts(raster, 30, horizon, None)
    assert shifts.shape == (t_len, 2 * min(horizon, t_len - 1) + 1)
    np.testing.assert_allclose(_solve(shifts, corr, 0.1, 1.0), _dense_shifts_and_solve(raster, 30, horizon), atol=1e-6)
