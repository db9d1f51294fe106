"""AR(1) deconvolution: the fast exact solver against CVXPY, the noise constraint, spikes and
parameters recovered on simulated traces with known ground truth, batches, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from engine.calcium.deconvolution import (
    G_RANGE,
    _Powers,
    MIN_FRAMES,
    deconvolve,
    deconvolve_batch,
    estimate_g,
    match_events,
    spike_events,
)
from engine.calcium.noise import noise_std
from engine.calcium.synth import calcium_traces
from engine.errors import InputError

# CLARABEL's defaults stop at ~1e-8 duality gap, which leaves ~1e-5 relative error in c;
# the reference is solved tighter so the comparison tests the fast solver, not the tolerance.
TIGHT = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 400}


@pytest.fixture(scope="module")
def traces() -> dict:
    return calcium_traces(12, 3000, fps=30.0, snr=(3.0, 6.0), seed=7)


def rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
@pytest.mark.parametrize("optimize_b", [True, False])
@pytest.mark.parametrize("seed, n_frames, fps", [(1, 400, 30.0), (2, 600, 10.0), (3, 1200, 2.0)])
def test_fast_solver_equals_cvxpy(seed, n_frames, fps, optimize_b):
    d = calcium_traces(1, n_frames, fps=fps, seed=seed)
    y = d["y"][0]
    if fps == 2.0:  # g ~ 0.4-0.7: PAVA runs on blocks of <= 900 frames that must be joined
        assert _Powers(float(d["g"][0]), n_frames).block < n_frames / 2
    b = None if optimize_b else float(d["b"][0]) - 0.2
    fast = deconvolve(y, b=b)
    ref = deconvolve(y, g=fast.g, sigma=fast.sigma, b=b, method="cvxpy", solver_options=TIGHT)
    assert rel(fast.c, ref.c) < 1e-4
    assert abs(fast.b - ref.b) < 1e-4 * np.ptp(y)
    assert fast.s.sum() <= ref.s.sum() * (1 + 1e-6)  # never worse than the reference optimum
    assert fast.lam == pytest.approx(ref.lam, rel=1e-3)


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
def test_newton_stalls_then_the_nested_search_stays_exact():
    # Slow calcium at 100 Hz (g ~ 0.99-0.995) with a bound below the noise: Newton on (lam, b)
    # loses its way, the bracketed search over b takes over and Newton finishes exactly.
    y = calcium_traces(1, 1500, fps=100.0, rate=(0.5, 2.0), snr=(1.0, 3.0), seed=0)["y"][0]
    fast = deconvolve(y, epsilon=-0.2)
    assert fast.iterations > 12  # the fallback ran
    assert np.linalg.norm(y - fast.b - fast.c) == pytest.approx(fast.theta, rel=1e-9)
    ref = deconvolve(y, g=fast.g, sigma=fast.sigma, epsilon=-0.2, method="cvxpy", solver_options=TIGHT)
    assert rel(fast.c, ref.c) < 1e-4


def test_solution_meets_the_constraint_exactly(traces):
    for y in traces["y"][:6]:
        r = deconvolve(y)
        assert np.linalg.norm(y - r.b - r.c) == pytest.approx(r.theta, rel=1e-9)
        assert r.theta == pytest.approx(r.sigma * np.sqrt(len(y)))
        assert r.s.min() >= 0.0 and r.c.min() >= 0.0
        # s = G c: calcium decays by g between spikes, and the spikes are exact zeros elsewhere
        np.testing.assert_allclose(r.s, np.concatenate(([r.c[0]], r.c[1:] - r.g * r.c[:-1])), atol=1e-9)
        assert np.mean(r.s == 0.0) > 0.8
        # the optimal baseline leaves a residual of mean zero
        assert abs(np.mean(y - r.b - r.c)) < 1e-8


def test_epsilon_loosens_the_constraint(traces):
    y = traces["y"][0]
    tight, loose = deconvolve(y), deconvolve(y, epsilon=0.1)
    assert loose.theta == pytest.approx(1.1 * tight.theta)
    assert np.linalg.norm(y - loose.b - loose.c) == pytest.approx(loose.theta, rel=1e-9)
    assert loose.s.sum() < tight.s.sum() and loose.lam > tight.lam


def test_spikes_recovered(traces):
    tp = fp = fn = 0
    for i, y in enumerate(traces["y"]):
        r = deconvolve(y, g=traces["g"][i], sigma=traces["sigma"][i])
        # simulated spikes have median amplitude 1; a fifth of that separates them from noise
        counts = match_events(spike_events(r.s, 0.2), np.flatnonzero(traces["spikes"][i]), tolerance=2)
        tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
        assert np.corrcoef(r.c, traces["c"][i])[0, 1] > 0.95
    assert tp / (tp + fp) > 0.9 and tp / (tp + fn) > 0.9


def test_parameters_estimated(traces):
    sigma = noise_std(traces["y"])
    # spikes add a little high-frequency power of their own, so sigma is slightly high
    assert np.all(np.abs(sigma / traces["sigma"] - 1) < 0.2)
    assert np.median(sigma / traces["sigma"]) == pytest.approx(1.0, abs=0.15)
    g = estimate_g(traces["y"], sigma)
    assert np.all(np.abs(g - traces["g"]) < 0.02)
    r = deconvolve(traces["y"][0])
    assert r.g == pytest.approx(traces["g"][0], abs=0.02)
    assert r.b == pytest.approx(traces["b"][0], abs=0.3)


def test_noise_std_is_unbiased_for_white_noise():
    x = np.random.default_rng(0).normal(0.0, 2.0, (50, 2001))
    for method in ("mean", "median", "logmexp"):
        assert np.mean(noise_std(x, method=method)) == pytest.approx(2.0, rel=0.02)
    assert isinstance(noise_std(x[0]), float)
    movie = x.reshape(50, 1, 2001).transpose(2, 0, 1)  # frames × 50 × 1
    np.testing.assert_allclose(noise_std(movie, axis=0)[:, 0], noise_std(x), rtol=1e-12)


def test_no_spikes_when_the_trace_is_noise():
    y = 3.0 + np.random.default_rng(4).normal(0.0, 0.5, 2000)
    r = deconvolve(y, g=0.95, sigma=0.5, epsilon=0.05)
    assert np.all(r.c == 0) and np.all(r.s == 0)
    assert r.b == pytest.approx(y.mean())
    flat = deconvolve(np.full(100, 7.0))
    assert np.all(flat.c == 0) and flat.b == 7.0


def test_batch_equals_single_traces(traces):
    batch = deconvolve_batch(traces["y"][:5])
    assert batch.C.shape == (5, 3000) and len(batch) == 5
    for i in range(5):
        single = deconvolve(traces["y"][i])
        np.testing.assert_allclose(batch.C[i], single.c, rtol=1e-9, atol=1e-9)
        assert batch.g[i] == pytest.approx(single.g) and batch.sigma[i] == pytest.approx(single.sigma)
        assert batch[i].b == pytest.approx(single.b)
    given = deconvolve_batch(traces["y"][:3], g=traces["g"][:3], sigma=0.3, b=traces["b"][:3] - 0.5)
    np.testing.assert_allclose(given.g, traces["g"][:3])
    np.testing.assert_allclose(given.b, traces["b"][:3] - 0.5)
    np.testing.assert_allclose(given.C[1], deconvolve(traces["y"][1], traces["g"][1], 0.3, traces["b"][1] - 0.5).c, atol=1e-9)


def test_events_and_matching():
    s = np.array([0, 0.5, 0.6, 0, 0, 0.1, 0, 0.9])
    np.testing.assert_array_equal(spike_events(s, 0.2), [2, 7])
    assert match_events(np.array([2, 7, 20]), np.array([1, 9, 30]), tolerance=2) == (2, 1, 1)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: deconvolve(np.array([1.0, np.nan] * 30)), "NaN"),
        (lambda: deconvolve(np.ones((3, 50))), "1-D"),
        (lambda: deconvolve(np.arange(MIN_FRAMES - 1.0)), "frames"),
        (lambda: deconvolve(np.random.default_rng(0).random(100), g=1.0), "between 0 and 1"),
        (lambda: deconvolve(np.random.default_rng(0).random(100), g=-0.2), "between 0 and 1"),
        (lambda: deconvolve(np.random.default_rng(0).random(100), sigma=0.0), "positive"),
        (lambda: deconvolve(np.random.default_rng(0).random(100), method="oasis"), "fast"),
        (lambda: deconvolve(np.random.default_rng(0).random(100), g=0.9, b=5.0), "lower baseline"),
        (lambda: deconvolve_batch(np.ones(100)), "2-D"),
        (lambda: deconvolve_batch(np.vstack([np.ones(50), np.full(50, np.inf)])), "row 1"),
        (lambda: deconvolve_batch(np.random.default_rng(0).random((2, 50)), g=[0.5, 1.5]), "between 0 and 1"),
    ],
)
def test_bad_input_says_what_to_do(call, words):
    with pytest.raises(InputError, match=words):
        call()


def test_estimated_g_stays_in_range():
    noise = np.random.default_rng(1).normal(size=(4, 500))
    g = estimate_g(noise)
    assert np.all((g >= G_RANGE[0]) & (g <= G_RANGE[1]))
