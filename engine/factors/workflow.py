"""The microarchitecture workflow as job bodies, and the project folder that keeps its results.

One image, one project folder (:func:`project_folder`): ``<image stem>_factors/`` beside the
image, or, when that folder cannot be written (read-only data), the same name inside the
image's work folder (:func:`engine.storage.workdir_for`). It holds, each written atomically
as soon as it exists, so that no step's work is lost::

    rois.json, rois_base.npz   the hand-drawn regions (engine.factors.rois)
    model.pt                   the trained patch classifier (its best epoch; a checkpoint while training)
    latents.npy                dense 64-d latents on the grid of one stride,
    latents.grid.json            with that grid's geometry beside them
    factors.npz                NMF codes on that grid (rows, cols, k), factors H (k, 64), the grid
    clusters.npz               the last Gaussian-mixture clustering (map, BIC per number of clusters, region)

The latents and factors files are those of ``neurowb factors extract|nmf`` (engine.factors.files):
``neurowb factors select <folder>/factors.npz --labels ...`` reads the GUI's factors, and CLI
outputs renamed into the folder open in the GUI.

Each step's result makes the later files stale, so a step removes them when it finishes
(a retrained model invalidates the latents, the factors and the clusters). Each later file names
what it was computed from (the grid file the model's digest, factors.npz the latents' id,
clusters.npz the factors' id): when a kill came between a new result and that removal,
:func:`load_project` sees the mismatch and finishes it, so a project always opens as it was
before a step or as it is after it.

The job bodies (``train_job``, ``extract_job``, ``nmf_job``, ``cluster_job``) take
``progress=`` like every long engine function and are what the GUI runs in the background
and the tests call directly. The selection is not a job: on precomputed coverage counts a
new λ or p is a few array operations (:meth:`engine.factors.selection.Selection.rescore`).

Grid: codes[i, j] belong to the patch centred at pixel (offset_row + i·stride, offset_col +
j·stride) (:class:`engine.factors.files.Grid`; offset 0 for the GUI's dense mode "same");
``grid.sample(labels)`` reads a label map at those centres.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.factors import files
from engine.factors.cnn import LATENT_DIM, PatchModel, TrainResult, train
from engine.factors.dense import dense_latents
from engine.factors.files import Grid, Latents
from engine.factors.rois import ROIS_FILE, RegionSet, label_counts
from engine.progress import Progress, as_progress
from engine.storage import read_hand_work, remove_stale_temp, set_aside_damaged, workdir_for

MODEL_FILE = "model.pt"
LATENTS_FILE = "latents.npy"
LATENTS_META = files.grid_file(LATENTS_FILE).name
FACTORS_FILE = "factors.npz"
CLUSTERS_FILE = "clusters.npz"
#: What a new result of each step makes stale, in the order it is removed: the last result first, so
#: that a kill part-way leaves files that name (by id) the results they came from, and
#: :func:`load_project` finishes the removal (the latents file before its grid file, which would
#: otherwise be missing beside it).
DOWNSTREAM = {"model": (CLUSTERS_FILE, FACTORS_FILE, LATENTS_FILE, LATENTS_META), "latents": (CLUSTERS_FILE, FACTORS_FILE),
              "factors": (CLUSTERS_FILE,)}
#: Dense throughput on the loaded 2-core CPU, in positions per second of the native (power-of-two)
#: grid, 128-px patches; used only for the estimate shown before a run.
#: (Measured at 8 and 16 on a 1420 × 1420 crop of the slice, one thread: 6.0k and 1.9k/s; the
#: finer strides are extrapolated from the 9–10k/s at stride 1 in engine.factors.dense.)
DENSE_POSITIONS_PER_S = {1: 8_000, 2: 7_500, 4: 7_000, 8: 6_000, 16: 1_900}


def project_folder(image_path: str | os.PathLike, create: bool = True) -> Path:
    """Where the results of ``image_path`` live (see the module docstring)."""
    image_path = Path(image_path).absolute()
    name = f"{image_path.stem}_factors"
    beside = image_path.parent / name
    if (beside.is_dir() and os.access(beside, os.W_OK)) or (not beside.exists() and os.access(image_path.parent, os.W_OK)):
        if create:
            beside.mkdir(exist_ok=True)
        return beside
    folder = workdir_for(image_path, create=create) / name
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def invalidate(folder: str | os.PathLike, after: str) -> None:
    """Remove the files made stale by a new result of step ``after`` ("model", "latents", "factors")."""
    for name in DOWNSTREAM[after]:
        try:
            (Path(folder) / name).unlink()
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------------------------
# results

@dataclass(eq=False)
class Factors(files.Factors):
    """The NMF result with what the browser shows: per factor ``scales``, the code shown at full colour."""

    scales: np.ndarray | None = None

    def __post_init__(self):
        if self.scales is None:
            self.scales = display_scales(self.codes)

    def heatmap(self, factor: int) -> np.ndarray:
        """Factor ``factor`` on the grid, scaled to 0..1 (1 = its 99.5th percentile of positive values)."""
        return np.clip(self.codes[..., factor] / self.scales[factor], 0.0, 1.0).astype(np.float32)

    def composite(self, factors: tuple[int, int, int]) -> np.ndarray:
        """(rows, cols, 3) in 0..1: three factors as red, green and blue."""
        return np.stack([self.heatmap(f) for f in factors], axis=-1)

    def values_at(self, row: int, col: int) -> np.ndarray:
        """All k codes at the grid position nearest to image pixel (row, col)."""
        return np.asarray(self.codes[self.grid.nearest(row, col)])


def display_scales(codes: np.ndarray) -> np.ndarray:
    """Per factor the 99.5th percentile of its positive codes (1 for a factor that is never positive)."""
    flat = np.asarray(codes).reshape(-1, codes.shape[-1])
    step = max(1, len(flat) // 500_000)
    sample = flat[::step]
    scales = np.ones(flat.shape[1], dtype=np.float32)
    for f in range(flat.shape[1]):
        pos = sample[:, f][sample[:, f] > 0]
        if pos.size:
            scales[f] = max(float(np.percentile(pos, 99.5)), 1e-12)
    return scales


def default_block_size(shape: tuple[int, int], patch_size: int) -> int:
    """Training/validation blocks: 4 patches (the engine's default), smaller on small images so there are several."""
    return int(max(patch_size + patch_size // 2, min(4 * patch_size, min(shape) // 3)))


def estimate_extract_seconds(shape: tuple[int, int], stride: int) -> float:
    """Rough wall time of :func:`extract_job` on this machine's CPU (see DENSE_POSITIONS_PER_S)."""
    native = max(s for s in DENSE_POSITIONS_PER_S if stride % s == 0)  # the grid actually computed
    positions = -(-shape[0] // native) * -(-shape[1] // native)
    return positions / DENSE_POSITIONS_PER_S[native] + 1.0


# ---------------------------------------------------------------------------------------------
# job bodies

def train_job(image: np.ndarray, labels: np.ndarray, folder: str | os.PathLike, *, names: dict[int, str] | None = None,
              patch_size: int = 128, epochs: int = 4, patches_per_epoch: int = 1024, batch_size: int = 32,
              pixel_size_um: float | None = None, device=None, seed: int = 0,
              progress: Progress | None = None) -> TrainResult:
    """Train the patch classifier on the drawn regions; the model is saved as model.pt when training ends.

    Until then the best epoch is checkpointed beside it (``model.pt.checkpoint``, removed at the end):
    a cancel or a failure leaves the previous model and everything made with it as they were; only
    a finished model replaces it and removes the latents, factors and clusters of the old one."""
    progress = as_progress(progress)
    folder = Path(folder)
    path = folder / MODEL_FILE
    checkpoint = checkpoint_for(path)
    present = {int(v) for v in np.unique(labels) if v > 0}
    try:
        result = train(image, labels, pixel_size_um=pixel_size_um, patch_size=patch_size, epochs=epochs,
                       patches_per_epoch=patches_per_epoch, batch_size=batch_size,
                       block_size=default_block_size(image.shape, patch_size),
                       class_names={k: v for k, v in (names or {}).items() if k in present} or None,
                       checkpoint=checkpoint, device=device, seed=seed, progress=progress)
        progress.check()  # a cancel that came during the last epoch still keeps the previous model
        result.model.save(path)  # the best epoch, with the full history
    finally:
        checkpoint.unlink(missing_ok=True)
    invalidate(folder, "model")
    return result


def checkpoint_for(model_path: str | os.PathLike) -> Path:
    """Where training keeps its best epoch so far: beside the model it will replace, never over it."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".checkpoint")


def extract_job(model: PatchModel, image: np.ndarray, folder: str | os.PathLike, *, stride: int = 8,
                pixel_size_um: float | None = None, progress: Progress | None = None) -> Latents:
    """Dense latents at ``stride``, written straight into latents.npy (+ latents.grid.json with their grid)."""
    start = time.perf_counter()
    folder = Path(folder)
    pixel_size = pixel_size_um if pixel_size_um is not None else model.preprocessing.pixel_size_um
    grid = Grid.for_image(image.shape, stride, model.patch_size, pixel_size_um=pixel_size)
    with files.writing_latents(folder / LATENTS_FILE, grid, LATENT_DIM, model=str((folder / MODEL_FILE).resolve()),
                               model_sha256=file_digest(folder / MODEL_FILE)) as out:
        dense_latents(model, image, stride=stride, pixel_size_um=pixel_size_um, out=out, progress=progress)
        as_progress(progress).check()  # (inside the block: a cancel now still keeps the previous latents)
    invalidate(folder, "latents")
    latents = files.load_latents(folder / LATENTS_FILE)
    latents.seconds = time.perf_counter() - start
    return latents


def nmf_job(latents: Latents, folder: str | os.PathLike, *, k: int = 15, image: np.ndarray | None = None, device=None,
            progress: Progress | None = None) -> Factors:
    """NMF (HALS, NNDSVD start) of the latents with ``k`` factors, saved as factors.npz.

    ``image`` (the image the latents were extracted from): its background outside the tissue
    (:func:`engine.factors.tissue.tissue_mask`) is left out of the fit, its codes zero; the number of
    positions left out is ``factors.background_positions``."""
    from engine.factors.tissue import masked_nmf, tissue_mask

    keep = latents.grid.sample(tissue_mask(image)).astype(bool) if image is not None else None
    fit = masked_nmf(latents.values, k, keep, device=device, progress=progress)
    as_progress(progress).check()
    factors = Factors.from_nmf(fit, latents.grid, latents_id=latents.id)
    files.save_factors(Path(folder) / FACTORS_FILE, factors)
    invalidate(folder, "factors")
    factors.background_positions = 0 if keep is None else int((~keep).sum())
    return factors


def select(factors: Factors, labels: np.ndarray, p: int | None = None, lam: float = 0.5):
    """Coverage–leakage selection of the factors for the regions of ``labels`` (full-image map); fast."""
    from engine.factors.selection import select_factors

    grid = factors.grid.sample(labels)
    regions = [v for v in np.unique(grid) if v > 0]
    if not regions:
        raise InputError("No region covers any latent position: draw regions larger than the stride.")
    p = min(factors.k, len(regions)) if p is None else min(int(p), factors.k, len(regions))
    return select_factors(factors.codes, grid, p=p, lam=lam)


def cluster_job(factors: Factors, labels: np.ndarray, roi: int, folder: str | os.PathLike | None = None, *,
                n_clusters=4, progress: Progress | None = None):
    """Gaussian-mixture clusters of the codes inside region ``roi`` (None/sequence: best BIC); saved as clusters.npz."""
    from engine.factors.clusters import cluster_roi

    grid = factors.grid.sample(labels)
    result = cluster_roi(factors.codes, grid, int(roi), n_clusters, patch_size=factors.patch_size, stride=factors.stride,
                         progress=progress)
    if folder is not None:
        bic = sorted(result.bic.items())
        files.save_npz(Path(folder) / CLUSTERS_FILE, cluster_map=result.cluster_map, roi=int(roi), n_clusters=result.n_clusters,
                    bic_n=np.array([n for n, _ in bic]), bic=np.array([b for _, b in bic]), sizes=result.sizes,
                    factors_id=np.array(factors.id or ""))
    return result


def file_digest(path: str | os.PathLike) -> str | None:
    """SHA-256 of a file (None when there is none): says which model a latents file was extracted with."""
    import hashlib

    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class SavedClusters:
    """A clustering read back from clusters.npz (what the browser shows; the mixture itself is not kept)."""

    cluster_map: np.ndarray
    n_clusters: int
    bic: dict[int, float]
    sizes: np.ndarray
    roi: int


@dataclass
class Project:
    """What :func:`load_project` found in the project folder (None for steps not run yet)."""

    folder: Path
    regions: RegionSet | None = None
    model: PatchModel | None = None
    latents: Latents | None = None
    factors: Factors | None = None
    clusters: SavedClusters | None = None
    problems: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # hand work set aside (damaged): said in a dialog


def load_project(image_path: str | os.PathLike, shape: tuple[int, int], device=None) -> Project:
    """Everything saved for this image; a damaged or mismatched file is skipped and named in ``problems``."""
    folder = project_folder(image_path, create=False)
    project = Project(folder)
    if not folder.is_dir():
        return project
    remove_stale_temp(folder)
    regions, notice = read_hand_work(folder / ROIS_FILE, lambda p: RegionSet.load(folder), "regions")
    if notice:
        project.notices.append(notice)
    elif regions is not None and tuple(regions.shape) != tuple(shape):  # drawn on another image: kept, not overwritten
        aside = set_aside_damaged(folder / ROIS_FILE, tag="other-image")
        project.notices.append(f"The saved regions in '{ROIS_FILE}' were drawn on a {regions.shape[0]}×{regions.shape[1]} "
                               f"image, this one is {shape[0]}×{shape[1]}: they were kept as '{aside.name}' in {folder}; "
                               "starting with no regions.")
    else:
        project.regions = regions
    if (folder / MODEL_FILE).is_file():
        try:
            project.model = PatchModel.load(folder / MODEL_FILE, device=device)
        except InputError as exc:
            project.problems.append(exc.message)
    for name, load, attribute in ((LATENTS_FILE, files.load_latents, "latents"),
                                  (FACTORS_FILE, lambda p: Factors.like(files.load_factors(p)), "factors")):
        if not (folder / name).is_file():
            continue
        try:
            result = load(folder / name)
        except InputError as exc:
            project.problems.append(f"Saved {attribute} not used: {exc.message}")
            continue
        if result.grid.image_shape != tuple(shape):
            project.problems.append(f"Saved {attribute} '{name}' belong to a {result.grid.image_shape[0]}×"
                                    f"{result.grid.image_shape[1]} image, not this {shape[0]}×{shape[1]} one: not used.")
        else:
            setattr(project, attribute, result)
    _drop_stale(project)
    try:
        if project.factors is not None and (folder / CLUSTERS_FILE).is_file():
            with np.load(folder / CLUSTERS_FILE, allow_pickle=False) as z:
                made_from = str(z["factors_id"]) if "factors_id" in z.files else ""
                if made_from and project.factors.id and made_from != project.factors.id:
                    invalidate(folder, "factors")  # clusters of the factors before a kill: finish their removal
                elif z["cluster_map"].shape == project.factors.grid_shape:
                    project.clusters = SavedClusters(z["cluster_map"], int(z["n_clusters"]),
                                                     {int(n): float(b) for n, b in zip(z["bic_n"], z["bic"])},
                                                     z["sizes"], int(z["roi"]))
    except Exception as exc:  # a damaged clusters file: the image still opens, the step can be rerun
        project.problems.append(f"Some saved results in '{folder}' could not be read ({type(exc).__name__}: {exc}); "
                                "rerun those steps.")
    return project


def _drop_stale(project: Project) -> None:
    """Finish the removal (:func:`invalidate`) that a kill cut short: latents of another model, factors of
    other latents. Files of older versions, which name nothing, are kept."""
    folder, latents = project.folder, project.latents
    model_digest = latents.provenance.get("model_sha256") if latents is not None else None
    if model_digest and (folder / MODEL_FILE).is_file() and model_digest != file_digest(folder / MODEL_FILE):
        project.latents = project.factors = None
        invalidate(folder, "model")
    factors = project.factors
    if factors is not None and factors.latents_id and project.latents is not None and project.latents.id \
            and factors.latents_id != project.latents.id:
        project.factors = None
        invalidate(folder, "latents")


def run_pipeline(image: np.ndarray, labels: np.ndarray, folder: str | os.PathLike, *, names=None, patch_size=128,
                 epochs=4, patches_per_epoch=1024, batch_size=32, stride=8, k=15, lam=0.5, cluster_roi=None,
                 n_clusters=4, pixel_size_um=None, device=None, progress: Progress | None = None) -> dict:
    """Every step in a row (scripts and tests): train → extract → NMF → selection → clusters, with timings."""
    progress = as_progress(progress)
    stages = progress.split([4, 3, 2, 1], ["Training", "Dense latents", "NMF", "Clusters"])
    timings = {}
    t = time.perf_counter()
    trained = train_job(image, labels, folder, names=names, patch_size=patch_size, epochs=epochs,
                        patches_per_epoch=patches_per_epoch, batch_size=batch_size, pixel_size_um=pixel_size_um,
                        device=device, progress=stages[0])
    timings["train"] = time.perf_counter() - t
    t = time.perf_counter()
    latents = extract_job(trained.model, image, folder, stride=stride, pixel_size_um=pixel_size_um, progress=stages[1])
    timings["extract"] = time.perf_counter() - t
    t = time.perf_counter()
    factors = nmf_job(latents, folder, k=k, device=device, progress=stages[2])
    timings["nmf"] = time.perf_counter() - t
    t = time.perf_counter()
    selection = select(factors, labels, lam=lam)
    timings["select"] = time.perf_counter() - t
    clusters = None
    if cluster_roi is not None:
        t = time.perf_counter()
        clusters = cluster_job(factors, labels, cluster_roi, folder, n_clusters=n_clusters, progress=stages[3])
        timings["cluster"] = time.perf_counter() - t
    progress.report(1.0, "done")
    return {"train": trained, "latents": latents, "factors": factors, "selection": selection, "clusters": clusters,
            "timings": timings}


# ---------------------------------------------------------------------------------------------
# opening an image

def find_label_file(image_path: str | os.PathLike) -> Path | None:
    from engine.factors.io import LABEL_EXTENSIONS

    image_path = Path(image_path)
    for ext in LABEL_EXTENSIONS:
        candidate = image_path.with_name(f"{image_path.stem}_labels{ext}")
        if candidate != image_path and candidate.is_file():
            return candidate
    return None


def regions_from_label_file(path: str | os.PathLike, shape: tuple[int, int]) -> RegionSet:
    """A RegionSet whose base layer is the label file at ``path`` (InputError when it does not fit)."""
    labels, names = files.read_labels(path, shape)
    rset = RegionSet(tuple(shape))
    rset.set_base(labels, names)
    rset.history.clear()  # where the work starts, not an edit to take back
    return rset


def open_project_job(path: str | os.PathLike, device=None, progress: Progress | None = None) -> dict:
    """Job body: the image, and everything saved for it; regions from a label file beside it when none were drawn."""
    from engine.factors.io import load_image

    progress = as_progress(progress)
    progress.report(0.05, "reading image")
    image = np.asarray(load_image(path))
    progress.check()
    progress.report(0.6, "reading saved results")
    project = load_project(path, image.shape, device=device)
    if project.regions is None:
        label_file = find_label_file(path)
        if label_file is not None:
            try:
                project.regions = regions_from_label_file(label_file, image.shape)
            except InputError as exc:
                project.problems.append(f"Label map '{label_file.name}' not used: {exc.message}")
    if project.regions is None:
        project.regions = RegionSet(tuple(image.shape))
    progress.report(0.9, "drawing the regions")
    labels = project.regions.rasterize()  # here, not on the GUI thread (seconds on a whole slice)
    counts = label_counts(labels, project.regions.next_label())  # pixels per label
    progress.report(1.0, "done")
    return {"image": image, "project": project, "labels": labels, "label_counts": counts}
