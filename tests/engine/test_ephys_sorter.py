"""Sorter: exact score bookkeeping, recovery of simulated units, reconstruction and residual."""

from __future__ import annotations

import numpy as np
import pytest

from engine.ephys.groundtruth import compare, count_matches
from engine.ephys.preprocess import ArrayRecording
from engine.ephys.probe import Probe
from engine.ephys.sorter import SortParams, _Templates, _update_scores, sort_recording
from engine.ephys.synth import demo_probe, demo_recording


def test_score_updates_equal_recomputed_scores():
    """Removing a spike by the template cross-correlations = recomputing the conv on the residual."""
    import torch

    rng = np.random.default_rng(0)
    k, c, d, t = 3, 5, 11, 200
    tpl = _Templates(rng.standard_normal((k, c, d)), rank=3, device=torch.device("cpu"))
    x = rng.standard_normal((c, t)).astype(np.float32)
    x_res = x.copy()
    x_res[:, 50:50 + d] -= 2.5 * tpl.w[1]
    x_res[:, 55:55 + d] -= 1.5 * tpl.w[2]  # overlapping spikes of two units
    raw = tpl.scores(torch.as_tensor(x))
    padded = torch.zeros(k, raw.shape[1] + 2 * (d - 1))
    padded[:, d - 1: d - 1 + raw.shape[1]] = raw
    _update_scores(padded, tpl, 1, torch.tensor([50]), torch.tensor([2.5]))
    _update_scores(padded, tpl, 2, torch.tensor([55]), torch.tensor([1.5]))
    expected = tpl.scores(torch.as_tensor(x_res))
    np.testing.assert_allclose(padded[:, d - 1: d - 1 + raw.shape[1]].numpy(), expected.numpy(), atol=1e-4)
    # templates are unit norm and of the requested rank
    assert np.allclose(np.linalg.norm(tpl.w.reshape(k, -1), axis=1), 1, atol=1e-5)
    assert all(np.linalg.matrix_rank(w, tol=1e-5) == 3 for w in tpl.w)


def test_count_matches_and_compare():
    assert count_matches(np.array([10, 100, 200]), np.array([12, 95, 300]), 5) == 2
    gt_t = np.array([100, 1000, 2000, 3000, 150, 1150])
    gt_u = np.array([0, 0, 0, 0, 1, 1])
    c = compare(gt_t, gt_u, np.array([101, 999, 2002, 151, 1152, 5000]), np.array([7, 7, 7, 3, 3, 3]), sample_rate=30000)
    assert c.accuracy[0] == pytest.approx(3 / 4)  # tp 3, fn 1, fp 0
    assert c.accuracy[1] == pytest.approx(2 / 3)  # tp 2, fn 0, fp 1
    assert c.well_detected(0.7) == 1


@pytest.fixture(scope="module")
def small_sort():
    data, st, su, _ = demo_recording(duration=8.0, n_channels=12, n_units=4, noise_uv=10.0, seed=2)
    rec = ArrayRecording(data, 30000.0)
    probe = Probe(demo_probe(12), np.arange(12))
    result = sort_recording(rec, probe, SortParams(seed=0))
    return rec, st, su, result


def test_sorter_recovers_simulated_units(small_sort):
    rec, st, su, result = small_sort
    c = compare(st, su, result.spike_times, result.spike_units, rec.sample_rate)
    assert c.well_detected() == 4, c.summary()
    assert c.accuracy.mean() >= 0.95
    assert c.n_false_positive_units == 0
    assert result.info["drift_correction"] is False
    assert result.templates.shape[1:] == (12, result.n_samples_template)
    # one unit's spikes never closer than the template length (the model's constraint)
    for u in range(result.n_units):
        assert np.diff(result.spike_starts()[result.spike_units == u]).min() >= result.n_samples_template


def test_reconstruction_and_residual(small_sort):
    rec, st, su, result = small_sort
    a, b = 30000, 60000
    data = result.residual(rec, a, b) + result.reconstruct(a, b)
    resid = result.residual(rec, a, b, whitened=True)
    model = result.reconstruct(a, b, whitened=True)
    assert resid.shape == model.shape == (b - a, 12)
    assert np.abs(model).max() > 8  # spikes are in the model
    assert resid.std() < 1.15  # whitened noise SD is 1: what is left is noise
    assert np.abs(resid).max() < 0.5 * np.abs(model).max()
    assert data.shape == (b - a, 12)


def test_no_spikes_gives_no_units():
    rng = np.random.default_rng(0)
    rec = ArrayRecording(rng.standard_normal((60000, 4)).astype(np.float32) * 10, 30000.0)
    result = sort_recording(rec, Probe(demo_probe(4), np.arange(4)))
    assert result.n_units == 0 and len(result.spike_times) == 0
