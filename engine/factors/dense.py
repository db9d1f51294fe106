"""Dense 64-d latents of a whole image, computed fully convolutionally in bounded-memory tiles.

Why this is exact (filter rarefaction)
--------------------------------------
The classifier (:mod:`engine.factors.cnn`) uses valid convolutions and 2×2 max-pools with
stride 2. Applied to every patch position, a stride-2 pool would keep only every other
position; instead each pool becomes stride 1 and every later layer reads its input with
holes: a layer after j stride-1 pools is dilated by 2^j (convolutions and pools alike). The
fc layers become convolutions: fc1 a 5×5 (for 128-px patches) convolution dilated by 16,
fc2 a 1×1 convolution. Output (i, j) of this network is then, operation for operation, the
latent of the patch whose top-left corner is (i, j): nothing is approximated, only shared.

For an output stride s = 2^m (m ≤ 4) the first m pools stay strided and the dilations start
after them, so the work shrinks ~s²; other strides compute at the largest power-of-two
divisor (≤ 16) and subsample.

The latent is non-negative because it is taken after the ReLU that follows fc 64 (the
network's own non-linearity, no shift), which is what NMF needs. Units that never fire are
all-zero columns; NMF handles them.

Grid
----
``mode="same"`` (default): one latent per ``stride``-th pixel, latents[i, j] belongs to the
patch centred at (i·stride, j·stride), with mirrored pixels beyond the border (the same rule
as :func:`engine.factors.patches.read_window`). ``mode="valid"``: only patches inside the
image; latents[i, j] is centred at (P/2 + i·stride, P/2 + j·stride). :func:`grid_centers`
gives the pixel centres of either grid, to line labels up with latents.

Memory: tiles are sized so the tensors of one tile stay near ``memory_mb`` (the fc1 output
and its input dominate; an estimate: measured peak growth 194 MiB for 128, 445 MiB for 512,
128-px patches, stride 1); the result can be written into a caller-supplied array such as a
``numpy.lib.format.open_memmap`` for images whose latents do not fit in RAM.

Speed (``python -m benchmarks.factors_nmf --dense-speed``, 2 CPU threads): 8.9–10k
positions/s against 118 patches/s one forward pass per patch, 75–87× faster.
"""

from __future__ import annotations

import math

import numpy as np

from engine.errors import InputError
from engine.factors.cnn import LATENT_DIM, PatchModel, receptive_field
from engine.factors.patches import read_patches, read_window
from engine.progress import Progress, as_progress

MODES = ("same", "valid")
#: Bytes per native output pixel of a tile: fc1 input (128 ch with its 5×5 dilated reach is read
#: in place), fc1 output 1024 + ReLU copy, latent 64, plus the conv maps around them.
_BYTES_PER_OUTPUT = 4 * (2 * 1024 + 2 * 64 + 4 * 128)
_BYTES_PER_INPUT = 4 * (2 * 16 + 2)  # conv1 output and its pool on the (larger) input window


