"""The CNMF pipeline: movie → registered movie → centers → demixed, deconvolved and evaluated ROIs.

Stages of :func:`run_cnmf`:

1. **Registration** (optional): :func:`engine.calcium.motion.correct_motion`, rigid or piecewise.
2. **One pass over the movie** (:func:`engine.calcium.io.summary_images`): mean, max and std images,
   and a copy averaged over blocks of ``bin`` frames (~7.5 Hz). Detection works on that copy:
   calcium transients last many frames, so averaging raises their SNR while the detection images
   (:func:`engine.calcium.summary.detection_images`) cost ``bin`` times less. Movies up to
   ``IN_MEMORY_BYTES`` are also kept whole in memory (16-bit ones in their own type) for the traces.
3. **Centers**: :func:`engine.calcium.summary.find_centers` on correlation × PNR.
4. **Fast NMF per patch of the binned movie** (:func:`engine.calcium.nmf.fast_nmf`, Algorithm 1):
   the field of view is tiled into square cores of ``patch_size`` px, each grown by one neuron
   diameter of overlap; a patch fits every center in its grown box (so cells across the border are
   modelled too) with ``n_background`` background components of its own, on the binned movie (shapes
   do not change over time, and averaging raises the transients' SNR; the full frame rate comes back
   in step 6). Each footprint is held to the blob around its seed during the fit (``SEED_THRESHOLD``,
   :class:`engine.calcium.nmf._SeedHold`): inside its square box a component seeded on a quiet cell
   otherwise moved onto a livelier neighbour, leaving its own cell without a component. Patches go
   through :func:`engine.parallel.parallel_map` (serial in this process for movies held in memory),
   each task carrying its box of the binned movie.
   Then a **greedy pass on the residual** (``residual_pass``, on by default): the binned movie minus
   the fitted model gets the same detection images and thresholds; its peaks farther than 1.2 radii
   from where every fitted footprint's light is (the peak of the footprint blurred at the cell's scale:
   not its centroid, which for a footprint that took two touching cells lies between them) are new
   centers (a dim cell on the shoulder of a bright neighbour is no local maximum until the neighbour is
   taken away). A footprint of the first fit well above the median size that a rank-2 NMF of its pixels
   parts into two cell-sized blobs with distinct activities took two touching cells: it keeps the part at
   its seed, the other is a new center (:func:`_split_pairs`). Patches that got new centers are fitted again from the first fit, the new cells
   starting as Gaussians carrying what the fit left at their centers (``REFIT_ITERATIONS`` HALS
   iterations); the others keep their fit.
5. **Merging**: a cell near a border is fitted by up to four patches. Copies whose footprints
   overlap (cosine ≥ ``merge_overlap``) and for which cosine × activity correlation ≥
   ``merge_overlap`` × ``merge_correlation``, or whose footprints are near-identical (cosine ≥ 0.85),
   are one cell; the copy from the patch whose core holds the center is kept (its box is complete).
   Distinct centers that pass the same test (one cell detected twice) are merged into one
   rank-1 component. Copies that matched nothing are neighbours fitted only for the patch's
   sake and are dropped too.
6. **Traces** at the movie's frame rate, in one chunked pass over it (:func:`_project`): with the
   footprints and backgrounds fixed, their activities start from the binned fit's and get
   ``TRACE_SWEEPS`` HALS sweeps on their product with the movie; ``F`` = that activity + the
   projection of the residual on the footprint (CNMF's "C + YrA", raw demixed fluorescence,
   background removed), ``Fneu`` the background under the footprint.
7. **Deconvolution** of ``F``: :func:`engine.calcium.deconvolution.deconvolve_batch` (AR(1), noise
   constrained): ``C`` calcium above baseline, ``S`` spikes.
8. **Evaluation**: SNR of the trace (peak of ``C`` over the noise σ of ``F``), spatial correlation
   of the footprint with the data (``r_value``: the movie less background and the other components averaged with the
   component's activity as weights, against the footprint, in the NMF box), and size (pixels of
   the footprint ≥ 20 % of its peak); accepted when all three pass, unless it overlaps an accepted
   component of higher SNR (cosine ≥ ``merge_overlap``) with an anti-correlated trace and has no
   transients of its own (trace skewness < ``OWN_TRANSIENTS_SKEW``): a demixing artifact, light from overlapping cells adds.

Footprints ``A`` are a scipy.sparse matrix pixels × K with pixel index ``y * width + x`` and each
column scaled to a peak of 1, so ``F`` is in the movie's units at the cell's brightest pixel.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from engine.calcium.io import Movie, open_movie, summary_images
from engine.errors import InputError
from engine.parallel import parallel_map, requested_scheduler
from engine.progress import Progress, as_progress

REGISTER = ("none", "rigid", "piecewise")
DETECTION_RATE_HZ = 7.5  # frames are averaged down to about this rate for detection
MAX_DETECTION_FRAMES = 2000
IN_MEMORY_BYTES = 2 * 2**30  # movies up to this size as float32 are held whole for the traces
SIZE_THRESHOLD = 0.2  # a footprint's size counts pixels at ≥ 20 % of its peak
DUPLICATE_COSINE = 0.85  # footprints this alike are merged whatever their traces
# An anti-correlated overlapping component whose trace is skewed at least this much has transients of
# its own and is not rejected as compensating (white noise: 0 ± 0.045 over 3000 frames).
OWN_TRANSIENTS_SKEW = 0.5
TRACE_SWEEPS = 5  # HALS sweeps of the full-rate activities (from the binned fit's) with the footprints fixed
# NMF shapes are held to the blob around their seed at this fraction of their peak (nmf._SeedHold): without it
# 5-9 components per doughnut-dim movie moved 7-14 px onto a livelier neighbour in the first fit.
SEED_THRESHOLD = 0.2
# A first-fit footprint over SPLIT_AREA x the median footprint is tried as two touching cells (_split_pairs): each part
# one blob of SPLIT_MIN_AREA to SPLIT_AREA x the median, their activities correlated below SPLIT_CORRELATION.
SPLIT_AREA = 1.6
SPLIT_MIN_AREA = 0.4
SPLIT_CORRELATION = 0.7
REFIT_ITERATIONS = 5  # HALS iterations of a patch fitted again with the centers the residual pass added


@dataclass
class CNMFResult:
    """Everything :func:`run_cnmf` found; arrays with one row (or column of ``A``) per component.

    ``A`` sparse pixels × K footprints (peak 1, pixel ``y * width + x``); ``C`` deconvolved calcium
    (above baseline), ``S`` spikes, ``F`` raw demixed fluorescence (background removed), ``Fneu``
    background under each footprint, all K × T float32; ``b`` sparse pixels × P background images
    (one per patch, on its core) and ``f`` P × T their activities; ``baseline``, ``g``, ``sigma``
    per component (deconvolution); ``centers`` (K, 2) (row, col); ``metrics`` {"snr", "r_value",
    "size"}; ``accepted`` bool (K,); ``shifts`` (T, 2) registration shifts or None; ``images``
    {"mean", "max", "std", "correlation", "pnr", "noise"} (h × w float32).
    """

    A: sparse.csc_matrix
    C: np.ndarray
    S: np.ndarray
    F: np.ndarray
    Fneu: np.ndarray
    b: sparse.csc_matrix
    f: np.ndarray
    baseline: np.ndarray
    g: np.ndarray
    sigma: np.ndarray
    centers: np.ndarray
    metrics: dict
    accepted: np.ndarray
    image_shape: tuple[int, int]
    fps: float
    shifts: np.ndarray | None = None
    images: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        return self.A.shape[1]

    def footprint(self, k: int) -> np.ndarray:
        """Footprint ``k`` as an image (h × w)."""
        return np.asarray(self.A[:, k].toarray()).reshape(self.image_shape)

    def roi_mask(self, k: int, threshold: float = SIZE_THRESHOLD) -> np.ndarray:
        """Boolean image of the pixels of footprint ``k`` at ≥ ``threshold`` × its peak."""
        img = self.footprint(k)
        return img >= threshold * img.max() if img.max() > 0 else np.zeros(self.image_shape, bool)


# -- helpers ------------------------------------------------------------------------------------

def _as_movie(movie, fs) -> Movie:
    if isinstance(movie, Movie):
        if fs is not None and movie.fps is None:
            movie.fps = float(fs)
        return movie
    if isinstance(movie, (str, Path)):
        return open_movie(movie, fps=fs)
    return Movie.from_array(movie, fps=fs)


def add_to_bins(binned: np.ndarray, bin_: int, start: int, block: np.ndarray) -> None:
    """Add frames ``start:start + len(block)`` to ``binned`` (n_bins × h × w), the means of blocks of
    ``bin_`` frames; frames past the last whole bin are dropped. A bin split between two blocks
    gets its frames from both: the reader's chunks need not be multiples of ``bin_`` (summary_images
    caps them by bytes, e.g. 16 frames of 512² px, and a bin short of frames dips in every pixel,
    which inflated the PNR noise: recall 0.45 instead of 0.94 at 512² px × 2000 frames in bins of 5)."""
    stop = start + len(block)
    for i in range(start // bin_, min(-(-stop // bin_), len(binned))):
        lo, hi = max(i * bin_, start) - start, min((i + 1) * bin_, stop) - start
        if hi > lo:
            binned[i] += block[lo:hi].sum(axis=0) / bin_


def _tiles(n: int, core: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(core start, core stop, grown start, grown stop) along one axis."""
    count = max(1, int(round(n / core)))
    edges = np.linspace(0, n, count + 1).round().astype(int)
    return [(a, b, max(0, a - overlap), min(n, b + overlap)) for a, b in zip(edges[:-1], edges[1:])]


