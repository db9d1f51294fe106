"""Patch CNN: architecture, patches and the block split, augmentation, model files, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import InputError
from engine.factors.cnn import (
    PatchModel, Preprocessing, augment_batch, build_network, conv_output_size, receptive_field, train,
)
from engine.factors.patches import block_split, read_window
from engine.progress import Cancelled, Progress


def test_architecture_shapes_for_the_paper_patch():
    torch.manual_seed(0)
    net = build_network(6, 128).eval()
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (16, (7, 7), (0, 0)), (32, (5, 5), (0, 0)), (64, (3, 3), (0, 0)), (128, (3, 3), (0, 0))]
    assert (net.fc1.in_features, net.fc1.out_features) == (128 * 5 * 5, 1024)
    assert (net.fc2.out_features, net.fc3.out_features) == (64, 6)
    assert net.dropout.p == 0.3
    x = torch.randn(3, 1, 128, 128)
    with torch.no_grad():
        assert net.features(x).shape == (3, 128, 5, 5)
        z = net.latent(x)
        assert z.shape == (3, 64) and z.min() >= 0  # the latent is taken after a ReLU
        assert net(x).shape == (3, 6)
    assert conv_output_size(128) == 5 and receptive_field(128) == 118
    assert conv_output_size(64) == 1 and receptive_field(64) == 54


def test_latent_depends_only_on_the_documented_window():
    # floor pooling drops the last 10 rows/columns of a 128-px patch (receptive field 118)
    torch.manual_seed(1)
    net = build_network(3, 128).eval()
    x = torch.randn(1, 1, 128, 128)
    y = x.clone()
    y[..., 118:, :] = 50.0
    y[..., :, 118:] = -50.0
    with torch.no_grad():
        torch.testing.assert_close(net.latent(x), net.latent(y))
        y[..., 117, 117] += 10.0
        assert not torch.allclose(net.latent(x), net.latent(y))


def test_too_small_patch_or_single_class_is_refused():
    with pytest.raises(InputError, match="at least 54"):
        build_network(3, 40)
    with pytest.raises(InputError, match="at least 2 regions"):
        build_network(1, 128)


def test_read_window_mirrors_like_numpy_reflect():
    image = np.arange(7 * 9).reshape(7, 9)
    padded = np.pad(image, 20, mode="reflect")
    for y0, x0, h, w in [(-5, -3, 12, 10), (2, 4, 3, 3), (-20, -20, 47, 49), (5, 6, 8, 9)]:
        np.testing.assert_array_equal(read_window(image, y0, x0, h, w), padded[y0 + 20:y0 + 20 + h, x0 + 20:x0 + 20 + w])


def test_block_split_leaves_no_shared_pixel_between_training_and_validation():
    rng = np.random.default_rng(0)
    labels = rng.integers(1, 4, (6, 6)).repeat(20, 0).repeat(20, 1)  # 120×120, 3 classes in 20-px squares
    labels[:10] = 0
    patch = 16
    split = block_split(labels, patch, block_size=30, val_fraction=0.3, seed=1)
    assert split.gap == 8
    footprint = {}
    for name, centers in (("train", split.train_centers), ("val", split.val_centers)):
        cover = np.zeros(labels.shape, bool)
        for pts in centers.values():
            for y, x in pts:
                # the pixels a patch reads (mirrored pixels come from inside its clipped window)
                cover[max(0, y - 8):y + 8, max(0, x - 8):x + 8] = True
            assert all(labels[y, x] > 0 for y, x in pts)
        footprint[name] = cover
    assert not np.any(footprint["train"] & footprint["val"])
    counts = split.counts()
    assert set(counts) == {1, 2, 3} and all(t > 0 and v > 0 for t, v in counts.values())


def test_augmentation_applies_symmetries_and_jitter():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 9, 9)
    y = augment_batch(x, gen)
    assert y.shape == x.shape
    moved = 0
    for a, b in zip(x, y):
        # each output is gain·D4(input) + offset: sorted values are an exact affine map
        sa, sb = a.flatten().sort().values, b.flatten().sort().values
        gain = (sb[-1] - sb[0]) / (sa[-1] - sa[0])
        assert 0.9 - 1e-4 <= gain <= 1.1 + 1e-4
        torch.testing.assert_close(sb, gain * sa + (sb[0] - gain * sa[0]), atol=1e-4, rtol=1e-4)
        moved += not torch.allclose((b - b.mean()) / gain, a - a.mean(), atol=1e-3)
    assert moved > 40  # 7 of 8 symmetries move pixels


def _model(patch=64, classes=(1, 2, 3), pixel=1.17, dtype=np.uint8):
    torch.manual_seed(0)
    prep = Preprocessing(patch_size=patch, pixel_size_um=pixel, mean=120.0, std=30.0, intensity_dtype=np.dtype(dtype).name)
    return PatchModel(build_network(len(classes), patch).eval(), prep, list(classes), ["a", "b", "c"])


def test_save_load_round_trip_and_refusals(tmp_path):
    model = _model()
    path = model.save(tmp_path / "m.pt")
    loaded = PatchModel.load(path, expected=model.preprocessing)
    assert loaded.preprocessing == model.preprocessing and loaded.class_labels == [1, 2, 3]
    assert loaded.class_names == ["a", "b", "c"]
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.network.latent(x), model.network.latent(x))

    other = Preprocessing(patch_size=128, pixel_size_um=0.585, mean=120.0, std=30.0)
    with pytest.raises(InputError, match="patch size 64 px vs 128 px.*pixel size 1.17 µm vs 0.585 µm"):
        PatchModel.load(path, expected=other)
    image = np.zeros((80, 80), np.uint8)
    with pytest.raises(InputError, match="resample the image by 0.5× to 1.17 µm/px"):
        loaded.preprocessing.check_image(image, pixel_size_um=0.585)
    with pytest.raises(InputError, match="trained on uint8 intensities but this image is uint16"):
        loaded.preprocessing.check_image(image.astype(np.uint16))
    loaded.preprocessing.check_image(image, pixel_size_um=1.175)  # within 1 %: accepted

    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a readable"):
        PatchModel.load(tmp_path / "junk.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a NeuroWorkbench"):
        PatchModel.load(tmp_path / "other.pt")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "newer.pt")
    with pytest.raises(InputError, match="newer NeuroWorkbench"):
        PatchModel.load(tmp_path / "newer.pt")
    with pytest.raises(InputError, match="not found"):
        PatchModel.load(tmp_path / "missing.pt")


def test_training_refuses_bad_label_maps():
    image = np.random.default_rng(0).integers(0, 255, (200, 200)).astype(np.uint8)
    labels = np.zeros((200, 200), np.int32)
    with pytest.raises(InputError, match="no labelled region"):
        train(image, labels, patch_size=64)
    labels[:100] = 1
    with pytest.raises(InputError, match="only one labelled region"):
        train(image, labels, patch_size=64)
    with pytest.raises(InputError, match="200×100.*200×200"):
        train(image, labels[:, :100], patch_size=64)
    labels[100:] = 2
    labels[199, 199] = 3  # a one-pixel region cannot have both training and validation centres
    with pytest.raises(InputError, match="3 \\(no"):
        train(image, labels, patch_size=64, block_size=50)
    with pytest.raises(InputError, match="constant"):
        train(np.zeros((200, 200), np.uint8), np.where(labels == 3, 2, labels), patch_size=64, block_size=50)


def test_training_can_be_cancelled():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (160, 160)).astype(np.uint8)
    labels = np.ones((160, 160), np.int32)
    labels[:, 80:] = 2
    progress = Progress()
    progress.cancel()
    with pytest.raises(Cancelled):
        train(image, labels, patch_size=64, block_size=40, epochs=1, patches_per_epoch=64, progress=progress)
