"""Calcium recordings in the acquisition systems' own layouts: ScanImage multi-plane / multi-channel TIFF (our
reader, checked against roiextractors'), Bruker Prairie View TIFF series, UCLA Miniscope, Inscopix (through
roiextractors). Each fixture is written in the format's own structure by the test and opened by the route users use."""

from __future__ import annotations

import numpy as np
import pytest
from lab_files import scanimage_frame_data, write_scanimage

from engine.calcium.io import open_movie, recording_layout
from engine.errors import InputError

T, P, F, C = 6, 3, 1, 2  # volumes, planes, flyback frames, channels


def _volumes(rng, frames_per_slice=1, volumes=T):
    """Pages in ScanImage's order and the same data indexed [volume, slice frame, plane, channel]."""
    data = rng.integers(-100, 3000, (volumes, P * frames_per_slice + F, C, 16, 20)).astype(np.int16)
    return data.reshape(-1, 16, 20), data


@pytest.mark.parametrize("column", [True, False])
def test_scanimage_plane_and_channel(tmp_path, column):
    """Any plane and channel of a FastZ volume recording with a flyback frame, in ScanImage 2020's layout;
    the volume rate is the movie's rate; without a choice, the message says which choices there are."""
    pages, data = _volumes(np.random.default_rng(0))
    path = write_scanimage(tmp_path / "file_00001.tif", pages,
                           scanimage_frame_data(channels=(1, 2), planes=P, flyback=F, volumes=T, column=column))
    layout = recording_layout(path)
    assert (layout.planes, layout.channels, layout.channel_names, layout.flyback) == (3, (1, 2), ("Channel 1", "Channel 2"), 1)
    for plane in range(P):
        for ci, channel in enumerate((1, 2)):
            with open_movie(path, plane=plane, channel=channel) as movie:
                assert movie.shape == (T, 16, 20) and movie.fps == pytest.approx(30.0 / 4)
                np.testing.assert_array_equal(movie.frames(0, T), data[:, plane, ci])
                np.testing.assert_array_equal(movie._block(2, 5, slice(3, 9), slice(4, 6)), data[2:5, plane, ci, 3:9, 4:6])
    with pytest.raises(InputError, match=r"3 planes × 2 channels .*--plane 0\.\.2, --channel 1 or 2"):
        open_movie(path)
    with pytest.raises(InputError, match="Plane 3 does not exist"):
        open_movie(path, plane=3, channel=1)
    with pytest.raises(InputError, match="Channel 3 was not saved"):
        open_movie(path, plane=0, channel=3)
    if not column:  # roiextractors reads row vectors ([1 2]); ScanImage's own column vectors ([1;2]) stop it with a TypeError
        from roiextractors import ScanImageImagingExtractor

        for plane, name in ((0, "Channel 1"), (2, "Channel 2")):
            peer = ScanImageImagingExtractor(file_path=path, channel_name=name, plane_index=plane)
            with open_movie(path, plane=plane, channel=int(name[-1])) as movie:
                np.testing.assert_array_equal(movie.frames(0, T), peer.get_series(0, peer.get_num_samples()))
                assert movie.fps == pytest.approx(peer.get_sampling_frequency())


def test_scanimage_frames_per_slice_and_a_partial_last_volume(tmp_path):
    """Several frames per slice are consecutive frames of the plane's movie (roiextractors'
    interleave_slice_samples); the pages of an interrupted last volume are left out, as roiextractors does."""
    from roiextractors import ScanImageImagingExtractor

    pages, data = _volumes(np.random.default_rng(1), frames_per_slice=2)
    path = write_scanimage(tmp_path / "stack.tif", pages[:-5],
                           scanimage_frame_data(channels=(1, 3), planes=P, flyback=F, frames_per_slice=2, volumes=T, column=False))
    with open_movie(path, plane=1, channel=3) as movie:
        assert movie.n_frames == (T - 1) * 2
        expected = data[:T - 1, 2:4, 1].reshape(-1, 16, 20)  # slice 1's two frames of each volume, channel 3 (index 1)
        np.testing.assert_array_equal(movie.frames(0, movie.n_frames), expected)
        peer = ScanImageImagingExtractor(file_path=path, channel_name="Channel 3", plane_index=1, interleave_slice_samples=True)
        np.testing.assert_array_equal(movie.frames(0, movie.n_frames), peer.get_series())


def test_single_plane_scanimage_opens_as_before_and_plain_tiffs_refuse_a_choice(tmp_path):
    import tifffile

    pages = np.random.default_rng(2).integers(0, 500, (12, 16, 20)).astype(np.int16)
    path = write_scanimage(tmp_path / "plain_si.tif", pages, scanimage_frame_data(frame_rate=15.0))
    assert recording_layout(path).needs_choice is False
    with open_movie(path) as movie:
        assert movie.fps == 15.0
        np.testing.assert_array_equal(movie.frames(0, 12), pages)
    tifffile.imwrite(tmp_path / "t.tif", pages)
    assert recording_layout(tmp_path / "t.tif") is None
    with pytest.raises(InputError, match="single plane and channel"):
        open_movie(tmp_path / "t.tif", plane=1)