def _pixels_by_time(block: np.ndarray) -> np.ndarray:
    """frames × rows × cols → rows × cols × frames float32, C-contiguous. Copied 16 frames at a
    time: the transposed writes then stay in cache (2x faster than one strided copy)."""
    n, h, w = block.shape
    out = np.empty((h, w, n), dtype=np.float32)
    for start in range(0, n, 16):
        out[:, :, start:start + 16] = block[start:start + 16].transpose(1, 2, 0)
    return out


def _patch_r_values(Y3: np.ndarray, res, boxes: np.ndarray) -> np.ndarray:
    """Spatial correlation of each footprint with the data it explains: the movie minus the
    background and minus the other components' fitted light, averaged over time with weights
    max(c - median c, 0) (the frames where the component is active), against the footprint over
    its NMF box (zeros included, so a footprint that does not look like the active data scores
    low). Without the neighbours' share a dim cell beside a co-active bright one scored ~0.4."""
    h, w, T = Y3.shape
    out = np.zeros(len(res.centers), dtype=np.float32)
    for k, (r0, r1, c0, c1) in enumerate(boxes):
        c = res.C[k].astype(np.float64)
        weights = np.maximum(c - np.median(c), 0.0)
        total = weights.sum()
        if total <= 0:
            continue
        weights /= total
        mean_img = Y3[r0:r1, c0:c1] @ weights.astype(np.float32)
        bg = (res.b.reshape(h, w, -1)[r0:r1, c0:c1] @ (res.f @ weights)).astype(np.float64)
        others = res.C @ weights
        others[k] = 0.0  # co-active neighbours' light is theirs, not this footprint's
        bg += res.A.reshape(h, w, -1)[r0:r1, c0:c1] @ others
        img = (mean_img - bg).ravel()
        a = res.A[:, k].reshape(h, w)[r0:r1, c0:c1].ravel().astype(np.float64)
        if a.std() > 0 and img.std() > 0:
            out[k] = np.corrcoef(a, img)[0, 1]
    return out


