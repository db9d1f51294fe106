"""Phy-compatible output folder (the Kilosort layout read by Phy and ``phylib.io.model.TemplateModel``).

Written by :func:`write_phy`:

``params.py``                 dat_path, n_channels_dat, dtype, offset (header bytes: 0), sample_rate, hp_filtered
``spike_times.npy``           (n,) uint64 trough sample of each spike
``spike_templates.npy``       (n,) uint32 template that fit the spike
``spike_clusters.npy``        (n,) uint32 cluster (= template until curated)
``amplitudes.npy``            (n,) float32 amplitude a of the spike (the model is Σ a · template)
``templates.npy``             (K, D, C) float32 whitened, unit Frobenius norm (rank R)
``channel_map.npy``           (C,) int32 file column of each template channel
``channel_positions.npy``     (C, 2) float32 µm
``whitening_mat.npy``/``whitening_mat_inv.npy``  (C, C), Phy's convention: whitened = data @ whitening_mat,
                              unwhitened template = template @ whitening_mat_inv
``similar_templates.npy``     (K, K) float32 best-lag cosine similarity
``pc_features.npy``           (n, 3, P) float32 temporal-PC features on the template's P channels
``pc_feature_ind.npy``        (K, P) uint32 those channels (indices into channel_map)
``spike_positions.npy``       (n, 2) float32 x, y in µm of each spike in the recording's coordinates (before drift
                              correction; Kilosort 4's name): the centre of mass of its PC features plus the drift
``motion.npz``                when drift was estimated (engine/ephys/motion.py): temporal_bins_s (T,),
                              spatial_bins_um (D,), displacement_um (T, D) float32 (D = 1 when rigid), rigid (bool)
``cluster_group.tsv``         cluster_id, group (unsorted / good / mua / noise)
``neurowb_sort.json``         ours: preprocessing (to rebuild traces and residuals), raw scaling, timings
``cluster_SNR.tsv``, ``cluster_ISIViol.tsv``, ``cluster_PresenceRatio.tsv``
                              our QC metrics per cluster (engine.ephys.qc), which Phy shows as extra columns
                              of its cluster view as it does Kilosort's ``cluster_ContamPct.tsv``

Curation writes ``spike_clusters.npy`` and ``cluster_group.tsv`` (atomically), as Phy does, and
rewrites the metric files for the clusters it created. Those are several files, so each change is
one transaction (:func:`commit_curation`): the change itself (spikes → new clusters, every label
after it) is first written to ``.neurowb_curation_journal.npz``, then the files, then the journal
is removed. Reading a folder with a journal left by a kill replays it (:func:`read_phy`); the
replay is idempotent, so after a kill at any instant the folder reads as the state after the
last change whose journal was written — never a mix of two.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.storage import atomic_save_json, atomic_save_npy, atomic_write_bytes, atomic_write_text

GROUPS = ("good", "mua", "noise", "unsorted")
REQUIRED = ("params.py", "spike_times.npy", "spike_templates.npy", "amplitudes.npy", "templates.npy", "channel_map.npy", "channel_positions.npy")


def write_phy(sorting, folder: str | os.PathLike, raw_path: str | os.PathLike | None = None, recording_params=None,
              source: dict | None = None) -> Path:
    """Write ``sorting`` (:class:`engine.ephys.sorter.Sorting`) as a Phy folder; returns the folder.

    ``raw_path``/``recording_params``: the flat binary file Phy reads traces from (params.py's dat_path);
    ``source``: the recording as opened (``{"path", "format"}``) when it is in another format, kept in
    ``neurowb_sort.json`` so the folder reopens with its traces."""
    from engine.ephys.clustering import template_similarity

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_ch = len(sorting.channels)
    dat_path = str(Path(raw_path).resolve()) if raw_path is not None else ""
    dtype = recording_params.dtype if recording_params is not None else "float32"
    n_channels_dat = recording_params.n_channels if recording_params is not None else n_ch
    params_py = (
        f"dat_path = {dat_path!r}\n"
        f"n_channels_dat = {int(n_channels_dat)}\n"
        f"dtype = {dtype!r}\n"
        f"offset = 0\n"
        f"sample_rate = {float(sorting.sample_rate)!r}\n"
        f"hp_filtered = False\n"
    )
    atomic_write_text(folder / "params.py", params_py)
    atomic_save_npy(folder / "spike_times.npy", sorting.spike_times.astype(np.uint64))
    atomic_save_npy(folder / "spike_templates.npy", sorting.spike_units.astype(np.uint32))
    atomic_save_npy(folder / "spike_clusters.npy", sorting.spike_units.astype(np.uint32))
    atomic_save_npy(folder / "amplitudes.npy", sorting.amplitudes.astype(np.float32))
    atomic_save_npy(folder / "templates.npy", np.ascontiguousarray(np.transpose(sorting.templates, (0, 2, 1))).astype(np.float32))
    atomic_save_npy(folder / "channel_map.npy", sorting.channels.astype(np.int32))
    atomic_save_npy(folder / "channel_positions.npy", sorting.positions.astype(np.float32))
    # The sorter whitens rows as x @ Wᵀ; Phy (phylib's TemplateModel) multiplies from the right: transpose.
    atomic_save_npy(folder / "whitening_mat.npy", sorting.whitening.T.astype(np.float32))
    atomic_save_npy(folder / "whitening_mat_inv.npy", sorting.whitening_inverse.T.astype(np.float32))
    sim = template_similarity(sorting.templates.astype(np.float64)) if sorting.n_units else np.zeros((0, 0))
    atomic_save_npy(folder / "similar_templates.npy", sim.astype(np.float32))
    if sorting.pc_features is not None and sorting.pc_feature_ind is not None:
        atomic_save_npy(folder / "pc_features.npy", sorting.pc_features.astype(np.float32))
        atomic_save_npy(folder / "pc_feature_ind.npy", sorting.pc_feature_ind.astype(np.uint32))
    if sorting.spike_positions is not None:  # Kilosort 4's name: x, y in µm of each spike, the recording's coordinates
        atomic_save_npy(folder / "spike_positions.npy", sorting.spike_positions.astype(np.float32))
    if sorting.motion is not None:  # the estimated drift (engine/ephys/motion.py)
        atomic_write_bytes(folder / "motion.npz", sorting.motion.to_bytes())
    write_cluster_groups(folder, {k: "unsorted" for k in range(sorting.n_units)})
    meta = {
        "template_troughs": sorting.template_troughs.tolist(),
        "preprocess": sorting.preprocess_state,
        "recording": None if recording_params is None else {
            "n_channels": recording_params.n_channels, "sample_rate": recording_params.sample_rate, "dtype": recording_params.dtype,
            "gain_uv": recording_params.gain_uv, "offset": recording_params.offset,
        },
        "info": {k: v for k, v in sorting.info.items()},
        "source": source,
    }
    atomic_save_json(folder / "neurowb_sort.json", json.loads(json.dumps(meta, default=_jsonable)))
    return folder


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_cluster_groups(folder: str | os.PathLike, groups: dict[int, str]) -> Path:
    """Write ``cluster_group.tsv`` (Phy's label file) atomically."""
    bad = {g for g in groups.values() if g not in GROUPS}
    if bad:
        raise InputError(f"Unknown cluster label(s) {sorted(bad)}: use one of {', '.join(GROUPS)}.")
    lines = ["cluster_id\tgroup"] + [f"{int(k)}\t{v}" for k, v in sorted(groups.items())]
    return atomic_write_text(Path(folder) / "cluster_group.tsv", "\n".join(lines) + "\n")


def read_cluster_groups(folder: str | os.PathLike) -> dict[int, str]:
    path = Path(folder) / "cluster_group.tsv"
    if not path.is_file():
        return {}
    out = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"'{path}' is not UTF-8 text: save the cluster labels as a UTF-8 tab-separated file "
                         "(cluster_id, group), or delete it to start the labels afresh.", details=str(exc)) from exc
    for line in text.splitlines()[1:]:
        parts = line.strip().split("\t")
        if len(parts) >= 2 and parts[0].strip().lstrip("-").isdigit():
            out[int(parts[0])] = parts[1].strip()
    return out


@dataclass
class PhyFolder:
    """A loaded Phy folder: arrays by file stem, params.py values, labels, our metadata."""

    path: Path
    arrays: dict
    params: dict
    groups: dict
    meta: dict
    recovered: bool = False  # a journal left by an interrupted save was replayed (in memory: see Curation)

    @property
    def spike_times(self) -> np.ndarray:
        return self.arrays["spike_times"].astype(np.int64)

    @property
    def spike_clusters(self) -> np.ndarray:
        return self.arrays.get("spike_clusters", self.arrays["spike_templates"]).astype(np.int64)

    @property
    def sample_rate(self) -> float:
        return float(self.params["sample_rate"])

    @property
    def duration_s(self) -> float:
        """Recording length: from our metadata, else up to the last spike."""
        times = self.arrays["spike_times"]
        return float(self.meta.get("info", {}).get("duration_s") or ((int(times.max()) + 1) / self.sample_rate if len(times) else 0.0))

    def templates_uv(self) -> np.ndarray:
        """(K, D, C) unwhitened templates (unit amplitude)."""
        inv = self.arrays.get("whitening_mat_inv")
        t = self.arrays["templates"]
        return t if inv is None else t @ inv

    def noise_sd(self) -> np.ndarray:
        """Unwhitened noise SD per channel: whitened noise has identity covariance, so sqrt(diag(W⁻ᵀ W⁻¹))."""
        inv = self.arrays.get("whitening_mat_inv")
        if inv is None:
            return np.ones(self.arrays["templates"].shape[2])
        inv = inv.astype(np.float64)
        return np.sqrt(np.clip(np.diag(inv.T @ inv), 1e-12, None))

    @property
    def has_features(self) -> bool:
        pcf, pci = self.arrays.get("pc_features"), self.arrays.get("pc_feature_ind")
        return pcf is not None and pci is not None and len(pcf) == len(self.arrays["spike_times"])

    def features_on(self, spikes: np.ndarray, channels) -> np.ndarray:
        """PC features (n, n_pcs, len(channels)) of ``spikes`` on ``channels``, as Phy's feature view
        reads them: each spike has features on its template's channels (``pc_feature_ind``); NaN
        where that set lacks a channel. Needs :attr:`has_features`."""
        pcf, pci = self.arrays["pc_features"], self.arrays["pc_feature_ind"].astype(np.int64)
        channels = np.asarray(channels, dtype=np.int64).reshape(-1)
        hit = pci[:, :, None] == channels[None, None, :]  # (K, P, c)
        column = np.where(hit.any(1), hit.argmax(1), -1)  # (K, c): a template's column for each channel
        spikes = np.asarray(spikes, dtype=np.int64)
        cols = column[self.arrays["spike_templates"][spikes].astype(np.int64)]  # (n, c)
        out = np.take_along_axis(pcf[spikes], np.maximum(cols, 0)[:, None, :].repeat(pcf.shape[1], 1), axis=2)
        return np.where((cols >= 0)[:, None, :], out, np.nan).astype(np.float32)

    def template_troughs(self, templates_uv: np.ndarray | None = None) -> np.ndarray:
        """Sample of each template's trough: from our metadata, else the largest |value| on its peak channel."""
        troughs = self.meta.get("template_troughs")
        n = len(self.arrays["templates"])
        if troughs is None or len(troughs) != n:
            t = np.abs(self.templates_uv() if templates_uv is None else templates_uv)
            peak = t.max(axis=1).argmax(axis=1) if n else np.zeros(0, int)
            troughs = [int(t[k, :, peak[k]].argmax()) for k in range(n)]
        return np.asarray(troughs, dtype=np.int64)


def read_params_py(path: Path) -> dict:
    """Values of a Phy params.py (a few assignments), without running it."""
    import ast

    out = {}
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except SyntaxError as exc:
        raise InputError(f"'{path}' is not a valid params.py: fix the line it reports.", details=str(exc)) from exc
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def read_phy(folder: str | os.PathLike) -> PhyFolder:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"Phy folder not found: '{folder}'. Give the folder that holds params.py and spike_times.npy.")
    missing = [f for f in REQUIRED if not (folder / f).is_file()]
    if missing:
        raise InputError(f"'{folder}' is not a complete Phy folder: missing {', '.join(missing)}. Sort again or pick the right folder.")
    arrays = {p.stem: _load_array(p) for p in sorted(folder.glob("*.npy"))}
    _check_values(folder, arrays)
    n = len(arrays["spike_times"])
    for name in ("spike_templates", "spike_clusters", "amplitudes"):
        if name in arrays and len(arrays[name]) != n:
            raise InputError(f"'{folder}': {name}.npy has {len(arrays[name])} entries, spike_times.npy {n}; the folder is inconsistent.")
    meta_path = folder / "neurowb_sort.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"'{meta_path}' is damaged (not JSON): delete it (Phy does not need it) or sort again.",
                         details=str(exc)) from exc
    params = read_params_py(folder / "params.py")
    rate = params.get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not np.isfinite(rate) or rate <= 0:
        raise InputError(f"'{folder / 'params.py'}' must give a positive sample_rate (e.g. sample_rate = 30000.0), "
                         f"got {rate!r}.")
    groups = read_cluster_groups(folder)
    recovered = _replay_journal(folder, arrays, groups)
    return PhyFolder(folder, arrays, params, groups, meta, recovered)


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode=None, allow_pickle=False)
    except Exception as exc:  # truncated, not .npy, or pickled objects
        raise InputError(f"'{path}' is damaged (truncated or not a NumPy array): restore it from a copy, or sort again.",
                         details=f"{type(exc).__name__}: {exc}") from exc


