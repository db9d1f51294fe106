"""Gaussian-mixture clusters of factor codes inside one region: recovery, BIC, erosion, composition."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputError
from engine.factors.clusters import cluster_roi, eroded_mask


@pytest.fixture(scope="module")
def striped_region():
    """A 60×90 map: region 1 is rows 5..54, cols 5..84, split into 3 vertical bands (layers 1..3)
    whose 4-factor codes have well separated means; region 2 (the rest) has other codes."""
    rng = np.random.default_rng(0)
    rows, cols, k = 60, 90, 4
    labels = np.full((rows, cols), 2, dtype=np.int32)
    labels[5:55, 5:85] = 1
    layers = np.zeros((rows, cols), dtype=np.int32)
    layers[:, :35], layers[:, 35:60], layers[:, 60:] = 1, 2, 3
    means = {1: [3.0, 0.2, 0.2, 1.0], 2: [0.2, 3.0, 0.2, 1.0], 3: [0.2, 0.2, 3.0, 1.0]}
    codes = np.abs(rng.normal(0.5, 0.3, (rows, cols, k)))
    for layer, mean in means.items():
        sel = (labels == 1) & (layers == layer)
        codes[sel] = np.abs(np.asarray(mean) + 0.15 * rng.standard_normal((sel.sum(), k)))
    return codes, labels, layers


def test_recovers_separated_blobs_and_reports_composition(striped_region):
    codes, labels, layers = striped_region
    res = cluster_roi(codes, labels, roi=1, n_clusters=3, patch_size=8, composition_labels=layers)
    assert res.n_clusters == 3 and set(np.unique(res.cluster_map)) == {-1, 0, 1, 2}
    assert res.composition.shape == (3, 3) and res.region_labels == [1, 2, 3]
    # each cluster lies in one band (> 99 %), and the three clusters take different bands
    dominant = res.fractions.argmax(1)
    assert sorted(dominant) == [0, 1, 2]
    assert res.fractions.max(1).min() > 0.99
    # clusters numbered by size: band 1 (widest) is cluster 0
    assert list(res.sizes) == sorted(res.sizes, reverse=True)
    assert res.region_labels[dominant[0]] == 1
    assert res.means.shape == (3, 4)


def test_bic_picks_the_true_number_of_clusters(striped_region):
    codes, labels, _ = striped_region
    res = cluster_roi(codes, labels, roi=1, n_clusters=[1, 2, 3, 4, 5], patch_size=8)
    assert set(res.bic) == {1, 2, 3, 4, 5}
    assert res.n_clusters == 3 == min(res.bic, key=res.bic.get)


def test_mask_is_eroded_by_half_a_patch(striped_region):
    codes, labels, _ = striped_region
    res = cluster_roi(codes, labels, roi=1, n_clusters=2, patch_size=8, stride=1)  # radius 4 px
    inside = res.cluster_map >= 0
    rows, cols = np.nonzero(inside)
    assert rows.min() == 9 and rows.max() == 50 and cols.min() == 9 and cols.max() == 80
    # on a stride-2 grid the same 4 px are 2 grid steps
    m = eroded_mask(labels[::2, ::2], 1, 2)
    r2, c2 = np.nonzero(m)
    assert r2.min() == 5 and c2.min() == 5


def test_bad_inputs(striped_region):
    codes, labels, _ = striped_region
    with pytest.raises(InputError, match="regions present: \\[1, 2\\]"):
        cluster_roi(codes, labels, roi=7)
    with pytest.raises(InputError, match="same grid"):
        cluster_roi(codes, labels[:10], roi=1)
    with pytest.raises(InputError, match="too few"):
        cluster_roi(codes, labels, roi=1, n_clusters=3, patch_size=120)
    with pytest.raises(InputError, match="≥ 1"):
        cluster_roi(codes, labels, roi=1, n_clusters=0)


def rectified_codes(seed):
    """Codes as NMF gives them: region 1 holds two layers told apart by factors 0 and 1; factors 2-5 are
    nearly silent there (exactly 0 at ~95 % of its positions, tiny elsewhere) but strong in region 2."""
    rng = np.random.default_rng(seed)
    rows, cols, k = 40, 120, 6
    labels = np.full((rows, cols), 2, dtype=np.int32)
    labels[:, :80] = 1
    layers = np.zeros((rows, cols), dtype=np.int32)
    layers[:, :40], layers[:, 40:80] = 1, 2
    codes = np.maximum(rng.normal(1.0, 0.5, (rows, cols, k)), 0)  # region 2: every factor active
    inside = labels == 1
    n, layer = int(inside.sum()), layers[inside]
    z = np.zeros((n, k))
    z[:, 0] = np.where(layer == 1, 1.0, 0.4) + 0.1 * rng.standard_normal(n)
    z[:, 1] = np.where(layer == 2, 1.0, 0.4) + 0.1 * rng.standard_normal(n)
    z[:, 2:] = np.where(rng.random((n, k - 2)) < 0.05, 0.05 * rng.random((n, k - 2)), 0.0)
    codes[inside] = np.maximum(z, 0)
    return codes, labels, layers


@pytest.mark.parametrize("seed", [0, 4])
def test_bic_is_not_fooled_by_exact_zeros_of_nearly_silent_factors(seed):
    # Z-scored inside the region, the rare tiny codes of factors 2-5 became outliers and the zero
    # patterns extra clusters: BIC chose 4-5 clusters (ARI 0.0-0.67 against the layers).
    from sklearn.metrics import adjusted_rand_score

    codes, labels, layers = rectified_codes(seed)
    res = cluster_roi(codes, labels, roi=1, n_clusters=[1, 2, 3, 4, 5], patch_size=2)
    inside = res.mask
    assert res.n_clusters == 2, res.bic
    assert adjusted_rand_score(layers[inside], res.cluster_map[inside]) > 0.99


def test_clusters_smaller_than_the_dimensions_are_not_chosen():
    # three positions far out in factor 3 inside one homogeneous region: a component can sit on them,
    # but a 3-position cluster in 4 dimensions has no covariance of its own
    rng = np.random.default_rng(1)
    codes = np.abs(rng.normal(1.0, 0.1, (30, 30, 4)))
    labels = np.ones((30, 30), dtype=np.int32)
    codes[10, 10:13, 3] = 50.0
    res = cluster_roi(codes, labels, roi=1, n_clusters=[1, 2, 3], patch_size=1)
    assert res.sizes.min() > 4, (res.sizes, res.bic)
