"""The paper's greedy coverage–leakage selection of NMF factors against labelled regions.

For factor i and region (ROI) a with pixel set A, over the positions where coefficients exist:

- coverage  s_c(i, a) = #{ positions in A with coefficient of i > 0 }
- leakage   s_ℓ(i, a) = λ · #{ positions outside A (other regions *and* unlabelled) with coefficient of i > 0 }
- score     s_t(i, a) = s_c − s_ℓ

Selection: repeatedly take the (factor, region) pair with the highest score among factors and
regions not taken yet, until p pairs (at most min(k, r)). λ (default 0.5) trades a factor's
reach inside its region against its spread elsewhere: a larger λ favours localized factors, a
smaller one broadly expressed ones. Ties go to the lower factor index, then the lower region
label, so results are reproducible.

"Positive" means > ``threshold`` (default 0, as in the paper). HALS produces exact zeros, so
0 is meaningful; a small threshold ignores numerical dust.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import InputError

DEFAULT_LAMBDA = 0.5


@dataclass
class Selection:
    """Scores (k, r) and the chosen pairs, in the order they were taken.

    ``roi_labels[a]`` is the label value of column a. ``pairs``: (factor index, region label,
    score). ``coverage`` and ``outside`` are the raw counts (leakage = λ · outside), so a GUI
    can recompute ``scores`` for another λ without touching the codes (:meth:`rescore`).
    """

    scores: np.ndarray
    coverage: np.ndarray
    outside: np.ndarray
    roi_labels: list[int]
    pairs: list[tuple[int, int, float]]
    lam: float

    @property
    def factors(self) -> list[int]:
        return [f for f, _, _ in self.pairs]

    def rescore(self, lam: float | None = None, p: int | None = None) -> "Selection":
        """The same counts with another λ and/or p (instant: no pass over the codes)."""
        lam = self.lam if lam is None else float(lam)
        p = len(self.pairs) if p is None else p
        scores = self.coverage - lam * self.outside
        return Selection(scores, self.coverage, self.outside, self.roi_labels,
                         greedy_pairs(scores, self.roi_labels, p), lam)


def coverage_counts(codes: np.ndarray, labels: np.ndarray, valid: np.ndarray | None = None,
                    threshold: float = 0.0, chunk: int = 1_000_000) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(coverage (k, r), outside (k, r), region labels) counted over ``valid`` positions.

    ``codes`` (rows, cols, k) or (n, k); ``labels`` (rows, cols) or (n,) on the same grid, 0 =
    unlabelled. Counted in chunks, so a 5.5M × 15 code matrix needs no large temporaries.
    """
    codes = np.asarray(codes)
    labels = np.asarray(labels)
    if codes.ndim == 3:
        codes = codes.reshape(-1, codes.shape[-1])
    if codes.ndim != 2:
        raise InputError(f"Factor codes must be (positions × factors) or (rows, cols, factors); got shape {codes.shape}.")
    labels = labels.reshape(-1)
    if labels.shape[0] != codes.shape[0]:
        raise InputError(f"The label map has {labels.shape[0]} positions but the codes have {codes.shape[0]}: take the "
                         "labels on the latent grid (engine.factors.dense.grid_centers) before selecting.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"Labels must be integers (0 = unlabelled); got {labels.dtype}.")
    if valid is not None:
        valid = np.asarray(valid, dtype=bool).reshape(-1)
        if valid.shape[0] != codes.shape[0]:
            raise InputError(f"The validity mask has {valid.shape[0]} positions, the codes {codes.shape[0]}.")
    roi_labels = [int(v) for v in np.unique(labels) if v > 0]
    if not roi_labels:
        raise InputError("No labelled region (all labels are 0): draw or load at least one region to select factors for.")
    k, r = codes.shape[1], len(roi_labels)
    lookup = np.full(int(labels.max()) + 1, -1, dtype=np.int64)
    lookup[roi_labels] = np.arange(r)
    coverage = np.zeros((k, r), dtype=np.int64)
    positive_total = np.zeros(k, dtype=np.int64)
    for s in range(0, codes.shape[0], chunk):
        pos = np.asarray(codes[s:s + chunk]) > threshold
        lab = lookup[labels[s:s + chunk]]
        if valid is not None:
            keep = valid[s:s + chunk]
            pos, lab = pos[keep], lab[keep]
        positive_total += pos.sum(0)
        for a in range(r):
            coverage[:, a] += pos[lab == a].sum(0)
    outside = positive_total[:, None] - coverage
    return coverage, outside, roi_labels


def greedy_pairs(scores: np.ndarray, roi_labels: list[int], p: int) -> list[tuple[int, int, float]]:
    """Take the best (factor, region) pair among unused factors and regions, ``p`` times."""
    k, r = scores.shape
    if p < 1 or p > min(k, r):
        raise InputError(f"Can select between 1 and min(factors, regions) = {min(k, r)} factors ({k} factors, {r} regions), "
                         f"since each pick uses up one factor and one region; got p = {p}.")
    work = scores.astype(np.float64).copy()
    pairs = []
    for _ in range(p):
        flat = int(np.argmax(work))  # first maximum in row-major order: lowest factor, then region
        i, a = divmod(flat, r)
        pairs.append((i, roi_labels[a], float(scores[i, a])))
        work[i, :] = -np.inf
        work[:, a] = -np.inf
    return pairs


def select_factors(codes: np.ndarray, labels: np.ndarray, p: int | None = None, lam: float = DEFAULT_LAMBDA,
                   valid: np.ndarray | None = None, threshold: float = 0.0) -> Selection:
    """Score every (factor, region) pair and pick ``p`` pairs greedily (default: one per region).

    ``codes`` (rows, cols, k) or (n, k) NMF coefficients; ``labels`` the region map on the same
    grid (0 = unlabelled, counted as outside every region); ``valid`` optional positions to use.
    """
    if not np.isfinite(lam) or lam < 0:
        raise InputError(f"λ must be a finite number ≥ 0 (0.5 in the paper); got {lam}.")
    coverage, outside, roi_labels = coverage_counts(codes, labels, valid, threshold)
    if p is None:
        p = min(coverage.shape)
    scores = coverage - lam * outside
    return Selection(scores, coverage, outside, roi_labels, greedy_pairs(scores, roi_labels, p), float(lam))
