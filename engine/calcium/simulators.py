"""Two more two-photon simulators, written apart from :mod:`engine.calcium.synth` so the pipeline is
judged on movies whose generative model it was not written against.

Both return the same ground-truth dict as :func:`engine.calcium.synth.recording` (``movie``,
``footprints`` (n, h, w) peak 1, ``calcium`` (n, T), ``spikes`` (n, T), ``centers``, ``shifts``,
``fps``) plus what makes the movie checkable: ``f0`` and ``df`` per cell (photons at the
footprint's peak at rest / per unit calcium), ``background`` (T, h, w) expected photons of
everything that is not a cell (only when ``keep_background``), ``offset``, ``read_noise``; so that
``movie ≈ offset + shift(background + Σ_i footprint_i (f0_i + df_i calcium_i(t))) + noise`` with
Poisson noise of variance equal to the expected photons plus ``read_noise²``.

:func:`doughnut_recording` — the movie the issue describes
--------------------------------------------------------------
* **Somata**: soft ellipses (logistic edge, 0.6 px wide) of radius ``radius`` ± 20 % (uniform),
  axis ratio 1–1.4, random orientation, each with a **dimmer nucleus** (a concentric soft ellipse of
  half the size at ``nucleus`` × the cytoplasm's brightness: a doughnut). Centres uniform with a
  minimum distance of 0.85 × the summed radii: modest overlaps.
* **Spikes**: Poisson, each cell its own rate drawn log-normally (median ``rate`` Hz, σ_log 0.6);
  per-spike amplitude log-normal (σ_log 0.4).
* **Calcium**: spikes convolved with a double-exponential kernel (rise 40 ms, decay per cell
  0.5–1.2 s, peak 1) — not the AR(1) model our deconvolution assumes.
* **Fluorescence** (photons): cell i contributes ``footprint_i (f0_i + df_i c_i)`` with resting
  ``f0`` = ``photons`` × log-normal(σ_log 0.3) and single-spike ΔF/F 0.3–0.8.
* **Baseline**: a vignetting field (1 at the centre, cos⁴ fall-off to ~55 % at the corners) ×
  ``photons`` × 0.6, times a slow global drift (−15 % exponential bleaching + a 0.02 Hz wobble).
* **Neuropil**: two smooth spatial components (Gaussian-filtered noise at σ 10 and 25 px, smoother
  than a cell: neuropil sums many fine processes), each with its own slow activity (low-rate Poisson
  events through a 3 s decay), ~20 % of the baseline.
* **Noise**: Poisson shot noise, Gaussian read noise σ ``read_noise``, ADC offset +100.

:func:`dense_recording` — a crowded field of filled somata
------------------------------------------------------------
* **Somata**: filled disks (super-sampled 4 × 4 per pixel, then blurred by a σ 0.7 px PSF), radii
  uniform in ``radii`` (3–8 px), packed by dart throwing at a minimum distance of 0.95 × the summed
  radii: cells touch. Brightness spans a decade (log-uniform f0), so dim cells sit beside bright ones.
* **Spikes**: bursts: a two-state (quiet/bursting) Markov chain per cell, Poisson spikes at 0.05 Hz
  when quiet and 4 Hz in a burst (bursts last ~0.3 s, start ~every 10 s at ``burst_rate``).
* **Calcium**: spikes convolved with a single exponential of decay 0.4–1.0 s (a sum over spikes,
  computed by FFT), then saturating as the Hill-free indicator model ``c / (1 + c / 8)``.
* **Background**: one flat-ish field (±10 %) at ``photons`` × 0.8 and no drift; low photon counts.
* **Motion** (``motion`` px RMS): rigid integer-pixel shifts (a random walk, clipped at 3 × RMS),
  applied by ``np.roll`` on a padded field — a different mechanism from synth's subpixel Fourier shift.
* **Noise**: Poisson and Gaussian read noise, offset +100.
"""

from __future__ import annotations

import numpy as np

OFFSET = 100.0


def _ellipse(yy, xx, cy, cx, ry, rx, theta, edge=0.6):
    """Soft ellipse (logistic edge of ``edge`` px) of semi-axes ry, rx rotated by theta: values in (0, 1)."""
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    rho = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)  # 1 on the boundary
    return 1.0 / (1.0 + np.exp((rho - 1.0) * min(rx, ry) / edge))


def _dart_throw(radii, height, width, spacing, margin, rng):
    """Centres for cells of the given radii, each pair at least spacing × (r_i + r_j) apart; cells that
    find no room after many tries are dropped (the returned index says which remain)."""
    centres, kept = [], []
    for i, r in enumerate(radii):
        for _ in range(3000):
            p = rng.uniform([margin + r, margin + r], [height - 1 - margin - r, width - 1 - margin - r])
            if all(np.hypot(*(p - q)) >= spacing * (r + radii[j]) for q, j in zip(centres, kept)):
                centres.append(p)
                kept.append(i)
                break
    return np.array(centres).reshape(-1, 2), np.array(kept, dtype=int)


