"""NWB export of a CNMF result: read back with pynwb, valid against the NWB schema, masks and traces exact."""

from __future__ import annotations

import numpy as np
import pynwb
import pytest
from test_calcium_export import H, W, result  # noqa: F401  (the three-ROI fixture)

from engine.calcium.nwb import export_nwb
from engine.errors import InputError


@pytest.fixture(scope="module")
def nwb_path(result, tmp_path_factory):  # noqa: F811
    movie = tmp_path_factory.mktemp("movie") / "movie.tif"
    movie.write_bytes(b"stand-in")
    return export_nwb(result, tmp_path_factory.mktemp("nwb") / "session.nwb", movie_path=movie)


def test_file_validates_against_the_nwb_schema(nwb_path):
    errors = pynwb.validate(path=str(nwb_path))
    errors = errors[0] if isinstance(errors, tuple) else errors  # (errors, status) in some pynwb versions
    assert list(errors) == []
    assert [p.name for p in nwb_path.parent.iterdir()] == [nwb_path.name]  # no partial file left


def test_rois_traces_and_images_read_back(result, nwb_path):  # noqa: F811
    with pynwb.NWBHDF5IO(str(nwb_path), "r") as io:
        nwb = io.read()
        ophys = nwb.processing["ophys"]
        table = ophys["ImageSegmentation"]["PlaneSegmentation"]
        assert len(table) == result.A.shape[1] == 3
        np.testing.assert_array_equal(table["accepted"][:], result.accepted)
        np.testing.assert_allclose(table["snr"][:], result.metrics["snr"])
        dense = result.A.toarray()
        for k in range(3):
            mask = np.asarray(table["pixel_mask"][k].tolist())  # rows of (x = image row, y = column, weight)
            image = np.zeros((H, W))
            image[mask[:, 0].astype(int), mask[:, 1].astype(int)] = mask[:, 2]
            np.testing.assert_allclose(image.ravel(), dense[:, k])  # uniform disks: every pixel kept, exact
        fluorescence = ophys["Fluorescence"]
        for name, expected in (("RoiResponseSeries", result.F), ("Neuropil", result.Fneu), ("Denoised", result.C)):
            series = fluorescence[name]
            np.testing.assert_allclose(series.data[:], expected.T, rtol=1e-6)
            assert series.rate == 30.0 and len(series.rois) == 3
        np.testing.assert_allclose(ophys["Deconvolved"]["Deconvolved"].data[:], result.S.T, rtol=1e-6)
        np.testing.assert_allclose(ophys["SegmentationImages"]["correlation"].data[:], result.images["correlation"])
        assert "movie.tif" in nwb.notes


def test_bad_requests_say_what_to_do(result, tmp_path):  # noqa: F811
    with pytest.raises(InputError, match=r"\.nwb"):
        export_nwb(result, tmp_path / "session.h5")
    from dataclasses import replace

    from scipy import sparse

    empty = replace(result, A=sparse.csc_matrix((H * W, 0), dtype=np.float32))
    with pytest.raises(InputError, match="no ROIs"):
        export_nwb(empty, tmp_path / "empty.nwb")


def test_user_metadata_passes_nwbinspector_and_roiextractors_finds_the_rois(result, tmp_path):  # noqa: F811
    """No CRITICAL or BEST_PRACTICE_VIOLATION from nwbinspector; roiextractors (neuroconv's reader) finds every
    ROI with its image mask (it reads image_mask, not pixel_mask) and the traces."""
    from lab_files import NWB_METADATA, nwbinspector_problems
    from roiextractors import NwbSegmentationExtractor

    path = export_nwb(result, tmp_path / "session.nwb", metadata=NWB_METADATA)
    assert nwbinspector_problems(path) == []
    seg = NwbSegmentationExtractor(str(path))
    assert seg.get_num_rois() == 3 and seg.get_sampling_frequency() == 30.0
    # roiextractors reads NWB's (x, y) as (width, height) and so shows our (row, column) images transposed:
    # masks and summary images alike, so they still line up in its view
    masks = seg.get_roi_image_masks().transpose(1, 0, 2)
    np.testing.assert_allclose(masks.reshape(H * W, 3), result.A.toarray(), rtol=1e-6)
    np.testing.assert_allclose(seg.get_image("correlation").T, result.images["correlation"], rtol=1e-6)
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert nwb.subject.subject_id == "M42" and nwb.institution == "University of Examples"
        assert nwb.imaging_planes["ImagingPlane"].location == "VISp"
