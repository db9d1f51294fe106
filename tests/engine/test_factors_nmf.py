"""Torch HALS NMF: monotone decrease, agreement with scikit-learn, NNDSVD, planted factors, the
default stop against a long run, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from engine.errors import InputError
from engine.factors.nmf import match_factors, nmf, nndsvd_init, transform
from engine.factors.synth import latent_matrix
from engine.progress import Cancelled, Progress


@pytest.fixture(scope="module")
def latents() -> np.ndarray:
    return latent_matrix(20_000, seed=3)


def test_hals_error_decreases_monotonically(latents):
    # plain HALS (one sweep each) and the accelerated default: every block update can only lower the loss
    for w_sweeps, h_sweeps in ((1, 1), (3, 10)):
        res = nmf(latents, 8, max_iter=25, tol=0, w_sweeps=w_sweeps, h_sweeps=h_sweeps, device="cpu")
        errors = np.array(res.errors)
        assert len(errors) == 26
        assert np.all(np.diff(errors) <= 1e-6 * errors[:-1]), errors
        assert res.relative_error <= errors[-1] * (1 + 1e-6)  # the final H update lowers it once more
        assert errors[-1] < errors[0]


def test_agrees_with_scikit_learn_on_the_same_matrix(latents):
    from sklearn.decomposition import NMF

    X = latents[:5000]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = NMF(n_components=10, init="nndsvd", solver="cd", max_iter=200, tol=1e-4)
        model.fit_transform(X)
    sk_error = model.reconstruction_err_ / np.linalg.norm(X)
    res = nmf(X, 10, device="cpu")
    assert res.W.shape == (5000, 10) and res.H.shape == (10, 64)
    assert res.W.min() >= 0 and res.H.min() >= 0
    np.testing.assert_allclose(res.relative_error, np.linalg.norm(X - res.W @ res.H) / np.linalg.norm(X), rtol=1e-4)
    assert abs(res.relative_error / sk_error - 1) < 0.01, (res.relative_error, sk_error)


def test_nndsvd_matches_scikit_learn_definition(latents):
    try:
        from sklearn.decomposition._nmf import _initialize_nmf
    except ImportError:  # private helper; only the definition is being checked
        pytest.skip("scikit-learn's NNDSVD helper is not importable in this version")
    X = latents[:3000].astype(np.float64)
    W, H = nndsvd_init(X, 6, device="cpu")
    Ws, Hs = _initialize_nmf(X, 6, init="nndsvd", random_state=0)
    # scikit-learn's truncated SVD is randomized; ours is exact: the products agree closely
    assert np.linalg.norm(W @ H - Ws @ Hs) / np.linalg.norm(Ws @ Hs) < 1e-4
    assert W.min() >= 0 and H.min() >= 0


def test_recovers_an_exact_non_negative_factorization():
    rng = np.random.default_rng(1)
    W0 = rng.gamma(1.0, 1.0, (4000, 5)) * (rng.random((4000, 5)) < 0.6)
    H0 = rng.gamma(1.0, 1.0, (5, 30)) * (rng.random((5, 30)) < 0.5)
    X = (W0 @ H0).astype(np.float32)
    res = nmf(X.reshape(40, 100, 30), 5, max_iter=300, tol=1e-7, device="cpu")  # a latent map is accepted too
    assert res.relative_error < 5e-3
    # data made from known factors get codes back through transform()
    W = transform(X, res.H, device="cpu")
    assert np.linalg.norm(X - W @ res.H) / np.linalg.norm(X) < 1e-2


def test_default_stop_gives_the_factor_maps_of_a_long_run():
    # Known factors sharing a common offset (correlated factors, as CNN latents have): a rank-k
    # fit explains X exactly, HALS creeps towards zero error, and a stop on the error's relative
    # decrease per iteration (the old default) ran all 200 iterations.
    rng = np.random.default_rng(7)
    n, d, k = 30_000, 64, 8
    W0 = rng.gamma(1.0, 1.0, (n, k)) * (rng.random((n, k)) < 0.5)
    H0 = 0.5 + rng.gamma(1.0, 1.0, (k, d)) * (rng.random((k, d)) < 0.3)
    X = (W0 @ H0).astype(np.float32)
    default = nmf(X, k, device="cpu")
    long = nmf(X, k, max_iter=500, tol=0, device="cpu")
    assert default.converged and default.n_iter < 100, default.n_iter
    assert long.n_iter == 500 and not long.converged
    assert default.relative_error < 0.01
    order, corr = match_factors(default.W, long.W)
    assert sorted(order) == list(range(k))
    assert corr.min() > 0.999, corr  # the maps a person looks at are those of the long run
    _, truth = match_factors(long.W, W0)
    assert np.median(truth) > 0.99


def test_match_factors_pairs_maps_in_any_order():
    rng = np.random.default_rng(0)
    A = rng.gamma(1.0, 1.0, (5000, 6)) * (rng.random((5000, 6)) < 0.4)
    perm = np.array([3, 0, 5, 1, 4, 2])
    B = np.empty_like(A)
    B[:, perm] = A * 2.0 + 0.01 * rng.random(A.shape)  # column i of A is column perm[i] of B, rescaled
    order, corr = match_factors(A, B)
    np.testing.assert_array_equal(order, perm)
    assert corr.min() > 0.999
    with pytest.raises(InputError, match="same latents"):
        match_factors(A, B[:, :5])


def test_errors_per_iteration_are_the_true_errors(latents):
    # the per-iteration error comes from an identity, not the residual: check it against numpy
    X = latents[:6000]
    W0, H0 = nndsvd_init(X, 8, device="cpu")
    res = nmf(X, 8, max_iter=3, tol=0, device="cpu", chunk_rows=1000)
    Xd = X.astype(np.float64)
    exact0 = np.linalg.norm(Xd - W0.astype(np.float64) @ H0.astype(np.float64)) / np.linalg.norm(Xd)
    np.testing.assert_allclose(res.errors[0], exact0, rtol=1e-5)
    exact = np.linalg.norm(Xd - res.W.astype(np.float64) @ res.H.astype(np.float64)) / np.linalg.norm(Xd)
    np.testing.assert_allclose(res.relative_error, exact, rtol=1e-5)
    assert res.relative_error <= res.errors[-1] * (1 + 1e-6)


def test_custom_start_and_chunking_do_not_change_the_result(latents):
    X = latents[:4000]
    W0, H0 = nndsvd_init(X, 6, device="cpu")
    a = nmf(X, 6, max_iter=10, tol=0, init="custom", W=W0, H=H0, device="cpu", chunk_rows=4000)
    b = nmf(X, 6, max_iter=10, tol=0, device="cpu", chunk_rows=333)
    np.testing.assert_allclose(a.errors, b.errors, rtol=1e-4)
    np.testing.assert_allclose(a.H, b.H, rtol=1e-3, atol=1e-5)


def test_bad_inputs_say_what_to_do(latents):
    X = latents[:200].copy()
    with pytest.raises(InputError, match="between 1 and"):
        nmf(X, 65)
    bad = X.copy()
    bad[3, 4] = -0.5
    with pytest.raises(InputError, match="non-negative.*ReLU"):
        nmf(bad, 4)
    bad[3, 4] = np.nan
    with pytest.raises(InputError, match="NaN"):
        nmf(bad, 4)
    with pytest.raises(InputError, match="all zeros"):
        nmf(np.zeros((50, 8), np.float32), 2)
    with pytest.raises(InputError, match="2-D matrix"):
        nmf(np.zeros(10), 2)
    with pytest.raises(InputError, match="Custom W/H"):
        nmf(X, 4, init="custom", W=np.ones((3, 4)), H=np.ones((4, 64)))
    with pytest.raises(InputError, match="window"):
        nmf(X, 4, window=0)
    with pytest.raises(InputError, match="same network"):
        transform(X, np.ones((4, 10)))


def test_cancel_stops_the_fit(latents):
    progress = Progress()
    seen = []

    def on_report(fraction, message):
        seen.append(fraction)
        if fraction > 0.2:
            progress.cancel()

    progress = Progress(on_report, min_interval=0)
    with pytest.raises(Cancelled):
        nmf(latents, 8, max_iter=50, tol=0, chunk_rows=2000, progress=progress)
    assert seen and max(seen) < 1.0