def grid_centers(shape: tuple[int, int], stride: int, patch_size: int, mode: str = "same") -> tuple[np.ndarray, np.ndarray]:
    """Pixel rows and columns (centres) of the latent grid for an image of ``shape``."""
    if mode not in MODES:
        raise InputError(f"Unknown dense mode '{mode}': use one of {', '.join(MODES)}.")
    out = []
    for size in shape:
        if mode == "same":
            out.append(np.arange(0, size, stride))
        else:
            n = (size - patch_size) // stride + 1
            out.append(patch_size // 2 + stride * np.arange(max(n, 0)))
    return out[0], out[1]


def _native_stride(stride: int) -> int:
    s = 1
    while s < 16 and stride % (2 * s) == 0:
        s *= 2
    return s


class _DenseNet:
    """The classifier's weights rearranged as a fully convolutional latent extractor at stride ``native``."""

    def __init__(self, network, native: int):
        self.net = network
        self.native = native
        self.m = int(round(math.log2(native)))
        convs = [layer for layer in network.features if layer.__class__.__name__ == "Conv2d"]
        self.convs = convs
        fc1 = network.fc1
        side = int(round(math.sqrt(fc1.in_features / convs[-1].out_channels)))
        self.fc1_weight = fc1.weight.reshape(fc1.out_features, convs[-1].out_channels, side, side)
        self.fc1_bias = fc1.bias
        self.fc2_weight = network.fc2.weight[:, :, None, None]
        self.fc2_bias = network.fc2.bias

    def __call__(self, x):
        import torch
        import torch.nn.functional as F

        for layer, conv in enumerate(self.convs):
            dil = 2 ** max(0, layer - self.m)
            x = torch.relu(F.conv2d(x, conv.weight, conv.bias, dilation=dil))
            if layer < self.m:
                x = F.max_pool2d(x, 2, stride=2)
            else:
                x = F.max_pool2d(x, 2, stride=1, dilation=dil)
        dil = 2 ** (len(self.convs) - self.m)
        x = torch.relu(F.conv2d(x, self.fc1_weight, self.fc1_bias, dilation=dil))
        return torch.relu(F.conv2d(x, self.fc2_weight, self.fc2_bias))


def _tile_side(memory_mb: float, native: int, rf: int) -> int:
    """Largest native-output tile side whose tensors fit in ``memory_mb``."""
    budget = memory_mb * 2**20
    side = 8
    while True:
        nxt = side + 8
        window = (nxt - 1) * native + rf
        need = nxt * nxt * _BYTES_PER_OUTPUT + window * window * _BYTES_PER_INPUT
        if need > budget or nxt > 2048:
            return side
        side = nxt


def dense_latents(model: PatchModel, image: np.ndarray, *, stride: int = 1, mode: str = "same",
                  pixel_size_um: float | None = None, memory_mb: float | None = None, out: np.ndarray | None = None,
                  progress: Progress | None = None) -> np.ndarray:
    """Latents (rows, cols, 64) float32 on the grid described in the module docstring.

    ``memory_mb`` bounds one tile's tensors (default 512 on CPU, 2048 on a GPU); ``out`` an
    optional preallocated (rows, cols, 64) float32 array (e.g. a memmap) to fill and return.
    Progress is reported and cancellation checked after every tile.
    """
    import torch

    progress = as_progress(progress)
    if image.ndim != 2:
        raise InputError(f"Dense extraction needs one 2-D grayscale image; got shape {tuple(image.shape)}.")
    stride = int(stride)
    if stride < 1:
        raise InputError(f"The stride must be a whole number ≥ 1 (pixels between latents); got {stride}.")
    prep = model.preprocessing
    prep.check_image(image, pixel_size_um)
    patch = prep.patch_size
    rows_c, cols_c = grid_centers(image.shape, stride, patch, mode)
    if len(rows_c) == 0 or len(cols_c) == 0:
        raise InputError(f"The image ({image.shape[0]}×{image.shape[1]} px) is smaller than one {patch}-px patch, so "
                         "'valid' mode has no positions: use mode 'same' (mirrored borders) or a larger image.")
    shape = (len(rows_c), len(cols_c), LATENT_DIM)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif tuple(out.shape) != shape:
        raise InputError(f"The output array has shape {tuple(out.shape)}, the latent grid needs {shape}.")

    net = model.network
    device = next(net.parameters()).device
    net.eval()
    native = _native_stride(stride)
    sub = stride // native
    rf = receptive_field(patch)
    if memory_mb is None:
        memory_mb = 2048 if device.type == "cuda" else 512
    side_native = _tile_side(memory_mb, native, rf)
    tile = max(1, (side_native - 1) // sub + 1)  # outputs per tile side, in final-grid units
    dense = _DenseNet(net, native)
    first_tl = rows_c[0] - patch // 2, cols_c[0] - patch // 2  # top-left of the first patch

    tiles = [(i, j) for i in range(0, shape[0], tile) for j in range(0, shape[1], tile)]
    with torch.no_grad():
        for i0, j0 in progress.iterate(tiles, message="Dense latents"):
            ni, nj = min(tile, shape[0] - i0), min(tile, shape[1] - j0)
            mi, mj = (ni - 1) * sub + 1, (nj - 1) * sub + 1  # native outputs needed
            y0 = first_tl[0] + i0 * stride
            x0 = first_tl[1] + j0 * stride
            raw = read_window(image, y0, x0, (mi - 1) * native + rf, (mj - 1) * native + rf)
            x = torch.from_numpy(prep.normalize(raw)[None, None]).to(device)
            z = dense(x)[0, :, :mi:sub, :mj:sub]
            if z.shape[1:] != (ni, nj):
                raise RuntimeError(f"dense tile has shape {tuple(z.shape[1:])}, expected {(ni, nj)}")
            out[i0:i0 + ni, j0:j0 + nj] = z.permute(1, 2, 0).cpu().numpy()
    return out


def patch_latents(model: PatchModel, image: np.ndarray, centers: np.ndarray, batch_size: int = 128,
                  pixel_size_um: float | None = None, progress: Progress | None = None) -> np.ndarray:
    """Latents (n, 64) of patches centred at ``centers`` (n, 2), one forward pass per patch: the reference."""
    import torch

    progress = as_progress(progress)
    model.preprocessing.check_image(image, pixel_size_um)
    centers = np.asarray(centers, dtype=np.int64).reshape(-1, 2)
    net = model.network
    device = next(net.parameters()).device
    net.eval()
    out = np.empty((len(centers), LATENT_DIM), dtype=np.float32)
    with torch.no_grad():
        for s in progress.iterate(range(0, len(centers), batch_size), message="Patch latents"):
            raw = read_patches(image, centers[s:s + batch_size], model.patch_size)
            x = torch.from_numpy(model.preprocessing.normalize(raw)[:, None]).to(device)
            out[s:s + batch_size] = net.latent(x).cpu().numpy()
    return out