def _fit_patch(task: dict) -> dict:
    """NMF of one patch of the binned movie (runs in a worker): local footprints, activities at the
    binned rate, background, r-values. With ``init`` (an earlier fit of the same patch and the
    centers it had) the fit starts there, the centers added since starting as Gaussians on the
    residual, and runs ``refit_iterations`` HALS iterations; no centers added: the earlier fit stands."""
    from engine.calcium.nmf import _initialize, _layout, _Numpy, fast_nmf, hals

    block = task.pop("block")  # the box itself, sent with the task (not sent back)
    Y3 = _pixels_by_time(block)
    del block
    h, w, T = Y3.shape
    centers = task["centers"]
    init = task.pop("init", None)
    if len(centers) == 0:  # background only: the 20th-percentile image and its least-squares activity
        sample = Y3[:, :, :: max(1, T // 200)]
        bimg = np.percentile(sample, 20, axis=2).reshape(-1).astype(np.float32)
        f = (bimg @ Y3.reshape(h * w, T)) / max(float(bimg @ bimg), 1e-12)
        return {**task, "A": np.zeros((h * w, 0), np.float32), "C": np.zeros((0, T), np.float32), "b": bimg[:, None],
                "f": f[None].astype(np.float32), "r_value": np.zeros(0, np.float32)}  # fmt: skip
    radius = task["radius"]
    if init is not None and init["A"].shape[1] == len(centers):
        from engine.calcium.nmf import NMFResult, _patches

        res = NMFResult(A=init["A"], C=init["C"], b=init["b"], f=init["f"], image_shape=(h, w), centers=centers,
                        patches=_patches(centers, int(math.ceil(2 * radius)), (h, w)))  # fmt: skip
    elif init is not None and init["b"].shape[1] == task["n_background"]:
        old = init["A"].shape[1]
        fresh = centers[old:]
        # The new cells start as Gaussians whose activity is what the earlier fit left at their centers.
        layout = _layout(fresh, int(math.ceil(2 * radius)), (h, w), 0, _Numpy())
        A_new, _ = _initialize(Y3, fresh, radius / 2.0, layout)
        rc = np.clip(np.rint(fresh).astype(int), 0, [h - 1, w - 1])
        pix = rc[:, 0] * w + rc[:, 1]
        model = np.hstack([init["A"], init["b"]])[pix] @ np.vstack([init["C"], init["f"]])
        C_new = np.maximum(Y3.reshape(h * w, T)[pix] - model, 0.0)
        # A cell split off a footprint of this patch (_split_pairs) starts from its part of the split.
        for center, a, c in init.get("fresh", []):
            i = int(np.argmin(np.hypot(*(fresh + task["box"][::2] - center).T)))
            A_new[:, i], C_new[i] = a, c
        A0 = np.hstack([init["A"], A_new, init["b"]]).astype(np.float32)
        C0 = np.vstack([init["C"], C_new, init["f"]]).astype(np.float32)
        # Only the new cells are held to their seeds: the first fit's were held there already (holding them
        # again let two 173-199 px residual leftovers, no true cell, pass as cells on synth seed 1).
        res = hals(Y3, centers, neuron_radius=radius, n_background=task["n_background"], iterations=task["refit_iterations"],
                   init=(A0, C0), seed_threshold=SEED_THRESHOLD, hold_neurons=np.arange(old, len(centers)),
                   backend=task.get("backend", "auto"))  # fmt: skip
    else:
        temporal = int(max(1, min(task.get("temporal_factor", 30), T // 20)))
        res = fast_nmf(Y3, centers, neuron_radius=radius, n_background=task["n_background"], temporal_factor=temporal,
                       seed_threshold=SEED_THRESHOLD, backend=task.get("backend", "auto"))  # fmt: skip
    r_value = _patch_r_values(Y3, res, res.patches) if task.get("r_values", True) else np.zeros(len(centers), np.float32)
    return {**task, "A": res.A, "C": res.C, "b": res.b, "f": res.f, "r_value": r_value}


def _residual_centers(binned: np.ndarray, parts: list[dict], shape, radius: float, min_correlation: float,
                      min_pnr: float) -> np.ndarray:
    """Centers of cells a fit missed: the detection images of the binned movie minus every patch's
    model fitted to it (components and background, each patch on its core), same thresholds; a peak
    closer than 1.2 radii to where a fitted footprint's light is is that cell's leftover, not a new cell (touching cells are
    about two radii apart)."""
    from engine.calcium.summary import detection_images, find_centers

    h, w = shape
    n_bins = len(binned)
    residual = binned.copy()
    for part in parts:
        g0, g1, e0, e1 = part["box"]
        q0, q1, s0, s1 = part["core"]
        # The model on the core only, computed frames-major (no transposed copy).
        model = np.hstack([part["A"], part["b"]]).reshape(g1 - g0, e1 - e0, -1)[q0 - g0:q1 - g0, s0 - e0:s1 - e0]
        act = np.vstack([part["C"], part["f"]]).astype(np.float32)
        residual[:, q0:q1, s0:s1] -= (act.T @ model.reshape(-1, act.shape[0]).T.astype(np.float32)).reshape(n_bins, q1 - q0, s1 - s0)
    det = detection_images(residual, neuron_radius=radius, noise=False)
    found = find_centers(det["correlation"], det["pnr"], neuron_radius=0.6 * radius,
                         min_correlation=min_correlation, min_pnr=min_pnr)  # fmt: skip
    # Known cells are where their fitted footprints ended up (a component seeded on a quiet cell
    # can move onto a livelier neighbour, leaving its seed's cell in the residual).
    # Where a footprint's light is: the peak of the footprint blurred at the cell's scale (a
    # doughnut's peak moves to its middle). Not its centroid: a footprint that took two touching
    # cells has its centroid between them, within reach of the missed one's peak in the residual.
    from scipy.ndimage import gaussian_filter

    known = [np.zeros((0, 2))]
    for part in parts:
        g0, g1, e0, e1 = part["box"]
        A = part["A"]
        if A.shape[1]:
            imgs = gaussian_filter(A.reshape(g1 - g0, e1 - e0, -1), (radius / 2.0, radius / 2.0, 0), mode="constant")
            peak = imgs.reshape(-1, A.shape[1]).argmax(axis=0)
            rows, cols = np.divmod(peak, e1 - e0)
            known.append(np.stack([rows + g0, cols + e0], axis=1)[A.max(axis=0) > 0])
    known = np.vstack(known)
    if len(found) == 0 or len(known) == 0:
        return found
    distance = np.hypot(found[:, None, 0] - known[None, :, 0], found[:, None, 1] - known[None, :, 1]).min(axis=1)
    return found[distance >= 1.2 * radius]


def _split_pairs(binned: np.ndarray, parts: list[dict], radius: float) -> list[np.ndarray]:
    """Footprints of the first fit that took two touching cells, split in place; the second cells' centers.

    A component whose footprint (pixels ≥ ``SIZE_THRESHOLD`` of its peak) is over ``SPLIT_AREA`` × the median
    is refitted on its support as two: the residual there (the binned movie less the background and the other
    components) gets a rank-2 NMF, started from the sign of the pixels' first principal component (their
    correlation image parted in two). The split stands only when both parts are cell-sized, each one blob, at
    least 1.5 radii apart, and their activities differ (correlation < ``SPLIT_CORRELATION``): the part nearer the
    seed stays the component, the other becomes a new center whose start (shape, activity) is left in the part
    (``part["fresh"]``) for the refit. Decided in the patch whose core holds the seed only."""
    from scipy.ndimage import gaussian_filter, label

    from engine.calcium.nmf import rank2_nmf

    areas = np.concatenate([(p["A"] >= SIZE_THRESHOLD * p["A"].max(axis=0, initial=0)).sum(axis=0) for p in parts])
    areas = areas[areas > 0]
    if len(areas) == 0:
        return []
    median = float(np.median(areas))
    found = []
    for part in parts:
        g0, g1, e0, e1 = part["box"]
        q0, q1, s0, s1 = part["core"]
        bh, bw = g1 - g0, e1 - e0
        A, C = part["A"], part["C"]
        for k in range(A.shape[1]):
            cy, cx = part["centers"][k]
            if not (q0 <= cy + g0 < q1 and s0 <= cx + e0 < s1) or A[:, k].max() <= 0:
                continue
            support = np.flatnonzero(A[:, k] >= SIZE_THRESHOLD * A[:, k].max())
            if len(support) < SPLIT_AREA * median:
                continue
            sy, sx = np.divmod(support, bw)
            Y = binned[:, g0 + sy, e0 + sx].T.astype(np.float64)
            others = np.delete(np.arange(A.shape[1]), k)
            R = Y - part["b"][support] @ part["f"] - A[support][:, others] @ C[others]
            Z = R - R.mean(axis=1, keepdims=True)
            Z /= np.linalg.norm(Z, axis=1, keepdims=True) + 1e-12
            Z -= Z.mean(axis=0)
            u = Z @ Z[int(np.argmax(A[support, k]))]
            for _ in range(20):  # power iterations: the pixels' first principal component
                u = Z @ (Z.T @ u)
                u /= np.linalg.norm(u) + 1e-12
            W = np.stack([u > 0, u <= 0], axis=1).astype(np.float64)
            if W.sum(axis=0).min() == 0:
                continue
            W, H = rank2_nmf(R, W)
            if H.std(axis=1).min() <= 0 or np.corrcoef(H)[0, 1] >= SPLIT_CORRELATION:
                continue
            imgs, peaks, ok = [], [], True
            for j in range(2):
                img = np.zeros(bh * bw)
                img[support] = W[:, j]
                img = img.reshape(bh, bw)
                mask = img >= SIZE_THRESHOLD * img.max() if img.max() > 0 else img > 0
                n_blobs = label(mask, structure=np.ones((3, 3)))[1]
                blur = gaussian_filter(img, radius / 2.0, mode="constant")
                peaks.append(np.array(np.unravel_index(blur.argmax(), blur.shape), float))
                imgs.append(img)
                ok &= n_blobs == 1 and SPLIT_MIN_AREA * median <= mask.sum() <= SPLIT_AREA * median
            if not ok or np.hypot(*(peaks[0] - peaks[1])) < 1.5 * radius:
                continue
            keep = int(np.hypot(*(peaks[1] - [cy, cx])) < np.hypot(*(peaks[0] - [cy, cx])))
            new = 1 - keep
            scale = [imgs[j].max() for j in range(2)]
            A[:, k] = (imgs[keep] / scale[keep]).reshape(-1)
            C[k] = H[keep] * scale[keep]
            center = peaks[new] + [g0, e0]
            part.setdefault("fresh", []).append((center, (imgs[new] / scale[new]).reshape(-1), H[new] * scale[new]))
            found.append(center)
    return found


def _cosine(A: sparse.csc_matrix) -> sparse.coo_matrix:
    norms = np.sqrt(np.asarray(A.multiply(A).sum(axis=0))).ravel()
    G = (A.T @ A).tocoo()
    G.data = G.data / (norms[G.row] * norms[G.col] + 1e-12)
    return G


def _correlation(C: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    Z = C - C.mean(axis=1, keepdims=True)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True) + 1e-12
    return np.einsum("ij,ij->i", Z[rows], Z[cols])


def _rank_one(a_list, c_list) -> tuple[sparse.csc_matrix, np.ndarray]:
    """Best rank-1 non-negative approximation of Σ a_i c_i over the union of the supports (HALS)."""
    stacked = sparse.hstack(a_list).tocsr()
    support = np.unique(stacked.nonzero()[0])
    M = np.asarray(stacked[support].toarray(), dtype=np.float64) @ np.vstack(c_list).astype(np.float64)
    c = np.vstack(c_list).sum(axis=0).astype(np.float64)
    for _ in range(15):
        a = np.maximum(M @ c, 0) / max(c @ c, 1e-12)
        c = np.maximum(a @ M, 0) / max(a @ a, 1e-12)
    scale = a.max() if a.max() > 0 else 1.0
    n_pix = stacked.shape[0]
    col = sparse.csc_matrix((a / scale, (support, np.zeros(len(support), int))), shape=(n_pix, 1))
    return col, (c * scale).astype(np.float32)


def _normalize(A: sparse.csc_matrix, C: np.ndarray) -> tuple[sparse.csc_matrix, np.ndarray]:
    peak = np.asarray(A.max(axis=0).toarray()).ravel()
    peak[peak <= 0] = 1.0
    return (A @ sparse.diags(1.0 / peak)).tocsc().astype(np.float32), (C * peak[:, None]).astype(np.float32)


# -- the stages -----------------------------------------------------------------------------------

def _merge(parts: list[dict], shape, overlap_thr: float, corr_thr: float) -> tuple:
    """Global components from the patch fits: cross-border copies merged, duplicate cells merged."""
    H, W = shape
    cols, acts, cids, owned, rvals, patch_of = [], [], [], [], [], []
    for p, part in enumerate(parts):
        r0, r1, c0, c1 = part["box"]
        yy, xx = np.mgrid[r0:r1, c0:c1]
        gpix = (yy * W + xx).ravel()
        A = part["A"]
        q0, q1, s0, s1 = part["core"]
        for k in range(A.shape[1]):
            nz = np.flatnonzero(A[:, k])
            cols.append(sparse.csc_matrix((A[nz, k], (gpix[nz], np.zeros(len(nz), int))), shape=(H * W, 1)))
            acts.append(part["C"][k])
            cid = part["center_ids"][k]
            cids.append(cid)
            cy, cx = part["global_centers"][k]
            owned.append(q0 <= round(cy) < q1 and s0 <= round(cx) < s1)
            rvals.append(part["r_value"][k])
            patch_of.append(p)
    n = len(cols)
    if n == 0:
        n_frames = parts[0]["f"].shape[1] if parts else 0
        return (sparse.csc_matrix((H * W, 0), dtype=np.float32), np.zeros((0, n_frames), np.float32), np.zeros(0, int),
                np.zeros(0, np.float32), {"copies_merged": 0, "cells_merged": 0})
    A = sparse.hstack(cols).tocsc()
    C = np.vstack(acts).astype(np.float32)
    cids, owned, rvals = np.array(cids), np.array(owned), np.array(rvals, dtype=np.float32)
    G = _cosine(A)
    upper = G.row < G.col
    rows, cols_ = G.row[upper], G.col[upper]
    cos = G.data[upper]
    near = cos >= overlap_thr
    rows, cols_, cos = rows[near], cols_[near], cos[near]
    corr = _correlation(C, rows, cols_)
    # Footprints this alike are one cell fitted twice (e.g. two centers on a doughnut's ring), however
    # NMF split its activity between them; touching cells overlap far less (cosine < 0.5).
    # A pair whose footprints overlap that much but whose activity NMF split a little (a second
    # center on the cell's leftover in the residual) is caught by the product: cosine × correlation.
    same = (cos * corr >= overlap_thr * corr_thr) | (cos >= DUPLICATE_COSINE)
    rows, cols_ = rows[same], cols_[same]
    # Copies of one cell: the connected components of the matched pairs (labelled by their first member).
    pairs = sparse.coo_matrix((np.ones(len(rows)), (rows, cols_)), shape=(n, n))
    labels = connected_components(pairs, directed=False)[1]
    out_a, out_c, out_id, out_r = [], [], [], []
    copies = cells = 0
    for g in range(labels.max() + 1):
        members = np.flatnonzero(labels == g)
        keep = [i for i in members if owned[i]]
        copies += len(members) - len(keep) if keep else 0
        if not keep:  # neighbours fitted for a patch's sake only
            continue
        if len(keep) == 1:
            k = keep[0]
            out_a.append(A[:, k])
            out_c.append(C[k])
        else:
            cells += len(keep) - 1
            col, act = _rank_one([A[:, k] for k in keep], [C[k] for k in keep])
            out_a.append(col)
            out_c.append(act)
        best = max(keep, key=lambda i: rvals[i])
        out_id.append(cids[best])
        out_r.append(rvals[keep].max())
    order = np.argsort(out_id, kind="stable")
    A = sparse.hstack([out_a[i] for i in order]).tocsc() if out_a else sparse.csc_matrix((H * W, 0))
    C = np.vstack([out_c[i] for i in order]) if out_c else np.zeros((0, C.shape[1]), np.float32)
    return A, C, np.array(out_id)[order], np.array(out_r, dtype=np.float32)[order], {"copies_merged": int(copies), "cells_merged": int(cells)}


def _project(movie: Movie, data, A: sparse.csc_matrix, C: np.ndarray, b: sparse.csc_matrix, f: np.ndarray, bin_: int,
             progress: Progress) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(F, Fneu, f) at the movie's frame rate from the fit of the binned movie (``C``, ``f`` one value
    per bin of ``bin_`` frames): with the footprints and backgrounds W = [A b] fixed, their activities
    start from the binned ones held over each bin's frames and get :data:`TRACE_SWEEPS` HALS sweeps
    on Wᵀ Y (one pass over the movie, the only product with it at full rate); F = NMF activity
    plus the residual projected on each footprint, Fneu the background under it."""
    n, h, w = movie.shape
    K = A.shape[1]
    W = sparse.hstack([A, b]).tocsc().astype(np.float32)
    Wt = W.T.tocsr()
    WtY = np.zeros((W.shape[1], n), dtype=np.float64)
    step = int(max(1, 16 * 2**20 // (h * w * 4)))
    # Few components: frames @ dense footprints in BLAS (3.5x faster on 128² × 47: the sparse
    # product needs the frames transposed, a strided copy that costs more than the dense flops).
    dense = W.toarray() if W.shape[1] <= 256 and h * w * W.shape[1] * 4 <= 256 * 2**20 else None
    for start in range(0, n, step):
        progress.check()
        block = np.asarray(data[start:start + step], np.float32) if data is not None else movie.frames(start, start + step)
        flat = block.reshape(len(block), -1)
        WtY[:, start:start + len(block)] = (flat @ dense).T if dense is not None else Wt @ flat.T
        progress.report(min(start + step, n) / n, "Projecting traces")
    G = (Wt @ W).toarray().astype(np.float64)
    d = np.maximum(np.diag(G), 1e-12)
    X = np.repeat(np.vstack([C, f]).astype(np.float64), bin_, axis=1)[:, :n]
    if X.shape[1] < n:  # frames after the last whole bin keep its value
        X = np.hstack([X, np.repeat(X[:, -1:], n - X.shape[1], axis=1)])
    X = np.ascontiguousarray(X)
    for _ in range(TRACE_SWEEPS):
        for k in range(len(X)):
            X[k] = np.maximum(X[k] + (WtY[k] - G[k] @ X) / d[k], 0.0)
    C, f = X[:K], X[K:]
    background = G[:K, K:] @ f
    F = C + (WtY[:K] - G[:K, :K] @ C - background) / d[:K, None]
    return F.astype(np.float32), (background / d[:K, None]).astype(np.float32), f.astype(np.float32)


def _deconvolve(F: np.ndarray, scheduler, progress: Progress):
    from engine.calcium.deconvolution import deconvolve_batch

    if len(F) == 0:
        z = np.zeros_like(F)
        return z, z, np.zeros(0), np.zeros(0), np.zeros(0)
    out = deconvolve_batch(F.astype(np.float64), scheduler=scheduler, progress=progress)
    return out.C.astype(np.float32), out.S.astype(np.float32), out.b, out.g, out.sigma


def _compensating(A: sparse.csc_matrix, F: np.ndarray, snr: np.ndarray, accepted: np.ndarray, min_overlap: float) -> np.ndarray:
    """Accepted components that only make up for an overlapping one's misfit: of two accepted footprints
    overlapping that much (cosine ≥ ``min_overlap``) whose fluorescence traces anti-correlate, the
    one of lower SNR, unless its own trace has transients of its own (skewness ≥ ``OWN_TRANSIENTS_SKEW``).
    Light from two cells adds, so overlapping cells are never anti-correlated; a second footprint
    that takes back what NMF gave the first too much is, and its trace, the other's transients upside
    down plus noise, is not skewed up. A cell whose brighter neighbour's footprint took part of it
    anti-correlates with that neighbour too but keeps its transients: on the 24 benchmark movies the only
    component the test without skewness rejected was such a cell (doughnut-dim seed 5: IoU 0.67 with
    its cell, skewness 1.27; true cells there 0.45–7.8). Compensators an earlier pipeline made had 0.31 and -0.35."""
    from scipy.stats import skew

    out = np.zeros(len(accepted), bool)
    if A.shape[1] < 2:
        return out
    G = _cosine(A)
    pick = (G.row < G.col) & (G.data >= min_overlap) & accepted[G.row] & accepted[G.col]
    rows, cols = G.row[pick], G.col[pick]
    anti = _correlation(F, rows, cols) < 0
    weaker = np.where(snr[rows] < snr[cols], rows, cols)[anti]
    own_transients = skew(F[weaker], axis=1) >= OWN_TRANSIENTS_SKEW  # NaN (a flat trace): no transients
    out[weaker[~own_transients]] = True
    return out


def noise_snr_threshold(n_frames: int, false_alarm: float = 0.05) -> float:
    """The SNR (peak over noise σ) that white Gaussian noise alone exceeds somewhere in ``n_frames``
    frames with probability ``false_alarm`` (Bonferroni over frames: the (1 - p / T) quantile);
    4.15 for 3000 frames. The fixed 3 it replaces let leftovers of the residual pass through (on
    the simulators' movies true cells had SNR ≥ 7, residual leftovers 1–5)."""
    from scipy.special import ndtri  # the normal quantile (scipy.stats costs seconds to import)

    return float(max(3.0, -ndtri(false_alarm / max(int(n_frames), 1))))


def evaluate_components(A: sparse.csc_matrix, C: np.ndarray, sigma: np.ndarray, r_value: np.ndarray,
                        neuron_diameter: float, min_snr: float = 3.0, min_r: float = 0.5,
                        size_range: tuple[float, float] = (0.25, 3.0)) -> tuple[dict, np.ndarray]:
    """(metrics, accepted). ``snr`` = peak of the deconvolved calcium / noise σ of F; ``size`` =
    pixels ≥ 20 % of the footprint's peak, accepted within ``size_range`` × the area of a disk of
    ``neuron_diameter`` (0.25–3: cells of half to 1.7 × the diameter); ``r_value`` ≥ ``min_r``; ``snr`` ≥ ``min_snr``."""
    peak = C.max(axis=1) if C.size else np.zeros(len(sigma))
    snr = np.where(sigma > 0, peak / np.maximum(sigma, 1e-12), 0.0).astype(np.float32)
    Ad = A.tocsc()
    size = np.array([np.count_nonzero(Ad[:, k].data >= SIZE_THRESHOLD * Ad[:, k].data.max()) if Ad[:, k].nnz else 0
                     for k in range(Ad.shape[1])], dtype=np.int32)  # fmt: skip
    area = math.pi * (neuron_diameter / 2.0) ** 2
    accepted = (snr >= min_snr) & (np.asarray(r_value) >= min_r) & (size >= size_range[0] * area) & (size <= size_range[1] * area)
    return {"snr": snr, "r_value": np.asarray(r_value, dtype=np.float32), "size": size}, accepted


def run_cnmf(
    movie,
    fs: float | None = None,
    neuron_diameter: float = 10.0,
    register: str = "none",
    patch_size: int | None = None,
    *,
    n_background: int = 2,
    centers: np.ndarray | None = None,
    min_pnr: float = 5.0,
    min_correlation: float = 0.03,
    merge_overlap: float = 0.5,
    merge_correlation: float = 0.8,
    min_snr: float | None = None,
    min_r: float = 0.5,
    residual_pass: bool = True,
    scheduler: str | None = None,
    work_dir: str | Path | None = None,
    backend: str = "auto",
    progress: Progress | None = None,
) -> CNMFResult:
    """Run the whole pipeline (see the module docstring) on a movie, a path or a frames × h × w array.

    ``fs`` frame rate in Hz (default: the file's, else 30 and said so in ``info``);
    ``neuron_diameter`` px; ``register`` "none", "rigid" or "piecewise"; ``patch_size`` px of a
    patch core (default max(64, 6 diameters)); ``centers`` (row, col) skip detection;
    ``scheduler`` for the patches and deconvolution (as :func:`engine.parallel.parallel_map`:
    default ``NEUROWB_SCHEDULER``, else serial in this process for movies held in memory and a
    local process cluster for bigger ones; a scheduler address sends the work there, each patch
    task carrying its box of the binned movie); ``work_dir`` where a registered
    movie too big for memory is written (default a temporary file); ``residual_pass`` the greedy search for missed
    cells on the residual (step 4); ``min_snr`` default :func:`noise_snr_threshold` of the movie's length.
    """
    progress = as_progress(progress)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if register not in REGISTER:
        raise InputError(f"Unknown registration {register!r}: use one of {', '.join(REGISTER)}.")
    if not (neuron_diameter and neuron_diameter >= 2):
        raise InputError(f"neuron_diameter must be at least 2 px, got {neuron_diameter!r}.")
    movie = _as_movie(movie, fs)
    fps = float(fs or movie.fps or 30.0)
    info: dict = {"fps_assumed": not (fs or movie.fps)}
    n, h, w = movie.shape
    if n < 40:
        raise InputError(f"The movie has {n} frames; the pipeline needs at least 40 (noise and deconvolution estimates).")
    radius = neuron_diameter / 2.0
    if patch_size is None:
        patch_size = int(max(64, round(6 * neuron_diameter)))
    if patch_size < 2 * neuron_diameter:
        raise InputError(f"patch_size ({patch_size} px) must be at least two neuron diameters ({2 * neuron_diameter:g} px).")
    weights = [3 if register != "none" else 0.001, 2, 1, 4, 1, 1]
    s_reg, s_scan, s_detect, s_nmf, s_proj, s_dec = progress.split(weights, ["Registration", "Summary images", "Detecting cells",
                                                                             "Demixing patches", "Traces", "Deconvolution"])  # fmt: skip
    shifts = None
    if register != "none":
        from engine.calcium.motion import correct_motion

        out = Path(work_dir) / "registered.npy" if work_dir is not None and n * h * w * 4 > IN_MEMORY_BYTES else None
        mc = correct_motion(movie, register, out=out, progress=s_reg)
        shifts = mc.shifts
        movie = mc.movie(fps)
        timings["registration"] = time.perf_counter() - t0

    # 2. One pass: summary images, the binned movie for detection, the whole movie when small.
    t = time.perf_counter()
    bin_ = int(max(1, round(fps / DETECTION_RATE_HZ), math.ceil(n / MAX_DETECTION_FRAMES)))
    n_bins = n // bin_
    binned = np.zeros((n_bins, h, w), dtype=np.float32)
    in_memory = n * h * w * 4 <= IN_MEMORY_BYTES
    data = None
    if in_memory:
        src = getattr(movie, "_source", None)
        in_memory = isinstance(src, np.ndarray) and src.dtype == np.float32 and src.ndim == 3 and movie._reader is None
        # Integer movies are kept in their own type (exact, half the bytes of float32 for 16-bit data:
        # the copy and the traces' pass over it are memory-bound).
        small_int = np.issubdtype(movie.dtype, np.integer) and movie.dtype.itemsize <= 2
        data = src if in_memory else np.empty((n, h, w), movie.dtype if small_int else np.float32)
    copy = data is not None and data is not getattr(movie, "_source", None)

    def visit(start: int, block: np.ndarray) -> None:
        if copy:
            data[start:start + len(block)] = block
        add_to_bins(binned, bin_, start, block)

    chunk = int(max(bin_, (500 // bin_) * bin_))
    images = summary_images(movie, chunk_frames=chunk, progress=s_scan, visit=visit)
    timings["summary"] = time.perf_counter() - t

    # 3. Centers.
    t = time.perf_counter()
    from engine.calcium.summary import detection_images, find_centers

    det = detection_images(Movie.from_array(binned), neuron_radius=radius, progress=s_detect)
    images.update(correlation=det["correlation"], pnr=det["pnr"], noise=(det["noise"] * math.sqrt(bin_)).astype(np.float32))
    user_centers = centers
    if centers is None:
        # A suppression radius below the cell's finds touching neighbours (at d/2 about 1 cell in
        # 10 was missed on simulated movies); a cell found twice is merged again in step 5.
        centers = find_centers(det["correlation"], det["pnr"], neuron_radius=0.3 * neuron_diameter,
                               min_correlation=min_correlation, min_pnr=min_pnr)  # fmt: skip
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    timings["detection"] = time.perf_counter() - t
    info["centers_detected"] = len(centers)

    # 4. Patches: NMF of the binned movie, each task carrying its box. Shapes do not change over
    # time and the binned movie has the transients at bin_ × fewer frames (the full-rate activities
    # come in step 6, from one product with the movie).
    overlap = int(math.ceil(neuron_diameter))
    # A scheduler address (argument, or NEUROWB_SCHEDULER / neurowb --scheduler) sends the
    # patches there; on this machine a movie held in memory is demixed here, serially.
    sched = requested_scheduler(scheduler)
    if sched in ("auto", "serial") and (data is not None or movie.path is None):
        sched = "serial"

    def patch_tasks(centers: np.ndarray, earlier: list[dict] | None = None, r_values: bool = True) -> list[dict]:
        """One task per tile; ``earlier`` a fit of the same tiles to start from."""
        tasks = []
        for q0, q1, g0, g1 in _tiles(h, patch_size, overlap):
            for s0, s1, e0, e1 in _tiles(w, patch_size, overlap):
                inside = np.flatnonzero((centers[:, 0] >= g0) & (centers[:, 0] <= g1 - 1) & (centers[:, 1] >= e0) & (centers[:, 1] <= e1 - 1))
                tasks.append({"box": (g0, g1, e0, e1), "core": (q0, q1, s0, s1), "center_ids": inside,
                              "global_centers": centers[inside], "centers": centers[inside] - [g0, e0], "radius": radius,
                              "n_background": n_background, "backend": backend, "block": binned[:, g0:g1, e0:e1],
                              # ~100 time points in NMF's downsampled stage
                              "temporal_factor": int(max(1, round(30 / bin_))), "refit_iterations": REFIT_ITERATIONS,
                              "r_values": r_values})  # fmt: skip
                if earlier is not None:
                    part = earlier[len(tasks) - 1]
                    tasks[-1]["init"] = {key: part[key] for key in ("A", "C", "b", "f", "fresh") if key in part}
        return tasks

    # 4a. Greedy pass on the residual: a cell on the shoulder of a brighter neighbour is no local
    # maximum of the detection score until that neighbour's light is taken away. The patches are
    # fitted, the residual searched, and patches that got new centers fitted again from there.
    t = time.perf_counter()
    first_progress, refit_progress = s_nmf.split([3, 1], [None, "fitting the cells found in the residual"])
    search = residual_pass and user_centers is None
    parts = parallel_map(_fit_patch, patch_tasks(centers, r_values=not search), scheduler=sched, progress=first_progress,
                         label="patches", processes=True)  # fmt: skip
    timings["patches"] = time.perf_counter() - t
    if search:
        t = time.perf_counter()
        new = _residual_centers(binned, parts, (h, w), radius, min_correlation, min_pnr)
        split = np.asarray(_split_pairs(binned, parts, radius), dtype=np.float64).reshape(-1, 2)
        if len(split) and len(new):  # a residual peak on a split-off cell is that cell
            new = new[np.hypot(*(new[:, None] - split[None]).transpose(2, 0, 1)).min(axis=1) >= 1.2 * radius]
        info["centers_from_residual"] = len(new)
        info["footprints_split"] = len(split)
        centers = np.vstack([centers, new, split])
        # Patches without new centers keep their fit (and get their r-values here).
        parts = parallel_map(_fit_patch, patch_tasks(centers, earlier=parts), scheduler=sched, progress=refit_progress,
                             label="patches", processes=True)  # fmt: skip
        timings["residual_pass"] = time.perf_counter() - t

    # 5. Merge.
    t = time.perf_counter()
    A, C_nmf, ids, r_value, merge_info = _merge(parts, (h, w), merge_overlap, merge_correlation)
    info.update(merge_info)
    A, C_nmf = _normalize(A, C_nmf)
    centers_out = centers[ids] if len(ids) else np.zeros((0, 2))
    # Backgrounds: each patch's, on its core only (the cores tile the image once).
    b_cols, f_rows = [], []
    for part in parts:
        g0, g1, e0, e1 = part["box"]
        q0, q1, s0, s1 = part["core"]
        bh, bw = g1 - g0, e1 - e0
        for j in range(part["b"].shape[1]):
            img = np.zeros((h, w), np.float32)
            img[q0:q1, s0:s1] = part["b"][:, j].reshape(bh, bw)[q0 - g0:q1 - g0, s0 - e0:s1 - e0]
            b_cols.append(sparse.csc_matrix(img.reshape(-1, 1)))
            f_rows.append(part["f"][j])
    b = sparse.hstack(b_cols).tocsc().astype(np.float32)
    f = np.vstack(f_rows).astype(np.float32)
    timings["merge"] = time.perf_counter() - t

    # 6-7. Traces and deconvolution.
    t = time.perf_counter()
    F, Fneu, f = _project(movie, data, A, C_nmf, b, f, bin_, s_proj)
    C, S, baseline, g, sigma = _deconvolve(F, scheduler, s_dec)
    timings["traces_and_deconvolution"] = time.perf_counter() - t
    if min_snr is None:
        min_snr = noise_snr_threshold(n)
    metrics, accepted = evaluate_components(A, C, sigma, r_value, neuron_diameter, min_snr, min_r)
    compensating = _compensating(A, F, metrics["snr"], accepted, merge_overlap)
    accepted &= ~compensating
    info["rejected_as_compensating"] = int(compensating.sum())
    timings["total"] = time.perf_counter() - t0
    info["timings"] = timings
    params = {"fs": fps, "neuron_diameter": float(neuron_diameter), "register": register, "patch_size": int(patch_size),
              "n_background": n_background, "min_snr": float(min_snr), "min_r": min_r, "detection_bin": bin_,
              "merge_overlap": merge_overlap, "merge_correlation": merge_correlation}  # fmt: skip
    progress.report(1.0, "Done")
    return CNMFResult(A=A, C=C, S=S, F=F, Fneu=Fneu, b=b, f=f, baseline=np.asarray(baseline), g=np.asarray(g),
                      sigma=np.asarray(sigma), centers=centers_out, metrics=metrics, accepted=accepted, image_shape=(h, w),
                      fps=fps, shifts=shifts, images=images, params=params, info=info)  # fmt: skip


# -- curation: the GUI's edits ------------------------------------------------------------------

def _append(result: CNMFResult, a: sparse.csc_matrix, F_new: np.ndarray, Fneu_new: np.ndarray, center, r_value: float,
            accepted: bool | None = None) -> CNMFResult:
    C, S, baseline, g, sigma = _deconvolve(F_new[None], "serial", as_progress(None))
    A = sparse.hstack([result.A, a]).tocsc()
    r = np.append(result.metrics["r_value"], np.float32(r_value))
    sig = np.append(result.sigma, sigma)
    Call = np.vstack([result.C, C])
    metrics, acc = evaluate_components(A, Call, sig, r, result.params["neuron_diameter"], result.params["min_snr"], result.params["min_r"])
    accepted_all = np.append(result.accepted, acc[-1] if accepted is None else bool(accepted))
    return replace(result, A=A, C=Call, S=np.vstack([result.S, S]), F=np.vstack([result.F, F_new[None]]),
                   Fneu=np.vstack([result.Fneu, Fneu_new[None]]), baseline=np.append(result.baseline, baseline),
                   g=np.append(result.g, g), sigma=sig, centers=np.vstack([result.centers, np.asarray(center, float)[None]]),
                   metrics=metrics, accepted=accepted_all)  # fmt: skip


def _drop(result: CNMFResult, keep: np.ndarray) -> CNMFResult:
    return replace(result, A=result.A[:, keep].tocsc(), C=result.C[keep], S=result.S[keep], F=result.F[keep],
                   Fneu=result.Fneu[keep], baseline=result.baseline[keep], g=result.g[keep], sigma=result.sigma[keep],
                   centers=result.centers[keep], metrics={k: v[keep] for k, v in result.metrics.items()},
                   accepted=result.accepted[keep])  # fmt: skip


def remove_components(result: CNMFResult, indices) -> CNMFResult:
    """A new result without the given components (the GUI's delete)."""
    keep = np.setdiff1d(np.arange(result.n_components), np.atleast_1d(indices))
    return _drop(result, keep)


def merge_components(result: CNMFResult, i: int, j: int) -> CNMFResult:
    """A new result where components ``i`` and ``j`` are one: the best rank-1 fit of
    ``a_i F_i + a_j F_j`` (footprint over both supports), deconvolved again; appended last,
    the two originals removed. Accepted if either was."""
    K = result.n_components
    if not (0 <= i < K and 0 <= j < K) or i == j:
        raise InputError(f"Pick two different components among 0..{K - 1} to merge, got {i} and {j}.")
    a, F_new = _rank_one([result.A[:, i], result.A[:, j]], [result.F[i], result.F[j]])
    # The background under the new footprint, from the two old ones weighted by overlap.
    Fneu_new = (result.Fneu[i] + result.Fneu[j]) / 2.0
    w = np.array([result.C[i].max(), result.C[j].max()])
    center = (result.centers[i] * w[0] + result.centers[j] * w[1]) / max(w.sum(), 1e-12)
    merged = _append(result, a, F_new, Fneu_new.astype(np.float32), center,
                     max(result.metrics["r_value"][i], result.metrics["r_value"][j]),
                     accepted=bool(result.accepted[i] or result.accepted[j]))  # fmt: skip
    return remove_components(merged, [i, j])


def add_component(result: CNMFResult, movie, center, progress: Progress | None = None) -> CNMFResult:
    """A new result with one more ROI at ``center`` (row, col), e.g. clicked in the GUI.

    A local fast NMF around the click (a box of ±2 diameters, all frames) with the existing
    components whose centers fall in the box and the new one; the new footprint and its traces
    come from that local model (the existing components' own traces are left as they were).
    The ROI is accepted (a person asked for it); its metrics are computed as for the others.
    """
    from engine.calcium.nmf import fast_nmf

    progress = as_progress(progress)
    movie = _as_movie(movie, result.fps)
    h, w = result.image_shape
    if movie.shape[1:] != (h, w):
        raise InputError(f"The movie is {movie.shape[1]} × {movie.shape[2]} px but the result is for {h} × {w} px: open the same movie.")
    cy, cx = (float(v) for v in center)
    if not (0 <= cy <= h - 1 and 0 <= cx <= w - 1):
        raise InputError(f"The point (row {cy:g}, col {cx:g}) is outside the {h} × {w} image: click on the image.")
    d = result.params["neuron_diameter"]
    half = int(math.ceil(2 * d))
    g0, g1, e0, e1 = max(0, int(cy) - half), min(h, int(cy) + half + 1), max(0, int(cx) - half), min(w, int(cx) + half + 1)
    if result.shifts is not None:
        from engine.calcium.motion import shift_frames

        block = movie._block(0, movie.n_frames, slice(0, h), slice(0, w))
        block = shift_frames(block, -result.shifts)[:, g0:g1, e0:e1]  # the same correction the pipeline applied
    else:
        block = movie._block(0, movie.n_frames, slice(g0, g1), slice(e0, e1))
    progress.check()
    Y3 = np.ascontiguousarray(block.transpose(1, 2, 0))
    existing = np.flatnonzero((result.centers[:, 0] >= g0) & (result.centers[:, 0] < g1) & (result.centers[:, 1] >= e0)
                              & (result.centers[:, 1] < e1)) if result.n_components else np.zeros(0, int)  # fmt: skip
    local_centers = np.vstack([result.centers[existing] - [g0, e0], [[cy - g0, cx - e0]]])
    T = Y3.shape[2]
    res = fast_nmf(Y3, local_centers, neuron_radius=d / 2.0, n_background=result.params["n_background"],
                   temporal_factor=int(max(1, min(30, T // 20))))  # fmt: skip
    progress.check()
    bh, bw = g1 - g0, e1 - e0
    k = len(local_centers) - 1
    a_local = res.A[:, k].astype(np.float64)
    Yflat = Y3.reshape(bh * bw, T)
    resid_proj = a_local @ Yflat - (a_local @ res.A) @ res.C - (a_local @ res.b) @ res.f
    norm2 = max(a_local @ a_local, 1e-12)
    F_new = res.C[k] + resid_proj / norm2
    Fneu_new = (a_local @ res.b) @ res.f / norm2
    r_value = _patch_r_values(Y3, res, res.patches)[k]
    yy, xx = np.mgrid[g0:g1, e0:e1]
    nz = np.flatnonzero(a_local)
    peak = a_local.max() if a_local.max() > 0 else 1.0
    col = sparse.csc_matrix((a_local[nz] / peak, ((yy * w + xx).ravel()[nz], np.zeros(len(nz), int))), shape=(h * w, 1))
    return _append(result, col.astype(np.float32), (F_new * peak).astype(np.float32), (Fneu_new * peak).astype(np.float32),
                   (cy, cx), float(r_value), accepted=True)  # fmt: skip