def _kernel_calcium(events, kernel):
    """Each row of ``events`` convolved causally with ``kernel`` (FFT, full length)."""
    T = events.shape[1]
    n = 1 << int(np.ceil(np.log2(T + len(kernel))))
    out = np.fft.irfft(np.fft.rfft(events, n) * np.fft.rfft(kernel, n), n)[:, :T]
    return np.maximum(out, 0.0)


def _render(footprints, f0, df, calcium, background, offset, read_noise, shifts, rng, pad):
    """Photons → camera counts, frame by frame (shifts: integer rigid motion applied by np.roll on
    a field padded by ``pad`` px, then cropped)."""
    n, h, w = footprints.shape
    T = calcium.shape[1]
    flat = footprints.reshape(n, -1)
    movie = np.empty((T, h - 2 * pad, w - 2 * pad), np.float32)
    for start in range(0, T, 250):
        stop = min(start + 250, T)
        expected = ((f0[None] + df[None] * calcium[:, start:stop].T) @ flat).reshape(-1, h, w) + background[start:stop]
        for t in range(start, stop):
            frame = expected[t - start]
            dy, dx = int(shifts[t, 0]), int(shifts[t, 1])
            if dy or dx:
                frame = np.roll(frame, (dy, dx), axis=(0, 1))
            frame = frame[pad:h - pad, pad:w - pad]
            movie[t] = rng.poisson(np.maximum(frame, 0.0)) + rng.normal(0.0, read_noise, frame.shape) + offset
    return movie


