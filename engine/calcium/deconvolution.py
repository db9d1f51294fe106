"""Spike deconvolution of calcium traces: AR(1) calcium, noise-constrained L1 (CNMF / OASIS).

Model (Pnevmatikakis et al. 2016)::

    y_t = b + c_t + noise_t,    c_t = g c_{t-1} + s_t,    s_t >= 0,    c_0 = 0 (so s_1 = c_1)

and the estimate is the sparsest non-negative spike train whose calcium explains the trace
to within the noise::

    minimize  sum_t s_t    subject to  ||y - b - c||_2 <= theta = (1 + eps) sigma sqrt(T),   s = G c >= 0

with the baseline ``b`` given or optimized jointly. ``sigma`` comes from the high-frequency
power spectrum (:mod:`engine.calcium.noise`), ``g`` from the autocovariance of the trace.

Two solvers of that same problem:

``method="cvxpy"``
    The reference: the problem written as is, solved by CLARABEL (an interior-point SOCP
    solver). ~0.1 s for 3000 frames, seconds for 30,000.
``method="fast"``
    Exact as well, and 100x faster, after Friedrich, Zhou & Paninski (2017, OASIS), written
    from the paper. Lagrange duality turns the problem into the penalized one,
    ``min 1/2 ||y - b - c||^2 + lam sum(s)``, for the ``lam`` at which the residual norm
    equals ``theta``. Since ``sum(s) = <mu, c>`` with ``mu = (1-g, ..., 1-g, 1)``, the penalized
    problem is a projection of ``y - b - lam mu`` onto the cone ``{c_1 >= 0, c_t >= g c_{t-1}}``.
    Writing ``c_t = g^t u_t`` makes the cone ``u`` non-decreasing, ``u >= 0``: a weighted
    isotonic regression (weights ``g^2t``), solved by the pool-adjacent-violators algorithm
    (scipy's C++ PAVA; pools are OASIS's pools). For a fixed set of pools the solution is
    affine in ``lam`` (and ``b``), so the ``lam`` (and ``b``) meeting the constraint follow from
    a quadratic equation; the pools are then recomputed at that ``lam`` until they stop
    changing (3-5 projections on almost every trace: a semismooth Newton method). At that
    point the solution is exact, not an approximation with a tolerance: it agrees with CVXPY
    to the latter's precision. Where Newton stalls (seen with g > 0.99 and a bound below the
    noise), a bracketed search over b of exact fixed-b solutions takes over (~20-100
    projections) and Newton finishes.

``g**2t`` under- and ``g**-t`` overflows in long traces, so the isotonic regression runs on
blocks of at most ``300 / -ln g`` frames, each scaled from its own start, and the pools of
consecutive blocks are merged with OASIS's pool-merging rule (any order of merging adjacent
violators gives the same, unique solution).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np

from engine.calcium.noise import noise_std
from engine.errors import InputError
from engine.progress import Progress, as_progress

log = logging.getLogger(__name__)

METHODS = ("fast", "cvxpy")
MIN_FRAMES = 20  # below this, neither the noise spectrum nor the autocovariance say anything
G_RANGE = (0.01, 0.999)  # estimated g is clipped here: g -> 1 is a constant, g -> 0 no calcium memory
_LOG_RANGE = 300.0  # a block spans g**k >= e^-300: weights g**2k stay normal float64 (> 1e-308)
_NEWTON_STEPS = 50
_MIN_STEP = 1.0 / 64  # a Newton step halved further than this means Newton is lost: change method
# Starting penalty, in units of sigma / (1 - g): at the solution lam (1 - g) / sigma was 0.2-0.8
# (median 0.3-0.5) on simulated traces at 10 and 30 Hz; starting there instead of at 0 saves
# ~1 projection in 4 (the result is the same: the start only changes the path).
_START = 0.4


@dataclass
class Deconvolution:
    """The deconvolved trace; all values in the units of the input trace.

    ``c`` calcium (denoised trace, baseline removed), ``s`` spikes (``s = G c``, non-negative;
    exact zeros between spikes for the fast solver), ``b`` baseline, ``g`` AR(1) coefficient,
    ``sigma`` noise, ``theta`` the bound on ``||y - b - c||``, ``lam`` the Lagrange multiplier
    (penalty on ``sum(s)`` of the equivalent penalized problem), ``iterations`` the number of
    pool projections (fast) or interior-point iterations (cvxpy).
    """

    c: np.ndarray
    s: np.ndarray
    b: float
    g: float
    sigma: float
    theta: float
    lam: float
    method: str
    iterations: int = 0


@dataclass
class BatchDeconvolution:
    """Many traces deconvolved: arrays with one row (or entry) per trace."""

    C: np.ndarray
    S: np.ndarray
    b: np.ndarray
    g: np.ndarray
    sigma: np.ndarray
    theta: np.ndarray
    lam: np.ndarray

    def __len__(self) -> int:
        return len(self.b)

    def __getitem__(self, i: int) -> Deconvolution:
        return Deconvolution(self.C[i], self.S[i], float(self.b[i]), float(self.g[i]), float(self.sigma[i]),
                             float(self.theta[i]), float(self.lam[i]), "fast")


# -- parameter estimates ----------------------------------------------------------------------

def autocovariance(y: np.ndarray, lags: int) -> np.ndarray:
    """Biased autocovariance at lags 0..lags along the last axis (FFT, so O(T log T))."""
    y = np.asarray(y, dtype=np.float64)
    y = y - y.mean(axis=-1, keepdims=True)
    n = y.shape[-1]
    nfft = 1 << int(math.ceil(math.log2(2 * n - 1)))
    spectrum = np.fft.rfft(y, nfft, axis=-1)
    return np.fft.irfft(spectrum.real**2 + spectrum.imag**2, nfft, axis=-1)[..., : lags + 1] / n


def estimate_g(y: np.ndarray, sigma: np.ndarray | float | None = None, lags: int = 10) -> np.ndarray | float:
    """AR(1) coefficient from the autocovariance, corrected for the noise (CNMF's fit).

    For ``y = c + noise`` with AR(1) ``c`` the autocovariance obeys ``γ(k) = g γ_c(k-1)`` for
    ``k >= 1``, where ``γ_c`` equals ``γ`` except ``γ_c(0) = γ(0) - σ²`` (white noise only adds
    to lag 0). Least squares over ``k = 1..lags`` uses more than one lag, which matters for noisy
    traces. Works on a trace or on rows of traces; the result is clipped to :data:`G_RANGE`.
    """
    y = np.asarray(y, dtype=np.float64)
    if sigma is None:
        sigma = noise_std(y)
    lags = int(min(lags, y.shape[-1] - 2))
    acov = autocovariance(y, lags)
    prev = acov[..., :-1].copy()
    prev[..., 0] -= np.asarray(sigma, dtype=np.float64) ** 2
    nxt = acov[..., 1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        g = (prev * nxt).sum(axis=-1) / (prev * prev).sum(axis=-1)
    g = np.where(np.isfinite(g), g, G_RANGE[0])
    g = np.clip(g, *G_RANGE)
    return float(g) if np.ndim(g) == 0 else g


def time_constant(g: float, fs: float) -> float:
    """Decay time constant in seconds of AR(1) calcium with coefficient ``g`` sampled at ``fs`` Hz."""
    return -1.0 / (fs * math.log(g))


# -- the fast exact solver --------------------------------------------------------------------

class _Powers:
    """g**k, g**-k and g**2k for k < block, computed once per trace (they are reused by every projection)."""

    def __init__(self, g: float, n: int):
        self.g = g
        self.block = max(1, min(n, int(_LOG_RANGE / -math.log(g))))
        k = np.arange(self.block, dtype=np.float64)
        self.gk = g**k
        self.inv = 1.0 / self.gk
        self.w = self.gk * self.gk


def _block_pools(z: np.ndarray, powers: _Powers, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """PAVA on one block (scaled to its first frame): pool starts and values at the pool starts."""
    from scipy.optimize import isotonic_regression

    n = len(z)
    res = isotonic_regression(z * powers.inv[:n], weights=powers.w[:n], increasing=True)
    starts = res.blocks[:-1]
    return starts + offset, res.x[starts] * powers.gk[starts]


def _project(z: np.ndarray, powers: _Powers) -> tuple[np.ndarray, np.ndarray, int]:
    """Projection of ``z`` onto ``{c : c_1 >= 0, c_t >= g c_{t-1}}``.

    Returns the pools with positive values (``starts``, ``values`` = c at each pool start;
    inside a pool c decays by g per frame) and ``n0``, the number of leading zeros. Exact:
    weighted isotonic regression in the scaled variable, then clipping at 0 (the solution of
    an isotonic regression with a lower bound is the clipped unbounded one; u is non-decreasing,
    so the clipped pools are a prefix).
    """
    n = len(z)
    g = powers.g
    if n <= powers.block:
        starts, values = _block_pools(z, powers, 0)
    else:
        g2 = g * g
        st: list[int] = []
        vs: list[float] = []
        ls: list[int] = []
        ws: list[float] = []
        for a in range(0, n, powers.block):
            e = min(a + powers.block, n)
            bs, bv = _block_pools(z[a:e], powers, a)
            bl = np.diff(np.append(bs, e))
            bw = (1.0 - g2**bl) / (1.0 - g2)  # sum of g**2k over each pool
            nt, nv, nl, nw = bs.tolist(), bv.tolist(), bl.tolist(), bw.tolist()
            if not st:
                st, vs, ls, ws = nt, nv, nl, nw
                continue
            # Join the block to the pools so far: merge adjacent violators (c at a pool start
            # below g x c at the end of the previous pool) until there are none. Only pools near
            # the junction can merge; the rest of the block is appended as it is.
            t, v, length, w = nt[0], nv[0], nl[0], nw[0]
            j = 1
            while True:
                while st and v < g ** ls[-1] * vs[-1]:
                    gl = g ** ls[-1]
                    pw, pv = ws.pop(), vs.pop()
                    v = (pw * pv + gl * w * v) / (pw + gl * gl * w)
                    w = pw + gl * gl * w
                    t = st.pop()
                    length += ls.pop()
                if j < len(nt) and nv[j] < g**length * v:
                    gl = g**length
                    v = (w * v + gl * nw[j] * nv[j]) / (w + gl * gl * nw[j])
                    w = w + gl * gl * nw[j]
                    length += nl[j]
                    j += 1
                    continue
                break
            st.append(t)
            vs.append(v)
            ls.append(length)
            ws.append(w)
            st += nt[j:]
            vs += nv[j:]
            ls += nl[j:]
            ws += nw[j:]
        starts, values = np.asarray(st, dtype=np.intp), np.asarray(vs)
    nonpositive = np.flatnonzero(values <= 0.0)
    first = int(nonpositive[-1]) + 1 if len(nonpositive) else 0
    n0 = int(starts[first]) if first < len(starts) else n
    return starts[first:], values[first:], n0


def _expand(starts: np.ndarray, values: np.ndarray, n: int, g: float) -> tuple[np.ndarray, np.ndarray]:
    """Calcium and spikes from pools: c decays by g inside a pool, s is non-zero only at pool starts."""
    c = np.zeros(n)
    s = np.zeros(n)
    if len(starts):
        n0 = int(starts[0])
        lengths = np.diff(np.append(starts, n))
        k = np.arange(n - n0) - np.repeat(starts - n0, lengths)
        c[n0:] = np.repeat(values, lengths) * g ** k.astype(np.float64)
        ends = values[:-1] * g ** lengths[:-1].astype(np.float64)  # g x c at each pool's last frame
        s[starts] = values - np.concatenate(([0.0], ends))
        np.maximum(s, 0.0, out=s)  # merged pools meet the constraint up to rounding
    return c, s


class _Point:
    """The penalized solution at one (lam, b): its pools and the pool sums that describe the
    residual ``r = y - b - c`` as a function of (lam, b) while the pools stay the same.

    With P the orthogonal projection onto the span of the pools (zero before ``n0``) and
    Q = I - P, ``c = P(y - b - lam mu)`` and ``r = Q(y - b 1) + lam P mu``; every inner product
    of those vectors is a sum over pools of closed forms (sum g**k = (1-g**l)/(1-g),
    sum g**2k = (1-g**2l)/(1-g²)), so a Newton step costs O(pools), not O(T).
    """

    def __init__(self, y: np.ndarray, mu: np.ndarray, sums: tuple[float, float], powers: _Powers, lam: float, b: float):
        self.lam, self.b = lam, b
        self.starts, self.values, self.n0 = _project(y - b - lam * mu, powers)
        self.key = (self.n0, self.starts.tobytes())
        sum_y, sum_yy = sums
        n, g = len(y), powers.g
        if len(self.starts) == 0:
            self.qyy, self.q1y, self.q11, self.pmm, self.pm1 = sum_yy, sum_y, float(n), 0.0, 0.0
            return
        lengths = np.diff(np.append(self.starts, n)).astype(np.float64)
        gl = g**lengths
        w = (1.0 - gl * gl) / (1.0 - g * g)  # sum of g**2k over each pool
        v1 = (1.0 + g) / (1.0 + gl)  # pool values of the all-ones vector
        vmu = (1.0 - g) * v1
        vmu[-1] += gl[-1] / w[-1]  # mu's last entry is 1, not 1-g
        vy = self.values + b * v1 + lam * vmu  # pool values of y (the projection is linear here)
        wy, wmu = w * vy, w * vmu
        self.qyy = sum_yy - float(wy @ vy)  # ||Q y||²
        self.q1y = sum_y - float(wy @ v1)  # <Q y, Q 1>
        self.q11 = n - float((w * v1) @ v1)  # ||Q 1||²
        self.pmm = float(wmu @ vmu)  # ||P mu||²
        self.pm1 = float(wmu @ v1)  # <P mu, 1>

    def residual(self, lam: float, b: float) -> tuple[float, float]:
        """(||r||², sum r) at (lam, b) if the pools stayed these."""
        rr = self.qyy - 2.0 * b * self.q1y + b * b * self.q11 + lam * lam * self.pmm
        return rr, self.q1y - b * self.q11 + lam * self.pm1

    def newton(self, theta: float, optimize_b: bool) -> tuple[float, float]:
        """(lam, b) meeting ||r|| = theta (and sum r = 0 when b is optimized) with these pools."""
        if self.pmm <= 0.0:  # no pools: the penalty is too large for any calcium
            return 0.5 * self.lam, (self.q1y / self.q11 if optimize_b else self.b)
        if optimize_b:
            # b = b0 + b1 lam zeroes sum r; then r = r0 + lam r1 with r0 = Q y - b0 Q 1,
            # r1 = P mu - b1 Q 1 (P mu is orthogonal to Q anything).
            b0, b1 = self.q1y / self.q11, self.pm1 / self.q11
            r00 = self.qyy - 2.0 * b0 * self.q1y + b0 * b0 * self.q11
            r01 = -b1 * self.q1y + b0 * b1 * self.q11
            r11 = self.pmm + b1 * b1 * self.q11
        else:
            b0, b1 = self.b, 0.0
            r00 = self.qyy - 2.0 * b0 * self.q1y + b0 * b0 * self.q11
            r01, r11 = 0.0, self.pmm
        # ||r0 + lam r1||² = theta²: the larger root (the residual grows with lam). With no
        # root these pools cannot reach theta: take the lam closest to it.
        disc = r01 * r01 - r11 * (r00 - theta * theta)
        lam = max((-r01 + math.sqrt(max(disc, 0.0))) / r11, 0.0)
        return lam, b0 + b1 * lam

    def merit(self, theta: float, optimize_b: bool) -> float:
        """How far (lam, b) is from the solution: 0 exactly there."""
        rr, r1 = self.residual(self.lam, self.b)
        n = self.q11 + (self.q11 == 0)
        m = ((rr - theta * theta) / (theta * theta)) ** 2
        return m + (r1 * r1 / (theta * theta * n) if optimize_b else 0.0)


class _Problem:
    """One trace's constrained problem and the three ways of moving towards its solution."""

    def __init__(self, y: np.ndarray, g: float, theta: float):
        self.y, self.g, self.theta, self.n = y, g, theta, len(y)
        self.powers = _Powers(g, self.n)
        self.mu = np.full(self.n, 1.0 - g)  # sum(s) = <mu, c>
        self.mu[-1] = 1.0
        self.sums = (float(y.sum()), float(y @ y))
        self.projections = 0

    def point(self, lam: float, b: float) -> _Point:
        self.projections += 1
        return _Point(self.y, self.mu, self.sums, self.powers, lam, b)

    def newton(self, point: _Point, optimize_b: bool) -> tuple[_Point, bool]:
        """Semismooth Newton on (lam, b): the pools at the current point give an affine model of
        the residual, its root is the next point, whose projection gives new pools. When the
        pools reproduce themselves the point is exact (True). A step that does not bring the
        residual norm closer to theta (and the mean residual closer to 0) is halved; when that
        stalls (False), the caller falls back to the safeguarded nested search."""
        theta = self.theta
        merit = point.merit(theta, optimize_b)
        for _ in range(_NEWTON_STEPS):
            lam_t, b_t = point.newton(theta, optimize_b)
            step = 1.0
            while step >= _MIN_STEP:
                trial = self.point(point.lam + step * (lam_t - point.lam), point.b + step * (b_t - point.b))
                if trial.key == point.key and step == 1.0:
                    return trial, True
                trial_merit = trial.merit(theta, optimize_b)
                if trial_merit < merit:
                    break
                step *= 0.5
            else:
                return point, False
            point, merit = trial, trial_merit
        return point, False

    def fixed_b(self, b: float, lam: float) -> _Point | None:
        """Exact solution for a fixed baseline, or None when no calcium fits within theta.

        The residual norm grows monotonically with lam, so Newton steps are kept inside a
        bracket [lo, hi] (hi: the penalty that zeroes c) and replaced by bisection when they
        leave it. A Newton step whose pools reproduce themselves is exact."""
        theta2 = self.theta**2
        lo, hi = 0.0, _lambda_max(self.y - b, self.g)
        point = self.point(min(max(lam, lo), hi), b)
        zero_checked = False
        for _ in range(200):
            if point.residual(point.lam, b)[0] <= theta2:
                lo = point.lam
            else:
                hi = point.lam
            target = point.newton(self.theta, False)[0]
            newton_step = lo < target < hi
            if not newton_step:
                if lo == 0.0 and not zero_checked and (target <= 0.0 or hi == 0.0):
                    # The fit may be out of reach: the least-squares fit (lam = 0) decides.
                    zero_checked = True
                    least = self.point(0.0, b)
                    if least.residual(0.0, b)[0] > theta2:
                        return None
                target = 0.5 * (lo + hi)
            trial = self.point(target, b)
            if (newton_step and trial.key == point.key) or hi - lo <= 1e-14 * hi:
                return trial
            point = trial
        return point

    def nested(self, point: _Point) -> _Point:
        """Safeguarded search for the optimal baseline: the optimal sum(s) is convex in b, its
        slope has the sign of -sum(r) at the fixed-b solution, so a sign change of sum(r) brackets
        the optimum (b too high: sum(r) < 0, or no fit at all). Illinois false position on that."""
        scale = float(np.ptp(self.y)) or 1.0

        def side(b: float, lam: float) -> tuple[float, _Point | None]:
            sol = self.fixed_b(b, lam)
            if sol is None:
                return -np.inf, None
            return sol.residual(sol.lam, b)[1], sol

        b0 = point.b
        f0, p0 = side(b0, point.lam)
        step = scale
        b1 = b0 - step if f0 < 0 else b0 + step
        f1, p1 = side(b1, p0.lam if p0 is not None else point.lam)
        for _ in range(60):  # expand until the sign changes
            if (f0 < 0) != (f1 < 0):
                break
            step *= 2.0
            b0, f0, p0 = b1, f1, p1
            b1 = b1 - step if f1 < 0 else b1 + step
            f1, p1 = side(b1, p1.lam if p1 is not None else point.lam)
        (lo, f_lo, p_lo), (hi, f_hi, p_hi) = sorted([(b0, f0, p0), (b1, f1, p1)], key=lambda t: t[0])
        best = p_lo if p_lo is not None else p_hi
        side_kept = 0
        for _ in range(100):
            if hi - lo <= 1e-12 * scale:
                break
            if np.isfinite(f_hi) and f_lo != f_hi:
                b = hi - f_hi * (hi - lo) / (f_hi - f_lo)  # false position
                if not lo < b < hi:
                    b = 0.5 * (lo + hi)
            else:
                b = 0.5 * (lo + hi)
            f, sol = side(b, best.lam)
            if sol is not None:
                best = sol
            if f == 0.0:
                break
            if f > 0:
                lo, f_lo = b, f
                if side_kept == 1:  # Illinois: halve the stale end's weight
                    f_hi = f_hi / 2.0 if np.isfinite(f_hi) else f_hi
                side_kept = 1
            else:
                hi, f_hi = b, f
                if side_kept == -1:
                    f_lo /= 2.0
                side_kept = -1
        return best


def _solve_fast(y: np.ndarray, g: float, theta: float, b: float | None) -> tuple[np.ndarray, np.ndarray, float, float, int]:
    """Exact solution of the constrained problem; returns c, s, b, lam and the number of projections.

    Newton on (lam, b) from a typical starting point converges in 3-5 projections on almost
    every trace; where it stalls (e.g. slow calcium, g > 0.99, with a tight theta) the nested
    search (fixed-b solves in a bracket on b) finds the region and Newton finishes exactly.
    """
    n = len(y)
    optimize_b = b is None
    g = float(g)
    # c = 0 meets the constraint: no spikes needed (lam is then the smallest penalty giving 0).
    b_zero = float(y.mean()) if optimize_b else float(b)
    if np.sum((y - b_zero) ** 2) <= theta * theta:
        return np.zeros(n), np.zeros(n), b_zero, _lambda_max(y - b_zero, g), 0
    problem = _Problem(y, g, theta)
    # Start near a typical solution; for b, the 10th percentile. Only a start: any gives the same result.
    b_start = float(np.partition(y, n // 10)[n // 10]) if optimize_b else float(b)
    point, exact = problem.newton(problem.point(_START * theta / math.sqrt(n) / (1.0 - g), b_start), optimize_b)
    if not exact:
        if optimize_b:
            point, exact = problem.newton(problem.nested(point), True)
        else:
            fixed = problem.fixed_b(float(b), point.lam)
            point, exact = (fixed, True) if fixed is not None else (point, False)
    if not exact:
        log.warning("deconvolution: no exact solution after %d projections; returning the closest found", problem.projections)
    c, s = _expand(point.starts, point.values, n, g)
    return c, s, float(point.b), float(point.lam), problem.projections


def _lambda_max(r: np.ndarray, g: float) -> float:
    """Smallest penalty for which the penalized solution of residual ``r`` is all zeros.

    The projection of ``r - lam mu`` is 0 when every suffix sum of g**(t-j) (r_t - lam mu_t)
    is <= 0 (the last value of an isotonic regression is the largest suffix mean).
    """
    from scipy.signal import lfilter

    n = len(r)
    mu = np.full(n, 1.0 - g)
    mu[-1] = 1.0
    num = lfilter([1.0], [1.0, -g], r[::-1])  # suffix sums sum_{t>=j} g**(t-j) r_t, reversed
    den = lfilter([1.0], [1.0, -g], mu[::-1])
    return float(max(0.0, np.max(num / den)))


def _solve_cvxpy(y: np.ndarray, g: float, theta: float, b: float | None, solver: str | None,
                 options: dict | None) -> tuple[np.ndarray, np.ndarray, float, float, int]:
    import cvxpy as cp

    n = len(y)
    c = cp.Variable(n)
    base = cp.Variable() if b is None else float(b)
    s = cp.hstack([c[:1], c[1:] - g * c[:-1]])
    noise = cp.norm(y - base - c, 2) <= theta
    problem = cp.Problem(cp.Minimize(cp.sum(s)), [s >= 0, noise])
    try:
        problem.solve(solver=solver or "CLARABEL", **(options or {}))
    except cp.error.SolverError as exc:
        raise InputError(f"CVXPY could not solve the deconvolution problem ({exc}); try method='fast'.") from exc
    if c.value is None or problem.status not in ("optimal", "optimal_inaccurate"):
        raise InputError(f"CVXPY reports the deconvolution problem as {problem.status}: check the trace and baseline.")
    cv = np.asarray(c.value, dtype=np.float64)
    sv = np.concatenate(([cv[0]], cv[1:] - g * cv[:-1]))
    lam = float(noise.dual_value) if noise.dual_value is not None else float("nan")
    # The dual variable of ||.|| <= theta is 1/lam of the penalized form with 1/2 ||.||² (scaled by the residual norm).
    lam = theta / lam if lam and np.isfinite(lam) and lam > 0 else float("nan")
    bv = float(base.value) if b is None else float(b)
    iterations = int(problem.solver_stats.num_iters or 0) if problem.solver_stats else 0
    return cv, sv, bv, lam, iterations


# -- public API -------------------------------------------------------------------------------

def _check_trace(y, name: str = "trace") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise InputError(
            f"The {name} must be 1-D (one value per frame), got shape {y.shape}: "
            "pass one trace, or use deconvolve_batch for a traces × frames array."
        )
    if not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y):
        raise InputError(f"The {name} holds {y.dtype} values, not real numbers.")
    if len(y) < MIN_FRAMES:
        raise InputError(f"The {name} has {len(y)} frames; deconvolution needs at least {MIN_FRAMES} to estimate its noise and decay.")
    y = y.astype(np.float64)
    bad = ~np.isfinite(y)
    if bad.any():
        raise InputError(
            f"The {name} has {int(bad.sum())} NaN or infinite values (first at frame {int(np.flatnonzero(bad)[0])}): "
            "interpolate or drop those frames before deconvolving."
        )
    return y


def _check_g(g) -> float:
    g = float(g)
    if not 0.0 < g < 1.0:
        raise InputError(
            f"The AR(1) coefficient g must lie strictly between 0 and 1, got {g:g}: g = exp(-1 / (tau * fs)) "
            "for a decay time tau in seconds at fs frames per second; leave g unset to estimate it."
        )
    return g


def _check_options(method: str, epsilon: float) -> None:
    if method not in METHODS:
        raise InputError(f"Unknown deconvolution method {method!r}: use 'fast' or 'cvxpy'.")
    if not np.isfinite(epsilon) or epsilon <= -1.0:
        raise InputError(f"epsilon must be a number > -1 (theta = (1 + epsilon) sigma sqrt(T)), got {epsilon!r}.")


def deconvolve(
    y,
    g: float | None = None,
    sigma: float | None = None,
    b: float | None = None,
    *,
    method: str = "fast",
    epsilon: float = 0.0,
    solver: str | None = None,
    solver_options: dict | None = None,
) -> Deconvolution:
    """Deconvolve one fluorescence trace into calcium ``c`` and spikes ``s`` (AR(1) model).

    Parameters
    ----------
    y:
        The trace, one value per frame (at least :data:`MIN_FRAMES`).
    g:
        AR(1) coefficient in (0, 1); estimated from the autocovariance when None.
    sigma:
        Noise standard deviation; estimated from the power spectrum when None.
    b:
        Baseline; optimized jointly with ``c`` when None (the problem stays convex and exact).
    method:
        ``"fast"`` (exact active-set solver) or ``"cvxpy"`` (reference, ~100x slower).
    epsilon:
        Slack of the noise constraint, ``theta = (1 + epsilon) sigma sqrt(T)``.
    solver, solver_options:
        CVXPY solver name (default CLARABEL) and its options (e.g. tolerances) for ``method="cvxpy"``.
    """
    y = _check_trace(y)
    _check_options(method, epsilon)
    n = len(y)
    if np.ptp(y) == 0.0:  # a dead or saturated ROI: nothing to deconvolve, and no noise to scale by
        gg = _check_g(g) if g is not None else G_RANGE[0]
        return Deconvolution(np.zeros(n), np.zeros(n), float(y[0]) if b is None else float(b), gg, 0.0, 0.0, 0.0, method)
    if sigma is None:
        sigma = noise_std(y)
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma <= 0.0:
        raise InputError(f"The noise level sigma must be a positive number, got {sigma!r}; leave it unset to estimate it.")
    g = estimate_g(y, sigma) if g is None else _check_g(g)
    if b is not None:
        b = float(b)
        if not np.isfinite(b):
            raise InputError(f"The baseline b must be a finite number, got {b!r}; leave it unset to estimate it.")
    theta = (1.0 + epsilon) * sigma * math.sqrt(n)
    if b is not None and np.sum(np.minimum(y - b, 0.0) ** 2) > theta * theta:
        raise InputError(
            f"The baseline b={b:g} lies above too much of the trace: no non-negative calcium fits it within the noise. "
            "Give a lower baseline, or leave b unset to estimate it."
        )
    if method == "fast":
        c, s, bv, lam, iterations = _solve_fast(y, g, theta, b)
    else:
        c, s, bv, lam, iterations = _solve_cvxpy(y, g, theta, b, solver, solver_options)
    if b is not None and np.linalg.norm(y - bv - c) > theta * (1.0 + 1e-6) + 1e-12:
        raise InputError(
            f"With the baseline fixed at b={b:g} no AR(1) calcium with g={g:.3f} fits the trace within the noise "
            f"(theta={theta:.4g}). Give a lower baseline, or leave b unset to estimate it."
        )
    return Deconvolution(c, s, bv, float(g), sigma, theta, lam, method, iterations)


def _deconvolve_rows(rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], epsilon: float, progress: Progress | None = None):
    """Fast solver over rows of traces with their g, sigma and baselines (NaN baseline: optimize)."""
    Y, gs, sigmas, bs = rows
    out_c = np.zeros_like(Y)
    out_s = np.zeros_like(Y)
    out_b = np.zeros(len(Y))
    out_theta = np.zeros(len(Y))
    out_lam = np.zeros(len(Y))
    for i in range(len(Y)):
        if progress is not None and i % 32 == 0:
            progress.check()
            progress.report(i / len(Y))
        b = None if np.isnan(bs[i]) else float(bs[i])
        if sigmas[i] <= 0.0:  # constant trace
            out_b[i] = Y[i, 0] if b is None else b
            continue
        theta = (1.0 + epsilon) * sigmas[i] * math.sqrt(Y.shape[1])
        out_c[i], out_s[i], out_b[i], out_lam[i], _ = _solve_fast(Y[i], float(gs[i]), theta, b)
        out_theta[i] = theta
    return out_c, out_s, out_b, out_theta, out_lam


def deconvolve_batch(
    Y,
    g: float | np.ndarray | None = None,
    sigma: float | np.ndarray | None = None,
    b: float | np.ndarray | None = None,
    *,
    epsilon: float = 0.0,
    scheduler: str | None = None,
    chunk_size: int = 256,
    progress: Progress | None = None,
) -> BatchDeconvolution:
    """Deconvolve every row of ``Y`` (traces × frames) with the fast solver.

    ``g``, ``sigma`` and ``b`` may be None (estimated per trace; the estimates are vectorized
    over all rows), one number for all traces, or one per trace. Traces are solved in chunks of
    ``chunk_size``: serially in this process for small batches (starting worker processes
    costs seconds, more than ~10^7 samples take here), else through
    :func:`engine.parallel.parallel_map` (``scheduler`` as there; None reads
    ``NEUROWB_SCHEDULER``; "auto" picks by size: serial, or a local process cluster; an
    address sends every chunk there).
    """
    progress = as_progress(progress)
    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise InputError(f"Traces must be a 2-D array (traces × frames), got shape {Y.shape}.")
    n_traces, n = Y.shape
    if n_traces == 0:
        raise InputError("No traces to deconvolve: the array has 0 rows.")
    if n < MIN_FRAMES:
        raise InputError(f"The traces have {n} frames; deconvolution needs at least {MIN_FRAMES}.")
    Y = Y.astype(np.float64)
    bad_rows = np.flatnonzero(~np.isfinite(Y).all(axis=1))
    if len(bad_rows):
        raise InputError(
            f"{len(bad_rows)} traces contain NaN or infinite values (first: row {int(bad_rows[0])}): "
            "interpolate or drop those frames or traces before deconvolving."
        )
    _check_options("fast", epsilon)
    sigmas = noise_std(Y) if sigma is None else np.broadcast_to(np.asarray(sigma, dtype=np.float64), (n_traces,)).copy()
    constant = np.ptp(Y, axis=1) == 0.0
    sigmas = np.where(constant, 0.0, sigmas)
    if np.any(~constant & ~(sigmas > 0)):
        raise InputError("Every noise level sigma must be a positive number; leave sigma unset to estimate it.")
    if g is None:
        gs = estimate_g(Y, np.where(constant, 1.0, sigmas))
    else:
        gs = np.broadcast_to(np.asarray(g, dtype=np.float64), (n_traces,)).copy()
        for value in np.unique(gs):
            _check_g(value)
    bs = np.full(n_traces, np.nan) if b is None else np.broadcast_to(np.asarray(b, dtype=np.float64), (n_traces,)).copy()

    chunks = [(Y[i:i + chunk_size], gs[i:i + chunk_size], sigmas[i:i + chunk_size], bs[i:i + chunk_size])
              for i in range(0, n_traces, chunk_size)]  # fmt: skip
    from engine.parallel import requested_scheduler

    scheduler = requested_scheduler(scheduler)
    if scheduler == "auto" and Y.size < 2e7:
        scheduler = "serial"
    if scheduler == "serial":
        parts = []
        stages = progress.split([len(ch[0]) for ch in chunks])
        for chunk, stage in zip(chunks, stages):
            parts.append(_deconvolve_rows(chunk, epsilon, stage))
            stage.report(1.0)
    else:
        from engine.parallel import parallel_map

        parts = parallel_map(functools.partial(_deconvolve_rows, epsilon=epsilon), chunks, scheduler=scheduler,
                             progress=progress, label="deconvolving", processes=True)  # fmt: skip
    C, S, B, theta, lam = (np.concatenate(x) for x in zip(*parts))
    return BatchDeconvolution(C, S, B, gs, sigmas, theta, lam)


# -- spike events -----------------------------------------------------------------------------

def spike_events(s: np.ndarray, threshold: float) -> np.ndarray:
    """Frames of spike events: runs of consecutive frames with ``s > threshold``, each at its largest ``s``.

    The L1 solution may split one spike over two frames when noise blurs its onset; a run
    counts once. ``threshold`` is in the units of the trace (e.g. a fraction of a typical
    single-spike amplitude).
    """
    s = np.asarray(s)
    above = np.flatnonzero(s > threshold)
    if len(above) == 0:
        return above
    runs = np.split(above, np.flatnonzero(np.diff(above) > 1) + 1)
    return np.array([run[np.argmax(s[run])] for run in runs])


def match_events(detected: np.ndarray, true: np.ndarray, tolerance: int = 2) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives): each true event matches at most one
    detection within ``tolerance`` frames, earliest first."""
    true = np.sort(np.asarray(true))
    used = np.zeros(len(true), dtype=bool)
    tp = 0
    for frame in np.sort(np.asarray(detected)):
        j = int(np.searchsorted(true, frame - tolerance))
        while j < len(true) and true[j] <= frame + tolerance:
            if not used[j]:
                used[j] = True
                tp += 1
                break
            j += 1
    return tp, len(detected) - tp, len(true) - tp
