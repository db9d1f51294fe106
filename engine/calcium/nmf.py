"""Fast localized NMF of a calcium movie patch (Friedrich et al. 2015, "Fast constrained NMF", Algorithm 1).

Model: the data ``Y`` (pixels × frames) ≈ ``A C``, where the columns of ``A`` are the shapes of
the ``n`` neurons, each confined to a square patch around its given center, followed by
``n_background`` background shapes (unconstrained), and the rows of ``C`` their activities
(all non-negative). The fit minimizes ``||Y - A C||²`` by hierarchical alternating least
squares (HALS): exact block-coordinate updates of one row of ``C`` or one column of ``A`` at a
time, with the others fixed.

What makes it fast (the paper's Figure 2):

* **Update order.** The slow order updates one neuron's activity and shape, then the next one's,
  keeping the residual ``Y - A C`` up to date (:func:`hals`, ``order="neuron"``). The fast
  order updates all activities, then all shapes; each half needs only one product with the
  data (``Aᵀ Y`` or ``Y Cᵀ``), then works on small K × T or pixels × K matrices.
* **Vectorized sweeps.** Two neurons whose patches do not overlap do not interact in an update
  (their entry of ``AᵀA`` is 0, and neither touches the other's pixels), so the neurons are
  coloured into groups of disjoint patches and a whole group is updated in one array operation.
  The result is exactly the sequential HALS sweep (in group order), with ~10 array operations
  per sweep instead of one per neuron. Shape updates touch only patch pixels.
* **Downsampling.** Shapes do not change over time, so most iterations run on a movie
  averaged over blocks of 30 frames and 2×2 pixels (120x fewer values); the result is
  upsampled (zero-order hold) and polished by a few iterations on the full data
  (:func:`fast_nmf`).

Initialization (the paper's): the spatial background is the 20th percentile over time of each
pixel, its activity all ones; neuron shapes are Gaussians at the centers (cut to their patch),
their activities the data at the center pixels.

Arrays: the data is ``Y`` of shape (height, width, frames), pixel-major so that a patch is
a strided view and a pixel's time course is contiguous (``movie.transpose(1, 2, 0)`` of a
frames × height × width movie, copied once with ``np.ascontiguousarray``). Pixels are
flattened as ``row * width + col``. Computation runs in float32, in numpy on the CPU (fewer
and cheaper small operations than torch there) and in torch on a CUDA device when there is
one (``backend="auto"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import sparse

from engine.errors import InputError
from engine.progress import Progress, as_progress

ORDERS = ("groups", "neuron")
BACKGROUND_PERCENTILE = 20.0
# Percentiles over many frames are slow (np.percentile of 10^4 pixels × 3000 frames takes
# ~0.3 s, longer than the whole fast fit); the 20th percentile of every k-th frame is the same
# estimate within noise.
_PERCENTILE_FRAMES = 200
# On the CPU the patch pixels of all neurons are copied into one array when that copy is at
# most this large (the downsampled movie); larger data is read through views of each patch.
_GATHER_BYTES = 32 * 2**20

Callback = Callable[[str, int, np.ndarray, np.ndarray], None]


@dataclass
class NMFResult:
    """Shapes and activities of ``n`` neurons and the background.

    ``A`` (pixels × n) neuron shapes, ``C`` (n × frames) activities, ``b`` (pixels × n_background)
    background shapes, ``f`` (n_background × frames) background activities; pixel index
    ``row * width + col``. ``patches`` are the (row_start, row_stop, col_start, col_stop)
    boxes the shapes are confined to.
    """

    A: np.ndarray
    C: np.ndarray
    b: np.ndarray
    f: np.ndarray
    image_shape: tuple[int, int]
    centers: np.ndarray
    patches: np.ndarray
    timings: dict = field(default_factory=dict)

    @property
    def footprints(self) -> np.ndarray:
        """Neuron shapes as images, (n, height, width)."""
        return self.A.T.reshape(-1, *self.image_shape)

    @property
    def background_images(self) -> np.ndarray:
        return self.b.T.reshape(-1, *self.image_shape)

    def denoised(self, frames: slice = slice(None)) -> np.ndarray:
        """``A C + b f`` for the given frames, as (frames, height, width)."""
        model = self.A @ self.C[:, frames] + self.b @ self.f[:, frames]
        return model.T.reshape(-1, *self.image_shape)


# -- backends ---------------------------------------------------------------------------------

class _Numpy:
    name = "numpy"

    def __init__(self):
        self.device = "cpu"

    def asarray(self, x):
        return np.ascontiguousarray(x, dtype=np.float32)

    def index(self, x):
        return np.asarray(x, dtype=np.intp)

    def numpy(self, x):
        return x

    def relu(self, x):
        return np.maximum(x, 0.0, out=x)

    def diag(self, x):
        return np.diagonal(x).copy()


    def synchronize(self):
        pass


class _Torch:
    name = "torch"

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = torch.device(device)

    def asarray(self, x):
        t = self.torch
        if isinstance(x, t.Tensor):
            return x.to(self.device, t.float32)
        return t.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=self.device)

    def index(self, x):
        return self.torch.as_tensor(np.asarray(x, dtype=np.int64), device=self.device)

    def numpy(self, x):
        return x.detach().cpu().numpy()

    def relu(self, x):
        return x.clamp_(min=0.0)

    def diag(self, x):
        return self.torch.diagonal(x).clone()

    def synchronize(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)


def _backend(name: str, device=None):
    if name == "numpy":
        return _Numpy()
    if name not in ("auto", "torch"):
        raise InputError(f"Unknown NMF backend {name!r}: use 'auto', 'numpy' or 'torch'.")
    from engine.device import select_device

    chosen = select_device(device)
    if name == "auto" and chosen.type != "cuda":
        return _Numpy()
    return _Torch(chosen)


# -- the localization structure ---------------------------------------------------------------

@dataclass
class _Layout:
    """Which pixels each component may use, and the groups of neurons updated together."""

    shape: tuple[int, int]
    patches: np.ndarray  # (n, 4) row0, row1, col0, col1 per neuron
    n_background: int
    rows: list  # per component: flat pixel indices of its patch (background: None = all pixels)
    groups: list  # lists of component indices; neurons with disjoint patches share a group
    group_rows: list  # per group: flat pixel indices of the members' patches (None: all pixels)
    group_cols: list  # per group: the component owning each of those pixels
    group_local: list  # per group: position of that component among the members
    group_members: list  # per group: member indices
    group_pick: list  # per group: 0..rows-1, to pick each row's own member from a rows × members product
    mask: object  # (pixels × K) 0/1 float32

    @property
    def n_neurons(self) -> int:
        return len(self.patches)

    @property
    def n_components(self) -> int:
        return len(self.patches) + self.n_background


def _patches(centers: np.ndarray, radius: int, shape: tuple[int, int]) -> np.ndarray:
    rc = np.rint(centers).astype(int)
    h, w = shape
    return np.stack([np.clip(rc[:, 0] - radius, 0, h), np.clip(rc[:, 0] + radius + 1, 0, h),
                     np.clip(rc[:, 1] - radius, 0, w), np.clip(rc[:, 1] + radius + 1, 0, w)], axis=1)  # fmt: skip


def _colour(patches: np.ndarray) -> list[list[int]]:
    """Greedy colouring of the patch-overlap graph (largest degree first)."""
    r0, r1, c0, c1 = patches.T
    overlap = ((r0[:, None] < r1[None]) & (r0[None] < r1[:, None]) & (c0[:, None] < c1[None]) & (c0[None] < c1[:, None]))
    np.fill_diagonal(overlap, False)
    colour = np.full(len(patches), -1)
    for k in np.argsort(-overlap.sum(axis=1), kind="stable"):
        taken = set(colour[overlap[k]].tolist())
        colour[k] = next(c for c in range(len(patches) + 1) if c not in taken)
    return [np.flatnonzero(colour == c).tolist() for c in range(colour.max() + 1)] if len(patches) else []


def _layout(centers: np.ndarray, radius: int, shape: tuple[int, int], n_background: int, xp) -> _Layout:
    h, w = shape
    patches = _patches(centers, radius, shape)
    rows = []
    for r0, r1, c0, c1 in patches:
        rr, cc = np.mgrid[r0:r1, c0:c1]
        rows.append((rr * w + cc).ravel())
    n = len(patches)
    groups = _colour(patches) + [[n + j] for j in range(n_background)]
    rows += [None] * n_background
    group_rows, group_cols, group_local, group_members, group_pick = [], [], [], [], []
    for members in groups:
        if rows[members[0]] is None:  # a background component: every pixel, no gathering needed
            group_rows.append(None)
            group_cols.append(xp.index(members))
            group_local.append(None)
            group_pick.append(None)
        else:
            sizes = [len(rows[k]) for k in members]
            group_rows.append(xp.index(np.concatenate([rows[k] for k in members])))
            group_cols.append(xp.index(np.repeat(members, sizes)))
            group_local.append(xp.index(np.repeat(np.arange(len(members)), sizes)))
            group_pick.append(xp.index(np.arange(sum(sizes))))
        group_members.append(xp.index(members))
    mask = np.zeros((h * w, n + n_background), dtype=np.float32)
    for k, pix in enumerate(rows[:n]):
        mask[pix, k] = 1.0
    mask[:, n:] = 1.0
    return _Layout(shape, patches, n_background, rows, groups, group_rows, group_cols, group_local, group_members,
                   group_pick, xp.asarray(mask))  # fmt: skip


# -- products with the data -------------------------------------------------------------------

class _Data:
    """The data at one resolution with its layout, and its products with shapes and activities.

    Only the products inside the patches are needed (shapes are zero elsewhere), so on the CPU
    they are computed from the patch pixels alone: from a gathered copy of those pixels when it
    is small (the downsampled movie), else from strided views of each patch (no copy of the
    full movie). Backgrounds and the GPU use dense products.
    """

    def __init__(self, xp, Y3: np.ndarray, layout: _Layout):
        h, w, T = Y3.shape
        self.xp, self.layout = xp, layout
        self.Y3 = xp.asarray(Y3)
        self.Yflat = self.Y3.reshape(h * w, T)
        n = layout.n_neurons
        self.n = n
        rows = [layout.rows[k] for k in range(n)]
        self.rows = np.concatenate(rows)
        self.cols = np.repeat(np.arange(n), [len(r) for r in rows])
        self.starts = np.concatenate(([0], np.cumsum([len(r) for r in rows])[:-1]))
        self.indptr = np.concatenate(([0], np.cumsum([len(r) for r in rows])))
        if xp.name != "numpy":
            self.mode = "dense"
        elif self.rows.size * T * 4 <= _GATHER_BYTES:
            self.mode = "gathered"
            self.Yg = self.Yflat[self.rows]
        else:
            self.mode = "patches"
        if self.mode != "dense":
            self._overlaps(w)

    def _overlaps(self, w: int) -> None:
        """For the Gram matrix on the CPU: pair p of neurons (k, j) sums A[pixel, k] A[pixel, j]
        over the pixels their patches share (a rectangle); other pairs are 0."""
        layout, n = self.layout, self.n
        pk, pj, pix, pid = [], [], [], []
        pairs = 0
        for k in range(n):
            r0, r1, c0, c1 = layout.patches[k]
            for j in range(k, n):
                s0, s1, d0, d1 = layout.patches[j]
                top, bottom, left, right = max(r0, s0), min(r1, s1), max(c0, d0), min(c1, d1)
                if top < bottom and left < right:
                    yy, xx = np.mgrid[top:bottom, left:right]
                    pix.append((yy * w + xx).ravel())
                    pk.append(k)
                    pj.append(j)
                    pid.append(np.full(pix[-1].size, pairs))
                    pairs += 1
        self.pair_k, self.pair_j = np.array(pk, dtype=np.intp), np.array(pj, dtype=np.intp)
        self.pair_pix = np.concatenate(pix) if pix else np.zeros(0, dtype=np.intp)
        self.pair_id = np.concatenate(pid) if pid else np.zeros(0, dtype=np.intp)
        self.pair_kk, self.pair_jj = self.pair_k[self.pair_id], self.pair_j[self.pair_id]

    def activity_products(self, A):
        """U = Aᵀ Y (K × T)."""
        if self.mode == "dense":
            return A.T @ self.Yflat
        n, Y3 = self.n, self.Y3
        K, T = A.shape[1], Y3.shape[2]
        U = np.empty((K, T), dtype=np.float32)
        if self.mode == "gathered":
            # Row k of a sparse n × (gathered pixels) matrix holds neuron k's shape on its own pixels: one
            # sparse product (np.add.reduceat over a pixels × T temporary was 20x slower).
            S = sparse.csr_matrix((A[self.rows, self.cols], np.arange(self.rows.size), self.indptr), shape=(n, self.rows.size))
            U[:n] = S @ self.Yg
        else:
            h, w = Y3.shape[:2]
            for k, (r0, r1, c0, c1) in enumerate(self.layout.patches):
                U[k] = np.einsum("ij,ijt->t", A[:, k].reshape(h, w)[r0:r1, c0:c1], Y3[r0:r1, c0:c1])
        U[n:] = A[:, n:].T @ self.Yflat
        return U

    def shape_products(self, C):
        """U = Y Cᵀ (pixels × K), valid inside each component's patch (zero elsewhere on the CPU)."""
        if self.mode == "dense":
            return self.Yflat @ C.T
        n, Y3 = self.n, self.Y3
        U = np.zeros((self.Yflat.shape[0], C.shape[0]), dtype=np.float32)
        if self.mode == "gathered":
            for k in range(n):  # one matrix-vector product per neuron (no pixels × T gather of C)
                U[self.rows[self.starts[k]:self.indptr[k + 1]], k] = self.Yg[self.starts[k]:self.indptr[k + 1]] @ C[k]
        else:
            for k, (r0, r1, c0, c1) in enumerate(self.layout.patches):
                U[self.layout.rows[k], k] = (Y3[r0:r1, c0:c1] @ C[k]).ravel()
        U[:, n:] = self.Yflat @ C[n:].T
        return U

    def gram(self, A):
        """AᵀA: on the CPU from the overlapping pixels of overlapping patches only."""
        if self.mode == "dense":
            return A.T @ A
        n = self.n
        V = np.empty((A.shape[1], A.shape[1]), dtype=np.float32)
        V[:n, :n] = 0.0
        values = np.bincount(self.pair_id, weights=A[self.pair_pix, self.pair_kk] * A[self.pair_pix, self.pair_jj],
                             minlength=len(self.pair_k))  # fmt: skip
        V[self.pair_k, self.pair_j] = values
        V[self.pair_j, self.pair_k] = values
        V[:, n:] = A.T @ A[:, n:]
        V[n:, :n] = V[:n, n:].T
        return V


