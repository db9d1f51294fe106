"""Recordings in the acquisition systems' formats, through SpikeInterface's extractors: SpikeGLX (.ap.bin +
.meta, or the run folder), Open Ephys binary, Intan .rhd, Neuralynx .ncs, Blackrock .ns5, NWB read lazily (each
file written by the test per its format's published layout, checked against what was written and neo's raw
reading). Layout, µV gains and probe come from the files; a SpikeGLX run sorts from the command line with no
layout flags and the probe of its .meta."""

from __future__ import annotations

import json

import numpy as np
import pytest
from lab_files import write_blackrock_nev, write_blackrock_ns5, write_intan_rhd, write_neuralynx, write_spikeglx

from engine.ephys.formats import ExtractorRecording, detect_format, open_recording
from engine.ephys.io import RawRecording
from engine.errors import InputError

GAIN_NP1 = 0.6 / 512 / 500 * 1e6  # µV per unit at AP gain 500


@pytest.fixture(scope="module")
def spikeglx(tmp_path_factory):
    """A 3 s Neuropixels 1.0 run with 5 simulated units (int16 at the NP1 gain) and its ground truth."""
    from engine.ephys.synth import demo_recording

    data, times, units, _templates = demo_recording(duration=3.0, n_channels=384, n_units=5, noise_uv=8.0, seed=3)
    counts = np.clip(np.round(data / GAIN_NP1), -32768, 32767).astype(np.int16)
    return write_spikeglx(tmp_path_factory.mktemp("glx"), counts), counts, times, units


def test_spikeglx_opens_by_bin_meta_or_folder_with_gains_and_probe(spikeglx):
    import probeinterface

    bin_path, counts, _times, _units = spikeglx
    for path in (bin_path, bin_path.with_suffix(".meta"), bin_path.parent, bin_path.parent.parent):
        assert detect_format(path) == ("spikeglx", bin_path.with_suffix(".meta"))
    rec = open_recording(bin_path)
    assert isinstance(rec, ExtractorRecording)
    assert (rec.n_channels, rec.sample_rate, rec.n_samples) == (384, 30000.0, len(counts))  # the sync channel left out
    np.testing.assert_allclose(rec.read(100, 200, [0, 7, 383]), counts[100:200, [0, 7, 383]] * GAIN_NP1, rtol=1e-6)
    np.testing.assert_allclose(rec.read(0, 50), counts[:50] * GAIN_NP1, rtol=1e-6)
    probe = rec.probe()
    expected = probeinterface.read_spikeglx(bin_path.with_suffix(".meta"))
    np.testing.assert_allclose(probe.positions, expected.contact_positions)
    np.testing.assert_array_equal(probe.channel_map, expected.device_channel_indices)
    binary, params = rec.binary_file()
    assert binary == bin_path and params.n_channels == 385 and params.gain_uv == pytest.approx(GAIN_NP1)


def test_neurowb_sort_spikeglx_without_questions(spikeglx, tmp_path, capsys):
    """`neurowb sort run.ap.bin -o PHY`: no layout flags, the probe drawn from the .meta; the Phy folder points
    Phy at the .ap.bin (385 columns) and SpikeInterface's read_phy and phylib load it."""
    from engine.cli import main
    from engine.ephys.cli import register

    bin_path, counts, times, units = spikeglx
    phy = tmp_path / "phy"
    assert main(["sort", str(bin_path), "-o", str(phy)], registrations=[register]) == 0
    err = capsys.readouterr().err
    assert "NP1000" in err and "linear" not in err
    from engine.ephys.phy import read_params_py

    params = read_params_py(phy / "params.py")
    assert params["dat_path"] == str(bin_path.resolve()) and params["n_channels_dat"] == 385 and params["dtype"] == "int16"
    import probeinterface

    np.testing.assert_allclose(np.load(phy / "channel_positions.npy"),
                               probeinterface.read_spikeglx(bin_path.with_suffix(".meta")).contact_positions)
    # the units found match the simulated ones: each big unit's spikes are found (±0.5 ms)
    st, sc = np.load(phy / "spike_times.npy").astype(np.int64), np.load(phy / "spike_clusters.npy")
    recalls = []
    for u in np.unique(units):
        gt = times[units == u]
        best = max((np.mean(np.min(np.abs(gt[:, None] - st[sc == c][None, :]), axis=1) <= 15) for c in np.unique(sc)), default=0)
        recalls.append(best)
    assert np.median(recalls) > 0.8, recalls
    from phylib.io.model import TemplateModel
    from spikeinterface.extractors import read_phy

    assert len(read_phy(phy).unit_ids) == len(np.unique(sc))
    model = TemplateModel(dir_path=phy, dat_path=params["dat_path"], sample_rate=30000, n_channels_dat=385)
    assert model.traces.shape == (len(counts), 385)  # Phy reads the traces from the .ap.bin itself
    model.close()
    meta = json.loads((phy / "neurowb_sort.json").read_text())
    assert meta["source"]["format"] == "spikeglx"


