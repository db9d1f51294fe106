"""Procedural texture mosaic with an exact region map (demo data and tests).

What it simulates
-----------------
A square image tiled into ``n_cells`` Voronoi cells (random seed points, nearest-seed
regions), each filled with one of three textures standing in for tissue types that differ
in fine structure, not in brightness:

=====  ===========  ================================================================
label  name         texture
=====  ===========  ================================================================
1      stripes      oriented grating (period ~9 px, 30°) with jittered phase and noise
2      blobs        sparse bright and dark round blobs (radius ~3–5 px) on noise
3      fine noise   nearly white noise (Gaussian-smoothed, σ 0.7 px)
=====  ===========  ================================================================

Every texture is z-scored over the pixels where it appears (mean 0, s.d. 1) before mapping
to ``128 + 40 z`` (clipped to 0–255), so mean brightness and contrast carry no cue: only the
texture does. Cells are assigned textures in turn (cell k → label ``1 + order[k] % 3`` in a
random order), so all three appear whenever ``n_cells >= 3``.

Ground truth
------------
``labels`` uint8, same shape as the image, values 1..3 as in the table (0 never occurs).

:func:`latent_matrix` makes a non-negative matrix shaped like dense CNN latents, for NMF
tests and benchmarks (documented there).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

MOSAIC_CLASSES = {1: "stripes", 2: "blobs", 3: "fine noise"}


def _zscore(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / (values.std() + 1e-12)


def _textures(size: int, rng: np.random.Generator) -> list[np.ndarray]:
    from scipy.ndimage import gaussian_filter

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    theta = np.deg2rad(30.0)
    phase_jitter = gaussian_filter(rng.standard_normal((size, size)), 6.0) * 8.0
    stripes = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / 9.0 + phase_jitter)
    stripes += 0.35 * rng.standard_normal((size, size))

    blobs = np.zeros((size, size))
    n_blobs = int(size * size / 180)
    ys, xs = rng.integers(0, size, n_blobs), rng.integers(0, size, n_blobs)
    blobs[ys, xs] = rng.choice([-1.0, 1.0], n_blobs, p=[0.3, 0.7]) * rng.uniform(0.6, 1.4, n_blobs)
    blobs = gaussian_filter(blobs, 2.2) * 30.0 + 0.15 * rng.standard_normal((size, size))

    fine = gaussian_filter(rng.standard_normal((size, size)), 0.7)
    return [stripes, blobs, fine]


def demo_mosaic(size: int = 512, n_cells: int = 9, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A ``size``×``size`` uint8 texture mosaic and its uint8 labels (1 stripes, 2 blobs, 3 fine noise)."""
    if size < 32 or n_cells < 1:
        raise ValueError("demo_mosaic needs size >= 32 and n_cells >= 1")
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0, size, (n_cells, 2))
    yy, xx = np.mgrid[0:size, 0:size]
    _, cell = cKDTree(seeds).query(np.stack([yy.ravel(), xx.ravel()], axis=1))
    cell = cell.reshape(size, size)
    order = rng.permutation(n_cells)
    cell_label = (1 + order % 3).astype(np.uint8)
    labels = cell_label[cell]

    image = np.zeros((size, size), dtype=np.float64)
    for k, texture in enumerate(_textures(size, rng), start=1):
        mask = labels == k
        if mask.any():
            image[mask] = _zscore(texture[mask])
    image = np.clip(np.rint(128.0 + 40.0 * image), 0, 255).astype(np.uint8)
    return image, labels


def write_demo_mosaic(path: str | os.PathLike, **kwargs) -> Path:
    """Write the mosaic as PNG and ``<stem>_labels.npz`` (``labels``, ``classes``) beside it.

    ``classes[k - 1]`` names label ``k``. Keyword arguments go to :func:`demo_mosaic`.
    Returns the PNG path.
    """
    from PIL import Image

    from engine.storage import atomic_write_bytes

    path = Path(path)
    image, labels = demo_mosaic(**kwargs)
    png = io.BytesIO()
    Image.fromarray(image).save(png, format="PNG")
    atomic_write_bytes(path, png.getvalue())
    npz = io.BytesIO()
    np.savez_compressed(npz, labels=labels, classes=np.array([MOSAIC_CLASSES[k] for k in sorted(MOSAIC_CLASSES)]))
    atomic_write_bytes(path.with_name(f"{path.stem}_labels.npz"), npz.getvalue())
    return path


def latent_matrix(n: int, d: int = 64, rank: int = 20, n_regions: int = 6, noise: float = 0.1, dead: int = 4,
                  seed: int = 0, chunk: int = 1_000_000) -> np.ndarray:
    """A non-negative (n, d) float32 matrix shaped like dense ReLU latents, for NMF tests and benchmarks.

    What it simulates: ``rank`` hidden motifs (rows of a sparse gamma-distributed k×d basis,
    each driving ~30 % of the features) mixed per row with region-specific weights (each row
    belongs to one of ``n_regions`` regions, with its own mean motif profile, times gamma
    noise, about half the motif weights exactly zero), plus Gaussian noise of s.d. ``noise``
    × the mean signal, then a ReLU, and ``dead`` features that are always 0 (units that never
    fire). Because ``rank`` (20) exceeds the usual k (15), the best rank-k fit leaves a
    structured residual, so how far a solver converges shows in the error.
    Generated in chunks of ``chunk`` rows (memory: the output plus one chunk).
    """
    rng = np.random.default_rng(seed)
    basis = rng.gamma(1.0, 1.0, (rank, d)) * (rng.random((rank, d)) < 0.3)
    basis[:, d - dead:] = 0.0
    profiles = rng.gamma(0.6, 1.0, (n_regions, rank))
    scale = float((profiles.mean(0) @ basis).mean())
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        region = rng.integers(0, n_regions, m)
        w = profiles[region] * rng.gamma(2.0, 0.5, (m, rank)) * (rng.random((m, rank)) < 0.5)
        x = (w @ basis).astype(np.float32)
        x += rng.standard_normal((m, d), dtype=np.float32) * np.float32(noise * scale)
        np.maximum(x, 0.0, out=x)
        x[:, d - dead:] = 0.0
        out[s:s + m] = x
    return out
