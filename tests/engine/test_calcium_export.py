"""The Suite2p-folder contract of :func:`engine.calcium.export.export_suite2p`, without Suite2p.

The required fields are taken from Suite2p 1.1.0's source (PyPI ``suite2p``); each entry says who
reads it. ``benchmarks/suite2p_check.py`` runs the real loaders on an export (in a separate
Suite2p environment); this test keeps the same contract in CI:

* ``gui/io.py`` ``load_files``: stat.npy (object array, ``stat[0]["ypix"]``), F.npy, Fneu.npy,
  spks.npy, ops.npy (``.item()``), iscell.npy ``[:, 0]`` bool and ``[:, 1]`` probability.
* ``gui/io.py`` ``make_masks_and_enable_buttons``: stat ``ypix``, ``xpix``, ``med``, ``radius``;
  ops ``tau``, ``fs``, ``Ly``, ``Lx``, ``diameter``; ``gui/views.py`` ``init_views``: ops
  ``meanImg``, ``meanImgE``, ``Vcorr``, ``max_proj`` (Ly × Lx here), ``yrange``, ``xrange``.
* ``gui/masks.py`` ``init_masks`` / ``make_colors``: stat ``lam``, ``skew``, ``compact``,
  ``snr``, ``aspect_ratio``; ``gui/gui2p.py`` ``stats_to_show``: ``med``, ``npix_norm``,
  ``skew``, ``compact``, ``snr``, ``aspect_ratio``.
* ``gui/merge.py``: ops ``extraction["neuropil_coefficient"]``, ``detection["soma_crop"]``,
  ``batch_size``, ``diameter`` (passed to ``roi_stats`` as [dy, dx]); ``gui/drawroi.py``: ops ``reg_file``.
* ``extraction/masks.py`` ``create_masks``: stat ``ypix``, ``xpix``, ``lam``, ``radius``,
  ``overlap`` (bool per pixel, used as a mask index).
* ``classification/classify.py``: stat ``skew``, ``npix_norm``, ``compact``.
* ``detection/stats.py`` ``roi_stats`` definitions followed here: ``med`` = the ROI pixel nearest
  the median, ``compact`` = max(1, mrs / mrs0), ``radius`` = major radius (2 σ) × diameter,
  ``aspect_ratio`` = 2 r0 / (0.01 + r0 + r1), ``npix_norm`` = npix_soma / median of the first 100.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from engine.calcium.export import SUITE2P_FILES, export_suite2p
from engine.calcium.pipeline import CNMFResult

STAT_ARRAYS = {"ypix": "i", "xpix": "i", "lam": "f", "overlap": "b", "soma_crop": "b"}
STAT_SCALARS = ("npix", "npix_soma", "npix_norm", "radius", "aspect_ratio", "compact", "footprint", "skew", "std", "snr",
                "mrs", "mrs0")  # fmt: skip
OPS_KEYS = ("Ly", "Lx", "fs", "tau", "nframes", "diameter", "meanImg", "meanImgE", "Vcorr", "max_proj", "yrange", "xrange",
            "save_path", "reg_file", "batch_size", "extraction", "detection")  # fmt: skip
H, W, T, D = 40, 48, 300, 10.0


def _disk(cy, cx, r, ry=None):
    yy, xx = np.mgrid[:H, :W]
    ry = ry or r
    return ((((yy - cy) / ry) ** 2 + ((xx - cx) / r) ** 2) <= 1).astype(np.float32)


@pytest.fixture(scope="module")
def result():
    """Three uniform ROIs: two disks of radius 5 that touch (overlap) and one ellipse 8 × 4."""
    rng = np.random.default_rng(0)
    imgs = [_disk(12, 12, 5), _disk(12, 20, 5), _disk(28, 34, 4, ry=8)]
    A = sparse.csc_matrix(np.stack([i.ravel() for i in imgs], axis=1))
    K = A.shape[1]
    C = np.maximum(rng.normal(0, 1, (K, T)), 0).astype(np.float32)
    F = (C + rng.normal(0, 0.1, (K, T))).astype(np.float32)
    Fneu = np.full((K, T), 5.0, np.float32)
    images = {k: rng.random((H, W)).astype(np.float32) for k in ("mean", "max", "std", "correlation", "pnr", "noise")}
    return CNMFResult(A=A, C=C, S=C.copy(), F=F, Fneu=Fneu, b=sparse.csc_matrix(np.ones((H * W, 1), np.float32)),
                      f=np.ones((1, T), np.float32), baseline=np.zeros(K), g=np.full(K, 0.95), sigma=np.full(K, 0.1),
                      centers=np.array([[12, 12], [12, 20], [28, 34]], float),
                      metrics={"snr": np.array([10.0, 10.0, 1.0], np.float32), "r_value": np.ones(K, np.float32),
                               "size": np.array([81, 81, 97])},
                      accepted=np.array([True, True, False]), image_shape=(H, W), fps=30.0, images=images,
                      params={"neuron_diameter": D, "min_snr": 3.0})  # fmt: skip


@pytest.fixture(scope="module")
def folder(result, tmp_path_factory):
    return export_suite2p(result, tmp_path_factory.mktemp("s2p"))


def test_files_shapes_and_dtypes(result, folder):
    for name in SUITE2P_FILES + ("footprints.npz", "traces.npz"):
        assert (folder / name).exists()
    K = result.n_components
    for name in ("F.npy", "Fneu.npy", "spks.npy"):
        a = np.load(folder / name)
        assert a.shape == (K, T) and a.dtype == np.float32
    iscell = np.load(folder / "iscell.npy")
    assert iscell.shape == (K, 2)
    assert np.array_equal(iscell[:, 0].astype(bool), result.accepted)
    assert np.all((iscell[:, 1] >= 0.5) == result.accepted)  # probability on the same side as the decision


def test_stat_fields(folder):
    stat = np.load(folder / "stat.npy", allow_pickle=True)
    assert stat.dtype == object and len(stat) == 3
    for s in stat:
        for key, kind in STAT_ARRAYS.items():
            assert isinstance(s[key], np.ndarray) and s[key].dtype.kind == kind and s[key].shape == s["ypix"].shape, key
        for key in STAT_SCALARS:
            assert np.ndim(s[key]) == 0 and np.isfinite(s[key]), key
        assert s["npix"] == len(s["ypix"]) and abs(float(s["lam"].sum()) - 1) < 1e-5
        # med is [row, col] of a pixel of the ROI (Suite2p's median_pix)
        assert len(s["med"]) == 2 and np.any((s["ypix"] == s["med"][0]) & (s["xpix"] == s["med"][1]))
        assert s["compact"] >= 1.0 and 0 <= s["aspect_ratio"] <= 2


def test_stat_values_follow_suite2p_definitions(folder):
    stat = np.load(folder / "stat.npy", allow_pickle=True)
    disk, other, ellipse = stat
    # A uniform disk of radius 5: Suite2p's soma_crop tries integer radii below the largest pixel
    # distance (5), so it keeps the pixels nearer than 4 to med; on those, radius = 2σ of the major axis.
    yy, xx = np.mgrid[:H, :W]
    kept = np.hypot(yy - 12, xx - 12) < 4
    assert disk["med"] == [12, 12] and disk["npix_soma"] == kept.sum() == disk["soma_crop"].sum()
    assert disk["radius"] == pytest.approx(2 * np.sqrt(((yy[kept] - 12.0) ** 2).mean()), rel=1e-6)
    r = disk["radius"] / D  # radii in diameters; equal axes: 2 r / (0.01 + 2 r)
    assert disk["aspect_ratio"] == pytest.approx(2 * r / (0.01 + 2 * r), rel=1e-4)
    assert disk["compact"] == pytest.approx(1.0, abs=0.05)  # a disk is as compact as it gets
    # The 8 × 4 ellipse: longer major axis, aspect ratio well above 1, less compact than a disk.
    assert ellipse["radius"] > disk["radius"] + 1 and ellipse["aspect_ratio"] > 1.2 and ellipse["compact"] > 1.05
    # npix_norm: npix_soma over the median of the ROIs' (uniform ROIs are not cropped).
    npix = np.array([s["npix_soma"] for s in stat], float)
    np.testing.assert_allclose([s["npix_norm"] for s in stat], npix / np.median(npix), rtol=1e-5)
    # overlap: the two disks 8 px apart share pixels; the ellipse shares none.
    assert disk["overlap"].any() and other["overlap"].sum() == disk["overlap"].sum() and not ellipse["overlap"].any()
    shared = set(zip(disk["ypix"][disk["overlap"]], disk["xpix"][disk["overlap"]]))
    assert shared == set(zip(other["ypix"], other["xpix"])) & set(zip(disk["ypix"], disk["xpix"]))


def test_activity_stats_use_suite2p_dF(result, folder):
    stat = np.load(folder / "stat.npy", allow_pickle=True)
    F, Fneu = np.load(folder / "F.npy"), np.load(folder / "Fneu.npy")
    np.testing.assert_allclose(F, result.F + result.Fneu, rtol=1e-6)  # Suite2p's F includes the neuropil
    dF = F - 0.7 * Fneu
    for k, s in enumerate(stat):
        assert s["std"] == pytest.approx(dF[k].std(), rel=1e-4)
        assert s["snr"] == pytest.approx(1 - 0.5 * np.diff(dF[k]).var() / dF[k].var(), rel=1e-4)


def test_ops_keys(folder):
    ops = np.load(folder / "ops.npy", allow_pickle=True).item()
    assert set(OPS_KEYS) <= set(ops)
    assert (ops["Ly"], ops["Lx"], ops["nframes"], ops["fs"]) == (H, W, T, 30.0)
    for key in ("meanImg", "meanImgE", "Vcorr", "max_proj"):
        assert ops[key].shape == (H, W) and ops[key].dtype == np.float32
    assert list(ops["diameter"]) == [D, D]
    assert ops["extraction"]["neuropil_coefficient"] == 0.7 and ops["detection"]["soma_crop"] is True
    assert list(ops["yrange"]) == [0, H] and list(ops["xrange"]) == [0, W]
    assert int(ops["tau"] * ops["fs"] / 2) >= 1  # the GUI's bin size


def test_roiextractors_reads_the_folder(result, tmp_path):
    """roiextractors' Suite2p reader (neuroconv's) takes our folder as a plane of a suite2p/ folder: every ROI with
    its pixels and weights, the traces, the rate and the frame size."""
    from roiextractors import Suite2pSegmentationExtractor

    export_suite2p(result, tmp_path / "suite2p" / "plane0")
    seg = Suite2pSegmentationExtractor(tmp_path / "suite2p")
    stat = np.load(tmp_path / "suite2p" / "plane0" / "stat.npy", allow_pickle=True)
    assert seg.get_num_rois() == len(stat) == 3 and seg.get_sampling_frequency() == 30.0
    assert tuple(seg.get_frame_shape()) == (H, W)
    masks = seg.get_roi_image_masks()  # rows × columns × ROIs
    for k, s in enumerate(stat):
        expected = np.zeros((H, W), np.float32)
        expected[s["ypix"], s["xpix"]] = s["lam"]
        np.testing.assert_allclose(masks[:, :, k], expected, rtol=1e-6)
    np.testing.assert_allclose(seg.get_traces(name="raw").T, np.load(tmp_path / "suite2p" / "plane0" / "F.npy"), rtol=1e-6)  # frames × ROIs
