"""Laplacian eigenpairs band by band (shift-invert), with exact bookkeeping by inertia.

The generalized problem ``L φ = λ M φ`` (``M`` diagonal, positive) is solved in the
equivalent standard form ``A ψ = λ ψ`` with ``A = M^-1/2 L M^-1/2`` and ``φ = M^-1/2 ψ``; the
returned eigenvectors are the generalized ones, M-orthonormal (``φᵀ M φ = 1``), so that the
heat kernel is ``k_t(x, x) = Σ exp(-λ t) φ(x)²``.

Band by band (Vallet & Lévy 2008): for a shift σ, a Krylov solver on ``(A - σI)⁻¹`` returns
the ``k`` eigenvalues nearest σ, so every eigenvalue strictly inside ``(σ - r, σ + r)`` (``r``
the distance to the farthest one returned) is known. Bands move up the spectrum from a cut
point below which every eigenvalue has been accepted:

* each band must reach below the cut (else it is recomputed with a lower shift);
* it accepts its eigenvalues from the cut up to a new cut in the middle of the widest gap in
  the top quarter of its trusted range. Cutting in a wide gap means the next band, whose
  eigenvalues differ from this band's by round-off, can neither count an eigenpair twice nor
  drop one, and a cluster of (near-)degenerate eigenvalues is never split.

Inertia (Sylvester's law) makes this exact rather than heuristic. The shift-invert
factorization of ``A - σI`` is an LDLᵀ (SuperLU in symmetric mode with diagonal pivots) and
its number of negative pivots is the number of eigenvalues below σ. It is used three ways:

* ``ν(λmax)``, one factorization up front, is the exact number of eigenpairs to find;
* shifts are placed by count: the next σ is moved (and refactorized, which is cheap next to a
  band) until ~45 % of a band's eigenvalues lie between the cut and σ, so bands overlap by
  ~10 % and none is wasted on a wrong density guess (Lévy–Zhang's "max + 0.4 width" rule is
  the same idea without the count);
* after each band, the eigenvalues accepted below σ must number ``ν(σ)``, and at the end the
  total must be ``ν(λmax)``. Accepted eigenpairs above σ are held back until a later count
  confirms them; on a mismatch (Lanczos-type solvers can miss a copy of a multiple
  eigenvalue) the unconfirmed ones are recomputed with more vectors. Counts are in ``stats``.
"""

from __future__ import annotations

import logging
import math
from typing import Iterator

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp
import scipy.sparse.linalg as sla

from engine.device import single_threaded
from engine.progress import Progress, as_progress

log = logging.getLogger(__name__)

#: Matrices up to this size are solved densely (LAPACK is faster than any band below ~1.5k).
DENSE_MAX = 1200
#: Eigenvalues per band when the caller does not say (see benchmarks/hks.py for the trade-off).
DEFAULT_BAND_SIZE = 100
#: Fraction of a band that overlaps the previous band.
_OVERLAP = 0.1
_MAX_RETRIES = 6
#: SuperLU solves up to 7 right-hand sides at ~0.35 of the single-vector cost per column, but
#: 8 or more take ~2x the single-vector cost per column (scipy 1.17; benchmarks/hks.py
#: measures it): blocks are solved in groups of this size.
_SOLVE_COLUMNS = 6
#: Block size of the block Krylov solver.
_BLOCK = 6


def standard_form(L: sp.spmatrix, M: sp.spmatrix, dtype=np.float64) -> tuple[sp.csc_matrix, np.ndarray]:
    """``(A, s)`` with ``A = S L S`` symmetric, ``S = diag(s)``, ``s = 1/sqrt(diag(M))``."""
    mass = np.asarray(M.diagonal() if sp.issparse(M) else np.diag(M), dtype=np.float64)
    s = 1.0 / np.sqrt(mass)
    A = sp.diags(s) @ sp.csr_matrix(L, dtype=np.float64) @ sp.diags(s)
    A = 0.5 * (A + A.T)  # exact symmetry for LAPACK/ARPACK
    return sp.csc_matrix(A, dtype=dtype), s


