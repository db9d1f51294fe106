"""Write a CNMF result as a Suite2p ``plane0`` folder plus our own sparse footprints and traces.

Suite2p folder (what Suite2p 1.1's ``gui/io.py`` ``load_files``, its GUI, ``extraction.masks.create_masks``
and its classifier read; checked with Suite2p itself by ``benchmarks/suite2p_check.py``):

``stat.npy``   object array of dicts, one per ROI: ``ypix``, ``xpix`` (int32 pixel rows/cols), ``lam``
               (float32 weights, here the footprint's pixels ≥ 10 % of its peak, summing to 1), ``npix``, ``overlap`` (bool per pixel:
               shared with another ROI, as ``assign_overlaps``), and, computed exactly as Suite2p's
               ``detection.stats.roi_stats`` with diameter [d, d]: ``med`` (the ROI pixel nearest the median),
               ``soma_crop``, ``npix_soma``, ``mrs``, ``mrs0``, ``compact``, ``radius``, ``aspect_ratio``,
               ``npix_norm``, ``npix_norm_no_crop``; ``footprint`` 0 (no sparsery scale); ``snr``, ``skew``,
               ``std`` of dF = F - 0.7 Fneu (as ``pipeline_s2p``); ``iplane`` 0.
``F.npy``      ROIs × frames float32: fluorescence *with* the background under the ROI (F + Fneu here),
               as Suite2p's F includes neuropil.
``Fneu.npy``   ROIs × frames float32: the background under the ROI (our neuropil estimate).
``spks.npy``   ROIs × frames float32: deconvolved spikes S.
``iscell.npy`` ROIs × 2 float32: [accepted 0/1, probability] (probability: the ROI classifier's P(cell) when it
               decided, :mod:`engine.calcium.classifier`, else a logistic of the SNR margin).
``ops.npy``    a dict (pickled 0-d object array, as Suite2p): ``Ly``, ``Lx``, ``fs``, ``nframes``,
               ``meanImg``, ``meanImgE`` (here the local correlation image's contrast-normalized mean),
               ``max_proj``, ``Vcorr`` (correlation image), ``yrange``, ``xrange``, ``xoff``, ``yoff``
               (rigid shifts, Suite2p's sign: the shift applied), ``corrXY``, ``nchannels``, ``nplanes``,
               ``tau``, ``diameter`` [d, d], ``save_path``, ``data_path``, ``reg_file`` (absent: the GUI falls
               back), ``batch_size``, ``extraction`` {``neuropil_coefficient``} and ``detection``
               {``soma_crop``} (Suite2p 1.x's GUI merge reads these nested settings).

Our own files: ``footprints.npz`` (``scipy.sparse.save_npz`` of A, pixels × components, pixel index
``y * width + x``) and ``traces.npz`` (``C`` calcium, ``S`` spikes, ``F`` raw demixed fluorescence
(background removed), ``Fneu``, ``b`` background images (pixels × P, dense), ``f`` their activities,
``accepted``, ``centers``, ``snr``, ``r_value``, ``size``, ``image_shape``, ``fps``). The folder is
written into a staging folder beside it and swapped in when complete
(:func:`engine.storage.staged_folder`): a crash never leaves half a folder, or a mix of two runs.
A folder holding anything but these files is refused rather than replaced.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import numpy as np
from scipy import sparse

from engine.storage import atomic_write_bytes

NEUROPIL_COEFFICIENT = 0.7  # Suite2p's default: dF = F - 0.7 Fneu
# Footprints keep faint weights across their whole fitting box; below this fraction of the peak
# they are box tails, not cell, and Suite2p's GUI would draw each ROI as a square.
STAT_MIN_WEIGHT = 0.1
SUITE2P_FILES = ("stat.npy", "F.npy", "Fneu.npy", "spks.npy", "iscell.npy", "ops.npy")


def _save_npy(path: Path, array, allow_pickle: bool = False) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    atomic_write_bytes(path, buffer.getvalue())


def _median_pix(ypix: np.ndarray, xpix: np.ndarray) -> list[int]:
    """Suite2p's ``med`` (detection/stats.py ``median_pix``): the ROI pixel nearest the median."""
    ym, xm = np.median(ypix), np.median(xpix)
    i = int(((xpix - xm) ** 2 + (ypix - ym) ** 2).argmin())
    return [int(ypix[i]), int(xpix[i])]


