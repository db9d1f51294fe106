"""Curation of CNMF results outside Qt: job bodies, ROI geometry, decisions with undo, autosave.

Curation is a log of decisions (accept, reject, delete, merge, add) applied one after the other
to the CNMF result. Each decision names its ROIs by their centers, not by index, so the log can
be replayed on a later run of the same movie (indices change when parameters do). The log is
saved atomically after every change to ``workdir_for(movie)/calcium_curation.json``; the CNMF
result it applies to is saved once per run beside it (``cnmf_result.npz``), so reopening the
movie shows the curated ROIs without running again. One plane / channel of a multi-plane or multi-channel
recording (``selection``: ``{"plane": 1, "channel": 2}``) has its own pair, ``…plane1.channel2.json`` / ``.npz``.

Everything here that costs more than drawing runs inside background jobs (the ``*_job``
functions take ``progress``); the GUI thread only applies what they return.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import sparse

from engine.calcium.io import open_movie, summary_images
from engine.calcium.pipeline import (SIZE_THRESHOLD, CNMFResult, add_component, merge_components, remove_components,
                                     run_cnmf)
from engine.progress import as_progress
from engine.storage import atomic_save_json, atomic_write_bytes, read_hand_work, remove_stale_temp, workdir_for
from engine.undo import History

CURATION_FILE = "calcium_curation.json"
RESULT_FILE = "cnmf_result.npz"
DECISIONS = ("accept", "reject", "delete", "merge", "add")
MAX_UNDO = 50  # decisions kept for undo (each edit's states share most arrays with the next)


# -- ROI geometry ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RoiGeometry:
    """What the field of view draws: one contour list per ROI (x, y arrays in image coordinates,
    pixel centers at +0.5) and an image of which ROI owns each pixel (-1: none)."""

    contours: tuple
    owner: np.ndarray  # h × w int32

    def without(self, indices) -> "RoiGeometry":
        """The geometry after deleting ``indices`` (a lookup, cheap enough for the GUI thread)."""
        drop = set(int(i) for i in np.atleast_1d(indices))
        keep = [k for k in range(len(self.contours)) if k not in drop]
        remap = np.full(len(self.contours) + 1, -1, np.int32)  # last entry maps -1 to -1
        remap[keep] = np.arange(len(keep), dtype=np.int32)
        return RoiGeometry(tuple(self.contours[k] for k in keep), remap[self.owner])


def roi_geometry(result: CNMFResult, threshold: float = SIZE_THRESHOLD) -> RoiGeometry:
    """Contours of each footprint at ``threshold`` × its peak, and the owner of each pixel (the
    ROI whose normalized footprint is largest there, among those above the threshold)."""
    from skimage.measure import find_contours

    h, w = result.image_shape
    A = result.A.tocsc()
    contours = []
    for k in range(A.shape[1]):
        col = A[:, k]
        if col.nnz == 0:
            contours.append(())
            continue
        rows, cols = np.divmod(col.indices, w)
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        box = np.zeros((r1 - r0 + 2, c1 - c0 + 2), np.float32)  # a zero border closes every contour
        box[rows - r0 + 1, cols - c0 + 1] = col.data
        level = threshold * float(col.data.max())
        # The outline only: a noisy footprint's level set also has specks, which clutter the view.
        outline = max(find_contours(box, level), key=len, default=None)
        contours.append(() if outline is None else ((outline[:, 1] + c0 - 1 + 0.5, outline[:, 0] + r0 - 1 + 0.5),))
    owner = np.full(h * w, -1, np.int32)
    if A.shape[1]:
        peaks = np.asarray(A.max(axis=0).toarray()).ravel()
        peaks[peaks <= 0] = 1.0
        strong = (A @ sparse.diags(1.0 / peaks)).tocsr()
        strong.data[strong.data < threshold] = 0
        strong.eliminate_zeros()
        has = np.diff(strong.indptr) > 0
        owner[has] = np.asarray(strong[has].argmax(axis=1)).ravel()
    return RoiGeometry(tuple(contours), owner.reshape(h, w))


# -- saving the result ----------------------------------------------------------------------------

def movie_identity(path: Path) -> dict:
    stat = Path(path).stat()
    return {"name": Path(path).name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def save_result(result: CNMFResult, path: Path, identity: dict) -> Path:
    """The base CNMF result as an .npz without pickles (atomic)."""
    arrays = {name: np.asarray(getattr(result, name)) for name in ("C", "S", "F", "Fneu", "f", "baseline", "g", "sigma",
                                                                   "centers", "accepted")}
    for name in ("A", "b"):
        m = getattr(result, name).tocsc()
        arrays.update({f"{name}_data": m.data, f"{name}_indices": m.indices, f"{name}_indptr": m.indptr,
                       f"{name}_shape": np.array(m.shape)})
    arrays.update({f"metric_{k}": np.asarray(v) for k, v in result.metrics.items()})
    arrays.update({f"image_{k}": np.asarray(v) for k, v in result.images.items()})
    if result.shifts is not None:
        arrays["shifts"] = np.asarray(result.shifts)
    meta = {"image_shape": list(result.image_shape), "fps": result.fps, "params": result.params,
            "info": result.info, "movie": identity}
    arrays["meta"] = np.array(json.dumps(meta, default=str))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


def load_result(path: Path, identity: dict) -> CNMFResult | None:
    """The saved result, or None when there is none, it is unreadable, or the movie changed since."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("movie") != identity:
                return None

            def matrix(name):
                return sparse.csc_matrix((z[f"{name}_data"], z[f"{name}_indices"], z[f"{name}_indptr"]),
                                         shape=tuple(z[f"{name}_shape"]))

            keys = set(z.files)
            return CNMFResult(
                A=matrix("A"), C=z["C"], S=z["S"], F=z["F"], Fneu=z["Fneu"], b=matrix("b"), f=z["f"], baseline=z["baseline"],
                g=z["g"], sigma=z["sigma"], centers=z["centers"], accepted=z["accepted"].astype(bool),
                metrics={k[7:]: z[k] for k in keys if k.startswith("metric_")},
                images={k[6:]: z[k] for k in keys if k.startswith("image_")},
                image_shape=tuple(meta["image_shape"]), fps=float(meta["fps"]),
                shifts=z["shifts"] if "shifts" in keys else None, params=meta["params"], info=meta["info"])
    except (OSError, ValueError, KeyError):
        return None


