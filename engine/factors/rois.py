"""Named regions (ROIs) drawn by hand: polygons and brush strokes → one integer label image.

A :class:`RegionSet` keeps each region's name, colour, stable label value (never reused, so a
model trained on label 3 keeps meaning the same region after another one is deleted) and the
shapes drawn for it, in drawing order. :meth:`RegionSet.rasterize` paints the shapes in that
order onto an image-sized int32 map (a later shape wins where two overlap; an erasing brush
stroke sets pixels back to 0). A label map loaded from a file can be the starting layer
(``base``): its values become regions named after them, and drawn shapes are painted over it.

Coordinates are pixels as (x = column, y = row): a vertex (10, 20) is pixel row 20, column 10
(the GUI stores the pixel that was clicked). Rasterization uses Pillow's ImageDraw with
vertices rounded to whole pixels; the pixels on a polygon's outline belong to it, so a
rectangle with corners (2, 1) and (6, 4) covers columns 2–6 of rows 1–4.

Saved as ``rois.json`` (regions and shapes) plus, when there is a base map, ``rois_base-<hash>.npz``
named by its content, written atomically after every change by the caller (:meth:`RegionSet.save`).
The JSON names the base file it goes with and is written last, so it is the one commit point of
a change: a kill between the two writes leaves the previous JSON with the previous base file.
"""

from __future__ import annotations

import io
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.storage import atomic_save_json, atomic_write_bytes
from engine.undo import History

ROIS_FILE = "rois.json"
BASE_FILE = "rois_base.npz"  # older versions: one name, rewritten in place
FORMAT = "neurowb.factors_rois"
MAX_UNDO = 200  # edits kept for undo (each keeps the region list, not copies of the shapes or the base map)
#: Distinct colours given to new regions in turn (label 1 gets the first).
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c",
           "#fabebe", "#008080", "#e6beff", "#9a6324")


@dataclass
class Shape:
    """One drawn shape: ``kind`` "polygon" or "brush"; ``points`` (n, 2) as (x, y) pixels."""

    kind: str
    points: list[tuple[float, float]]
    radius: float = 0.0  # brush only
    erase: bool = False  # brush only: set the pixels back to unlabelled
    seq: int = 0  # drawing order across regions: later shapes are painted over earlier ones

    def to_dict(self) -> dict:
        return {"kind": self.kind, "points": [[float(x), float(y)] for x, y in self.points],
                "radius": float(self.radius), "erase": bool(self.erase), "seq": int(self.seq)}

    @classmethod
    def from_dict(cls, d: dict) -> "Shape":
        return cls(str(d["kind"]), [(float(x), float(y)) for x, y in d["points"]], float(d.get("radius", 0.0)),
                   bool(d.get("erase", False)), int(d.get("seq", 0)))


@dataclass
class Region:
    label: int
    name: str
    color: str
    shapes: list[Shape] = field(default_factory=list)


