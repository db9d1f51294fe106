"""Probe geometry: probeinterface JSON and .prb, SpikeGLX .meta, Kilosort channel maps (.json 0-based / .mat 1-based),
linear default, mismatches; our files read back by probeinterface itself."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from engine.ephys.probe import Probe, linear_probe, read_probe, write_probe
from engine.errors import InputError


def test_probeinterface_round_trip(tmp_path):
    probe = Probe(np.array([[0, 0], [32, 10], [0, 20], [32, 30]]), [3, 2, 1, 0], [0, 0, 1, 1], name="p")
    path = write_probe(tmp_path / "probe.json", probe)
    back = read_probe(path, n_channels_file=4)
    np.testing.assert_allclose(back.positions, probe.positions)
    np.testing.assert_array_equal(back.channel_map, [3, 2, 1, 0])
    np.testing.assert_array_equal(back.shank_ids, [0, 0, 1, 1])


def test_written_probe_reads_in_probeinterface(tmp_path):
    """probeinterface's own reader (and so SpikeInterface's set_probe) takes our file: it once failed on contact_plane_axes."""
    import probeinterface

    probe = Probe(np.array([[0, 0], [32, 10], [0, 20], [32, 30]]), [3, 2, 1, 0], [0, 0, 1, 1], name="p")
    group = probeinterface.read_probeinterface(write_probe(tmp_path / "probe.json", probe))
    np.testing.assert_allclose(group.get_global_contact_positions(), probe.positions)
    np.testing.assert_array_equal(group.get_global_device_channel_indices()["device_channel_indices"], [3, 2, 1, 0])
    assert list(group.probes[0].shank_ids) == ["0", "0", "1", "1"]


def test_older_probe_json_without_plane_axes_still_reads(tmp_path):
    meta = {"specification": "probeinterface", "version": "0.2.21", "probes": [
        {"ndim": 2, "si_units": "um", "contact_positions": [[0, 0], [0, 20]], "contact_shapes": ["circle"] * 2,
         "contact_shape_params": [{"radius": 6}] * 2, "device_channel_indices": [1, 0], "shank_ids": ["0", "0"]}]}
    (tmp_path / "old.probe.json").write_text(json.dumps(meta))
    np.testing.assert_array_equal(read_probe(tmp_path / "old.probe.json", 2).channel_map, [1, 0])


def test_prb_through_probeinterface(tmp_path):
    """A .prb (Klusta / SpyKING CIRCUS): two shanks in channel_groups, geometry keyed by channel."""
    (tmp_path / "tetrodes.prb").write_text(
        "channel_groups = {\n"
        "    0: {'channels': [0, 1, 2, 3], 'geometry': {0: (0, 0), 1: (20, 0), 2: (0, 20), 3: (20, 20)}},\n"
        "    1: {'channels': [5, 4, 7, 6], 'geometry': {5: (200, 0), 4: (220, 0), 7: (200, 20), 6: (220, 20)}},\n"
        "}\n")
    probe = read_probe(tmp_path / "tetrodes.prb", 8)
    np.testing.assert_array_equal(probe.channel_map, [0, 1, 2, 3, 5, 4, 7, 6])
    np.testing.assert_allclose(probe.positions[4], [200, 0])
    assert len(set(probe.shank_ids[:4])) == 1 and probe.shank_ids[0] != probe.shank_ids[4]
    nb = probe.neighbours(500.0)
    assert not set(nb[0][nb[0] >= 0]) & {4, 5, 6, 7}  # no neighbours across shanks


def test_spikeglx_meta_geometry(tmp_path):
    """Neuropixels 1.0 geometry from the .meta's IMRO table (probeinterface's reader): 384 contacts in
    the checkerboard of 4 columns (x 0/16/32/48 µm), 20 µm rows, wired to file columns 0..383 of 385."""
    from lab_files import write_spikeglx

    bin_path = write_spikeglx(tmp_path, np.zeros((100, 384), np.int16))
    probe = read_probe(bin_path.with_suffix(".meta"), 385)
    assert probe.n_channels == 384 and probe.channel_map.max() == 383
    assert set(np.unique(probe.positions[:, 0])) == {0.0, 16.0, 32.0, 48.0}
    np.testing.assert_allclose(probe.positions[:4], [[16, 0], [48, 0], [0, 20], [32, 20]])


def test_probeinterface_unwired_contacts_dropped(tmp_path):
    meta = {"specification": "probeinterface", "probes": [{"ndim": 2, "contact_positions": [[0, 0], [0, 20], [0, 40]],
                                                           "device_channel_indices": [0, -1, 1]}]}
    (tmp_path / "p.json").write_text(json.dumps(meta))
    probe = read_probe(tmp_path / "p.json", 2)
    assert probe.n_channels == 2 and probe.positions[1, 1] == 40


def test_kilosort_mat_is_one_based_and_kilosort4_json_zero_based(tmp_path):
    """The same probe both ways: MATLAB chanMap.mat counts from 1, Kilosort 4's probe.json from 0
    (as kilosort.io.load_probe reads them); disconnected contacts are dropped."""
    from scipy.io import savemat

    mat = {"chanMap": [1, 2, 3, 4], "xc": [0, 16, 0, 16], "yc": [0, 0, 20, 20], "kcoords": [1, 1, 1, 1], "connected": [1, 1, 0, 1]}
    savemat(tmp_path / "chanMap.mat", {k: np.asarray(v, float) for k, v in mat.items()})
    a = read_probe(tmp_path / "chanMap.mat", 4)
    np.testing.assert_array_equal(a.channel_map, [0, 1, 3])
    ks4 = {"chanMap": [0, 1, 2, 3], "xc": [0.0, 16.0, 0.0, 16.0], "yc": [0.0, 0.0, 20.0, 20.0], "kcoords": [0.0] * 4, "n_chan": 4}
    (tmp_path / "probe.json").write_text(json.dumps(ks4))  # what kilosort.io.save_probe writes
    b = read_probe(tmp_path / "probe.json", 4)
    np.testing.assert_array_equal(b.channel_map, [0, 1, 2, 3])
    np.testing.assert_allclose(b.positions[[0, 1, 3]], a.positions)
    with pytest.raises(InputError, match="counts from 1"):
        savemat(tmp_path / "zero.mat", {k: np.asarray(v, float) for k, v in ks4.items()})
        read_probe(tmp_path / "zero.mat")


def test_channel_count_mismatch(tmp_path):
    write_probe(tmp_path / "p32.json", linear_probe(32, warn=False))
    with pytest.raises(InputError) as info:
        read_probe(tmp_path / "p32.json", n_channels_file=31)
    assert "32 channels" in info.value.message and "31" in info.value.message
    with pytest.raises(InputError, match="16 channels"):
        linear_probe(16, warn=False).check_recording(32)
    linear_probe(384, warn=False).check_recording(385)  # Neuropixels + sync channel is fine


def test_bad_files(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(InputError, match="neither probeinterface"):
        read_probe(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{bad")
    with pytest.raises(InputError, match="not valid JSON"):
        read_probe(tmp_path / "y.json")
    with pytest.raises(InputError, match="not found"):
        read_probe(tmp_path / "missing.json")


def test_linear_default_warns(caplog):
    with caplog.at_level(logging.WARNING):
        probe = linear_probe(4)
    assert "linear probe" in caplog.text
    assert probe.positions[3, 1] == 60
    nb = probe.neighbours(25.0)
    assert list(nb[0][nb[0] >= 0]) == [0, 1]
