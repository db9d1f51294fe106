"""Spike sorting by deconvolution (the Kilosort-like model of the project's seed notes).

Model (on whitened data X, channels × time, noise variance σ² = 1 per channel)::

    X = Σ_k a_k ⊛ W_k + noise,   a_{k,t} ~ Exp(λ),   ‖W_k‖_F = 1,   rank W_k = R

MAP inference by coordinate ascent:

* **Amplitudes of unit k** with the others fixed: on the residual R (X minus every other
  unit's spikes) the score is μ_k = R ⋆ W_k, computed as [(U_kᵀR) ⋆ (S_k V_kᵀ)] — project the
  residual on the template's R spatial components, then cross-correlate with its R temporal
  ones (torch ``conv1d``; CUDA when available). The optimum is a_{k,t} = max(0, μ_{k,t} − σ²λ)
  under the approximation that one unit's spikes do not overlap; we enforce that with
  ``find_peaks(distance = template length)``. σ²λ = ``prior_shrinkage`` × the robust SD of μ_k.
  In the pure MAP a spike exists wherever μ > σ²λ; a λ large enough to reject noise (≈ 6 SD)
  would also shrink every amplitude by 6 SD and leave that much of each spike in the residual,
  where similar units pick it up. So detection uses its own heuristic height ``threshold``
  (6 SD) and the prior a mild shrinkage (1 SD).
  A spike is also required to reach ``min_amplitude_fraction`` × the unit's median amplitude, so
  a large unit's template does not claim the leftovers of small ones.
* **Bookkeeping**: scores of *all* units are computed once per time batch with a grouped conv1d;
  adding or removing a spike of unit j at time τ then changes unit k's score only within
  ±(D−1) samples, by a·(W_j ⋆ W_k), the precomputed template cross-correlations (as Kilosort).
  So each coordinate step costs O(spikes × K × D), not a new convolution.
* **Templates of unit k** with amplitudes fixed: W_k ∝ Σ_t a_{k,t} R_t (residual windows with
  unit k added back), truncated to rank R by SVD with the singular values renormalized to unit
  norm. With A the sparse (K·D, T) matrix of amplitudes at each spike's window, the model is Aᵀ·W and
  Σ_t a_{k,t} R_t is row block k of A·R: no (spikes, C, D) array of windows is built (at 384 channels
  that was 280 MB per 4 s batch and half of the deconvolution's time).
* **Initialization**: templates from threshold crossings and clustering
  (:mod:`engine.ephys.clustering`; the number of units is what clustering finds), amplitudes in
  each batch by greedy matching pursuit (at each time the best-matching unit takes the whole
  spike). Started from A = 0, unit-by-unit coordinate ascent lets similar templates share one
  spike (a local optimum that left 25-35 % of big spikes in the residual on SpikeInterface's
  simulations); from the greedy start, the coordinate-ascent sweeps only refine.

* **Clean-up**: units with < ``min_spikes`` spikes, "shadow" units (≥ 70 % of their spikes within 0.5 ms of a
  nearby unit's: they fit another unit's misfit, not a neuron) and single spikes by which a unit fits a much
  bigger neighbour's misfit far more often than chance (:func:`_shadow_spikes`) are dropped;
  near-duplicate templates are merged between template passes. After the last pass, a neuron cut in two is
  made one unit again (:func:`_merge_split_units`): templates ≥ ``split_similarity`` alike within
  ``split_radius_um`` are merged when their spikes fire in turn (the halves drift correction leaves: each
  fires while the probe sits in its range of depths) or form one cloud in PC features (which such pairs
  compute on shared channels), with similar amplitudes and a refractory gap between the two trains. The
  unit's template is the members' aligned, spike-weighted mean; its spikes keep their own trough times.
  Before that, a unit holding two neurons is split (:func:`engine.ephys.clustering.split_units`: two clouds of PC
  features with different spatial footprints), each part taking the template of its own spikes' windows; a part is a
  merge candidate of the rest, so the halves of one drifting neuron (firing in turn) are joined again.
* **Residual detection** (``residual_threshold`` > 0, off by default): threshold crossings of the last pass's residual
  are clustered, clusters that are neither noise nor time-locked to a known unit's spikes become units, and the last
  pass runs again with them (:func:`_residual_units`).

Batches: time is cut into ``batch_seconds`` batches read with D-sample margins; spikes are kept
only when their window starts in the batch's own range. On a CPU with n torch threads the
batches (and the filtering and detection chunks) run n at a time in threads, each
single-threaded: the same result as one at a time, and ~1.8x faster on 2 cores where torch's
own intra-op threads gained ~1.3x (many small ops).

Drift (:mod:`engine.ephys.motion`): after the first detection, the peaks' depths over time give the
probe's motion; when it is corrected (``motion``: ``auto`` corrects when the probe has depth and the
estimate moves ≥ ``motion_min_um``), the whitened file is interpolated back to the reference depths in
place, detection runs again on it, and everything after (templates fixed over the recording) works on
corrected traces. Each spike's position (recording coordinates, before correction) comes from its PC
features' centre of mass plus the displacement at its time and depth.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine.device import single_threaded
from engine.ephys.clustering import detect_peaks, initial_templates, split_units
from engine.ephys.motion import LOCALIZE_RADIUS_UM, check_mode, check_probe, correct_in_place, estimate_motion, localize_peaks, spike_positions
from engine.ephys.preprocess import PreprocessParams, Preprocessor
from engine.ephys.probe import Probe, linear_probe
from engine.errors import InputError
from engine.progress import as_progress

log = logging.getLogger(__name__)
DUPLICATE_MS = 0.3  # two spikes of one unit this close are one spike fitted twice (SpikeInterface's censored period)
MIN_SAMPLE_RATE = 5000.0  # Hz: below it a spike is a handful of samples (LFP, or a wrong rate entered)


@dataclass
class SortParams:
    """Sorter settings; amplitudes and thresholds are in whitened noise SDs."""

    template_ms: float = 3.0  # long enough for the repolarization; 2 ms left 10-20 % of big spikes in the residual
    trough_fraction: float = 0.35  # where the trough sits within the template window
    rank: int = 3
    detect_threshold: float = 5.5  # threshold crossings for initialization
    threshold: float = 6.0  # in score SDs: a spike needs μ above it (find_peaks height)
    prior_shrinkage: float = 1.0  # σ²λ in score SDs: the exponential prior's shrinkage, a = μ − σ²λ
    min_amplitude_fraction: float = 0.35
    amplitude_prior: float = 1.0  # λ of Kilosort 2's amplitude regularizer, used to pick the unit of a spike
    neighbour_radius: float = 60.0  # µm: channels in a unit's snippet for clustering
    exclusion_radius: float = 100.0  # µm: one detection per spike within this distance (big units reach far)
    exclusion_ms: float = 0.4
    min_cluster: int = 25
    max_per_channel: int = 1500
    valley_ratio: float = 0.4
    merge_similarity: float = 0.9
    n_iterations: int = 2  # template updates (a third changed nothing on the benchmarks, +40 % time)
    learn_seconds: float = 24.0  # of recording used by the passes before the last
    n_sweeps: int = 2  # coordinate-ascent sweeps over units per batch
    batch_seconds: float = 4.0
    min_spikes: int = 20
    max_shadow_fraction: float = 0.7  # drop units firing ≥ 70 % within 0.5 ms of a nearby unit
    n_pc_channels: int = 8
    # > 0: threshold crossings of the last pass's residual (in its SDs) are clustered into new units and that pass runs
    # again with them, finding neurons the first detection rarely reached. Off by default: on drift-nonrigid-128 at
    # 4.5 it found 3 of seed 1's 4 missed units (mean accuracy 0.890 → 0.909) but cut a known unit in two on seed 0
    # (0.872 → 0.867), and the extra matching pass costs about a fifth of the sort's time
    residual_threshold: float = 0.0
    # templates this similar within split_radius_um may be one neuron cut in two, merged when their spikes say so
    # (_merge_split_units); the halves of a unit 8 µm from the probe measured 0.649 (drift-nonrigid seed 1)
    split_similarity: float = 0.6
    split_radius_um: float = 60.0
    motion: str = "auto"  # drift correction: "auto", "rigid", "nonrigid" or "off" (engine/ephys/motion.py)
    motion_min_um: float = 5.0  # auto corrects when the estimated displacement reaches this (static benchmarks: ≤ 0.2 µm)
    motion_nonrigid_span_um: float = 1000.0  # auto estimates per depth window on probes spanning at least this
    # the whitened scratch file: int16 (half the disk; reading it back costs a conversion) once float32 would exceed
    # this many GB (384 sites: 87 s of recording), float32 below
    int16_scratch_gb: float = 4.0
    seed: int = 0
    device: str | None = None


@dataclass
class Sorting:
    """A sorting result. Templates are whitened, unit-norm, (K, C, D); spike times are trough samples."""

    spike_times: np.ndarray
    spike_units: np.ndarray
    amplitudes: np.ndarray
    templates: np.ndarray
    template_troughs: np.ndarray
    sample_rate: float
    channels: np.ndarray
    positions: np.ndarray
    whitening: np.ndarray
    preprocess_state: dict
    pc_features: np.ndarray | None = None
    pc_feature_ind: np.ndarray | None = None
    spike_positions: np.ndarray | None = None  # (n, 2) µm, recording coordinates (before drift correction)
    motion: object | None = None  # engine.ephys.motion.Motion when drift was estimated
    info: dict = field(default_factory=dict)

    @property
    def n_units(self) -> int:
        return len(self.templates)

    @property
    def n_samples_template(self) -> int:
        return self.templates.shape[2]

    @property
    def whitening_inverse(self) -> np.ndarray:
        return np.linalg.pinv(self.whitening.astype(np.float64)).astype(np.float32)

    def spike_starts(self) -> np.ndarray:
        return self.spike_times - self.template_troughs[self.spike_units]

    def templates_uv(self) -> np.ndarray:
        """Unwhitened unit-amplitude templates (K, D, C): multiply by an amplitude to get µV."""
        return np.einsum("kcd,ec->kde", self.templates, self.whitening_inverse)

    def reconstruct(self, start: int, stop: int, whitened: bool = False) -> np.ndarray:
        """The model Σ a_k ⊛ W_k for samples ``start:stop`` (samples × channels; µV unless ``whitened``)."""
        start, stop = int(start), int(stop)
        d = self.n_samples_template
        out = np.zeros((max(stop - start, 0), len(self.channels)), np.float32)
        starts = self.spike_starts()
        sel = np.flatnonzero((starts > start - d) & (starts < stop))
        for i in sel:
            a = int(starts[i]) - start
            lo, hi = max(a, 0), min(a + d, len(out))
            out[lo:hi] += self.amplitudes[i] * self.templates[self.spike_units[i]][:, lo - a: hi - a].T
        return out if whitened else out @ self.whitening_inverse.T

    def residual(self, recording, start: int, stop: int, whitened: bool = False) -> np.ndarray:
        """Preprocessed data minus the model for samples ``start:stop`` (the GUI's residual trace)."""
        pre = Preprocessor.from_state(self.preprocess_state, self.positions)
        data = pre.read(recording, start, stop, whiten=whitened)
        return data - self.reconstruct(start, start + len(data), whitened=whitened)


def _low_rank(w: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(U (C,R), s (R), Vt (R,D)) of W truncated to ``rank`` with ‖s‖ = 1."""
    u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    r = min(rank, len(s))
    s = s[:r] / max(np.linalg.norm(s[:r]), 1e-12)
    return u[:, :r], s, vt[:r]


class _Templates:
    """Low-rank templates on a torch device with their pairwise cross-correlations."""

    def __init__(self, templates: np.ndarray, rank: int, device):
        import torch

        self.k, self.c, self.d = templates.shape
        us, ss, vts, ws = [], [], [], []
        for w in templates:
            u, s, vt = _low_rank(w, rank)
            pad = rank - len(s)
            u = np.pad(u, ((0, 0), (0, pad)))
            s = np.pad(s, (0, pad))
            vt = np.pad(vt, ((0, pad), (0, 0)))
            us.append(u)
            ss.append(s)
            vts.append(vt)
            ws.append((u * s) @ vt)
        self.rank = rank
        self.w = np.stack(ws).astype(np.float32)  # (K, C, D) unit norm
        self.device = device
        # projection (K·R, C) and temporal filters (K, R, D) for the grouped conv
        self.u_t = torch.as_tensor(np.concatenate([u.T for u in us]).astype(np.float32), device=device)
        self.sv = torch.as_tensor(np.stack([s[:, None] * vt for s, vt in zip(ss, vts)]).astype(np.float32), device=device)
        w_t = torch.as_tensor(self.w, device=device)
        # wtw[j, k, lag + D - 1] = <W_j at τ, W_k at τ + lag> = Σ_rr' (U_jᵀU_k)_rr' (s_j v_jr ⋆ s_k v_kr')(lag): from the
        # rank-R factors, K²R²(2D-1)D operations instead of the full conv's K²C(2D-1)D (384 channels: 40x fewer)
        # (in blocks of units j: the (jR, KR, 2D-1) cross-correlations stay ≤ ~64 MB however many units)
        gram = (self.u_t @ self.u_t.T).reshape(self.k, rank, self.k, rank)  # (j, r, k, r')
        filters = self.sv.reshape(self.k * rank, 1, self.d)
        self.wtw = torch.empty((self.k, self.k, 2 * self.d - 1), device=device)
        block = max(1, 2**24 // (rank * rank * self.k * (2 * self.d - 1)))
        for j in range(0, self.k, block):
            jj = slice(j, min(j + block, self.k))
            xcorr = torch.nn.functional.conv1d(filters[j * rank: jj.stop * rank], filters, padding=self.d - 1)
            self.wtw[jj] = torch.einsum("jrks,jrksl->jkl", gram[jj], xcorr.reshape(jj.stop - j, rank, self.k, rank, -1))
        self.w_t = w_t

    def scores(self, x, step: int = 8192, out=None):
        """x: (T, C) tensor (as stored: no transposed copy) → (K, T - D + 1) scores μ_k(t) = <X[t:t+D], W_k> = [(U_kᵀX) ⋆ (S_k V_kᵀ)]_t,
        written into ``out`` when given (a view of the caller's padded array: no second K × T copy).

        The temporal part is a depthwise conv1d (one filter per projected row, then a sum over
        the R rows): on CPU it runs ~10x faster than the equivalent conv with groups=K. Done in
        pieces of ``step`` outputs (each reading D - 1 samples more) so the projection stays in
        cache: 1.2-2x faster on a CPU than one piece, and the same numbers (each output sums the same terms).
        """
        import torch

        n_out = x.shape[0] - self.d + 1
        if x.device.type != "cpu":
            step = max(n_out, 1)
        if out is None:
            out = torch.empty((self.k, max(n_out, 0)), dtype=x.dtype, device=x.device)
        filters = self.sv.reshape(self.k * self.rank, 1, self.d)
        for a in range(0, n_out, step):
            b = min(a + step, n_out)
            proj = self.u_t @ x[a: b + self.d - 1].T  # (K·R, piece); BLAS reads the transpose in place
            piece = torch.nn.functional.conv1d(proj[None], filters, groups=self.k * self.rank)[0]
            out[:, a:b] = piece.reshape(self.k, self.rank, -1).sum(1)
        return out


def _update_scores(padded, tpl: _Templates, unit, starts, amps) -> None:
    """Subtract spikes (τ, a) of ``unit`` from every unit's score: padded[k, P + τ + lag] -= a · wtw[unit, k, lag].

    ``unit``: one unit index, or a tensor with each spike's unit (one call for a mix of units).
    ``padded`` holds the scores with P = D - 1 spare columns on both sides, so every index is valid.
    """
    import torch

    if len(starts) == 0:
        return
    d = tpl.d
    # in pieces of spikes: the (K, n·L) values of a greedy pass over a batch reached GBs with hundreds of units
    step = max(1, 2**24 // (tpl.k * (2 * d - 1)))
    for i in range(0, len(starts), step):
        cols = (starts[i: i + step, None] + torch.arange(0, 2 * d - 1, device=padded.device)[None, :]).reshape(-1)  # P + τ + lag
        w = tpl.wtw[unit[i: i + step]] if torch.is_tensor(unit) and unit.dim() else tpl.wtw[unit][None]
        vals = (-amps[i: i + step, None, None] * w).permute(1, 0, 2).reshape(tpl.k, -1)  # (K, n·L)
        padded.index_add_(1, cols, vals)


def _net_change(st_old, a_old, st_new, a_new):
    """Spikes (τ, a) whose subtraction replaces spikes ``old`` by ``new``: a spike kept at the same
    time becomes one amplitude difference (0: skipped), so a sweep that changes little costs little."""
    import torch

    times = torch.cat([st_old, st_new])
    if len(times) == 0:
        return st_new, a_new
    uniq, inv = torch.unique(times, return_inverse=True)
    net = torch.zeros(len(uniq), dtype=a_new.dtype, device=a_new.device).index_add_(0, inv, torch.cat([-a_old, a_new]))
    changed = net != 0
    return uniq[changed], net[changed]


def _deconvolve_batch(x, tpl: _Templates, core: tuple[int, int], params: SortParams, typical_amp, sigma=None, max_passes: int = 4):
    """Coordinate ascent on one batch; returns (starts, units, amps, mu) of spikes in ``core``.

    ``x``: whitened batch (T, C) tensor; ``core``: the batch's own range of window starts.
    """
    import torch
    from scipy.signal import find_peaks

    t_len = max(x.shape[0] - tpl.d + 1, 0)
    padded = torch.zeros((tpl.k, t_len + 2 * (tpl.d - 1)), dtype=x.dtype, device=x.device)
    scores = tpl.scores(x, out=padded[:, tpl.d - 1: tpl.d - 1 + t_len])
    if sigma is None:
        med = scores.median(dim=1, keepdim=True).values
        sigma = ((scores - med).abs().median(dim=1).values / 0.6745).clamp_min(1e-6)
    thr = (params.threshold * sigma).cpu().numpy()
    shrink = (params.prior_shrinkage * sigma).cpu().numpy()
    min_amp = params.min_amplitude_fraction * np.asarray(typical_amp)
    dev = scores.device
    spikes = {k: (torch.zeros(0, dtype=torch.long, device=dev), torch.zeros(0, device=dev)) for k in range(tpl.k)}
    height = torch.as_tensor(np.maximum(thr, min_amp), dtype=scores.dtype, device=dev)
    # Initialization by greedy matching pursuit: at each time the best-matching unit takes the
    # whole spike, so similar templates do not end up sharing one spike between them (coordinate
    # ascent started from A = 0 converges to such shared solutions). Peaks of the best score are
    # ≥ D apart, so spikes accepted in one pass do not interact; overlaps are found next pass.
    # Which unit takes a spike: the largest gain of the log-likelihood, with Kilosort 2's amplitude
    # regularizer once each unit's typical amplitude m_k is known: gain = (μ + λm)²/(1+λ) − λm²
    # (λ = 0: μ², plain matching pursuit). Two units with nearly the same shape but different
    # sizes then each get the spikes of their own size.
    lam = float(params.amplitude_prior)
    m_typ = torch.as_tensor(np.asarray(typical_amp, dtype=np.float32), device=dev)[:, None]
    lam_k = torch.where(m_typ > 0, torch.full_like(m_typ, lam), torch.zeros_like(m_typ))
    for _ in range(max_passes):
        # the gain only where some unit passes its height (sparse: spikes), zero elsewhere
        cols = torch.nonzero((scores >= height[:, None]).any(dim=0))[:, 0]
        if len(cols) == 0:
            break
        sc = scores[:, cols]
        gain = (sc + lam_k * m_typ) ** 2 / (1 + lam_k) - lam_k * m_typ ** 2
        gain = torch.where((sc >= height[:, None]) & (gain > 0), gain, torch.zeros_like(sc))
        col_gain, col_unit = gain.max(dim=0)
        best_gain = torch.zeros(t_len, dtype=scores.dtype, device=dev)
        best_gain[cols] = col_gain
        peaks, _props = find_peaks(best_gain.cpu().numpy(), height=1e-6, distance=tpl.d)
        if len(peaks) == 0:
            break
        pk = torch.as_tensor(peaks, dtype=torch.long, device=dev)
        best_unit = torch.zeros(t_len, dtype=torch.long, device=dev)
        best_unit[cols] = col_unit
        units_p = best_unit[pk]
        amps_p = (scores[units_p, pk] - torch.as_tensor(shrink, device=dev)[units_p]).clamp_min(0)
        _update_scores(padded, tpl, units_p, pk, amps_p)
        for k in torch.unique(units_p).tolist():
            m = units_p == k
            st0, a0 = spikes[k]
            spikes[k] = (torch.cat([st0, pk[m]]), torch.cat([a0, amps_p[m]]))
    mu_final = {}
    for _ in range(params.n_sweeps):
        for k in range(tpl.k):
            st_old, a_old = spikes[k]
            # unit k's score on the residual without unit k: its own spikes added back on its row only
            mu_t = padded[k].clone()
            if len(st_old):
                cols = (st_old[:, None] + torch.arange(0, 2 * tpl.d - 1, device=dev)[None, :]).reshape(-1)
                mu_t.index_add_(0, cols, (a_old[:, None] * tpl.wtw[k, k][None]).reshape(-1))
            mu = mu_t[tpl.d - 1: tpl.d - 1 + t_len].cpu().numpy()
            height = max(float(thr[k]), float(min_amp[k]))
            peaks, props = find_peaks(mu, height=height, distance=tpl.d)
            mu_k = props["peak_heights"].astype(np.float32)
            a = np.maximum(mu_k - shrink[k], 0).astype(np.float32)  # MAP amplitude under the exponential prior
            st_new = torch.as_tensor(peaks, dtype=torch.long, device=dev)
            a_new = torch.as_tensor(a, device=dev)
            _update_scores(padded, tpl, k, *_net_change(st_old, a_old, st_new, a_new))  # every unit: old out, new in
            spikes[k] = (st_new, a_new)
            mu_final[k] = mu_k
    starts, units, amps, mus = [], [], [], []
    for k in range(tpl.k):
        st, a = spikes[k]
        st = st.cpu().numpy()
        a = a.cpu().numpy()
        mu = mu_final.get(k, a + shrink[k])
        keep = (st >= core[0]) & (st < core[1]) & (a > 0)
        starts.append(st[keep])
        units.append(np.full(keep.sum(), k))
        amps.append(a[keep])
        mus.append(mu[keep])
    return np.concatenate(starts), np.concatenate(units), np.concatenate(amps), np.concatenate(mus), sigma


def _spike_matrix(tpl: _Templates, starts, units, amps, t_len: int):
    """Sparse (K·D, T) matrix A with A[k·D + τ, t + τ] = a for each spike (t, k, a): the model is Aᵀ·W (W the
    templates as a (K·D, C) matrix) and Σ_spikes of unit k a·X[t:t+D] is row block k of A·X — products with
    n·D·C operations and no (n, C, D) array of snippets (384 channels: 280 MB per 4 s batch)."""
    import torch

    dev = tpl.w_t.device
    tau = torch.arange(tpl.d, device=dev)
    st = torch.as_tensor(starts, dtype=torch.long, device=dev)
    un = torch.as_tensor(units, dtype=torch.long, device=dev)
    a = torch.as_tensor(amps, dtype=torch.float32, device=dev)
    index = torch.stack([(un[:, None] * tpl.d + tau).reshape(-1), (st[:, None] + tau).reshape(-1)])
    return torch.sparse_coo_tensor(index, a[:, None].expand(-1, tpl.d).reshape(-1), (tpl.k * tpl.d, t_len),
                                   check_invariants=False).coalesce()


def _residual(x, tpl: _Templates, spikes):
    """x (T, C) minus the model of ``spikes`` (:func:`_spike_matrix`)."""
    import torch

    return x - torch.sparse.mm(spikes.t(), tpl.w_t.transpose(1, 2).reshape(-1, tpl.c))


def _template_update(residual, tpl: _Templates, spikes, units, amps):
    """(K, C, D) Σ_spikes of unit k a·(residual window + a·W_k): each unit's spikes weighted by amplitude, with
    their own template added back (the template update's Σ a R_t)."""
    import torch

    dev = residual.device
    windows = torch.sparse.mm(spikes, residual).reshape(tpl.k, tpl.d, tpl.c).transpose(1, 2)
    a = torch.as_tensor(amps, dtype=torch.float32, device=dev)
    a2 = torch.zeros(tpl.k, device=dev).index_add_(0, torch.as_tensor(units, dtype=torch.long, device=dev), a * a)
    return windows + a2[:, None, None] * tpl.w_t


def _residual_snippets(residual, tpl: _Templates, starts, units, amps, channels):
    """Residual windows (n, m, D) of each spike on its own ``channels`` (n, m), with its own template added back."""
    import torch

    dev = residual.device
    st = torch.as_tensor(starts, dtype=torch.long, device=dev)
    un = torch.as_tensor(units, dtype=torch.long, device=dev)
    a = torch.as_tensor(amps, dtype=torch.float32, device=dev)
    windows = residual[st[:, None, None] + torch.arange(tpl.d, device=dev), channels[:, :, None]]
    return windows + a[:, None, None] * tpl.w_t[un[:, None], channels]  # (n, m, D), not the (n, C, D) of w_t[un]


def _merge_duplicates(templates: np.ndarray, units: np.ndarray, typical: np.ndarray, similarity: float):
    """Merge units whose (unit-norm) templates are near-duplicates and whose amplitudes agree within 1.4x.

    Deconvolution splits one neuron's spikes between duplicates; the unit with more spikes
    keeps the template and takes the other's spikes.
    """
    from engine.ephys.clustering import template_similarity

    k = len(templates)
    if k < 2:
        return templates, units, typical
    sim = template_similarity(templates)
    counts = np.bincount(units.astype(int), minlength=k)
    target = np.arange(k)
    for i, j in sorted(zip(*np.nonzero(np.triu(sim, 1) >= similarity)), key=lambda ij: -sim[ij]):
        ri, rj = target[i], target[j]
        amp = max(typical[i], typical[j]) / max(min(typical[i], typical[j]), 1e-6)
        if ri == rj or amp > 1.2 or target[ri] != ri or target[rj] != rj:
            continue
        keep, drop = (ri, rj) if counts[ri] >= counts[rj] else (rj, ri)
        target[target == drop] = keep
        counts[keep] += counts[drop]
    if np.all(target == np.arange(k)):
        return templates, units, typical
    kept = np.unique(target)
    remap = np.full(k, -1)
    remap[kept] = np.arange(len(kept))
    log.info("merged %d duplicate units", k - len(kept))
    return templates[kept], remap[target[units.astype(int)]], typical[kept]


def _split_candidates(templates: np.ndarray, positions: np.ndarray, similarity: float, radius_um: float) -> np.ndarray:
    """(n, 2) pairs i < j of templates that may be halves of one neuron: similar shapes (best lag) peaking within
    ``radius_um`` of each other. Whether they are is decided on their spikes (:func:`_merge_split_units`)."""
    from engine.ephys.clustering import template_similarity

    k = len(templates)
    if k < 2:
        return np.zeros((0, 2), np.int64)
    centre = positions[np.abs(templates).max(axis=2).argmax(axis=1)]
    near = np.linalg.norm(centre[:, None] - centre[None], axis=2) <= radius_um
    return np.argwhere(np.triu((template_similarity(templates) >= similarity) & near, 1))


def _candidate_groups(pairs: np.ndarray, k: int) -> np.ndarray:
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(k, k)) if len(pairs) else sparse.coo_matrix((k, k))
    return connected_components(graph, directed=False)[1]


def _merge_split_units(pairs: np.ndarray, times: np.ndarray, units: np.ndarray, amps: np.ndarray, k: int, n_samples: int,
                       fs: float, features: np.ndarray | None = None, valley_ratio: float = 0.4, min_cloud: int = 25, max_overlap: float = 0.3,
                       max_amplitude_ratio: float = 2.0, refractory_ms: float = 1.5, duplicate_ms: float = DUPLICATE_MS) -> np.ndarray:
    """Group index per template after merging the candidate pairs that are one neuron cut in two.

    Two ways a neuron ends up as two units: (1) after drift correction its waveform still changes a little with the
    displacement (the interpolation blurs a sharp footprint differently at each depth), and clustering cuts it by
    depth, each half firing only while the probe sits in its range. Such halves fire *in turn*: the overlap
    Σ_t min(p_t, q_t) of their normalised spike counts in time bins is near 0, while two neurons firing throughout
    overlap by ~0.8 (bins sized for ≥ 8 spikes of the smaller unit, so Poisson noise does not fake a gap).
    (2) Both fire throughout but their spikes form one cloud: ``features`` (n, F; comparable between the pair,
    e.g. PC features on shared channels) projected on the line between the two means are not bimodal — the
    test clustering uses (:func:`engine.ephys.clustering._bimodal`), with ≥ ``min_cloud`` spikes on each side.
    Either way a merge also needs amplitudes within ``max_amplitude_ratio`` and a refractory period between the two
    trains (spikes of one neuron are not within ``refractory_ms`` of each other; independent units coincide at
    chance level). Closer than ``duplicate_ms`` is one spike fitted by both, not a violation (the merged unit keeps
    one: :func:`_duplicates`). Pairs are merged most complementary first,
    each group checked as a whole as it grows."""
    from engine.ephys.clustering import _bimodal, _pair_projection

    group = np.arange(k)
    if len(pairs) == 0 or len(times) == 0:
        return group
    order = np.argsort(times, kind="stable")
    times, units, amps = times[order], units[order], amps[order]
    features = None if features is None else features[order]
    window, same = refractory_ms * 1e-3 * fs, duplicate_ms * 1e-3 * fs

    def verdict(a, b):
        in_a, in_b = np.isin(units, np.flatnonzero(group == group[a])), np.isin(units, np.flatnonzero(group == group[b]))
        ta, tb = times[in_a], times[in_b]
        if min(len(ta), len(tb)) < 4:
            return None
        ratio = np.median(amps[in_a]) / max(np.median(amps[in_b]), 1e-6)
        if max(ratio, 1 / max(ratio, 1e-6)) > max_amplitude_ratio:
            return None
        idx = np.clip(np.searchsorted(tb, ta), 1, len(tb) - 1)
        gap = np.minimum(np.abs(ta - tb[idx - 1]), np.abs(tb[idx] - ta))
        chance = len(ta) * len(tb) * 2 * (window - same) / n_samples  # coincidences of independent trains
        if ((gap >= same) & (gap < window)).sum() > 1 + 0.2 * chance:
            return None
        edges = np.linspace(0, n_samples, int(np.clip(min(len(ta), len(tb)) // 8, 3, 200)) + 1)
        overlap = float(np.minimum(np.histogram(ta, edges)[0] / len(ta), np.histogram(tb, edges)[0] / len(tb)).sum())
        if overlap <= max_overlap:
            return overlap
        if features is not None and min(len(ta), len(tb)) >= min_cloud:
            fa, fb = (features[m][np.linspace(0, m.sum() - 1, min(m.sum(), 1000)).astype(int)] for m in (in_a, in_b))
            proj, lab = _pair_projection(np.concatenate([fa, fb]), np.arange(len(fa)), np.arange(len(fa), len(fa) + len(fb)))
            if not _bimodal(proj, lab, valley_ratio):
                return overlap
        return None

    scored = [(v, a, b) for a, b in pairs if (v := verdict(a, b)) is not None]
    for _v, a, b in sorted(scored):
        if group[a] != group[b] and verdict(a, b) is not None:  # re-checked: either side may have grown
            group[group == group[b]] = group[a]
    return np.unique(group, return_inverse=True)[1]


def _duplicates(times: np.ndarray, units: np.ndarray, amps: np.ndarray, window: float) -> np.ndarray:
    """Mask of spikes that repeat a larger spike of the same unit within ``window`` samples (a merged unit's
    halves both fitted one spike; a single template never has two spikes closer than its length)."""
    order = np.lexsort((times, units))
    t, u, a = times[order], units[order], amps[order]
    pair = np.flatnonzero((np.diff(t) < window) & (u[1:] == u[:-1]))  # spikes pair and pair + 1 (sorted) are one
    dup = np.zeros(len(times), bool)
    dup[order[np.where(a[pair] >= a[pair + 1], pair + 1, pair)]] = True  # the smaller goes
    return dup


def _merged_templates(templates: np.ndarray, group: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """One unit-norm template per group: the members' templates aligned on the largest one (best lag) and
    averaged with their spike counts as weights."""
    from engine.ephys.clustering import MAX_LAG, _best_lag

    out = np.zeros((group.max() + 1, *templates.shape[1:]), np.float32)
    for g in range(len(out)):
        m = np.flatnonzero(group == g)
        if len(m) == 1:
            out[g] = templates[m[0]]
            continue
        ref = m[np.argmax(counts[m])]
        acc = np.zeros(templates.shape[1:])
        for j in m:
            lag = _best_lag(templates[ref], templates[j], MAX_LAG)  # j's spikes at t + lag line up with ref's at t
            shifted = np.zeros_like(templates[j])  # templates[j] moved ``lag`` samples earlier, zeros shifted in
            d = templates.shape[2]
            shifted[:, max(-lag, 0): d - max(lag, 0)] = templates[j][:, max(lag, 0): d - max(-lag, 0)]
            acc += counts[j] * shifted
        out[g] = acc / max(np.linalg.norm(acc), 1e-12)
    return out


class _ResidualView:
    """The whitened data minus the model of the given spikes, read by row ranges as clustering reads snippets
    (no residual file: ``xw[lo:hi]`` minus the templates of the spikes overlapping it)."""

    def __init__(self, xw, starts: np.ndarray, units: np.ndarray, amps: np.ndarray, templates: np.ndarray):
        order = np.argsort(starts, kind="stable")
        self.xw, self.starts, self.units, self.amps = xw, starts[order], units[order], amps[order]
        self.templates, self.d = templates, templates.shape[2]
        self.shape = xw.shape

    def __getitem__(self, index) -> np.ndarray:
        rows, cols = index if isinstance(index, tuple) else (index, slice(None))  # data[lo:hi] or data[lo:hi, channels]
        lo, hi, _ = rows.indices(self.shape[0])
        out = np.array(self.xw[lo:hi, cols], dtype=np.float32)
        for i in range(np.searchsorted(self.starts, lo - self.d + 1), np.searchsorted(self.starts, hi)):
            s = int(self.starts[i])
            a, b = max(s, lo), min(s + self.d, hi)
            out[a - lo: b - lo] -= self.amps[i] * self.templates[self.units[i]][cols, a - s: b - s].T
        return out


def _residual_units(xw, starts: np.ndarray, units: np.ndarray, amps: np.ndarray, templates: np.ndarray, times: np.ndarray,
                    channels: np.ndarray, probe: Probe, neighbours: np.ndarray, d: int, trough: int, params: SortParams,
                    radius: float = 150.0) -> np.ndarray:
    """Templates (n, C, D) of units found in the residual: its threshold crossings (``times``, ``channels``) clustered
    as at the start (:func:`engine.ephys.clustering.initial_templates`), keeping the clusters that are neurons the first
    detection missed: (a) a mean waveform reaching the threshold (noise crossings average below it: their troughs
    jitter) and (b) not time-locked to a known unit within ``radius`` µm — ≥ halfway from chance to all of the cluster's
    crossings within a template length of that units' spikes: what a known unit's template leaves behind (drift
    correction bends big waveforms; a tail beyond the template window) follows its spikes."""
    view = _ResidualView(xw, starts, units, amps, templates)
    found, _tpcs, labels = initial_templates(view, times, channels, neighbours, d, trough, min_cluster=params.min_cluster,
                                             max_per_channel=params.max_per_channel, valley_ratio=params.valley_ratio,
                                             merge_similarity=params.merge_similarity, seed=params.seed)
    if len(found) == 0:
        return found
    n_t = xw.shape[0]
    peak = np.abs(templates).max(axis=2).argmax(axis=1)
    known_times = starts + np.abs(templates[np.arange(len(templates)), peak]).argmax(axis=1)[units]
    keep = []
    for k in range(len(found)):
        mine = np.sort(times[labels == k])
        ch = np.abs(found[k]).max(axis=1).argmax()
        if np.abs(found[k][ch]).max() < params.residual_threshold or len(mine) == 0:
            continue
        near = np.flatnonzero(np.linalg.norm(probe.positions[peak] - probe.positions[ch], axis=1) <= radius)
        others = np.sort(known_times[np.isin(units, near)])
        if len(others):
            idx = np.clip(np.searchsorted(others, mine), 1, len(others) - 1) if len(others) > 1 else np.zeros(len(mine), int)
            gap = np.minimum(np.abs(others[idx] - mine), np.abs(others[np.maximum(idx - 1, 0)] - mine))
            chance = 1.0 - np.exp(-len(others) * (2 * d + 1) / n_t)
            if (gap <= d).mean() >= 0.5 + 0.5 * chance:
                continue
        keep.append(k)
    return found[keep].astype(np.float32)


def _snippet_template(xw, starts: np.ndarray, d: int, rank: int, max_spikes: int = 300):
    """(template (C, D), amplitudes, trough) of spikes whose windows start at ``starts`` in the whitened data ``xw``:
    the rank-``rank`` unit-norm mean of ≤ ``max_spikes`` of their windows, each spike's projection on it, and the
    template's trough (largest |value| on its peak channel) within the window."""
    def windows(part: np.ndarray) -> np.ndarray:  # (n, D, C)
        return np.stack([np.asarray(xw[s: s + d], dtype=np.float32) for s in part])

    pick = np.linspace(0, len(starts) - 1, min(len(starts), max_spikes)).astype(int)
    u, s, vt = _low_rank(windows(starts[pick]).mean(0).T, rank)
    w = ((u * s) @ vt).astype(np.float32)
    peak = np.abs(w).max(axis=1).argmax()
    # amplitudes read in pieces: all of a big unit's windows at 384 sites would be GBs
    amps = np.concatenate([np.einsum("ndc,cd->n", windows(part), w) for part in np.array_split(starts, max(1, -(-len(starts) // 1024)))])
    return w, np.maximum(amps, 0.0), int(np.abs(w[peak]).argmax())


def _coincident_larger(times: np.ndarray, amps: np.ndarray, others_t: np.ndarray, others_a: np.ndarray, window: int,
                       ratio: float) -> np.ndarray:
    """Mask of spikes (``times`` sorted, ``amps``) with a spike of ``others`` (sorted) within ±``window`` samples whose
    amplitude is at least ``ratio`` × theirs (amplitudes of unit-norm whitened templates: the spikes' norms)."""
    if len(times) == 0 or len(others_t) == 0:
        return np.zeros(len(times), bool)
    lo = np.searchsorted(others_t, times - window, side="left")
    hi = np.searchsorted(others_t, times + window, side="right")
    top = np.full(len(times), -np.inf)
    for shift in range(int((hi - lo).max(initial=0))):  # rarely more than one or two spikes in ±window
        has = lo + shift < hi
        top[has] = np.maximum(top[has], others_a[lo[has] + shift])
    return top >= ratio * amps


def _by_unit(units: np.ndarray, k: int) -> list[np.ndarray]:
    """Indices of each unit's spikes, in increasing order: one stable sort, not a pass over all spikes per unit."""
    order = np.argsort(units, kind="stable")
    return np.split(order, np.cumsum(np.bincount(units, minlength=k))[:-1])


def _coincident(times: np.ndarray, others: np.ndarray, window: int) -> np.ndarray:
    """Mask of ``times`` with a spike of ``others`` (sorted) within ±``window`` samples."""
    return np.searchsorted(others, times + window, side="right") > np.searchsorted(others, times - window, side="left")


def _shadow_units(templates: np.ndarray, starts: np.ndarray, units: np.ndarray, positions: np.ndarray, window: int,
                  max_fraction: float, radius: float = 150.0, shadow_spikes: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of "shadow" units: units whose spikes fall within ±``window`` samples of a spike of a
    unit peaking within ``radius`` µm in ≥ ``max_fraction`` of cases. Independent neurons coincide by
    chance a few % of the time (1 ms × the neighbours' summed rate); a unit near 100 % is explaining
    another unit's misfit. Removed one at a time, the worst first, and recounted: the real unit a
    shadow rides on is then no longer flagged because of its shadow. ``shadow_spikes`` (:func:`_shadow_spikes`)
    count for their own unit, not against the unit they ride on: that one is their host.

    Counted per pair of nearby units (sorted spike times merged with ``searchsorted``): each spike keeps the number of
    nearby units it coincides with, and dropping a shadow only updates its neighbours' counts, so the cost is the
    neighbour pairs × their spikes, not units × all spikes per removal."""
    k = len(templates)
    shadow = np.zeros(k, bool)
    if k < 2 or len(starts) == 0:
        return shadow
    peak = np.abs(templates).max(axis=2).argmax(axis=1)
    centre = positions[peak]
    troughs = np.abs(templates[np.arange(k), peak]).argmax(axis=1)  # compare trough times, not window starts
    times = starts + troughs[units]
    order = np.argsort(times, kind="stable")
    times, units = times[order], units[order]
    hosts = np.ones(len(times), bool) if shadow_spikes is None else ~shadow_spikes[order]
    close = np.linalg.norm(centre[:, None] - centre[None], axis=2) <= radius
    np.fill_diagonal(close, False)
    members = _by_unit(units, k)
    mine = [times[m] for m in members]
    hosted = [times[m[hosts[m]]] for m in members]  # the spikes a unit can be a host with

    def hits(u: int, j: int) -> np.ndarray:
        return _coincident(mine[u], hosted[j], window)

    count = [sum((hits(u, j).astype(np.int32) for j in np.flatnonzero(close[u])), np.zeros(len(mine[u]), np.int32)) for u in range(k)]
    frac = np.array([float((c > 0).mean()) if len(c) else 0.0 for c in count])
    while True:
        worst = int(frac.argmax())
        if frac[worst] < max_fraction:
            return shadow
        shadow[worst] = True
        frac[worst] = 0.0
        for u in np.flatnonzero(close[worst] & ~shadow):
            count[u] -= hits(u, worst)
            frac[u] = float((count[u] > 0).mean()) if len(count[u]) else 0.0


def _shadow_spikes(templates: np.ndarray, starts: np.ndarray, units: np.ndarray, amps: np.ndarray, positions: np.ndarray,
                   window: int, n_samples: int, radius: float = 150.0, host_ratio: float = 2.0, excess: float = 5.0,
                   min_count: int = 10, min_share: float = 0.1) -> np.ndarray:
    """Mask of single shadow spikes: spikes by which a real unit fits part of a nearby unit's misfit. A spike of unit k
    within ±``window`` samples (trough times) of a spike ≥ ``host_ratio`` × larger of a unit j peaking within ``radius``
    µm is one when k coincides so with j far more often than independent trains do (≥ ``min_count``, > ``excess`` ×
    chance, and ≥ ``min_share`` of k's spikes): the dropped spikes then hold at most the chance share of k's own.
    Drift correction leaves such misfits where a big, sharp unit's waveform changes with the displacement; measured
    on drift-nonrigid: a 42-SD unit fitted 17-SD shadows on all 456 spikes of a 340 µV neighbour (seed 0, chance 7:
    half its spikes), and a 27-SD unit shadows of its own size on 144 spikes of a 3-6x larger neighbour during one drift
    phase (seed 1, chance 3; 42 % of its spikes). Without this, the big unit, firing ~100 % together with its
    neighbour, was dropped as a shadow unit (:func:`_shadow_units`). The share keeps the real units under a template
    that fits collisions of several neurons (static 'hard' case: 2 % of their spikes): that template is the shadow.
    A unit whose spikes are ≥ 70 % such fits is still a shadow unit as a whole (:func:`_shadow_units`)."""
    k = len(templates)
    shadow = np.zeros(len(starts), bool)
    if k < 2 or len(starts) == 0:
        return shadow
    peak = np.abs(templates).max(axis=2).argmax(axis=1)
    centre = positions[peak]
    close = np.linalg.norm(centre[:, None] - centre[None], axis=2) <= radius
    np.fill_diagonal(close, False)
    times = starts + np.abs(templates[np.arange(k), peak]).argmax(axis=1)[units]
    order = np.argsort(times, kind="stable")
    t, u, a = times[order], units[order], amps[order]
    members = _by_unit(u, k)
    for i, j in np.argwhere(close):
        mine, host = members[i], members[j]
        if len(mine) == 0 or len(host) == 0:
            continue
        hosted = _coincident_larger(t[mine], a[mine], t[host], a[host], window, host_ratio)
        chance = len(mine) * len(host) * (2 * window + 1) / max(n_samples, 1)
        if hosted.sum() >= max(min_count, excess * chance, min_share * len(mine)):
            shadow[order[mine[hosted]]] = True
    return shadow


def _batch_workers(device) -> int:
    """Batches run in parallel on a CPU with several torch threads: one batch per thread, each
    single-threaded, beats torch's intra-op threads on this workload (many small ops)."""
    import torch

    return 1 if device.type != "cpu" else max(1, torch.get_num_threads())


def _in_order(run_batch, starts, state, workers: int, check):
    """Yield ``run_batch(a, state)`` for each batch start in order; each result ends with the state
    for the next batches. The first batch runs alone (it measures the noise level, ``state``, that
    the others reuse), the rest on ``workers`` threads, each with single-threaded torch/BLAS
    (restored afterwards) so the threads do not oversubscribe the cores. numpy, scipy and torch
    release the GIL in their loops, so the threads do run in parallel."""
    if not starts:
        return
    check()
    first = run_batch(starts[0], state)
    state = first[-1]
    yield first
    if workers <= 1 or len(starts) < 3:
        for a in starts[1:]:
            check()
            yield run_batch(a, state)
        return
    from concurrent.futures import ThreadPoolExecutor

    with single_threaded(), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="neurowb-batch") as pool:
        futures = [pool.submit(run_batch, a, state) for a in starts[1:]]
        try:
            for i in range(len(futures)):
                check()
                f, futures[i] = futures[i], None  # a future keeps its result: drop it once taken (a template pass's (K, C, D) sums)
                yield f.result()
        finally:
            for f in futures:
                if f is not None:
                    f.cancel()


def check_finite(recording, progress=None, block_bytes: int = 32 * 2**20) -> None:
    """InputError naming the first NaN or infinite sample of a floating-point recording (integer ones cannot
    hold any). Rejected rather than treated as gaps: a filter spreads one NaN over its whole chunk, and the
    whitening over every channel, so there is no sound sort of the rest; the message says where to look."""
    progress = as_progress(progress)
    dtype = recording.dtype
    if not np.issubdtype(dtype, np.floating):
        return
    n, n_ch = recording.n_samples, recording.n_channels
    step = max(1, block_bytes // max(1, n_ch * dtype.itemsize))
    for start in range(0, n, step):
        progress.check()
        bad = ~np.isfinite(recording.read(start, min(n, start + step)))
        if bad.any():
            row, channel = np.argwhere(bad)[0]
            count = int(bad.sum())
            fs = recording.sample_rate
            raise InputError(f"The recording has NaN or infinite samples, the first at sample {start + int(row):,} "
                             f"({(start + int(row)) / fs:.3f} s), channel {int(channel)} ({count:,} in that stretch): "
                             "cut that part out or replace the values (e.g. by 0) before sorting.")
        progress.report(min(1.0, (start + step) / n))


def sort_recording(
    recording,
    probe: Probe | None = None,
    params: SortParams | None = None,
    preprocess: PreprocessParams | None = None,
    workdir: str | Path | None = None,
    progress=None,
) -> Sorting:
    """Sort a recording (RawRecording or ArrayRecording): preprocess → initialize → deconvolve.

    ``workdir`` receives the whitened data (``whitened.npy``: float32, or above ``params.int16_scratch_gb`` int16 in
    steps of 1/200 noise SD, :class:`~engine.ephys.preprocess.Int16Traces`; deleted afterwards unless it was asked
    for); default a temporary folder.
    """
    import torch

    from engine.device import select_device

    progress = as_progress(progress)
    params = params or SortParams()
    timings = {}
    t_start = time.perf_counter()
    if probe is None:
        probe = linear_probe(recording.n_channels)
    probe.check_recording(recording.n_channels)
    fs = recording.sample_rate
    if fs < MIN_SAMPLE_RATE:
        raise InputError(f"A {fs:g} Hz recording cannot be spike sorted: a spike lasts ~1 ms, so it needs the wideband "
                         f"signal sampled at ≥ {MIN_SAMPLE_RATE / 1000:g} kHz (typically 20–30 kHz). Is this LFP, or is the "
                         "sample rate entered wrong?")
    d = int(round(params.template_ms * 1e-3 * fs)) | 1
    trough = int(round(params.trough_fraction * d))
    if recording.n_samples < 4 * d:
        raise InputError(f"The recording has {recording.n_samples} samples, too short to sort (need at least {4 * d}).")
    for name in ("threshold", "detect_threshold"):
        if not getattr(params, name) > 0:  # also NaN
            raise InputError(f"The spike {name.replace('_', ' ')} must be a positive number of noise SDs, got {getattr(params, name)}.")
    device = select_device(params.device)
    motion_mode = check_mode(params.motion)
    why_not = check_probe(probe.positions, motion_mode) if motion_mode != "off" else "off"
    if why_not and motion_mode in ("rigid", "nonrigid"):
        raise InputError(f"{why_not[0].upper()}{why_not[1:]}: sort it with drift correction 'off' (or 'auto', which skips it).")
    estimate = why_not is None
    p_check, p_pre, p_detect, p_motion, p_cluster, p_deconv = progress.split(
        [0.2, 2, 1, 1.5 if estimate else 0, 2, 6], ["Checking samples", "Filtering", "Detecting", "Drift", "Clustering", "Deconvolving"])
    check_finite(recording, p_check)

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="neurowb_sort_")
        workdir = tmp.name
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        # -- preprocessing -------------------------------------------------------------------------
        pre = Preprocessor(fs, probe.channel_map, probe.positions, preprocess)
        # the whitening is estimated from the filtered data as written (not filtered twice)
        workers = _batch_workers(torch.device("cpu"))  # CPU threads for filtering and detection
        # long recordings as int16 (as Kilosort's): 2 bytes per sample of temporary disk, 83 GB for an hour of 384 channels
        int16 = recording.n_samples * probe.n_channels * 4 > params.int16_scratch_gb * 1e9
        xw = pre.write(recording, workdir / "whitened.npy", progress=p_pre, fit_seconds=6.0, workers=workers,
                       dtype=np.int16 if int16 else np.float32)
        n_t, n_ch = xw.shape
        timings["preprocess_s"] = time.perf_counter() - t_start

        # -- detection -----------------------------------------------------------------------------
        t0 = time.perf_counter()
        excl = probe.neighbours(params.exclusion_radius)
        half = max(1, int(round(params.exclusion_ms * 1e-3 * fs)))
        batch = int(params.batch_seconds * fs)
        bounds = list(range(0, n_t, batch))
        local = probe.neighbours(LOCALIZE_RADIUS_UM)

        def detect_batch(a, sd, xw=xw, localize=False):
            lo, hi = max(0, a - half), min(n_t, a + batch + half)
            block = np.asarray(xw[lo:hi])
            if sd is None:  # whitened noise is ~1 SD; measure it once (first batch) to be safe
                sd = np.maximum(np.median(np.abs(block), axis=0) / 0.6745, 1e-6)
            t, c, _ = detect_peaks(block / sd, params.detect_threshold, excl, half)
            keep = (t + lo >= a) & (t + lo < a + batch) & (t + lo >= trough) & (t + lo < n_t - (d - trough))
            t, c = t[keep], c[keep]
            where = localize_peaks(block, t, c, probe.positions, local) if localize else (None, None)
            return t + lo, c, *where, sd

        def detect(progress, localize=False):
            found = []
            for i, out in enumerate(_in_order(lambda a, sd: detect_batch(a, sd, localize=localize), bounds, None, workers, progress.check)):
                found.append(out[:-1])
                progress.report((i + 1) / len(bounds), "threshold crossings")
            return [np.concatenate(v) if v[0] is not None else None for v in zip(*found)]

        det_t, det_c, det_xy, det_amp = detect(p_detect, localize=estimate)
        timings["detect_s"] = time.perf_counter() - t0

        # -- drift ---------------------------------------------------------------------------------
        motion = corrected = None
        timings["drift_correction"] = "off" if motion_mode == "off" else f"not estimated: {why_not}" if why_not else "none"
        if estimate:
            t0 = time.perf_counter()
            rigid = motion_mode == "rigid" or (motion_mode == "auto" and np.ptp(probe.positions[:, 1]) < params.motion_nonrigid_span_um)
            p_est, p_fix, p_redetect = p_motion.split([1, 3, 2])
            motion = estimate_motion(det_t / fs, det_xy, det_amp, n_t / fs, probe.positions, rigid, device=device, progress=p_est)
            timings["drift_max_um"] = motion.max_displacement_um
            if motion_mode != "auto" or motion.max_displacement_um >= params.motion_min_um:
                correct_in_place(xw, fs, probe.positions, motion, device=device, progress=p_fix)
                xw.flush()
                det_t, det_c, _xy, _amp = detect(p_redetect)
                corrected = motion
                timings["drift_correction"] = "rigid" if rigid else "nonrigid"
            else:
                timings["drift_correction"] = f"none (estimated ≤ {motion.max_displacement_um:.1f} µm)"
            timings["drift_s"] = time.perf_counter() - t0

        # -- initialization ------------------------------------------------------------------------
        t0 = time.perf_counter()
        nbrs = probe.neighbours(params.neighbour_radius)
        # one thread: k-means on a few thousand points loses more to OpenMP overhead than it gains
        # (0.8 s → 1.2 s with 2 threads), and the clusters do not depend on the thread count
        with single_threaded():
            templates, tpcs, det_labels = initial_templates(
                xw, det_t, det_c, nbrs, d, trough, min_cluster=params.min_cluster, max_per_channel=params.max_per_channel,
                valley_ratio=params.valley_ratio, merge_similarity=params.merge_similarity, seed=params.seed, progress=p_cluster,
            )
        # drop clusters whose template is not above the detection threshold (noise clusters)
        if len(templates):
            keep_units = np.abs(templates).max(axis=(1, 2)) >= 0.8 * params.detect_threshold
            remap = np.cumsum(keep_units) - 1
            det_labels = np.where((det_labels >= 0) & keep_units[np.maximum(det_labels, 0)], remap[np.maximum(det_labels, 0)], -1)
            templates = templates[keep_units]
        timings["cluster_s"] = time.perf_counter() - t0
        timings["n_detections"] = int(len(det_t))
        timings["n_initial_units"] = int(len(templates))

        # -- deconvolution -------------------------------------------------------------------------
        t0 = time.perf_counter()
        k_units = len(templates)
        times = units = amps = mus = np.zeros(0)
        pc_features = pc_ind = None
        troughs = np.full(k_units, trough)
        workers = _batch_workers(device)  # 1 on a GPU
        if k_units:
            typical = np.full(k_units, 0.0)
            search = bool(params.residual_threshold)  # a detection pass on the last pass's residual (at most once)
            n_passes = params.n_iterations
            stages = p_deconv.split([1] * (n_passes + search))
            res_t, res_c = [], []
            it = -1
            while it + 1 < n_passes:
                it += 1
                tpl = _Templates(templates, params.rank, device)
                last = it >= params.n_iterations - 1
                acc = np.zeros((tpl.k, n_ch, d))
                all_s, all_u, all_a, all_m = [], [], [], []
                feats = []  # last pass: PC features per batch (not the snippets: 175 MB per minute at 32 ch)
                n_pc = min(params.n_pc_channels, n_ch)
                energy = np.abs(tpl.w).max(axis=2)  # (K, C)
                if last:  # possible halves of one neuron share PC channels: their features stay comparable once merged
                    split_pairs = _split_candidates(tpl.w, probe.positions, params.split_similarity, params.split_radius_um)
                    component = _candidate_groups(split_pairs, tpl.k)
                    summed = np.zeros((component.max() + 1, n_ch))
                    np.add.at(summed, component, energy)
                    energy = summed[component]
                pc_chans_np = np.argsort(-energy, axis=1, kind="stable")[:, :n_pc]
                pc_chans = torch.as_tensor(pc_chans_np, device=device)
                # Template-learning passes use evenly spaced batches covering ~learn_seconds (as
                # Kilosort learns templates on a subset of batches); the final pass covers everything.
                n_learn = max(1, int(math.ceil(params.learn_seconds / params.batch_seconds)))
                spread = np.unique(np.linspace(0, len(bounds) - 1, n_learn).round().astype(int))
                use = bounds if last or n_learn >= len(bounds) else [bounds[j] for j in spread]

                def run_batch(a, sigma, xw=xw, tpl=tpl, typical=typical, last=last, pc_chans=pc_chans, search=last and search):
                    lo, hi = max(0, a - d), min(n_t, a + batch + 2 * d)
                    x = torch.as_tensor(np.asarray(xw[lo:hi]), device=device)  # (T, C)
                    core = (a - lo, min(a + batch, n_t) - lo)
                    s_b, u_b, a_b, m_b, sigma = _deconvolve_batch(x, tpl, core, params, typical, sigma)
                    extra = None
                    if len(s_b):
                        spikes = _spike_matrix(tpl, s_b, u_b, a_b, len(x))
                        residual = _residual(x, tpl, spikes)
                        if last:  # Kilosort-style PC features: 3 temporal PCs on each unit's n_pc largest channels
                            chans = pc_chans[torch.as_tensor(u_b, device=device)]
                            sn = _residual_snippets(residual, tpl, s_b, u_b, a_b, chans).cpu().numpy()  # (n, n_pc, D)
                            extra = np.einsum("ncd,pd->npc", sn, tpcs).astype(np.float32)
                        else:  # the template update's Σ a R_t (the last pass keeps its templates)
                            extra = _template_update(residual, tpl, spikes, u_b, a_b).cpu().numpy()
                    found = None
                    if search:  # threshold crossings of what the units leave (Kilosort's and spykingcircus2's second look)
                        r = (residual if len(s_b) else x)[core[0]: core[1]].cpu().numpy()
                        t, c, _ = detect_peaks(r / np.maximum(np.median(np.abs(r), axis=0) / 0.6745, 1e-6), params.residual_threshold, excl, half)
                        t = t + lo + core[0]
                        inside = (t >= trough) & (t < n_t - (d - trough))
                        found = (t[inside], c[inside])
                    return s_b + lo, u_b, a_b, m_b, extra, found, sigma

                # The first batch fixes the score SDs; the others are then independent and, on a
                # multi-core CPU, run in parallel (results taken in order, so identical to serial).
                results = _in_order(run_batch, use, None, workers, stages[it].check)
                for i, (s_b, u_b, a_b, m_b, extra, found, _sigma) in enumerate(results):
                    if found is not None:
                        res_t.append(found[0])
                        res_c.append(found[1])
                    if extra is not None:
                        if last:
                            feats.append(extra)
                        else:
                            acc += extra
                    all_s.append(s_b)
                    all_u.append(u_b)
                    all_a.append(a_b)
                    all_m.append(m_b)
                    stages[it].report((i + 1) / len(use), f"pass {it + 1}/{n_passes}")
                starts, units, amps, mus = (np.concatenate(v) for v in (all_s, all_u, all_a, all_m))
                order = np.argsort(starts, kind="stable")
                starts, units, amps, mus = starts[order], units[order], amps[order], mus[order]
                if last:
                    feats = np.concatenate(feats)[order] if feats else np.zeros((0, tpcs.shape[0], n_pc), np.float32)
                prev_u = units
                for k, members in enumerate(_by_unit(units.astype(np.int64), tpl.k)):
                    typical[k] = np.median(mus[members]) if len(members) else 0.0
                # template update: W_k ∝ Σ a R_t, low rank, unit norm (keep the old one if unit k found nothing)
                new = tpl.w.copy()
                for k in range(tpl.k):
                    if np.abs(acc[k]).sum() > 0:
                        u, s, vt = _low_rank(acc[k], params.rank)
                        new[k] = (u * s) @ vt
                templates = new if not last else tpl.w
                if not last:
                    templates, prev_u, typical = _merge_duplicates(templates, prev_u, typical, max(params.merge_similarity, 0.97))
                elif search:  # units found in the residual join the others, and the last pass runs again with them
                    search = False
                    with single_threaded():
                        extra_units = _residual_units(xw, starts, units.astype(int), amps, tpl.w, np.concatenate(res_t), np.concatenate(res_c),
                                                      probe, nbrs, d, trough, params)
                    timings["n_residual_units"] = len(extra_units)
                    if len(extra_units):
                        templates = np.concatenate([tpl.w, extra_units])
                        typical = np.r_[typical, np.zeros(len(extra_units))]
                        n_passes += 1
            # drop "shadow" templates: templates that fire almost only together with a nearby unit are fitting
            # what that unit's template leaves behind; and the single spikes by which a real unit does so
            units = units.astype(int)
            lone = _shadow_spikes(templates, starts, units, amps, probe.positions, int(round(0.5e-3 * fs)), n_t)
            shadow = _shadow_units(templates, starts, units, probe.positions, int(round(0.5e-3 * fs)), params.max_shadow_fraction,
                                   shadow_spikes=lone)
            timings["n_shadow_spikes"] = int(lone.sum())
            starts, units, amps, mus, feats = (v[~lone] for v in (starts, units, amps, mus, feats))
            timings["n_shadow_units"] = int(shadow.sum())
            # spike time = the trough on the peak channel of the spike's own template
            peak_ch = np.abs(templates).max(axis=2).argmax(axis=1)
            times = starts.astype(np.int64) + np.abs(templates[np.arange(len(templates)), peak_ch]).argmax(axis=1)[units]
            kept = np.flatnonzero(~shadow)
            index = np.cumsum(~shadow) - 1  # template → index among the kept ones
            keep = ~shadow[units]
            times, amps, mus, pc_features = times[keep], amps[keep], mus[keep], feats[keep]
            units = index[units[keep]]
            split_pairs = index[split_pairs[~shadow[split_pairs].any(axis=1)]] if len(split_pairs) else split_pairs
            # a unit holding two neurons (two clouds of PC features, two footprints) becomes two, each with the template
            # of its own spikes; each new unit is a merge candidate of its parent, so the halves of a drifting neuron
            # (firing in turn) are made one again below
            unit_templates, unit_pc_chans = templates[kept], pc_chans_np[kept]
            n_before = len(kept)
            split = split_units(pc_features, units, params.min_cluster, params.valley_ratio)
            if len(split) and split.max() >= n_before:
                children = np.arange(n_before, split.max() + 1)
                parents = np.array([units[split == c][0] for c in children])
                unit_templates = np.concatenate([unit_templates, np.zeros((len(children), *unit_templates.shape[1:]), unit_templates.dtype)])
                unit_pc_chans = np.concatenate([unit_pc_chans, unit_pc_chans[parents]])
                windows = starts[keep]
                for u in np.r_[np.unique(parents), children]:
                    m = np.flatnonzero(split == u)
                    unit_templates[u], amps[m], trough_u = _snippet_template(xw, windows[m], d, params.rank)
                    times[m] = windows[m] + trough_u
                split_pairs = np.concatenate([split_pairs.reshape(-1, 2), np.c_[parents, children]])
                units = split
            timings["n_split_units"] = int(len(unit_templates) - n_before)
            # a neuron cut in two (halves firing in turn as the probe drifted, or one cloud of spikes) becomes one unit
            n_kept = len(unit_templates)
            group = _merge_split_units(split_pairs, times, units, amps, n_kept, n_t, fs, pc_features.reshape(len(units), -1),
                                       params.valley_ratio, params.min_cluster)
            timings["n_merged_splits"] = int(n_kept - (group.max() + 1 if n_kept else 0))
            per_template = np.bincount(units, minlength=n_kept)
            templates = _merged_templates(unit_templates, group, per_template) if n_kept else unit_templates
            unit_pc = unit_pc_chans[np.unique(group, return_index=True)[1]] if n_kept else unit_pc_chans  # a group's members share them
            # drop units with too few spikes (counted after merging)
            counts = np.bincount(group[units], minlength=len(templates))
            keep_units = counts >= params.min_spikes
            remap = np.cumsum(keep_units) - 1
            keep = keep_units[group[units]] & ~_duplicates(times, group[units], amps, DUPLICATE_MS * 1e-3 * fs)
            times, units, amps, mus, pc_features = times[keep], remap[group[units[keep]]], amps[keep], mus[keep], pc_features[keep]
            templates = templates[keep_units]
            pc_ind = unit_pc[keep_units].astype(np.uint32)
            # a unit's trough = largest |value| on its peak channel (where its spike times are reported)
            peak_ch = np.abs(templates).max(axis=2).argmax(axis=1)
            troughs = np.array([int(np.abs(templates[k, peak_ch[k]]).argmax()) for k in range(len(templates))], dtype=np.int64)
        timings["deconvolve_s"] = time.perf_counter() - t0
        timings["scratch"] = "int16" if int16 else "float32"
        if int16:
            timings["scratch_clipped"] = xw.clipped  # whitened samples beyond the int16 file's ±164 SD
        timings["total_s"] = time.perf_counter() - t_start
        timings["device"] = str(device)
        spike_units = units.astype(np.int64)
        spike_times = times.astype(np.int64) if len(spike_units) else np.zeros(0, np.int64)
        order = np.argsort(spike_times, kind="stable")
        result = Sorting(
            spike_times=spike_times[order],
            spike_units=spike_units[order],
            amplitudes=amps[order].astype(np.float32),
            templates=np.asarray(templates, np.float32),
            template_troughs=troughs,
            sample_rate=fs,
            channels=probe.channel_map.copy(),
            positions=probe.positions.copy(),
            whitening=pre.whitening.copy(),
            preprocess_state=pre.state(),
            pc_features=None if pc_features is None else pc_features[order],
            pc_feature_ind=pc_ind,
            spike_positions=None if pc_features is None else spike_positions(
                pc_features[order], pc_ind, spike_units[order], probe.positions, spike_times[order] / fs, corrected),
            motion=motion,
            info={**timings, "params": asdict(params), "duration_s": recording.n_samples / fs},
        )
        progress.report(1.0, f"{result.n_units} units")
        detect_batch = run_batch = None  # noqa: F811 -- they hold xw (default arguments): release the file before cleanup
        del xw
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()


__all__ = ["SortParams", "Sorting", "sort_recording"]
