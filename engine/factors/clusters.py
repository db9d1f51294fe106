"""Gaussian-mixture clusters of NMF factor codes inside one region (the paper's within-cortex motifs).

The region mask is eroded by half a patch first: a latent belongs to a whole patch, so a
position closer than P/2 to the region's edge also describes tissue outside it and would make
clusters of "border" rather than of structure.

NMF codes are rectified: many are exactly 0, and a factor that is nearly silent inside the
region is 0 at most positions and tiny at a few. Z-scoring the codes inside the region (as
first done here) blew those few positions up into far outliers, and a full-covariance
mixture could collapse a component onto a set of exact zeros (its variance falls to
``reg_covar``) for an unbounded likelihood gain: BIC kept falling with n and chose clusters
of 1–3 positions, defined by which near-silent factors were exactly 0. So the codes are
scaled by each factor's spread over the whole map (a factor rare in the region stays small),
factors constant in the region are left out, and every covariance gets a floor of
``reg_covar`` = 1 % of the factor's whole-map variance (differences under a tenth of a
factor's spread are not structure). Measured on the 256-px demo mosaic (codes of a short
training, k = 6, 8, 15, stride 4, BIC over 1–6 clusters): in the core of the stripes or the
blobs texture (truth: 1 cluster) the old scaling chose 2–6 clusters, the smallest of 6–28
positions, this one 1 (once 2: 40 + 29); in the cores of stripes and blobs together it chose
3–5 (adjusted Rand index 0.45–0.62), this one 2 (ARI 1.00). Over the whole mosaic BIC still
prefers the most clusters offered: positions whose patch straddles two textures form
continuous mixtures, not Gaussian blobs.

The number of clusters is chosen by the caller or by the lowest BIC over candidates, among
the fits whose every cluster has more positions than the dimensions (a smaller one has a
singular covariance: it is the regularization, not data); BIC is returned for every fitted
number so a GUI can show the curve. Clusters are numbered by size
(0 = largest). The composition table counts, per cluster, the positions in each region of a
second label map (e.g. layers or the other ROIs), as in the paper's layer analysis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from engine.errors import InputError
from engine.progress import Progress, as_progress

#: Positions used to fit the mixture (a uniform random subset when the region has more).
MAX_FIT_SAMPLES = 200_000
#: Covariance floor, as a fraction of each factor's variance over the whole map (see the module docstring).
REG_COVAR = 1e-2
#: Positions used to measure each factor's whole-map spread.
SCALE_SAMPLES = 1_000_000


@dataclass
class Clustering:
    """``cluster_map`` (grid shape) holds 0..n-1 inside the eroded region and −1 elsewhere.

    ``bic`` maps each fitted number of clusters to its BIC (lower is better).
    ``composition[c, j]``: positions of cluster c in region ``region_labels[j]`` of the
    composition map (``fractions`` normalizes each cluster's row to 1).
    """

    cluster_map: np.ndarray
    n_clusters: int
    bic: dict[int, float]
    mask: np.ndarray
    means: np.ndarray
    sizes: np.ndarray
    composition: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    region_labels: list[int] = field(default_factory=list)
    model: object = None

    @property
    def fractions(self) -> np.ndarray:
        totals = self.composition.sum(1, keepdims=True)
        return np.divide(self.composition, totals, out=np.zeros(self.composition.shape), where=totals > 0)


def eroded_mask(labels: np.ndarray, roi: int, radius: int) -> np.ndarray:
    """Positions of region ``roi`` at least ``radius`` grid steps (Chebyshev) from any other position."""
    from scipy.ndimage import minimum_filter

    mask = np.asarray(labels) == roi
    if radius <= 0:
        return mask
    # mode='nearest': the image border is not a region border (patches there are mirrored)
    return minimum_filter(mask.astype(np.uint8), size=2 * radius + 1, mode="nearest").astype(bool)


def cluster_roi(codes: np.ndarray, labels: np.ndarray, roi: int, n_clusters: int | Sequence[int] | None = 4, *,
                patch_size: int = 128, stride: int = 1, erode_px: int | None = None,
                composition_labels: np.ndarray | None = None, covariance_type: str = "full",
                reg_covar: float = REG_COVAR, max_samples: int = MAX_FIT_SAMPLES, seed: int = 0,
                progress: Progress | None = None) -> Clustering:
    """Cluster the codes (rows, cols, k) inside region ``roi`` of ``labels`` (rows, cols) on the same grid.

    ``n_clusters``: a number, or candidates (e.g. ``range(2, 9)``; None means 2..8) from
    which the lowest BIC wins. ``stride``: pixels between grid positions (to turn the
    erosion of ``erode_px`` pixels, default half a patch, into grid steps).
    """
    from sklearn.mixture import GaussianMixture

    progress = as_progress(progress)
    codes = np.asarray(codes)
    labels = np.asarray(labels)
    if codes.ndim != 3 or labels.shape != codes.shape[:2]:
        raise InputError(f"Codes must be a (rows, cols, factors) map and labels a (rows, cols) map on the same grid; got "
                         f"{codes.shape} and {labels.shape}.")
    if not np.any(labels == roi):
        present = [int(v) for v in np.unique(labels) if v > 0]
        raise InputError(f"Region {roi} does not occur in the label map (regions present: {present or 'none'}): pick one "
                         "of those.")
    candidates = list(range(2, 9)) if n_clusters is None else (
        [int(n_clusters)] if np.isscalar(n_clusters) else [int(c) for c in n_clusters])
    if not candidates or min(candidates) < 1:
        raise InputError(f"The number of clusters must be ≥ 1; got {n_clusters}.")
    erode_px = patch_size // 2 if erode_px is None else int(erode_px)
    radius = math.ceil(erode_px / max(1, int(stride)))
    mask = eroded_mask(labels, roi, radius)
    n_inside = int(mask.sum())
    if n_inside < 2 * max(candidates):
        raise InputError(
            f"Only {n_inside} positions of region {roi} remain after removing a {erode_px}-px border (half a patch), too "
            f"few for {max(candidates)} clusters: draw a larger region, lower the number of clusters, or use a finer stride.")

    flat = codes.reshape(-1, codes.shape[-1])
    scale = flat[::max(1, len(flat) // SCALE_SAMPLES)].std(0, dtype=np.float64)
    X = codes[mask].astype(np.float64)
    mean = X.mean(0)
    varying = X.std(0) > 0  # factors constant in this region carry no information
    if not varying.any():
        varying[:] = True
    scale[scale == 0] = 1.0
    Z = (X[:, varying] - mean[varying]) / scale[varying]
    rng = np.random.default_rng(seed)
    fit = Z if len(Z) <= max_samples else Z[rng.choice(len(Z), max_samples, replace=False)]

    bic: dict[int, float] = {}
    fits: dict[int, tuple] = {}
    for n in progress.iterate(candidates, message="Fitting mixtures"):
        gmm = GaussianMixture(n, covariance_type=covariance_type, random_state=seed, n_init=2, reg_covar=reg_covar)
        gmm.fit(fit)
        bic[n] = float(gmm.bic(fit))
        fits[n] = gmm
    # a cluster of no more positions than dimensions is a collapsed component, not a cluster
    sound = [n for n in candidates if np.bincount(fits[n].predict(fit), minlength=n).min() > Z.shape[1]]
    n_best = min(sound or [min(candidates)], key=bic.get)
    gmm = fits[n_best]
    raw = gmm.predict(Z)
    sizes = np.bincount(raw, minlength=n_best)
    order = np.argsort(-sizes, kind="stable")  # relabel: 0 = largest cluster
    rank = np.empty(n_best, dtype=np.int64)
    rank[order] = np.arange(n_best)
    assigned = rank[raw]
    cluster_map = np.full(labels.shape, -1, dtype=np.int32)
    cluster_map[mask] = assigned
    means = np.tile(mean, (n_best, 1))
    means[:, varying] = gmm.means_[order] * scale[varying] + mean[varying]

    result = Clustering(cluster_map, n_best, bic, mask, means, sizes[order], model=gmm)
    if composition_labels is not None:
        comp = np.asarray(composition_labels)
        if comp.shape != labels.shape:
            raise InputError(f"The composition map has shape {comp.shape}, the codes grid {labels.shape}: take it on the "
                             "same grid.")
        inside = comp[mask]
        result.region_labels = [int(v) for v in np.unique(inside)]
        column = np.searchsorted(np.asarray(result.region_labels), inside)
        table = np.zeros((n_best, len(result.region_labels)), dtype=np.int64)
        np.add.at(table, (assigned, column), 1)
        result.composition = table
    return result