# -- HALS updates -----------------------------------------------------------------------------

def hals_activities(data: _Data, A, C, iterations: int = 1):
    """HALSACTIVITY: ``iterations`` sweeps over all activities with the shapes fixed (in place)."""
    xp, layout = data.xp, data.layout
    U = data.activity_products(A)
    V = data.gram(A)
    diag = xp.diag(V) + 1e-12
    for _ in range(iterations):
        for members in layout.group_members:
            # Members do not overlap, so V[members][:, members] is diagonal and this is
            # exactly the sequential update of each member in turn.
            C[members] = xp.relu(C[members] + (U[members] - V[members] @ C) / diag[members][:, None])
    return C


def hals_shapes(data: _Data, A, C, iterations: int = 1):
    """HALSSHAPE: ``iterations`` sweeps over all shapes with the activities fixed, inside the patches (in place)."""
    xp, layout = data.xp, data.layout
    U = data.shape_products(C)
    V = C @ C.T
    diag = xp.diag(V) + 1e-12
    for _ in range(iterations):
        for g, (rows, cols, local, members) in enumerate(zip(layout.group_rows, layout.group_cols, layout.group_local,
                                                            layout.group_members)):  # fmt: skip
            if rows is None:  # background: all pixels
                A[:, cols] = xp.relu(A[:, cols] + (U[:, cols] - A @ V[:, cols]) / diag[cols])
                continue
            # Each pixel of a group belongs to one member k: a_pk += (U_pk - A_p · V_k) / V_kk.
            AV = (A[rows] @ V[:, members])[layout.group_pick[g], local]
            A[rows, cols] = xp.relu(A[rows, cols] + (U[rows, cols] - AV) / diag[cols])
    return A


