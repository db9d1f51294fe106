"""The curated units of a Phy folder as an NWB file's Units table (the form DANDI takes sorted data in).

Recordings in NWB files are read lazily through SpikeInterface (:mod:`engine.ephys.formats`), not here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.nwb import new_nwbfile, nwb_target, recorded_location, write_nwb
from engine.progress import as_progress


def export_units(curation, path: str | os.PathLike, metadata: dict | None = None, progress=None) -> Path:
    """Write the curated units of a Phy folder (a :class:`engine.ephys.curation.Curation`) as an NWB
    file's Units table, the form DANDI takes sorted data in; returns the path.

    One row per cluster, id = Phy's cluster id: ``spike_times`` (s), ``quality`` (the label: good /
    mua / noise / unsorted), ``snr``, ``isi_violations_ratio``, ``presence_ratio``, ``peak_channel``,
    ``electrodes`` (the channels carrying ≥ 10 % of the unit's peak-to-peak) and ``waveform_mean``
    (the model's mean waveform, samples × channels, volts). The table's ``resolution`` is one sample,
    1 / rate (SpikeInterface's ``read_nwb_sorting`` takes the rate from it). The electrodes table holds
    the probe's positions as ``rel_x``/``rel_y``; the raw recording is not copied (its path is in
    ``notes``). ``metadata``: the session's description, experimenter, subject… in NWB's field names
    (:func:`engine.nwb.check_metadata`).
    """
    import datetime as dt

    from pynwb.misc import Units

    progress = as_progress(progress)
    path = nwb_target(path)
    ids = [int(c) for c in curation.cluster_ids]
    if not ids:
        raise InputError("There are no units to export: sort the recording first.")
    raw = curation.phy.params.get("dat_path", "")
    raw = raw[0] if isinstance(raw, (list, tuple)) and raw else raw
    raw_path = Path(raw) if raw else None
    if raw_path is not None and not raw_path.is_absolute():
        raw_path = curation.folder / raw_path
    stamp = raw_path.stat().st_mtime if raw_path is not None and raw_path.exists() else 0
    nwb = new_nwbfile(metadata, f"Spike sorting of {raw_path.name if raw_path else 'a recording'} (NeuroWorkbench), "
                                f"curated in {curation.folder.name}",
                      dt.datetime.fromtimestamp(stamp, tz=dt.timezone.utc),
                      f"Raw recording (not copied): {raw_path}" if raw_path else "Raw recording not recorded.")
    device = nwb.create_device(name="probe", description="extracellular probe (model not recorded by the sorter)")
    location = recorded_location(metadata)
    group = nwb.create_electrode_group(name="probe", description="recording channels", location=location, device=device)
    nwb.units = Units(name="units", description="units sorted by NeuroWorkbench (deconvolution), curated by hand",
                      resolution=1.0 / float(curation.sample_rate), waveform_rate=float(curation.sample_rate), waveform_unit="volts")
    for x, y in curation.positions:
        nwb.add_electrode(group=group, location=location, rel_x=float(x), rel_y=float(y))
    columns = {"quality": "curation label: good / mua / noise / unsorted", "snr": "amplitude / noise SD on the peak channel",
               "isi_violations_ratio": "ISI violations ratio (Hill 2011, 1.5 ms)", "presence_ratio": "fraction of 100 time bins with spikes",
               "peak_channel": "channel (row of the electrodes table) with the largest amplitude"}
    for name, description in columns.items():
        nwb.add_unit_column(name=name, description=description)
    for i, cluster in enumerate(ids):
        progress.check()
        row = curation.row(cluster)
        foot = curation.footprint(cluster)
        electrodes = np.flatnonzero(foot >= 0.1 * foot.max()).tolist() if foot.max() > 0 else [row["peak_channel"]]
        times = np.sort(curation.spike_times[curation.spikes(cluster)] / curation.sample_rate)
        nwb.add_unit(id=cluster, spike_times=times, electrodes=electrodes, waveform_mean=curation.mean_waveform(cluster) * 1e-6,
                     quality=row["group"], snr=float(row["snr"]), isi_violations_ratio=float(row["isi_violations_ratio"]),
                     presence_ratio=float(row["presence_ratio"]), peak_channel=int(row["peak_channel"]))
        progress.report((i + 1) / len(ids), f"unit {cluster}")
    return write_nwb(nwb, path)
