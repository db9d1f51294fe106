"""An NWB ElectricalSeries as a raw binary recording that the sorter, the trace panel and Phy read.

Kilosort, Phy and our sorter work on a flat samples × channels binary; SpikeInterface too writes one
before sorting. So the series is copied once, chunk by chunk, to ``<nwb stem>.raw`` beside the NWB
file (or in the app's work folder when that folder is read-only), with its sidecar (sample type,
rate, gain) and a probeinterface ``<stem>.probe.json`` from the electrodes table; a later open
reuses the copy when it is complete and newer than the NWB file.

Values: NWB gives volts = data × ``conversion`` × ``channel_conversion[c]`` + ``offset``. With one
conversion for every channel the samples are copied as they are (int16 stays int16) and the gain and
offset go in the sidecar; per-channel conversions are applied and the copy is float32 µV.
Positions: the electrodes table's ``rel_x``/``rel_y`` (position on the probe), else ``x``/``y``;
without either a linear probe is assumed (and said).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.ephys.io import DTYPES, RecordingParams, read_sidecar, write_sidecar
from engine.ephys.probe import Probe, linear_probe, write_probe
from engine.errors import InputError
from engine.nwb import ELECTRICAL_TYPES, find_series, new_nwbfile, nwb_target, recorded_location, open_nwb, series_rate, write_nwb
from engine.progress import as_progress

CHUNK_SAMPLES = 2**16


def _target_folder(nwb_path: Path) -> Path:
    if os.access(nwb_path.parent, os.W_OK):
        return nwb_path.parent
    from engine.storage import workdir_for

    return workdir_for(nwb_path)


def _positions(f, group, n_channels: int) -> tuple[Probe, str]:
    """The probe from the electrodes table rows the series uses, and a note when it had to be assumed."""
    if "electrodes" in group:
        rows = np.asarray(group["electrodes"][:], dtype=np.int64)
        table = f[group["electrodes"].attrs["table"]] if "table" in group["electrodes"].attrs else None
        for xs, ys in (("rel_x", "rel_y"), ("x", "y")):
            if table is not None and xs in table and ys in table and len(rows) == n_channels:
                x = np.asarray(table[xs][:], dtype=np.float64)[rows]
                y = np.asarray(table[ys][:], dtype=np.float64)[rows]
                if np.isfinite(x).all() and np.isfinite(y).all() and len(np.unique(np.c_[x, y], axis=0)) == n_channels:
                    return Probe(np.c_[x, y], np.arange(n_channels), name=f"NWB electrodes ({xs}, {ys})"), ""
    return linear_probe(n_channels, warn=False), "The NWB file gives no electrode positions: a linear probe is assumed."


def nwb_recording_job(path: str | os.PathLike, series: str | None = None, progress=None) -> dict:
    """Job body: the raw copy of the file's ElectricalSeries (made when missing or stale), then
    :func:`engine.ephys.curation.open_recording_job`'s dict plus ``note`` and ``raw_path``."""
    from engine.ephys.curation import open_recording_job

    progress = as_progress(progress)
    path = Path(path)
    with open_nwb(path) as f:
        found = find_series(f, ELECTRICAL_TYPES, series)
        if not found:
            raise InputError(f"'{path.name}' holds no ElectricalSeries{f' named {series!r}' if series else ''} to sort.")
        group = f[found[0]]
        data = group["data"]
        if data.ndim != 2 or data.shape[0] < 2:
            raise InputError(f"The ElectricalSeries '{found[0]}' is not samples × channels (shape {data.shape}).")
        n_samples, n_channels = (int(v) for v in data.shape)
        rate = series_rate(group)
        if rate is None:
            raise InputError(f"The ElectricalSeries '{found[0]}' gives neither a rate nor timestamps: the sample rate is unknown.")
        conversion = float(data.attrs.get("conversion", 1.0))
        offset_v = float(data.attrs.get("offset", 0.0))
        per_channel = np.asarray(group["channel_conversion"][:], np.float64) if "channel_conversion" in group else None
        uniform = per_channel is None or np.allclose(per_channel, per_channel[0])
        scale = conversion * (float(per_channel[0]) if per_channel is not None else 1.0)
        keep_dtype = uniform and np.dtype(data.dtype).name in DTYPES and scale != 0
        if keep_dtype:
            params = RecordingParams(n_channels, rate, np.dtype(data.dtype).name, gain_uv=scale * 1e6, offset=-offset_v / scale)
        else:
            params = RecordingParams(n_channels, rate, "float32")
        probe, note = _positions(f, group, n_channels)

        folder = _target_folder(path)
        raw = folder / f"{path.stem}.raw"
        itemsize = np.dtype(params.dtype).itemsize
        fresh = (raw.is_file() and raw.stat().st_size == n_samples * n_channels * itemsize
                 and raw.stat().st_mtime >= path.stat().st_mtime and read_sidecar(raw) == params)
        if not fresh:
            partial = raw.with_name(raw.name + ".partial")
            gains = np.asarray(conversion * (per_channel if per_channel is not None else 1.0) * 1e6, np.float32)
            try:
                with open(partial, "wb") as out:
                    for start in range(0, n_samples, CHUNK_SAMPLES):
                        progress.check()
                        block = data[start:start + CHUNK_SAMPLES]
                        if not keep_dtype:
                            block = block.astype(np.float32) * gains + np.float32(offset_v * 1e6)
                        out.write(np.ascontiguousarray(block, dtype=params.numpy_dtype()).tobytes())
                        progress.report(min(start + CHUNK_SAMPLES, n_samples) / n_samples, f"Copying {found[0]} to {raw.name}")
            except BaseException:  # cancelled or failed: no half copy left behind
                partial.unlink(missing_ok=True)
                raise
            os.replace(partial, raw)
            write_sidecar(raw, params)
        write_probe(raw.with_name(f"{raw.stem}.probe.json"), probe)
    out = open_recording_job(raw, params)
    out.update(note=note, raw_path=raw, series=found[0])
    return out


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