def test_open_ephys_binary(tmp_path):
    """An Open Ephys binary recording (structure.oebin + continuous.dat), as the GUI writes it."""
    counts = (np.random.default_rng(1).normal(0, 200, (2000, 4))).astype(np.int16)
    folder = tmp_path / "Record Node 101" / "experiment1" / "recording1"
    stream = folder / "continuous" / "Acquisition_Board-100.Rhythm Data"
    stream.mkdir(parents=True)
    counts.tofile(stream / "continuous.dat")
    np.save(stream / "sample_numbers.npy", np.arange(1000, 1000 + len(counts), dtype=np.int64))
    np.save(stream / "timestamps.npy", (np.arange(len(counts)) + 1000) / 30000.0)
    oebin = {"GUI version": "0.6.4", "continuous": [{
        "folder_name": "Acquisition_Board-100.Rhythm Data/", "sample_rate": 30000.0, "source_processor_name": "Acquisition Board",
        "source_processor_id": 100, "stream_name": "Rhythm Data", "recorded_processor": "Acquisition Board",
        "recorded_processor_id": 100, "num_channels": 4,
        "channels": [{"channel_name": f"CH{i + 1}", "description": "headstage", "identifier": "", "history": "",
                      "bit_volts": 0.195, "units": "uV"} for i in range(4)]}], "events": [], "spikes": []}
    (folder / "structure.oebin").write_text(json.dumps(oebin))
    for path in (folder / "structure.oebin", folder, tmp_path / "Record Node 101"):
        assert detect_format(path)[0] == "openephys"
    rec = open_recording(folder / "structure.oebin")
    assert (rec.n_channels, rec.sample_rate, rec.n_samples) == (4, 30000.0, 2000)
    np.testing.assert_allclose(rec.read(10, 30), counts[10:30] * 0.195, rtol=1e-6)


