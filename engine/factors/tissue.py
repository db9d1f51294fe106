"""The tissue of a brain image, and the background outside it.

A slice imaged on a dark field (X-ray micro-CT, many histology scans) has a black margin around the
tissue. Left in, NMF spends factors on it: on the thalamocortical X-ray slice 4 of 15 factors lit the
background. :func:`tissue_mask` finds that margin — dark pixels connected to the image border — and
the factorization leaves its latent positions out (their codes are zero), so factors describe tissue
only and the selection's leakage counts tissue only.

Dark structures inside the tissue (ventricles, vessels) do not touch the border and stay tissue; an
image without a dark margin (a texture mosaic, a crop inside the tissue) has no background.
"""

from __future__ import annotations

import numpy as np

WORK_SIDE = 1024  # the mask is found on the image block-averaged to at most this many pixels per side
DARK_FRACTION = 0.1  # background: darker than this fraction of the way from the darkest to the 99th percentile
MIN_BACKGROUND = 0.005  # a dark region touching the border counts as background from this share of the image


def tissue_mask(image: np.ndarray) -> np.ndarray:
    """Boolean mask of ``image``'s shape: True on tissue, False on the dark background connected to the border."""
    from scipy import ndimage

    image = np.asarray(image)
    if image.ndim == 3:  # RGB(A): its brightness
        image = image[..., :3].mean(axis=-1)
    h, w = image.shape
    f = max(1, int(np.ceil(max(h, w) / WORK_SIDE)))
    hh, ww = -(-h // f) * f, -(-w // f) * f
    padded = np.pad(image.astype(np.float32), ((0, hh - h), (0, ww - w)), mode="edge")
    small = padded.reshape(hh // f, f, ww // f, f).mean(axis=(1, 3))
    small = ndimage.gaussian_filter(small, 2.0)
    lo, hi = float(small.min()), float(np.percentile(small, 99))
    if not hi > lo:
        return np.ones((h, w), dtype=bool)
    dark, n = ndimage.label(small <= lo + DARK_FRACTION * (hi - lo))
    border = np.unique(np.concatenate([dark[0], dark[-1], dark[:, 0], dark[:, -1]]))
    sizes = np.bincount(dark.ravel(), minlength=n + 1)
    background_labels = [b for b in border if b > 0 and sizes[b] >= MIN_BACKGROUND * small.size]
    background = np.isin(dark, background_labels)
    if background.any():  # specks of dust on the dark field are background too
        pieces, m = ndimage.label(~background)
        piece_sizes = np.bincount(pieces.ravel(), minlength=m + 1)
        background |= (piece_sizes < MIN_BACKGROUND * small.size)[pieces] & (pieces > 0)
    return ~np.repeat(np.repeat(background, f, axis=0), f, axis=1)[:h, :w]


def masked_nmf(values: np.ndarray, k: int, keep: np.ndarray | None = None, **nmf_options):
    """:func:`engine.factors.nmf.nmf` of a latent map (rows, cols, d) fitted on the positions where ``keep``
    (rows, cols) is True only; the codes W of the others are zero. ``keep`` None: every position."""
    from engine.errors import InputError
    from engine.factors.nmf import nmf

    if keep is None or keep.all():
        return nmf(values, k, **nmf_options)
    keep = np.asarray(keep, dtype=bool).ravel()
    if keep.sum() < k:
        raise InputError(f"Only {int(keep.sum())} latent positions lie on the tissue, fewer than k = {k}: "
                         "turn off the background mask, or use a smaller stride.")
    flat = np.asarray(values).reshape(-1, values.shape[-1])
    result = nmf(flat[keep], k, **nmf_options)
    W = np.zeros((len(flat), k), dtype=np.float32)
    W[keep] = result.W
    result.W = W
    return result
