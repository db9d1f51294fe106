"""Patches around pixels of a large 2-D image, and the spatial-block training/validation split.

A *patch centred at pixel (y, x)* covers rows ``y - P//2 .. y - P//2 + P - 1`` (same for
columns), P the patch size. Near the image border the missing pixels are mirrored
(numpy's ``"reflect"``: ``d c b | a b c d | c b a``), so every pixel of the image has a
patch and a latent; the dense extractor (:mod:`engine.factors.dense`) uses the same rule,
which is what makes dense and per-patch latents identical.

Windows are read with plain slicing when they lie inside the image, so a memory-mapped
multi-GB TIFF is only read where patches are taken.

Block split (why and how)
-------------------------
Neighbouring patches overlap almost entirely, so a random patch-level split would put
near-copies of validation patches in the training set and report a flattering accuracy.
:func:`block_split` cuts the image into square blocks, assigns whole blocks to training or
validation, and then leaves a *gap*: a patch centre is allowed only where the patch's whole
footprint lies inside blocks of its own side. Along every training/validation border this
removes a band P pixels wide (P/2 on each side) from both sides, so no training patch shares
a single pixel with a validation patch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.errors import InputError

#: At most this many candidate centres are listed per image (a larger label map is scanned on
#: a grid with a step > 1 so that index lists stay below ~160 MB).
MAX_CANDIDATES = 20_000_000
#: Random block assignments tried before giving up on a class without training or validation centres.
ATTEMPTS = 20


def mirror_indices(start: int, length: int, size: int) -> np.ndarray:
    """Indices ``start .. start+length-1`` folded into ``0..size-1`` by mirroring (numpy 'reflect')."""
    idx = np.arange(start, start + length)
    if size == 1:
        return np.zeros(length, dtype=np.int64)
    period = 2 * (size - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= size, period - idx, idx)


def read_window(image: np.ndarray, y0: int, x0: int, height: int, width: int) -> np.ndarray:
    """``image[y0:y0+height, x0:x0+width]`` with mirrored pixels where the window leaves the image."""
    h, w = image.shape
    if y0 >= 0 and x0 >= 0 and y0 + height <= h and x0 + width <= w:
        return np.asarray(image[y0:y0 + height, x0:x0 + width])
    rows = mirror_indices(y0, height, h)
    cols = mirror_indices(x0, width, w)
    r0, r1 = int(rows.min()), int(rows.max()) + 1
    c0, c1 = int(cols.min()), int(cols.max()) + 1
    block = np.asarray(image[r0:r1, c0:c1])  # one contiguous read, then gather in memory
    return block[np.ix_(rows - r0, cols - c0)]


def read_patches(image: np.ndarray, centers: np.ndarray, patch_size: int) -> np.ndarray:
    """Patches (n, P, P) of the raw image centred at ``centers`` (n, 2) rows/cols (mirrored borders)."""
    half = patch_size // 2
    out = np.empty((len(centers), patch_size, patch_size), dtype=image.dtype)
    for i, (y, x) in enumerate(np.asarray(centers, dtype=np.int64)):
        out[i] = read_window(image, int(y) - half, int(x) - half, patch_size, patch_size)
    return out


def check_image_and_labels(image: np.ndarray, labels: np.ndarray) -> None:
    """InputError for a non-2-D image, mismatched shapes, or a label map with fewer than 2 regions."""
    if image.ndim != 2:
        raise InputError(f"The image must be one 2-D grayscale plane; got shape {tuple(image.shape)}. "
                         "Convert colour to gray and pick a single slice.")
    if labels.ndim != 2 or tuple(labels.shape) != tuple(image.shape):
        raise InputError(f"The label map is {'×'.join(map(str, labels.shape))} but the image is "
                         f"{'×'.join(map(str, image.shape))} (height × width): use the label map drawn on this image.")
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.bool_:
        raise InputError(f"The label map holds {labels.dtype} values: labels must be integers (0 = unlabelled, 1, 2, ...).")
    present = np.unique(labels)
    present = present[present > 0]
    if len(present) < 2:
        what = "no labelled region" if len(present) == 0 else f"only one labelled region ({int(present[0])})"
        raise InputError(f"The label map has {what}: draw or load at least two regions (labels 1, 2, ...) "
                         "so the network has something to tell apart.")


@dataclass
class BlockSplit:
    """Which pixels may centre training and validation patches.

    ``block_of`` (n_block_rows, n_block_cols) holds 0 for training blocks and 1 for validation
    blocks; ``train_centers``/``val_centers`` map each class label to an (n, 2) array of allowed
    centres (row, col), already stripped of the gap; ``gap`` is the band width in pixels
    removed on each side of a training/validation border (P/2).
    """

    block_size: int
    gap: int
    block_of: np.ndarray
    train_centers: dict[int, np.ndarray] = field(default_factory=dict)
    val_centers: dict[int, np.ndarray] = field(default_factory=dict)

    def counts(self) -> dict[int, tuple[int, int]]:
        """label -> (training centres, validation centres)."""
        labels = sorted(set(self.train_centers) | set(self.val_centers))
        return {c: (len(self.train_centers.get(c, ())), len(self.val_centers.get(c, ()))) for c in labels}


def block_split(labels: np.ndarray, patch_size: int, block_size: int | None = None, val_fraction: float = 0.25,
                seed: int = 0, step: int | None = None) -> BlockSplit:
    """Split labelled pixels into training and validation centres by spatial blocks with a gap.

    Blocks are assigned at random (``val_fraction`` of them to validation), then adjusted so
    that every class has pixels on both sides (a class missing from validation gets the block
    where it has most pixels); if the gap still leaves a class without centres on one side,
    the draw is repeated (up to ``ATTEMPTS`` times). ``step`` > 1 keeps only every
    step-th row/column as a candidate centre (automatic for very large label maps).
    """
    labels = np.asarray(labels)
    h, w = labels.shape
    if block_size is None:
        block_size = 4 * patch_size
    block_size = int(block_size)
    if block_size < 1 or not 0.0 < val_fraction < 1.0:
        raise InputError(f"Block size must be ≥ 1 and the validation fraction in (0, 1); got {block_size} and {val_fraction}.")
    if step is None:
        step = max(1, int(np.ceil(np.sqrt(h * w / MAX_CANDIDATES))))
    nby, nbx = -(-h // block_size), -(-w // block_size)
    rng = np.random.default_rng(seed)
    classes = [int(c) for c in np.unique(labels) if c > 0]

    # pixels per (block, class), to keep every class represented in validation
    by = np.arange(h) // block_size
    bx = np.arange(w) // block_size
    block_index = (by[:, None] * nbx + bx[None, :])
    per_block = {c: np.bincount(block_index[labels == c], minlength=nby * nbx) for c in classes}

    n_blocks = nby * nbx
    n_val = max(1, int(round(val_fraction * n_blocks)))
    if n_blocks < 2:
        raise InputError(f"The image ({h}×{w} px) fits in one {block_size}-px block, so there is nothing to hold out: "
                         "use a smaller block size or a larger image.")
    gap = patch_size // 2
    grid = np.zeros(labels.shape, dtype=bool)
    grid[::step, ::step] = True
    split, split_worst = None, -1
    # A random assignment can leave a class without centres on one side once the gap is cut
    # away (small regions near block borders): draw again, up to a few times, and keep the
    # draw where the worst-off class has the most centres.
    for _attempt in range(ATTEMPTS):
        block_of = np.zeros(n_blocks, dtype=np.int8)
        block_of[rng.permutation(n_blocks)[:n_val]] = 1
        for c in classes:
            if not np.any(per_block[c][block_of == 1]):
                block_of[int(np.argmax(per_block[c]))] = 1
            if not np.any(per_block[c][block_of == 0]):  # and keep some for training
                candidates = np.flatnonzero((per_block[c] > 0) & (block_of == 1))
                if len(candidates) > 1:
                    block_of[candidates[int(np.argmin(per_block[c][candidates]))]] = 0
        candidate = _centres(labels, block_of.reshape(nby, nbx), block_size, patch_size, gap, grid, classes)
        worst = min(min(len(candidate.train_centers[c]), len(candidate.val_centers[c])) for c in classes)
        if worst > split_worst:
            split, split_worst = candidate, worst
        if worst > 0:
            break
    return split


def _centres(labels, block_of, block_size, patch_size, gap, grid, classes) -> BlockSplit:
    from scipy.ndimage import minimum_filter

    h, w = labels.shape
    by = np.arange(h) // block_size
    bx = np.arange(w) // block_size
    side = block_of[by[:, None], bx[None, :]]  # per pixel: 0 train, 1 val
    split = BlockSplit(block_size=block_size, gap=gap, block_of=block_of)
    # A centre is allowed when its whole footprint (P×P window, same offsets as read_window)
    # lies on its own side. mode='nearest': mirrored pixels at the image border come from
    # inside the footprint anyway.
    for value, target in ((0, split.train_centers), (1, split.val_centers)):
        inside = minimum_filter((side == value).astype(np.uint8), size=patch_size, mode="nearest").astype(bool)
        for c in classes:
            ys, xs = np.nonzero(inside & grid & (labels == c))
            target[c] = np.stack([ys, xs], axis=1).astype(np.int32)
    return split


def labelled_centers(labels: np.ndarray, step: int | None = None) -> dict[int, np.ndarray]:
    """All labelled pixels (every ``step``-th row/column) as centres per class, e.g. for a held-out image."""
    h, w = labels.shape
    if step is None:
        step = max(1, int(np.ceil(np.sqrt(h * w / MAX_CANDIDATES))))
    sub = np.asarray(labels[::step, ::step])
    out = {}
    for c in np.unique(sub):
        if c > 0:
            ys, xs = np.nonzero(sub == c)
            out[int(c)] = (np.stack([ys, xs], axis=1) * step).astype(np.int32)
    return out


def sample_balanced(centers: dict[int, np.ndarray], n_per_class: int, rng: np.random.Generator,
                    replace: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(centres (n, 2), class labels (n,)) with ``n_per_class`` drawn per class (fewer without replacement)."""
    picked, which = [], []
    for c, pts in centers.items():
        if len(pts) == 0:
            continue
        if replace:
            idx = rng.integers(0, len(pts), n_per_class)
        else:
            idx = rng.permutation(len(pts))[:n_per_class]
        picked.append(pts[idx])
        which.append(np.full(len(idx), c, dtype=np.int64))
    if not picked:
        return np.zeros((0, 2), np.int32), np.zeros(0, np.int64)
    return np.concatenate(picked), np.concatenate(which)
