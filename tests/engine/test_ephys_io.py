"""Raw recordings: parameters, sidecars, memory-mapped reads, errors, demo data, real locust data."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from engine.ephys.io import RAW_EXTENSIONS, RawRecording, RecordingParams, read_sidecar, write_sidecar
from engine.ephys.synth import demo_probe, demo_recording, template_trough, write_demo_recording
from engine.errors import InputError


def need(shared_data: Path, relative: str) -> Path:
    path = shared_data / relative
    if not path.exists():
        pytest.skip(f"{relative} not in {shared_data}")
    return path


# -- parameters and sidecars ------------------------------------------------------------------

def test_params_validation():
    p = RecordingParams(n_channels=32, sample_rate=30000, dtype="i2")
    assert p.dtype == "int16" and p.sample_rate == 30000.0 and p.itemsize == 2
    with pytest.raises(InputError, match="int16, uint16, int32, float32"):
        RecordingParams(4, 15000, dtype="float64")
    with pytest.raises(InputError, match="not supported"):
        RecordingParams(4, 15000, dtype="bogus")
    with pytest.raises(InputError, match="Channel count"):
        RecordingParams(0, 15000)
    with pytest.raises(InputError, match="Channel count"):
        RecordingParams(2.5, 15000)
    with pytest.raises(InputError, match="Sample rate"):
        RecordingParams(4, -1)
    with pytest.raises(InputError, match="gain_uv"):
        RecordingParams(4, 15000, gain_uv=0)
    with pytest.raises(InputError, match="offset"):
        RecordingParams(4, 15000, offset=float("nan"))


@pytest.mark.parametrize("style", ["file", "stem"])
def test_sidecar_round_trip(tmp_path, style):
    raw = tmp_path / "rec.dat"
    params = RecordingParams(n_channels=8, sample_rate=20000.0, dtype="uint16", gain_uv=0.5, offset=32768)
    written = write_sidecar(raw, params)
    assert written == tmp_path / "rec.dat.json"
    if style == "stem":
        written.rename(tmp_path / "rec.json")
    assert read_sidecar(raw) == params
    assert read_sidecar(tmp_path / "other.dat") is None


def test_sidecar_errors(tmp_path):
    raw = tmp_path / "rec.bin"
    (tmp_path / "rec.bin.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_sidecar(raw)
    (tmp_path / "rec.bin.json").write_text(json.dumps({"sample_rate": 30000}))
    with pytest.raises(InputError, match="n_channels"):
        read_sidecar(raw)
    (tmp_path / "rec.bin.json").write_text(json.dumps({"n_channels": 4, "sample_rate": 30000, "dtype": "int8", "probe": "x"}))
    with pytest.raises(InputError) as info:
        read_sidecar(raw)
    assert "rec.bin.json" in info.value.message and "int8" in info.value.message


# -- reading ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["int16", "uint16", "int32", "float32"])
@pytest.mark.parametrize("ext", RAW_EXTENSIONS)
def test_round_trip(tmp_path, dtype, ext):
    rng = np.random.default_rng(1)
    n_samples, n_channels = 1000, 6
    raw = (rng.integers(0, 2000, (n_samples, n_channels))).astype(dtype)
    path = tmp_path / f"rec{ext}"
    raw.tofile(path)
    params = RecordingParams(n_channels, 10000.0, dtype, gain_uv=0.25, offset=1000)
    rec = RawRecording(path, params)
    assert isinstance(rec.raw, np.memmap)
    assert (rec.n_samples, rec.n_channels, rec.sample_rate) == (n_samples, n_channels, 10000.0)
    assert rec.duration == pytest.approx(0.1)
    out = rec.read(100, 200)
    assert out.dtype == np.float32 and out.shape == (100, n_channels)
    np.testing.assert_allclose(out, (raw[100:200].astype(np.float64) - 1000) * 0.25)
    np.testing.assert_allclose(rec.read(10, 20, channels=[4, 1]), (raw[10:20][:, [4, 1]].astype(np.float64) - 1000) * 0.25)
    np.testing.assert_allclose(rec.read(0, 5, channels=slice(0, 2)), (raw[:5, :2].astype(np.float64) - 1000) * 0.25)
    # clipped to the recording
    assert rec.read(-50, 10).shape == (10, n_channels)
    assert rec.read(990, 5000).shape == (10, n_channels)
    assert rec.read(2000, 3000).shape == (0, n_channels)
    with pytest.raises(InputError, match="channels 0..5"):
        rec.read(0, 10, channels=[6])
    rec.close()


def test_params_from_sidecar(tmp_path):
    path = tmp_path / "rec.raw"
    np.arange(4 * 100, dtype=np.int16).tofile(path)
    with pytest.raises(InputError, match="sidecar"):
        RawRecording(path)
    write_sidecar(path, RecordingParams(4, 1000.0))
    with RawRecording(path) as rec:
        assert rec.n_samples == 100 and rec.duration == pytest.approx(0.1)
        np.testing.assert_array_equal(rec.read(1, 2), [[4, 5, 6, 7]])


def test_size_not_multiple_of_frame(tmp_path):
    path = tmp_path / "odd.bin"
    np.zeros(4 * 1000 + 1, dtype=np.int16).tofile(path)  # 8002 bytes
    with pytest.raises(InputError) as info:
        RawRecording(path, RecordingParams(4, 30000))
    msg = info.value.message
    assert "8002 bytes" in msg and "4 × 2 = 8" in msg and "channel count" in msg and "odd.bin" in msg


def test_wrong_channel_count_suggests_ones_that_fit(tmp_path):
    path = tmp_path / "rec.dat"
    np.zeros((100, 32), dtype=np.int16).tofile(path)
    with pytest.raises(InputError) as info:
        RawRecording(path, RecordingParams(30, 30000))
    assert "32" in info.value.message.split("fit this size")[1]


def test_empty_and_missing(tmp_path):
    (tmp_path / "empty.raw").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        RawRecording(tmp_path / "empty.raw", RecordingParams(4, 30000))
    with pytest.raises(InputError, match="not found"):
        RawRecording(tmp_path / "missing.raw", RecordingParams(4, 30000))


# -- demo recording ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo():
    return demo_recording(duration=4.0, n_channels=16, sample_rate=30000.0, n_units=6, noise_uv=10.0, seed=3)


def test_demo_recording_ground_truth(demo):
    data, spike_times, spike_units, templates = demo
    fs = 30000.0
    assert data.dtype == np.float32 and data.shape == (120000, 16)
    assert templates.shape[0] == 6 and templates.shape[2] == 16
    assert np.all(np.diff(spike_times) >= 0) and len(spike_times) == len(spike_units)
    assert set(np.unique(spike_units)) <= set(range(6))
    trough = template_trough(fs)
    for u in range(6):
        st = spike_times[spike_units == u]
        assert len(st) > 3
        assert np.diff(st).min() >= 0.002 * fs - 1  # 2 ms refractory period
        peak_ch = int(np.abs(templates[u]).max(axis=0).argmax())
        w = templates[u][:, peak_ch]
        assert w.argmin() == pytest.approx(trough, abs=3) and w.min() < -50  # negative trough at the spike time
        assert w.max() > 0.1 * -w.min()  # biphasic
        support = np.flatnonzero(np.abs(w) > 0.05 * -w.min())
        assert 0.7 <= (support[-1] - support[0]) / fs * 1e3 <= 2.5  # ms
        # the spike is in the data at its time and channel: data at the trough is strongly negative
        at_trough = data[st, peak_ch]
        assert np.median(at_trough) < w.min() * 0.5
        assert np.median(at_trough) == pytest.approx(w.min(), abs=25)
        # the footprint decays across the probe
        amp = np.abs(templates[u]).max(axis=0)
        far = np.argsort(np.abs(demo_probe(16)[:, 1] - demo_probe(16)[peak_ch, 1]))[-3:]
        assert amp[far].max() < 0.2 * amp[peak_ch]


def test_demo_recording_residual_is_noise(demo):
    data, spike_times, spike_units, templates = demo
    residual = data.astype(np.float64).copy()
    trough = template_trough(30000.0)
    offsets = np.arange(templates.shape[1]) - trough
    for t, u in zip(spike_times, spike_units):
        residual[t + offsets] -= templates[u]
    assert residual.std() == pytest.approx(10.0, rel=0.05)
    # band-limited: almost no power below 100 Hz
    spectrum = np.abs(np.fft.rfft(residual[:, 0])) ** 2
    freqs = np.fft.rfftfreq(len(residual), 1 / 30000.0)
    assert spectrum[freqs < 100].sum() < 0.01 * spectrum.sum()


def test_write_demo_recording(tmp_path):
    path = tmp_path / "demo_recording.raw"
    params = write_demo_recording(path, duration=2.0, n_channels=8, n_units=3, seed=1)
    assert params.dtype == "int16" and params.n_channels == 8 and params.gain_uv == pytest.approx(0.195)
    assert read_sidecar(path) == params
    data, spike_times, spike_units, templates = demo_recording(duration=2.0, n_channels=8, n_units=3, seed=1)
    with RawRecording(path) as rec:
        assert rec.n_samples == data.shape[0] and rec.sample_rate == 30000.0
        np.testing.assert_allclose(rec.read(0, rec.n_samples), data, atol=0.195 / 2 + 1e-4)
    gt = np.load(tmp_path / "demo_recording_ground_truth.npz")
    np.testing.assert_array_equal(gt["spike_times"], spike_times)
    np.testing.assert_array_equal(gt["spike_units"], spike_units)
    np.testing.assert_allclose(gt["templates"], templates)
    assert gt["channel_positions"].shape == (8, 2)


# -- real data --------------------------------------------------------------------------------

@pytest.mark.shared_data
def test_real_locust_recording(shared_data):
    path = need(shared_data, "ephys/locust/locust_trial_01.raw")
    t0 = time.perf_counter()
    rec = RawRecording(path, RecordingParams(n_channels=4, sample_rate=15000, dtype="int16", offset=2056))
    opened = time.perf_counter() - t0
    assert opened < 0.5
    assert rec.n_samples == 431548 and rec.duration == pytest.approx(28.77, abs=0.01)
    data = rec.read(0, rec.n_samples)
    assert data.shape == (431548, 4)
    assert np.all(np.abs(data.mean(axis=0)) < 5)  # the offset is removed
    assert data.std(axis=0).min() > 10
    with pytest.raises(InputError, match="not a multiple"):
        RawRecording(path, RecordingParams(n_channels=3, sample_rate=15000))
