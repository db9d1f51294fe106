"""Preprocessing: chunked output equals whole-array output; whitening; filter margins."""

from __future__ import annotations

import numpy as np
import pytest

from engine.ephys.preprocess import ArrayRecording, Int16Traces, PreprocessParams, Preprocessor, bandpass_sos, filter_margin, zca
from engine.ephys.probe import linear_probe


def _recording(n=24000, c=8, fs=30000.0, seed=0):
    rng = np.random.default_rng(seed)
    mixing = np.eye(c) + 0.15 * rng.standard_normal((c, c))  # well conditioned: eps regularization stays negligible
    data = rng.standard_normal((n, c)) @ mixing.T * 20 + 100 * np.sin(np.arange(n) / fs * 2 * np.pi * 50)[:, None]
    return ArrayRecording(data.astype(np.float32), fs)


@pytest.mark.parametrize("whiten", ["global", "local"])
def test_chunk_borders_leave_no_artefacts(tmp_path, whiten):
    rec = _recording()
    probe = linear_probe(rec.n_channels, warn=False)
    params = PreprocessParams(whiten=whiten, chunk_seconds=0.07, common_reference=True)
    pre = Preprocessor(rec.sample_rate, probe.channel_map, probe.positions, params)
    pre.fit(rec)
    chunked = np.load(pre.write(rec, tmp_path / "w.npy").filename)
    whole = pre.filter(rec.read(0, rec.n_samples)) @ pre.whitening.T
    scale = np.abs(whole).max()
    assert np.abs(chunked - whole).max() < 1e-5 * scale  # float32 rounding only
    # an arbitrary window (what the GUI asks for) also matches
    np.testing.assert_allclose(pre.read(rec, 5001, 9333), whole[5001:9333], atol=1e-5 * scale)


@pytest.mark.parametrize("whiten", ["global", "none"])
def test_write_fitting_from_its_own_output_equals_fit_then_write(tmp_path, whiten):
    """write(fit_seconds=…) estimates the whitening from the filtered data it wrote (no second
    filtering) and whitens the file in place: the same whitening and output as fit() then write()."""
    rec = _recording()
    params = PreprocessParams(whiten=whiten, chunk_seconds=0.07, common_reference=True)
    pre = Preprocessor(rec.sample_rate, np.arange(8), None, params).fit(rec, max_seconds=0.6)
    expected = np.load(pre.write(rec, tmp_path / "a.npy").filename)
    once = Preprocessor(rec.sample_rate, np.arange(8), None, params)
    got = np.load(once.write(rec, tmp_path / "b.npy", fit_seconds=0.6).filename)
    np.testing.assert_allclose(once.whitening, pre.whitening, rtol=1e-4, atol=1e-6)
    assert np.abs(got - expected).max() < 1e-4 * np.abs(expected).max()
    # chunks filtered in parallel threads: the same file
    threaded = Preprocessor(rec.sample_rate, np.arange(8), None, params)
    np.testing.assert_array_equal(np.load(threaded.write(rec, tmp_path / "c.npy", fit_seconds=0.6, workers=3).filename), got)


def test_whitening_flattens_noise_and_removes_line_noise():
    rec = _recording(n=60000)
    pre = Preprocessor(rec.sample_rate, np.arange(8), None, PreprocessParams(common_reference=False)).fit(rec)
    w = pre.read(rec, 0, rec.n_samples)
    cov = np.cov(w[2000:-2000].T)
    assert np.allclose(np.diag(cov), 1.0, atol=0.1)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 0.1
    spectrum = np.abs(np.fft.rfft(w[:, 0])) ** 2
    freqs = np.fft.rfftfreq(len(w), 1 / rec.sample_rate)
    assert spectrum[(freqs > 40) & (freqs < 60)].sum() < 1e-4 * spectrum.sum()  # 50 Hz removed by the band-pass
    assert np.allclose(pre.whitening_inverse @ pre.whitening, np.eye(8), atol=1e-3)


def test_filter_margin_and_zca():
    sos = bandpass_sos(30000, 300, 6000)
    m = filter_margin(sos)
    assert 100 < m < 30000 * 0.05  # a few ms
    assert bandpass_sos(15000, 300, 7400).shape[0] < sos.shape[0]  # near Nyquist: high-pass only
    cov = np.array([[4.0, 1.0], [1.0, 2.0]])
    w = zca(cov, eps_fraction=0)
    np.testing.assert_allclose(w @ cov @ w.T, np.eye(2), atol=1e-9)
    np.testing.assert_allclose(w, w.T)  # ZCA: symmetric, the closest whitening to identity


def test_state_round_trip():
    rec = _recording(n=8000)
    pre = Preprocessor(rec.sample_rate, np.arange(8)).fit(rec)
    again = Preprocessor.from_state(pre.state())
    np.testing.assert_array_equal(again.read(rec, 100, 900), pre.read(rec, 100, 900))


def test_median_rows_equals_np_median():
    from engine.ephys.preprocess import median_rows

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 32, 385):
        x = rng.standard_normal((50, n))
        x[:, : n // 2] = x[:, :1]  # ties
        np.testing.assert_array_equal(median_rows(x), np.median(x, axis=1))
        np.testing.assert_array_equal(median_rows(x.astype(np.float32)), np.median(x.astype(np.float32), axis=1))


@pytest.mark.parametrize("whiten", ["global", "none"])
def test_int16_file_matches_the_float32_file_to_its_rounding(tmp_path, whiten):
    """write(dtype=int16): the same whitening, and traces within the rounding of two int16 stages (filtered, then
    whitened: well under 0.01 noise SD) of the float32 file; reading (rows, channels) equals reading rows then channels;
    values beyond the range are clipped and counted."""
    rec = _recording()
    params = PreprocessParams(whiten=whiten, chunk_seconds=0.07, common_reference=True)
    ref = Preprocessor(rec.sample_rate, np.arange(8), None, params)
    expected = np.load(ref.write(rec, tmp_path / "f.npy", fit_seconds=0.6).filename)
    pre = Preprocessor(rec.sample_rate, np.arange(8), None, params)
    got = pre.write(rec, tmp_path / "i.npy", fit_seconds=0.6, dtype=np.int16)
    assert isinstance(got, Int16Traces) and np.load(tmp_path / "i.npy").dtype == np.int16 and got.shape == expected.shape
    np.testing.assert_allclose(pre.whitening, ref.whitening, rtol=1e-3, atol=1e-5)
    sd = np.median(np.abs(expected), axis=0) / 0.6745  # the noise SD of each channel (1 when whitened)
    err = (got[:] - expected) / sd
    assert np.abs(err).max() < 0.01 and 0 < np.abs(err).std() < 0.003
    chans = np.array([5, 0, 3])
    np.testing.assert_array_equal(got[100:200, chans], got[100:200][:, chans])
    got[0:2] = np.array([[1e6] * 8, [0.5] * 8], np.float32) * sd
    assert got.clipped == 8 and np.allclose(got[0], 32767 * got.step) and np.allclose(got[1], 0.5 * sd, atol=got.step)