def dense_spectrum(L, M, max_eigenvalue: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All eigenpairs (or those with λ <= max_eigenvalue) by dense LAPACK; φ M-orthonormal."""
    A, s = standard_form(L, M)
    A = A.toarray()
    # Scaled to unit norm: LAPACK was seen to crawl (10-50x) on the unscaled matrices, whose
    # entries span 1e-9..1e-1 in nm⁻².
    scale = max(float(np.abs(A).max()), 1e-300)
    if max_eigenvalue is None or not np.isfinite(max_eigenvalue):
        w, v = la.eigh(A / scale)
    else:
        w, v = la.eigh(A / scale, subset_by_value=(-np.inf, float(max_eigenvalue) / scale))
    return w * scale, v * s[:, None]


def iterate_bands(
    L: sp.spmatrix,
    M: sp.spmatrix,
    max_eigenvalue: float,
    *,
    band_size: int | None = None,
    dtype: str | np.dtype = "float64",
    tol: float | None = None,
    dense_max: int = DENSE_MAX,
    solver: str = "block",
    seed: int = 0,
    lower: tuple[float, int] | None = None,
    count: int | None = None,
    progress: Progress | None = None,
    stats: dict | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(eigenvalues, eigenvectors)`` band by band, ascending, below ``max_eigenvalue``.

    Every eigenpair with ``λ <= max_eigenvalue`` is yielded exactly once (see the module
    docstring for how overlaps are resolved and verified); eigenvectors are the generalized
    ones (``L φ = λ M φ``, M-orthonormal), ``n × b`` in ``dtype``. The caller can accumulate
    what it needs from each band and drop it, so memory stays at one band.

    Parameters
    ----------
    band_size:
        Eigenpairs requested per band (default :data:`DEFAULT_BAND_SIZE`).
    dtype:
        "float64" or "float32": precision of the Krylov basis and the eigenvectors returned.
        The shift-invert factorization is always float64: in float32 its residual was ~1e-3
        on real meshes (A - σI is nearly singular by design), far too inaccurate.
    tol:
        Relative residual tolerance of the eigenpairs of (A - σI)⁻¹ (default 1e-8 for
        float64, 1e-3 for float32).
    dense_max:
        Problems with at most this many vertices are solved densely in one band.
    solver:
        "block" (block Krylov, :func:`_block_krylov`) or "arpack" (scipy's eigsh, as the
        published implementation; slower: see benchmarks/hks.py).
    lower:
        ``(λ_lo, ν(λ_lo))``: only the slice ``λ_lo <= λ < max_eigenvalue``, given the number
        of eigenvalues below λ_lo (:func:`slices`). Slices are independent problems, so
        several can run in parallel threads.
    count:
        ν(max_eigenvalue) when the caller knows it (saves a factorization).
    stats:
        If given, filled with ``n_eigenpairs``, ``n_bands``, ``n_factorizations``,
        ``n_retries``, ``n_inertia_checks`` and ``n_inertia_mismatches``.
    """
    progress = as_progress(progress)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    stats = stats if stats is not None else {}
    for key in ("n_eigenpairs", "n_bands", "n_factorizations", "n_retries", "n_inertia_checks", "n_inertia_mismatches"):
        stats.setdefault(key, 0)
    n = L.shape[0]
    lam_max = float(max_eigenvalue)
    if n == 0:
        return
    if n <= dense_max:
        # One BLAS thread for the many small dense operations: on a shared 2-core machine
        # OpenBLAS with 2 threads made eigh/QR of a band (~100-300 wide) 20-80x slower whenever
        # the other core was busy. Parallelism comes from chunks instead.
        with single_threaded():
            w, phi = dense_spectrum(L, M, lam_max)
        stats["n_bands"] += 1
        stats["n_eigenpairs"] += len(w)
        progress.report(1.0)
        if len(w):
            yield w, phi.astype(dtype, copy=False)
        return

    if solver not in ("block", "arpack"):
        raise ValueError(f"solver must be 'block' or 'arpack', got {solver!r}")
    eigensolver = _block_krylov if solver == "block" else _arpack
    A, s = standard_form(L, M)  # the factorization stays float64 (see _factorize)
    # float32: 1e-3 changed the HKS by < 1e-6 (median) vs 1e-5 on a 22k-vertex chunk, and was 15 % faster.
    tol = (1e-8 if dtype == np.float64 else 1e-3) if tol is None else float(tol)
    k_full = max(4, min(int(band_size or DEFAULT_BAND_SIZE), n // 3))
    rng = np.random.default_rng(seed)
    # Round-off of computed eigenvalues: relative to their distance from σ (shift-invert), plus
    # an absolute floor. Keeps trust limits and cuts off numerical ties.
    eps_rel = 1e-8 if dtype == np.float64 else 1e-5
    eps_abs = abs(float(A.diagonal().max())) * 1e-13
    # Weyl's law for a surface, N(λ) ≈ area·λ/(4π) (+ boundary terms): a first density guess.
    density = 1.2 * float(np.sum(1.0 / s**2)) / (4 * math.pi)

    total = count
    if total is None:
        _, total = _factorize(A, lam_max, progress)  # ν(λmax): how many eigenpairs there are to find
        stats["n_factorizations"] += 1

    # State: every eigenvalue < `verified` has been yielded (n_yielded counts those below the
    # slice too); `pending` holds the accepted ones in [verified, cut), to be confirmed by a
    # later count. A is PSD: the whole spectrum starts just below 0.
    verified = cut = -0.01 / density if lower is None else float(lower[0])
    start_value, n_yielded = verified, (0 if lower is None else int(lower[1]))
    if total is not None and total <= n_yielded:
        progress.report(1.0)
        return
    empty = (np.zeros(0), np.zeros((n, 0), dtype=dtype))
    pending_w, pending_v = empty
    retries = 0
    k_boost = 1.0  # grows after a mismatch, so the recomputed band has more vectors

    while True:
        progress.check()
        n_known = n_yielded + len(pending_w)
        remaining = (total - n_known) if total is not None else density * (lam_max - cut)
        last = remaining <= 0.8 * k_full
        k = k_full if not last else max(8, int(math.ceil(1.25 * remaining)) + 6)
        k = min(n - 2, int(k * k_boost))
        # Eigenvalues wanted between the cut and σ: just under half the band (the rest of the
        # band lies above σ), or half of what is left for the last band.
        target = max(1.0, (0.5 - _OVERLAP / 2) * k if not last else 0.5 * remaining)
        sigma = cut + target / density
        for attempt in range(4):  # place σ by count (a factorization is far cheaper than a band)
            solve, negatives = _factorize(A, sigma, progress)
            stats["n_factorizations"] += 1
            if negatives is None or attempt == 3:
                break
            count = negatives - n_known  # eigenvalues in [cut, σ)
            if 0.6 * target <= count <= 1.15 * target or (last and count <= 1.15 * target):
                break
            # Proportional step, bounded: clusters of equal eigenvalues make the count jump.
            sigma = cut + (sigma - cut) * min(max(target / max(count, 0.5), 0.3), 3.0)
        try:
            with single_threaded():
                vals, vecs = eigensolver(A, solve, sigma, k, tol, rng, dtype)
        except sla.ArpackNoConvergence as exc:
            if retries >= _MAX_RETRIES:
                raise RuntimeError(f"eigensolver did not converge near σ={sigma:.3g} after {retries} retries") from exc
            retries += 1
            stats["n_retries"] += 1
            k_boost *= 1.5
            continue
        order = np.argsort(vals)
        vals, vecs = vals[order], vecs[:, order]
        radius = float(np.abs(vals - sigma).max())
        # Eigenvalues at (round-off) distance of the farthest one may belong to a cluster that
        # continues outside the band: trust only strictly nearer ones.
        trust = radius - max(eps_rel * max(radius, abs(sigma)), 10 * eps_abs)
        bottom, top = sigma - trust, sigma + trust
        if len(vals) > 1 and vals[-1] > vals[0]:
            density = 0.5 * density + 0.5 * (len(vals) - 1) / (vals[-1] - vals[0])
        below = n_known + int(np.count_nonzero((vals >= cut) & (vals < sigma)))
        consistent = None if negatives is None else below == negatives
        log.debug("band σ=%.5g k=%d: found %.5g..%.5g, trusted %.5g..%.5g, cut %.5g, count below σ %s/%s",
                  sigma, k, vals[0], vals[-1], bottom, top, cut, below, negatives)
        if consistent is not None:
            stats["n_inertia_checks"] += 1
        if (bottom > cut and not consistent) or top <= cut:
            # The band does not reach down to the cut (or not beyond it): shift lower.
            if retries >= _MAX_RETRIES:
                raise RuntimeError(f"band-by-band eigensolver could not close a gap above λ={cut:.6g}")
            retries += 1
            stats["n_retries"] += 1
            density *= 1.5
            if retries > 1:  # e.g. a cluster of equal eigenvalues larger than the band
                k_boost *= 1.5
            continue
        if consistent is False:
            # It reaches down, yet an eigenvalue below σ is missing (typically one copy of a
            # multiple eigenvalue): recompute from the last verified point with more vectors.
            if retries < _MAX_RETRIES:
                retries += 1
                stats["n_retries"] += 1
                log.debug("count below σ=%.4g is %d, found %d: recomputing from %.4g", sigma, negatives, below, verified)
                cut, (pending_w, pending_v) = verified, empty
                k_boost *= 1.5
                continue
            stats["n_inertia_mismatches"] += 1
            log.warning("%d eigenvalues below σ=%.4g but %d found; continuing", negatives, sigma, below)

        # New cut: the middle of the widest gap in the top quarter of the trusted range (the
        # span above the last trusted eigenvalue is a gap too: nothing lies there).
        start = max(cut, sigma)
        quarter = start + 0.75 * (top - start)
        edges = np.concatenate([[quarter], vals[(vals >= quarter) & (vals < top)], [top]])
        i = int(np.argmax(np.diff(edges)))
        hi = 0.5 * (edges[i] + edges[i + 1])
        take = (vals >= cut) & (vals < hi) & (vals < lam_max)  # ν(λ) counts eigenvalues < λ
        all_w = np.concatenate([pending_w, vals[take]])
        all_v = np.concatenate([pending_v, (vecs[:, take] * s[:, None]).astype(dtype, copy=False)], axis=1)
        done = hi > lam_max
        if done and total is not None and len(all_w) + n_yielded != total:
            # Everything up to λmax is in reach, yet the total is off: recompute the unconfirmed part.
            if retries < _MAX_RETRIES:
                retries += 1
                stats["n_retries"] += 1
                log.debug("%d eigenvalues below λmax, found %d: recomputing from %.4g", total, len(all_w) + n_yielded, verified)
                cut, (pending_w, pending_v) = verified, empty
                k_boost *= 1.5
                continue
            stats["n_inertia_mismatches"] += 1
            log.warning("%d eigenvalues below λmax=%.4g but %d found; continuing", total, lam_max, len(all_w) + n_yielded)
        if done or consistent is None:
            split = math.inf  # confirmed by the total (or nothing to confirm with): yield all
        else:
            # Everything below σ is confirmed: yield up to the gap that contains σ.
            lower = all_w[all_w < sigma]
            higher = vals[vals >= sigma]
            split = 0.5 * ((lower.max() if len(lower) else cut) + (higher.min() if len(higher) else hi))
        out = all_w < split
        stats["n_bands"] += 1
        retries, k_boost = 0, 1.0
        if out.any():
            n_yielded += int(out.sum())
            stats["n_eigenpairs"] += int(out.sum())
            yield all_w[out], np.ascontiguousarray(all_v[:, out])
        pending_w, pending_v = all_w[~out], all_v[:, ~out]
        if done:
            progress.report(1.0, f"{n_yielded} eigenpairs")
            return
        verified, cut = min(split, hi), hi
        progress.report(min(max(verified - start_value, 0.0) / (lam_max - start_value), 1.0), f"λ ≤ {verified:.3g}: {n_yielded} eigenpairs")


def slices(L: sp.spmatrix, M: sp.spmatrix, max_eigenvalue: float, n: int) -> list[tuple[float, int | None]]:
    """Cut the spectrum below ``max_eigenvalue`` into at most ``n`` slices of about equal counts.

    Returns the upper ends ``[(λ_1, ν(λ_1)), ..., (max_eigenvalue, ν(max_eigenvalue))]``
    (ν(λ): the number of eigenvalues below λ); slice j is ``iterate_bands(...,
    max_eigenvalue=λ_j, count=ν(λ_j), lower=(λ_j-1, ν(λ_j-1)))``, the first one with
    ``lower=None``. Slices are independent problems, to run in parallel threads. By Weyl's
    law the count grows about linearly with λ on a surface, so equal widths give about equal
    counts; the counts themselves are exact (inertia): one factorization per boundary,
    computed in parallel threads (SuperLU releases the GIL). A boundary without a count (an
    exactly singular shift) is dropped, and empty slices too.
    """
    from concurrent.futures import ThreadPoolExecutor

    A, _ = standard_form(L, M)
    lam_max = float(max_eigenvalue)
    n = max(int(n), 1)
    points = [lam_max * (j + 1) / n for j in range(n)]
    with ThreadPoolExecutor(max_workers=n) as pool:
        counts = list(pool.map(lambda x: _factorize(A, x, as_progress(None))[1], points))
    if counts[-1] is None:  # no count at λmax: one slice, which counts for itself
        return [(lam_max, None)]
    out: list[tuple[float, int | None]] = []
    for x, c in zip(points, counts):
        if c is not None and c > (out[-1][1] if out else 0):
            out.append((x, c))
    if not out or out[-1][0] != lam_max:
        out.append((lam_max, counts[-1]))
    return out


def _factorize(A: sp.csc_matrix, sigma: float, progress: Progress):
    """``(solve, negatives)``: a solver for ``(A - σI) x = b`` and the inertia count (or None)."""
    n = A.shape[0]
    shifted = (A - sp.eye(n, dtype=A.dtype, format="csc") * A.dtype.type(sigma)).tocsc()
    try:
        # Symmetric mode with diagonal pivots = LDLᵀ (inertia available); fill-reducing AMD on A+Aᵀ.
        lu = sla.splu(shifted, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
        negatives = int(np.count_nonzero(lu.U.diagonal() < 0)) if np.array_equal(lu.perm_r, lu.perm_c) else None
    except RuntimeError:  # exactly singular (σ on an eigenvalue of a tiny block): pivot freely
        lu = sla.splu(shifted, permc_spec="MMD_AT_PLUS_A")
        negatives = None

    def solve(x: np.ndarray) -> np.ndarray:
        progress.check()  # called every few ms: cancel stays responsive
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1 or x.shape[1] <= _SOLVE_COLUMNS:
            return lu.solve(x)
        return np.hstack([lu.solve(x[:, i : i + _SOLVE_COLUMNS]) for i in range(0, x.shape[1], _SOLVE_COLUMNS)])

    return solve, negatives


def _arpack(A, solve, sigma: float, k: int, tol: float, rng: np.random.Generator, dtype) -> tuple[np.ndarray, np.ndarray]:
    """The k eigenpairs of A nearest σ by ARPACK (scipy eigsh) in shift-invert mode."""
    n = A.shape[0]
    op = sla.LinearOperator((n, n), matvec=solve, dtype=A.dtype)
    ncv = min(n - 1, max(2 * k + 1, 20))
    v0 = rng.standard_normal(n)
    vals, vecs = sla.eigsh(A, k=k, sigma=sigma, OPinv=op, which="LM", tol=tol, ncv=ncv, v0=v0, maxiter=max(300, 10 * n // max(ncv, 1)))
    return np.asarray(vals, dtype=np.float64), vecs.astype(dtype, copy=False)


def _block_krylov(A, solve, sigma: float, k: int, tol: float, rng: np.random.Generator, dtype,
                  block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k eigenpairs of A nearest σ: block Krylov on (A - σI)⁻¹ with Rayleigh–Ritz.

    Why not ARPACK: its Lanczos reorthogonalizes one vector at a time (BLAS-2, memory bound),
    which took ~75 % of a band's time on a 54k-vertex mesh. Here a block of ``b`` vectors is
    solved at once and orthogonalized against the basis by classical Gram–Schmidt in matrix
    products (BLAS-3), with a second pass where the first cancelled much. The projected operator ``H = Vᵀ (A-σI)⁻¹ V`` is
    accumulated from the orthogonalization coefficients; the residual of a Ritz pair is
    ``‖B yₗₐₛₜ‖`` (B the last QR factor), so convergence costs nothing to check. When the basis
    is full, it restarts thickly (Krylov–Schur): it keeps the best Ritz vectors and goes on.
    """
    n = A.shape[0]
    b = int(block or _BLOCK)
    b = max(1, min(b, n // 4))
    max_dim = int(min(n - b, max(3 * k + 2 * b, k + 4 * b)))
    max_dim = max(max_dim - max_dim % b, 2 * b)
    V = np.empty((n, max_dim + b), dtype=dtype, order="F")  # column blocks contiguous for BLAS
    H = np.zeros((max_dim + b, max_dim + b))
    V[:, :b] = np.linalg.qr(rng.standard_normal((n, b)))[0]
    m, start = b, 0  # basis size; columns [start, m) are the block still to be expanded
    for _ in range(10_000):
        W = np.asarray(solve(V[:, start:m].astype(np.float64)), dtype=dtype)
        Vm = V[:, :m]
        before = np.linalg.norm(W, axis=0)
        C = Vm.T @ W
        W -= Vm @ C
        # Second Gram–Schmidt pass only where the first cancelled much (DGKS criterion): it is
        # needed once Ritz vectors converge, and costs as much as the first pass.
        if np.any(np.linalg.norm(W, axis=0) < 0.7 * before):
            C2 = Vm.T @ W
            W -= Vm @ C2
            C += C2
        Q, R = np.linalg.qr(W)
        H[:m, start:m] = C
        H[start:m, :m] = C.T  # exact symmetry of the projected (symmetric) operator
        # Convergence of the k Ritz values largest in magnitude (= nearest σ).
        # (Scaled: LAPACK's default driver crawls on this matrix's 1e4..1e10 dynamic range.)
        if m < k + b and m + b <= max_dim:  # too early to converge: just extend the basis
            V[:, m : m + b] = Q
            H[m : m + b, start:m] = R
            H[start:m, m : m + b] = R.T
            start, m = m, m + b
            continue
        T = H[:m, :m]
        scale = max(float(np.abs(T).max()), 1e-300)
        theta, Y = np.linalg.eigh(T / scale)
        theta *= scale
        sel = np.argsort(-np.abs(theta))[:k]
        res = np.linalg.norm(R @ Y[start:m][:, sel], axis=0)
        # Relative to each Ritz value, with a floor relative to the largest: when σ is very
        # close to an eigenvalue, solves are accurate only relative to that largest |θ|.
        theta_abs = np.abs(theta[sel])
        if np.all(res <= tol * np.maximum(theta_abs, 1e-2 * theta_abs.max())):
            vecs = (Vm @ Y[:, sel].astype(dtype)).astype(dtype, copy=False)
            return sigma + 1.0 / theta[sel], vecs
        # Deflate: a (numerically) rank-deficient block is refilled with random directions.
        weak = np.abs(np.diag(R)) < 1e-10 * max(np.abs(theta).max(), 1e-300)
        if weak.any():
            Z = rng.standard_normal((n, int(weak.sum()))).astype(dtype)
            for _pass in range(2):
                Z -= Vm @ (Vm.T @ Z)
                Z -= Q @ (Q.T @ Z)
            Q[:, weak] = np.linalg.qr(Z)[0]
            R[weak] = 0.0
        if m + b <= max_dim:
            V[:, m : m + b] = Q
            H[m : m + b, start:m] = R
            H[start:m, m : m + b] = R.T
            start, m = m, m + b
            continue
        # Thick restart: keep the best Ritz vectors; A V' = V' Θ + Q (R Y_last) keeps the relation.
        keep = np.argsort(-np.abs(theta))[: min(max_dim - 2 * b, k + max(b, k // 4))]
        keep_n = len(keep)
        V[:, :keep_n] = Vm @ Y[:, keep].astype(dtype)
        coupling = R @ Y[start:m][:, keep]
        H[:] = 0.0
        H[np.arange(keep_n), np.arange(keep_n)] = theta[keep]
        V[:, keep_n : keep_n + b] = Q
        H[keep_n : keep_n + b, :keep_n] = coupling
        H[:keep_n, keep_n : keep_n + b] = coupling.T
        start, m = keep_n, keep_n + b
    raise sla.ArpackNoConvergence("block Krylov did not converge", None, None)
