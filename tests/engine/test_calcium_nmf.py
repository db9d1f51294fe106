"""Fast localized NMF: the vectorized sweeps are exact HALS, the error never increases, shapes
and activities of a simulated patch are recovered, Algorithm 1 lands where full HALS does,
the torch path agrees with numpy, and bad input is refused with a useful message."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from engine.calcium import nmf
from engine.calcium.synth import nuclear_patch
from engine.errors import InputError


R = 3.0  # the simulated nuclei: σ 1.4-2.2 px


@pytest.fixture(scope="module")
def patch() -> dict:
    return nuclear_patch(40, 40, 900, n_neurons=10, seed=3)


def full(result):
    return np.concatenate([result.A, result.b], axis=1), np.concatenate([result.C, result.f], axis=0)


def matched_correlations(estimated: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pearson correlations of rows after the best one-to-one matching (Hungarian)."""
    e = estimated.reshape(len(estimated), -1).astype(np.float64)
    t = true.reshape(len(true), -1).astype(np.float64)
    e = (e - e.mean(1, keepdims=True)) / np.linalg.norm(e - e.mean(1, keepdims=True), axis=1, keepdims=True)
    t = (t - t.mean(1, keepdims=True)) / np.linalg.norm(t - t.mean(1, keepdims=True), axis=1, keepdims=True)
    corr = e @ t.T
    rows, cols = linear_sum_assignment(-corr)
    return corr[rows, cols]


def test_vectorized_sweep_is_sequential_hals(patch):
    """One iteration equals the textbook sequential HALS (dense, float64, one component at a time)."""
    Y3, centers = patch["Y"], patch["centers"]
    h, w, T = Y3.shape
    layout = nmf._layout(centers, 6, (h, w), 1, nmf._Numpy())
    A0, C0 = nmf._initialize(Y3, centers, 1.5, layout)
    mask = np.asarray(layout.mask, dtype=np.float64)
    A, C = A0.astype(np.float64) * mask, C0.astype(np.float64)
    Y = Y3.reshape(h * w, T).astype(np.float64)
    order = [k for group in layout.groups for k in group]
    U, V = A.T @ Y, A.T @ A
    for k in order:
        C[k] = np.maximum(0.0, C[k] + (U[k] - V[k] @ C) / V[k, k])
    U, V = Y @ C.T, C @ C.T
    for k in order:
        A[:, k] = mask[:, k] * np.maximum(0.0, A[:, k] + (U[:, k] - A @ V[:, k]) / V[k, k])
    got = nmf.hals(Y3, centers, neuron_radius=R, iterations=1, init=(A0, C0), backend="numpy")
    gA, gC = full(got)
    np.testing.assert_allclose(gC, C, rtol=2e-3, atol=1e-3 * np.abs(C).max())
    np.testing.assert_allclose(gA, A, rtol=2e-3, atol=1e-3 * np.abs(A).max())
    assert len(layout.groups) < len(order)  # the point: fewer steps than components
    # Neurons sharing a group have disjoint patches.
    for group in layout.groups[:-1]:
        owners = np.concatenate([layout.rows[k] for k in group])
        assert len(np.unique(owners)) == len(owners)


@pytest.mark.parametrize("order", ["groups", "neuron"])
def test_error_never_increases(patch, order):
    errors = []
    nmf.hals(patch["Y"], patch["centers"], neuron_radius=R, iterations=12, order=order, backend="numpy",
             callback=lambda stage, it, A, C: errors.append(nmf.mse(patch["Y"], A, C)))  # fmt: skip
    assert len(errors) == 12
    steps = np.diff(errors)
    assert np.all(steps <= 1e-5 * errors[0]), steps  # float32 rounding only
    assert errors[-1] < errors[0]


