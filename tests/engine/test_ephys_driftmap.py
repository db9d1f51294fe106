"""The drift map's engine: spike depths from spike_positions.npy, else Phy's PC-feature centre of mass
(checked against phylib's own TemplateModel.get_depths), else the template's energy centre;
amplitudes scaled by the unwhitened template; deterministic subsets; motion.npz read and checked."""

import numpy as np
import pytest

from engine.ephys.driftmap import (load_motion, pc_feature_depths, read_drift_map, subsample, template_depths)
from engine.errors import InputError

N_CH, K, D, P = 16, 3, 24, 4


def phy_folder(folder, n=900, seed=0, positions=False, features=True):
    """A Phy folder whose spike depths are known: channels 20 µm apart, template k centred on a channel,
    each spike's first PC positive on its template's four nearest channels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.py").write_text("dat_path = 'missing.bin'\nn_channels_dat = 16\ndtype = 'int16'\noffset = 0\n"
                                      "sample_rate = 30000.0\nhp_filtered = True\n")
    ch_pos = np.stack([np.tile([0.0, 16.0], N_CH // 2), 20.0 * np.arange(N_CH)], axis=1).astype(np.float32)
    centres = np.array([3, 8, 12])
    shape = -np.exp(-0.5 * ((np.arange(D) - 8) / 2.0) ** 2)
    templates = np.zeros((K, D, N_CH), np.float32)
    for k, c in enumerate(centres):
        templates[k] = shape[:, None] * np.exp(-0.5 * ((np.arange(N_CH) - c) / 1.5) ** 2)[None, :]
    winv = np.diag(rng.uniform(5, 10, N_CH)).astype(np.float32)  # unwhitening: per-channel gains
    st = np.sort(rng.choice(60 * 30000, n, replace=False)).astype(np.uint64)
    spike_templates = rng.integers(0, K, n).astype(np.uint32)
    amplitudes = rng.uniform(5, 50, n).astype(np.float32)
    pc_ind = np.stack([np.argsort(np.abs(np.arange(N_CH) - c))[:P] for c in centres]).astype(np.uint32)
    pcf = rng.normal(0, 1, (n, 3, P)).astype(np.float32)
    pcf[:, 0, :] = rng.uniform(0.1, 5, (n, P))
    pcf[5, 0, :] = -1.0  # no positive first PC: falls back to its template's depth
    for name, a in (("spike_times", st), ("spike_templates", spike_templates), ("spike_clusters", spike_templates),
                    ("amplitudes", amplitudes), ("templates", templates), ("channel_map", np.arange(N_CH, dtype=np.int32)),
                    ("channel_positions", ch_pos), ("whitening_mat_inv", winv),
                    ("whitening_mat", np.linalg.inv(winv).astype(np.float32))):
        np.save(folder / f"{name}.npy", a)
    if features:
        np.save(folder / "pc_features.npy", pcf)
        np.save(folder / "pc_feature_ind.npy", pc_ind)
    truth = rng.uniform(0, 300, (n, 2)).astype(np.float32)
    if positions:
        np.save(folder / "spike_positions.npy", truth)
    return {"times": st, "templates": spike_templates, "amplitudes": amplitudes, "unwhitened": templates @ winv,
            "pcf": pcf, "pc_ind": pc_ind, "ch_pos": ch_pos, "positions": truth}


def test_depths_from_spike_positions(tmp_path):
    truth = phy_folder(tmp_path / "phy", positions=True)
    drift = read_drift_map(tmp_path / "phy")
    assert drift.depth_source == "spike positions" and drift.n_total == 900 and not drift.subsampled
    np.testing.assert_array_equal(drift.depths_um, truth["positions"][:, 1])
    np.testing.assert_allclose(drift.times_s, truth["times"] / 30000.0)
    assert drift.probe_depth_um == (0.0, 300.0) and drift.motion is None


def test_depths_from_pc_features_match_phylib(tmp_path):
    truth = phy_folder(tmp_path / "phy")
    drift = read_drift_map(tmp_path / "phy")
    assert drift.depth_source == "PC features"
    # directly: Σ y·max(f,0)² / Σ max(f,0)² over the template's feature channels
    f = np.maximum(truth["pcf"][:, 0, :].astype(np.float64), 0) ** 2
    y = truth["ch_pos"][truth["pc_ind"][truth["templates"]], 1]
    with np.errstate(invalid="ignore"):
        direct = (f * y).sum(1) / f.sum(1)
    template_y = template_depths(truth["unwhitened"], truth["ch_pos"])
    direct[5] = template_y[truth["templates"][5]]  # no positive feature
    np.testing.assert_allclose(drift.depths_um, direct, rtol=1e-5, atol=1e-3)
    # and as Phy itself computes it
    phylib_model = pytest.importorskip("phylib.io.model")
    model = phylib_model.TemplateModel(dir_path=tmp_path / "phy", sample_rate=30000.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        theirs = model.get_depths()
    ok = np.isfinite(theirs)
    assert ok.sum() == 899 and not ok[5]  # phylib leaves the spike without positive features NaN
    np.testing.assert_allclose(drift.depths_um[ok], theirs[ok], rtol=1e-5, atol=1e-3)


def test_first_pc_sign_is_taken_per_template(tmp_path):
    """A sorter whose first PC has the other sign (spikes project negatively): the same depths."""
    truth = phy_folder(tmp_path / "phy")
    kilosort_sign = read_drift_map(tmp_path / "phy").depths_um
    np.save(tmp_path / "phy" / "pc_features.npy", truth["pcf"] * np.array([-1, 1, 1], np.float32)[None, :, None])
    other_sign = read_drift_map(tmp_path / "phy").depths_um
    keep = np.arange(900) != 5  # its features were all negative: now all positive
    np.testing.assert_allclose(other_sign[keep], kilosort_sign[keep], rtol=1e-6)


def test_depths_from_templates_without_features(tmp_path):
    truth = phy_folder(tmp_path / "phy", features=False)
    drift = read_drift_map(tmp_path / "phy")
    assert drift.depth_source == "templates"
    energy = (truth["unwhitened"].astype(np.float64) ** 2).sum(1)
    expected = energy @ truth["ch_pos"][:, 1] / energy.sum(1)
    np.testing.assert_allclose(drift.depths_um, expected[truth["templates"]], rtol=1e-5)
    # with the same gain on every channel, the symmetric templates centred on channels 3, 8, 12 sit at their depths
    np.save(tmp_path / "phy" / "whitening_mat_inv.npy", 7 * np.eye(N_CH, dtype=np.float32))
    drift = read_drift_map(tmp_path / "phy")
    np.testing.assert_allclose(drift.depths_um, np.array([60.0, 160.0, 240.0])[truth["templates"]], atol=0.05)


def test_amplitudes_are_scaled_by_the_unwhitened_template(tmp_path):
    truth = phy_folder(tmp_path / "phy")
    drift = read_drift_map(tmp_path / "phy")
    peak = np.abs(truth["unwhitened"]).max(axis=(1, 2))
    np.testing.assert_allclose(drift.amplitudes, truth["amplitudes"] * peak[truth["templates"]], rtol=1e-5)
    assert drift.amplitude_unit == "a.u."  # not our own sort: the units are the sorter's
    lo, hi = drift.amplitude_limits()
    assert 0 < lo < hi <= drift.amplitudes.max()


def test_big_folders_are_subsampled_the_same_way_every_time(tmp_path):
    truth = phy_folder(tmp_path / "phy", n=5000)
    a = read_drift_map(tmp_path / "phy", max_spikes=1000)
    b = read_drift_map(tmp_path / "phy", max_spikes=1000)
    assert a.subsampled and a.n_total == 5000 and len(a.spikes) == 1000
    np.testing.assert_array_equal(a.spikes, b.spikes)
    assert np.all(np.diff(a.spikes) > 0)
    np.testing.assert_allclose(a.times_s, truth["times"][a.spikes] / 30000.0)
    full = read_drift_map(tmp_path / "phy")
    np.testing.assert_allclose(a.depths_um, full.depths_um[a.spikes], rtol=1e-6)  # the subset's own depths
    np.testing.assert_array_equal(subsample(10, 20), np.arange(10))


def test_raster_keeps_the_largest_amplitude_of_each_dot(tmp_path):
    phy_folder(tmp_path / "phy", positions=True)
    drift = read_drift_map(tmp_path / "phy")
    drift.times_s = np.array([1.0, 1.0, 50.0])
    drift.depths_um = np.array([100.0, 100.0, 250.0], np.float32)
    drift.amplitudes = np.array([3.0, 7.0, 2.0], np.float32)
    drift.duration_s = 60.0
    image, (t0, t1, y0, y1) = drift.raster(n_time=60, n_depth=32, dot=1)
    assert (t0, t1, y0, y1) == (0.0, 60.0, -10.0, 310.0)
    assert np.isfinite(image).sum() == 2
    assert image[1, int((100 + 10) / 320 * 32)] == 7.0 and image[50, int((250 + 10) / 320 * 32)] == 2.0
    dots, _ = drift.raster(n_time=60, n_depth=32, dot=2)
    assert np.isfinite(dots).sum() == 8 and np.nanmax(dots) == 7.0


def write_motion(folder, **overrides):
    z = {"temporal_bins_s": np.arange(0, 60, 2.0), "spatial_bins_um": np.array([75.0, 225.0]),
         "displacement_um": np.zeros((30, 2), np.float32), "rigid": np.array(False)}
    z["displacement_um"][:, 0] = 10 * np.sin(np.arange(30) / 5)
    z.update(overrides)
    np.savez(folder / "motion.npz", **{k: v for k, v in z.items() if v is not None})


def test_motion_is_read_with_the_map(tmp_path):
    phy_folder(tmp_path / "phy", positions=True)
    assert load_motion(tmp_path / "phy") is None
    write_motion(tmp_path / "phy")
    motion = read_drift_map(tmp_path / "phy").motion
    assert not motion.rigid and motion.displacement_um.shape == (30, 2)
    (t, y0), (_, y1) = motion.lines()
    np.testing.assert_allclose(y0, 75 + 10 * np.sin(np.arange(30) / 5), rtol=1e-6)
    np.testing.assert_allclose(y1, 225.0)
    write_motion(tmp_path / "phy", spatial_bins_um=np.array([150.0]), displacement_um=np.ones((30, 1), np.float32),
                 rigid=np.array(True))
    assert load_motion(tmp_path / "phy").rigid


@pytest.mark.parametrize("overrides, words", [
    ({"rigid": None}, "lacks rigid"),
    ({"displacement_um": np.zeros((29, 2))}, "time bins × depth blocks"),
    ({"displacement_um": np.full((30, 2), np.nan)}, "NaN"),
    ({"rigid": np.array(True)}, "one depth block"),
    ({"rigid": np.array([1, 0])}, "scalar bool"),
    ({"temporal_bins_s": np.zeros((0,))}, "non-empty"),
])
def test_bad_motion_files_say_what_is_wrong(tmp_path, overrides, words):
    write_motion(tmp_path, **overrides)
    with pytest.raises(InputError, match=words):
        load_motion(tmp_path)


def test_damaged_motion_file(tmp_path):
    (tmp_path / "motion.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="damaged"):
        load_motion(tmp_path)


def test_bad_folders_say_what_is_wrong(tmp_path):
    with pytest.raises(InputError, match="no params.py"):
        read_drift_map(tmp_path)
    phy_folder(tmp_path / "a", positions=True)
    np.save(tmp_path / "a" / "spike_positions.npy", np.zeros((900, 3), np.float32))
    with pytest.raises(InputError, match=r"spike_positions.npy must be 900 spikes × 2"):
        read_drift_map(tmp_path / "a")
    bad = np.zeros((900, 2), np.float32)
    bad[7, 1] = np.nan
    np.save(tmp_path / "a" / "spike_positions.npy", bad)
    with pytest.raises(InputError, match="first: spike 7"):
        read_drift_map(tmp_path / "a")
    phy_folder(tmp_path / "b")
    np.save(tmp_path / "b" / "amplitudes.npy", np.full(900, np.nan, np.float32))
    with pytest.raises(InputError, match="NaN"):
        read_drift_map(tmp_path / "b")
    np.save(tmp_path / "b" / "amplitudes.npy", np.ones(899, np.float32))
    with pytest.raises(InputError, match="one value per spike"):
        read_drift_map(tmp_path / "b")
    phy_folder(tmp_path / "c")
    (tmp_path / "c" / "templates.npy").unlink()
    with pytest.raises(InputError, match="missing templates.npy"):
        read_drift_map(tmp_path / "c")
    phy_folder(tmp_path / "d")
    (tmp_path / "d" / "spike_times.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(InputError, match="damaged"):
        read_drift_map(tmp_path / "d")


def test_pc_feature_depths_by_hand():
    positions = np.array([[0, 0], [0, 20], [0, 40]], float)
    depths = pc_feature_depths(np.array([[1.0, 1.0, -3.0], [0.0, 0.0, 2.0], [-1.0, 0.0, 0.0]]),
                               np.array([[0, 1, 2], [0, 1, 2], [0, 1, 2]]), positions)
    np.testing.assert_allclose(depths[:2], [10.0, 40.0])
    assert np.isnan(depths[2])


def test_cli_prints_and_saves_the_map(tmp_path, capsys):
    from engine.cli import main

    truth = phy_folder(tmp_path / "phy", positions=True)
    write_motion(tmp_path / "phy")
    out = tmp_path / "drift.npz"
    assert main(["driftmap", str(tmp_path / "phy"), "-o", str(out), "--max-spikes", "500"]) == 0
    text = capsys.readouterr().out
    assert "500 of 900 spikes" in text and "spike positions" in text and "non-rigid, 2 depth blocks" in text
    with np.load(out) as z:
        np.testing.assert_array_equal(z["depths_um"], truth["positions"][z["spikes"], 1])
        assert z["displacement_um"].shape == (30, 2)
    assert main(["driftmap", str(tmp_path / "nothing")]) == 2
    assert "no params.py" in capsys.readouterr().err
