"""Probe geometry: where each recorded channel sits, in µm.

Read through probeinterface (the field's probe library) where it reads the file: probeinterface
JSON, ``.prb`` (Klusta / SpyKING CIRCUS), a SpikeGLX ``.meta`` (Neuropixels geometry from the
IMRO table) and an Open Ephys ``settings.xml``. Kilosort channel maps are read here, in Kilosort's
own conventions: a MATLAB ``.mat`` (scipy.io.loadmat) has a **1-based** ``chanMap`` (``chanMap0ind``
is 0-based), while a Kilosort 4 ``probe.json`` (``chanMap``, ``xc``, ``yc``, ``kcoords``,
``n_chan``) is **0-based**, as ``kilosort.io.load_probe`` reads it. Contacts with ``connected == 0``
are dropped, as Kilosort does. Written as probeinterface JSON with probeinterface itself, so
``probeinterface.read_probeinterface`` and SpikeInterface read our files.
Without a file, :func:`linear_probe` gives a single column at 20 µm pitch and logs a warning,
because spatial grouping then is a guess.

``channel_map[i]`` is the file column (0-based) of contact ``i``; ``positions[i]`` its x, y.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import InputError

log = logging.getLogger(__name__)

PROBE_EXTENSIONS = (".json", ".mat", ".prb", ".meta", ".xml")


@dataclass
class Probe:
    """Contact positions (n, 2) µm, the file column of each contact, and shank ids."""

    positions: np.ndarray
    channel_map: np.ndarray
    shank_ids: np.ndarray = field(default=None)  # type: ignore[assignment]
    name: str = ""

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 2)
        self.channel_map = np.asarray(self.channel_map, dtype=np.int64).reshape(-1)
        if self.shank_ids is None:
            self.shank_ids = np.zeros(len(self.channel_map), dtype=np.int64)
        self.shank_ids = np.asarray(self.shank_ids).reshape(-1)
        n = len(self.channel_map)
        if len(self.positions) != n or len(self.shank_ids) != n:
            raise InputError(f"Probe '{self.name}': {len(self.positions)} positions for {n} channels; each channel needs one x, y position.")
        if n and (self.channel_map.min() < 0 or len(np.unique(self.channel_map)) != n):
            raise InputError(f"Probe '{self.name}': channel indices must be distinct and non-negative.")
        if not np.all(np.isfinite(self.positions)):
            raise InputError(f"Probe '{self.name}': contact positions must be finite numbers (µm); some are NaN or infinite.")

    @property
    def n_channels(self) -> int:
        return len(self.channel_map)

    def check_recording(self, n_channels_file: int) -> None:
        """InputError unless every contact maps to a column of a file with ``n_channels_file`` columns.

        A probe with fewer contacts than the file is accepted only when it says which columns
        it uses explicitly (e.g. Neuropixels 384 of 385, the last one being a sync channel).
        """
        if self.n_channels > n_channels_file or (self.n_channels and self.channel_map.max() >= n_channels_file):
            raise InputError(
                f"Probe '{self.name or 'probe'}' has {self.n_channels} channels (highest file index "
                f"{int(self.channel_map.max())}), the recording has {n_channels_file}: pick the probe file that "
                f"matches this recording, or correct --n-channels."
            )
        if self.n_channels < n_channels_file and self.n_channels < n_channels_file - 1:
            raise InputError(
                f"Probe '{self.name or 'probe'}' has {self.n_channels} channels, the recording has {n_channels_file}: "
                f"pick the probe file that matches this recording, or correct --n-channels."
            )

    def neighbours(self, radius: float, max_count: int | None = None) -> np.ndarray:
        """(n, m) contact indices within ``radius`` µm of each contact (nearest first, padded with -1)."""
        d = np.linalg.norm(self.positions[:, None, :] - self.positions[None, :, :], axis=2)
        d = d + 1e9 * (self.shank_ids[:, None] != self.shank_ids[None, :])
        order = np.argsort(d, axis=1, kind="stable")
        counts = (d <= radius).sum(axis=1)
        m = int(counts.max()) if max_count is None else min(int(counts.max()), max_count)
        out = np.full((self.n_channels, m), -1, dtype=np.int64)
        for i in range(self.n_channels):
            k = min(int(counts[i]), m)
            out[i, :k] = order[i, :k]
        return out

    def to_probeinterface(self):
        """This probe as a ``probeinterface.ProbeGroup`` (one probe; circular contacts, 6 µm radius)."""
        import probeinterface

        probe = probeinterface.Probe(ndim=2, si_units="um", name=self.name or None)
        probe.set_contacts(positions=self.positions, shapes="circle", shape_params={"radius": 6},
                           shank_ids=[str(s) for s in self.shank_ids.tolist()])
        probe.set_device_channel_indices(self.channel_map)
        probe.create_auto_shape()
        group = probeinterface.ProbeGroup()
        group.add_probe(probe)
        return group

    @classmethod
    def from_probeinterface(cls, probes, name: str = "") -> "Probe":
        """From a ``probeinterface.Probe`` or ``ProbeGroup``: contacts unwired (device index -1) are dropped;
        without wiring, contact i is file column i."""
        import probeinterface

        group = probes.probes if isinstance(probes, probeinterface.ProbeGroup) else [probes]
        positions, channels, shanks = [], [], []
        for p_index, probe in enumerate(group):
            pos = np.asarray(probe.contact_positions, dtype=np.float64)[:, :2]
            idx = probe.device_channel_indices
            idx = np.arange(len(pos)) if idx is None else np.asarray(idx, dtype=np.int64)
            keep = idx >= 0
            shank = probe.shank_ids if probe.shank_ids is not None else np.full(len(pos), "")
            positions.append(pos[keep])
            channels.append(idx[keep])
            shanks.extend(f"{p_index}:{s}" for s in np.asarray(shank)[keep])
        if not positions or not sum(len(c) for c in channels):
            raise InputError(f"Probe '{name}' has no wired contacts: it does not say which file column each contact is.")
        _, shank_ids = np.unique(np.asarray(shanks), return_inverse=True)
        label = group[0].annotations.get("name") or name
        return cls(np.concatenate(positions), np.concatenate(channels), shank_ids.astype(np.int64), name=str(label))


def linear_probe(n_channels: int, pitch: float = 20.0, warn: bool = True) -> Probe:
    """A single column, ``pitch`` µm apart, channel i = file column i."""
    if warn:
        log.warning("no probe geometry given: assuming a linear probe, %d channels %g µm apart", n_channels, pitch)
    return Probe(np.stack([np.zeros(n_channels), pitch * np.arange(n_channels)], axis=1), np.arange(n_channels), name="linear (assumed)")


def write_probe(path: str | os.PathLike, probe: Probe) -> Path:
    """Save as probeinterface JSON, written by probeinterface (atomically)."""
    import probeinterface

    from engine.storage import atomic_write_text

    path = Path(path)
    # write_probeinterface writes in place; a temporary file renamed into place keeps a crash from leaving half a file
    tmp = path.with_name(f".{path.name}.partial")
    try:
        probeinterface.write_probeinterface(tmp, probe.to_probeinterface())
        return atomic_write_text(path, tmp.read_text(encoding="utf-8"))
    finally:
        tmp.unlink(missing_ok=True)


def read_probe(path: str | os.PathLike, n_channels_file: int | None = None) -> Probe:
    """Load a probe file; with ``n_channels_file``, also check it fits the recording."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Probe file not found: '{path}'. Check the path.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".mat":
            probe = _from_kilosort(_load_mat(path), path.name, one_based=True)
        elif suffix == ".json":
            try:
                meta = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InputError(f"Probe file '{path.name}' is not valid JSON: fix it or export it again.", details=str(exc)) from exc
            if isinstance(meta, dict) and "probes" in meta:
                probe = _from_probeinterface_json(meta, path)
            elif isinstance(meta, dict) and ("chanMap" in meta or "chanMap0ind" in meta):
                probe = _from_kilosort(meta, path.name, one_based=False)
            else:
                raise InputError(
                    f"Probe file '{path.name}' is neither probeinterface JSON (a 'probes' list) nor a Kilosort channel "
                    f"map (chanMap, xc, yc): export the probe in one of these forms."
                )
        elif suffix in (".prb", ".meta", ".xml"):
            probe = _read_with_probeinterface(path)
        else:
            raise InputError(f"Probe file '{path.name}': use probeinterface .json, .prb, a Kilosort channel map (.json or .mat), "
                             "a SpikeGLX .meta or an Open Ephys settings.xml.")
    except InputError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AssertionError, AttributeError, SyntaxError, NameError) as exc:
        raise InputError(f"Probe file '{path.name}' is incomplete or malformed: {exc}.", details=repr(exc)) from exc
    if n_channels_file is not None:
        probe.check_recording(n_channels_file)
    return probe


