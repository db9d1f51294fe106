"""Write a CNMF result as a Suite2p ``plane0`` folder plus our own sparse footprints and traces.

Suite2p folder (what ``suite2p.io`` and its GUI read; field by field as Suite2p 0.14 writes them):

``stat.npy``   object array of dicts, one per ROI: ``ypix``, ``xpix`` (int32 pixel rows/cols), ``lam``
               (float32 weights, here the footprint, summing to 1 like Suite2p's), ``med`` [row, col]
               (median pixel), ``npix``, ``npix_norm`` (npix / mean npix), ``radius``, ``aspect_ratio``,
               ``compact``, ``footprint`` (0/1/2 Suite2p uses 1), ``overlap`` (bool per pixel: shared
               with another ROI), ``soma_crop`` (all True), ``npix_soma`` (= npix), ``skew``, ``std``
               (of F - 0.7 Fneu, as Suite2p computes them), ``iplane`` (0).
``F.npy``      ROIs × frames float32: fluorescence *with* the background under the ROI (F + Fneu here),
               as Suite2p's F includes neuropil.
``Fneu.npy``   ROIs × frames float32: the background under the ROI (our neuropil estimate).
``spks.npy``   ROIs × frames float32: deconvolved spikes S.
``iscell.npy`` ROIs × 2 float32: [accepted 0/1, probability] (probability: a logistic of the SNR margin).
``ops.npy``    a dict (pickled 0-d object array, as Suite2p): ``Ly``, ``Lx``, ``fs``, ``nframes``,
               ``meanImg``, ``meanImgE`` (here the local correlation image's contrast-normalized mean),
               ``max_proj``, ``Vcorr`` (correlation image), ``yrange``, ``xrange``, ``xoff``, ``yoff``
               (rigid shifts, Suite2p's sign: the shift applied), ``corrXY``, ``nchannels``, ``nplanes``,
               ``tau``, ``save_path``, ``data_path``.

Our own files: ``footprints.npz`` (``scipy.sparse.save_npz`` of A, pixels × components, pixel index
``y * width + x``) and ``traces.npz`` (``C`` calcium, ``S`` spikes, ``F`` raw demixed fluorescence
(background removed), ``Fneu``, ``b`` background images (pixels × P, dense), ``f`` their activities,
``accepted``, ``centers``, ``snr``, ``r_value``, ``size``, ``image_shape``, ``fps``). Every file is
written atomically (temp file + rename), so a crash never leaves half a file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from scipy import sparse

from engine.storage import atomic_write_bytes

SUITE2P_FILES = ("stat.npy", "F.npy", "Fneu.npy", "spks.npy", "iscell.npy", "ops.npy")


def _save_npy(path: Path, array, allow_pickle: bool = False) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    atomic_write_bytes(path, buffer.getvalue())


def _stat(result, neuropil_corrected: np.ndarray) -> np.ndarray:
    from scipy.stats import skew

    h, w = result.image_shape
    A = result.A.tocsc()
    stats = []
    counts = np.zeros(h * w, dtype=np.int32)
    for k in range(A.shape[1]):
        counts[A[:, k].indices] += 1
    for k in range(A.shape[1]):
        col = A[:, k]
        pix, val = col.indices, col.data.astype(np.float32)
        ypix, xpix = np.divmod(pix, w)
        lam = val / max(val.sum(), 1e-12)
        med = [int(np.median(ypix)), int(np.median(xpix))] if len(pix) else [0, 0]
        if len(pix) > 2:
            cov = np.cov(np.stack([ypix, xpix]), aweights=np.maximum(lam, 1e-12))
            ev = np.sort(np.linalg.eigvalsh(cov))[::-1]
            radius = float(2 * np.sqrt(max(ev.mean(), 0)))
            aspect = float(np.sqrt(ev[0] / max(ev[1], 1e-12)))
            dist = np.hypot(ypix - med[0], xpix - med[1])
            compact = float(np.mean(dist) / max(np.mean(np.sort(np.hypot(*np.mgrid[-20:21, -20:21]).ravel())[: len(pix)]), 1e-12))
        else:
            radius, aspect, compact = 1.0, 1.0, 1.0
        trace = neuropil_corrected[k]
        stats.append({
            "ypix": ypix.astype(np.int32), "xpix": xpix.astype(np.int32), "lam": lam.astype(np.float32),
            "med": med, "npix": int(len(pix)), "npix_soma": int(len(pix)), "soma_crop": np.ones(len(pix), bool),
            "radius": radius, "aspect_ratio": aspect, "compact": compact, "footprint": 1,
            "overlap": counts[pix] > 1, "skew": float(skew(trace)) if trace.std() > 0 else 0.0,
            "std": float(trace.std()), "iplane": 0,
        })  # fmt: skip
    mean_npix = np.mean([s["npix"] for s in stats]) if stats else 1.0
    for s in stats:
        s["npix_norm"] = s["npix"] / max(mean_npix, 1e-12)
    out = np.empty(len(stats), dtype=object)
    out[:] = stats
    return out


def export_suite2p(result, directory: str | os.PathLike, data_path: str | None = None) -> Path:
    """Write the Suite2p files, ``footprints.npz`` and ``traces.npz`` into ``directory``; returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    h, w = result.image_shape
    F_total = (result.F + result.Fneu).astype(np.float32)
    corrected = F_total - 0.7 * result.Fneu
    _save_npy(directory / "stat.npy", _stat(result, corrected), allow_pickle=True)
    _save_npy(directory / "F.npy", F_total)
    _save_npy(directory / "Fneu.npy", result.Fneu.astype(np.float32))
    _save_npy(directory / "spks.npy", result.S.astype(np.float32))
    margin = result.metrics["snr"] - result.params.get("min_snr", 3.0)
    probability = 1.0 / (1.0 + np.exp(-np.clip(margin, -50, 50)))
    probability = np.where(result.accepted, np.maximum(probability, 0.5), np.minimum(probability, 0.49))
    _save_npy(directory / "iscell.npy", np.stack([result.accepted.astype(np.float32), probability.astype(np.float32)], axis=1))
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
        "save_path": str(directory), "data_path": [str(data_path)] if data_path else [], "diameter": result.params.get("neuron_diameter"),
        "neurowb": {"params": result.params, "info": {k: v for k, v in result.info.items() if isinstance(v, (int, float, str, bool, dict))}},
    }  # fmt: skip
    _save_npy(directory / "ops.npy", np.array(ops, dtype=object), allow_pickle=True)
    buffer = io.BytesIO()
    sparse.save_npz(buffer, result.A.tocsc().astype(np.float32))
    atomic_write_bytes(directory / "footprints.npz", buffer.getvalue())
    buffer = io.BytesIO()
    np.savez(buffer, C=result.C, S=result.S, F=result.F, Fneu=result.Fneu, b=result.b.toarray().astype(np.float32), f=result.f,
             accepted=result.accepted, centers=result.centers, snr=result.metrics["snr"], r_value=result.metrics["r_value"],
             size=result.metrics["size"], image_shape=np.array(result.image_shape), fps=np.float64(result.fps))  # fmt: skip
    atomic_write_bytes(directory / "traces.npz", buffer.getvalue())
    return directory


def _enhanced(image: np.ndarray) -> np.ndarray:
    """Suite2p's 'enhanced' mean image: high-passed and contrast-normalized (locally)."""
    from scipy.ndimage import gaussian_filter

    image = image.astype(np.float64)
    high = image - gaussian_filter(image, 10)
    local = np.sqrt(gaussian_filter(high**2, 10)) + 1e-6
    out = high / local
    lo, hi = np.percentile(out, [1, 99])
    return np.clip((out - lo) / max(hi - lo, 1e-12), 0, 1).astype(np.float32)