def _soma_crop(ypix, xpix, lam, med) -> np.ndarray:
    """Suite2p's ``soma_crop`` (detection/stats.py): drop pixels beyond the radius where the
    weight gained per 1-px ring falls below a third of its peak."""
    crop = np.ones(ypix.size, bool)
    if len(ypix) > 10:
        dists = np.hypot(ypix - med[0], xpix - med[1])
        radii = np.arange(0, dists.max(), 1)
        area = np.array([lam[dists < r].sum() for r in radii])
        darea = np.diff(area)
        radius = radii[-1]
        if len(darea):
            threshold = darea.max() / 3
            above = np.flatnonzero(darea > threshold)
            if len(above):
                below = np.flatnonzero(darea[above[0]:] < threshold)
                if len(below):
                    radius = radii[below[0] + above[0]]
        crop = dists < radius
    return crop if crop.any() else np.ones(ypix.size, bool)


@functools.lru_cache(maxsize=8)
def _disk_mean_radius(d: float) -> np.ndarray:
    """[n - 1]: the mean distance (in diameters) of the n pixels nearest the center of a grid of ±3 diameters
    (Suite2p's mrs0 for an ROI of n pixels); the same for every ROI, so computed once."""
    grid = np.arange(-d * 3, d * 3 + 1) / d
    disk = np.sort(np.hypot(*np.meshgrid(grid, grid, indexing="ij")).ravel())
    return np.cumsum(disk) / np.arange(1, disk.size + 1)


def _shape_stats(ypix, xpix, lam, diameter: float) -> dict:
    """``med``, ``soma_crop``, ``npix_soma``, ``mrs``, ``mrs0``, ``compact``, ``radius`` and
    ``aspect_ratio`` as Suite2p 1.1 ``detection.stats.roi_stats`` computes them (diameter [d, d])."""
    med = _median_pix(ypix, xpix)
    crop = _soma_crop(ypix, xpix, lam, med)
    y, x, lw = ypix[crop].astype(np.float64), xpix[crop].astype(np.float64), lam[crop].astype(np.float64)
    d = float(diameter)
    dists = np.hypot(y - np.median(y), x - np.median(x)) / d
    disk_mean = _disk_mean_radius(d)
    mrs, mrs0 = float(dists.mean()), float(disk_mean[min(y.size, len(disk_mean)) - 1])
    # fitMVGaus(thres=2) on coordinates in diameters: weighted covariance → ellipse radii.
    keep = lw > 0
    if keep.sum() >= 2:
        yx = np.stack([y[keep], x[keep]]) / d
        wk = lw[keep] / lw[keep].sum()
        yx = (yx - (wk * yx).sum(axis=1, keepdims=True)) * np.sqrt(wk)
        radii = np.sort(2 * np.sqrt(np.maximum(np.linalg.eigvalsh(yx @ yx.T), 0)))[::-1]
    else:
        radii = np.zeros(2)
    return {"med": med, "soma_crop": crop, "npix_soma": int(crop.sum()), "mrs": mrs, "mrs0": mrs0,
            "compact": max(1.0, mrs / (1e-10 + mrs0)), "radius": float(radii[0] * d),
            "aspect_ratio": float(2 * radii[0] / (0.01 + radii[0] + radii[1]))}  # fmt: skip