# -- decisions ------------------------------------------------------------------------------------

def _match(result: CNMFResult, center, tolerance: float) -> int | None:
    """The ROI whose center is nearest ``center`` within ``tolerance`` px."""
    if result.n_components == 0:
        return None
    distance = np.hypot(*(result.centers - np.asarray(center, float)).T)
    k = int(np.argmin(distance))
    return k if distance[k] <= tolerance else None


def apply_decision(result: CNMFResult, decision: dict, movie_path: Path | None = None, progress=None) -> CNMFResult | None:
    """``result`` with one logged decision applied; None when its ROIs are not in ``result``.

    "add" runs the local NMF (:func:`add_component`): call it in a job."""
    op = decision["op"]
    tolerance = max(1.5, result.params.get("neuron_diameter", 10.0) / 4.0)
    if op == "add":
        return add_component(result, movie_path, decision["center"], progress=progress)
    found = [_match(result, c, tolerance) for c in decision["centers"]]
    if any(k is None for k in found) or len(set(found)) != len(found):
        return None
    if op in ("accept", "reject"):
        accepted = result.accepted.copy()
        accepted[found] = op == "accept"
        return replace(result, accepted=accepted)
    if op == "delete":
        return remove_components(result, found)
    if op == "merge":
        return merge_components(result, found[0], found[1])
    raise ValueError(f"unknown decision {op!r}")


def replay(result: CNMFResult, decisions: list[dict], movie_path, progress=None) -> tuple[CNMFResult, list[dict], int]:
    """Apply a saved log: (result, the decisions that applied, how many did not)."""
    progress = as_progress(progress)
    applied, skipped = [], 0
    for decision in progress.iterate(decisions, message="Restoring decisions"):
        changed = apply_decision(result, decision, movie_path)
        if changed is None:
            skipped += 1
        else:
            result = changed
            applied.append(decision)
    return result, applied, skipped


def _selected(name: str, selection: dict | None) -> str:
    """``name`` for one plane / channel of a recording: ``cnmf_result.plane1.channel2.npz``."""
    stem, dot, ext = name.rpartition(".")
    return "".join([stem, *(f".{k}{v}" for k, v in sorted((selection or {}).items())), dot, ext])


def curation_path(movie_path: Path, selection: dict | None = None) -> Path:
    return workdir_for(movie_path) / _selected(CURATION_FILE, selection)


def result_path(movie_path: Path, selection: dict | None = None) -> Path:
    return workdir_for(movie_path) / _selected(RESULT_FILE, selection)


