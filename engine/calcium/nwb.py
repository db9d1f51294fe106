"""Write a CNMF result as an NWB file (Neurodata Without Borders, via pynwb), the format DANDI takes.

Layout (names as Suite2p's and CaImAn's NWB exports use them, so NWB tools find them):

``processing/ophys/ImageSegmentation/PlaneSegmentation``
    one row per ROI: ``pixel_mask`` (x, y, weight) with **x the row and y the column** of the
    image (NWB's image axes are (x, y) = the array's first and second axes, as in its ``image_mask``
    and ImageSeries data), the footprint's pixels ≥ 10 % of its peak (as the Suite2p export), and the
    same weights as a dense ``image_mask`` (ROIs × rows × columns, gzip-compressed in chunks of one ROI:
    mostly zeros, so it costs little on disk), which roiextractors and neuroconv read ROIs from (they
    take NWB's x as the image column, Suite2p and CaImAn as the row: roiextractors shows our masks and
    summary images transposed alike, so they still line up);
    columns ``accepted``, ``snr``, ``r_value``, ``size``, ``center_row``, ``center_col``.
``processing/ophys/Fluorescence/RoiResponseSeries``  demixed fluorescence F (background removed)
``processing/ophys/Fluorescence/Neuropil``           the background under each ROI (Fneu)
``processing/ophys/Fluorescence/Denoised``           the AR(1) calcium C
``processing/ophys/Deconvolved/Deconvolved``         the spikes S
``processing/ophys/SegmentationImages``               mean, max and local correlation images (neuroconv's name,
                                                     where roiextractors looks for them)
``processing/ophys/MotionCorrection``                rigid shifts (frames × (row, col), pixels), when registered

The session's description, experimenter, institution, lab, keywords, subject and the imaged area
(``location``) come from the user (``metadata``, NWB's field names: :func:`engine.nwb.check_metadata`).
The microscope, indicator and wavelengths are not known to the pipeline: they are written as "unknown"
/ NaN, and the session start as the movie file's modification time; edit them with pynwb before sharing.
The raw movie is not copied (it can be many GB): ``acquisition`` stays empty and the movie's path is
in the file's ``notes``.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.nwb import new_nwbfile, nwb_target, recorded_location, write_nwb

MASK_MIN_WEIGHT = 0.1  # as engine.calcium.export.STAT_MIN_WEIGHT: faint fitting-box tails are not cell


def pixel_masks(result, min_weight: float = MASK_MIN_WEIGHT) -> list[np.ndarray]:
    """Per ROI, (n, 3) rows of (row, col, weight): the footprint's pixels ≥ ``min_weight`` × its peak."""
    h, w = result.image_shape
    A = result.A.tocsc()
    masks = []
    for k in range(A.shape[1]):
        start, stop = A.indptr[k], A.indptr[k + 1]
        idx, val = A.indices[start:stop], A.data[start:stop]
        keep = val >= min_weight * val.max() if len(val) else np.zeros(0, bool)
        rows, cols = np.divmod(idx[keep], w)
        masks.append(np.stack([rows, cols, val[keep]], axis=1).astype(np.float64))
    return masks


