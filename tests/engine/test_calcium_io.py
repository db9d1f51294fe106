"""Calcium movies: every source format, lazy reads, metadata, errors, summary images, demo movie."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile

from engine.calcium.io import MOVIE_EXTENSIONS, Movie, open_movie, region_trace, summary_images
from engine.calcium.synth import demo_movie, write_demo_movie
from engine.errors import InputError
from engine.progress import Cancelled, Progress


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 4000, (23, 17, 19)).astype(np.uint16)


def check_movie(movie: Movie, stack: np.ndarray) -> None:
    assert movie.shape == stack.shape
    assert (movie.n_frames, movie.height, movie.width) == stack.shape
    assert movie.dtype == stack.dtype
    frames = movie.frames(3, 9)
    assert frames.dtype == np.float32 and frames.shape == (6, 17, 19)
    np.testing.assert_array_equal(frames, stack[3:9])
    np.testing.assert_array_equal(movie.frame(-1), stack[-1])
    np.testing.assert_array_equal(movie.frames(0, movie.n_frames), stack)
    assert movie.frames(20, 100).shape[0] == 3 and movie.frames(-5, 2).shape[0] == 2
    with pytest.raises(IndexError):
        movie.frame(23)


# -- sources ----------------------------------------------------------------------------------

def test_npy_is_memory_mapped(tmp_path, stack):
    np.save(tmp_path / "m.npy", stack)
    with open_movie(tmp_path / "m.npy", fps=15) as movie:
        assert isinstance(movie._source, np.memmap)
        assert movie.fps == 15.0
        check_movie(movie, stack)


def test_imagej_tiff_memmap_and_fps(tmp_path, stack):
    tifffile.imwrite(tmp_path / "m.tif", stack, imagej=True, metadata={"axes": "TYX", "fps": 7.5})
    with open_movie(tmp_path / "m.tif", fps=99.0) as movie:  # the file's rate wins
        assert isinstance(movie._source, np.memmap)
        assert movie.fps == 7.5
        assert movie.duration == pytest.approx(23 / 7.5)
        check_movie(movie, stack)


def test_tiff_finterval_and_json_metadata(tmp_path, stack):
    tifffile.imwrite(tmp_path / "a.tif", stack, imagej=True, metadata={"axes": "TYX", "finterval": 0.05})
    with open_movie(tmp_path / "a.tif") as movie:
        assert movie.fps == pytest.approx(20.0)
    tifffile.imwrite(tmp_path / "b.tiff", stack, metadata={"fps": 12.0})
    with open_movie(tmp_path / "b.tiff") as movie:
        assert movie.fps == 12.0
        check_movie(movie, stack)


def test_compressed_tiff_read_page_by_page(tmp_path, stack):
    tifffile.imwrite(tmp_path / "z.tif", stack, compression="zlib")
    with pytest.raises(ValueError):
        tifffile.memmap(tmp_path / "z.tif", mode="r")  # so the page-by-page path is what is tested
    with open_movie(tmp_path / "z.tif", fps=4) as movie:
        assert not isinstance(movie._source, np.ndarray)
        assert movie.fps == 4.0
        check_movie(movie, stack)
        np.testing.assert_allclose(region_trace(movie, 5, 6, 1), stack[:, 4:7, 5:8].reshape(23, -1)[:, [1, 3, 4, 5, 7]].mean(1), rtol=1e-6)


def test_hdf5_first_3d_dataset_and_named(tmp_path, stack):
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("aaa_meta", data=np.arange(5))
        f.create_dataset("mov", data=stack, chunks=(4, 17, 19))
        f.create_dataset("other", data=stack[:5] + 1)
        f["mov"].attrs["fps"] = 31.0
    with open_movie(path) as movie:
        assert movie.fps == 31.0
        check_movie(movie, stack)
    with open_movie(path, dataset="other", fps=2.0) as movie:
        assert movie.n_frames == 5 and movie.fps == 2.0
        np.testing.assert_array_equal(movie.frame(0), stack[0] + 1)
    with pytest.raises(InputError) as info:
        open_movie(path, dataset="nope")
    assert "nope" in info.value.message and "mov" in info.value.message


def test_hdf5_singleton_axis_is_dropped(tmp_path, stack):
    path = tmp_path / "m.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=stack[:, None])
        f.attrs["frame_rate"] = 9.0
    with open_movie(path) as movie:
        assert movie.fps == 9.0
        check_movie(movie, stack)


def _nwb_file(path, frames=None, rate=None, timestamps=None):
    """An NWB file written by pynwb itself, with a TwoPhotonSeries in acquisition (or none)."""
    import datetime as dt

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ophys import OpticalChannel, TwoPhotonSeries

    nwb = NWBFile(session_description="test", identifier="x", session_start_time=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    device = nwb.create_device(name="scope")
    plane = nwb.create_imaging_plane(name="plane", optical_channel=OpticalChannel(name="ch", description="", emission_lambda=520.0),
                                     imaging_rate=rate or 10.0, description="", device=device, excitation_lambda=920.0,
                                     indicator="GCaMP6f", location="V1")
    if frames is not None:
        nwb.add_acquisition(TwoPhotonSeries(name="TwoPhotonSeries", data=frames, imaging_plane=plane, unit="a.u.",
                                            rate=rate, timestamps=timestamps, starting_time=0.0 if rate else None))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def test_nwb_two_photon_series_read_lazily_with_its_rate(tmp_path, stack):
    movie = open_movie(_nwb_file(tmp_path / "a.nwb", stack, rate=15.0))
    assert movie.shape == stack.shape and movie.fps == 15.0
    np.testing.assert_array_equal(movie.frames(2, 7), stack[2:7])
    movie.close()
    stamps = np.arange(len(stack)) / 7.5  # irregular files give timestamps instead of a rate
    with open_movie(_nwb_file(tmp_path / "b.nwb", stack, timestamps=stamps)) as movie:
        assert movie.fps == pytest.approx(7.5)
    with pytest.raises(InputError, match="no TwoPhotonSeries"):
        open_movie(_nwb_file(tmp_path / "results.nwb"))  # e.g. our own export: ROIs and traces, no movie


def test_from_array(stack):
    movie = Movie.from_array(stack.astype(np.float32), fps=10)
    check_movie(movie, stack.astype(np.float32))


# -- errors -----------------------------------------------------------------------------------

def test_missing_unsupported_and_corrupt(tmp_path):
    with pytest.raises(InputError, match="not found"):
        open_movie(tmp_path / "nope.tif")
    (tmp_path / "movie.mp4").write_bytes(b"ftyp")
    with pytest.raises(InputError) as info:
        open_movie(tmp_path / "movie.mp4")
    assert ".mp4" in info.value.message and all(ext in info.value.message for ext in MOVIE_EXTENSIONS)
    for name in ("bad.tif", "bad.npy", "bad.h5"):
        (tmp_path / name).write_bytes(b"this is not image data" * 10)
        with pytest.raises(InputError) as info:
            open_movie(tmp_path / name)
        assert name in info.value.message and "corrupt" in info.value.message
    (tmp_path / "zero.tif").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        open_movie(tmp_path / "zero.tif")


def test_shape_errors(tmp_path):
    np.save(tmp_path / "image.npy", np.zeros((10, 12)))
    with pytest.raises(InputError) as info:
        open_movie(tmp_path / "image.npy")
    assert "single 2-D image" in info.value.message and "(10, 12)" in info.value.message
    assert "frames × height × width" in info.value.message
    np.save(tmp_path / "one.npy", np.zeros((1, 10, 12)))
    with pytest.raises(InputError, match="single frame"):
        open_movie(tmp_path / "one.npy")
    np.save(tmp_path / "four.npy", np.zeros((5, 2, 10, 12)))
    with pytest.raises(InputError) as info:
        open_movie(tmp_path / "four.npy")
    assert "(5, 2, 10, 12)" in info.value.message and "frames × height × width" in info.value.message
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((4, 10, 12, 3), dtype=np.uint8), photometric="rgb")
    with pytest.raises(InputError, match="colour"):
        open_movie(tmp_path / "rgb.tif")
    with h5py.File(tmp_path / "flat.h5", "w") as f:
        f.create_dataset("trace", data=np.zeros(100))
    with pytest.raises(InputError) as info:
        open_movie(tmp_path / "flat.h5")
    assert "no 3-D" in info.value.message and "trace" in info.value.message
    with pytest.raises(InputError, match="Frame rate"):
        open_movie(tmp_path / "image.npy", fps=-1)


# -- summaries --------------------------------------------------------------------------------

def test_summary_images_match_numpy(stack):
    movie = Movie.from_array(stack)
    reports = []
    progress = Progress(lambda f, m: reports.append(f), min_interval=0.0)
    s = summary_images(movie, chunk_frames=7, progress=progress)
    ref = stack.astype(np.float64)
    np.testing.assert_allclose(s["mean"], ref.mean(0), rtol=1e-6)
    np.testing.assert_allclose(s["max"], ref.max(0))
    np.testing.assert_allclose(s["std"], ref.std(0), rtol=1e-5)
    assert all(v.shape == (17, 19) for v in s.values())
    assert reports[-1] == 1.0 and len(reports) >= 4  # a report per chunk (23 frames / 7)


def test_summary_images_cancel(stack):
    progress = Progress()
    progress.cancel()
    with pytest.raises(Cancelled):
        summary_images(Movie.from_array(stack), chunk_frames=5, progress=progress)


def test_summary_images_nan_frame():
    data = np.ones((30, 8, 8), dtype=np.float32)
    data[13, 2, 3] = np.nan
    with pytest.raises(InputError) as info:
        summary_images(Movie.from_array(data), chunk_frames=10)
    assert "Frame 13" in info.value.message and "NaN" in info.value.message


def test_region_trace_disk_mean(stack):
    movie = Movie.from_array(stack)
    trace = region_trace(movie, 0, 0, radius=2)
    yy, xx = np.mgrid[0:17, 0:19]
    disk = yy**2 + xx**2 <= 4
    np.testing.assert_allclose(trace, stack[:, disk].mean(1), rtol=1e-6)
    with pytest.raises(InputError, match="outside"):
        region_trace(movie, 17, 0)


# -- demo movie -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo():
    return demo_movie(n_frames=300, height=64, width=64, n_neurons=8, fps=30.0, seed=2)


def test_demo_movie_ground_truth(demo):
    movie, footprints, calcium, spikes = demo
    n = footprints.shape[0]
    assert movie.shape == (300, 64, 64) and movie.dtype == np.float32
    assert footprints.shape == (8, 64, 64) and calcium.shape == (8, 300) and spikes.shape == (8, 300)
    assert np.all(spikes >= 0) and spikes.sum() > 8
    # footprints: soma-sized blobs (radius 4-6 px → area ~50-150 px at half maximum)
    half = (footprints > 0.5).sum(axis=(1, 2))
    assert np.all((half > 25) & (half < 200))
    # calcium is AR(1) driven by the spikes: jumps only at spike frames
    for i in range(n):
        decaying = (spikes[i, 1:] == 0) & (calcium[i, :-1] > 1e-3)
        g = np.median(calcium[i, 1:][decaying] / calcium[i, :-1][decaying])
        assert 0.9 < g < 1.0  # tau 0.6-1.5 s at 30 fps
        innovation = calcium[i, 1:] - g * calcium[i, :-1]
        assert np.all(np.abs(innovation[spikes[i, 1:] == 0]) < 1e-3)
        assert np.all(innovation[spikes[i, 1:] > 0] > 0.1)
    # the activity is where the footprints are
    std = movie.std(axis=0)
    inside = footprints.max(axis=0) > 0.5
    outside = footprints.max(axis=0) == 0
    assert std[inside].mean() > 1.5 * std[outside].mean()
    corr = []
    for i in range(n):
        y, x = np.unravel_index(footprints[i].argmax(), footprints[i].shape)
        corr.append(np.corrcoef(movie[:, y, x], calcium[i])[0, 1])
    assert np.median(corr) > 0.5 and min(corr) > 0.2


def test_write_demo_movie_round_trip(tmp_path):
    kwargs = dict(n_frames=120, height=48, width=40, n_neurons=5, fps=15.0, seed=4)
    path = write_demo_movie(tmp_path / "demo_movie.tif", **kwargs)
    movie, footprints, calcium, spikes = demo_movie(**kwargs)
    with open_movie(path) as m:
        assert m.shape == (120, 48, 40) and m.dtype == np.uint16 and m.fps == 15.0
        np.testing.assert_allclose(m.frames(0, 120), np.clip(np.round(movie), 0, 65535))
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 120
    gt = np.load(tmp_path / "demo_movie_ground_truth.npz")
    np.testing.assert_array_equal(gt["footprints"], footprints)
    np.testing.assert_array_equal(gt["spikes"], spikes)
    np.testing.assert_allclose(gt["calcium"], calcium)
    assert float(gt["fps"]) == 15.0


def test_suite2p_registered_binary_with_ops(tmp_path):
    """Suite2p's data.bin (int16 frames, no header) opens with the frame size and rate of ops.npy beside it."""
    from engine.calcium.io import is_suite2p_binary, open_movie

    movie = np.random.default_rng(0).integers(-300, 3000, (25, 12, 17)).astype(np.int16)
    plane = tmp_path / "suite2p" / "plane0"
    plane.mkdir(parents=True)
    movie.tofile(plane / "data.bin")
    np.save(plane / "ops.npy", np.array({"Ly": 12, "Lx": 17, "fs": 15.5, "nframes": 25}, dtype=object), allow_pickle=True)
    assert is_suite2p_binary(plane / "data.bin")
    m = open_movie(plane / "data.bin")
    assert m.shape == (25, 12, 17) and m.fps == 15.5
    np.testing.assert_array_equal(m.frames(3, 9), movie[3:9])
    np.save(plane / "ops.npy", np.array({"Ly": 13, "Lx": 17}, dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="whole number of 13 × 17"):
        open_movie(plane / "data.bin")
    (tmp_path / "lonely.bin").write_bytes(b"\0" * 100)
    with pytest.raises(InputError, match="ops.npy"):
        open_movie(tmp_path / "lonely.bin")


@pytest.mark.parametrize("order", ["C", "F"])
def test_caiman_memory_map(tmp_path, order):
    """A CaImAn .mmap as caiman.mmapping.save_memmap writes it: float32 pixels × frames, pixels column-major."""
    from engine.calcium.io import open_movie

    t, d1, d2 = 30, 9, 14
    movie = np.random.default_rng(1).normal(100, 10, (t, d1, d2)).astype(np.float32)
    path = tmp_path / f"Yr_d1_{d1}_d2_{d2}_d3_1_order_{order}_frames_{t}_.mmap"
    yr = np.memmap(path, dtype=np.float32, mode="w+", shape=(d1 * d2, t), order=order)
    yr[:] = movie.reshape(t, -1, order="F").T  # caiman: Yr = images.reshape(T, -1, order='F').T
    yr.flush()
    del yr
    m = open_movie(path)
    assert m.shape == (t, d1, d2)
    np.testing.assert_array_equal(m.frames(4, 11), movie[4:11])
    renamed = tmp_path / "movie.mmap"
    path.rename(renamed)
    with pytest.raises(InputError, match="CaImAn"):
        open_movie(renamed)
