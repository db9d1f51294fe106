"""Dense (fully convolutional) latents equal per-patch latents, on any tiling, stride and mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import InputError
from engine.factors.cnn import PatchModel, Preprocessing, build_network
from engine.factors.dense import dense_latents, grid_centers, patch_latents
from engine.progress import Cancelled, Progress


def random_model(patch: int, seed: int = 0) -> PatchModel:
    torch.manual_seed(seed)
    net = build_network(3, patch).eval()
    return PatchModel(net, Preprocessing(patch_size=patch, mean=127.0, std=40.0), [1, 2, 3])


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (141, 163)).astype(np.uint8)  # odd sizes: tiles do not divide evenly


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("patch,stride,mode", [
    (64, 1, "same"), (64, 2, "valid"), (64, 3, "same"), (64, 8, "same"), (64, 16, "valid"),
    (128, 1, "valid"), (128, 4, "same"), (128, 24, "same"),
])
def test_dense_equals_per_patch(image, patch, stride, mode):
    model = random_model(patch)
    # a small memory budget forces many tiles, so tile seams are among the checked positions
    dense = dense_latents(model, image, stride=stride, mode=mode, memory_mb=8)
    rows, cols = grid_centers(image.shape, stride, patch, mode)
    assert dense.shape == (len(rows), len(cols), 64)
    rng = np.random.default_rng(stride)
    i = np.r_[0, len(rows) - 1, rng.integers(0, len(rows), 6)]
    j = np.r_[0, len(cols) - 1, rng.integers(0, len(cols), 6)]
    ref = patch_latents(model, image, np.stack([rows[i], cols[j]], axis=1))
    assert relative_error(dense[i, j], ref) <= 1e-4
    assert dense.min() >= 0 and (dense > 0).mean() > 0.2


def test_tiling_does_not_change_the_result(image, tmp_path):
    model = random_model(64, seed=2)
    one = dense_latents(model, image, stride=2, memory_mb=2048)
    out = np.lib.format.open_memmap(tmp_path / "z.npy", mode="w+", dtype=np.float32, shape=one.shape)
    many = dense_latents(model, image, stride=2, memory_mb=4, out=out)
    assert many is out
    np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-6)


def test_grid_centres():
    rows, cols = grid_centers((10, 300), 4, 128, "same")
    np.testing.assert_array_equal(rows, [0, 4, 8])
    assert cols[-1] == 296
    rows, cols = grid_centers((200, 300), 8, 128, "valid")
    np.testing.assert_array_equal(rows, 64 + 8 * np.arange(10))  # top-left 0..72, patch inside
    assert cols[0] == 64 and cols[-1] + 64 <= 300


def test_bad_inputs_and_cancel(image):
    model = random_model(64)
    with pytest.raises(InputError, match="stride"):
        dense_latents(model, image, stride=0)
    with pytest.raises(InputError, match="'valid' mode has no positions"):
        dense_latents(model, image[:40], mode="valid")
    with pytest.raises(InputError, match="2-D"):
        dense_latents(model, np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="Unknown dense mode"):
        dense_latents(model, image, mode="full")
    with pytest.raises(InputError, match="output array"):
        dense_latents(model, image, stride=4, out=np.zeros((3, 3, 64), np.float32))
    with pytest.raises(InputError, match="float32"):
        dense_latents(model, image.astype(np.float32))
    progress = Progress()
    progress.cancel()
    with pytest.raises(Cancelled):
        dense_latents(model, image, stride=4, progress=progress)