def _hals_one_at_a_time(xp, A, C, layout: _Layout, R):
    """One sweep of the slow order: each component's activity, then its shape, with the residual R kept current."""
    for k in range(layout.n_components):
        rows = layout.rows[k]
        Rk = R if rows is None else R[rows]
        a = A[:, k] if rows is None else A[rows, k]
        Rk += a[:, None] * C[k][None, :]  # add component k back: R is then the residual without it
        C[k] = xp.relu(a @ Rk / (a @ a + 1e-12))
        a = xp.relu(Rk @ C[k] / (C[k] @ C[k] + 1e-12))
        Rk -= a[:, None] * C[k][None, :]
        if rows is None:
            A[:, k] = a
        else:
            A[rows, k] = a
            R[rows] = Rk
    return A, C


# -- holding a shape to its seed ----------------------------------------------------------------

class _SeedHold:
    """Keeps each neuron's shape to the blob around its seed (the CaImAn-style spatial constraint).

    Inside its square patch a shape update may put weight on a livelier neighbour; over the
    iterations that neighbour can take the shape over, leaving the seeded cell with no component.
    After each shape sweep the shape is thresholded at ``threshold`` × its peak, the 8-connected
    blob nearest the seed kept (the one holding the seed, or the closest: a doughnut's seed may
    sit in its dim nucleus), and every pixel farther than one pixel from that blob set to 0. The
    shape can still grow (by a pixel per sweep) but not jump to a separate blob. (Thresholding at
    the peak within a radius of the seed instead, so that a seeded cell far dimmer than its
    neighbour still has a blob, scored lower on the doughnut movies: mean F1 0.985 against 0.992.)
    """

    def __init__(self, layout: _Layout, centers: np.ndarray, threshold: float, neurons=None):
        from scipy import ndimage

        self.ndimage, self.threshold = ndimage, threshold
        neurons = np.arange(layout.n_neurons) if neurons is None else np.asarray(neurons, dtype=np.intp)
        n, w = len(neurons), layout.shape[1]
        centers = np.asarray(centers)[neurons]
        r0, r1, c0, c1 = layout.patches[neurons].T
        self.bh, self.bw = (int((r1 - r0).max()), int((c1 - c0).max())) if n else (0, 0)
        yy, xx = np.mgrid[: self.bh, : self.bw]
        rows, cols = r0[:, None, None] + yy, c0[:, None, None] + xx
        # Boxes clipped at the image edge are padded; their padding points at no pixel.
        self.valid = (rows < r1[:, None, None]) & (cols < c1[:, None, None])
        self.pix = np.where(self.valid, rows * w + cols, 0)
        self.k = np.broadcast_to(neurons[:, None, None], self.pix.shape)
        self.distance = np.hypot(rows - centers[:, 0, None, None], cols - centers[:, 1, None, None])
        self.structure = np.zeros((3, 3, 3), bool)
        self.structure[1] = True  # 8-connected within a box, never across boxes

    def __call__(self, xp, A) -> None:
        if not len(self.pix):
            return
        An = xp.numpy(A)
        box = np.where(self.valid, An[self.pix, self.k], 0.0)
        peak = box.max(axis=(1, 2), keepdims=True)
        labels, _ = self.ndimage.label((box >= self.threshold * peak) & (peak > 0), self.structure)
        nearest = np.where(labels > 0, self.distance, np.inf).reshape(len(box), -1).argmin(axis=1)
        chosen = labels.reshape(len(box), -1)[np.arange(len(box)), nearest]
        keep = self.ndimage.binary_dilation(labels == chosen[:, None, None], self.structure)
        drop = self.valid & ~keep
        if drop.any():
            A[xp.index(self.pix[drop]), xp.index(self.k[drop])] = 0.0


