"""The microarchitecture results on disk, one format for the command line and the GUI.

``LATENTS.npy`` + ``LATENTS.grid.json``
    dense latents (grid rows × grid cols × 64, float32) and, beside them, the :class:`Grid` that
    places grid position (i, j) on image pixel (offset_row + i·stride, offset_col + j·stride).
``FACTORS.npz``
    an NMF of those latents: ``W`` (grid rows × grid cols × k codes), ``H`` (k × 64), the errors,
    and the grid as JSON, marked with ``format`` and ``format_version``.

``neurowb factors extract|nmf`` write these anywhere; the GUI writes them into the image's
project folder as ``latents.npy``/``latents.grid.json``/``factors.npz`` (engine.factors.workflow),
so either can read what the other wrote. Every file is written atomically (temporary file in
the same folder, then rename): an interrupted run never leaves half a file. The latents and their
grid file are one transaction: the grid file names the id of its extraction and, until it is in
place, the new latents file (:func:`engine.storage.commit_with_sidecar`); a factors file names the
id of the latents it factorizes, so a reader can tell results of an older extraction.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.errors import InputError, check_input_file
from engine.storage import INCOMING_KEY, commit_with_sidecar, settle_sidecar, temp_file_beside

LATENTS_FORMAT = "neurowb.factors_latents"
FACTORS_FORMAT = "neurowb.factors_nmf"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------
# grid geometry

@dataclass(frozen=True)
class Grid:
    """Where the latent grid lies on the image: grid (i, j) is centred on pixel
    (offset[0] + i·stride, offset[1] + j·stride) of an image of ``image_shape``."""

    stride: int
    offset: tuple[int, int]
    shape: tuple[int, int]
    image_shape: tuple[int, int]
    patch_size: int
    mode: str = "same"
    pixel_size_um: float | None = None

    @classmethod
    def for_image(cls, image_shape: tuple[int, int], stride: int, patch_size: int, mode: str = "same",
                  pixel_size_um: float | None = None, what: str = "The image") -> "Grid":
        """The grid :func:`engine.factors.dense.dense_latents` computes on an image of ``image_shape``
        (InputError when ``mode="valid"`` leaves no position)."""
        from engine.factors.dense import grid_centers

        rows, cols = grid_centers(image_shape, stride, patch_size, mode)
        if len(rows) == 0 or len(cols) == 0:
            raise InputError(f"{what} ({image_shape[0]}×{image_shape[1]} px) is smaller than one {patch_size}-px "
                             "patch, so --mode valid has no positions: use --mode same.")
        return cls(stride=int(stride), offset=(int(rows[0]), int(cols[0])), shape=(len(rows), len(cols)),
                   image_shape=(int(image_shape[0]), int(image_shape[1])), patch_size=int(patch_size), mode=mode,
                   pixel_size_um=None if pixel_size_um is None else float(pixel_size_um))

    def centers(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel rows and columns of the grid."""
        return (self.offset[0] + self.stride * np.arange(self.shape[0]),
                self.offset[1] + self.stride * np.arange(self.shape[1]))

    def sample(self, labels: np.ndarray) -> np.ndarray:
        """A label map of ``image_shape`` read at the grid positions (grid rows × grid cols, int64)."""
        rows, cols = self.centers()
        return np.asarray(labels)[np.ix_(rows, cols)].astype(np.int64)

    def nearest(self, row: float, col: float) -> tuple[int, int]:
        """The grid position (i, j) whose centre is nearest to image pixel (row, col)."""
        i = int(round((row - self.offset[0]) / self.stride))
        j = int(round((col - self.offset[1]) / self.stride))
        return min(max(i, 0), self.shape[0] - 1), min(max(j, 0), self.shape[1] - 1)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict, source: str) -> "Grid":
        try:
            grid = cls(stride=int(d["stride"]), offset=(int(d["offset"][0]), int(d["offset"][1])),
                       shape=(int(d["shape"][0]), int(d["shape"][1])),
                       image_shape=(int(d["image_shape"][0]), int(d["image_shape"][1])),
                       patch_size=int(d["patch_size"]), mode=str(d.get("mode", "same")),
                       pixel_size_um=None if d.get("pixel_size_um") is None else float(d["pixel_size_um"]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InputError(f"The grid description in '{source}' is incomplete or damaged: run "
                             "`neurowb factors extract` again.", details=f"{type(exc).__name__}: {exc}") from exc
        rows, cols = grid.centers()
        if grid.stride < 1 or min(grid.shape) < 1 or rows[-1] >= grid.image_shape[0] or cols[-1] >= grid.image_shape[1] \
                or min(grid.offset) < 0:
            raise InputError(f"The grid description in '{source}' does not fit its image "
                             f"({grid.image_shape[0]}×{grid.image_shape[1]} px): run `neurowb factors extract` again.")
        return grid


def grid_file(latents_path: str | os.PathLike) -> Path:
    """The geometry file written beside a latents file: ``x.npy`` → ``x.grid.json``."""
    path = Path(latents_path)
    return path.with_name(f"{path.stem}.grid.json")


# ---------------------------------------------------------------------------------------------
# atomic writing of big arrays (engine.storage's helpers take bytes, which would copy them)

@contextlib.contextmanager
def replacing(path: str | os.PathLike, commit=None) -> Iterator[Path]:
    """A temporary path in the target's folder that replaces ``path`` (flushed to disk) when the block succeeds;
    ``commit(tmp)``, when given, puts it in place instead (:func:`writing_latents`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(path)
    os.close(fd)
    try:
        yield Path(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes it private; give it the mode open() would
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if commit is None:
            os.replace(tmp, path)
        else:
            commit(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_npz(path: str | os.PathLike, **arrays) -> Path:
    """``np.savez`` written atomically, streamed to the temporary file (no copy in memory)."""
    with replacing(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# latents

class _OnGrid:
    """Shortcuts to the grid of an array laid on it (``self.grid``)."""

    grid: Grid

    @property
    def stride(self) -> int:
        return self.grid.stride

    @property
    def patch_size(self) -> int:
        return self.grid.patch_size

    @property
    def grid_shape(self) -> tuple[int, int]:
        return self.grid.shape


@dataclass(eq=False)
class Latents(_OnGrid):
    """Dense latents (grid rows × grid cols × d, float32; a read-only memmap when loaded) on ``grid``;
    ``id`` tells this extraction from any other (None for files of older versions)."""

    values: np.ndarray
    grid: Grid
    seconds: float = 0.0
    id: str | None = None
    provenance: dict = field(default_factory=dict)


@contextlib.contextmanager
def writing_latents(path: str | os.PathLike, grid: Grid, depth: int, **provenance) -> Iterator[np.ndarray]:
    """A float32 memmap of (grid rows, grid cols, ``depth``) to fill; on success it becomes ``path`` and the
    grid file (with a new id and ``provenance``, e.g. model and image paths) is written beside it, the
    two in one transaction (:func:`engine.storage.commit_with_sidecar`): whatever instant a run is
    killed or cancelled at, :func:`load_latents` reads the previous pair or the new one."""
    meta = {"format": LATENTS_FORMAT, "format_version": FORMAT_VERSION, "grid": grid.to_dict(), **provenance,
            "id": uuid.uuid4().hex}
    with replacing(path, commit=lambda tmp: commit_with_sidecar(tmp, path, grid_file(path), meta)) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(*grid.shape, depth))
        yield out
        out.flush()
        del out


def _wrong_kind_hint(path: Path) -> str:
    """What a file given in the wrong place probably is, to say so in the message."""
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                if "format" in z.files and str(z["format"]) == FACTORS_FORMAT:
                    return " It is a factors file from `neurowb factors nmf`."
        except Exception:
            pass
    if path.suffix.lower() == ".npy" and grid_file(path).is_file():
        return " It is a latents file from `neurowb factors extract`."
    return ""


def load_latents(path: str | os.PathLike) -> Latents:
    """Latents (memory-mapped) and their grid, as written by :func:`writing_latents`; InputError for anything else."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        hint = _wrong_kind_hint(path) if path.is_file() else ""
        raise InputError(f"'{path.name}' is not a latents file: give the .npy written by `neurowb factors extract`.{hint}")
    check_input_file(path, (".npy",), "latents")
    sidecar = grid_file(path)
    if not sidecar.is_file():
        raise InputError(f"'{path.name}' has no grid file '{sidecar.name}' beside it, so its rows cannot be placed on the "
                         "image: give latents written by `neurowb factors extract` (keep the two files together).")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except Exception as exc:
        raise InputError(f"'{sidecar.name}' is not readable JSON: run `neurowb factors extract` again.", details=str(exc)) from exc
    if not isinstance(meta, dict) or meta.get("format") != LATENTS_FORMAT:
        raise InputError(f"'{sidecar.name}' is not a NeuroWorkbench latent grid file: run `neurowb factors extract` again.")
    grid = Grid.from_dict(meta.get("grid", {}), sidecar.name)
    data = settle_sidecar(path, sidecar, meta)  # finishes a write cut between its two files
    try:
        latents = np.load(data, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise InputError(f"Could not read '{path.name}' as a NumPy array: run `neurowb factors extract` again.",
                         details=str(exc)) from exc
    if latents.ndim != 3 or tuple(latents.shape[:2]) != grid.shape or not np.issubdtype(latents.dtype, np.floating):
        raise InputError(f"'{path.name}' holds a {latents.dtype} array of shape {tuple(latents.shape)} but its grid file "
                         f"describes a {grid.shape[0]}×{grid.shape[1]} grid of float latents: the two files do not belong "
                         "together; run `neurowb factors extract` again.")
    provenance = {k: v for k, v in meta.items() if k not in ("format", "format_version", "grid", "id", INCOMING_KEY)}
    return Latents(latents, grid, id=meta.get("id"), provenance=provenance)


# ---------------------------------------------------------------------------------------------
# factors

@dataclass(eq=False)
class Factors(_OnGrid):
    """An NMF of dense latents: ``codes`` (grid rows × grid cols × k) ≥ 0, ``H`` (k × d), on ``grid``."""

    codes: np.ndarray
    H: np.ndarray
    grid: Grid
    relative_error: float = float("nan")
    errors: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_iter: int = 0
    converged: bool = False
    seconds: float = 0.0
    id: str | None = field(default_factory=lambda: uuid.uuid4().hex)  # None: a file of an older version
    latents_id: str | None = None  # the id of the latents factorized (None: not known, older files)

    @classmethod
    def from_nmf(cls, result, grid: Grid, latents_id: str | None = None) -> "Factors":
        """From an :class:`~engine.factors.nmf.NMFResult` of latents on ``grid`` (with id ``latents_id``)."""
        k = result.H.shape[0]
        return cls(np.asarray(result.W, dtype=np.float32).reshape(grid.shape[0], grid.shape[1], k),
                   np.asarray(result.H, dtype=np.float32), grid, float(result.final_error),
                   np.asarray(result.errors, dtype=np.float64), int(result.n_iter), bool(result.converged),
                   float(result.seconds), latents_id=latents_id)

    @classmethod
    def like(cls, other: "Factors", **changes):
        """This class built from the fields of ``other`` (a subclass wraps what load_factors returns)."""
        return cls(**{f.name: getattr(other, f.name) for f in fields(Factors)}, **changes)

    @property
    def k(self) -> int:
        return int(self.H.shape[0])


def save_factors(path: str | os.PathLike, factors: Factors) -> Path:
    """Write ``factors`` as FACTORS.npz (atomically)."""
    return save_npz(path, format=np.array(FACTORS_FORMAT), format_version=np.int64(FORMAT_VERSION),
                    W=np.asarray(factors.codes, dtype=np.float32), H=np.asarray(factors.H, dtype=np.float32),
                    relative_error=np.float64(factors.relative_error), errors=np.asarray(factors.errors, dtype=np.float64),
                    n_iter=np.int64(factors.n_iter), converged=np.bool_(factors.converged),
                    seconds=np.float64(factors.seconds), grid=np.array(json.dumps(factors.grid.to_dict())),
                    id=np.array(factors.id or ""), latents_id=np.array(factors.latents_id or ""))


def load_factors(path: str | os.PathLike) -> Factors:
    """A FACTORS.npz written by :func:`save_factors`; InputError for anything else."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        hint = _wrong_kind_hint(path) if path.is_file() else ""
        raise InputError(f"'{path.name}' is not a factors file: give the .npz written by `neurowb factors nmf`.{hint}")
    check_input_file(path, (".npz",), "factors")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z.files or str(z["format"]) != FACTORS_FORMAT:
                raise InputError(f"'{path.name}' is not a NeuroWorkbench factors file: make one with `neurowb factors nmf`.")
            if int(z["format_version"]) > FORMAT_VERSION:
                raise InputError(f"'{path.name}' was written by a newer NeuroWorkbench: update it, or run "
                                 "`neurowb factors nmf` again.")
            grid = Grid.from_dict(json.loads(str(z["grid"])), path.name)
            factors = Factors(codes=z["W"], H=z["H"], grid=grid, relative_error=float(z["relative_error"]),
                              errors=z["errors"], n_iter=int(z["n_iter"]), converged=bool(z["converged"]),
                              seconds=float(z["seconds"]) if "seconds" in z.files else 0.0,
                              id=str(z["id"]) or None if "id" in z.files else None,
                              latents_id=str(z["latents_id"]) or None if "latents_id" in z.files else None)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"'{path.name}' is damaged or incomplete: run `neurowb factors nmf` again.",
                         details=f"{type(exc).__name__}: {exc}") from exc
    if factors.codes.ndim != 3 or tuple(factors.codes.shape[:2]) != grid.shape or factors.H.ndim != 2 \
            or factors.H.shape[0] != factors.codes.shape[2]:
        raise InputError(f"'{path.name}' is inconsistent (codes {factors.codes.shape}, factors {factors.H.shape}, grid "
                         f"{grid.shape}): run `neurowb factors nmf` again.")
    return factors


# ---------------------------------------------------------------------------------------------
# label maps with region names

def label_names(path: str | os.PathLike, labels: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    """(labels, names) for a label map read from ``path``, named by the ``classes`` (or ``names``) an .npz may carry.

    ``classes[v - 1]`` names label v (the demo mosaic). A file whose ``classes`` has one name per
    value 0..max and uses 0 (0-based classes, like the real texture mosaic: 0 brick, 1 grass,
    2 gravel) has every label shifted up by one, because 0 means "unlabelled" here.
    """
    path = Path(path)
    if path.suffix.lower() != ".npz":
        return labels, {}
    try:
        with np.load(path, allow_pickle=False) as z:
            key = "classes" if "classes" in z.files else "names" if "names" in z.files else None
            classes = [str(c) for c in np.atleast_1d(z[key])] if key else []
    except Exception:
        return labels, {}  # names are a nicety; load_labels reports a broken file
    if classes and len(classes) == int(labels.max()) + 1 and np.any(labels == 0):
        labels = labels.astype(np.int32) + 1
    return labels, {i + 1: c for i, c in enumerate(classes)}


def read_labels(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> tuple[np.ndarray, dict[int, str]]:
    """A label map (0 = unlabelled; :func:`engine.factors.io.load_labels`) and its region names (:func:`label_names`)."""
    from engine.factors.io import load_labels

    return label_names(path, load_labels(path, shape=shape))
