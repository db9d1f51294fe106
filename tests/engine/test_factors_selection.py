"""Coverage–leakage factor selection on hand-made cases whose answers are worked out in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputError
from engine.factors.selection import coverage_counts, greedy_pairs, select_factors

# 8 positions: region 1 = 0..2, region 2 = 3..5, unlabelled = 6, 7.
LABELS = np.array([1, 1, 1, 2, 2, 2, 0, 0])
# Which positions each factor is positive at (the values do not matter, only > 0).
POSITIVE = {
    0: [0, 1, 2, 6],           # all of region 1, plus one unlabelled position
    1: [3, 4],                 # two thirds of region 2, nothing else
    2: [0, 3, 4, 5, 6, 7],     # all of region 2, but also region 1 and the unlabelled
}


def codes_from(positive: dict[int, list[int]], n: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    codes = np.zeros((n, len(positive)))
    for f, where in positive.items():
        codes[where, f] = rng.uniform(0.1, 2.0, len(where))
    return codes


def test_counts_include_unlabelled_positions_as_outside():
    coverage, outside, rois = coverage_counts(codes_from(POSITIVE), LABELS)
    assert rois == [1, 2]
    # coverage: f0 has 3 in region 1; f1 2 in region 2; f2 1 in region 1, 3 in region 2
    np.testing.assert_array_equal(coverage, [[3, 0], [0, 2], [1, 3]])
    # outside = positives elsewhere (other region + unlabelled): f0: 4-3=1 / 4-0=4, f1: 2 / 0, f2: 5 / 3
    np.testing.assert_array_equal(outside, [[1, 4], [2, 0], [5, 3]])


def test_greedy_selection_with_default_lambda():
    # λ = 0.5: scores = coverage − 0.5·outside
    #   f0: [3 − 0.5, 0 − 2]   = [2.5, −2]
    #   f1: [0 − 1,   2 − 0]   = [−1,   2]
    #   f2: [1 − 2.5, 3 − 1.5] = [−1.5, 1.5]
    # Best pair (f0, region 1) = 2.5; then among f1, f2 for region 2: f1 (2) beats f2 (1.5).
    sel = select_factors(codes_from(POSITIVE), LABELS, p=2)
    np.testing.assert_allclose(sel.scores, [[2.5, -2.0], [-1.0, 2.0], [-1.5, 1.5]])
    assert sel.pairs == [(0, 1, 2.5), (1, 2, 2.0)]
    assert sel.factors == [0, 1]


def test_small_lambda_prefers_the_broadly_expressed_factor():
    # λ = 0.1: f0/region 1 = 3 − 0.1 = 2.9; f2/region 2 = 3 − 0.3 = 2.7; f1/region 2 = 2.0.
    # (f0, 1) first, then region 2 goes to f2: covering all of it now outweighs its leakage.
    sel = select_factors(codes_from(POSITIVE), LABELS, p=2, lam=0.1)
    assert [(f, a) for f, a, _ in sel.pairs] == [(0, 1), (2, 2)]
    np.testing.assert_allclose([s for _, _, s in sel.pairs], [2.9, 2.7])
    # rescoring the stored counts gives the same answer without the codes
    again = select_factors(codes_from(POSITIVE), LABELS, p=2).rescore(lam=0.1)
    assert again.pairs == sel.pairs


def test_a_used_factor_is_not_taken_again_even_if_best_for_another_region():
    scores = np.array([[9.0, 8.0, 1.0],
                       [2.0, 3.0, 0.0],
                       [1.0, 5.0, 4.0]])
    # 9 = (f0, r10) first; f0 and r10 are gone, so f0's 8 for r20 is not available:
    # best left is (f2, r20) = 5; then only (f1, r30) = 0 remains.
    assert greedy_pairs(scores, [10, 20, 30], 3) == [(0, 10, 9.0), (2, 20, 5.0), (1, 30, 0.0)]


def test_ties_go_to_the_lower_factor_then_the_lower_region():
    scores = np.array([[1.0, 4.0], [4.0, 4.0]])
    # three pairs score 4: (f0, r2) comes first in factor-then-region order; then f1/r1 = 4
    assert greedy_pairs(scores, [1, 2], 2) == [(0, 2, 4.0), (1, 1, 4.0)]


def test_threshold_and_maps_and_valid_mask():
    codes = codes_from(POSITIVE)
    codes[6, 0] = 0.05  # dust below the threshold no longer leaks
    sel = select_factors(codes.reshape(2, 4, 3), LABELS.reshape(2, 4), p=1, threshold=0.06)
    assert sel.outside[0, 0] == 0 and sel.scores[0, 0] == 3.0
    valid = np.ones(8, bool)
    valid[6:] = False  # leave the unlabelled positions out entirely
    sel = select_factors(codes_from(POSITIVE), LABELS, valid=valid)
    # f0 keeps {0,1,2}: 0 outside region 1, 3 outside region 2; f1 {3,4}: 2 / 0; f2 {0,3,4,5}: 3 / 1
    np.testing.assert_array_equal(sel.outside, [[0, 3], [2, 0], [3, 1]])


def test_default_p_is_one_factor_per_region():
    sel = select_factors(codes_from(POSITIVE), LABELS)
    assert len(sel.pairs) == 2 and sorted(a for _, a, _ in sel.pairs) == [1, 2]


def test_bad_inputs_say_what_to_do():
    codes = codes_from(POSITIVE)
    with pytest.raises(InputError, match="min\\(factors, regions\\) = 2"):
        select_factors(codes, LABELS, p=3)
    with pytest.raises(InputError, match="latent grid"):
        select_factors(codes, LABELS[:7])
    with pytest.raises(InputError, match="No labelled region"):
        select_factors(codes, np.zeros(8, int))
    with pytest.raises(InputError, match="λ"):
        select_factors(codes, LABELS, lam=-1)
    with pytest.raises(InputError, match="integers"):
        select_factors(codes, LABELS.astype(float))