def test_recovers_simulated_shapes_and_activities(patch):
    result = nmf.hals(patch["Y"], patch["centers"], neuron_radius=R, iterations=60, backend="numpy")
    assert result.footprints.shape == (10, 40, 40) and result.C.shape == (10, 900)
    assert matched_correlations(result.footprints, patch["footprints"]).min() > 0.95
    assert matched_correlations(result.C, patch["activity"]).min() > 0.85
    # Shapes stay inside their patches; the background is found as well.
    outside = np.ones((10, 40, 40), dtype=bool)
    for k, (r0, r1, c0, c1) in enumerate(result.patches):
        outside[k, r0:r1, c0:c1] = False
    assert np.all(result.footprints[outside] == 0)
    assert np.all(result.A >= 0) and np.all(result.C >= 0)
    background = result.background_images[0] * result.f[0].mean()
    assert np.corrcoef(background.ravel(), patch["background_image"].ravel())[0, 1] > 0.9
    # The model's error sits at the noise level.
    assert nmf.mse(patch["Y"], *full(result)) < 1.02 * patch["noise_variance"]


def test_downsampled_path_reaches_the_full_solution(patch):
    reference = nmf.mse(patch["Y"], *full(nmf.hals(patch["Y"], patch["centers"], neuron_radius=R, iterations=150, backend="numpy")))
    stages = []
    fast = nmf.fast_nmf(patch["Y"], patch["centers"], neuron_radius=R, temporal_factor=10, spatial_factor=2, iterations_downsampled=20,
                        iterations=2, backend="numpy", callback=lambda stage, it, A, C: stages.append((stage, A.shape, C.shape)))  # fmt: skip
    assert nmf.mse(patch["Y"], *full(fast)) < reference * 1.001
    assert matched_correlations(fast.footprints, patch["footprints"]).min() > 0.95
    kinds = [s for s, _, _ in stages]
    assert kinds == ["downsampled"] * 20 + ["upsampled", "refine", "full", "full"]
    assert stages[0][1] == (20 * 20, 11) and stages[0][2] == (11, 90)  # 2x2 pixels, 10 frames
    assert stages[-1][1] == (40 * 40, 11) and stages[-1][2] == (11, 900)


def test_downsample_means_blocks():
    Y3 = np.arange(5 * 3 * 7, dtype=np.float32).reshape(5, 3, 7)
    small = nmf.downsample(Y3, temporal=3, spatial=2)
    assert small.shape == (3, 2, 2)  # 7 frames -> 2 blocks; odd edges padded by repetition
    padded = np.pad(Y3[:, :, :6], ((0, 1), (0, 1), (0, 0)), mode="edge")
    expected = padded.reshape(3, 2, 2, 2, 2, 3).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(small, expected, rtol=1e-6)


def test_torch_backend_matches_numpy(patch):
    pytest.importorskip("torch")
    args = dict(neuron_radius=R, temporal_factor=10, iterations_downsampled=5, iterations=1)
    a = nmf.fast_nmf(patch["Y"], patch["centers"], backend="numpy", **args)
    b = nmf.fast_nmf(patch["Y"], patch["centers"], backend="torch", device="cpu", **args)
    np.testing.assert_allclose(b.A, a.A, rtol=1e-3, atol=1e-4 * a.A.max())
    np.testing.assert_allclose(b.C, a.C, rtol=1e-3, atol=1e-4 * a.C.max())