def test_nwb_read_lazily_without_a_copy(tmp_path):
    import datetime as dt

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import ElectricalSeries

    counts = np.random.default_rng(2).integers(-500, 500, (3000, 4)).astype(np.int16)
    nwb = NWBFile(session_description="t", identifier="t", session_start_time=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    group = nwb.create_electrode_group(name="shank0", description="", location="brain", device=nwb.create_device(name="probe"))
    for i in range(4):
        nwb.add_electrode(group=group, location="brain", rel_x=0.0, rel_y=25.0 * i)
    region = nwb.create_electrode_table_region(list(range(4)), "all")
    nwb.add_acquisition(ElectricalSeries(name="ElectricalSeries", data=counts, electrodes=region, rate=20000.0, conversion=0.5e-6))
    with NWBHDF5IO(str(tmp_path / "s.nwb"), "w") as io:
        io.write(nwb)
    rec = open_recording(tmp_path / "s.nwb")
    assert (rec.n_channels, rec.sample_rate) == (4, 20000.0)
    np.testing.assert_allclose(rec.read(5, 25), counts[5:25] * 0.5, rtol=1e-5)
    np.testing.assert_allclose(rec.probe().positions[:, 1], [0, 25, 50, 75])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.nwb"]  # nothing copied


def test_plain_raw_keeps_working_and_bad_folders_say_so(tmp_path):
    np.zeros((100, 4), np.int16).tofile(tmp_path / "r.raw")
    (tmp_path / "r.raw.json").write_text(json.dumps({"n_channels": 4, "sample_rate": 30000}))
    assert isinstance(open_recording(tmp_path / "r.raw"), RawRecording)
    (tmp_path / "broken_g0_t0.imec0.ap.meta").write_text("nSavedChans=385\n")
    np.zeros(385 * 10, np.int16).tofile(tmp_path / "broken_g0_t0.imec0.ap.bin")
    with pytest.raises(InputError, match="SpikeGLX"):
        open_recording(tmp_path / "broken_g0_t0.imec0.ap.bin")


def _neo_raw(rawio, stream_name_part: str | None = None) -> np.ndarray:
    """The stored integers as neo's raw reader gives them (the stream whose name contains ``stream_name_part``)."""
    rawio.parse_header()
    names = list(rawio.header["signal_streams"]["name"])
    index = next(i for i, n in enumerate(names) if stream_name_part is None or stream_name_part in n)
    return rawio.get_analogsignal_chunk(block_index=0, seg_index=0, stream_index=index)


def test_intan_rhd_amplifier_stream_gains_and_neurowb_sort(tmp_path, capsys):
    """An Intan RHD2000 .rhd (8 amplifier channels and one board ADC input): the amplifier stream is the one sorted
    (higher channel count at the same rate), 0.195 µV per step around 32768; `neurowb sort t.rhd` asks nothing."""
    from neo.rawio import IntanRawIO

    from engine.cli import main
    from engine.ephys.cli import register
    from engine.ephys.synth import demo_recording

    data, times, units, _ = demo_recording(duration=2.56, n_channels=8, sample_rate=20000.0, n_units=3, noise_uv=6.0, seed=5)
    amplifier = np.clip(np.round(data / 0.195) + 32768, 0, 65535).astype(np.uint16)
    adc = (np.arange(len(data)) % 1000 * 60).astype(np.uint16)[:, None]
    path = write_intan_rhd(tmp_path / "session_240501_100000.rhd", amplifier, adc, sample_rate=20000.0)
    assert detect_format(path) == ("intan", path)
    rec = open_recording(path)
    assert (rec.n_channels, rec.sample_rate, rec.n_samples) == (8, 20000.0, len(data))
    np.testing.assert_allclose(rec.gains, 0.195, rtol=1e-6)
    expected = (amplifier.astype(np.float64) - 32768) * 0.195
    np.testing.assert_allclose(rec.read(1000, 1500, [0, 5]), expected[1000:1500, [0, 5]], atol=1e-3)
    np.testing.assert_array_equal(_neo_raw(IntanRawIO(filename=str(path)), "amplifier"), amplifier)
    phy = tmp_path / "phy"
    assert main(["sort", str(path), "-o", str(phy)], registrations=[register]) == 0
    from engine.ephys.phy import read_params_py

    params = read_params_py(phy / "params.py")
    assert params["sample_rate"] == 20000.0 and params["n_channels_dat"] == 8
    assert json.loads((phy / "neurowb_sort.json").read_text())["source"]["format"] == "intan"
    st, sc = np.load(phy / "spike_times.npy").astype(np.int64), np.load(phy / "spike_clusters.npy")
    recalls = [max(np.mean(np.min(np.abs(times[units == u][:, None] - st[sc == c][None]), axis=1) <= 10) for c in np.unique(sc))
               for u in np.unique(units)]
    assert np.median(recalls) > 0.8, recalls


def test_neuralynx_ncs_folder(tmp_path):
    """A Cheetah session of 4 .ncs files (16 kB header, 512-sample records): opened by one file or the folder,
    the channels of the folder together, µV = counts × ADBitVolts × 1e6."""
    from neo.rawio import NeuralynxRawIO

    counts = np.random.default_rng(6).integers(-4000, 4000, (512 * 8, 4)).astype(np.int16)
    folder = write_neuralynx(tmp_path / "2024-05-01_10-00-00", counts)
    assert detect_format(folder / "CSC2.ncs") == ("neuralynx", folder) and detect_format(folder) == ("neuralynx", folder)
    rec = open_recording(folder / "CSC2.ncs")
    assert (rec.n_channels, rec.sample_rate, rec.n_samples) == (4, 32000.0, len(counts))
    np.testing.assert_allclose(rec.gains, 3.0517578125e-08 * 1e6, rtol=1e-6)
    np.testing.assert_allclose(rec.read(700, 1300), counts[700:1300] * 3.0517578125e-02, rtol=1e-6)
    np.testing.assert_array_equal(_neo_raw(NeuralynxRawIO(dirname=str(folder))), counts)


def test_blackrock_ns5(tmp_path):
    """A Blackrock .ns5 (File Spec 2.3, 5 channels at 30 kHz): µV per count from the analog / digital ranges of each
    channel's extended header, (8191 − −8191) / (32764 − −32764) = 0.25."""
    from neo.rawio import BlackrockRawIO

    counts = np.random.default_rng(7).integers(-5000, 5000, (3000, 5)).astype(np.int16)
    path = write_blackrock_ns5(tmp_path / "datafile001.ns5", counts)
    assert detect_format(path) == ("blackrock", path)
    rec = open_recording(path)
    assert (rec.n_channels, rec.sample_rate, rec.n_samples) == (5, 30000.0, 3000)
    np.testing.assert_allclose(rec.gains, 0.25)
    np.testing.assert_allclose(rec.read(10, 2000, [4, 1]), counts[10:2000, [4, 1]] * 0.25)
    np.testing.assert_array_equal(_neo_raw(BlackrockRawIO(filename=str(path))), counts)
    # the .nev Central writes beside it (threshold crossings) opens the same samples; neo reads both together
    times, electrodes = np.array([100, 250, 900, 1500, 2200]), np.array([1, 3, 1, 5, 3])
    nev = write_blackrock_nev(path.with_suffix(".nev"), times, electrodes, n_electrodes=5)
    assert detect_format(nev) == ("blackrock", path)
    rec = open_recording(nev)
    np.testing.assert_allclose(rec.read(0, 3000), counts * 0.25)
    neo = BlackrockRawIO(filename=str(path))
    neo.parse_header()
    found = {int(neo.header["spike_channels"]["name"][i].split("#")[0].replace("ch", "")): neo.spike_count(0, 0, i)
             for i in range(neo.spike_channels_count())}
    assert {e: n for e, n in found.items() if n} == {1: 2, 3: 2, 5: 1}
    path.unlink()
    with pytest.raises(InputError, match="spike events only"):
        open_recording(nev)
