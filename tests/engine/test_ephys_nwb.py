"""An NWB ElectricalSeries (written by pynwb itself) reads lazily, equal to the original in µV, with the
electrodes' positions as the probe; bad files say what is wrong; curated units export to a Units table
that nwbinspector passes and SpikeInterface reads."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import pynwb
from pynwb import NWBHDF5IO, NWBFile
from pynwb.ecephys import ElectricalSeries

from engine.ephys.formats import open_recording
from engine.ephys.io import RawRecording
from engine.ephys.synth import demo_probe, write_demo_recording
from engine.errors import InputError

N_CH = 8


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    raw = tmp_path_factory.mktemp("orig") / "rec.raw"
    params = write_demo_recording(raw, duration=3.0, n_channels=N_CH, n_units=3, seed=2)
    return RawRecording(raw, params)


def write_nwb(path, counts, rate, conversion, channel_conversion=None, positions=True, offset=0.0):
    nwb = NWBFile(session_description="t", identifier="t", session_start_time=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    device = nwb.create_device(name="probe")
    group = nwb.create_electrode_group(name="shank0", description="", location="brain", device=device)
    xy = demo_probe(N_CH)
    for x, y in xy:
        kwargs = dict(rel_x=float(x), rel_y=float(y)) if positions else {}
        nwb.add_electrode(group=group, location="brain", **kwargs)
    region = nwb.create_electrode_table_region(list(range(N_CH)), "all")
    nwb.add_acquisition(ElectricalSeries(name="ElectricalSeries", data=counts, electrodes=region, rate=rate, conversion=conversion,
                                         channel_conversion=channel_conversion, offset=offset))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def test_int16_series_read_lazily_with_gain_offset_and_probe(original, tmp_path):
    """Read in place through SpikeInterface (no copy): µV with NWB's conversion and offset, the electrodes' positions as the probe."""
    counts = np.asarray(original.raw)
    gain = original.params.gain_uv
    nwb = write_nwb(tmp_path / "session.nwb", counts, original.sample_rate, gain * 1e-6, offset=5e-6)
    rec = open_recording(nwb)
    assert rec.n_channels == N_CH and rec.sample_rate == original.sample_rate and rec.n_samples == len(counts)
    np.testing.assert_allclose(rec.read(100, 900), original.read(100, 900) + 5.0, atol=1e-3)  # µV, with NWB's offset
    np.testing.assert_allclose(rec.probe().positions, demo_probe(N_CH))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["session.nwb"]


def test_per_channel_conversion_and_missing_positions(original, tmp_path):
    counts = np.asarray(original.raw)
    per_channel = np.linspace(0.5, 1.5, N_CH).astype(np.float32)
    nwb = write_nwb(tmp_path / "scaled.nwb", counts, original.sample_rate, 1e-6, channel_conversion=per_channel, positions=False)
    rec = open_recording(nwb)
    np.testing.assert_allclose(rec.read(0, 500), counts[:500] * per_channel, rtol=1e-5, atol=1e-4)
    assert rec.probe() is None  # the sort then assumes a linear probe and says so


def test_bad_files(original, tmp_path):
    (tmp_path / "junk.nwb").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="corrupt or not NWB"):
        open_recording(tmp_path / "junk.nwb")
    nwb = NWBFile(session_description="t", identifier="t", session_start_time=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    with NWBHDF5IO(str(tmp_path / "empty.nwb"), "w") as io:
        io.write(nwb)
    with pytest.raises(InputError, match="no ElectricalSeries"):
        open_recording(tmp_path / "empty.nwb")


def test_curated_units_export_validates_and_reads_back(tmp_path):
    from test_ephys_curation import _folder

    from engine.ephys.curation import Curation
    from engine.ephys.nwb import export_units

    folder, _sorting = _folder(tmp_path)
    c = Curation(folder)
    merged = c.merge([0, 1])
    c.label([merged], "good")
    frozen = c.snapshot()  # what the GUI hands the export job, while curation goes on
    c.merge([merged, 2])
    path = export_units(frozen, tmp_path / "units.nwb")
    c = frozen
    errors = pynwb.validate(path=str(path))
    assert list(errors[0] if isinstance(errors, tuple) else errors) == []
    with NWBHDF5IO(str(path), "r") as io:
        units = io.read().units
        assert sorted(units.id[:]) == sorted(int(i) for i in c.cluster_ids)
        row = list(units.id[:]).index(merged)
        np.testing.assert_allclose(units["spike_times"][row], np.sort(c.spike_times[c.spikes(merged)]) / c.sample_rate)
        assert units["quality"][row] == "good" and units["snr"][row] == pytest.approx(c.row(merged)["snr"])
        np.testing.assert_allclose(units["waveform_mean"][row], c.mean_waveform(merged) * 1e-6, rtol=1e-5)
        electrodes = units["electrodes"][row]
        assert c.row(merged)["peak_channel"] in electrodes.index.tolist()
    with pytest.raises(InputError, match=r"\.nwb"):
        export_units(c, tmp_path / "units.h5")


def test_units_with_user_metadata_pass_nwbinspector_and_load_in_spikeinterface(tmp_path):
    """The file DANDI would take: no CRITICAL or BEST_PRACTICE_VIOLATION from the NWB team's inspector, the
    session metadata as the user gave it, and SpikeInterface's read_nwb_sorting finds the rate (Units.resolution)."""
    from lab_files import NWB_METADATA, nwbinspector_problems
    from spikeinterface.extractors import read_nwb_sorting
    from test_ephys_curation import _folder

    from engine.ephys.curation import Curation
    from engine.ephys.nwb import export_units

    folder, _sorting = _folder(tmp_path)
    c = Curation(folder)
    path = export_units(c, tmp_path / "units.nwb", metadata=NWB_METADATA)
    assert nwbinspector_problems(path) == []
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert nwb.session_description == NWB_METADATA["session_description"] and list(nwb.experimenter) == ["Doe, Jane"]
        assert nwb.subject.species == "Mus musculus" and nwb.subject.age == "P90D" and nwb.lab == "Systems Neuroscience Lab"
        assert nwb.units.resolution == pytest.approx(1 / c.sample_rate) and nwb.electrodes["location"][0] == "VISp"
    sorting = read_nwb_sorting(str(path))
    assert sorting.get_sampling_frequency() == pytest.approx(c.sample_rate)
    assert sorted(int(u) for u in sorting.unit_ids) == sorted(int(i) for i in c.cluster_ids)
    unit = int(c.cluster_ids[0])
    np.testing.assert_array_equal(sorting.get_unit_spike_train(unit), np.sort(c.spike_times[c.spikes(unit)]))


def test_nwb_metadata_file_json_or_yaml_and_bad_fields(tmp_path):
    import json

    from lab_files import NWB_METADATA

    from engine.nwb import read_metadata

    (tmp_path / "m.json").write_text(json.dumps(NWB_METADATA))
    (tmp_path / "m.yaml").write_text("session_description: Acute recording in mouse V1, drifting gratings\n"
                                     "experimenter: Doe, Jane\ninstitution: University of Examples\nlab: Systems Neuroscience Lab\n"
                                     "keywords: [V1, mouse]\nexperiment_description: Orientation tuning under anaesthesia\n"
                                     "subject:\n  subject_id: M42\n  species: Mus musculus\n  sex: F\n  age: P90D\nlocation: VISp\n")
    assert read_metadata(tmp_path / "m.json") == read_metadata(tmp_path / "m.yaml") == NWB_METADATA
    for text, message in (("experimentor: Jane", "unknown field"), ("subject: {sex: female}", "sex must be one of"),
                          ("subject: {age: 90 days}", "ISO 8601"), ("[1, 2]", "mapping"), ("a: [", "neither valid JSON nor YAML")):
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(InputError, match=message):
            read_metadata(tmp_path / "bad.yaml")