def load_decisions(movie_path: Path, selection: dict | None = None) -> tuple[list[dict], str]:
    """The saved decisions, and "" — or, for a damaged file, none and the message that says where it
    was kept (:func:`engine.storage.read_hand_work`: the next save must not overwrite the only copy)."""
    def parse(path: Path) -> list[dict]:
        decisions = json.loads(path.read_text(encoding="utf-8"))["decisions"]
        if not isinstance(decisions, list):
            raise ValueError("'decisions' is not a list")
        return [d for d in decisions if isinstance(d, dict) and d.get("op") in DECISIONS]

    decisions, notice = read_hand_work(curation_path(movie_path, selection), parse, "curation decisions")
    return decisions or [], notice


class Curation:
    """The curated result with its decision log and undo / redo (GUI thread; no Qt).

    An edit is (state before, state after, decision): the result and geometry share most arrays
    between steps, so keeping both costs little; undo drops the decision from the log, redo adds it
    back, and either saves the log as a decision does."""

    def __init__(self, movie_path: Path, result: CNMFResult, geometry: RoiGeometry, decisions: list[dict],
                 selection: dict | None = None):
        self.movie_path = movie_path
        self.selection = dict(selection or {})
        self.result = result
        self.geometry = geometry
        self.decisions = list(decisions)
        self.history: History[tuple] = History(self._revert, self._reapply, depth=MAX_UNDO)

    @property
    def can_undo(self) -> bool:
        return self.history.can_undo

    @property
    def can_redo(self) -> bool:
        return self.history.can_redo

    def counts(self) -> tuple[int, int]:
        accepted = int(self.result.accepted.sum())
        return accepted, self.result.n_components - accepted

    def describe(self, decision: dict) -> str:
        op = decision["op"]
        where = decision.get("center") or decision["centers"][0]
        return f"{op} at (row {where[0]:.0f}, col {where[1]:.0f})"

    def decision(self, op: str, indices) -> dict:
        """A log entry for ``op`` on the ROIs at ``indices`` of the current result."""
        return {"op": op, "centers": [[round(float(v), 3) for v in self.result.centers[k]] for k in indices]}

    def commit(self, decision: dict, result: CNMFResult, geometry: RoiGeometry | None = None) -> None:
        """Record a change already computed (``result``), keep the previous state for undo, autosave."""
        edit = ((self.result, self.geometry), (result, geometry if geometry is not None else self.geometry), decision)
        self._reapply(edit)
        self.history.record(edit)

    def set_accepted(self, indices, accept: bool) -> dict | None:
        """Accept or reject ROIs (no job: only a flag changes). None when nothing would change."""
        indices = [int(k) for k in indices if bool(self.result.accepted[k]) != accept]
        if not indices:
            return None
        decision = self.decision("accept" if accept else "reject", indices)
        accepted = self.result.accepted.copy()
        accepted[indices] = accept
        self.commit(decision, replace(self.result, accepted=accepted))
        return decision

    def delete(self, indices) -> dict:
        decision = self.decision("delete", indices)
        self.commit(decision, remove_components(self.result, indices), self.geometry.without(indices))
        return decision

    def undo(self) -> dict | None:
        """Take back the last decision; returns it (None when there is none)."""
        edit = self.history.undo()
        return edit[2] if edit is not None else None

    def redo(self) -> dict | None:
        """Make the last undone decision again; returns it (None when there is none)."""
        edit = self.history.redo()
        return edit[2] if edit is not None else None

    def _revert(self, edit: tuple) -> None:
        (self.result, self.geometry), _, decision = edit
        # The undone decision is the log's last one: every change goes through commit().
        if self.decisions and self.decisions[-1] == decision:
            self.decisions.pop()
        self.save()

    def _reapply(self, edit: tuple) -> None:
        _, (self.result, self.geometry), decision = edit
        self.decisions.append(decision)
        self.save()

    def save(self) -> Path:
        return atomic_save_json(curation_path(self.movie_path, self.selection), {
            "version": 1, "movie": movie_identity(self.movie_path), "decisions": self.decisions,
            "help": "Decisions applied in order to the CNMF result; ROIs are named by their (row, col) centers."})


# -- job bodies -----------------------------------------------------------------------------------

def open_movie_job(path: Path, selection: dict | None = None, progress=None) -> dict:
    """Open the movie (its chosen plane / channel) lazily, its summary images, and the saved curated result when
    there is one."""
    progress = as_progress(progress)
    scan, restore = progress.split([3, 1], ["Summary images", "Restoring curation"])
    movie = open_movie(path, **(selection or {}))
    summaries = summary_images(movie, progress=scan)
    out = {"movie": movie, "summaries": summaries, "curation": None, "skipped": 0, "notice": ""}
    remove_stale_temp(workdir_for(path))
    base = load_result(result_path(path, selection), movie_identity(path))
    if base is not None:
        out["curation"], out["skipped"], out["notice"] = _curated(path, base, restore, selection)
    return out