def test_more_background_components(patch):
    result = nmf.hals(patch["Y"], patch["centers"], neuron_radius=R, n_background=2, iterations=5, backend="numpy")
    assert result.b.shape == (1600, 2) and result.f.shape == (2, 900)
    assert not np.allclose(result.background_images[0], result.background_images[1])
    bare = nmf.fast_nmf(patch["Y"], patch["centers"], neuron_radius=R, n_background=0, temporal_factor=10, backend="numpy")
    assert bare.b.shape == (1600, 0) and bare.A.shape == (1600, 10)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda p: nmf.hals(p["Y"][:, :, 0], p["centers"]), "height × width × frames"),
        (lambda p: nmf.hals(np.where(np.arange(900) == 5, np.nan, p["Y"]), p["centers"]), "NaN"),
        (lambda p: nmf.fast_nmf(np.where(np.arange(900) == 5, np.nan, p["Y"]), p["centers"], temporal_factor=10), "NaN"),
        (lambda p: nmf.hals(p["Y"], np.zeros((0, 2))), "No neuron centers"),
        (lambda p: nmf.hals(p["Y"], [[10.0, 45.0]]), "outside the 40 × 40 image"),
        (lambda p: nmf.hals(p["Y"], p["centers"], order="random"), "update order"),
        (lambda p: nmf.hals(p["Y"], p["centers"], neuron_radius=0), "neuron_radius"),
        (lambda p: nmf.fast_nmf(p["Y"], p["centers"], temporal_factor=600), "blocks of 600"),
        (lambda p: nmf.fast_nmf(p["Y"], p["centers"], spatial_factor=0), "whole numbers"),
        (lambda p: nmf.hals(p["Y"], p["centers"], backend="jax"), "backend"),
    ],
)
def test_bad_input_says_what_to_do(patch, call, words):
    with pytest.raises(InputError, match=words):
        call(patch)


def test_seed_hold_keeps_the_blob_at_the_seed():
    """After a shape sweep a shape is cut to the blob (≥ 20 % of its peak, 8-connected) nearest its seed,
    plus a pixel around it: a brighter separate blob in the same box (a livelier neighbour the shape was
    moving to) is set to 0; a doughnut whose seed sits in its dark middle keeps its whole ring."""
    h = w = 21
    yy, xx = np.mgrid[0:h, 0:w]
    own = np.exp(-((yy - 10) ** 2 + (xx - 5) ** 2) / 4.0)
    neighbour = 2.0 * np.exp(-((yy - 10) ** 2 + (xx - 14) ** 2) / 4.0)  # 9 px away, inside the box
    ring = np.exp(-((np.hypot(yy - 10, xx - 10) - 4.0) ** 2) / 1.0)
    centers = np.array([[10.0, 5.0], [10.0, 10.0]])
    layout = nmf._layout(centers, 10, (h, w), 1, nmf._Numpy())
    A = np.stack([(own + neighbour).ravel(), ring.ravel(), np.ones(h * w)], axis=1).astype(np.float32)
    nmf._SeedHold(layout, centers, 0.2)(nmf._Numpy(), A)
    first = A[:, 0].reshape(h, w)
    assert first[10, 14] == 0 and first[10, 5] == pytest.approx(1.0)
    assert (first[own >= 0.2] > 0).all()  # its own blob untouched
    on_ring = ring.ravel() >= 0.2
    np.testing.assert_array_equal(A[on_ring, 1], ring.ravel()[on_ring].astype(np.float32))  # the ring is one blob
    np.testing.assert_array_equal(A[:, 2], 1.0)  # backgrounds are not held


def test_rank2_nmf_parts_two_overlapping_cells():
    """Two overlapping blobs with different activities, started from a rough halving of the pixels: the
    fit explains the data (relative error < 1 %) and each part is one blob with its own activity."""
    rng = np.random.default_rng(0)
    x = np.arange(40.0)
    shapes = np.stack([np.exp(-((x - 14) ** 2) / 20), np.exp(-((x - 26) ** 2) / 20)], axis=1)
    activities = rng.gamma(1.0, size=(2, 300))
    R = shapes @ activities
    W = np.stack([x < 20, x >= 20], axis=1).astype(np.float64)
    W, H = nmf.rank2_nmf(R, W)
    assert (W >= 0).all() and (H >= 0).all()
    assert np.linalg.norm(R - W @ H) < 0.01 * np.linalg.norm(R)
    assert W[:, 0].argmax() == 14 and W[:, 1].argmax() == 26
    assert np.corrcoef(H[0], activities[0])[0, 1] > 0.99 and np.corrcoef(H[1], activities[1])[0, 1] > 0.99
