"""Torch HALS NMF: monotone decrease, agreement with scikit-learn, NNDSVD, planted factors, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from engine.errors import InputError
from engine.factors.nmf import nmf, nndsvd_init, transform
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
