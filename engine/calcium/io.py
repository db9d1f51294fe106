"""Calcium-imaging movies (frames × height × width), read lazily.

Sources:

* ``.npy``: ``np.load(mmap_mode="r")``;
* ``.tif``/``.tiff``: ``tifffile.memmap`` when the image data are stored contiguously and
  uncompressed (what ImageJ, ScanImage and tifffile write by default), otherwise page by page
  through ``TiffFile`` (one page per frame, e.g. compressed stacks);
* ``.h5``/``.hdf5``: an h5py dataset, the one named by ``dataset`` or the first 3-D one
  (CaImAn ``mov``, suite2p/other ``data`` ...); the file stays open until :meth:`Movie.close`.
* ``.nwb``: the ``data`` of a TwoPhotonSeries (or OnePhotonSeries) — in ``acquisition`` first, the one
  named by ``dataset`` if given — read lazily through h5py, frame rate from its ``rate`` or timestamps.
  Axes as stored, (frames, x, y) taken as (frames, rows, columns); a writer that stored (frames, width,
  height) gives a transposed view, which changes the display's orientation, not the ROIs found.

* Suite2p's registered binary ``data.bin`` (int16 frames × Ly × Lx, no header) with ``ops.npy`` beside it
  (``Ly``, ``Lx``, ``fs``): memory-mapped.
* CaImAn's ``.mmap`` (``…_d1_<rows>_d2_<cols>_d3_<planes>_order_<C|F>_frames_<T>_.mmap``, float32 pixels ×
  frames, pixels in column-major order): memory-mapped as CaImAn's ``load_memmap`` reads it; frames are
  contiguous in order F files (each frame one read), strided in order C files.

Through roiextractors (the field's readers of these formats; frames read on demand):

* Bruker Prairie View TIFF series: the ``<folder>/<folder>.xml`` Prairie View writes beside its ``.ome.tif`` files
  (channels and planes from the XML; frame rate from its ``relativeTime``);
* UCLA Miniscope (v4 DAQ software): a ``.avi`` of the device folder (``0.avi``, ``1.avi`` … with ``metaData.json`` and
  ``timeStamps.csv``), read with OpenCV, the rate from the time stamps;
* Inscopix ``.isxd`` (needs Inscopix's ``isx`` package).

Singleton axes are dropped (a ``T×1×H×W`` stack is a ``T×H×W`` movie). Frame rate comes from
the file when it says (ImageJ ``fps``/``finterval``, tifffile JSON ``fps``, ScanImage
``scanFrameRate``, HDF5 ``fps``/``frame_rate`` attributes), else from the caller, else None.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from engine.errors import InputError, check_input_file
from engine.progress import Progress, as_progress

MOVIE_EXTENSIONS = (".tif", ".tiff", ".npy", ".h5", ".hdf5", ".nwb", ".mmap", ".bin", ".xml", ".avi", ".isxd")
_HDF5_FPS_KEYS = ("fps", "frame_rate", "framerate", "frame_rate_hz", "fr", "sampling_rate", "sample_rate")
_SUMMARY_CHUNK_BYTES = 32 * 2**20  # working set per chunk (counted as float64): keeps check() calls ~≤100 ms apart


class Movie:
    """A lazily read movie, frames × height × width.

    Use :func:`open_movie` for files or :meth:`from_array` for arrays already in memory.
    ``frames()``/``frame()`` return float32 copies; nothing else is read from disk.
    """

    def __init__(
        self,
        source,
        shape: tuple[int, int, int],
        dtype: np.dtype,
        fps: float | None = None,
        path: Path | None = None,
        reader: Callable[[int, int], np.ndarray] | None = None,
        closer: Callable[[], None] | None = None,
    ):
        self._source = source
        self._shape = tuple(int(s) for s in shape)
        self._dtype = np.dtype(dtype)
        self.fps = fps
        self.path = path
        self._reader = reader
        self._closer = closer
        self._closed = False
        self.selection: dict = {}  # plane / channel chosen in a multi-plane, multi-channel recording (open_movie's keywords)

    @classmethod
    def from_array(cls, array: np.ndarray, fps: float | None = None, name: str = "array") -> "Movie":
        """Wrap a 3-D array (or memmap) as a Movie; validated like a file."""
        if not isinstance(array, np.ndarray):
            array = np.asarray(array)
        return _array_movie(array, name, _check_fps(fps))

    # -- facts --------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    @property
    def n_frames(self) -> int:
        return self._shape[0]

    @property
    def height(self) -> int:
        return self._shape[1]

    @property
    def width(self) -> int:
        return self._shape[2]

    @property
    def dtype(self) -> np.dtype:
        """Data type as stored in the file (frames are returned as float32)."""
        return self._dtype

    @property
    def duration(self) -> float | None:
        """Length in seconds, when the frame rate is known."""
        return self.n_frames / self.fps if self.fps else None

    # -- data ---------------------------------------------------------------------
    def frames(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` (clipped to the movie) as a float32 array (n, height, width)."""
        return self._block(start, stop, slice(0, self.height), slice(0, self.width))

    def _block(self, start: int, stop: int, rows: slice, cols: slice) -> np.ndarray:
        """Frames ``start:stop`` (clipped) cropped to ``rows``×``cols`` (slices with explicit bounds), float32."""
        if self._closed:
            raise ValueError("movie is closed")
        start = int(np.clip(int(start), 0, self.n_frames))
        stop = int(np.clip(int(stop), start, self.n_frames))
        h, w = rows.stop - rows.start, cols.stop - cols.start
        if stop == start:
            return np.zeros((0, h, w), dtype=np.float32)
        if self._reader is not None:
            block = self._reader(start, stop)
            block = np.asarray(block).reshape(stop - start, self.height, self.width)[:, rows, cols]
        else:
            block = self._source[start:stop, rows, cols]
        return np.array(block, dtype=np.float32).reshape(stop - start, h, w)

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` (negative counts from the end) as float32 (height, width)."""
        i = int(i)
        if i < 0:
            i += self.n_frames
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {i} out of range 0..{self.n_frames - 1}")
        return self.frames(i, i + 1)[0]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._source = None
        if self._closer is not None:
            self._closer()

    def __enter__(self) -> "Movie":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.n_frames

    def __repr__(self) -> str:
        where = f"'{self.path.name}', " if self.path else ""
        fps = f", {self.fps:g} fps" if self.fps else ""
        where += "".join(f"{k} {v}, " for k, v in self.selection.items())
        return f"Movie({where}{self.n_frames}×{self.height}×{self.width} {self.dtype}{fps})"


# -- opening ----------------------------------------------------------------------------

def open_movie(path: str | os.PathLike, fps: float | None = None, dataset: str | None = None,
               plane: int | None = None, channel: int | None = None) -> Movie:
    """Open a movie file lazily; ``fps`` is used when the file does not give a frame rate.

    ``dataset`` names the HDF5 dataset (default: the first 3-D one). ``plane`` (0 = the first) and ``channel``
    (the acquisition software's channel number, e.g. ScanImage's 1 for 'Channel 1') choose one movie of a
    multi-plane / multi-channel recording (:func:`recording_layout` says which there are). InputError for a
    missing, empty or unreadable file, an unsupported extension, data that are not frames × height × width,
    a single frame, or a recording of several planes or channels opened without choosing one.
    """
    path = check_input_file(path, MOVIE_EXTENSIONS, "a movie")
    ext = path.suffix.lower()
    fps = _check_fps(fps)
    selection = {k: int(v) for k, v in (("plane", plane), ("channel", channel)) if v is not None}
    layout = recording_layout(path)
    if layout is None and (selection.get("plane", 0) != 0 or "channel" in selection):
        raise InputError(f"'{path.name}' holds a single plane and channel: open it without --plane / --channel.")
    if ext in (".xml", ".avi", ".isxd"):
        movie = _open_roiextractors(path, layout, **selection)
    elif layout is not None:
        movie = _open_scanimage(path, layout, **selection)
    elif ext == ".npy":
        movie = _open_npy(path)
    elif ext in (".tif", ".tiff"):
        movie = _open_tiff(path)
    elif ext == ".nwb":
        movie = _open_nwb(path, dataset)
    elif ext == ".bin":
        movie = _open_suite2p_bin(path)
    elif ext == ".mmap":
        movie = _open_caiman_mmap(path)
    else:
        movie = _open_hdf5(path, dataset)
    movie.path = path
    movie.selection = selection
    if movie.fps is None:
        movie.fps = fps
    return movie


def _check_fps(fps) -> float | None:
    if fps is None:
        return None
    try:
        value = float(fps)
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"Frame rate must be a positive number of frames per second, got {fps!r}.")
    return value


def _metadata_fps(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _check_movie_shape(shape: tuple[int, ...], name: str, colour: bool = False) -> None:
    expected = "a movie must be frames × height × width (one grayscale channel)"
    if colour or (len(shape) == 4 and shape[-1] in (3, 4)):
        raise InputError(
            f"'{name}' holds colour (RGB) frames, shape {tuple(shape)}: {expected}. "
            "Save a single channel (e.g. the green channel) as a grayscale stack."
        )
    if len(shape) == 2:
        raise InputError(
            f"'{name}' holds a single 2-D image of shape {tuple(shape)}, not a movie: {expected}. "
            "Open the whole stack, or open still images in the microarchitecture workspace."
        )
    if len(shape) != 3:
        raise InputError(
            f"'{name}' has shape {tuple(shape)} ({len(shape)}-D): {expected}. "
            "Export one plane/channel as a 3-D stack."
        )
    if min(shape) == 0:
        raise InputError(f"'{name}' is empty (shape {tuple(shape)}): it contains no pixels.")
    if shape[0] == 1:
        raise InputError(
            f"'{name}' has a single frame (shape {tuple(shape)}): a movie needs at least 2 frames. "
            "Check that the whole stack was exported."
        )
    if shape[2] in (3, 4) and shape[1] > 4:
        raise InputError(
            f"'{name}' has shape {tuple(shape)}: the last axis of {shape[2]} looks like colour channels, "
            f"not image width; {expected}."
        )


def _array_movie(array, name: str, fps: float | None, closer=None) -> Movie:
    """A Movie over an indexable array-like (ndarray, memmap, h5py dataset) with singleton axes."""
    shape = tuple(int(s) for s in array.shape)
    if len(shape) > 3 and sum(s != 1 for s in shape) == 3:
        kept_axes = [i for i, s in enumerate(shape) if s != 1]
        core = tuple(shape[i] for i in kept_axes)
        _check_movie_shape(core, name)
        frame_axis = kept_axes[0]

        def reader(start: int, stop: int):
            key = tuple(slice(start, stop) if i == frame_axis else (slice(None) if i in kept_axes else 0) for i in range(len(shape)))
            return array[key]

        return Movie(array, core, array.dtype, fps=fps, reader=reader, closer=closer)
    _check_movie_shape(shape, name)
    return Movie(array, shape, array.dtype, fps=fps, closer=closer)


def _open_npy(path: Path) -> Movie:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise InputError(
            f"Could not read '{path.name}' as a NumPy array: the file is corrupt or not a .npy file. Re-save it with numpy.save.",
            details=f"{type(exc).__name__}: {exc}",
        ) from exc
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.iscomplexobj(array):
        raise InputError(f"'{path.name}' holds {array.dtype} values, not real numbers: save the movie as an integer or float array.")
    return _array_movie(array, path.name, None)


def is_suite2p_binary(path: str | os.PathLike) -> bool:
    """A Suite2p registered binary: a ``.bin`` with Suite2p's ``ops.npy`` beside it."""
    path = Path(path)
    return path.suffix.lower() == ".bin" and (path.parent / "ops.npy").is_file()


def _open_suite2p_bin(path: Path) -> Movie:
    ops_path = path.parent / "ops.npy"
    if not ops_path.is_file():
        raise InputError(f"'{path.name}': a Suite2p binary needs its ops.npy beside it (for the frame size); "
                         "an ephys recording opens in the Ephys workspace.")
    try:
        ops = np.load(ops_path, allow_pickle=True).item()  # Suite2p's own settings file (a pickled dict)
        ly, lx = int(ops["Ly"]), int(ops["Lx"])
    except Exception as exc:
        raise InputError(f"'{ops_path}' is not a Suite2p ops.npy with Ly and Lx: point at the plane folder Suite2p wrote.",
                         details=f"{type(exc).__name__}: {exc}") from exc
    frame = ly * lx * 2
    size = path.stat().st_size
    if size % frame:
        raise InputError(f"'{path.name}' is {size} bytes, not a whole number of {ly} × {lx} int16 frames: "
                         "is ops.npy from the same run?")
    array = np.memmap(path, dtype="<i2", mode="r", shape=(size // frame, ly, lx))
    return _array_movie(array, path.name, _metadata_fps(ops.get("fs")))


def _open_caiman_mmap(path: Path) -> Movie:
    import re

    fields = dict(re.findall(r"_(d1|d2|d3|order|frames)_([A-Za-z0-9]+)", path.name))
    try:
        d1, d2, d3, frames, order = int(fields["d1"]), int(fields["d2"]), int(fields.get("d3", 1)), int(fields["frames"]), fields["order"]
    except (KeyError, ValueError):
        raise InputError(f"'{path.name}' does not name its layout as CaImAn's memory maps do "
                         "(…_d1_<rows>_d2_<cols>_d3_1_order_C_frames_<T>_.mmap): keep CaImAn's file name.") from None
    if order not in ("C", "F") or d3 != 1:
        raise InputError(f"'{path.name}': only 2-D CaImAn memory maps (d3 1, order C or F) open as movies.")
    pixels = d1 * d2
    if path.stat().st_size != pixels * frames * 4:
        raise InputError(f"'{path.name}' is {path.stat().st_size} bytes, not {pixels} pixels × {frames} frames of float32: "
                         "the file is truncated or renamed.")
    yr = np.memmap(path, dtype=np.float32, mode="r", shape=(pixels, frames), order=order)

    def reader(start: int, stop: int):  # pixel p = row + col·d1 (CaImAn's column-major images)
        return np.asarray(yr[:, start:stop]).T.reshape((stop - start, d2, d1)).transpose(0, 2, 1)

    _check_movie_shape((frames, d1, d2), path.name)
    return Movie(yr, (frames, d1, d2), np.float32, reader=reader)


def _tiff_fps(tif) -> float | None:
    try:
        ij = tif.imagej_metadata
        if ij:
            if _metadata_fps(ij.get("fps")):
                return _metadata_fps(ij.get("fps"))
            interval = _metadata_fps(ij.get("finterval"))
            if interval:
                return 1.0 / interval
        shaped = tif.shaped_metadata
        if shaped:
            for meta in shaped:
                if isinstance(meta, dict) and _metadata_fps(meta.get("fps")):
                    return _metadata_fps(meta.get("fps"))
        if getattr(tif, "is_scanimage", False):
            si = tif.scanimage_metadata or {}
            frame_data = si.get("FrameData", {}) if isinstance(si, dict) else {}
            rate = _metadata_fps(frame_data.get("SI.hRoiManager.scanFrameRate"))
            if rate:
                return rate
    except Exception:  # metadata is a bonus: never fail to open a movie because of it
        return None
    return None


def _check_imagej_complete(tif, series, name: str) -> None:
    """InputError when an ImageJ file promises more images than could be read: a truncated stack (an
    interrupted save or copy), which tifffile would otherwise present as its first page alone."""
    try:
        promised = int((tif.imagej_metadata or {}).get("images", 1))
    except (TypeError, ValueError):
        return
    found = int(np.prod(series.shape)) // max(1, int(np.prod(series.keyframe.shape)))
    if promised > found:
        raise InputError(f"'{name}' is an ImageJ stack of {promised:,} images but only {found:,} could be read: the file is "
                         "truncated (an interrupted save or copy?). Copy or save the stack again.")


def _open_tiff(path: Path) -> Movie:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:
        raise InputError(
            f"Could not read '{path.name}' as a TIFF: the file is corrupt or not a TIFF. Re-export the stack.",
            details=f"{type(exc).__name__}: {exc}",
        ) from exc
    try:
        if not tif.series:
            raise InputError(f"TIFF '{path.name}' contains no images: re-export the stack.")
        series = tif.series[0]
        _check_imagej_complete(tif, series, path.name)
        fps = _tiff_fps(tif)
        colour = "S" in series.axes
        shape = tuple(int(s) for s in series.shape)
        if colour:
            _check_movie_shape(shape, path.name, colour=True)
        try:
            array = tifffile.memmap(path, mode="r", series=0)
        except Exception:
            array = None  # compressed, tiled or scattered pages: read page by page
        if array is not None:
            tif.close()
            return _array_movie(array, path.name, fps)
        core = tuple(s for s in shape if s != 1) if len(shape) > 3 else shape
        _check_movie_shape(core, path.name)
        n_frames, height, width = core
        pages = len(series.pages) if hasattr(series, "pages") else n_frames
        page_shape = tuple(int(s) for s in series.keyframe.shape)
        if pages != n_frames or int(np.prod(page_shape)) != height * width:
            raise InputError(
                f"TIFF '{path.name}' (shape {shape}, {pages} pages of {page_shape}) does not store one frame per page, "
                "which is needed to read it lazily: re-save it uncompressed or one frame per page."
            )

        def reader(start: int, stop: int):
            return tif.asarray(key=range(start, stop), series=0)

        return Movie(tif, core, series.dtype, fps=fps, reader=reader, closer=tif.close)
    except BaseException:
        tif.close()
        raise


@dataclass(frozen=True)
class RecordingLayout:
    """The planes and channels of a multi-plane / multi-channel imaging recording, as its metadata states them.

    Pages are in acquisition order: channels fastest, then the ``frames_per_slice`` frames of a slice, the
    ``planes`` slices of a volume, ``flyback`` discarded frames (× channels), then the next volume."""

    planes: int
    channels: tuple[int, ...]  # the saved channels' numbers (ScanImage's, 1-based)
    channel_names: tuple[str, ...]
    frames_per_slice: int = 1
    flyback: int = 0
    fps: float | None = None  # volume rate of a volume recording, else frame rate
    system: str = "ScanImage"

    @property
    def needs_choice(self) -> bool:
        return self.planes > 1 or len(self.channels) > 1

    def describe(self) -> str:
        names = ", ".join(self.channel_names)
        return f"{self.planes} plane{'s' * (self.planes > 1)} × {len(self.channels)} channel{'s' * (len(self.channels) > 1)} ({names})"


def _flat(value) -> list:
    """A MATLAB scalar, row ([1 2]) or column ([1;2], parsed as [[1], [2]]) vector as a flat list."""
    return [x for item in (value if isinstance(value, list) else [value]) for x in (item if isinstance(item, list) else [item])]


def recording_layout(path: str | os.PathLike) -> RecordingLayout | None:
    """The planes and channels of a ScanImage 2016+ TIFF (its non-varying frame data: ``SI.hChannels.channelSave``,
    ``SI.hStackManager`` slices and frames per slice, FastZ flyback frames) or of a Bruker Prairie View series (its
    XML), else None. Cheap: reads the header or the XML."""
    path = Path(path)
    if path.suffix.lower() == ".xml" and path.is_file():
        return _bruker_layout(path)
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return None
    import tifffile

    try:
        with open(path, "rb") as fh:
            si, _rois, _version = tifffile.read_scanimage_metadata(fh)
    except Exception:
        return None  # not a ScanImage BigTIFF: an ordinary TIFF
    try:
        saved = [int(c) for c in _flat(si.get("SI.hChannels.channelSave", si.get("SI.hChannels.channelsActive", 1)))]
        names = _flat(si.get("SI.hChannels.channelName", []))
        fast_z = bool(si.get("SI.hFastZ.enable", False))
        slices = int(si.get("SI.hStackManager.actualNumSlices", si.get("SI.hStackManager.numSlices", 1)) or 1)
        volumetric = slices > 1 and bool(si.get("SI.hStackManager.enable", fast_z))
        planes = slices if volumetric else 1
        per_slice = si.get("SI.hStackManager.framesPerSlice", 1) if volumetric else 1
        per_slice = int(per_slice) if math.isfinite(float(per_slice)) else 1
        if "SI.hStackManager.numFramesPerVolumeWithFlyback" in si and volumetric:
            flyback = int(si["SI.hStackManager.numFramesPerVolumeWithFlyback"]) - int(si["SI.hStackManager.numFramesPerVolume"])
        else:  # ScanImage 2016-2019: FastZ says how many flyback frames it discards (and saves)
            flyback = int(si.get("SI.hFastZ.numDiscardFlybackFrames", 0)) if volumetric and fast_z and si.get(
                "SI.hFastZ.discardFlybackFrames", False) else 0
        rate = si.get("SI.hRoiManager.scanVolumeRate" if volumetric else "SI.hRoiManager.scanFrameRate")
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"'{path.name}' is a ScanImage file whose header could not be understood ({exc}): open it with "
                         "ScanImage's own tools and save one plane and channel as a TIFF stack.") from exc
    labels = tuple(str(names[c - 1]) if 0 < c <= len(names) else f"Channel {c}" for c in saved)
    return RecordingLayout(planes, tuple(saved), labels, max(per_slice, 1), max(flyback, 0), _metadata_fps(rate))


def _page_offsets(tif, pages: np.ndarray) -> np.ndarray | None:
    """The byte offset of the pixels of each of ``pages``, when each is uncompressed, in one contiguous run of strips,
    of the first page's shape and type (what ScanImage writes), else None. Only those pages' IFDs are decoded."""
    first = tif.pages.first
    nbytes = int(np.prod(first.shape)) * first.dtype.itemsize
    if first.compression != 1:
        return None
    tif.pages.useframes = True  # TiffFrames: only the offsets and byte counts of each IFD are decoded
    offsets = np.empty(len(pages), np.int64)
    for j, i in enumerate(pages):
        page = tif.pages[int(i)]
        lo, counts = page.dataoffsets, page.databytecounts
        if len(lo) == 0 or sum(counts) != nbytes or any(a + n != b for a, n, b in zip(lo[:-1], counts[:-1], lo[1:])):
            return None
        offsets[j] = lo[0]
    return offsets


class _PageFrames:
    """Frames × rows × columns over a memory map of a TIFF whose pages are uncompressed, read at each page's offset:
    slicing copies only the rows and columns asked for, with no TIFF parsing after the offsets were collected."""

    def __init__(self, raw: np.memmap, offsets: np.ndarray, frame_shape: tuple[int, int], dtype: np.dtype):
        self._raw, self._offsets = raw, offsets
        self.shape = (len(offsets), *(int(s) for s in frame_shape))
        self.dtype = np.dtype(dtype)
        self.ndim = 3

    def __getitem__(self, key):
        t, rows, cols = (key if isinstance(key, tuple) else (key,)) + (slice(None),) * (3 - (len(key) if isinstance(key, tuple) else 1))
        index = range(self.shape[0])[t]
        h, w = self.shape[1:]
        r, c = range(h)[rows], range(w)[cols]
        out = np.empty((len(index), len(r), len(c)), self.dtype)
        for j, i in enumerate(index):
            out[j] = np.ndarray((h, w), self.dtype, buffer=self._raw, offset=int(self._offsets[i]))[rows, cols]
        return out


def _bruker_layout(path: Path) -> RecordingLayout:
    """Channels (``<File channel channelName>``) and planes (frames of the first ``<Sequence>`` of a Z series) of a
    Prairie View XML, as roiextractors' Bruker reader counts them."""
    from xml.etree import ElementTree

    try:
        root = ElementTree.parse(path).getroot()
    except Exception as exc:
        raise InputError(f"Could not read '{path.name}' as XML: the file is damaged.", details=str(exc)) from exc
    if root.tag != "PVScan":
        raise InputError(f"'{path.name}' is not a Bruker Prairie View XML (no <PVScan>): open the movie itself.")
    if path.stem != path.parent.name:
        raise InputError(f"'{path.name}': Prairie View names its XML after the folder it is in ('{path.parent.name}.xml'); "
                         "keep the folder and file names it wrote.")
    channels: dict[int, str] = {}
    for element in root.iter("File"):
        channels.setdefault(int(element.get("channel", len(channels) + 1)), element.get("channelName", ""))
    sequence = next(root.iter("Sequence"), None)
    planes = sum(1 for _ in sequence.iter("Frame")) if sequence is not None and "ZSeries" in sequence.get("type", "") else 1
    numbers = tuple(sorted(channels))
    return RecordingLayout(max(planes, 1), numbers, tuple(channels[c] or f"Ch{c}" for c in numbers), system="Bruker")


def _choose(path: Path, layout: RecordingLayout, plane: int | None, channel: int | None) -> tuple[int, int]:
    """(plane, channel) of a recording of several: given, or the only one; InputError naming the choices."""
    choices = []
    if layout.planes > 1 and plane is None:
        choices.append(f"--plane 0..{layout.planes - 1}")
    if len(layout.channels) > 1 and channel is None:
        choices.append("--channel " + " or ".join(str(c) for c in layout.channels))
    if choices:
        raise InputError(f"'{path.name}' is a {layout.system} recording of {layout.describe()}: choose one plane and channel "
                         f"({', '.join(choices)}; in the window, the chooser that opens with it).")
    plane = 0 if plane is None else plane
    channel = layout.channels[0] if channel is None else channel
    if not 0 <= plane < layout.planes:
        raise InputError(f"Plane {plane} does not exist: '{path.name}' has planes 0..{layout.planes - 1}.")
    if channel not in layout.channels:
        raise InputError(f"Channel {channel} was not saved in '{path.name}': it holds channel "
                         f"{' and '.join(str(c) for c in layout.channels)} ({', '.join(layout.channel_names)}).")
    return plane, channel


def _open_scanimage(path: Path, layout: RecordingLayout, plane: int | None = None, channel: int | None = None) -> Movie:
    """One plane and channel of a ScanImage recording, read from a memory map of the file at each page's offset
    (tifffile parses the IFDs once, for the offsets); page by page through tifffile when pages are compressed."""
    import tifffile

    plane, channel = _choose(path, layout, plane, channel)
    n_ch, per_slice = len(layout.channels), layout.frames_per_slice
    cycle = (layout.planes * per_slice + layout.flyback) * n_ch  # pages per volume (per frame of a plane recording)
    first = plane * per_slice * n_ch + layout.channels.index(channel)
    tif = tifffile.TiffFile(path)
    try:
        n_pages = len(tif.pages)
        cycles = n_pages // cycle  # an interrupted acquisition's last partial volume is left out, as ScanImage's readers do
        # page of frame f: each slice's frames_per_slice samples are consecutive frames of the plane's movie
        pages = (np.arange(cycles)[:, None] * cycle + first + np.arange(per_slice)[None, :] * n_ch).reshape(-1)
        page = tif.pages.first
        _check_movie_shape((len(pages), *page.shape), path.name)
        offsets = _page_offsets(tif, pages)
        if offsets is not None:
            frames = _PageFrames(np.memmap(path, dtype=np.uint8, mode="r"), offsets, page.shape,
                                 page.dtype.newbyteorder(tif.byteorder))
            tif.close()
            return _array_movie(frames, path.name, layout.fps)

        def reader(start: int, stop: int):
            return np.stack([tif.pages[int(i)].asarray() for i in pages[start:stop]])

        return Movie(tif, (len(pages), *page.shape), page.dtype, fps=layout.fps, reader=reader, closer=tif.close)
    except BaseException:
        tif.close()
        raise


def _open_roiextractors(path: Path, layout: RecordingLayout | None, plane: int | None = None, channel: int | None = None) -> Movie:
    """A Bruker series (by its XML), a Miniscope device folder (by one of its .avi files) or an Inscopix .isxd through
    roiextractors' extractor; frames are read when asked for (``get_series``)."""
    ext = path.suffix.lower()
    name = {".xml": "Bruker Prairie View", ".avi": "Miniscope", ".isxd": "Inscopix"}[ext]
    try:
        if ext == ".xml":
            from roiextractors import BrukerTiffImagingExtractor

            plane, channel = _choose(path, layout, plane, channel)
            index = layout.channels.index(channel)
            extractor = BrukerTiffImagingExtractor(path.parent, channel_name=layout.channel_names[index] if len(layout.channels) > 1 else None)
        elif ext == ".avi":
            if not (path.parent / "metaData.json").is_file():
                raise InputError(f"'{path.name}' has no metaData.json beside it: only UCLA Miniscope recordings (a device "
                                 "folder of 0.avi, 1.avi …, metaData.json and timeStamps.csv) open as movies.")
            from roiextractors import MiniscopeImagingExtractor

            extractor = MiniscopeImagingExtractor(folder_path=path.parent)
        else:
            try:
                import isx  # noqa: F401  (Inscopix's own reader, which roiextractors calls)
            except ImportError:
                raise InputError(f"'{path.name}' is an Inscopix movie: reading it needs Inscopix's 'isx' package "
                                 "(pip install isx; wheels for Python 3.9–3.12 on Linux, macOS and Windows).") from None
            from roiextractors import InscopixImagingExtractor

            extractor = InscopixImagingExtractor(path)
    except InputError:
        raise
    except Exception as exc:  # the extractors raise many kinds; the message names the file and the format
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"Could not read '{path.name}' as a {name} recording: {reason}. Check that its folder is complete "
                         "as the acquisition software wrote it.", details=f"{type(exc).__name__}: {exc}") from exc
    volumetric = bool(getattr(extractor, "is_volumetric", False))
    shape = (int(extractor.get_num_samples()), *(int(s) for s in extractor.get_image_shape()))
    _check_movie_shape(shape, path.name)

    def reader(start: int, stop: int):
        series = extractor.get_series(start_sample=start, end_sample=stop)
        return series[..., plane] if volumetric else series

    return Movie(extractor, shape, extractor.get_dtype(), fps=_metadata_fps(extractor.get_sampling_frequency()), reader=reader)


def _hdf5_fps(ds, f) -> float | None:
    """Frame rate from the dataset's attributes, else the file's (first known key wins)."""
    for attrs in (ds.attrs, f.attrs):
        for key in _HDF5_FPS_KEYS:
            if key in attrs:
                values = np.asarray(attrs[key]).reshape(-1)
                fps = _metadata_fps(values[0]) if values.size else None
                if fps:
                    return fps
    return None


def _open_hdf5(path: Path, dataset: str | None) -> Movie:
    import h5py

    try:
        f = h5py.File(path, "r")
    except Exception as exc:
        raise InputError(
            f"Could not read '{path.name}' as HDF5: the file is corrupt or not an HDF5 file.",
            details=f"{type(exc).__name__}: {exc}",
        ) from exc
    try:
        datasets: list[tuple[str, tuple]] = []
        f.visititems(lambda name, obj: datasets.append((name, obj.shape)) if isinstance(obj, h5py.Dataset) else None)
        listing = ", ".join(f"{n} {tuple(s)}" for n, s in datasets) or "none"
        if dataset is not None:
            if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
                raise InputError(f"HDF5 file '{path.name}' has no dataset '{dataset}'. Datasets found: {listing}.")
            name = dataset
        else:
            three_d = [n for n, s in datasets if len(s) == 3 or (len(s) > 3 and sum(x != 1 for x in s) == 3)]
            if not three_d:
                raise InputError(
                    f"HDF5 file '{path.name}' has no 3-D (frames × height × width) dataset. Datasets found: {listing}. "
                    "Choose the dataset that holds the movie."
                )
            name = three_d[0]
        ds = f[name]
        if not (np.issubdtype(ds.dtype, np.number) or ds.dtype == np.bool_):
            raise InputError(f"Dataset '{name}' in '{path.name}' holds {ds.dtype} values, not numbers: choose the movie dataset.")
        return _array_movie(ds, f"{path.name}:{name}", _hdf5_fps(ds, f), closer=f.close)
    except BaseException:
        f.close()
        raise


def _open_nwb(path: Path, name: str | None) -> Movie:
    """An NWB file's imaging series, read with h5py (NWB files are HDF5; the data are not copied)."""
    from engine.nwb import IMAGING_TYPES, find_series, open_nwb, series_rate

    f = open_nwb(path)
    try:
        series = find_series(f, IMAGING_TYPES, name)
        if not series:
            raise InputError(f"'{path.name}' holds no TwoPhotonSeries{f' named {name!r}' if name else ''}: an NWB file of "
                             "results (ROIs and traces) has no movie to open, and an ephys recording (ElectricalSeries) "
                             "opens in the Ephys workspace. Open the NWB file with the raw imaging data.")
        group = f[series[0]]
        if "data" not in group or group["data"].ndim < 3 or group["data"].shape[0] == 0:
            raise InputError(f"The imaging series '{series[0]}' in '{path.name}' keeps its frames in external files "
                             "(or has none): open those files instead.")
        return _array_movie(group["data"], f"{path.name}:{series[0]}", _metadata_fps(series_rate(group)), closer=f.close)
    except BaseException:
        f.close()
        raise


# -- summaries --------------------------------------------------------------------------

def summary_images(movie: Movie, chunk_frames: int = 500, progress: Progress | None = None,
                   visit: Callable[[int, np.ndarray], None] | None = None) -> dict:
    """Mean, max and standard deviation (population) images, one chunk of frames at a time.

    Chunks are float32 (the movie's frames); per-chunk sums and the chunked mean/variance merge
    are float64 (numerically stable); chunks hold at most ``chunk_frames`` frames and about
    32 MB. Returns float32 images keyed ``mean``, ``max``, ``std``. InputError naming the first
    frame with NaN or infinite values. ``visit(start, block)``, when given, sees every chunk
    (float32, frames ``start:``) after it was checked, so a caller can do more with the same
    single pass over the file.
    """
    progress = as_progress(progress)
    if chunk_frames < 1:
        raise ValueError("chunk_frames must be >= 1")
    frame_bytes = movie.height * movie.width * 8
    step = int(max(1, min(chunk_frames, _SUMMARY_CHUNK_BYTES // max(frame_bytes, 1))))
    check_finite = not np.issubdtype(movie.dtype, np.integer)
    count = 0
    mean = np.zeros((movie.height, movie.width), dtype=np.float64)
    m2 = np.zeros_like(mean)
    peak = np.full_like(mean, -np.inf)
    progress.report(0.0, "Summary images")
    for start in range(0, movie.n_frames, step):
        progress.check()
        block = movie.frames(start, start + step)  # float32: half the memory traffic of float64
        if check_finite:
            bad = ~np.isfinite(block).all(axis=(1, 2))
            if bad.any():
                index = start + int(np.flatnonzero(bad)[0])
                kind = "NaN" if np.isnan(block[index - start]).any() else "infinite"
                name = movie.path.name if movie.path else "the movie"
                raise InputError(
                    f"Frame {index} of {name} contains {kind} values: summary images cannot be computed. "
                    "Fix or drop the bad frames (e.g. a failed motion correction) and try again."
                )
        if visit is not None:
            visit(start, block)
        n_b = block.shape[0]
        mean_b = block.mean(axis=0, dtype=np.float64)
        centred = block - mean_b.astype(np.float32)
        m2_b = np.einsum("tij,tij->ij", centred, centred, dtype=np.float64)
        total = count + n_b
        delta = mean_b - mean
        mean += delta * (n_b / total)
        m2 += m2_b + delta**2 * (count * n_b / total)
        count = total
        np.maximum(peak, block.max(axis=0), out=peak)
        progress.report(count / movie.n_frames, "Summary images")
    std = np.sqrt(m2 / max(count, 1))
    progress.report(1.0, "Summary images")
    return {"mean": mean.astype(np.float32), "max": peak.astype(np.float32), "std": std.astype(np.float32)}


def region_trace(movie: Movie, row: int, col: int, radius: float = 2, progress: Progress | None = None) -> np.ndarray:
    """Mean of the pixels within ``radius`` of (``row``, ``col``) in every frame: float32 (n_frames,).

    Reads only the bounding box of the disk where the source allows (memmaps, HDF5), in
    chunks of frames with progress and cancellation. InputError when the pixel is outside the image.
    """
    progress = as_progress(progress)
    row, col = int(row), int(col)
    if not (0 <= row < movie.height and 0 <= col < movie.width):
        raise InputError(
            f"Pixel (row {row}, column {col}) is outside the {movie.height}×{movie.width} movie: pick a point on the image."
        )
    if radius < 0:
        raise ValueError("radius must be >= 0")
    r = int(np.floor(radius))
    rows = slice(max(row - r, 0), min(row + r + 1, movie.height))
    cols = slice(max(col - r, 0), min(col + r + 1, movie.width))
    yy, xx = np.mgrid[rows, cols]
    mask = (yy - row) ** 2 + (xx - col) ** 2 <= radius**2
    full_frames = movie._reader is not None  # page-by-page sources read whole frames
    frame_bytes = (movie.height * movie.width if full_frames else mask.size) * 4
    step = int(max(1, min(2000, _SUMMARY_CHUNK_BYTES // max(frame_bytes, 1))))
    trace = np.empty(movie.n_frames, dtype=np.float32)
    progress.report(0.0, "Reading trace")
    for start in range(0, movie.n_frames, step):
        progress.check()
        block = movie._block(start, start + step, rows, cols)
        trace[start:start + len(block)] = block[:, mask].mean(axis=1)
        progress.report(min(start + step, movie.n_frames) / movie.n_frames, "Reading trace")
    return trace
