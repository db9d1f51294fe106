"""Recordings in the acquisition systems' own formats, read through SpikeInterface's extractors (neo underneath).

What the file states is never asked: channel count, rate, gains (to µV) and, where the format has it,
the probe geometry (SpikeGLX from the ``.meta`` through probeinterface's reader; Open Ephys from its
``settings.xml``; NWB from the electrodes table).

=================  ==========================================================  ==========================
format             open by                                                     reader
=================  ==========================================================  ==========================
SpikeGLX           ``*.ap.bin`` (its ``.meta`` beside it), the ``.meta``, or   ``read_spikeglx``; the sync
                   the run / probe folder                                      channel is its own stream,
                                                                               left out
Open Ephys binary  ``structure.oebin``, or a folder holding one                ``read_openephys``
Intan              ``.rhd`` / ``.rhs``                                         ``read_intan``
Neuralynx          ``.ncs`` (its folder), or a folder of ``.ncs`` files        ``read_neuralynx``
Blackrock          ``.ns5`` / ``.ns6`` (``.ns1``–``.ns4``), or the ``.nev``     ``read_blackrock`` (the
                   beside them (the highest-rate NSx of the same name)         ``.nev`` read with it)
NWB                ``.nwb`` with an ElectricalSeries, read lazily              ``read_nwb_recording``
=================  ==========================================================  ==========================

A file with several streams (Intan's amplifier, auxiliary and ADC channels; Open Ephys' AP and LFP)
gives the one to sort: the highest sample rate, then the most channels. :class:`ExtractorRecording`
adapts the SpikeInterface recording to what our preprocessing, sorter and trace panel read
(``read(start, stop, channels)`` in µV, ``n_samples``, ``n_channels``, ``sample_rate``), the same
interface as :class:`engine.ephys.io.RawRecording` over a flat binary file. Our own memory-mapped
reader stays for plain raw binaries: it is the same memmap SpikeInterface would make, without the
per-call overhead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.errors import InputError

#: File suffixes whose format says its own layout (plus SpikeGLX .bin files with a .meta beside them).
FORMAT_EXTENSIONS = (".meta", ".oebin", ".rhd", ".rhs", ".ncs", ".ns1", ".ns2", ".ns3", ".ns4", ".ns5", ".ns6", ".nev")


def _spikeglx_meta(path: Path) -> Path | None:
    if path.suffix.lower() == ".meta":
        return path
    if path.suffix.lower() == ".bin" and path.with_suffix(".meta").is_file():
        return path.with_suffix(".meta")
    return None


def _below(folder: Path, pattern: str, depth: int = 3) -> list[Path]:
    """Files matching ``pattern`` in ``folder`` or up to ``depth`` levels below (a session folder of Open Ephys
    holds Record Node / experiment / recording; a SpikeGLX run, run_g0 / run_g0_imec0), first level first;
    bounded so that opening a large folder stays quick."""
    for level in range(depth + 1):
        found = sorted(folder.glob("/".join(["*"] * level + [pattern])))
        if found:
            return found
    return []


def detect_format(path: str | os.PathLike) -> tuple[str, Path] | None:
    """(format, what to hand its reader) when ``path`` is in a format that states its own layout, else None."""
    path = Path(path)
    if path.is_dir():
        if _below(path, "structure.oebin"):
            return "openephys", path
        meta = _below(path, "*.ap.meta") or _below(path, "*.meta")
        if meta:
            return "spikeglx", meta[0]
        if next(path.glob("*.ncs"), None) is not None or next(path.glob("*.Ncs"), None) is not None:
            return "neuralynx", path
        return None
    suffix = path.suffix.lower()
    meta = _spikeglx_meta(path)
    if meta is not None:
        return "spikeglx", meta
    if path.name == "structure.oebin":
        return "openephys", path.parent
    if suffix in (".rhd", ".rhs"):
        return "intan", path
    if suffix == ".ncs":
        return "neuralynx", path.parent
    if suffix in (".ns1", ".ns2", ".ns3", ".ns4", ".ns5", ".ns6"):
        return "blackrock", path
    if suffix == ".nev":  # spike events only: the continuous samples are in the NSx files of the same name
        for nsx in (".ns6", ".ns5", ".ns4", ".ns3", ".ns2", ".ns1"):
            if path.with_suffix(nsx).is_file():
                return "blackrock", path.with_suffix(nsx)
        return "blackrock", path
    if suffix == ".nwb":
        return "nwb", path
    return None


def _spikeglx_stream(meta: Path) -> str:
    """``imec0.ap`` from ``run_g0_t0.imec0.ap.meta`` (``nidq`` for the NI-DAQ file)."""
    parts = meta.name.split(".")
    return ".".join(parts[1:-1]) if len(parts) > 2 else parts[0]


def _read(kind: str, target: Path):
    """The SpikeInterface recording of ``target`` (the stream to sort)."""
    import spikeinterface.extractors as se

    if kind == "blackrock" and target.suffix.lower() == ".nev":
        raise InputError(f"'{target.name}' holds Blackrock spike events only and no .ns5/.ns6 of the same name is beside it: "
                         "copy the continuous data (the NSx files) into the same folder.")
    if kind == "spikeglx":
        return se.read_spikeglx(target.parent, stream_id=_spikeglx_stream(target))
    if kind == "nwb":  # its structure first, read with h5py: a clear message for a file without an ElectricalSeries
        from engine.nwb import ELECTRICAL_TYPES, find_series, open_nwb

        with open_nwb(target) as f:
            found = find_series(f, ELECTRICAL_TYPES)
        if not found:
            raise InputError(f"'{target.name}' holds no ElectricalSeries to sort.")
        return se.read_nwb_recording(target, electrical_series_path=found[0])  # acquisition first
    reader = {"openephys": se.read_openephys, "intan": se.read_intan, "neuralynx": se.read_neuralynx,
              "blackrock": se.read_blackrock}[kind]
    neo_name = {"openephys": "openephysbinary", "intan": "intan", "neuralynx": "neuralynx", "blackrock": "blackrock"}[kind]
    _names, ids = se.get_neo_streams(neo_name, target)
    candidates = [reader(target, stream_id=i) for i in ids] if len(ids) > 1 else [reader(target)]
    return max(candidates, key=lambda r: (r.get_sampling_frequency(), r.get_num_channels()))


def open_extractor(path: str | os.PathLike) -> "ExtractorRecording":
    """The recording at ``path`` through SpikeInterface; InputError when its format is not known or it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Recording not found: '{path}'. Check the path and that the file still exists.")
    found = detect_format(path)
    if found is None:
        raise InputError(f"'{path.name}' is not a recording format that states its layout (SpikeGLX, Open Ephys, Intan, "
                         "Neuralynx, Blackrock, NWB).")
    kind, target = found
    try:
        recording = _read(kind, target)
    except InputError:
        raise
    except Exception as exc:  # neo / SpikeInterface raise many kinds; the message names the file and format
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"Could not read '{path.name}' as a {NAMES[kind]} recording: {reason}. "
                         "Check that the folder is complete (data and metadata files).", details=f"{type(exc).__name__}: {exc}") from exc
    return ExtractorRecording(recording, path, kind, target)


