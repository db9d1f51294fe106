"""Compare a sorting with ground truth (simulations), with SpikeInterface's definitions.

A ground-truth spike and a sorted spike *match* when within ``tolerance`` samples (0.4 ms
by default, as SpikeInterface's ``delta_time``), one to one. For a pair of units,
agreement = matches / (n_gt + n_sorted − matches). Units are paired by the Hungarian algorithm
on the agreement matrix; for a ground-truth unit, with tp = matches with its partner,
fn = n_gt − tp, fp = n_sorted − tp:

    accuracy = tp / (tp + fn + fp),  recall = tp / (tp + fn),  precision = tp / (tp + fp)

"Well detected" = accuracy ≥ 0.8. A sorted unit is a *false positive* unit when its best
agreement with any ground-truth unit is below 0.2, *redundant* when it is above but the unit is
not the Hungarian partner (SpikeInterface's default ``redundant_score`` 0.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def count_matches(a: np.ndarray, b: np.ndarray, tolerance: int) -> int:
    """One-to-one matches between two sorted spike trains within ±tolerance (greedy in time)."""
    i = j = n = 0
    a = np.asarray(a)
    b = np.asarray(b)
    # candidates via searchsorted keep this fast; the greedy pass is over close pairs only
    if len(a) == 0 or len(b) == 0:
        return 0
    while i < len(a) and j < len(b):
        diff = a[i] - b[j]
        if abs(diff) <= tolerance:
            n += 1
            i += 1
            j += 1
        elif diff < 0:
            i += 1
        else:
            j += 1
    return n


def _quick_overlap(a: np.ndarray, b: np.ndarray, tolerance: int) -> int:
    """Upper bound on matches (spikes of a with any b within tolerance): skips hopeless pairs."""
    if len(a) == 0 or len(b) == 0:
        return 0
    idx = np.searchsorted(b, a)
    left = np.abs(a - b[np.clip(idx - 1, 0, len(b) - 1)]) <= tolerance
    right = np.abs(b[np.clip(idx, 0, len(b) - 1)] - a) <= tolerance
    return int((left | right).sum())


@dataclass
class Comparison:
    accuracy: np.ndarray  # per ground-truth unit
    recall: np.ndarray
    precision: np.ndarray
    partner: np.ndarray  # sorted unit paired with each ground-truth unit (-1: none)
    agreement: np.ndarray  # (n_gt, n_sorted)
    n_false_positive_units: int
    n_redundant_units: int

    def well_detected(self, threshold: float = 0.8) -> int:
        return int((self.accuracy >= threshold).sum())

    def summary(self) -> dict:
        return {
            "well_detected": self.well_detected(),
            "n_gt_units": len(self.accuracy),
            "n_sorted_units": self.agreement.shape[1],
            "mean_accuracy": float(self.accuracy.mean()) if len(self.accuracy) else float("nan"),
            "false_positive_units": self.n_false_positive_units,
            "redundant_units": self.n_redundant_units,
        }


def compare(gt_times, gt_units, times, units, sample_rate: float, tolerance_ms: float = 0.4) -> Comparison:
    from scipy.optimize import linear_sum_assignment

    tol = int(round(tolerance_ms * 1e-3 * sample_rate))
    gt_times, gt_units, times, units = (np.asarray(v).astype(np.int64) for v in (gt_times, gt_units, times, units))
    gt_ids = np.unique(gt_units)
    s_ids = np.unique(units)
    gt_trains = [np.sort(gt_times[gt_units == g]) for g in gt_ids]
    s_trains = [np.sort(times[units == s]) for s in s_ids]
    matches = np.zeros((len(gt_ids), len(s_ids)), np.int64)
    for i, g in enumerate(gt_trains):
        for j, s in enumerate(s_trains):
            if _quick_overlap(g, s, tol) > 0.05 * min(len(g), len(s)):
                matches[i, j] = count_matches(g, s, tol)
    n_gt = np.array([len(g) for g in gt_trains])[:, None]
    n_s = np.array([len(s) for s in s_trains])[None, :]
    agreement = matches / np.maximum(n_gt + n_s - matches, 1)
    partner = np.full(len(gt_ids), -1)
    accuracy = np.zeros(len(gt_ids))
    recall = np.zeros(len(gt_ids))
    precision = np.zeros(len(gt_ids))
    if len(s_ids):
        rows, cols = linear_sum_assignment(-agreement)
        for r, c in zip(rows, cols):
            if agreement[r, c] > 0:
                partner[r] = c
                tp = matches[r, c]
                accuracy[r] = agreement[r, c]
                recall[r] = tp / n_gt[r, 0]
                precision[r] = tp / n_s[0, c]
    best = agreement.max(axis=0) if len(gt_ids) else np.zeros(len(s_ids))
    paired = np.zeros(len(s_ids), bool)
    paired[partner[partner >= 0]] = True
    n_fp = int((best < 0.2).sum())
    n_red = int(((best >= 0.2) & ~paired).sum())
    return Comparison(accuracy, recall, precision, partner, agreement, n_fp, n_red)