def _check_values(folder: Path, arrays: dict) -> None:
    """InputError when the per-spike arrays hold what no sorter writes: non-integer or negative spike times,
    clusters or templates, templates that do not exist, or NaN amplitudes."""
    for name in ("spike_times", "spike_templates", "spike_clusters"):
        a = arrays.get(name)
        if a is not None and (a.ndim != 1 and a.squeeze().ndim != 1 or not np.issubdtype(a.dtype, np.integer)
                              or (a.size and a.min() < 0)):
            raise InputError(f"'{folder}': {name}.npy must hold one non-negative integer per spike, got {a.dtype} "
                             f"of shape {a.shape}; the folder is damaged: sort again.")
        if a is not None:
            arrays[name] = a.reshape(-1)
    if not np.issubdtype(arrays["amplitudes"].dtype, np.number):
        raise InputError(f"'{folder}': amplitudes.npy holds {arrays['amplitudes'].dtype}, not numbers; the folder is damaged.")
    templates = arrays["templates"]
    if templates.ndim != 3:
        raise InputError(f"'{folder}': templates.npy must be templates × samples × channels, got shape {templates.shape}.")
    used = arrays["spike_templates"]
    if used.size and used.max() >= len(templates):
        raise InputError(f"'{folder}': spike_templates.npy refers to template {int(used.max())} but templates.npy has "
                         f"{len(templates)}; the folder is inconsistent: sort again.")
    amplitudes = arrays["amplitudes"] = np.atleast_1d(arrays["amplitudes"].squeeze())
    bad = ~np.isfinite(amplitudes.astype(np.float64))
    if bad.any():
        raise InputError(f"'{folder}': amplitudes.npy has {int(bad.sum()):,} NaN or infinite values (first: spike "
                         f"{int(np.flatnonzero(bad)[0]):,}); the folder is damaged: sort again.")


