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
