"""Summary images (noise, local correlation, peak-to-noise) and automatic neuron centers,
against simulated movies with known cells and noise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from engine.calcium import summary
from engine.calcium.io import Movie
from engine.calcium.summary import detection_images, find_centers
from engine.calcium.synth import nuclear_patch
from engine.errors import InputError


@pytest.fixture(scope="module")
def patch() -> dict:
    data = nuclear_patch(60, 60, 1500, n_neurons=15, seed=2)
    data["movie"] = np.ascontiguousarray(data["Y"].transpose(2, 0, 1))  # frames × height × width
    return data


@pytest.fixture(scope="module")
def images(patch) -> dict:
    return detection_images(patch["movie"], neuron_radius=3.0)


def matched(found: np.ndarray, true: np.ndarray, tolerance: float) -> int:
    distance = np.hypot(*(found[:, None, :] - true[None, :, :]).transpose(2, 0, 1))
    rows, cols = linear_sum_assignment(distance)
    return int(np.sum(distance[rows, cols] <= tolerance))


def test_noise_image_matches_the_simulated_noise(patch, images):
    # Poisson shot noise plus read noise: variance = expected intensity + 4² per pixel.
    n = len(patch["centers"])
    expected = (patch["background_image"] * patch["background_trace"].mean()
                + np.tensordot(patch["activity"].mean(axis=1), patch["footprints"], axes=1))  # fmt: skip
    ratio = images["noise"] / np.sqrt(expected + 16.0)
    assert n == 15 and images["noise"].shape == (60, 60)
    assert np.median(ratio) == pytest.approx(1.0, abs=0.03)


def test_cells_stand_out_in_correlation_and_pnr(patch, images):
    cells = np.zeros((60, 60), dtype=bool)
    for f in patch["footprints"]:
        cells |= f > 0.5
    far = np.ones((60, 60), dtype=bool)
    for f in patch["footprints"]:
        far &= f == 0
    assert np.median(images["correlation"][cells]) > 5 * max(np.median(np.abs(images["correlation"][far])), 0.01)
    assert np.median(images["pnr"][cells]) > 2 * np.median(images["pnr"][far])
    assert np.median(np.abs(images["correlation"][far])) < 0.05  # the shared background is filtered out


def test_centers_found(patch, images):
    centers = find_centers(images["correlation"], images["pnr"], neuron_radius=3.0)
    hits = matched(centers, patch["centers"], tolerance=2.0)
    assert hits >= 13  # of 15, some overlapping
    assert hits == len(centers)  # no false detections
    top = find_centers(images["correlation"], images["pnr"], neuron_radius=3.0, max_centers=4)
    np.testing.assert_array_equal(top, centers[:4])  # strongest first


def test_chunked_reading_gives_the_same_images(patch, images, monkeypatch):
    monkeypatch.setattr(summary, "_CHUNK_BYTES", 2**20)  # many chunks of frames and bands of rows
    chunked = detection_images(Movie.from_array(patch["movie"]), neuron_radius=3.0)
    for key in ("noise", "correlation", "pnr"):
        np.testing.assert_allclose(chunked[key], images[key], rtol=1e-4, atol=1e-5)



def test_without_the_noise_image_the_rest_is_the_same(patch, images):
    """The residual pass asks for correlation and PNR only (no second pass over the movie for the spectrum)."""
    quick = detection_images(patch["movie"], neuron_radius=3.0, noise=False)
    assert set(quick) == {"correlation", "pnr"}
    for key in quick:
        np.testing.assert_array_equal(quick[key], images[key])


def test_bad_input():
    with pytest.raises(InputError, match="at least 8"):
        detection_images(np.zeros((5, 10, 10)))
    with pytest.raises(InputError, match="NaN"):
        movie = np.random.default_rng(0).random((20, 10, 10))
        movie[7, 3, 3] = np.nan
        detection_images(movie)
    with pytest.raises(InputError, match="same shape"):
        find_centers(np.zeros((5, 5)), np.zeros((5, 6)))
    with pytest.raises(InputError, match="neuron_radius"):
        find_centers(np.zeros((5, 5)), np.zeros((5, 5)), neuron_radius=0)
