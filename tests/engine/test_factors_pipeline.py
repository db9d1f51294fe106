"""The whole path on a small synthetic texture mosaic: train → held-out accuracy → dense latents → NMF → selection.

Kept small for speed (256-px mosaic, 64-px patches, 6 × 256 training patches, stride-4 latents);
the architecture is the paper's, only the patch is smaller.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.factors.clusters import cluster_roi, eroded_mask
from engine.factors.cnn import PatchModel, evaluate, train
from engine.factors.dense import dense_latents, grid_centers
from engine.factors.nmf import nmf
from engine.factors.selection import select_factors
from engine.factors.synth import demo_mosaic

PATCH = 64


@pytest.fixture(scope="module")
def trained():
    image, labels = demo_mosaic(size=256, n_cells=9, seed=1)
    result = train(image, labels, patch_size=PATCH, epochs=6, patches_per_epoch=256, batch_size=32, block_size=96,
                   val_patches_per_class=100, pixel_size_um=1.17, class_names={1: "stripes", 2: "blobs", 3: "fine noise"},
                   device="cpu", seed=0)
    return image, labels, result


def test_held_out_blocks_are_classified_far_above_chance(trained):
    _, _, result = trained
    # chance is 1/3; the validation blocks never share a pixel with a training patch. Over
    # training seeds 0-3 this short run reached 0.67-0.90 (held-out blocks hold few cells).
    assert result.val_accuracy >= 0.6, result.history
    assert result.confusion.shape == (3, 3) and result.confusion.sum() == 300
    assert len(result.history) == 6 and result.model.metrics["split"]["gap_px"] == PATCH


def test_a_new_mosaic_is_classified_far_above_chance(trained):
    _, _, result = trained
    image, labels = demo_mosaic(size=256, n_cells=9, seed=7)  # new cells, new texture noise
    report = evaluate(result.model, image, labels, n_per_class=60, pixel_size_um=1.17)
    assert report["accuracy"] >= 0.7, report  # 0.87-0.94 over training seeds 0-3
    assert report["confusion"].sum() == report["n_patches"] == 180


def test_saved_model_gives_the_same_latents(trained, tmp_path):
    image, _, result = trained
    path = result.model.save(tmp_path / "mosaic.pt")
    loaded = PatchModel.load(path, expected=result.model.preprocessing, device="cpu")
    a = dense_latents(result.model, image[:100, :100], stride=8)
    b = dense_latents(loaded, image[:100, :100], stride=8)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def mosaic_codes(trained):
    """NMF codes (k = 6) of the stride-4 latents, and the texture labels on the same grid."""
    image, labels, result = trained
    stride = 4
    latents = dense_latents(result.model, image, stride=stride, pixel_size_um=1.17)
    rows, cols = grid_centers(image.shape, stride, PATCH)
    fit = nmf(latents, 6, device="cpu")
    return fit.W.reshape(len(rows), len(cols), 6), labels[np.ix_(rows, cols)].astype(np.int64)


def test_selection_picks_one_specific_factor_per_texture(mosaic_codes):
    codes, grid_labels = mosaic_codes
    sel = select_factors(codes, grid_labels, p=3)
    assert sorted(a for _, a, _ in sel.pairs) == [1, 2, 3]
    assert len(set(sel.factors)) == 3
    for factor, region, score in sel.pairs:
        assert score > 0
        inside = codes[..., factor][grid_labels == region].mean()
        for other in {1, 2, 3} - {region}:
            # the chosen factor is expressed more strongly in its texture than in any other
            assert inside > 1.3 * codes[..., factor][grid_labels == other].mean(), (factor, region)


def test_bic_finds_the_textures_inside_a_region(mosaic_codes):
    """The cores of the textures (half a patch from any other): one texture is one cluster, stripes and
    blobs together are two, matching the textures. Before the codes were scaled over the whole map
    with a covariance floor, BIC chose 4 clusters for each (ARI 0.45 for the pair; 6 and 3 clusters,
    the smallest of 10 and 2 positions, with k = 8)."""
    from sklearn.metrics import adjusted_rand_score

    codes, grid_labels = mosaic_codes
    cores = {t: eroded_mask(grid_labels, t, PATCH // 2 // 4) for t in (1, 2)}
    one = cluster_roi(codes, cores[1].astype(np.int64), 1, range(1, 6), erode_px=0)
    assert one.n_clusters == 1, one.bic
    two = cluster_roi(codes, (cores[1] | cores[2]).astype(np.int64), 1, range(1, 6), erode_px=0)
    assert two.n_clusters == 2, two.bic
    assert adjusted_rand_score(grid_labels[two.mask], two.cluster_map[two.mask]) > 0.9