def _read_with_probeinterface(path: Path) -> Probe:
    import probeinterface

    suffix = path.suffix.lower()
    if suffix == ".prb":
        return Probe.from_probeinterface(probeinterface.read_prb(path), path.name)
    if suffix == ".meta":
        probe = probeinterface.read_spikeglx(path)
        return Probe.from_probeinterface(probe, f"{probe.model_name or 'Neuropixels'} ({path.name})")
    probe = probeinterface.read_openephys(path, raise_error=True)
    return Probe.from_probeinterface(probe, f"{probe.model_name or 'Open Ephys probe'} ({path.name})")


def _from_probeinterface_json(meta: dict, path: Path) -> Probe:
    """probeinterface JSON through probeinterface; files written before we used it lack some fields
    (``contact_plane_axes``), which probeinterface requires: those are read from the dict directly."""
    import probeinterface

    try:
        group = probeinterface.ProbeGroup.from_dict(meta)
    except KeyError:
        return _from_probeinterface_dict(meta, path.name)
    return Probe.from_probeinterface(group, path.name)


def _from_probeinterface_dict(meta: dict, name: str) -> Probe:
    positions, channels, shanks = [], [], []
    for p_index, probe in enumerate(meta["probes"]):
        pos = np.asarray(probe["contact_positions"], dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] < 2:
            raise InputError(f"Probe '{name}': contact_positions must be a list of [x, y].")
        idx = probe.get("device_channel_indices")
        idx = np.arange(len(pos)) if idx is None else np.asarray(idx, dtype=np.int64)
        shank = probe.get("shank_ids") or [""] * len(pos)
        keep = idx >= 0  # probeinterface marks unwired contacts with -1
        positions.append(pos[keep, :2])
        channels.append(idx[keep])
        shanks.extend(f"{p_index}:{s}" for s, k in zip(shank, keep) if k)
    _, shank_ids = np.unique(np.asarray(shanks), return_inverse=True)
    return Probe(np.concatenate(positions), np.concatenate(channels), shank_ids.astype(np.int64), name=name)