def test_neurowb_cnmf_on_one_plane_and_channel(tmp_path, capsys):
    """`neurowb cnmf file.tif --plane 1 --channel 2`: the cells of that plane's green channel are found; the other
    planes and channel hold noise. Without the choice: exit 2 and the choices in one line."""
    from engine.calcium.cli import register
    from engine.calcium.synth import demo_movie
    from engine.cli import main

    frames, footprints, _c, _s = demo_movie(n_frames=300, height=48, width=48, n_neurons=5, seed=4)
    rng = np.random.default_rng(5)
    data = rng.normal(100, 5, (300, 2 + 1, 2, 48, 48))
    data[:, 1, 1] = frames * 20 + 100
    path = write_scanimage(tmp_path / "file_00001.tif", np.round(data).astype(np.int16).reshape(-1, 48, 48),
                           scanimage_frame_data(channels=(1, 2), planes=2, flyback=1, volumes=300, height=48, width=48,
                                                frame_rate=90.0))
    assert main(["cnmf", str(path), "-o", str(tmp_path / "x")], [register]) == 2
    assert "--plane 0..1, --channel 1 or 2" in capsys.readouterr().err
    assert main(["cnmf", str(path), "--plane", "1", "--channel", "2", "-o", str(tmp_path / "out"), "--neuron-diameter", "10"],
                [register]) == 0
    assert "plane 1, channel 2" in capsys.readouterr().err
    stat = np.load(tmp_path / "out" / "stat.npy", allow_pickle=True)
    centres = np.array([np.argwhere(f > 0.5 * f.max()).mean(0) for f in footprints])
    found = np.array([[s["med"][0], s["med"][1]] for s in stat])
    assert len(found) >= len(centres) and np.all(np.min(np.linalg.norm(centres[:, None] - found[None], axis=2), 1) < 4)


def test_bruker_prairie_view_series_by_its_xml(tmp_path):
    """A two-channel Prairie View T-series: opened by its XML, the chosen channel's frames through roiextractors'
    Bruker reader, the rate from the XML's relative times; without a channel the choices are named."""
    from lab_files import write_bruker

    movie = np.random.default_rng(3).integers(0, 8000, (9, 2, 16, 20)).astype(np.uint16)
    xml = write_bruker(tmp_path / "TSeries-05012024-1000-001", movie, frame_period=0.05, channel_names=("Ch1", "Ch2"))
    layout = recording_layout(xml)
    assert (layout.system, layout.planes, layout.channels, layout.channel_names) == ("Bruker", 1, (1, 2), ("Ch1", "Ch2"))
    with pytest.raises(InputError, match="--channel 1 or 2"):
        open_movie(xml)
    with open_movie(xml, channel=2) as m:
        assert m.shape == (9, 16, 20) and m.fps == pytest.approx(20.0)
        np.testing.assert_array_equal(m.frames(0, 9), movie[:, 1])
        np.testing.assert_array_equal(m.frames(4, 6), movie[4:6, 1])
    (tmp_path / "renamed.xml").write_text(xml.read_text())
    with pytest.raises(InputError):
        open_movie(tmp_path / "renamed.xml")


def test_miniscope_device_folder_by_an_avi(tmp_path):
    """A Miniscope v4 recording of 3 files (FFV1, lossless): opened by 0.avi, all files as one movie, the rate from
    timeStamps.csv; an .avi that is not a Miniscope recording is refused with the reason."""
    from lab_files import write_miniscope

    movie = np.random.default_rng(4).integers(0, 255, (50, 24, 32)).astype(np.uint8)
    avi = write_miniscope(tmp_path / "HPC_miniscope1", movie, fps=20.0, frames_per_file=20)
    with open_movie(avi) as m:
        assert m.shape == (50, 24, 32) and m.fps == pytest.approx(20.0, rel=0.02)
        np.testing.assert_array_equal(m.frames(15, 45), movie[15:45])  # across the files' boundaries
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "clip.avi").write_bytes(avi.read_bytes())
    with pytest.raises(InputError, match="metaData.json"):
        open_movie(tmp_path / "other" / "clip.avi")


def test_inscopix_isxd(tmp_path):
    pytest.importorskip("isx")
    from lab_files import write_inscopix

    movie = np.random.default_rng(5).integers(0, 4000, (12, 18, 22)).astype(np.uint16)
    path = write_inscopix(tmp_path / "recording_20240501.isxd", movie, period_ms=50.0)
    with open_movie(path) as m:
        assert m.shape == (12, 18, 22) and m.fps == pytest.approx(20.0) and m.dtype == np.uint16
        np.testing.assert_array_equal(m.frames(0, 12), movie)


def test_scanimage_pages_read_through_tifffile_when_not_memory_mappable(tmp_path, monkeypatch):
    """Pages that cannot be read at an offset (compressed) are decoded page by page: the same frames."""
    import engine.calcium.io as calcium_io

    pages, data = _volumes(np.random.default_rng(6))
    path = write_scanimage(tmp_path / "file_00001.tif", pages, scanimage_frame_data(channels=(1, 2), planes=P, flyback=F, volumes=T))
    monkeypatch.setattr(calcium_io, "_page_offsets", lambda tif, pages: None)
    with open_movie(path, plane=2, channel=1) as movie:
        assert movie._reader is not None
        np.testing.assert_array_equal(movie.frames(1, T), data[1:, 2, 0])


def test_bruker_volume_series_one_plane(tmp_path):
    """A Prairie View Z-series over time (3 planes per volume, one <Sequence> per volume): the chosen plane's frames,
    at the volume rate."""
    from lab_files import write_bruker

    movie = np.random.default_rng(7).integers(0, 8000, (4 * 3, 1, 16, 20)).astype(np.uint16)  # 4 volumes × 3 planes
    xml = write_bruker(tmp_path / "TSeries-05012024-1000-002", movie, frame_period=0.02, planes=3)
    layout = recording_layout(xml)
    assert (layout.planes, layout.channels) == (3, (2,))
    with pytest.raises(InputError, match="--plane 0..2"):
        open_movie(xml)
    with open_movie(xml, plane=2) as m:
        assert m.shape == (4, 16, 20) and m.fps == pytest.approx(1 / 0.06, rel=0.01)
        np.testing.assert_array_equal(m.frames(0, 4), movie[2::3, 0])