# -- initialization ---------------------------------------------------------------------------

def _initialize(Y3: np.ndarray, centers: np.ndarray, sigma: float, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """The paper's start: Gaussian shapes in their patches, center-pixel activities; percentile background, ones in time."""
    h, w, T = Y3.shape
    n, nb = layout.n_neurons, layout.n_background
    A = np.zeros((h * w, n + nb), dtype=np.float32)
    for k, (cy, cx) in enumerate(centers):
        yy, xx = np.divmod(layout.rows[k], w)
        A[layout.rows[k], k] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * sigma**2))
    if nb:
        sample = Y3[:, :, :: max(1, T // _PERCENTILE_FRAMES)]
        rank = int(round(BACKGROUND_PERCENTILE / 100.0 * (sample.shape[2] - 1)))
        # The order statistic itself (np.partition): np.percentile along an axis is ~5x slower.
        background = np.partition(sample, rank, axis=2)[:, :, rank].astype(np.float32).ravel()
        # More than one background component: the percentile image split over soft horizontal
        # bands, so the components start different (identical ones would stay identical under HALS).
        bands = np.linspace(0.0, h - 1.0, nb + 2)[1:-1] if nb > 1 else np.array([0.0])
        weights = np.exp(-((np.arange(h)[None, :] - bands[:, None]) ** 2) / (2.0 * max(h / (2.0 * nb), 1.0) ** 2))
        weights = np.repeat((weights / weights.sum(axis=0, keepdims=True))[:, :, None], w, axis=2).reshape(nb, h * w)
        A[:, n:] = (weights * background[None, :]).T
    C = np.ones((n + nb, T), dtype=np.float32)
    rc = np.clip(np.rint(centers).astype(int), 0, [h - 1, w - 1])
    C[:n] = Y3[rc[:, 0], rc[:, 1], :]
    return A, C


# -- downsampling -----------------------------------------------------------------------------

def downsample(Y3: np.ndarray, temporal: int = 30, spatial: int = 2) -> np.ndarray:
    """Mean over blocks of ``temporal`` frames and ``spatial``×``spatial`` pixels.

    Trailing frames that do not fill a block are left out; an odd image edge is padded by
    repeating it. The temporal mean is a matrix product (memory-bound: one pass over the data).
    """
    h, w, T = Y3.shape
    t_blocks = T // temporal
    if temporal > 1:
        kernel = np.full(temporal, 1.0 / temporal, dtype=np.float32)
        Y3 = Y3[:, :, : t_blocks * temporal].reshape(h, w, t_blocks, temporal) @ kernel
    if spatial > 1:
        ph, pw = (-h) % spatial, (-w) % spatial
        if ph or pw:
            Y3 = np.pad(Y3, ((0, ph), (0, pw), (0, 0)), mode="edge")
        hh, ww = Y3.shape[0] // spatial, Y3.shape[1] // spatial
        Y3 = Y3.reshape(hh, spatial, ww, spatial, -1).mean(axis=(1, 3), dtype=np.float32)
    return np.ascontiguousarray(Y3, dtype=np.float32)


def _upsample_shapes(A_low: np.ndarray, low_shape, shape, spatial: int) -> np.ndarray:
    """Zero-order hold: every full-resolution pixel takes the value of its downsampled pixel."""
    h, w = shape
    K = A_low.shape[1]
    img = A_low.reshape(*low_shape, K)
    img = np.repeat(np.repeat(img, spatial, axis=0), spatial, axis=1)[:h, :w]
    return np.ascontiguousarray(img.reshape(h * w, K))


def _upsample_activities(C_low: np.ndarray, n_frames: int, temporal: int) -> np.ndarray:
    C = np.repeat(C_low, temporal, axis=1)
    if C.shape[1] < n_frames:  # the frames left out of the last block keep its value
        C = np.concatenate([C, np.repeat(C[:, -1:], n_frames - C.shape[1], axis=1)], axis=1)
    return np.ascontiguousarray(C[:, :n_frames])


# -- public API -------------------------------------------------------------------------------

_NOT_FINITE = "The data contains NaN or infinite values: fix or drop the bad frames before NMF."


def _check(Y3, centers, neuron_radius, n_background, check_finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
    if not hasattr(Y3, "shape") or len(Y3.shape) != 3:
        shape = getattr(Y3, "shape", None)
        raise InputError(
            f"NMF needs the data as height × width × frames, got shape {shape}: transpose a frames × height × width "
            "movie with np.ascontiguousarray(movie.transpose(1, 2, 0))."
        )
    h, w, T = Y3.shape
    if T < 2 or h < 2 or w < 2:
        raise InputError(f"The data ({h} × {w} pixels × {T} frames) is too small for NMF: it needs at least 2 × 2 pixels and 2 frames.")
    Y3 = np.ascontiguousarray(Y3, dtype=np.float32)
    if check_finite and not np.isfinite(Y3).all():
        raise InputError(_NOT_FINITE)
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2) if len(centers) else np.zeros((0, 2))
    if len(centers) == 0:
        raise InputError("No neuron centers given: detect them (engine.calcium.summary.find_centers) or click them.")
    outside = (centers[:, 0] < 0) | (centers[:, 0] > h - 1) | (centers[:, 1] < 0) | (centers[:, 1] > w - 1)
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        raise InputError(
            f"Center {k} at (row {centers[k, 0]:g}, col {centers[k, 1]:g}) lies outside the {h} × {w} image: "
            "centers are (row, column) pixel coordinates."
        )
    if not neuron_radius > 0:
        raise InputError(f"neuron_radius must be a positive number of pixels, got {neuron_radius!r}.")
    if n_background < 0 or int(n_background) != n_background:
        raise InputError(f"n_background must be a whole number >= 0, got {n_background!r}.")
    return Y3, centers


def hals(
    Y3,
    centers,
    *,
    neuron_radius: float = 4.0,
    patch_radius: int | None = None,
    n_background: int = 1,
    iterations: int = 30,
    order: str = "groups",
    init: tuple[np.ndarray, np.ndarray] | None = None,
    seed_threshold: float | None = None,
    hold_neurons=None,
    backend: str = "auto",
    device=None,
    callback: Callback | None = None,
    progress: Progress | None = None,
) -> NMFResult:
    """Localized NMF on the data at its own resolution (no downsampling).

    ``order="groups"``: all activities, then all shapes, per iteration (vectorized over groups
    of non-overlapping neurons); ``order="neuron"``: one neuron's activity and shape at a time,
    with the residual kept (the slow reference order). ``init`` = (A, C) replaces the paper's
    initialization. ``seed_threshold`` (groups order only): after each shape sweep the shapes of
    ``hold_neurons`` (default all) are held to the blob around their center (:class:`_SeedHold`).
    ``callback(stage, iteration, A, C)`` is called after every iteration with numpy copies (time
    spent there is the caller's).
    """
    progress = as_progress(progress)
    if order not in ORDERS:
        raise InputError(f"Unknown update order {order!r}: use 'groups' or 'neuron'.")
    Y3, centers = _check(Y3, centers, neuron_radius, n_background)
    xp = _backend(backend, device)
    radius = int(patch_radius if patch_radius is not None else math.ceil(2 * neuron_radius))
    layout = _layout(centers, radius, Y3.shape[:2], n_background, xp)
    A, C = init if init is not None else _initialize(Y3, centers, neuron_radius / 2.0, layout)
    data = _Data(xp, Y3, layout)
    A, C = xp.asarray(A) * layout.mask, xp.asarray(C)
    R = None
    if order == "neuron":
        R = data.Yflat - A @ C
    hold = _SeedHold(layout, centers, seed_threshold, hold_neurons) if seed_threshold is not None and order == "groups" else None
    for it in range(1, iterations + 1):
        progress.check()
        if order == "groups":
            hals_activities(data, A, C)
            hals_shapes(data, A, C)
            if hold is not None:
                hold(xp, A)
        else:
            _hals_one_at_a_time(xp, A, C, layout, R)
        if callback is not None:
            xp.synchronize()
            callback("full", it, xp.numpy(A), xp.numpy(C))
        progress.report(it / iterations, f"NMF iteration {it}/{iterations}")
    return _result(xp, A, C, layout, centers)


def fast_nmf(
    Y3,
    centers,
    *,
    neuron_radius: float = 4.0,
    patch_radius: int | None = None,
    n_background: int = 1,
    temporal_factor: int = 30,
    spatial_factor: int = 2,
    iterations_downsampled: int = 20,
    refine_iterations: int = 5,
    iterations: int = 0,
    seed_threshold: float | None = None,
    backend: str = "auto",
    device=None,
    callback: Callback | None = None,
    progress: Progress | None = None,
) -> NMFResult:
    """Algorithm 1: NMF on the downsampled movie, upsampled, polished on the full data.

    1. Average blocks of ``temporal_factor`` frames and ``spatial_factor``² pixels.
    2. Initialize there and run ``iterations_downsampled`` HALS iterations (activities, then shapes).
    3. Upsample shapes and activities (zero-order hold); mask shapes with full-resolution patches.
    4. ``refine_iterations`` sweeps of activities (one product Aᵀ Y), then of shapes (one product Y Cᵀ).
    5. ``iterations`` full HALS iterations (none by default: after step 4 the error is within
       ~0.1 % of the converged optimum on the benchmark patch; each iteration costs as much as step 4).

    ``neuron_radius`` (px) sets the Gaussian initial shapes (σ = radius / 2) and, unless
    ``patch_radius`` is given, the patches (half-width 2 × radius). ``seed_threshold``: after each
    downsampled shape sweep every shape is held to the blob around its center, thresholded at this
    fraction of its peak (:class:`_SeedHold`; None: not held, the paper's). ``callback(stage, it, A, C)``
    sees the downsampled iterations (stage ``"downsampled"``, low-resolution arrays), the
    upsampled start (``"upsampled"``), the polish (``"refine"``) and the full iterations (``"full"``).
    """
    progress = as_progress(progress)
    # NaNs are looked for in the downsampled movie (they survive averaging): one pass over the data less.
    Y3, centers = _check(Y3, centers, neuron_radius, n_background, check_finite=False)
    if temporal_factor < 1 or spatial_factor < 1 or int(temporal_factor) != temporal_factor or int(spatial_factor) != spatial_factor:
        raise InputError("temporal_factor and spatial_factor must be whole numbers >= 1 (1 = no downsampling).")
    h, w, T = Y3.shape
    if T // temporal_factor < 2:
        raise InputError(f"{T} frames cannot be averaged in blocks of {temporal_factor}: use a smaller temporal_factor.")
    xp = _backend(backend, device)
    radius = int(patch_radius if patch_radius is not None else math.ceil(2 * neuron_radius))
    timings: dict[str, float] = {}
    import time

    start = time.perf_counter()
    # 1-2: the small problem.
    small = downsample(Y3, temporal_factor, spatial_factor)
    if not (np.isfinite(small).all() and np.isfinite(Y3[:, :, (T // temporal_factor) * temporal_factor:]).all()):
        raise InputError(_NOT_FINITE)
    low_centers = np.minimum((centers + 0.5) / spatial_factor - 0.5, np.array(small.shape[:2]) - 1.0).clip(0)
    low_radius = max(1, math.ceil(radius / spatial_factor))
    low_layout = _layout(low_centers, low_radius, small.shape[:2], n_background, xp)
    A, C = _initialize(small, low_centers, neuron_radius / 2.0 / spatial_factor, low_layout)
    small_data = _Data(xp, small, low_layout)
    A, C = xp.asarray(A), xp.asarray(C)
    hold = _SeedHold(low_layout, low_centers, seed_threshold) if seed_threshold is not None else None
    timings["downsample_and_init"] = time.perf_counter() - start
    for it in range(1, iterations_downsampled + 1):
        progress.check()
        hals_activities(small_data, A, C)
        hals_shapes(small_data, A, C)
        if hold is not None:
            hold(xp, A)
        if callback is not None:
            xp.synchronize()
            callback("downsampled", it, xp.numpy(A), xp.numpy(C))
        progress.report(0.5 * it / max(iterations_downsampled, 1), "NMF on the downsampled movie")
    # 3: back to full resolution.
    layout = _layout(centers, radius, (h, w), n_background, xp)
    A = _upsample_shapes(xp.numpy(A), small.shape[:2], (h, w), spatial_factor)
    C = _upsample_activities(xp.numpy(C), T, temporal_factor)
    data = _Data(xp, Y3, layout)
    A, C = xp.asarray(A) * layout.mask, xp.asarray(C)
    if callback is not None:
        callback("upsampled", 0, xp.numpy(A), xp.numpy(C))
    # 4-5: polish on the full data.
    progress.check()
    if refine_iterations:
        hals_activities(data, A, C, refine_iterations)
        hals_shapes(data, A, C, refine_iterations)
        if callback is not None:
            xp.synchronize()
            callback("refine", 0, xp.numpy(A), xp.numpy(C))
    for it in range(1, iterations + 1):
        progress.check()
        hals_activities(data, A, C)
        hals_shapes(data, A, C)
        if callback is not None:
            xp.synchronize()
            callback("full", it, xp.numpy(A), xp.numpy(C))
        progress.report(0.5 + 0.5 * it / max(iterations, 1), "NMF on the full movie")
    xp.synchronize()
    timings["total"] = time.perf_counter() - start
    result = _result(xp, A, C, layout, centers)
    result.timings = timings
    return result


def _result(xp, A, C, layout: _Layout, centers) -> NMFResult:
    A, C = xp.numpy(A), xp.numpy(C)
    n = layout.n_neurons
    return NMFResult(A=np.ascontiguousarray(A[:, :n]), C=np.ascontiguousarray(C[:n]), b=np.ascontiguousarray(A[:, n:]),
                     f=np.ascontiguousarray(C[n:]), image_shape=layout.shape, centers=np.asarray(centers), patches=layout.patches)  # fmt: skip


def rank2_nmf(R: np.ndarray, W: np.ndarray, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """``R`` (pixels × frames) ≈ ``W H`` with two non-negative parts, by HALS from the start shapes ``W``
    (pixels × 2, each with some pixel > 0); ``H`` starts as each part's mean of ``R`` (clipped at 0).
    Returns the fitted (W, H); ``W`` is updated in place."""
    H = np.maximum(W.T @ R / W.sum(axis=0)[:, None], 0)
    for _ in range(iterations):
        for j in range(2):
            H[j] = np.maximum(H[j] + (W[:, j] @ R - (W[:, j] @ W) @ H) / max(W[:, j] @ W[:, j], 1e-12), 0)
        for j in range(2):
            W[:, j] = np.maximum(W[:, j] + (R @ H[j] - W @ (H @ H[j])) / max(H[j] @ H[j], 1e-12), 0)
    return W, H


def mse(Y3: np.ndarray, A: np.ndarray, C: np.ndarray, chunk: int = 1024) -> float:
    """Mean squared error of ``A C`` (all components, background included) against the data.

    The residual is formed a block of pixels at a time (float32 product, float64 sums), so the
    memory stays small and there is no cancellation between large terms.
    """
    h, w, T = Y3.shape
    Yflat = Y3.reshape(h * w, T)
    A = np.asarray(A, dtype=np.float32)
    C = np.asarray(C, dtype=np.float32)
    total = 0.0
    for start in range(0, h * w, chunk):
        residual = Yflat[start:start + chunk] - A[start:start + chunk] @ C
        total += float(np.einsum("ij,ij->", residual, residual, dtype=np.float64))
    return total / Yflat.size
