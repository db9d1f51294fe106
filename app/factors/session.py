"""The microarchitecture workspace's session: what is shown now, held once, with a signal for each change.

The image and its project folder, the pipeline's settings (patch size, pixel size, stride, k …),
the drawn regions (their undo history, their label image, the current region), the results —
CNN, dense latents, NMF factors, GMM clusters —, the coverage–leakage selection of factors, the
factor shown and the running job live here. The panel and its views read them from the session
and redraw when it says something changed (as in :mod:`app.ephys.session`); the engine computes
(:mod:`engine.factors.workflow`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PyQt6.QtCore import QObject, pyqtSignal

from app.jobs import Job
from app.session import Session
from engine.errors import InputError
from engine.factors import workflow
from engine.factors.rois import RegionSet, label_counts

# The pipeline's settings and their defaults; remembered per image, those of saved results win on reopening.
PIPELINE_DEFAULTS = {"patch_size": 128, "epochs": 4, "patches": 1024, "pixel_size_um": 0.0, "stride": 8, "k": 15,
                     "mask_background": True}


class FactorsSession(Session):
    image_changed = pyqtSignal()  # another image, with what its project folder held
    parameters_changed = pyqtSignal()  # the pipeline's settings (restored for an image)
    regions_changed = pyqtSignal()  # the regions: an edit (saved), an undo, a redo, a label file
    region_selected = pyqtSignal()  # the current region (new shapes go to it)
    results_changed = pyqtSignal()  # the model, latents or factors (what came after them is dropped)
    clusters_changed = pyqtSignal()  # the GMM clusters
    selection_changed = pyqtSignal()  # the factors chosen for the regions (recounted or rescored)
    factor_shown = pyqtSignal(int)  # the factor whose heatmap is shown
    # history_changed (Session): the regions' undo history; busy_changed: a pipeline job started or ended

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.path: Path | None = None
        self.image: np.ndarray | None = None
        self.folder: Path | None = None  # the image's project folder: regions and results are saved there
        self.parameters = dict(PIPELINE_DEFAULTS)
        self.regions: RegionSet | None = None
        self.labels: np.ndarray | None = None  # the regions as a label image (0 = none); None when nothing is drawn
        self.counts = np.zeros(1, dtype=np.int64)  # pixels of each label
        self.n_regions = 0  # regions with at least one pixel
        self.current_region: int | None = None  # the label new shapes go to
        self.model = None
        self.latents = None
        self.factors: workflow.Factors | None = None
        self.clusters = None
        self.lam, self.pairs, self.max_pairs = 0.5, 1, 1  # the selection's λ and p, and p's largest value
        self.selection = None  # the factors chosen for the regions (coverage − λ × leakage)
        self.selection_error: str | None = None  # why there is no selection (an InputError's message)
        self.current_factor: int | None = None
        self.job: Job | None = None  # one pipeline job at a time

    # -- image ----------------------------------------------------------------------------
    def open(self, path: Path, result: dict, remembered: dict | None = None) -> workflow.Project:
        """Show an image opened by :func:`engine.factors.workflow.open_project_job`, with what its project held.
        ``remembered``: the settings last used on it. Returns the project (its problems and notices to say)."""
        project: workflow.Project = result["project"]
        self.path, self.image = Path(path), result["image"]
        self.folder = workflow.project_folder(path)
        self.model, self.latents, self.factors, self.clusters = project.model, project.latents, project.factors, project.clusters
        self.selection, self.current_factor = None, None
        self._restore_parameters(remembered or {})
        self.regions = project.regions
        self._hear(self.regions)
        # rasterized and counted by the open job, off the GUI thread
        self._measure_regions(result.get("labels"), result.get("label_counts"), say=False)
        self._score(recount=True, say=False)
        self._pick_factor()
        self.image_changed.emit()  # says it all: the views draw the image first, then regions and results
        return project

    def min_side(self) -> int:
        return int(min(self.image.shape)) if self.image is not None else 0

    # -- pipeline settings ------------------------------------------------------------------
    def set_parameter(self, name: str, value) -> None:
        """A setting typed in (said by the widget itself: no signal)."""
        if name not in PIPELINE_DEFAULTS:
            raise KeyError(name)
        self.parameters[name] = value

    def _restore_parameters(self, remembered: dict) -> None:
        """Small images (the demo mosaic) get smaller patches, so there are enough; then the settings last used
        on this image; then those its saved model, latents and factors were made with."""
        values = {"patch_size": 64 if self.min_side() < 1024 else 128, **remembered}
        if self.model is not None:
            values["patch_size"] = self.model.patch_size
            values["pixel_size_um"] = self.model.preprocessing.pixel_size_um or values.get("pixel_size_um", 0.0)
        if self.latents is not None:
            values["stride"] = self.latents.stride
            values["pixel_size_um"] = self.latents.grid.pixel_size_um or values.get("pixel_size_um", 0.0)
        if self.factors is not None:
            values["k"] = self.factors.k
        for key, default in PIPELINE_DEFAULTS.items():
            value = values.get(key)
            if isinstance(default, bool):
                if isinstance(value, bool):
                    self.parameters[key] = value
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                self.parameters[key] = float(value) if isinstance(default, float) else int(value)
        self.parameters_changed.emit()

    def pixel_size_um(self) -> float | None:
        return self.parameters["pixel_size_um"] or None

    # -- regions (each edit is saved atomically, then rasterized) ------------------------------
    def select_region(self, label: int | None) -> None:
        if label != self.current_region:
            self.current_region = label
            self.region_selected.emit()

    def region_name(self, label: int) -> str:
        try:
            return self.regions.region(label).name
        except (InputError, AttributeError):
            return f"region {label}"

    def add_region(self, name: str | None = None) -> int | None:
        """A new region, which becomes the current one; returns its label."""
        if self.regions is None:
            return None
        label = self.regions.add_region(name).label
        self.current_region = label
        self._regions_edited()
        self.region_selected.emit()
        return label

    def rename_region(self, label: int, name: str) -> None:
        """InputError when the name is taken or empty."""
        self.regions.rename(label, name)
        self._regions_edited()

    def delete_region(self, label: int) -> None:
        self.regions.delete(label)
        self._regions_edited()

    def add_polygon(self, vertices: list) -> int | None:
        """A polygon added to the current region (a new one when there is none); returns its label."""
        if self.regions is None:
            return None
        label = self._ensure_region()
        self.regions.add_polygon(label, vertices)
        self._regions_edited()
        return label

    def add_stroke(self, points: list, radius: float, erase: bool) -> None:
        if self.regions is None:
            return
        self.regions.add_stroke(self._ensure_region(), points, radius, erase)
        self._regions_edited()

    def load_labels(self, path: Path) -> None:
        """A label file as the regions' first layer (drawn shapes of other regions stay on top); InputError if unusable."""
        base = workflow.regions_from_label_file(path, self.image.shape)
        self.regions.set_base(base.base, base.names)
        self._regions_edited()

    def undo(self) -> str | None:
        """Take back the last region edit; returns what it was (None: nothing to undo)."""
        what = self.regions.undo() if self.regions is not None else None
        if what is not None:
            self._regions_edited()
        return what

    def redo(self) -> str | None:
        what = self.regions.redo() if self.regions is not None else None
        if what is not None:
            self._regions_edited()
        return what

    def _ensure_region(self) -> int:
        return self.current_region if self.current_region is not None else self.add_region()

    def _regions_edited(self) -> None:
        if self.folder is not None:
            self.regions.save(self.folder)
        self._measure_regions()
        self._score(recount=True)

    def _measure_regions(self, raster: np.ndarray | None = None, counts: np.ndarray | None = None, say: bool = True) -> None:
        """The label image and each region's pixels; the current region stays, else the last one is current."""
        raster = self.regions.rasterize() if raster is None else raster
        raster.flags.writeable = False  # replaced at every edit, never written: jobs take it without a copy
        self.counts = label_counts(raster, self.regions.next_label()) if counts is None else counts
        self.labels = raster if self.counts[1:].any() else None
        self.n_regions = int(np.count_nonzero(self.counts[1:]))
        labels = [r.label for r in self.regions.regions]
        if self.current_region not in labels:
            self.current_region = labels[-1] if labels else None
        if say:
            self.regions_changed.emit()

    # -- results --------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.job is not None and self.job.is_running

    def set_job(self, job: Job) -> Job:
        self.job = job
        return self._follow(job)

    def take_model(self, model) -> None:
        """A newly trained CNN: the latents, factors and clusters of the old one are gone."""
        self.model = model
        self._take_results(latents=None, factors=None)

    def take_latents(self, latents) -> None:
        self._take_results(latents=latents, factors=None)

    def take_factors(self, factors) -> None:
        """New factors: the factor shown is the one chosen first (an index of the old factors means nothing here)."""
        self.current_factor = None
        self._take_results(latents=self.latents, factors=factors)

    def take_clusters(self, clusters) -> None:
        self.clusters = clusters
        self.clusters_changed.emit()

    def _take_results(self, latents, factors) -> None:
        self.latents, self.factors, self.clusters = latents, factors, None
        self._score(recount=True, say=False)
        self._pick_factor()
        self.results_changed.emit()
        self.selection_changed.emit()

    def _pick_factor(self) -> None:
        """The factor shown stays if the factors have it, else the one chosen first (or factor 0)."""
        f = self.factors
        if f is None:
            self.current_factor = None
        elif self.current_factor is None or self.current_factor >= f.k:
            self.current_factor = self.selection.pairs[0][0] if self.selection and self.selection.pairs else 0

    def show_factor(self, i: int) -> bool:
        """Show factor ``i`` (False: the factors have no such factor)."""
        if self.factors is None or not 0 <= i < self.factors.k:
            return False
        self.current_factor = int(i)
        self.factor_shown.emit(self.current_factor)
        return True

    # -- factor selection -----------------------------------------------------------------
    def set_weights(self, lam: float | None = None, pairs: int | None = None) -> None:
        """λ (leakage against coverage) and p (pairs picked): the selection is rescored (instant)."""
        self.lam = self.lam if lam is None else float(lam)
        self.pairs = self.pairs if pairs is None else int(pairs)
        self._score(recount=False)

    def _score(self, recount: bool, say: bool = True) -> None:
        """Coverage counts are recounted only when the regions or factors change; λ and p just rescore.
        On a recount p becomes one pair per region (at most k)."""
        f = self.factors
        self.selection_error = None
        if f is None or self.labels is None:
            self.selection = None
        else:
            try:
                if recount or self.selection is None:
                    self.selection = workflow.select(f, self.labels, p=1, lam=self.lam)
                    self.max_pairs = min(f.k, len(self.selection.roi_labels))
                    self.pairs = self.max_pairs if recount else min(self.pairs, self.max_pairs)
                self.selection = self.selection.rescore(lam=self.lam, p=self.pairs)
            except InputError as exc:
                self.selection, self.selection_error = None, exc.message
        if say:
            self.selection_changed.emit()
