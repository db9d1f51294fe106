"""Gaussian-mixture clusters of NMF factor codes inside one region (the paper's within-cortex motifs).

The region mask is eroded by half a patch first: a latent belongs to a whole patch, so a
position closer than P/2 to the region's edge also describes tissue outside it and would make
clusters of "border" rather than of structure. Codes are z-scored per factor inside the
region before fitting (a full-covariance mixture is unaffected by scaling except for its
small covariance regularization, which this makes relative to each factor's spread).

The number of clusters is chosen by the caller or by the lowest BIC over candidates; BIC is
returned for every fitted number so a GUI can show the curve. Clusters are numbered by size
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
                max_samples: int = MAX_FIT_SAMPLES, seed: int = 0, progress: Progress | None = None) -> Clustering:
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

    X = codes[mask].astype(np.float64)
    mean, std = X.mean(0), X.std(0)
    std[std == 0] = 1.0  # factors silent in this region carry no information; keep them at 0
    Z = (X - mean) / std
    rng = np.random.default_rng(seed)
    fit = Z if len(Z) <= max_samples else Z[rng.choice(len(Z), max_samples, replace=False)]

    bic: dict[int, float] = {}
    best = None
    for n in progress.iterate(candidates, message="Fitting mixtures"):
        gmm = GaussianMixture(n, covariance_type=covariance_type, random_state=seed, n_init=2, reg_covar=1e-4)
        gmm.fit(fit)
        bic[n] = float(gmm.bic(fit))
        if best is None or bic[n] < bic[best[0]]:
            best = (n, gmm)
    n_best, gmm = best
    raw = gmm.predict(Z)
    sizes = np.bincount(raw, minlength=n_best)
    order = np.argsort(-sizes, kind="stable")  # relabel: 0 = largest cluster
    rank = np.empty(n_best, dtype=np.int64)
    rank[order] = np.arange(n_best)
    assigned = rank[raw]
    cluster_map = np.full(labels.shape, -1, dtype=np.int32)
    cluster_map[mask] = assigned
    means = gmm.means_[order] * std + mean

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