def _stat(result, dF: np.ndarray) -> np.ndarray:
    """Suite2p's stat.npy: one dict per ROI, fields as Suite2p 1.1's detection (roi_stats,
    assign_overlaps) and extraction (snr/skew/std of dF = F - 0.7 Fneu, pipeline_s2p) write them."""
    from scipy.stats import skew

    h, w = result.image_shape
    A = result.A.tocsc()
    pixels = []  # (pixel indices, weights) of each ROI: its footprint without the box tails
    for k in range(A.shape[1]):
        col = A[:, k]
        keep = col.data >= STAT_MIN_WEIGHT * col.data.max() if col.nnz else np.zeros(0, bool)
        pixels.append((col.indices[keep], col.data[keep].astype(np.float32)))
    counts = np.zeros(h * w, dtype=np.int32)
    for pix, _ in pixels:
        counts[pix] += 1
    diameter = float(result.params.get("neuron_diameter", 10.0))
    var = dF.var(axis=1)
    snr = np.where(var > 0, 1 - 0.5 * np.diff(dF, axis=1).var(axis=1) / np.maximum(var, 1e-30), 0.0)
    skews = np.where(dF.std(axis=1) > 0, skew(dF, axis=1), 0.0) if len(dF) else np.zeros(0)
    stats = []
    for k, (pix, val) in enumerate(pixels):
        ypix, xpix = (v.astype(np.int32) for v in np.divmod(pix, w))
        lam = (val / max(float(val.sum()), 1e-12)).astype(np.float32)
        if len(pix):
            shape = _shape_stats(ypix, xpix, lam, diameter)
        else:
            shape = {"med": [0, 0], "soma_crop": np.ones(0, bool), "npix_soma": 0, "mrs": 0.0, "mrs0": 0.0,
                     "compact": 1.0, "radius": 0.0, "aspect_ratio": 0.0}  # fmt: skip
        trace = dF[k]
        stats.append({"ypix": ypix, "xpix": xpix, "lam": lam, "npix": int(len(pix)), **shape, "footprint": 0,
                      "overlap": counts[pix] > 1, "snr": float(snr[k]),
                      "skew": float(skews[k]), "std": float(trace.std()),
                      "iplane": 0})  # fmt: skip
    # npix_norm: npix_soma over the median of the first 100 ROIs' (roi_stats, median=False).
    if stats:
        norm_soma = float(np.median([s["npix_soma"] for s in stats[:100]])) + 1e-10
        norm_all = float(np.median([s["npix"] for s in stats[:100]])) + 1e-10
        for s in stats:
            s["npix_norm"] = np.float32(s["npix_soma"] / norm_soma)
            s["npix_norm_no_crop"] = np.float32(s["npix"] / norm_all)
    out = np.empty(len(stats), dtype=object)
    out[:] = stats
    return out


OUR_FILES = (*SUITE2P_FILES, "footprints.npz", "traces.npz")


def check_output_folder(directory: str | os.PathLike) -> Path:
    """``directory`` if an export may replace it (absent, empty, or only our files), else InputError."""
    from engine.errors import InputError

    directory = Path(directory).absolute()
    if directory.exists() and not directory.is_dir():
        raise InputError(f"'{directory}' is a file: give a folder for the output.")
    foreign = sorted(p.name for p in directory.iterdir() if p.name not in OUR_FILES) if directory.is_dir() else []
    if foreign:
        raise InputError(f"'{directory}' holds other files ({', '.join(foreign[:3])}{'…' if len(foreign) > 3 else ''}), "
                         "which the export would replace: choose a new or empty folder.")
    return directory


def export_suite2p(result, directory: str | os.PathLike, data_path: str | None = None) -> Path:
    """Write the Suite2p files, ``footprints.npz`` and ``traces.npz`` as the folder ``directory`` (staged,
    then swapped in; an earlier export there is replaced); returns it."""
    from engine.storage import staged_folder

    directory = check_output_folder(directory)
    with staged_folder(directory) as staging:
        _write_suite2p(result, staging, directory, data_path)
    return directory


