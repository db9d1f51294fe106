"""Curation of a Phy folder outside Qt: the sort job, merge / split / label with undo, autosave,
and the data getters of the ephys workspace's views.

Conventions are Phy's, so a folder curated here opens in Phy (and ``phylib``) as it is:

* A cluster id always names the same set of spikes. A merge or a split never reuses an id: the
  new clusters get ``max(every id seen) + 1, + 2, …`` (Phy's ``new_cluster_id``). A split gives
  *both* parts new ids (the lasso's spikes first, the rest second).
* ``spike_clusters.npy``, ``cluster_group.tsv`` and the metric columns are rewritten after every
  change as one transaction (:func:`engine.ephys.phy.commit_curation`: a journal first, replayed on
  open after a kill); ``spike_templates.npy`` — the model — never changes.
* Undo / redo (:class:`engine.undo.History`, ``MAX_UNDO`` deep) keep each change as (changed
  spikes, old clusters, new clusters, labels before, labels after), so a merge of 3 clusters costs its spikes' indices, not a copy of every spike.

Metrics follow :mod:`engine.ephys.qc` (definitions there); the table's numbers for a cluster are
computed once per cluster id (ids are immutable, so the cache never goes stale).

The trace panel reads through :class:`TraceSource`: raw, preprocessed (band-pass + common
reference, unwhitened, µV), the model Σ a·W of the Phy folder (templates × amplitudes at the
spike times, unwhitened with ``whitening_mat_inv``) and the residual (preprocessed − model) — for
any time window, from the folder alone (no Sorting object needed, e.g. after reopening it).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.ephys.io import RawRecording, RecordingParams, read_sidecar
from engine.ephys.phy import GROUPS, PhyFolder, commit_curation, read_phy, write_cluster_metrics
from engine.ephys.preprocess import Preprocessor
from engine.ephys.qc import REFRACTORY_S, mean_waveform, unit_metrics
from engine.errors import InputError
from engine.progress import as_progress
from engine.storage import remove_stale_temp
from engine.undo import History

PHY_SUFFIX = "_phy"
PROBE_NAMES = ("{stem}.probe.json", "{stem}_probe.json", "{stem}.prb.json", "probe.json", "chanMap.mat", "chanMap.json")
MAX_UNDO = 200
NOISE_CHUNKS = 16  # noise_uv: random short windows, as SpikeInterface's get_noise_levels reads
NOISE_CHUNK_S = 0.05
TILE_SECONDS = 0.25  # trace panel: filtered tiles; a scroll refilters only the ones it uncovers
TRACE_CACHE_BYTES = 256 * 2**20  # filtered tiles kept (a 2 s window of 384 channels is 92 MB)
VIEW_FILE = ".neurowb_view.json"  # the workspace's last view of a Phy folder, beside Phy's own .phy/ cache
TABLE_COLUMNS = ("cluster_id", "n_spikes", "firing_rate", "amplitude_uv", "snr", "isi_violations_ratio", "presence_ratio",
                 "peak_channel", "depth_um", "group")


# -- where things are ---------------------------------------------------------------------------

def phy_folder_for(raw_path: str | os.PathLike) -> Path:
    """The default output folder of a sort: ``<raw stem>_phy/`` beside the raw file."""
    raw_path = Path(raw_path)
    return raw_path.with_name(raw_path.stem + PHY_SUFFIX)


def find_probe(raw_path: str | os.PathLike) -> Path | None:
    """A probe file beside the recording (``<stem>.probe.json``, ``probe.json``, ``chanMap.mat``…), or None."""
    raw_path = Path(raw_path)
    for pattern in PROBE_NAMES:
        candidate = raw_path.with_name(pattern.format(stem=raw_path.stem))
        if candidate.is_file():
            return candidate
    return None


def is_phy_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    folder = path.parent if path.name == "params.py" else path
    return (folder / "params.py").is_file() and (folder / "spike_times.npy").is_file()


def is_curated(folder: str | os.PathLike) -> bool:
    """Whether a Phy folder holds hand work: clusters that differ from the templates, or labels."""
    from engine.ephys.phy import read_cluster_groups

    folder = Path(folder)
    if not is_phy_folder(folder):
        return False
    if any(g != "unsorted" for g in read_cluster_groups(folder).values()):
        return True
    try:
        clusters = np.load(folder / "spike_clusters.npy")
        templates = np.load(folder / "spike_templates.npy")
    except (OSError, ValueError):
        return False
    return clusters.shape != templates.shape or bool(np.any(clusters.astype(np.int64) != templates.astype(np.int64)))


def backup_for(folder: str | os.PathLike) -> Path | None:
    """Where a new sort keeps a Phy folder that holds curation (``<folder>_<date-time>``); None when
    the folder holds none (it is simply replaced)."""
    from engine.storage import free_name

    folder = Path(folder)
    return free_name(folder.with_name(f"{folder.name}_{time.strftime('%Y%m%d-%H%M%S')}")) if is_curated(folder) else None


def read_view_state(folder: str | os.PathLike) -> dict:
    """The last view of a Phy folder saved by :func:`save_view_state` ({} when none or unreadable):
    selected units, time window, channel range, data layers. Reopening the folder returns there."""
    import json

    try:
        state = json.loads((Path(folder) / VIEW_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def save_view_state(folder: str | os.PathLike, state: dict) -> None:
    from engine.storage import atomic_save_json

    atomic_save_json(Path(folder) / VIEW_FILE, state)


def recording_of(phy: PhyFolder) -> tuple[RawRecording | None, str]:
    """The raw recording a Phy folder was sorted from (params.py ``dat_path``, else the recording in another
    format it names in neurowb_sort.json), and a note when missing."""
    dat = phy.params.get("dat_path", "")
    if isinstance(dat, (list, tuple)):
        dat = dat[0] if dat else ""
    source = (phy.meta.get("source") or {}).get("path")
    if not dat and source:
        from engine.ephys.formats import open_extractor

        if not Path(source).exists():
            return None, f"The recording '{source}' named in neurowb_sort.json is missing: traces and spike waveforms are unavailable."
        return open_extractor(source), ""
    if not dat:
        return None, "params.py names no raw file (dat_path): traces and spike waveforms are unavailable."
    path = Path(dat)
    if not path.is_absolute():
        path = phy.path / path
    if not path.is_file():
        return None, f"The raw file '{path}' named in params.py is missing: traces and spike waveforms are unavailable."
    meta = phy.meta.get("recording") or {}
    if meta:
        params = RecordingParams(**{k: meta[k] for k in ("n_channels", "sample_rate", "dtype", "gain_uv", "offset") if k in meta})
    else:
        params = read_sidecar(path) or RecordingParams(int(phy.params.get("n_channels_dat", 1)), phy.sample_rate,
                                                       str(phy.params.get("dtype", "int16")))
    return RawRecording(path, params), ""


# -- jobs ----------------------------------------------------------------------------------------

def open_recording_job(path: Path, params: RecordingParams | None, save_sidecar: bool = False, progress=None) -> dict:
    """Job body: open a recording (a raw file memory-mapped, with ``params``, or any format that states its
    layout: :func:`engine.ephys.formats.open_recording`), and find its probe file and any earlier Phy folder.

    ``probe``: a probe file beside it, else the file itself when it states its geometry (SpikeGLX .meta…), else None."""
    from engine.ephys.formats import ExtractorRecording, open_recording
    from engine.ephys.io import write_sidecar

    recording = open_recording(path, params)
    remove_stale_temp(Path(path).parent, phy_folder_for(path))  # what a killed save or sort left
    if save_sidecar and params is not None:
        write_sidecar(path, params)
    folder = phy_folder_for(path)
    probe = find_probe(path)
    if probe is None and isinstance(recording, ExtractorRecording) and recording.probe() is not None:
        probe = recording.target  # the .meta / settings: the file that states the geometry
    source = TraceSource(recording)
    for kind in ("preprocessed", "raw"):  # the trace spacing's default, measured here off the GUI thread
        source.noise_uv(kind)
    return {"recording": recording, "source": source, "probe": probe,
            "phy_folder": folder if is_phy_folder(folder) else None, "note": getattr(recording, "note", "")}


def sort_job(raw_path: str | os.PathLike, params: RecordingParams, probe_path: str | os.PathLike | None,
             sort_params=None, folder: str | os.PathLike | None = None, progress=None) -> dict:
    """Job body: preprocess + sort + write the Phy folder + load it for curation.

    ``raw_path``: a raw file (layout ``params``) or any recording :func:`engine.ephys.formats.open_recording`
    opens (``params`` then unused). The probe: ``probe_path``, else the one the recording states, else linear.

    The folder is written (with its metric columns) into a staging folder beside it and swapped in
    only when complete (:func:`engine.storage.staged_folder`): a cancel or a crash at any stage
    leaves the previous folder exactly as it was. A previous folder holding curation is then kept
    as ``<folder>_<date-time>``, never deleted. Returns :func:`open_phy_job`'s dict plus
    ``backup`` (that kept folder, or None).
    """
    from engine.ephys.formats import ExtractorRecording, open_recording
    from engine.ephys.phy import write_phy
    from engine.ephys.probe import linear_probe, read_probe
    from engine.ephys.sorter import SortParams, sort_recording
    from engine.storage import staged_folder

    progress = as_progress(progress)
    p_sort, p_write, p_load = progress.split([30, 1, 2], ["Sorting", "Writing the Phy folder", "Computing unit metrics"])
    recording = open_recording(raw_path, params)
    stated = recording.probe() if isinstance(recording, ExtractorRecording) else None
    if probe_path and (stated is None or Path(probe_path) != recording.target):
        probe = read_probe(probe_path, recording.n_channels)
    else:
        probe = stated or linear_probe(recording.n_channels, warn=False)
    result = sort_recording(recording, probe, sort_params or SortParams(), progress=p_sort)
    p_write.check()
    folder = (Path(folder) if folder is not None else phy_folder_for(raw_path)).absolute()
    backup = backup_for(folder)
    with staged_folder(folder, keep_old=backup) as staging:
        p_write.report(0.0, "writing the Phy folder")
        if isinstance(recording, ExtractorRecording):  # Phy reads the samples when they are a flat binary (SpikeGLX)
            binary = recording.binary_file()
            write_phy(result, staging, raw_path=binary and binary[0], recording_params=binary and binary[1],
                      source={"path": str(Path(raw_path).resolve()), "format": recording.kind})
        else:
            write_phy(result, staging, raw_path=raw_path, recording_params=recording.params)
        p_write.check()
        out = open_phy_job(staging, progress=p_load)
        write_cluster_metrics(staging, out["curation"].rows())
        p_load.check()
    out["curation"].folder = out["curation"].phy.path = out["folder"] = folder  # swapped in: its real place
    out["backup"] = backup
    out["probe_name"] = probe.name
    return out


def waveforms_job(curation: "Curation", source: "TraceSource | None", clusters: list[int], n_spikes: int = 40,
                  progress=None) -> dict[int, dict]:
    """Job body: :meth:`Curation.waveforms` of each of ``clusters`` (the window's per-selection read, off its thread)."""
    progress = as_progress(progress)
    out = {}
    for cid in clusters:
        progress.check()
        out[int(cid)] = curation.waveforms(source, int(cid), n_spikes=n_spikes)
    return out


def open_phy_job(folder: str | os.PathLike, progress=None) -> dict:
    """Job body: load a Phy folder (or its params.py) for curation, with its raw recording and metrics."""
    progress = as_progress(progress)
    folder = Path(folder)
    if folder.name == "params.py":
        folder = folder.parent
    remove_stale_temp(folder.parent, folder)  # what a killed save or sort left
    curation = Curation(folder)
    recording, note = recording_of(curation.phy)
    ids = curation.cluster_ids
    for i, cid in enumerate(ids):  # fill the metrics cache here, off the GUI thread
        if i % 16 == 0:
            progress.check()
            progress.report(i / max(len(ids), 1), "unit metrics")
        curation.row(int(cid))
    source = TraceSource(recording, curation.phy) if recording is not None else None
    if source is not None:
        for kind in ("preprocessed", "raw"):  # the trace spacing's default, measured here off the GUI thread
            source.noise_uv(kind)
    return {"curation": curation, "recording": recording, "source": source, "note": note, "folder": folder}


# -- traces: raw, preprocessed, model, residual ---------------------------------------------------

class TraceSource:
    """Windows of a recording for the trace panel, in µV, samples × display channels.

    Display channels are the probe's (Phy's ``channel_map`` order) once there is a Phy folder,
    otherwise every file column. Only ``start:stop`` (plus the filter margin) is read.

    The panel's preprocessed windows (:meth:`layers`, :meth:`window`) come from fixed tiles of
    :data:`TILE_SECONDS`, each filtered once with its own margins and kept in an LRU cache of
    ``cache_bytes``: a scroll filters only the tiles it uncovers, and :meth:`prefetch` fills the
    neighbours in the background. A window assembled from cached tiles is bit-identical to one
    filtered cold (same tiles, same arithmetic) and equals :meth:`preprocessed` (one block with its
    own margins) to the filter's 1e-7 tolerance. Filtering is float32 (display only). The cache is
    thread-safe; tiles are computed outside the lock, so a GUI-thread read never waits on a worker.
    """

    def __init__(self, recording: RawRecording, phy: PhyFolder | None = None, cache_bytes: int = TRACE_CACHE_BYTES):
        self.recording = recording
        self.phy = phy
        if phy is not None:
            self.channels = np.asarray(phy.arrays["channel_map"], dtype=np.int64).reshape(-1)
            state = phy.meta.get("preprocess")
            if state:
                self.preprocessor = Preprocessor.from_state(state, phy.arrays.get("channel_positions"))
            else:  # a foreign (e.g. Kilosort) folder: default filter, its whitening matrix
                self.preprocessor = Preprocessor(recording.sample_rate, self.channels, phy.arrays.get("channel_positions"))
                if "whitening_mat" in phy.arrays:  # Phy's whitened = x @ wm; the Preprocessor's is x @ Wᵀ
                    self.preprocessor.whitening = phy.arrays["whitening_mat"].T.astype(np.float32)
            times = phy.spike_times
            self.templates_uv = phy.templates_uv().astype(np.float32)
            self.template_troughs = phy.template_troughs(self.templates_uv)
            spike_templates = phy.arrays["spike_templates"].astype(np.int64)
            starts = times - self.template_troughs[spike_templates] if len(times) else times
            order = np.argsort(starts, kind="stable")  # sorted starts: a window's spikes by searchsorted
            self.spike_starts, self.spike_templates = starts[order], spike_templates[order]
            self.amplitudes = phy.arrays["amplitudes"].astype(np.float32)[order]
        else:
            self.channels = np.arange(recording.n_channels)
            self.preprocessor = Preprocessor(recording.sample_rate, self.channels)
            self.templates_uv = None
        self.tile_samples = max(int(round(TILE_SECONDS * recording.sample_rate)), 256)
        self.cache_bytes = int(cache_bytes)
        self.tiles_filtered = 0  # tiles computed so far (the cache's misses)
        self._tiles: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()
        self._noise: dict[str, np.ndarray] = {}

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def has_model(self) -> bool:
        return self.templates_uv is not None

    def _n_rows(self, rows: slice) -> int:
        return len(range(*rows.indices(self.n_channels)))

    def raw(self, start: int, stop: int, rows: slice = slice(None)) -> np.ndarray:
        """Raw µV of display channels ``rows``, each channel's median removed (offsets would stack the traces unevenly)."""
        data = self.recording.read(start, stop, channels=self.channels[rows])
        if not len(data):
            return data
        return data - np.median(data[:: max(1, len(data) // 2000)], axis=0)  # a subsample: exact enough, 10× faster

    def preprocessed(self, start: int, stop: int) -> np.ndarray:
        """One block filtered with its own margins (short reads: spike waveforms), every display channel."""
        return self.preprocessor.read(self.recording, start, stop, whiten=False, float32=True)

    def noise_uv(self, kind: str = "preprocessed") -> np.ndarray:
        """Robust noise SD (MAD / 0.6745, µV) of each display channel of ``kind`` ('preprocessed' or 'raw'),
        from :data:`NOISE_CHUNKS` windows of :data:`NOISE_CHUNK_S` spread at fixed random places (seeded:
        the same every time). Computed once per kind (the open jobs fill it off the GUI thread)."""
        from engine.ephys.preprocess import robust_sd

        if kind not in self._noise:
            n = self.recording.n_samples
            length = max(min(int(NOISE_CHUNK_S * self.recording.sample_rate), n), 1)
            starts = np.random.default_rng(0).integers(0, max(n - length, 0) + 1, NOISE_CHUNKS)
            read = self.raw if kind == "raw" else self.preprocessed
            blocks = [read(int(a), int(a) + length) for a in np.sort(starts)]
            self._noise[kind] = robust_sd(np.concatenate(blocks), axis=0).astype(np.float64)
        return self._noise[kind]

    # -- the tile cache ------------------------------------------------------------------------
    def tile_range(self, start: int, stop: int) -> range:
        start, stop = max(int(start), 0), min(int(stop), self.recording.n_samples)
        if stop <= start:
            return range(0)
        return range(start // self.tile_samples, (stop - 1) // self.tile_samples + 1)

    def is_cached(self, start: int, stop: int) -> bool:
        with self._lock:
            return all(i in self._tiles for i in self.tile_range(start, stop))

    def tile(self, index: int) -> np.ndarray:
        """Preprocessed tile ``index`` (samples × every display channel, read-only), from the cache or filtered now."""
        with self._lock:
            block = self._tiles.get(index)
            if block is not None:
                self._tiles.move_to_end(index)
                return block
        a = index * self.tile_samples
        block = self.preprocessor.read(self.recording, a, a + self.tile_samples, whiten=False, float32=True)
        block.flags.writeable = False
        with self._lock:
            if index not in self._tiles:
                self._tiles[index] = block
                self._cached_bytes += block.nbytes
                self.tiles_filtered += 1
            while self._cached_bytes > self.cache_bytes and len(self._tiles) > 1:  # the callers hold what they use
                self._cached_bytes -= self._tiles.popitem(last=False)[1].nbytes
        return block

    def filtered(self, start: int, stop: int, rows: slice = slice(None), progress=None) -> np.ndarray:
        """Preprocessed µV of display channels ``rows`` for ``start:stop`` (clipped), through the tile cache."""
        start, stop = max(int(start), 0), min(int(stop), self.recording.n_samples)
        out = np.empty((max(stop - start, 0), self._n_rows(rows)), np.float32)
        for i in self.tile_range(start, stop):
            if progress is not None:
                progress.check()
            a = i * self.tile_samples
            s0, s1 = max(start, a), min(stop, a + self.tile_samples)
            out[s0 - start: s1 - start] = self.tile(i)[s0 - a: s1 - a, rows]
        return out

    def prefetch(self, start: int, stop: int, progress=None) -> int:
        """Filter the tiles of ``start:stop`` that are not cached yet (cancellable between tiles); returns how many."""
        done = 0
        for i in self.tile_range(start, stop):
            if progress is not None:
                progress.check()
            with self._lock:
                cached = i in self._tiles
            if not cached:
                self.tile(i)
                done += 1
        return done

    def clear_cache(self) -> None:
        with self._lock:
            self._tiles.clear()
            self._cached_bytes = 0

    # -- layers --------------------------------------------------------------------------------
    def model(self, start: int, stop: int, rows: slice = slice(None)) -> np.ndarray:
        """The reconstruction Σ_spikes a · W_template(t − t_spike) in µV for display channels ``rows``
        (zeros without a Phy folder).

        Spike by spike, on the visible channels only: each step adds one contiguous (samples × rows)
        block: ~3× faster at 384 channels than gathering one template sample of every spike at a time.
        """
        start, stop = int(start), int(stop)
        out = np.zeros((max(stop - start, 0), self._n_rows(rows)), np.float32)
        if self.templates_uv is None or len(out) == 0:
            return out
        templates = self.templates_uv[:, :, rows]
        d = templates.shape[1]
        lo, hi = np.searchsorted(self.spike_starts, [start - d + 1, stop])  # spike times are sorted
        for a, k, amplitude in zip((self.spike_starts[lo:hi] - start).tolist(), self.spike_templates[lo:hi].tolist(),
                                   self.amplitudes[lo:hi]):
            s0, s1 = max(a, 0), min(a + d, len(out))
            out[s0:s1] += amplitude * templates[k, s0 - a: s1 - a]
        return out

    def residual(self, start: int, stop: int) -> np.ndarray:
        data = self.preprocessed(start, stop)
        return data - self.model(start, start + len(data))

    def layers(self, start: int, stop: int, rows: slice = slice(None), data: str | None = "preprocessed",
               model: bool = False, residual: bool = False, progress=None) -> dict[str, np.ndarray | None]:
        """What the trace panel draws for ``start:stop`` and display channels ``rows``: ``data`` ("raw",
        "preprocessed" or None), the model and the residual (preprocessed − model) when asked; None
        for a layer not asked for. Preprocessed data come from the tile cache; ``progress.check()``
        between tiles lets a stale request be cancelled."""
        start, stop = max(int(start), 0), min(int(stop), self.recording.n_samples)
        out: dict[str, np.ndarray | None] = {"data": None, "model": None, "residual": None}
        model = model and self.has_model
        residual = residual and self.has_model
        pre = self.filtered(start, stop, rows, progress) if data == "preprocessed" or residual else None
        if data == "raw":
            out["data"] = self.raw(start, stop, rows)
        elif data == "preprocessed":
            out["data"] = pre
        if model or residual:
            if progress is not None:
                progress.check()
            m = self.model(start, stop, rows)
            out["model"] = m if model else None
            out["residual"] = pre - m if residual else None
        return out

    def window(self, kind: str, start: int, stop: int, rows: slice = slice(None)) -> np.ndarray:
        """One layer ("raw", "preprocessed", "model" or "residual") for display channels ``rows``."""
        if kind in ("raw", "preprocessed"):
            return self.layers(start, stop, rows, data=kind)["data"]
        if kind == "model":
            return self.model(max(int(start), 0), min(int(stop), self.recording.n_samples), rows)
        if kind == "residual":
            if not self.has_model:
                return self.filtered(start, stop, rows)
            return self.layers(start, stop, rows, data=None, residual=True)["residual"]
        raise ValueError(f"unknown trace kind {kind!r}")


# -- curation --------------------------------------------------------------------------------------

@dataclass
class Change:
    """One undoable curation step."""

    description: str
    spikes: np.ndarray
    old: np.ndarray
    new: np.ndarray
    groups_before: dict
    groups_after: dict
    selection: list = field(default_factory=list)  # clusters to select after doing it


class Curation:
    """Clusters and labels of a Phy folder, changed by merge / split / label with undo, autosaved."""

    def __init__(self, folder: str | os.PathLike):
        self.phy = read_phy(folder)
        self.folder = self.phy.path
        if not os.access(self.folder, os.W_OK):
            raise InputError(f"The Phy folder '{self.folder}' is read-only: copy it somewhere writable to curate it.")
        phy = self.phy
        self.sample_rate = phy.sample_rate
        self.spike_times = phy.spike_times
        self.spike_templates = phy.arrays["spike_templates"].astype(np.int64)
        self.amplitudes = phy.arrays["amplitudes"].astype(np.float64)
        self.spike_clusters = phy.spike_clusters.copy()
        self.duration = phy.duration_s
        self.templates_uv = templates = phy.templates_uv().astype(np.float64)  # (K, D, C)
        self.noise_sd = phy.noise_sd()
        self.positions = np.asarray(phy.arrays["channel_positions"], dtype=np.float64)
        self.channel_map = np.asarray(phy.arrays["channel_map"]).reshape(-1).astype(np.int64)
        self.template_troughs = phy.template_troughs(templates)
        # a spike's amplitude in µV: its fitted amplitude × the template's peak |value|
        template_peak = np.abs(self.templates_uv).max(axis=(1, 2)) if len(templates) else np.zeros(0)
        self.spike_amplitudes_uv = self.amplitudes * template_peak[self.spike_templates] if len(self.spike_times) else np.zeros(0)
        sim = phy.arrays.get("similar_templates")
        if sim is None or sim.shape != (len(templates), len(templates)):
            from engine.ephys.clustering import template_similarity

            sim = template_similarity(np.transpose(phy.arrays["templates"], (0, 2, 1)).astype(np.float64))
        self.template_similarity = np.asarray(sim, dtype=np.float64)
        ids = self.cluster_ids
        self.groups = {int(c): phy.groups.get(int(c), "unsorted") for c in ids}
        self.groups = {c: (g if g in GROUPS else "unsorted") for c, g in self.groups.items()}
        self._next_id = int(max(ids.max() if len(ids) else -1, len(templates) - 1, max(phy.groups, default=-1))) + 1
        self.history: History[Change] = History(self._revert, self._reapply, depth=MAX_UNDO)
        self._rows: dict[int, dict] = {}
        if phy.recovered:  # a save was interrupted after its journal: finish it (files and metric columns)
            self.save()

    def snapshot(self) -> "Curation":
        """A frozen copy of the clusters and labels, for a background job (an export) while curation goes on."""
        import copy

        frozen = copy.copy(self)
        frozen.spike_clusters, frozen.groups, frozen._rows = self.spike_clusters.copy(), dict(self.groups), dict(self._rows)
        frozen.history = History(frozen._revert, frozen._reapply, depth=MAX_UNDO)
        return frozen

    # -- state ---------------------------------------------------------------------------------
    @property
    def cluster_ids(self) -> np.ndarray:
        return np.unique(self.spike_clusters)

    @property
    def can_undo(self) -> bool:
        return self.history.can_undo

    @property
    def can_redo(self) -> bool:
        return self.history.can_redo

    def spikes(self, cluster: int) -> np.ndarray:
        """Indices of the cluster's spikes (sorted by time)."""
        return np.flatnonzero(self.spike_clusters == int(cluster))

    def _check(self, ids) -> list[int]:
        ids = sorted({int(i) for i in np.atleast_1d(ids)})
        present = set(self.cluster_ids.tolist())
        missing = [i for i in ids if i not in present]
        if missing:
            raise InputError(f"No cluster {', '.join(map(str, missing))} in this folder: select clusters from the table.")
        return ids

    # -- changes ---------------------------------------------------------------------------------
    def merge(self, ids) -> int:
        """Merge clusters ``ids`` (two or more) into a new cluster; returns its id."""
        ids = self._check(ids)
        if len(ids) < 2:
            raise InputError("Select at least two clusters to merge (Ctrl-click the second one).")
        new_id = self._new_id()
        spikes = np.flatnonzero(np.isin(self.spike_clusters, ids))
        labels = {self.groups.get(i, "unsorted") for i in ids}
        after = {c: g for c, g in self.groups.items() if c not in ids}
        after[new_id] = labels.pop() if len(labels) == 1 else "unsorted"
        self._do(Change(f"merge of {', '.join(map(str, ids))} into {new_id}", spikes, self.spike_clusters[spikes].copy(),
                        np.full(len(spikes), new_id), dict(self.groups), after, [new_id]))
        return new_id

    def split(self, cluster: int, inside: np.ndarray) -> tuple[int, int]:
        """Split ``cluster``: its spikes where ``inside`` (a mask over :meth:`spikes`) is True get one new
        id, the others a second one; returns (id of the inside part, id of the rest)."""
        (cluster,) = self._check([cluster])
        spikes = self.spikes(cluster)
        inside = np.asarray(inside, dtype=bool)
        if inside.shape != spikes.shape:
            raise InputError(f"The split selection covers {inside.size} spikes, cluster {cluster} has {spikes.size}.")
        if not inside.any() or inside.all():
            raise InputError(f"The lasso holds {'none' if not inside.any() else 'all'} of cluster {cluster}'s spikes: "
                             "draw it around a part of them (Ctrl-click points on the amplitude view).")
        a, b = self._new_id(), self._new_id()
        after = {c: g for c, g in self.groups.items() if c != cluster}
        after[a] = after[b] = "unsorted"
        self._do(Change(f"split of {cluster} into {a} and {b}", spikes, np.full(len(spikes), cluster),
                        np.where(inside, a, b), dict(self.groups), after, [a, b]))
        return a, b

    def label(self, ids, group: str) -> list[int]:
        """Set the label (good / mua / noise / unsorted) of clusters ``ids``; returns them."""
        if group not in GROUPS:
            raise InputError(f"Unknown label {group!r}: use one of {', '.join(GROUPS)}.")
        ids = self._check(ids)
        after = dict(self.groups)
        after.update({i: group for i in ids})
        empty = np.zeros(0, np.int64)
        self._do(Change(f"label {group} on {', '.join(map(str, ids))}", empty, empty, empty, dict(self.groups), after, ids))
        return ids

    def undo(self) -> Change | None:
        return self.history.undo()

    def redo(self) -> Change | None:
        return self.history.redo()

    def _revert(self, change: Change) -> None:
        self._apply(change.spikes, change.old, change.groups_before)

    def _reapply(self, change: Change) -> None:
        self._apply(change.spikes, change.new, change.groups_after)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _do(self, change: Change) -> None:
        self._reapply(change)
        self.history.record(change)

    def _apply(self, spikes: np.ndarray, clusters: np.ndarray, groups: dict) -> None:
        self.spike_clusters[spikes] = clusters
        present = set(self.cluster_ids.tolist())
        self.groups = {c: g for c, g in groups.items() if c in present}
        self.save(spikes)

    def save(self, changed: np.ndarray | None = None) -> None:
        """Write spike_clusters.npy and cluster_group.tsv, as Phy does, and the metric columns Phy
        shows (cluster_SNR.tsv …) for the clusters as they are now: one transaction
        (:func:`engine.ephys.phy.commit_curation`; ``changed``: the spikes this change moved)."""
        commit_curation(self.folder, self.spike_clusters, self.groups, changed, self.rows)

    # -- unit table ----------------------------------------------------------------------------------
    def mean_waveform(self, cluster: int) -> np.ndarray:
        """The cluster's model mean waveform (D, C) µV (engine.ephys.qc.mean_waveform)."""
        sel = self.spikes(cluster)
        return mean_waveform(self.templates_uv, self.spike_templates[sel], self.amplitudes[sel])

    def row(self, cluster: int) -> dict:
        """The unit table's row of a cluster (metrics as engine.ephys.qc defines them)."""
        cluster = int(cluster)
        row = self._rows.get(cluster)
        if row is None:
            sel = self.spikes(cluster)
            row = {"cluster_id": cluster, **unit_metrics(self.spike_times[sel] / self.sample_rate, self.mean_waveform(cluster),
                                                         self.noise_sd, self.duration)}
            row["depth_um"] = float(self.positions[row["peak_channel"], 1]) if len(self.positions) else 0.0
            self._rows[cluster] = row
        return {**row, "group": self.groups.get(cluster, "unsorted")}

    def rows(self) -> list[dict]:
        return [self.row(int(c)) for c in self.cluster_ids]

    def counts(self) -> dict[str, int]:
        out = {g: 0 for g in GROUPS}
        for c in self.cluster_ids:
            out[self.groups.get(int(c), "unsorted")] += 1
        return out

    # -- unit views -------------------------------------------------------------------------------
    def footprint(self, cluster: int) -> np.ndarray:
        """Peak-to-peak (µV) of the mean waveform on each channel."""
        wave = self.mean_waveform(cluster)
        return np.ptp(wave, axis=0) if wave.size else np.zeros(len(self.positions))

    def amplitudes_of(self, cluster: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times s, amplitudes µV, spike indices) of the cluster."""
        sel = self.spikes(cluster)
        return self.spike_times[sel] / self.sample_rate, self.spike_amplitudes_uv[sel], sel

    @property
    def has_features(self) -> bool:
        return self.phy.has_features

    def features_of(self, cluster: int, channels) -> tuple[np.ndarray, np.ndarray]:
        """(first-PC features (n, len(channels)), spike indices) of the cluster, Phy's feature view
        axes; NaN where a spike's template has no feature on a channel. Needs :attr:`has_features`."""
        sel = self.spikes(cluster)
        return self.phy.features_on(sel, channels)[:, 0, :], sel

    def best_channels(self, cluster: int, n: int = 12) -> np.ndarray:
        """The ``n`` channels with the largest footprint (sorted by channel index)."""
        foot = self.footprint(cluster)
        return np.sort(np.argsort(-foot)[: min(n, len(foot))])

    def waveforms(self, source: TraceSource | None, cluster: int, n_spikes: int = 40, seed: int = 0) -> dict:
        """Mean and a random sample of spike waveforms (µV) of a cluster: ``{"mean": (D, C), "samples":
        (n, D, C), "times": ms, "trough": index}``. Samples are read from the preprocessed recording
        (one short window per spike); without a recording, only the model's mean."""
        d = self.templates_uv.shape[1]
        sel = self.spikes(cluster)
        tids, counts = np.unique(self.spike_templates[sel], return_counts=True)
        trough = int(self.template_troughs[tids[np.argmax(counts)]]) if len(tids) else d // 3
        out = {"mean": self.mean_waveform(cluster), "samples": np.zeros((0, d, self.templates_uv.shape[2]), np.float32),
               "times": (np.arange(d) - trough) / self.sample_rate * 1e3, "trough": trough}
        if source is None or not len(sel):
            return out
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(sel, size=min(n_spikes, len(sel)), replace=False))
        starts = self.spike_times[pick] - trough
        starts = starts[(starts >= 0) & (starts + d <= source.recording.n_samples)]
        samples = [source.preprocessed(s, s + d) for s in starts]
        if samples:
            out["samples"] = np.stack(samples)
            out["mean"] = out["samples"].mean(axis=0) if len(samples) >= 10 else out["mean"]
        return out

    def correlogram(self, a: int, b: int, bin_s: float = 0.0005, window_s: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """Cross-correlogram of clusters ``a`` → ``b`` (autocorrelogram when a == b, a spike not
        paired with itself): (bin centers s, counts). Lags (t_b − t_a) within ±window_s, bins of bin_s
        centred on multiples of bin_s."""
        return correlogram(self.spike_times[self.spikes(a)], self.spike_times[self.spikes(b)], self.sample_rate,
                           bin_s, window_s, same=int(a) == int(b))

    def isi_histogram(self, cluster: int, bin_s: float = 0.0005, max_s: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """(bin edges s, counts) of the cluster's inter-spike intervals up to ``max_s``."""
        return isi_histogram(self.spike_times[self.spikes(cluster)] / self.sample_rate, bin_s, max_s)

    def similar(self, cluster: int, n: int = 10) -> list[tuple[int, float]]:
        """Clusters most similar to ``cluster`` by template similarity (best over their templates), best first."""
        pairs = np.unique(np.stack([self.spike_clusters, self.spike_templates]), axis=1)  # (cluster, template) in use
        own = pairs[1, pairs[0] == int(cluster)]
        if not len(own):
            return []
        best = self.template_similarity[own].max(axis=0)[pairs[1]]  # per pair: similarity to the cluster
        out = {}
        for c, s in zip(pairs[0].tolist(), best.tolist()):
            if c != int(cluster):
                out[c] = max(out.get(c, -1.0), s)
        out = list(out.items())
        out.sort(key=lambda item: -item[1])
        return out[:n]


# -- correlograms ------------------------------------------------------------------------------------

def correlogram(times_a: np.ndarray, times_b: np.ndarray, sample_rate: float, bin_s: float = 0.0005, window_s: float = 0.05,
                same: bool = False, max_pairs: int = 20_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of lags t_b − t_a (spike samples, sorted) within ±window; ``same``: a spike is not paired with itself."""
    ta, tb = np.asarray(times_a, np.int64), np.asarray(times_b, np.int64)
    b = max(int(round(bin_s * sample_rate)), 1)
    m = max(int(round(window_s / bin_s)), 1)
    edges = (np.arange(-m, m + 2) - 0.5) * b  # 2m + 1 bins centred on -m·b … m·b
    centers = np.arange(-m, m + 1) * b / sample_rate
    if not len(ta) or not len(tb):
        return centers, np.zeros(2 * m + 1, np.int64)
    lo = np.searchsorted(tb, ta + edges[0], side="left")
    hi = np.searchsorted(tb, ta + edges[-1], side="left")
    n = hi - lo
    if n.sum() > max_pairs:  # very busy units: use a subset of the reference spikes, scaled back
        keep = np.sort(np.random.default_rng(0).choice(len(ta), size=max(1, int(len(ta) * max_pairs / n.sum())), replace=False))
        scale = len(ta) / len(keep)
        ta, lo, n = ta[keep], lo[keep], n[keep]
    else:
        keep, scale = np.arange(len(ta)), 1.0
    ref = np.repeat(np.arange(len(ta)), n)
    offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    j = lo[ref] + offset
    lags = tb[j] - ta[ref]
    if same:  # tb is ta: drop each spike's pair with itself (not other spikes at the same time)
        lags = lags[j != keep[ref]]
    index = np.floor((lags - edges[0]) / b).astype(np.int64)  # half-open bins [edge, next edge)
    counts = np.bincount(index[(index >= 0) & (index < 2 * m + 1)], minlength=2 * m + 1)
    return centers, np.round(counts * scale).astype(np.int64)


def isi_histogram(times_s: np.ndarray, bin_s: float = 0.0005, max_s: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    isis = np.diff(np.sort(np.asarray(times_s, np.float64)))
    edges = np.arange(0.0, max_s + bin_s / 2, bin_s)
    return edges, np.histogram(isis, edges)[0]


# -- table filter ----------------------------------------------------------------------------------

_COLUMN_ALIASES = {"id": "cluster_id", "cluster": "cluster_id", "spikes": "n_spikes", "n": "n_spikes", "rate": "firing_rate",
                   "fr": "firing_rate", "amp": "amplitude_uv", "amplitude": "amplitude_uv", "snr": "snr",
                   "isi": "isi_violations_ratio", "presence": "presence_ratio", "ch": "peak_channel", "channel": "peak_channel",
                   "depth": "depth_um", "label": "group", "group": "group"}
_CONDITION = re.compile(r"^\s*([a-z_]+)\s*(<=|>=|==|!=|<|>|=)\s*([^\s]+)\s*$")


def filter_rows(rows: list[dict], text: str) -> list[dict]:
    """Rows matching every term of ``text`` (spaces or commas between terms): ``snr>5``, ``rate>=1``,
    ``label=good``, or a bare word/number matching the label or the id. InputError on an unknown column."""
    import operator

    ops = {"<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge, "==": operator.eq, "=": operator.eq,
           "!=": operator.ne}
    # "snr > 5" typed with spaces is one term
    joined = re.sub(r"\s*(<=|>=|==|!=|<|>|=)\s*", r"\1", text.strip())
    terms = [t for t in re.split(r"[,\s]+", joined) if t]
    tests = []
    for term in terms:
        match = _CONDITION.match(term.lower())
        if match:
            name, op, value = match.groups()
            column = _COLUMN_ALIASES.get(name, name)
            if column not in TABLE_COLUMNS:
                raise InputError(f"Unknown column {name!r} in the filter: use one of {', '.join(sorted(_COLUMN_ALIASES))}.")
            if column == "group":
                tests.append(lambda r, c=column, o=ops[op], v=value: o(str(r[c]), v))
            else:
                try:
                    number = float(value)
                except ValueError as exc:
                    raise InputError(f"Filter {term!r}: {value!r} is not a number.") from exc
                tests.append(lambda r, c=column, o=ops[op], v=number: o(float(r[c]), v))
        else:
            word = term.lower()
            tests.append(lambda r, w=word: str(r["group"]).startswith(w) or str(r["cluster_id"]) == w)
    return [r for r in rows if all(t(r) for t in tests)]


__all__ = ["Curation", "TraceSource", "Change", "sort_job", "open_phy_job", "open_recording_job", "phy_folder_for", "find_probe",
           "is_phy_folder", "is_curated", "backup_for", "recording_of", "correlogram", "isi_histogram", "filter_rows",
           "read_view_state", "save_view_state",
           "REFRACTORY_S"]
