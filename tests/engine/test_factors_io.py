"""Microarchitecture images and label maps: formats, colour conversion, errors, demo mosaic, real images."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from engine.errors import InputError
from engine.factors.io import IMAGE_EXTENSIONS, find_labels, load_image, load_labels
from engine.factors.synth import MOSAIC_CLASSES, demo_mosaic, write_demo_mosaic


def need(shared_data: Path, relative: str) -> Path:
    path = shared_data / relative
    if not path.exists():
        pytest.skip(f"{relative} not in {shared_data}")
    return path


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (37, 53)).astype(np.uint8)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (37, 53, 3)).astype(np.uint8)


def luminance(rgb: np.ndarray) -> np.ndarray:
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


# -- images -----------------------------------------------------------------------------------

def test_png_gray_8_and_16_bit(tmp_path, gray):
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    assert out.dtype == np.uint8 and out.shape == (37, 53)
    np.testing.assert_array_equal(out, gray)
    deep = gray.astype(np.uint16) * 200
    Image.fromarray(deep).save(tmp_path / "g16.png")
    out = load_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out, deep)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_png_colour_becomes_luminance(tmp_path, rgb, mode):
    data = rgb if mode == "RGB" else np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    Image.fromarray(data).save(tmp_path / "c.png")
    out = load_image(tmp_path / "c.png")
    assert out.shape == (37, 53) and out.dtype == np.uint8
    assert np.abs(out.astype(float) - luminance(rgb)).max() <= 1.0


def test_jpeg(tmp_path, gray):
    smooth = np.tile(np.linspace(0, 255, 53), (37, 1)).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "g.jpg", quality=95)
    out = load_image(tmp_path / "g.jpg")
    assert out.shape == (37, 53) and np.abs(out.astype(float) - smooth).mean() < 3
    Image.fromarray(np.dstack([smooth] * 3)).save(tmp_path / "c.jpeg", quality=95)
    assert load_image(tmp_path / "c.jpeg").shape == (37, 53)


def test_tiff_memmap_compressed_and_rgb(tmp_path, gray, rgb):
    big = (gray.astype(np.uint16) * 100)
    tifffile.imwrite(tmp_path / "plain.tif", big)
    out = load_image(tmp_path / "plain.tif")
    assert isinstance(out, np.memmap)  # not read into memory
    np.testing.assert_array_equal(out, big)
    tifffile.imwrite(tmp_path / "packed.tiff", big, compression="zlib")
    np.testing.assert_array_equal(load_image(tmp_path / "packed.tiff"), big)
    tifffile.imwrite(tmp_path / "colour.tif", rgb, photometric="rgb")
    assert np.abs(load_image(tmp_path / "colour.tif").astype(float) - luminance(rgb)).max() <= 1.0
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    assert np.abs(load_image(tmp_path / "planar.tif").astype(float) - luminance(rgb)).max() <= 1.0


def test_npy(tmp_path, gray, rgb):
    np.save(tmp_path / "g.npy", gray.astype(np.float32)[None])
    out = load_image(tmp_path / "g.npy")
    assert out.shape == (37, 53) and out.dtype == np.float32
    np.testing.assert_array_equal(out, gray)
    np.save(tmp_path / "c.npy", rgb.astype(np.float32))
    np.testing.assert_allclose(load_image(tmp_path / "c.npy"), luminance(rgb), rtol=1e-5)


def test_pillow_pixel_limit_is_lifted(tmp_path, gray, monkeypatch):
    Image.fromarray(gray).save(tmp_path / "g.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # as if the image were a gigapixel slice
    np.testing.assert_array_equal(load_image(tmp_path / "g.png"), gray)


def test_image_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "scan.bmp").write_bytes(b"BM")
    with pytest.raises(InputError) as info:
        load_image(tmp_path / "scan.bmp")
    assert ".bmp" in info.value.message and all(ext in info.value.message for ext in IMAGE_EXTENSIONS)
    for name in ("broken.png", "broken.tif", "broken.jpg", "broken.npy"):
        (tmp_path / name).write_bytes(b"\x89PNG but not really" * 5)
        with pytest.raises(InputError) as info:
            load_image(tmp_path / name)
        assert name in info.value.message and "corrupt" in info.value.message
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 10, 12), np.uint8))
    with pytest.raises(InputError) as info:
        load_image(tmp_path / "stack.tif")
    assert "(5, 10, 12)" in info.value.message and "2-D" in info.value.message
    np.save(tmp_path / "empty.npy", np.zeros((0, 5)))
    with pytest.raises(InputError, match="empty"):
        load_image(tmp_path / "empty.npy")
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_image(tmp_path / "zero.png")


# -- labels -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    lab = np.zeros((20, 30), dtype=np.uint8)
    lab[2:8, 3:12] = 1
    lab[10:18, 5:25] = 3
    return lab


def test_labels_all_formats(tmp_path, labels):
    np.save(tmp_path / "a.npy", labels)
    np.savez(tmp_path / "b.npz", labels=labels, classes=np.array(["x", "y", "z"]))
    np.savez(tmp_path / "c.npz", regions=labels.astype(np.int32))
    Image.fromarray(labels).save(tmp_path / "d.png")
    palette = Image.fromarray(labels, mode=None).convert("P")
    palette.save(tmp_path / "e.png")
    tifffile.imwrite(tmp_path / "f.tif", labels.astype(np.uint16))
    for name in ("a.npy", "b.npz", "c.npz", "d.png", "e.png", "f.tif"):
        out = load_labels(tmp_path / name, shape=(20, 30))
        assert np.issubdtype(out.dtype, np.integer), name
        np.testing.assert_array_equal(out, labels, err_msg=name)
    np.save(tmp_path / "float.npy", labels.astype(np.float64))
    out = load_labels(tmp_path / "float.npy")
    assert np.issubdtype(out.dtype, np.integer)
    np.testing.assert_array_equal(out, labels)


def test_label_errors(tmp_path, labels):
    np.save(tmp_path / "lab.npy", labels)
    with pytest.raises(InputError) as info:
        load_labels(tmp_path / "lab.npy", shape=(21, 30))
    assert "20×30" in info.value.message and "21×30" in info.value.message
    np.save(tmp_path / "frac.npy", labels * 0.5)
    with pytest.raises(InputError, match="non-integer"):
        load_labels(tmp_path / "frac.npy")
    np.save(tmp_path / "zeros.npy", np.zeros((5, 5), np.int32))
    with pytest.raises(InputError, match="no labelled pixels"):
        load_labels(tmp_path / "zeros.npy")
    np.save(tmp_path / "neg.npy", labels.astype(np.int16) - 1)
    with pytest.raises(InputError, match="negative"):
        load_labels(tmp_path / "neg.npy")
    np.savez(tmp_path / "many.npz", a=labels, b=labels)
    with pytest.raises(InputError, match="'labels'"):
        load_labels(tmp_path / "many.npz")
    Image.fromarray(np.dstack([labels] * 3)).save(tmp_path / "rgb.png")
    with pytest.raises(InputError, match="colour"):
        load_labels(tmp_path / "rgb.png")
    (tmp_path / "bad.npz").write_bytes(b"garbage" * 10)
    with pytest.raises(InputError, match="corrupt"):
        load_labels(tmp_path / "bad.npz")
    with pytest.raises(InputError, match="not supported"):
        load_labels(tmp_path / "lab.jpg")


def test_find_labels_beside_image(tmp_path, gray, labels):
    Image.fromarray(gray).save(tmp_path / "slice.png")
    assert find_labels(tmp_path / "slice.png", gray.shape) is None
    np.save(tmp_path / "slice_labels.npy", labels)  # wrong shape for this image: ignored
    assert find_labels(tmp_path / "slice.png", gray.shape) is None
    good = np.zeros(gray.shape, np.uint8)
    good[:5] = 2
    np.savez(tmp_path / "slice_labels.npz", labels=good)
    np.testing.assert_array_equal(find_labels(tmp_path / "slice.png", gray.shape), good)


# -- demo mosaic ------------------------------------------------------------------------------

def test_demo_mosaic_ground_truth():
    image, labels = demo_mosaic(size=256, n_cells=9, seed=0)
    assert image.shape == labels.shape == (256, 256)
    assert image.dtype == np.uint8 and labels.dtype == np.uint8
    assert set(np.unique(labels)) == set(MOSAIC_CLASSES) == {1, 2, 3}
    means = [image[labels == k].astype(float).mean() for k in (1, 2, 3)]
    stds = [image[labels == k].astype(float).std() for k in (1, 2, 3)]
    assert max(means) - min(means) < 3.0  # brightness gives no cue
    assert max(stds) / min(stds) < 1.25
    # textures differ: fine noise has the most pixel-to-pixel variation, stripes are oriented
    dx = np.abs(np.diff(image.astype(float), axis=1))[:-1, :]
    dy = np.abs(np.diff(image.astype(float), axis=0))[:, :-1]
    inner = labels[:-1, :-1]
    rough = {k: (dx[inner == k] + dy[inner == k]).mean() for k in (1, 2, 3)}
    assert rough[3] > 1.1 * max(rough[1], rough[2]) and rough[2] < min(rough[1], rough[3])
    # stripes at 30°: a step along them (dy=2, dx=-1) barely changes the grating, a step across (1, 1) does
    img = image.astype(float)
    along = np.abs(img[2:, :-1] - img[:-2, 1:])[labels[2:, :-1] == 1].mean()
    across = np.abs(img[1:, 1:] - img[:-1, :-1])[labels[1:, 1:] == 1].mean()
    assert along < 0.75 * across
    np.testing.assert_array_equal(demo_mosaic(size=256, seed=0)[1], labels)


def test_write_demo_mosaic(tmp_path):
    path = write_demo_mosaic(tmp_path / "demo_mosaic.png", size=128, n_cells=6, seed=3)
    image, labels = demo_mosaic(size=128, n_cells=6, seed=3)
    np.testing.assert_array_equal(load_image(path), image)
    np.testing.assert_array_equal(load_labels(tmp_path / "demo_mosaic_labels.npz", image.shape), labels)
    np.testing.assert_array_equal(find_labels(path, image.shape), labels)
    classes = np.load(tmp_path / "demo_mosaic_labels.npz")["classes"]
    assert list(classes) == [MOSAIC_CLASSES[k] for k in (1, 2, 3)]


# -- real data --------------------------------------------------------------------------------

@pytest.mark.shared_data
def test_real_xray_slice(shared_data):
    path = need(shared_data, "images/xray_thalamocortical_slice159.png")
    t0 = time.perf_counter()
    image = load_image(path)
    assert time.perf_counter() - t0 < 5.0
    assert image.shape == (1420, 5805) and image.dtype == np.uint8
    assert image.std() > 5


@pytest.mark.shared_data
def test_real_texture_mosaic_and_labels(shared_data):
    path = need(shared_data, "images/texture_mosaic_1024.png")
    image = load_image(path)
    assert image.shape == (1024, 1024) and image.dtype == np.uint8
    labels = load_labels(need(shared_data, "images/texture_mosaic_1024_labels.npz"), shape=image.shape)
    assert set(np.unique(labels)) == {0, 1, 2}  # this file uses 0 for its first texture (brick)
    np.testing.assert_array_equal(find_labels(path, image.shape), labels)


def test_tiled_pyramidal_ome_tiff_is_read_lazily_with_its_pixel_size(tmp_path):
    """A tiled, compressed, pyramidal OME-TIFF (as slide scanners and stitchers write): opened through tifffile's
    zarr interface at full resolution, only the tiles a slice touches decoded; pixel size from PhysicalSizeX."""
    import tifffile

    from engine.factors.io import LazyImage, pixel_size_um

    image = np.random.default_rng(0).integers(0, 4000, (600, 904), dtype=np.uint16)
    path = tmp_path / "slide.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        options = dict(tile=(128, 128), compression="zlib")
        tif.write(image, subifds=1, metadata={"axes": "YX", "PhysicalSizeX": 0.65, "PhysicalSizeXUnit": "µm",
                                              "PhysicalSizeY": 0.65, "PhysicalSizeYUnit": "µm"}, **options)
        tif.write(image[::2, ::2], subfiletype=1, **options)  # the half-resolution level
    lazy = load_image(path)
    assert isinstance(lazy, LazyImage) and lazy.shape == (600, 904) and lazy.dtype == np.uint16
    decoded = []
    decode = lazy._page.decode
    lazy._page.decode = lambda data, index, **k: decoded.append(index) or decode(data, index, **k)
    np.testing.assert_array_equal(lazy[100:300, 500:700], image[100:300, 500:700])
    assert len(decoded) == 9  # 3 × 3 of the 5 × 8 tiles of 128 px
    lazy._page.decode = decode
    np.testing.assert_array_equal(np.asarray(lazy), image)
    assert pixel_size_um(path) == pytest.approx(0.65)
    tifffile.imwrite(tmp_path / "ij.tif", image, imagej=True, resolution=(1 / 0.2, 1 / 0.2), metadata={"unit": "micron"})
    assert pixel_size_um(tmp_path / "ij.tif") == pytest.approx(0.2)
    tifffile.imwrite(tmp_path / "cm.tif", image, resolution=(10000.0, 10000.0), resolutionunit="CENTIMETER")
    assert pixel_size_um(tmp_path / "cm.tif") == pytest.approx(1.0)
    tifffile.imwrite(tmp_path / "none.tif", image)
    tifffile.imwrite(tmp_path / "dpi.tif", image, resolution=(72.0, 72.0), resolutionunit="INCH")  # a display setting
    assert pixel_size_um(tmp_path / "none.tif") is None and pixel_size_um(tmp_path / "dpi.tif") is None


def test_ome_zarr_and_zarr_read_lazily_with_the_pixel_size_of_their_scale(tmp_path):
    """An OME-Zarr v0.4 pyramid (axes c, y, x; level 0 at 0.25 µm, level 1 at 0.5 µm) written with zarr: the
    full-resolution level opens lazily (a slice reads only its chunks) with the pixel size of its scale transform;
    a plain zarr array folder opens too; a group without multiscales and a multi-channel image are refused."""
    import zarr

    from engine.factors.io import ZarrImage, pixel_size_um

    image = np.random.default_rng(0).integers(0, 4000, (300, 410), dtype=np.uint16)
    root = zarr.open_group(str(tmp_path / "slide.ome.zarr"), mode="w")
    root.create_dataset("0", data=image[None], chunks=(1, 64, 64))
    root.create_dataset("1", data=image[None, ::2, ::2], chunks=(1, 64, 64))
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"}]
    root.attrs["multiscales"] = [{"version": "0.4", "name": "slide", "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 0.25, 0.25]}]},
        {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 0.5, 0.5]}]}]}]
    lazy = load_image(tmp_path / "slide.ome.zarr")
    assert isinstance(lazy, ZarrImage) and lazy.shape == (300, 410) and lazy.dtype == np.uint16
    read = []
    store = lazy._array.store
    getitem = type(store).__getitem__
    type(store).__getitem__ = lambda self, key: read.append(key) or getitem(self, key)
    try:
        np.testing.assert_array_equal(lazy[70:130, 200:250], image[70:130, 200:250])
    finally:
        type(store).__getitem__ = getitem
    assert sorted(k for k in read if not k.endswith((".zarray", ".zattrs"))) == ["0/0.1.3", "0/0.2.3"]  # 2 of 35 chunks
    np.testing.assert_array_equal(np.asarray(lazy), image)
    assert pixel_size_um(tmp_path / "slide.ome.zarr") == pytest.approx(0.25)
    zarr.save_array(str(tmp_path / "plain.zarr"), image, chunks=(100, 100))
    assert load_image(tmp_path / "plain.zarr")[5, 7] == image[5, 7] and pixel_size_um(tmp_path / "plain.zarr") is None
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w").create_dataset("a", data=image)
    with pytest.raises(InputError, match="without OME-NGFF 'multiscales'"):
        load_image(tmp_path / "empty.zarr")
    two = zarr.open_group(str(tmp_path / "two.ome.zarr"), mode="w")
    two.create_dataset("0", data=np.stack([image, image]))
    two.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, 1.0, 1.0]}]}]}]
    with pytest.raises(InputError, match="2 channels of 300×410 px"):
        load_image(tmp_path / "two.ome.zarr")
    with pytest.raises(InputError, match="not a folder"):
        load_image(tmp_path / "missing.zarr")
