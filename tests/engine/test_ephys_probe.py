"""Probe geometry: probeinterface JSON, Kilosort channel maps (.json/.mat), linear default, mismatches."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from engine.ephys.probe import Probe, linear_probe, read_probe, write_probe
from engine.errors import InputError


def test_probeinterface_round_trip(tmp_path):
    probe = Probe(np.array([[0, 0], [32, 10], [0, 20], [32, 30]]), [3, 2, 1, 0], name="p")
    path = write_probe(tmp_path / "probe.json", probe)
    back = read_probe(path, n_channels_file=4)
    np.testing.assert_allclose(back.positions, probe.positions)
    np.testing.assert_array_equal(back.channel_map, [3, 2, 1, 0])


def test_probeinterface_unwired_contacts_dropped(tmp_path):
    meta = {"specification": "probeinterface", "probes": [{"ndim": 2, "contact_positions": [[0, 0], [0, 20], [0, 40]],
                                                           "device_channel_indices": [0, -1, 1]}]}
    (tmp_path / "p.json").write_text(json.dumps(meta))
    probe = read_probe(tmp_path / "p.json", 2)
    assert probe.n_channels == 2 and probe.positions[1, 1] == 40


def test_kilosort_json_and_mat(tmp_path):
    from scipy.io import savemat

    ks = {"chanMap": [1, 2, 3, 4], "xc": [0, 16, 0, 16], "yc": [0, 0, 20, 20], "kcoords": [1, 1, 1, 1], "connected": [1, 1, 0, 1]}
    (tmp_path / "chanMap.json").write_text(json.dumps(ks))
    a = read_probe(tmp_path / "chanMap.json", 4)
    np.testing.assert_array_equal(a.channel_map, [0, 1, 3])  # 1-based → 0-based, disconnected dropped
    savemat(tmp_path / "chanMap.mat", {k: np.asarray(v, float) for k, v in ks.items()})
    b = read_probe(tmp_path / "chanMap.mat", 4)
    np.testing.assert_array_equal(b.channel_map, a.channel_map)
    np.testing.assert_allclose(b.positions, a.positions)


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
