"""The tissue mask (dark field connected to the border is background) and NMF fitted on the tissue only."""

import numpy as np
import pytest

from engine.factors.nmf import nmf
from engine.factors.tissue import masked_nmf, tissue_mask


def test_xray_slice_background_is_the_dark_margin(shared_data):
    from engine.factors.io import load_image

    image = np.asarray(load_image(shared_data / "images" / "xray_thalamocortical_slice159.png"))
    mask = tissue_mask(image)
    assert mask.shape == image.shape and mask.dtype == bool
    assert 0.6 < mask.mean() < 0.85  # about a quarter of the slice image is the black field around it
    assert not mask[0].any() and not mask[-1].any()  # the top and bottom margins
    assert mask[700, 1000:5000].all()  # a line through the middle of the tissue
    assert np.median(image[~mask]) < 5 and np.median(image[mask]) > 100
    # the texture mosaic has no dark field: nothing is background
    mosaic = np.asarray(load_image(shared_data / "images" / "texture_mosaic_1024.png"))
    assert tissue_mask(mosaic).all()


def test_dark_holes_inside_stay_tissue_and_specks_on_the_field_are_background():
    rng = np.random.default_rng(0)
    image = np.zeros((300, 400), np.uint8)
    image[50:250, 60:340] = rng.integers(100, 200, (200, 280))
    image[120:160, 180:220] = 0  # a ventricle: dark, inside
    image[10:13, 10:13] = 255  # dust on the field
    mask = tissue_mask(image)
    assert mask[130:150, 190:210].all() and mask[60:240, 70:330].all()
    assert not mask[:40].any() and not mask[5:20, 5:20].any()


def test_masked_nmf_fits_the_kept_positions_only():
    rng = np.random.default_rng(1)
    values = rng.random((20, 30, 8)).astype(np.float32)
    keep = np.zeros((20, 30), bool)
    keep[3:17, 5:25] = True
    values[~keep] = 50.0  # a loud background the fit must not see
    result = masked_nmf(values, 3, keep, max_iter=30, tol=0)
    W = np.asarray(result.W).reshape(20, 30, 3)
    assert not W[~keep].any()
    reference = nmf(values[keep], 3, max_iter=30, tol=0)  # the same fit on the kept rows alone
    np.testing.assert_allclose(W[keep], reference.W, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.H, reference.H, rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match="fewer than k"):
        masked_nmf(values, 3, np.eye(20, 30, dtype=bool)[:, :30] & False)
