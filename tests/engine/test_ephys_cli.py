"""`neurowb simulate-ephys` → `neurowb sort` → `neurowb qc`, and the messages for bad input."""

from __future__ import annotations

import json

import numpy as np

from engine.cli import main
from engine.ephys.cli import register
from engine.ephys.probe import linear_probe, write_probe


def run(argv):
    return main(argv, registrations=[register])


def test_round_trip(tmp_path, capsys):
    out = tmp_path / "sim"
    assert run(["simulate-ephys", "-o", str(out), "--channels", "8", "--units", "3", "--duration", "6", "--seed", "4"]) == 0
    raw, probe = out / "recording.raw", out / "recording.probe.json"
    assert raw.is_file() and probe.is_file() and (out / "recording_ground_truth.npz").is_file()
    assert json.loads(probe.read_text())["specification"] == "probeinterface"
    phy = tmp_path / "phy"
    from lab_files import NWB_METADATA, nwbinspector_problems

    (tmp_path / "meta.json").write_text(json.dumps(NWB_METADATA))
    assert run(["sort", str(raw), "--n-channels", "8", "--fs", "30000", "--gain", "0.195", "--probe", str(probe), "-o", str(phy),
                "--nwb", str(tmp_path / "units.nwb"), "--nwb-metadata", str(tmp_path / "meta.json")]) == 0
    assert nwbinspector_problems(tmp_path / "units.nwb") == []
    from spikeinterface.extractors import read_kilosort, read_nwb_sorting, read_phy

    assert read_nwb_sorting(str(tmp_path / "units.nwb")).get_sampling_frequency() == 30000
    n_clusters = len(np.unique(np.load(phy / "spike_clusters.npy")))
    assert len(read_phy(phy).unit_ids) == n_clusters  # SpikeInterface's Phy and Kilosort readers take the folder
    ks = read_kilosort(phy)
    assert len(ks.unit_ids) == n_clusters and ks.get_sampling_frequency() == 30000
    assert sum(len(ks.get_unit_spike_train(u)) for u in ks.unit_ids) == len(np.load(phy / "spike_times.npy"))
    text = capsys.readouterr().out
    assert "units" in text and "real time" in text
    assert "drift correction: none (estimated" in text  # auto on a static recording, two columns over 150 µm: estimated, nothing to undo
    assert np.load(phy / "spike_positions.npy").shape == (len(np.load(phy / "spike_times.npy")), 2) and (phy / "motion.npz").is_file()
    gt = np.load(out / "recording_ground_truth.npz")
    n_sorted = len(np.unique(np.load(phy / "spike_clusters.npy")))
    assert n_sorted == len(np.unique(gt["spike_units"]))
    # the metric columns Phy shows, as the window's sort writes them, for every cluster
    for name in ("SNR", "ISIViol", "PresenceRatio"):
        lines = (phy / f"cluster_{name}.tsv").read_text().splitlines()
        assert lines[0] == f"cluster_id\t{name}" and len(lines) == n_sorted + 1
    snr = {int(a): float(b) for a, b in (line.split("\t") for line in (phy / "cluster_SNR.tsv").read_text().splitlines()[1:])}
    assert min(snr.values()) > 3  # simulated units are well above the noise
    assert run(["qc", str(phy), "-o", str(tmp_path / "metrics.csv")]) == 0
    table = capsys.readouterr().out
    assert "SNR" in table and "ISI viol" in table
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("cluster_id,n_spikes,firing_rate") and len(lines) == n_sorted + 1
    # without a probe: linear with a warning; without layout flags: the sidecar's (and the residual pass on)
    assert run(["sort", str(raw), "-o", str(tmp_path / "phy2"), "--residual-threshold", "4.5"]) == 0
    assert "linear probe" in capsys.readouterr().err


def test_bad_inputs(tmp_path, capsys):
    raw = tmp_path / "odd.raw"
    np.zeros(8 * 1000 + 3, np.int16).tofile(raw)
    assert run(["sort", str(raw), "--n-channels", "8", "--fs", "30000", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not a multiple of n_channels × bytes per sample" in err and err.count("\n") == 1
    good = tmp_path / "rec.raw"
    np.zeros((1000, 8), np.int16).tofile(good)
    write_probe(tmp_path / "p16.json", linear_probe(16, warn=False))
    assert run(["sort", str(good), "--n-channels", "8", "--fs", "30000", "--probe", str(tmp_path / "p16.json"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "16 channels" in err and "the recording has 8" in err
    assert run(["sort", str(good), "--n-channels", "8", "--fs", "30000", "-o", str(tmp_path / "o"), "--nwb-metadata", "m.yaml"]) == 2
    assert "give --nwb FILE.nwb too" in capsys.readouterr().err
    assert run(["qc", str(tmp_path / "nothing")]) == 2
    assert "Phy folder not found" in capsys.readouterr().err
    assert run(["sort", str(good), "--n-channels", "8", "--fs", "30000", "--dtype", "int8", "-o", "x"]) == 2
    assert "invalid choice: 'int8'" in capsys.readouterr().err
    from engine.ephys.probe import Probe

    write_probe(tmp_path / "row.json", Probe(np.stack([np.arange(8) * 20.0, np.zeros(8)], axis=1), np.arange(8)))
    assert run(["sort", str(good), "--n-channels", "8", "--fs", "30000", "--probe", str(tmp_path / "row.json"), "--motion", "rigid",
                "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "needs contacts along the probe's depth" in err and "1 row" in err and err.count("\n") == 1
    assert run(["sort", str(good), "--n-channels", "8", "--fs", "30000", "--motion", "sideways", "-o", "x"]) == 2
    assert "invalid choice: 'sideways'" in capsys.readouterr().err
    assert run(["sort", str(good), "--n-channels", "8", "--fs", "30000", "--residual-threshold", "-1", "-o", "x"]) == 2
    assert "--residual-threshold" in capsys.readouterr().err