def doughnut_recording(n_frames: int = 3000, height: int = 128, width: int = 128, n_cells: int = 50, radius: float = 5.0,
                       photons: float = 60.0, rate: float = 0.5, nucleus: float = 0.45, read_noise: float = 4.0,
                       fps: float = 30.0, seed: int = 0, keep_background: bool = False) -> dict:
    """Doughnut somata on vignetting, drift and two neuropil components (see the module docstring)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    radii = radius * rng.uniform(0.8, 1.2, n_cells)
    centres, kept = _dart_throw(radii, height, width, 0.85, 2.0, rng)
    radii = radii[kept]
    n = len(centres)
    footprints = np.zeros((n, height, width), np.float32)
    for i, ((cy, cx), r) in enumerate(zip(centres, radii)):
        ratio, theta = rng.uniform(1.0, 1.4), rng.uniform(0, np.pi)
        ry, rx = r / np.sqrt(ratio), r * np.sqrt(ratio)
        cell = _ellipse(yy, xx, cy, cx, ry, rx, theta)
        core = _ellipse(yy, xx, cy, cx, 0.5 * ry, 0.5 * rx, theta, edge=0.5)
        f = cell * (1.0 - (1.0 - nucleus) * core)
        f /= f.max()
        f[f < 0.02] = 0.0
        footprints[i] = f

    tt = np.arange(n_frames) / fps
    rates = rate * np.exp(rng.normal(0.0, 0.6, n))
    spikes = rng.poisson(rates[:, None] / fps, (n, n_frames)).astype(np.int32)
    amplitude = spikes * np.exp(rng.normal(0.0, 0.4, (n, n_frames)))
    k_t = np.arange(int(6 * fps)) / fps
    calcium = np.zeros((n, n_frames))
    decays = rng.uniform(0.5, 1.2, n)
    for i in range(n):  # each cell its own decay
        kern = np.exp(-k_t / decays[i]) - np.exp(-k_t / 0.04)
        calcium[i] = _kernel_calcium(amplitude[i:i + 1], kern / kern.max())[0]
    f0 = photons * np.exp(rng.normal(0.0, 0.3, n))
    df = f0 * rng.uniform(0.3, 0.8, n)

    rr = np.hypot((yy - height / 2) / (height / 2), (xx - width / 2) / (width / 2)) / np.sqrt(2)
    vignette = np.cos(np.arctan(rr * 0.95)) ** 4  # 1 at the centre, ~0.55 at the corners
    drift = (0.85 + 0.15 * np.exp(-tt / (tt[-1] / 3 + 1e-9))) * (1 + 0.03 * np.sin(2 * np.pi * 0.02 * tt + rng.uniform(0, 6)))
    from scipy.ndimage import gaussian_filter

    background = np.empty((n_frames, height, width), np.float32)
    background[:] = (0.6 * photons * vignette)[None] * drift[:, None, None]
    for scale in (10.0, 25.0):
        field = gaussian_filter(rng.standard_normal((height, width)), scale, mode="reflect")
        field = (field - field.min()) / (np.ptp(field) + 1e-12)
        events = rng.poisson(0.1 / fps, (1, n_frames)).astype(float) * rng.uniform(0.5, 1.5, (1, n_frames))
        act = _kernel_calcium(events, np.exp(-np.arange(int(15 * fps)) / (3.0 * fps)))[0]
        act = act / (act.max() + 1e-12)
        background += (0.2 * photons * field)[None] * (0.5 + act)[:, None, None]

    movie = _render(footprints, f0, df, calcium, background, OFFSET, read_noise, np.zeros((n_frames, 2)), rng, 0)
    out = {"movie": movie, "footprints": footprints, "calcium": calcium.astype(np.float32), "spikes": spikes,
           "centers": centres, "shifts": np.zeros((n_frames, 2), np.float32), "fps": float(fps),
           "f0": f0, "df": df, "offset": OFFSET, "read_noise": read_noise}  # fmt: skip
    if keep_background:
        out["background"] = background
    return out


def dense_recording(n_frames: int = 3000, height: int = 128, width: int = 128, n_cells: int = 90,
                    radii: tuple[float, float] = (3.0, 8.0), photons: float = 25.0, burst_rate: float = 0.1,
                    read_noise: float = 2.0, motion: float = 0.0, fps: float = 30.0, seed: int = 0,
                    keep_background: bool = False) -> dict:
    """Touching filled somata of 3–8 px radius, a decade of brightness, bursts, low photons (module docstring)."""
    rng = np.random.default_rng(seed)
    pad = int(np.ceil(3 * motion)) if motion > 0 else 0
    H, W = height + 2 * pad, width + 2 * pad
    r = np.sort(rng.uniform(*radii, n_cells))[::-1]  # big first: they find room, small ones fill gaps
    centres, kept = _dart_throw(r, height, width, 0.95, 1.0, rng)
    r = r[kept]
    n = len(centres)
    order = rng.permutation(n)
    centres, r = centres[order], r[order]
    sub = 4  # super-sampling per axis
    ys = (np.arange(H * sub) + 0.5) / sub - 0.5 - pad
    xs = (np.arange(W * sub) + 0.5) / sub - 0.5 - pad
    from scipy.ndimage import gaussian_filter

    footprints = np.zeros((n, H, W), np.float32)
    for i, ((cy, cx), ri) in enumerate(zip(centres, r)):
        y0, y1 = sub * max(0, int(cy + pad - ri - 3)), sub * min(H, int(cy + pad + ri + 4))  # whole pixels
        x0, x1 = sub * max(0, int(cx + pad - ri - 3)), sub * min(W, int(cx + pad + ri + 4))
        disk = ((ys[y0:y1, None] - cy) ** 2 + (xs[None, x0:x1] - cx) ** 2 <= ri**2).astype(np.float64)
        coarse = np.zeros((H, W))
        coarse[y0 // sub:y1 // sub, x0 // sub:x1 // sub] = disk.reshape((y1 - y0) // sub, sub, (x1 - x0) // sub, sub).mean(axis=(1, 3))
        f = gaussian_filter(coarse, 0.7)
        f /= f.max()
        f[f < 0.02] = 0.0
        footprints[i] = f

    # Two-state bursting: switch on with burst_rate Hz, off after ~0.3 s.
    p_on, p_off = burst_rate / fps, 1.0 / (0.3 * fps)
    state = np.zeros((n, n_frames), bool)
    s = rng.random(n) < 0.0
    for t in range(n_frames):
        u = rng.random(n)
        s = np.where(s, u >= p_off, u < p_on)
        state[:, t] = s
    spikes = rng.poisson(np.where(state, 4.0, 0.05) / fps).astype(np.int32)
    k_t = np.arange(int(5 * fps)) / fps
    calcium = np.zeros((n, n_frames))
    for i, decay in enumerate(rng.uniform(0.4, 1.0, n)):
        calcium[i] = _kernel_calcium(spikes[i:i + 1].astype(float), np.exp(-k_t / decay))[0]
    calcium = calcium / (1.0 + calcium / 8.0)  # indicator saturation
    f0 = photons * np.exp(rng.uniform(np.log(0.3), np.log(3.0), n))
    df = f0 * rng.uniform(0.4, 1.0, n)

    field = gaussian_filter(rng.standard_normal((H, W)), 15.0, mode="reflect")
    field = 1.0 + 0.1 * field / (field.std() + 1e-12)
    background = np.broadcast_to((0.8 * photons * field).astype(np.float32), (n_frames, H, W))

    shifts = np.zeros((n_frames, 2))
    if motion > 0:
        walk = np.cumsum(rng.normal(0.0, 1.0, (n_frames, 2)), axis=0)
        walk -= np.linspace(walk[0], walk[-1], n_frames)  # a bridge: starts and ends at 0
        walk = motion * walk / (walk.std(axis=0) + 1e-12)
        shifts = np.clip(np.round(walk), -pad, pad)
    movie = _render(footprints, f0, df, calcium, background, OFFSET, read_noise, shifts, rng, pad)
    crop = (slice(None), slice(pad, H - pad), slice(pad, W - pad))
    out = {"movie": movie, "footprints": np.ascontiguousarray(footprints[crop]), "calcium": calcium.astype(np.float32),
           "spikes": spikes, "centers": centres, "shifts": shifts.astype(np.float32), "fps": float(fps),
           "f0": f0, "df": df, "offset": OFFSET, "read_noise": read_noise}  # fmt: skip
    if keep_background:
        out["background"] = np.ascontiguousarray(background[crop])
    return out