def _write_suite2p(result, staging: Path, directory: Path, data_path: str | None) -> None:
    """The files, written into ``staging``; ``directory`` is where they will be (ops' paths)."""
    h, w = result.image_shape
    F_total = (result.F + result.Fneu).astype(np.float32)
    corrected = F_total - NEUROPIL_COEFFICIENT * result.Fneu
    diameter = float(result.params.get("neuron_diameter", 10.0))
    _save_npy(staging / "stat.npy", _stat(result, corrected), allow_pickle=True)
    _save_npy(staging / "F.npy", F_total)
    _save_npy(staging / "Fneu.npy", result.Fneu.astype(np.float32))
    _save_npy(staging / "spks.npy", result.S.astype(np.float32))
    margin = result.metrics["snr"] - result.params.get("min_snr", 3.0)
    probability = result.metrics.get("p_cell", 1.0 / (1.0 + np.exp(-np.clip(margin, -50, 50))))  # the classifier's, if it decided
    probability = np.where(result.accepted, np.maximum(probability, 0.5), np.minimum(probability, 0.49))
    _save_npy(staging / "iscell.npy", np.stack([result.accepted.astype(np.float32), probability.astype(np.float32)], axis=1))
    images = result.images
    shifts = result.shifts if result.shifts is not None else np.zeros((result.F.shape[1], 2), np.float32)
    corr = images.get("correlation", np.zeros((h, w), np.float32))
    mean = images.get("mean", np.zeros((h, w), np.float32))
    ops = {
        "Ly": int(h), "Lx": int(w), "fs": float(result.fps), "nframes": int(result.F.shape[1]), "nplanes": 1, "nchannels": 1,
        "meanImg": mean.astype(np.float32), "meanImgE": _enhanced(mean), "max_proj": images.get("max", mean).astype(np.float32),
        "Vcorr": corr.astype(np.float32), "yrange": [0, int(h)], "xrange": [0, int(w)],
        "yoff": (-shifts[:, 0]).astype(np.float32), "xoff": (-shifts[:, 1]).astype(np.float32),
        "corrXY": np.ones(len(shifts), np.float32),
        "tau": float(np.median(-1.0 / (np.log(np.clip(result.g, 1e-6, 0.999999)) * result.fps))) if len(result.g) else 1.0,
        "save_path": str(directory), "data_path": [str(data_path)] if data_path else [], "diameter": [diameter, diameter],
        "reg_file": str(directory / "data.bin"), "batch_size": 500, "aspect": 1.0,
        # Suite2p 1.x's GUI reads these nested settings (gui/merge.py: neuropil_coefficient, soma_crop).
        "extraction": {"neuropil_coefficient": NEUROPIL_COEFFICIENT, "batch_size": 500, "snr_threshold": 0.0},
        "detection": {"soma_crop": True},
        "neurowb": {"params": result.params, "info": {k: v for k, v in result.info.items() if isinstance(v, (int, float, str, bool, dict))}},
    }  # fmt: skip
    _save_npy(staging / "ops.npy", np.array(ops, dtype=object), allow_pickle=True)
    buffer = io.BytesIO()
    sparse.save_npz(buffer, result.A.tocsc().astype(np.float32))
    atomic_write_bytes(staging / "footprints.npz", buffer.getvalue())
    buffer = io.BytesIO()
    np.savez(buffer, C=result.C, S=result.S, F=result.F, Fneu=result.Fneu, b=result.b.toarray().astype(np.float32), f=result.f,
             accepted=result.accepted, centers=result.centers, snr=result.metrics["snr"], r_value=result.metrics["r_value"],
             size=result.metrics["size"], image_shape=np.array(result.image_shape), fps=np.float64(result.fps))  # fmt: skip
    atomic_write_bytes(staging / "traces.npz", buffer.getvalue())


def _enhanced(image: np.ndarray) -> np.ndarray:
    """Suite2p's 'enhanced' mean image: high-passed and contrast-normalized (locally)."""
    from scipy.ndimage import gaussian_filter

    image = image.astype(np.float64)
    high = image - gaussian_filter(image, 10)
    local = np.sqrt(gaussian_filter(high**2, 10)) + 1e-6
    out = high / local
    lo, hi = np.percentile(out, [1, 99])
    return np.clip((out - lo) / max(hi - lo, 1e-12), 0, 1).astype(np.float32)