def export_nwb(result, path: str | os.PathLike, movie_path: str | os.PathLike | None = None, metadata: dict | None = None) -> Path:
    """Write ``result`` (a CNMF result) to the NWB file ``path`` (atomically); returns the path."""
    from hdmf.backends.hdf5 import H5DataIO
    from pynwb import TimeSeries
    from pynwb.base import Images
    from pynwb.image import GrayscaleImage
    from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel

    path = nwb_target(path)
    n = result.A.shape[1]
    if n == 0:
        raise InputError("There are no ROIs to export: run CNMF or add ROIs first.")
    movie = Path(movie_path) if movie_path else None
    start = dt.datetime.fromtimestamp(movie.stat().st_mtime if movie is not None and movie.exists() else 0, tz=dt.timezone.utc)
    nwb = new_nwbfile(metadata, f"CNMF demixing of {movie.name if movie else 'a two-photon movie'} (NeuroWorkbench)", start,
                      f"Raw movie (not copied): {movie}" if movie else "Raw movie not recorded.")
    device = nwb.create_device(name="Microscope", description="microscope (model not recorded by the pipeline)")
    channel = OpticalChannel(name="OpticalChannel", description="unknown", emission_lambda=float("nan"))
    plane = nwb.create_imaging_plane(name="ImagingPlane", optical_channel=channel, imaging_rate=float(result.fps),
                                     description=f"{result.image_shape[0]} × {result.image_shape[1]} px", device=device,
                                     excitation_lambda=float("nan"), indicator="unknown", location=recorded_location(metadata))
    ophys = nwb.create_processing_module(name="ophys", description="NeuroWorkbench CNMF: ROIs, traces, spikes, summary images")

    segmentation = ImageSegmentation(name="ImageSegmentation")
    ophys.add(segmentation)
    table = segmentation.create_plane_segmentation(name="PlaneSegmentation", imaging_plane=plane,
                                                   description="CNMF footprints (x = image row, y = image column)")
    columns = {"accepted": ("accepted by the component evaluation or by hand", result.accepted.astype(bool)),
               "snr": ("trace SNR", result.metrics["snr"]), "r_value": ("spatial correlation of footprint and data",
                                                                       result.metrics["r_value"]),
               "size": ("pixels above the size threshold", result.metrics["size"]),
               "center_row": ("ROI center, image row", result.centers[:, 0]), "center_col": ("ROI center, image column",
                                                                                           result.centers[:, 1])}
    for name, (description, _values) in columns.items():
        table.add_column(name=name, description=description)
    masks = pixel_masks(result)
    for k, mask in enumerate(masks):
        table.add_roi(pixel_mask=[(int(r), int(c), float(v)) for r, c, v in mask],
                      **{name: (bool(values[k]) if name == "accepted" else float(values[k])) for name, (_d, values) in columns.items()})
    dense = np.zeros((n, *result.image_shape), np.float32)
    for k, mask in enumerate(masks):
        dense[k, mask[:, 0].astype(int), mask[:, 1].astype(int)] = mask[:, 2]
    table.add_column(name="image_mask", description="the pixel_mask weights as an image (x = row, y = column)",
                     data=H5DataIO(dense, compression="gzip", chunks=(1, *result.image_shape)))
    rois = table.create_roi_table_region(region=list(range(n)), description="all ROIs")

    def add_series(container: str, traces: list[tuple[str, np.ndarray, str]]) -> None:
        # series made inside a container already in the file, so their ROI region shares an ancestor with it
        fluorescence = Fluorescence(name=container)
        ophys.add(fluorescence)
        for name, data, description in traces:
            fluorescence.create_roi_response_series(name=name, data=np.asarray(data, np.float32).T, rois=rois, unit="a.u.",
                                                    rate=float(result.fps), starting_time=0.0, description=description)

    add_series("Fluorescence", [("RoiResponseSeries", result.F, "demixed fluorescence F (background removed)"),
                                ("Neuropil", result.Fneu, "background under each ROI"),
                                ("Denoised", result.C, "AR(1) calcium C (deconvolution's denoised trace)")])
    add_series("Deconvolved", [("Deconvolved", result.S, "spikes S (AR(1) deconvolution)")])
    images = [GrayscaleImage(name=name, data=np.asarray(result.images[name], np.float32), description=f"{name} image")
              for name in ("mean", "max", "correlation") if name in result.images]
    if images:
        ophys.add(Images(name="SegmentationImages", images=images, description="summary images of the movie"))
    if result.shifts is not None:
        ophys.add(TimeSeries(name="MotionCorrection", data=np.asarray(result.shifts, np.float32), unit="pixels",
                             rate=float(result.fps), description="rigid shifts applied, (row, col) per frame"))

    return write_nwb(nwb, path)