# Phy column name → unit-table row key; Phy has its own n_spikes, fr, amp and depth columns.
METRIC_FILES = {"SNR": "snr", "ISIViol": "isi_violations_ratio", "PresenceRatio": "presence_ratio"}


def write_cluster_metrics(folder: str | os.PathLike, rows: list[dict]) -> None:
    """One ``cluster_<Name>.tsv`` per metric of :data:`METRIC_FILES` (atomically), Phy's extra-column format."""
    for name, key in METRIC_FILES.items():
        lines = [f"cluster_id\t{name}"] + [f"{int(r['cluster_id'])}\t{float(r[key]):.4g}" for r in rows]
        atomic_write_text(Path(folder) / f"cluster_{name}.tsv", "\n".join(lines) + "\n")


JOURNAL_FILE = ".neurowb_curation_journal.npz"


def commit_curation(folder: str | os.PathLike, spike_clusters: np.ndarray, groups: dict[int, str],
                    changed: np.ndarray | None = None, rows=None) -> None:
    """Persist a curation the way Phy does (``spike_clusters.npy``, ``cluster_group.tsv``, and the metric
    columns of ``rows()`` when given) as one transaction: journal, files, journal removed.

    ``changed``: the spikes whose cluster this change set (None: all). The journal holds their new
    clusters and every label, so replaying it over the old or the new files gives the new state.
    """
    folder = Path(folder)
    clusters = np.asarray(spike_clusters).astype(np.uint32)
    changed = np.arange(len(clusters)) if changed is None else np.asarray(changed, dtype=np.int64)
    bad = {g for g in groups.values() if g not in GROUPS}
    if bad:
        raise InputError(f"Unknown cluster label(s) {sorted(bad)}: use one of {', '.join(GROUPS)}.")
    import io

    from engine.storage import atomic_write_bytes

    buffer = io.BytesIO()
    np.savez(buffer, spikes=changed, clusters=clusters[changed], n_spikes=len(clusters),
             groups=np.array(json.dumps({str(k): v for k, v in groups.items()})))
    atomic_write_bytes(folder / JOURNAL_FILE, buffer.getvalue())  # the commit point
    atomic_save_npy(folder / "spike_clusters.npy", clusters)
    write_cluster_groups(folder, groups)
    if rows is not None:
        write_cluster_metrics(folder, rows())
    (folder / JOURNAL_FILE).unlink()


def save_curation(folder: str | os.PathLike, spike_clusters: np.ndarray, groups: dict[int, str]) -> None:
    """Persist a curation (merge/split relabelling and labels) the way Phy does, in one transaction."""
    commit_curation(folder, spike_clusters, groups)


def _replay_journal(folder: Path, arrays: dict, groups: dict) -> bool:
    """Apply a journal left by an interrupted :func:`commit_curation` to the loaded ``arrays`` and
    ``groups`` (in memory; :class:`engine.ephys.curation.Curation` writes the result). True when one was."""
    path = folder / JOURNAL_FILE
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            spikes, clusters, n = z["spikes"], z["clusters"], int(z["n_spikes"])
            saved = {int(k): str(v) for k, v in json.loads(str(z["groups"])).items()}
    except Exception:
        return False  # written atomically, so only damaged from outside: the files themselves stand
    if n != len(arrays["spike_times"]):
        return False  # a journal of another sort of this folder
    current = arrays.get("spike_clusters", arrays["spike_templates"])
    current = np.array(current, dtype=np.uint32)
    current[spikes] = clusters
    arrays["spike_clusters"] = current
    groups.clear()
    groups.update(saved)
    return True
