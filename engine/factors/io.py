"""Large 2-D microscopy images and integer label maps.

:func:`load_image` returns one grayscale 2-D array: TIFFs are memory-mapped when stored
uncompressed (so a multi-GB slice is not read until used), ``.npy`` files are opened with
``mmap_mode="r"``, PNG/JPEG go through Pillow with its decompression-bomb limit disabled
(scientific images routinely exceed it). Colour images become luminance (ITU-R BT.601:
0.299 R + 0.587 G + 0.114 B, as Pillow's "L" mode), rounded back to the input's integer type.

A tiled, compressed TIFF (OME-TIFF from a slide scanner or a stitcher, pyramidal or not) cannot
be memory-mapped: its full-resolution level is opened as a :class:`LazyImage`, and only the tiles a
slice touches are decoded. :func:`pixel_size_um` reads
the pixel size the file states (OME ``PhysicalSizeX`` with its unit; ImageJ or TIFF resolution tags).

A zarr folder (``.zarr``: an OME-Zarr / OME-NGFF image, whose ``multiscales`` name the full-resolution level, or
a plain zarr array) is read lazily as a :class:`ZarrImage`: a slice reads only the chunks it touches. Read with the
zarr 2 API (SpikeInterface pins zarr below 3); the pixel size comes from the level's ``scale`` transformation
(times the multiscale's own, if any) and the x axis' unit.

:func:`load_labels` returns an integer label map where 0 means "unlabelled" and 1, 2, ... are
regions or classes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from engine.errors import InputError, check_input_file

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".npy", ".jpg", ".jpeg", ".zarr")
LABEL_EXTENSIONS = (".npy", ".npz", ".png", ".tif", ".tiff")
LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)
log = logging.getLogger(__name__)
_BLOCK_PIXELS = 8 * 2**20  # rows converted at a time when turning big colour images to gray


def _unreadable(path: Path, exc: Exception, what: str) -> InputError:
    return InputError(
        f"Could not read '{path.name}' as {what}: the file is corrupt or not a valid {path.suffix.lower()} file. "
        "Re-export it and try again.",
        details=f"{type(exc).__name__}: {exc}",
    )


def _read_pillow(path: Path, what: str) -> np.ndarray:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # gigapixel slices are legitimate here, not decompression bombs
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":  # palette: for an image use the colours, for labels the indices
                array = np.asarray(im) if what == "a label image" else np.asarray(im.convert("RGBA" if "transparency" in im.info else "RGB"))
            elif mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La", "PA"):
                array = np.asarray(im if mode in ("RGB", "RGBA") else im.convert("RGB"))
            elif mode == "1":
                array = np.asarray(im, dtype=np.uint8)
            else:
                array = np.asarray(im)
    except Exception as exc:
        raise _unreadable(path, exc, what) from exc
    return array


class LazyImage:
    """A tiled TIFF image read tile by tile: ``shape``, ``dtype``, ``ndim``, ``size``, slicing (decodes only the
    tiles a slice touches, with tifffile's own decoders) and ``np.asarray`` (reads everything).

    tifffile's zarr interface would do this, but it needs zarr 3 and SpikeInterface pins zarr below 3;
    the tiles are read here the way that interface reads them (offsets and byte counts of the page)."""

    def __init__(self, tif, page):
        self._tif, self._page = tif, page
        self._lock = __import__("threading").Lock()  # one file handle: reads from several threads take turns
        self.shape = tuple(int(v) for v in page.shape)
        self.dtype = np.dtype(page.dtype)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        rows, cols = (key + (slice(None),) * 2)[:2]
        rest = key[2:]
        if not (isinstance(rows, slice) and isinstance(cols, slice)):
            raise TypeError("a LazyImage is sliced with row and column slices")
        r0, r1, rs = rows.indices(self.shape[0])
        c0, c1, cs = cols.indices(self.shape[1])
        out = np.empty((max(r1 - r0, 0), max(c1 - c0, 0), *self.shape[2:]), dtype=self.dtype)
        page = self._page
        th, tw = int(page.tilelength), int(page.tilewidth)
        across = -(-self.shape[1] // tw)
        for ty in range(r0 // th, (max(r1, r0 + 1) - 1) // th + 1) if r1 > r0 else ():
            for tx in range(c0 // tw, (max(c1, c0 + 1) - 1) // tw + 1) if c1 > c0 else ():
                index = ty * across + tx
                with self._lock:
                    self._tif.filehandle.seek(page.dataoffsets[index])
                    data = self._tif.filehandle.read(page.databytecounts[index])
                tile = page.decode(data, index)[0].reshape(th, tw, *self.shape[2:])
                y0, x0 = ty * th, tx * tw
                ya, yb = max(r0, y0), min(r1, y0 + th)
                xa, xb = max(c0, x0), min(c1, x0 + tw)
                out[ya - r0:yb - r0, xa - c0:xb - c0] = tile[ya - y0:yb - y0, xa - x0:xb - x0]
        out = out[::rs, ::cs]
        return out[(slice(None), slice(None), *rest)] if rest else out

    def __array__(self, dtype=None, copy=None):
        out = self[:, :]
        return out if dtype is None else out.astype(dtype)

    def close(self) -> None:
        self._tif.close()


def _lazy_tiff(tif) -> LazyImage | None:
    """A :class:`LazyImage` over a series whose full-resolution level is one tiled page, else None."""
    series = tif.series[0]
    level = series.levels[0] if series.levels else series
    pages = list(level.pages)
    page = pages[0].keyframe if pages else None
    if len(pages) != 1 or page is None or not page.is_tiled or page.shape[:2] != tuple(level.shape[:2]):
        return None
    return LazyImage(tif, page)


_UNIT_UM = {"m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "nm": 1e-3, "\u03bcm": 1.0,
            "meter": 1e6, "centimeter": 1e4, "millimeter": 1e3, "micrometer": 1.0, "nanometer": 1e-3, "angstrom": 1e-4}


class ZarrImage:
    """One 2-D plane (rows × columns, a trailing colour axis kept) of a zarr array, read lazily: the other axes are
    fixed at index 0 where they have one element; slicing reads only the chunks it touches."""

    def __init__(self, array, axes: str, pixel_size: float | None = None):
        self._array = array
        self.axes = axes
        self.pixel_size_um = pixel_size
        kept = [i for i, (a, n) in enumerate(zip(axes, array.shape)) if a in "yxs" or (a == "c" and n in (3, 4) and i == len(axes) - 1)]
        self._kept = kept
        self.shape = tuple(int(array.shape[i]) for i in kept)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        full, k = [], iter(key)
        for i in range(self._array.ndim):
            full.append(next(k) if i in self._kept else 0)
        return self._array[tuple(full)]

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self[(slice(None),) * self.ndim])
        return out if dtype is None else out.astype(dtype)

    def close(self) -> None:
        """Nothing to release: each slice opens the chunk files it reads."""


def open_zarr(path: str | os.PathLike) -> ZarrImage:
    """The full-resolution plane of an OME-Zarr (v0.4 ``multiscales``) or of a plain zarr array folder; InputError
    when the folder is not zarr or holds more than one plane (several z, t or channels that are not colour)."""
    import zarr

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"Zarr image not found: '{path}' is not a folder. Point at the '.zarr' folder itself.")
    try:
        node = zarr.open(zarr.storage.DirectoryStore(str(path)), mode="r")
    except Exception as exc:
        raise InputError(f"'{path.name}' is not a zarr folder (no .zarray or .zgroup, or written by zarr 3, which is not "
                         "read here): save it as zarr v2 / OME-Zarr 0.4.", details=f"{type(exc).__name__}: {exc}") from exc
    scale = None
    if isinstance(node, zarr.Array):
        array, axes = node, "yx" if node.ndim == 2 else "zyx" if node.ndim == 3 and node.shape[-1] not in (3, 4) else "yxc"
    else:
        multiscales = node.attrs.get("multiscales")
        if not multiscales:
            arrays = sorted(name for name, _ in node.arrays())
            raise InputError(f"'{path.name}' is a zarr group without OME-NGFF 'multiscales' metadata (arrays: "
                             f"{', '.join(arrays) or 'none'}): open the array's own folder instead.")
        ms = multiscales[0]
        level = ms["datasets"][0]
        array = node[level["path"]]
        names = [a["name"] if isinstance(a, dict) else str(a) for a in ms.get("axes", [])] or list("tczyx"[-array.ndim:])
        axes = "".join(n[0].lower() for n in names)
        scales = [t["scale"] for t in level.get("coordinateTransformations", []) + ms.get("coordinateTransformations", [])
                  if t.get("type") == "scale"]
        if scales and "x" in axes:
            x = axes.index("x")
            unit = next((a.get("unit") for a in ms.get("axes", []) if isinstance(a, dict) and a.get("name", "").lower() == "x"), None)
            factor = _UNIT_UM.get(str(unit)) if unit else None
            scale = float(np.prod([s[x] for s in scales])) * factor if factor else None
    extra = {a: n for a, n in zip(axes, array.shape) if a not in "yxs" and n > 1 and not (a == "c" and n in (3, 4) and axes[-1] == "c")}
    if extra:
        words = {"c": "channels", "z": "z-planes", "t": "time points"}
        raise InputError(f"'{path.name}' holds {' × '.join(f'{n} {words.get(a, a)}' for a, n in extra.items())} of "
                         f"{array.shape[axes.index('y')]}×{array.shape[axes.index('x')]} px: save one plane as a 2-D image.")
    return ZarrImage(array, axes, scale)


def pixel_size_um(path: str | os.PathLike) -> float | None:
    """The pixel size (µm, along x) a TIFF states: OME ``PhysicalSizeX`` (with ``PhysicalSizeXUnit``), else the
    ImageJ unit or a centimetre TIFF ResolutionUnit with XResolution (not dpi: most writers put 72 there); None when it
    states none (or for other formats)."""
    import tifffile

    path = Path(path)
    if path.suffix.lower() == ".zarr":
        try:
            return open_zarr(path).pixel_size_um
        except InputError:
            return None
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    to_um = _UNIT_UM
    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_ome and tif.ome_metadata:
                import xml.etree.ElementTree as ET

                for element in ET.fromstring(tif.ome_metadata).iter():
                    if element.tag.endswith("Pixels") and element.get("PhysicalSizeX"):
                        factor = to_um.get(element.get("PhysicalSizeXUnit", "µm"))
                        return float(element.get("PhysicalSizeX")) * factor if factor else None
            page = tif.pages[0]
            tag = page.tags.get("XResolution")
            if tag is None:
                return None
            numerator, denominator = tag.value
            per_unit = numerator / denominator if denominator else 0
            if not per_unit > 0:
                return None
            unit = (tif.imagej_metadata or {}).get("unit") if tif.is_imagej else None
            if unit is None:
                unit = {2: "inch", 3: "cm"}.get(int(page.tags["ResolutionUnit"].value) if "ResolutionUnit" in page.tags else 2)
            factor = to_um.get(str(unit))  # inches (dpi) are a display setting of most writers, not a pixel size
            return factor / per_unit if factor else None
    except Exception:  # metadata is a bonus: the image opens without it
        return None


def _read_tiff(path: Path, what: str, allow_memmap: bool = True) -> tuple[np.ndarray, str]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise InputError(f"TIFF '{path.name}' contains no images: re-export it.")
            series = tif.series[0]
            axes = series.axes
            tiled = series.keyframe.is_tiled
            from engine.calcium.io import _check_imagej_complete

            _check_imagej_complete(tif, series, path.name)
    except InputError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc, what) from exc
    if allow_memmap:
        try:
            return tifffile.memmap(path, mode="r", series=0), axes
        except Exception:
            pass  # compressed or scattered: read it
        if tiled:  # tiles are decoded when a slice needs them (the file stays open with the image)
            tif = tifffile.TiffFile(path)
            lazy = _lazy_tiff(tif)
            if lazy is not None:
                return lazy, "".join(a for a in axes if a in "YXS")
            tif.close()
    try:
        return tifffile.imread(path, series=0), axes
    except Exception as exc:
        raise _unreadable(path, exc, what) from exc


def _squeeze(array: np.ndarray, axes: str | None = None) -> tuple[np.ndarray, str | None]:
    if isinstance(array, LazyImage):  # its singleton axes are dropped already
        return array, axes
    if array.ndim > 2 and 1 in array.shape:
        if axes is not None and len(axes) == array.ndim:
            axes = "".join(a for a, s in zip(axes, array.shape) if s != 1)
        array = array.reshape([s for s in array.shape if s != 1])
    return array, axes


def to_luminance(rgb: np.ndarray) -> np.ndarray:
    """Luminance of an (h, w, 3|4) image (alpha ignored), in blocks of rows; keeps integer types."""
    h, w = rgb.shape[:2]
    out_dtype = rgb.dtype if np.issubdtype(rgb.dtype, np.integer) else np.float32
    out = np.empty((h, w), dtype=out_dtype)
    weights = np.asarray(LUMINANCE_WEIGHTS, dtype=np.float32)
    rows = max(1, _BLOCK_PIXELS // max(w, 1))
    for r in range(0, h, rows):
        block = np.asarray(rgb[r:r + rows, :, :3], dtype=np.float32) @ weights
        if np.issubdtype(out_dtype, np.integer):
            info = np.iinfo(out_dtype)
            block = np.clip(np.rint(block), info.min, info.max)
        out[r:r + rows] = block
    return out


def load_image(path: str | os.PathLike) -> np.ndarray:
    """A 2-D grayscale image (height × width) from PNG, JPEG, TIFF or ``.npy``.

    Grayscale data keep their type (TIFF/npy possibly as a read-only memmap); colour becomes
    luminance. InputError for a missing, empty, unreadable, non-2-D or empty image.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".zarr":  # a folder: read lazily, chunk by chunk
        image = open_zarr(path)
        if image.ndim == 3:
            image = to_luminance(image) if image.shape[-1] in (3, 4) else image
        if image.size == 0:
            raise InputError(f"'{path.name}' is an empty image (shape {tuple(image.shape)}): re-export it.")
        _check_finite(path, image)
        return image
    check_input_file(path, IMAGE_EXTENSIONS, "an image")
    axes = None
    if ext == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise _unreadable(path, exc, "an image") from exc
    elif ext in (".tif", ".tiff"):
        array, axes = _read_tiff(path, "an image")
    else:
        array = _read_pillow(path, "an image")

    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InputError(f"'{path.name}' holds {array.dtype} values, not pixel intensities: save it as an integer or float image.")
    array, axes = _squeeze(array, axes)
    if array.ndim == 3:
        channels_last = array.shape[-1] in (2, 3, 4) if axes is None else axes.endswith("S")
        channels_first = axes is not None and axes.startswith("S") and array.shape[0] in (2, 3, 4)
        if channels_first:
            array = np.moveaxis(array, 0, -1)
            channels_last = True
        if channels_last and array.shape[-1] in (3, 4):
            array = to_luminance(array)
        elif channels_last and array.shape[-1] == 2:  # gray + alpha
            array = array[..., 0]
    if array.ndim != 2:
        raise InputError(
            f"'{path.name}' has shape {tuple(array.shape)}, not a single 2-D image: save one plane (one slice, "
            "one channel) as a 2-D image. Stacks over time belong in the calcium workspace."
        )
    if array.size == 0:
        raise InputError(f"'{path.name}' is an empty image (shape {tuple(array.shape)}): re-export it.")
    _check_finite(path, array)
    return array


def _check_finite(path: Path, image: np.ndarray) -> None:
    """InputError naming the first NaN/inf pixel of a float image (read in blocks of rows; integer images
    cannot hold any). A NaN would turn every patch that touches it, and the z-score of the whole image, into NaN."""
    if not np.issubdtype(image.dtype, np.floating):
        return
    rows = max(1, _BLOCK_PIXELS // max(image.shape[1], 1))
    for r in range(0, image.shape[0], rows):
        bad = ~np.isfinite(image[r:r + rows])
        if bad.any():
            row, col = np.argwhere(bad)[0]
            total = int(sum(np.count_nonzero(~np.isfinite(image[s:s + rows])) for s in range(0, image.shape[0], rows)))
            raise InputError(f"'{path.name}' has {total:,} NaN or infinite pixels (the first at row {r + int(row)}, column "
                             f"{int(col)}): fill them (e.g. with the background intensity) or crop them out, then open it again.")


def load_labels(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """An integer label map (0 = unlabelled) from ``.npy``, ``.npz``, ``.png`` or ``.tif``.

    ``.npz``: the array ``labels``, else the only array. Float arrays holding whole numbers are
    accepted (cast to int32). InputError when the shape differs from ``shape`` (both shapes
    named), the values are not whole numbers, some are negative, or nothing is labelled.
    """
    path = Path(path)
    check_input_file(path, LABEL_EXTENSIONS, "a label image")
    ext = path.suffix.lower()
    try:
        if ext == ".npy":
            array = np.load(path, allow_pickle=False)
        elif ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.files)
                if "labels" in keys:
                    key = "labels"
                elif len(keys) == 1:
                    key = keys[0]
                else:
                    raise InputError(
                        f"'{path.name}' holds several arrays ({', '.join(keys) or 'none'}) and none is called 'labels': "
                        "save the label map under the name 'labels'."
                    )
                array = z[key]
        elif ext in (".tif", ".tiff"):
            array = np.asarray(_read_tiff(path, "a label image", allow_memmap=False)[0])
        else:
            array = _read_pillow(path, "a label image")
    except InputError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc, "a label image") from exc

    array, _ = _squeeze(np.asarray(array))
    if array.ndim != 2:
        colour = " (it looks like a colour image)" if array.ndim == 3 and array.shape[-1] in (3, 4) else ""
        raise InputError(
            f"Label map '{path.name}' has shape {tuple(array.shape)}{colour}, not 2-D: save one integer label per pixel "
            "(0 = unlabelled, 1, 2, ... = regions) as a single-channel image or array."
        )
    if shape is not None and tuple(array.shape) != tuple(int(s) for s in shape):
        raise InputError(
            f"Label map '{path.name}' is {array.shape[0]}×{array.shape[1]} (height × width) but the image is "
            f"{int(shape[0])}×{int(shape[1])}: pick the label file that belongs to this image."
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise InputError(
                f"Label map '{path.name}' holds non-integer values ({array.dtype}): labels must be whole numbers "
                "(0 = unlabelled, 1, 2, ...). Save the label map as an integer array."
            )
        array = array.astype(np.int32)
    if array.size and array.min() < 0:
        raise InputError(
            f"Label map '{path.name}' has negative labels (minimum {int(array.min())}): use 0 for unlabelled pixels "
            "and 1, 2, ... for regions."
        )
    if not np.any(array):
        raise InputError(
            f"Label map '{path.name}' has no labelled pixels (all 0): label at least one region (1, 2, ...) first."
        )
    return array


def find_labels(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray | None:
    """The label map saved beside an image as ``<stem>_labels.{npz,npy,png,tif,tiff}``, or None.

    A label file that exists but cannot be used (wrong shape, not integer, nothing labelled)
    is skipped with a logged warning, so the image itself still opens; call
    :func:`load_labels` directly to get the reason as an :class:`InputError`.
    """
    path = Path(path)
    for ext in LABEL_EXTENSIONS:
        candidate = path.with_name(f"{path.stem}_labels{ext}")
        if candidate == path or not candidate.is_file():
            continue
        try:
            return load_labels(candidate, shape)
        except InputError as exc:
            log.warning("ignoring label map %s: %s", candidate.name, exc.message)
    return None