def _load_mat(path: Path) -> dict:
    from scipy.io import loadmat

    try:
        return {k: v for k, v in loadmat(path, squeeze_me=True).items() if not k.startswith("__")}
    except (ValueError, NotImplementedError, OSError) as exc:  # v7.3 (HDF5) files raise NotImplementedError
        raise InputError(f"Cannot read '{path.name}' as a MATLAB channel map (save it with -v7 or as JSON).", details=str(exc)) from exc


def _from_kilosort(meta: dict, name: str, one_based: bool) -> Probe:
    """A Kilosort channel map: ``one_based`` for MATLAB files (Kilosort 1-3), 0-based for Kilosort 4's JSON;
    ``chanMap0ind``, when present, is 0-based either way."""
    if "chanMap0ind" in meta:
        chan = np.asarray(meta["chanMap0ind"], dtype=np.int64).reshape(-1)
    else:
        chan = np.asarray(meta["chanMap"], dtype=np.int64).reshape(-1) - (1 if one_based else 0)
    xc = np.asarray(meta["xc"], dtype=np.float64).reshape(-1)
    yc = np.asarray(meta["yc"], dtype=np.float64).reshape(-1)
    kcoords = np.asarray(meta.get("kcoords", np.zeros(len(chan))), dtype=np.float64).reshape(-1)
    connected = np.asarray(meta.get("connected", np.ones(len(chan))), dtype=bool).reshape(-1)
    if not (len(chan) == len(xc) == len(yc) == len(kcoords) == len(connected)):
        raise InputError(f"Kilosort channel map '{name}': chanMap, xc, yc, kcoords and connected must have the same length.")
    if one_based and len(chan) and chan.min() < 0:
        raise InputError(f"Kilosort channel map '{name}': chanMap of a MATLAB file counts from 1, but it holds 0. "
                         "Save the 0-based map as chanMap0ind, or add 1 to chanMap.")
    return Probe(np.stack([xc, yc], axis=1)[connected], chan[connected], kcoords[connected].astype(np.int64), name=str(meta.get("name", name)))
