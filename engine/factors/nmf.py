"""Non-negative matrix factorization of latents by HALS in torch (CPU or CUDA), chunked over rows.

``X (n × d) ≈ W (n × k) · H (k × d)`` with W, H ≥ 0: rows of X are the 64-d latents of n
positions, rows of H the k factors (the paper's basis U = Hᵀ), rows of W each position's
coefficients (the paper's V = Wᵀ), which make the factor heatmaps.

Why it is fast and memory-aware
-------------------------------
HALS updates one column of W (or row of H) at a time in closed form. The W update of a row
needs only that row of ``X·Hᵀ`` and the k×k matrix ``H·Hᵀ``, so rows are independent: one
pass over X in chunks of rows updates W chunk by chunk, and in the same pass accumulates the
small Gram matrices ``WᵀW`` (k×k) and ``WᵀX`` (k×d) that are all the H update needs (in
float64, so 5.5M-row sums keep their digits). An iteration is one read of X and O(n·d·k)
flops; memory is X (used in place: zero-copy from a float32 array or memmap), W (n×k) and
per-chunk buffers. The initialization needs the 64×64 Gram matrix XᵀX and nothing larger.

Each pass sweeps the W columns of a chunk ``w_sweeps`` times and H ``h_sweeps`` times (k×d,
free): the "accelerated HALS" of Gillis & Glineur (2012). On dense latents of the texture
mosaic it reached scikit-learn's 200-iteration error in 38 iterations (plain HALS, 1 sweep
each, is scikit-learn's algorithm and needs all 200). A W sweep is k matrix-vector products,
which run ~5× less efficiently than the products with X, so one sweep costs about as much as
``H·Xᵀ``; still, on real micro-CT latents 3 sweeps reach an error in ~4× fewer iterations
than 1 sweep (on the synthetic latent-like matrix 1 and 3 sweeps cost about the same), so 3.

Threads: rows are independent, so on the CPU ``threads`` workers each take a contiguous
block of chunks and run torch single-threaded, meeting once per pass. Torch's own
intra-operation threading would instead put a barrier after each of the ~100 small
operations per chunk; with another job on the machine every barrier waits for a descheduled
thread: measured on the shared 2-core machine (load ~6), 3 iterations on 500k rows took
1.2 s with one thread and 23 s with torch's two threads.

The error of every iteration comes without forming the residual X − WH (which cost a k×d
product per chunk, ~25 % of an iteration): per row, ``‖x_i − w_i H‖² = ‖x_i‖² −
2 w_i·(r_i − ½ HHᵀ w_i)`` with ``r_i`` the row of ``H·Xᵀ`` the W update needs anyway, so the
cost is a k×k product and a few vector operations. The per-row form matters: the same
identity with the k×k and k×d Gram matrices summed over a chunk in float32
(``‖X‖² − 2⟨WᵀX, H⟩ + ⟨WᵀW, HHᵀ⟩``) subtracts numbers of size ‖X‖² each rounded to ~1e-6
‖X‖², which was 1 % wrong in ‖X − WH‖² at 0.5 % relative error; per row, the terms are short
sums and the rounding averages out (~1e-7 of the error at 30 % relative error, ~0.5 % at
0.15 %, where ``tol`` needs far less). ``‖x_i‖²`` is kept from the first pass. The final error
is from the residual itself, once.

Initialization: NNDSVD (Boutsidis & Gallopoulos 2008), identical in definition to
scikit-learn's ``init='nndsvd'`` (zeros where the SVD factors are negative, entries below
1e-6 set to 0). The rank-k SVD comes exactly from the eigendecomposition of XᵀX, not a
randomized one.

Stopping: when the fit has stopped improving meaningfully, measured against how much there
was to improve: over the last ``window`` (10) iterations the relative error fell by less
than ``tol`` (1e-4) × the initialization's error per iteration on average. This is
scikit-learn's stopping rule for its multiplicative-update solver (decrease over 10
iterations ÷ initial error < tol), made 10× looser and checked at every iteration. The
earlier rule, a decrease of less than ``tol`` relative to the current error in one
iteration, never stops on latents that a rank-k fit explains almost exactly (real micro-CT
latents: 0.4 % relative error, still falling ~0.1 % per iteration after 200 iterations)
although the factor maps no longer change (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from engine.device import single_threaded
from engine.errors import InputError
from engine.factors import resolve_device
from engine.progress import Progress, as_progress

log = logging.getLogger(__name__)

DEFAULT_K = 15
DEFAULT_TOL = 1e-4  # stopping rule (see stop()): mean decrease per iteration ÷ the initial error
DEFAULT_WINDOW = 10  # iterations the decrease is averaged over
NNDSVD_EPS = 1e-6  # as scikit-learn


@dataclass
class NMFResult:
    """``W`` (n, k) coefficients ≥ 0, ``H`` (k, d) factors ≥ 0, and how the fit went.

    ``errors[0]`` is the relative error ‖X − WH‖_F / ‖X‖_F of the initialization,
    ``errors[i]`` the one after the W update of iteration i (before its H update: that is
    when the pass over X sees the residual), both from the per-row identity of the module
    docstring. ``times[i]``: seconds from the start to ``errors[i]``. ``final_error``: the
    returned W, H, from the residual itself.
    """

    W: np.ndarray
    H: np.ndarray
    errors: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    final_error: float = float("nan")
    n_iter: int = 0
    converged: bool = False
    seconds: float = 0.0
    device: str = "cpu"
    threads: int = 1

    @property
    def relative_error(self) -> float:
        return self.final_error


def _as_matrix(X) -> np.ndarray:
    """The data as a 2-D float32 array without copying when it already is one (memmaps stay memmaps)."""
    if hasattr(X, "detach"):  # a torch tensor
        X = X.detach().cpu().numpy()
    X = X if isinstance(X, np.ndarray) else np.asarray(X)
    if X.ndim == 3:  # a latent map (rows, cols, d)
        X = X.reshape(-1, X.shape[-1])
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"NMF needs a non-empty 2-D matrix (samples × features) or a (rows, cols, features) latent map; "
                         f"got shape {tuple(X.shape)}.")
    if X.dtype != np.float32 or not X.flags.c_contiguous:
        X = np.ascontiguousarray(X, dtype=np.float32)
    return X


def _chunk_rows(n: int, d: int, k: int, chunk_rows: int | None, gpu: bool) -> int:
    if chunk_rows:
        return max(1, int(chunk_rows))
    if gpu:  # few large launches; 1M rows × 64 is 256 MB
        return int(min(n, 2**20))
    # ~16 MB of X, XHᵀ and W per chunk (~45k rows for d = 64, k = 15): on a 2-core EPYC,
    # 16k–130k rows per chunk cost the same CPU time per iteration, while smaller chunks lose
    # to per-operation overhead (2k rows: 2x slower). 5.5M rows are ~125 chunks.
    return int(min(n, max(1024, 2**24 // (4 * (d + 2 * k)))))


def _serial_torch(device):
    """Torch single-threaded inside (CPU only): the parallelism comes from the row workers."""
    return single_threaded() if device.type == "cpu" else nullcontext()


class _Rows:
    """Row chunks of X on the device, and passes over them split between worker threads.

    X is used in place on the CPU (zero-copy), moved once to a GPU when it fits in half its
    free memory, else streamed chunk by chunk.
    """

    def __init__(self, X: np.ndarray, device, chunk: int, workers: int):
        import warnings

        import torch

        self.X, self.device, self.chunk, self.n = X, device, chunk, X.shape[0]
        self.norms = torch.empty(self.n, dtype=torch.float32, device=device)  # ‖x_i‖², filled by the first pass
        self.resident = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # read-only memmaps: torch warns, but nothing writes to X
            if device.type == "cpu":
                self.resident = torch.from_numpy(X)
            elif device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(device)
                if X.nbytes < 0.5 * free:
                    self.resident = torch.from_numpy(X).to(device)
        bounds = [(s, min(self.n, s + chunk)) for s in range(0, self.n, chunk)]
        self.workers = max(1, min(int(workers), len(bounds)))
        cuts = np.linspace(0, len(bounds), self.workers + 1).round().astype(int)
        self.groups = [bounds[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
        self.bounds = bounds
        self._executor = None
        if self.workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="nmf-rows")
        self._local = threading.local()

    def get(self, s: int, e: int):
        import torch

        if self.resident is not None:
            return self.resident[s:e]
        return torch.from_numpy(np.ascontiguousarray(self.X[s:e])).to(self.device, non_blocking=True)

    def buffer(self, rows: int, cols: int):
        """A per-thread scratch (rows × cols) float32 array, reused across chunks."""
        import torch

        buf = getattr(self._local, "buf", None)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != cols:
            buf = self._local.buf = torch.empty(max(rows, self.chunk), cols, dtype=torch.float32, device=self.device)
        return buf[:rows]

    def reduce(self, fn: Callable, progress: Progress | None = None):
        """Sum over chunks of ``fn(s, e, xc)`` (a tuple of numbers/tensors); chunks run in worker threads.

        ``progress`` (optional) gets this pass's fraction; cancellation is checked per chunk.
        """
        def run(group):
            acc = None
            for s, e in group:
                if progress is not None:
                    progress.check()
                out = fn(s, e, self.get(s, e))
                acc = out if acc is None else tuple(a + b for a, b in zip(acc, out))
                if progress is not None:  # each worker reports how far it is through its own rows
                    progress.report((e - group[0][0]) / max(1, group[-1][1] - group[0][0]))
            return acc

        if self._executor is None:
            results = [run(g) for g in self.groups]
        else:
            results = list(self._executor.map(run, self.groups))
        results = [r for r in results if r is not None]
        out = results[0]
        for r in results[1:]:
            out = tuple(a + b for a, b in zip(out, r))
        return out

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)


def _check_values(xc) -> None:
    import torch

    if not bool(torch.isfinite(xc).all()):
        raise InputError("The matrix has NaN or infinite values: recompute the latents (or drop those rows) before NMF.")
    low = float(xc.min())
    if low < 0:
        raise InputError(f"NMF needs non-negative data but the matrix has negative values (minimum {low:.4g}): use the "
                         "latents after the network's ReLU (engine.factors.dense), or shift/clip the data first.")


def _row_norms(rows: "_Rows", s: int, e: int, xc) -> float:
    """Keep ‖x_i‖² of rows s..e (for the error, see :func:`_fit`); their sum, accumulated in float64."""
    import torch

    torch.sum(xc.square(), 1, out=rows.norms[s:e])
    return float(rows.norms[s:e].sum(dtype=torch.float64))


def _workers(device, threads: int | None) -> int:
    import torch

    if device.type != "cpu":
        return 1
    return max(1, int(threads) if threads else torch.get_num_threads())


def _nndsvd(rows: _Rows, k: int, progress: Progress):
    """NNDSVD from the Gram matrix: (Wᵀ as a (k, n) tensor, H (k, d), ‖X‖²)."""
    import torch

    n, d = rows.X.shape
    dev = rows.device
    gram_stage, u_stage, w_stage = progress.split([1, 1, 1], ["Gram matrix", "Singular vectors", "NNDSVD"])

    def gram_part(s, e, xc):
        _check_values(xc)
        # float32 products: ample for the SVD; ‖X‖² summed in float64, since the error is ‖X‖² minus a near-equal number
        return (xc.T @ xc).double(), _row_norms(rows, s, e, xc)

    gram, norm2 = rows.reduce(gram_part, gram_stage)
    if norm2 <= 0:
        raise InputError("The matrix is all zeros: there is nothing to factorize (did the network produce dead latents?).")
    evals, evecs = torch.linalg.eigh(gram)
    order = torch.argsort(evals, descending=True)[:k]
    sig = torch.sqrt(torch.clamp(evals[order], min=0.0))  # singular values
    V = evecs[:, order].T  # (k, d) right singular vectors
    inv = torch.where(sig > 0, 1.0 / sig.clamp(min=1e-300), torch.zeros_like(sig))
    proj = (V.T * inv).float()  # (d, k): U = X Vᵀ / σ
    WT = torch.empty(k, n, dtype=torch.float32, device=dev)  # U, then W, stored transposed

    def u_part(s, e, xc):
        u = (xc @ proj).T
        WT[:, s:e] = u
        return ((u.clamp(min=0).double() ** 2).sum(1), (u.clamp(max=0).double() ** 2).sum(1))

    pos2, neg2 = rows.reduce(u_part, u_stage)
    Vp, Vn = V.clamp(min=0), (-V).clamp(min=0)
    H = torch.zeros(k, d, dtype=torch.float64, device=dev)
    scale = torch.zeros(k, dtype=torch.float64, device=dev)
    sign = torch.ones(k, dtype=torch.float64, device=dev)  # +1: max(u, 0); −1: max(−u, 0); 0: |u|
    for j in range(k):
        if j == 0:  # the leading pair has one sign (Perron–Frobenius): absolute values
            H[0] = torch.sqrt(sig[0]) * V[0].abs()
            scale[0], sign[0] = torch.sqrt(sig[0]), 0.0
            continue
        xp, xn = math.sqrt(float(pos2[j])), math.sqrt(float(neg2[j]))
        yp, yn = float(torch.linalg.norm(Vp[j])), float(torch.linalg.norm(Vn[j]))
        mp, mn = xp * yp, xn * yn
        if mp > mn:
            lam = math.sqrt(float(sig[j]) * mp)
            H[j], scale[j], sign[j] = lam * Vp[j] / yp, lam / xp, 1.0
        elif mn > 0:
            lam = math.sqrt(float(sig[j]) * mn)
            H[j], scale[j], sign[j] = lam * Vn[j] / yn, lam / xn, -1.0
        else:
            scale[j] = 0.0
    H = H.float()
    H[H < NNDSVD_EPS] = 0
    scale, sign = scale.float()[:, None], sign.float()[:, None]

    def w_part(s, e, xc):
        u = WT[:, s:e]
        w = torch.where(sign == 0, u.abs(), (sign * u).clamp(min=0)) * scale
        w[w < NNDSVD_EPS] = 0
        u.copy_(w)
        return (0.0,)

    rows.reduce(w_part, w_stage)
    return WT, H, norm2


def nndsvd_init(X, k: int = DEFAULT_K, device=None, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """NNDSVD (W (n, k), H (k, d)) as numpy arrays, e.g. to give scikit-learn the same start (init='custom')."""
    X = _as_matrix(X)
    n, d = X.shape
    if not 1 <= k <= min(n, d):
        raise InputError(f"The number of factors k must be between 1 and min(samples, features) = {min(n, d)}; got {k}.")
    dev = resolve_device(device)
    rows = _Rows(X, dev, _chunk_rows(n, d, k, None, dev.type != "cpu"), _workers(dev, threads))
    try:
        with _serial_torch(dev):
            WT, H, _ = _nndsvd(rows, k, as_progress(None))
    finally:
        rows.close()
    return np.ascontiguousarray(WT.T.cpu().numpy()), H.cpu().numpy()


def _sweep_rows(M, G, R, sweeps: int) -> None:
    """HALS on the rows of ``M`` (k × m): M[j] ← max(0, M[j] + (R[j] − G[j]·M) / G[j, j]), in place.

    For the W update M = Wᵀ chunk, G = HHᵀ, R = H Xᵀ chunk; for H, M = H, G = WᵀW, R = WᵀX.
    Dividing row j of G and R by G[j, j] and zeroing G's diagonal turns the update into
    M[j] ← max(0, R'[j] − G'[j]·M): two array operations per row instead of three (the
    matrix-vector product no longer reads M[j], so it can be written straight into M[j]).
    A zero diagonal (an empty factor) leaves that row alone, as scikit-learn does.
    """
    import torch

    diag = G.diagonal().clone()
    live = (diag > 0).tolist()
    scale = torch.where(diag > 0, 1.0 / diag.clamp(min=torch.finfo(diag.dtype).tiny), torch.zeros_like(diag))[:, None]
    Gs = G * scale
    Gs.fill_diagonal_(0.0)
    Rs = R * scale
    buf = torch.empty_like(M[0])
    for _ in range(sweeps):
        for j, ok in enumerate(live):
            if ok:
                torch.addmv(Rs[j], M.T, Gs[j], beta=1.0, alpha=-1.0, out=buf)
                torch.clamp(buf, min=0.0, out=M[j])


def nmf(X, k: int = DEFAULT_K, *, max_iter: int = 200, tol: float = DEFAULT_TOL, window: int = DEFAULT_WINDOW,
        w_sweeps: int = 3, h_sweeps: int = 10,
        init: str = "nndsvd", W=None, H=None, device=None, threads: int | None = None, chunk_rows: int | None = None,
        progress: Progress | None = None) -> NMFResult:
    """Factorize non-negative ``X`` (n × d, or a (rows, cols, d) latent map) as W·H with k factors.

    Stops after ``max_iter`` iterations or when the fit has stopped improving: the relative
    error fell by less than ``tol`` × the initialization's error per iteration, on average over
    the last ``window`` iterations (:func:`stop`; ``tol=0`` runs all ``max_iter``).
    ``init='custom'`` starts from given ``W`` (n, k) and ``H`` (k, d). ``threads`` (CPU): row workers, default torch's thread count (set by
    :func:`engine.device.configure_threads`). Progress is reported and cancellation checked
    after every chunk of rows.
    """
    progress = as_progress(progress)
    start = time.perf_counter()
    X = _as_matrix(X)
    n, d = X.shape
    if not 1 <= k <= min(n, d):
        raise InputError(f"The number of factors k must be between 1 and min(samples, features) = {min(n, d)}; got {k}.")
    if max_iter < 0 or tol < 0 or window < 1 or w_sweeps < 1 or h_sweeps < 1:
        raise InputError("max_iter and tol must be ≥ 0, and the window and sweep counts ≥ 1.")
    if init not in ("nndsvd", "custom"):
        raise InputError(f"Unknown NMF initialization '{init}': use 'nndsvd' or 'custom'.")
    if init == "custom":
        if W is None or H is None:
            raise InputError("init='custom' needs both W (samples × k) and H (k × features).")
        W, H = np.asarray(W, dtype=np.float32), np.asarray(H, dtype=np.float32)
        if W.shape != (n, k) or H.shape != (k, d):
            raise InputError(f"Custom W/H have shapes {W.shape} and {H.shape}; expected ({n}, {k}) and ({k}, {d}).")
        if W.min() < 0 or H.min() < 0:
            raise InputError("Custom W and H must be non-negative.")
    dev = resolve_device(device)
    workers = _workers(dev, threads)
    rows = _Rows(X, dev, _chunk_rows(n, d, k, chunk_rows, dev.type != "cpu"), workers)
    init_stage, fit_stage, final_stage = progress.split([2, max(1, max_iter), 0.3], ["Initializing", "HALS", "Final error"])
    try:
        with _serial_torch(dev):
            return _fit(rows, k, init, W, H, max_iter, tol, window, w_sweeps, h_sweeps, init_stage, fit_stage, final_stage, start)
    finally:
        rows.close()


def stop(errors: list[float], tol: float, window: int) -> bool:
    """Whether the fit has stopped improving (see the module docstring): over the last ``window``
    iterations the relative error fell by less than ``tol`` × ``window`` × the initialization's
    error ``errors[0]``. ``tol`` 0 never stops."""
    if tol <= 0 or len(errors) <= window:
        return False
    return errors[-1 - window] - errors[-1] < tol * window * errors[0]


def _fit(rows: _Rows, k, init, W, H, max_iter, tol, window, w_sweeps, h_sweeps, init_stage, fit_stage, final_stage, start):
    import torch

    n, d = rows.X.shape
    dev = rows.device
    if init == "nndsvd":
        WT, Hf, norm2 = _nndsvd(rows, k, init_stage)
    else:
        WT = torch.from_numpy(np.ascontiguousarray(W.T)).to(dev)
        Hf = torch.from_numpy(H).to(dev)

        def norm_part(s, e, xc):
            _check_values(xc)
            return (_row_norms(rows, s, e, xc),)

        (norm2,) = rows.reduce(norm_part, init_stage)
        if norm2 <= 0:
            raise InputError("The matrix is all zeros: there is nothing to factorize.")

    def residual2(s, e, wc, R, HHt) -> float:
        """‖X_c − W_c H‖² of rows s..e from R = H X_cᵀ and HHᵀ, without forming the residual:
        per row ‖x_i‖² − 2 w_i·(r_i − ½ HHᵀ w_i), then summed (see the module docstring)."""
        T = torch.addmm(R, HHt, wc, alpha=-0.5)
        T.mul_(wc)
        return float(torch.sub(rows.norms[s:e], T.sum(0), alpha=2.0).sum())

    def exact_part(s, e, xc, Hm):
        """‖X_c − W_c H‖² from the residual itself, for the error reported at the end: on near-exact
        data the identity above is only good to ~0.5 % of the error (at 0.15 % relative error)."""
        res = torch.addmm(xc, WT[:, s:e].T, Hm, alpha=-1.0, out=rows.buffer(xc.shape[0], d))
        return (float(torch.linalg.vector_norm(res)) ** 2,)

    def relative(err2: float) -> float:
        return math.sqrt(max(err2, 0.0) / norm2)

    errors, times = [], []
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        HHt = Hf @ Hf.T
        first = it == 1

        def w_part(s, e, xc, Hf=Hf, HHt=HHt, first=first):
            wc = WT[:, s:e]
            R = Hf @ xc.T  # (k, m) = (X Hᵀ)ᵀ for the chunk
            before = residual2(s, e, wc, R, HHt) if first else 0.0  # the initialization's error, on the way
            _sweep_rows(wc, HHt, R, w_sweeps)
            return ((wc @ wc.T).double(), (wc @ xc).double(), residual2(s, e, wc, R, HHt), before)

        A, B, err2, before = rows.reduce(w_part, fit_stage.stage((it - 1) / max_iter, it / max_iter))
        if first:
            errors.append(relative(before))
            times.append(time.perf_counter() - start)
        errors.append(relative(err2))
        times.append(time.perf_counter() - start)
        Hd = Hf.double()
        _sweep_rows(Hd, A, B, h_sweeps)
        Hf = Hd.float()
        fit_stage.report(it / max_iter, f"iteration {it}: relative error {errors[-1]:.5f}")
        if stop(errors, tol, window):
            converged = True
            break
    fit_stage.report(1.0)
    final = relative(rows.reduce(lambda s, e, xc: exact_part(s, e, xc, Hf), final_stage)[0])
    if max_iter == 0:
        errors, times = [final], [time.perf_counter() - start]
    W_out = WT.T.numpy() if dev.type == "cpu" else WT.cpu().numpy().T
    return NMFResult(W=W_out, H=Hf.cpu().numpy(), errors=errors, times=times, final_error=final, n_iter=it, converged=converged,
                     seconds=time.perf_counter() - start, device=str(dev), threads=rows.workers)


def transform(X, H: np.ndarray, *, iterations: int = 50, device=None, threads: int | None = None,
              chunk_rows: int | None = None, progress: Progress | None = None) -> np.ndarray:
    """Coefficients W (n, k) ≥ 0 of new data for fixed factors H (k, d): HALS on W only, chunk by chunk."""
    import torch

    progress = as_progress(progress)
    X = _as_matrix(X)
    H = np.asarray(H, dtype=np.float32)
    if H.ndim != 2 or H.shape[1] != X.shape[1]:
        raise InputError(f"The factors have shape {H.shape} but the data have {X.shape[1]} features per sample: use "
                         "factors computed from latents of the same network.")
    dev = resolve_device(device)
    k = H.shape[0]
    Ht = torch.from_numpy(H).to(dev)
    HHt = Ht @ Ht.T
    rows = _Rows(X, dev, _chunk_rows(*X.shape, k, chunk_rows, dev.type != "cpu"), _workers(dev, threads))
    W = np.empty((X.shape[0], k), dtype=np.float32)

    def part(s, e, xc):
        _check_values(xc)
        R = Ht @ xc.T
        wc = torch.clamp(torch.linalg.lstsq(HHt.double(), R.double()).solution.float(), min=0)  # warm start
        _sweep_rows(wc, HHt, R, iterations)
        W[s:e] = wc.T.cpu().numpy()
        return (0.0,)

    try:
        with _serial_torch(dev):
            rows.reduce(part, progress)
    finally:
        rows.close()
    return W


def match_factors(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair the factor maps of two fits: columns of ``A`` (n, k) with columns of ``B`` (n, k).

    Pearson correlation over the n positions between every pair of columns, then the pairing
    that maximizes the summed correlation (Hungarian algorithm): NMF factors come in no fixed
    order. Returns (``order``, ``corr``): column ``i`` of A goes with column ``order[i]`` of B,
    with correlation ``corr[i]`` (a constant column correlates 0).
    Rows are read in chunks, so memmaps of millions of positions are fine.
    """
    from scipy.optimize import linear_sum_assignment

    A, B = np.asarray(A).reshape(-1, np.shape(A)[-1]), np.asarray(B).reshape(-1, np.shape(B)[-1])
    if A.shape != B.shape:
        raise InputError(f"The two fits have maps of shape {A.shape} and {B.shape}: compare fits of the same latents and k.")
    n, k = A.shape
    sums, cross = np.zeros(2 * k), np.zeros((2 * k, 2 * k))
    for s in range(0, A.shape[0], 1 << 18):
        c = np.hstack([A[s:s + (1 << 18)], B[s:s + (1 << 18)]]).astype(np.float64)
        sums += c.sum(0)
        cross += c.T @ c
    cov = cross - np.outer(sums, sums) / n
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(cov / np.outer(sd, sd))[:k, k:]
    rows, cols = linear_sum_assignment(corr, maximize=True)  # rows come back as 0..k-1
    return cols, corr[rows, cols]