NAMES = {"spikeglx": "SpikeGLX", "openephys": "Open Ephys", "intan": "Intan", "neuralynx": "Neuralynx", "blackrock": "Blackrock",
         "nwb": "NWB"}


class ExtractorRecording:
    """A SpikeInterface recording with :class:`engine.ephys.io.RawRecording`'s reading interface.

    Values are µV: the stored integers times each channel's gain plus its offset (what the file states).
    Only the first segment of a multi-segment recording is used (e.g. Open Ephys' first recording).
    """

    def __init__(self, recording, path: Path, kind: str, target: Path):
        from engine.ephys.io import RecordingParams

        self.note = ""
        if recording.get_num_segments() > 1:
            self.note = f"The file holds {recording.get_num_segments()} recordings (segments): the first is used."
            recording = recording.select_segments([0])
        self.si = recording
        self.path = Path(path)
        self.kind = kind
        self.target = target
        n = recording.get_num_channels()
        if recording.has_scaleable_traces():
            self.gains = np.asarray(recording.get_channel_gains(), np.float32).reshape(-1)
            self.offsets = np.asarray(recording.get_channel_offsets(), np.float32).reshape(-1)
        else:
            self.gains, self.offsets = np.ones(n, np.float32), np.zeros(n, np.float32)
        dtype = np.dtype(recording.get_dtype()).name
        # the layout as the sorting and info boxes show it (and as a Phy folder's params.py gives it, when the
        # samples are a flat binary file Phy can read: SpikeGLX, Open Ephys binary)
        self.params = RecordingParams(n, recording.get_sampling_frequency(), dtype if dtype in ("int16", "uint16", "int32", "float32")
                                      else "float32", gain_uv=float(self.gains[0]) or 1.0, offset=0.0)

    # -- facts ----------------------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return int(self.si.get_num_samples(0))

    @property
    def n_channels(self) -> int:
        return int(self.si.get_num_channels())

    @property
    def sample_rate(self) -> float:
        return float(self.si.get_sampling_frequency())

    @property
    def duration(self) -> float:
        return self.n_samples / self.sample_rate

    @property
    def dtype(self) -> np.dtype:
        """The stored sample type."""
        return np.dtype(self.si.get_dtype())

    def probe(self):
        """The probe the file states (an :class:`engine.ephys.probe.Probe`), or None."""
        from engine.ephys.probe import Probe

        if not self.si.has_probe():
            return None
        group = self.si.get_probegroup()
        model = group.probes[0].model_name or f"{NAMES[self.kind]} geometry"
        probe = Probe.from_probeinterface(group)
        probe.name = f"{model} ({self.target.name})"
        return probe

    def binary_file(self) -> tuple[Path, "object"] | None:
        """(the flat binary file the samples are in, its RecordingParams with every column) when Phy can read
        it directly (SpikeGLX ``.bin``: 385 columns with the sync), else None."""
        from engine.ephys.io import RecordingParams

        if self.kind == "spikeglx":
            bin_path = self.target.with_suffix(".bin")
            n_saved = int(dict(line.split("=", 1) for line in self.target.read_text().splitlines() if "=" in line)["nSavedChans"])
            return bin_path, RecordingParams(n_saved, self.sample_rate, "int16", float(self.gains[0]))
        return None

    # -- data -----------------------------------------------------------------------------------
    def read(self, start: int, stop: int, channels: Sequence[int] | slice | None = None) -> np.ndarray:
        """Samples ``start:stop`` (clipped) in µV, float32, samples × channels."""
        n = self.n_samples
        start = int(np.clip(int(start), 0, n))
        stop = int(np.clip(int(stop), start, n))
        ids = self.si.channel_ids
        idx = np.arange(len(ids)) if channels is None else np.arange(len(ids))[channels] if isinstance(channels, slice) else \
            np.asarray(channels, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(ids)):
            raise InputError(f"Channel {int(idx.max())} does not exist: '{self.path.name}' has channels 0..{len(ids) - 1}.")
        if stop == start or not idx.size:
            return np.zeros((stop - start, idx.size), np.float32)
        block = self.si.get_traces(start_frame=start, end_frame=stop, channel_ids=ids[idx], return_in_uV=False)
        return np.asarray(block, dtype=np.float32) * self.gains[idx] + self.offsets[idx]

    def close(self) -> None:
        """Nothing to release explicitly: the readers' memory maps go with the object."""

    def __enter__(self) -> "ExtractorRecording":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ExtractorRecording({NAMES[self.kind]} '{self.path.name}', {self.n_channels} ch, {self.sample_rate:g} Hz, {self.duration:.2f} s)"


def open_recording(path: str | os.PathLike, params=None):
    """Any recording: a format that states its layout through :func:`open_extractor`, otherwise a flat binary
    (:class:`engine.ephys.io.RawRecording`, its layout from ``params`` or the sidecar)."""
    from engine.ephys.io import RawRecording

    found = detect_format(path)
    if found is not None:
        return open_extractor(path)
    return RawRecording(path, params)