@dataclass
class RegionSet:
    """The regions of one image (``shape`` = rows, cols) and how to paint them."""

    shape: tuple[int, int]
    regions: list[Region] = field(default_factory=list)
    base: np.ndarray | None = None  # labels from a file, painted first
    # every edit below is one undo step: (what, state before, state after); a state is the regions
    # with their shape lists (the shapes themselves never change) and the base map (replaced, never written)
    history: History = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.history = History(lambda edit: self._restore(edit[1]), lambda edit: self._restore(edit[2]), depth=MAX_UNDO)

    # -- undo ----------------------------------------------------------------------------
    def undo(self) -> str | None:
        """Take back the last edit; returns what it was ("polygon in Region 2"), None when there is none.
        The caller saves, as after any edit."""
        edit = self.history.undo()
        return edit[0] if edit is not None else None

    def redo(self) -> str | None:
        edit = self.history.redo()
        return edit[0] if edit is not None else None

    def _state(self) -> tuple[list[Region], np.ndarray | None]:
        return [replace(r, shapes=list(r.shapes)) for r in self.regions], self.base

    def _restore(self, state: tuple[list[Region], np.ndarray | None]) -> None:
        regions, self.base = state
        self.regions = [replace(r, shapes=list(r.shapes)) for r in regions]  # the history keeps its own copy

    @contextmanager
    def _edit(self, what: str):
        before = self._state()
        yield
        self.history.record((what, before, self._state()))

    # -- editing -----------------------------------------------------------------------
    def next_label(self) -> int:
        used = [r.label for r in self.regions]
        if self.base is not None and self.base.any():
            used.append(int(self.base.max()))
        return max(used, default=0) + 1

    def add_region(self, name: str | None = None, color: str | None = None) -> Region:
        label = self.next_label()
        region = Region(label, name or f"Region {label}", color or PALETTE[(label - 1) % len(PALETTE)])
        with self._edit(f"new region “{region.name}”"):
            self.regions.append(region)
        return region

    def region(self, label: int) -> Region:
        for r in self.regions:
            if r.label == label:
                return r
        raise InputError(f"There is no region with label {label}.")

    def rename(self, label: int, name: str) -> None:
        name = name.strip()
        if not name:
            raise InputError("A region needs a name (it labels the factor selection and the plots).")
        region = self.region(label)
        if region.name != name:
            with self._edit(f"renaming of “{region.name}”"):
                region.name = name

    def delete(self, label: int) -> None:
        region = self.region(label)
        with self._edit(f"deletion of “{region.name}”"):
            self.regions.remove(region)
            if self.base is not None:
                self.base = np.where(self.base == label, 0, self.base).astype(self.base.dtype)

    def add_polygon(self, label: int, points) -> Shape:
        pts = [(float(x), float(y)) for x, y in points]
        if len(pts) < 3:
            raise InputError(f"A polygon needs at least 3 vertices; got {len(pts)}. Click more points before closing it.")
        shape = Shape("polygon", pts, seq=self._next_seq())
        region = self.region(label)
        with self._edit(f"polygon in “{region.name}”"):
            region.shapes.append(shape)
        return shape

    def add_stroke(self, label: int, points, radius: float, erase: bool = False) -> Shape:
        pts = [(float(x), float(y)) for x, y in points]
        if not pts or radius <= 0:
            raise InputError("A brush stroke needs at least one point and a radius > 0.")
        shape = Shape("brush", pts, float(radius), bool(erase), self._next_seq())
        region = self.region(label)
        with self._edit(f"{'eraser' if erase else 'brush'} stroke in “{region.name}”"):
            region.shapes.append(shape)
        return shape

    def _next_seq(self) -> int:
        return max((s.seq for r in self.regions for s in r.shapes), default=0) + 1

    def set_base(self, labels: np.ndarray, names: dict[int, str] | None = None) -> None:
        """Use a label map from a file as the first layer; its values become regions named by ``names``.

        Regions drawn so far are kept (painted over the file); one whose label the file uses is
        given a free label. Regions without shapes (from an earlier file) are replaced.
        """
        labels = np.asarray(labels)
        if labels.shape != tuple(self.shape):
            raise InputError(f"The label map is {labels.shape[0]}×{labels.shape[1]} but the image is "
                             f"{self.shape[0]}×{self.shape[1]} (height × width): pick the label file of this image.")
        with self._edit("label file"):
            self.base = labels.astype(np.int32)
            values = [int(v) for v in np.unique(self.base) if v > 0]
            # drawn regions keep their shapes; one whose label the file uses moves to a free label
            drawn = [r for r in self.regions if r.shapes]
            self.regions = []
            free = max(values + [r.label for r in drawn], default=0) + 1
            for r in drawn:
                if r.label in values:
                    if r.name == f"Region {r.label}":
                        r.name = f"Region {free}"
                    r.label, free = free, free + 1
                self.regions.append(r)
            for v in values:
                name = (names or {}).get(v, f"Region {v}")
                self.regions.append(Region(v, name, PALETTE[(v - 1) % len(PALETTE)]))
            self.regions.sort(key=lambda r: r.label)

    # -- output ------------------------------------------------------------------------
    @property
    def names(self) -> dict[int, str]:
        return {r.label: r.name for r in self.regions}

    def rasterize(self) -> np.ndarray:
        """The int32 label map (rows, cols): base first, then every shape in drawing order."""
        from PIL import Image, ImageDraw

        h, w = self.shape
        known = {r.label for r in self.regions}
        if self.base is not None:
            out = np.where(np.isin(self.base, list(known)), self.base, 0).astype(np.int32)
        else:
            out = np.zeros((h, w), dtype=np.int32)
        shapes = [(r.label, s) for r in self.regions for s in r.shapes]
        if not shapes:
            return out
        # Paint into a mode "I" (int32) canvas: value = label, 0 = untouched, -1 = erased.
        canvas = Image.new("I", (w, h), 0)
        draw = ImageDraw.Draw(canvas)
        for label, shape in sorted(shapes, key=lambda ls: ls[1].seq):
            value = -1 if shape.erase else label
            pts = [(round(x), round(y)) for x, y in shape.points]
            if shape.kind == "polygon":
                draw.polygon(pts, fill=value, outline=value)
            else:
                r = shape.radius
                if len(pts) > 1:
                    draw.line(pts, fill=value, width=max(1, int(round(2 * r))))
                for x, y in pts:  # round caps and joints
                    draw.ellipse([x - r, y - r, x + r, y + r], fill=value)
        painted = np.array(canvas, dtype=np.int32)
        if self.base is None:  # one pass (this runs after every edit of an 8-Mpixel slice)
            return np.maximum(painted, 0, out=painted)
        out = np.where(painted > 0, painted, out)
        out[painted < 0] = 0
        return out

    # -- files -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": 1, "shape": [int(s) for s in self.shape],
                "regions": [{"label": r.label, "name": r.name, "color": r.color,
                             "shapes": [s.to_dict() for s in r.shapes]} for r in self.regions],
                "has_base": self.base is not None}

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``rois.json`` (and the base map's file) into ``folder`` atomically; returns the JSON path."""
        import hashlib

        folder = Path(folder)
        d = self.to_dict()
        if self.base is not None:
            base = np.ascontiguousarray(self.base, dtype=np.int32)
            name = f"rois_base-{hashlib.sha1(base.tobytes() + str(base.shape).encode()).hexdigest()[:16]}.npz"
            if not (folder / name).is_file():
                buffer = io.BytesIO()
                np.savez_compressed(buffer, labels=base)
                atomic_write_bytes(folder / name, buffer.getvalue())
            d["base_file"] = name
        previous = _base_file_of(folder / ROIS_FILE)
        path = atomic_save_json(folder / ROIS_FILE, d)  # the commit point
        if previous and previous != d.get("base_file"):
            (folder / previous).unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike, shape: tuple[int, int] | None = None) -> "RegionSet | None":
        """The regions saved in ``folder``, or None when there are none; InputError for a damaged file."""
        folder = Path(folder)
        path = folder / ROIS_FILE
        if not path.is_file():
            return None
        try:
            d = json.loads(path.read_text())
            if d.get("format") != FORMAT:
                raise ValueError(f"format {d.get('format')!r}")
            rset = cls(tuple(int(s) for s in d["shape"]))
            for r in d["regions"]:
                rset.regions.append(Region(int(r["label"]), str(r["name"]), str(r["color"]),
                                           [Shape.from_dict(s) for s in r["shapes"]]))
            if d.get("has_base"):
                with np.load(folder / d.get("base_file", BASE_FILE), allow_pickle=False) as z:
                    rset.base = z["labels"].astype(np.int32)
        except Exception as exc:
            raise InputError(f"The saved regions in '{path}' cannot be read (damaged file): move it away to start "
                             "again, or restore it from a backup.", details=f"{type(exc).__name__}: {exc}") from exc
        if shape is not None and tuple(rset.shape) != tuple(shape):
            raise InputError(f"The saved regions in '{path}' were drawn on a {rset.shape[0]}×{rset.shape[1]} image, "
                             f"this one is {shape[0]}×{shape[1]}: they belong to another image.")
        return rset


def label_counts(labels: np.ndarray, n: int) -> np.ndarray:
    """Pixels of each label 0 … n-1 in a label map (int64). One pass with no copy: ``np.bincount`` first
    casts an 8-Mpixel int32 map to int64 and measures its range, 5x slower, and runs after every edit."""
    from scipy.ndimage import histogram

    return np.asarray(histogram(labels, -0.5, n - 0.5, n), dtype=np.int64)


def _base_file_of(path: Path) -> str | None:
    """The base file a saved ``rois.json`` names (None: none, or unreadable)."""
    try:
        d = json.loads(path.read_text())
        return str(d.get("base_file", BASE_FILE)) if d.get("has_base") else None
    except (OSError, ValueError, AttributeError):
        return None
