"""Noise level of fluorescence traces from the high-frequency part of their power spectrum.

Calcium transients rise within a frame but decay over many, so almost all of their power sits
at low frequencies; above a quarter of the frame rate (the upper half of the frequencies up to
Nyquist) the spectrum of a trace is close to flat and made of the measurement noise. Averaging
the periodogram there gives the noise variance (CNMF, Pnevmatikakis et al. 2016). This is the
one place the engine estimates σ: deconvolution uses it for the noise constraint θ = (1+ε)σ√T,
the summary images for the per-pixel noise and the peak-to-noise ratio.
"""

from __future__ import annotations

import numpy as np

from engine.errors import InputError

# Periodogram bins |X_k|²/T of white noise are σ²·Exp(1) distributed: the median of Exp(1) is
# ln 2 and the mean of its log is -γ (Euler), so those estimators are rescaled to be unbiased.
_MEDIAN_EXP1 = float(np.log(2.0))
_EULER_GAMMA = 0.5772156649015329
NOISE_METHODS = ("mean", "median", "logmexp")


def noise_std(
    x: np.ndarray,
    axis: int = -1,
    freq_range: tuple[float, float] = (0.25, 0.5),
    method: str = "mean",
) -> np.ndarray | float:
    """Standard deviation of the white noise in ``x`` along ``axis`` (time).

    Parameters
    ----------
    x:
        Traces, time along ``axis`` (a 1-D trace, pixels × T, or a movie with ``axis=0``).
    freq_range:
        Band of the periodogram to average, in cycles per frame (Nyquist = 0.5).
    method:
        ``"mean"`` (default; the least variance for pure noise), ``"median"`` (robust to a few
        narrow-band peaks) or ``"logmexp"`` (CNMF's geometric mean); all unbiased for white noise.

    Returns a float for a 1-D input, else an array over the remaining axes (float64).
    """
    x = np.asarray(x)
    if method not in NOISE_METHODS:
        raise InputError(f"Unknown noise method {method!r}: use one of {', '.join(NOISE_METHODS)}.")
    n = x.shape[axis]
    if n < 8:
        raise InputError(f"A trace of {n} frames is too short to estimate its noise: it needs at least 8 frames.")
    lo, hi = freq_range
    if not 0.0 <= lo < hi <= 0.5:
        raise InputError(f"freq_range must satisfy 0 <= low < high <= 0.5 cycles per frame, got {freq_range}.")
    from scipy import fft

    spectrum = fft.rfft(np.moveaxis(x, axis, -1), axis=-1, workers=-1)
    freqs = np.arange(spectrum.shape[-1]) / n
    band = (freqs > lo) & (freqs <= hi)
    band[-1] &= n % 2 == 1  # the Nyquist bin of an even length is real: its power is χ²₁, not Exp
    power = np.abs(spectrum[..., band]) ** 2 / n  # E = σ² for white noise of variance σ²
    if method == "mean":
        variance = power.mean(axis=-1)
    elif method == "median":
        variance = np.median(power, axis=-1) / _MEDIAN_EXP1
    else:
        variance = np.exp(np.log(np.maximum(power, np.finfo(float).tiny)).mean(axis=-1) + _EULER_GAMMA)
    sigma = np.sqrt(variance)
    return float(sigma) if np.ndim(sigma) == 0 else sigma