def _source(path: Path, selection: dict | None):
    """What the pipeline opens: the file, or the chosen plane / channel of it."""
    return open_movie(path, **selection) if selection else path


def _curated(path: Path, base: CNMFResult, progress, selection: dict | None = None) -> tuple[Curation, int, str]:
    """The curation replayed on ``base``, the number of decisions that matched no ROI, and the
    message about a damaged decisions file ("" when none)."""
    decisions, notice = load_decisions(path, selection)
    result, applied, skipped = replay(base, decisions, _source(path, selection), progress=progress)
    return Curation(path, result, roi_geometry(result), applied, selection), skipped, notice


def run_cnmf_job(path: Path, fs: float | None, neuron_diameter: float, register: str, selection: dict | None = None,
                 progress=None, classifier=None) -> dict:
    """Run the pipeline on the movie file (its own reader: the GUI keeps reading frames from its
    own), let the ROI classifier accept or reject (``classifier``: its
    :class:`~engine.calcium.classifier.Decisions`, once they suffice), save the result beside the
    movie, and replay the saved decisions on it."""
    progress = as_progress(progress)
    run, restore = progress.split([10, 1], [None, "Restoring decisions"])
    result = run_cnmf(_source(path, selection), fs=fs, neuron_diameter=neuron_diameter, register=register, progress=run)
    if classifier is not None:
        from engine.calcium.classifier import rescore

        result = rescore(result, classifier)
    curation, skipped, notice = _curated(path, result, restore, selection)
    progress.check()  # the last moment a cancel keeps the previous result: saving it is the end of the job
    save_result(result, result_path(path, selection), movie_identity(path))
    return {"curation": curation, "skipped": skipped, "notice": notice}


def add_roi_job(result: CNMFResult, path: Path, center, selection: dict | None = None, progress=None) -> dict:
    new = add_component(result, _source(path, selection), center, progress=progress)
    return {"result": new, "geometry": roi_geometry(new)}


def merge_rois_job(result: CNMFResult, i: int, j: int, progress=None) -> dict:
    new = merge_components(result, i, j)
    return {"result": new, "geometry": roi_geometry(new)}


# -- frames of the movie player -----------------------------------------------------------------

MOVIE_SOURCES = ("Raw", "Denoised (A·C)", "Residual", "Background")


def player_frame(source: str, movie, result: CNMFResult | None, t: int) -> np.ndarray:
    """Frame ``t`` of the raw movie or of the model: one frame read and two sparse products,
    cheap enough to draw while playing."""
    raw_needed = source in ("Raw", "Residual")
    raw = movie.frame(t) if raw_needed else None
    if result is None:
        return raw if raw is not None else movie.frame(t)
    if raw is not None and result.shifts is not None:
        from engine.calcium.motion import shift_frames

        raw = shift_frames(raw[None], -result.shifts[t:t + 1])[0]  # the correction the pipeline applied
    if source == "Raw":
        return raw
    h, w = result.image_shape
    cells = (result.A @ (result.C[:, t] + result.baseline)).reshape(h, w) if result.n_components else np.zeros((h, w))
    background = (result.b @ result.f[:, t]).reshape(h, w)
    if source.startswith("Denoised"):
        return np.asarray(cells, np.float32)
    if source == "Background":
        return np.asarray(background, np.float32)
    return np.asarray(raw - cells - background, np.float32)



def export_nwb_job(result: CNMFResult, path: Path, movie_path: Path, metadata: dict | None = None, progress=None) -> Path:
    """The curated ROIs, traces and summary images as one NWB file, with the user's session metadata."""
    from engine.calcium.nwb import export_nwb

    as_progress(progress).report(0.1, "Writing the NWB file")
    return export_nwb(result, path, movie_path=movie_path, metadata=metadata)


def export_job(result: CNMFResult, directory: Path, movie_path: Path, progress=None) -> Path:
    """The curated ROIs as a Suite2p folder (plus footprints.npz and traces.npz)."""
    from engine.calcium.export import export_suite2p

    progress = as_progress(progress)
    progress.report(0.1, "Writing the Suite2p folder")
    return export_suite2p(result, directory, data_path=str(movie_path))
