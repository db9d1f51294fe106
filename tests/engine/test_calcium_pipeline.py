"""CNMF pipeline on a small simulated movie: cells found (F1 vs ground truth), copies across patch
borders merged, curation edits, the Suite2p export (fields, shapes, dtypes, pixel index) and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from scipy.optimize import linear_sum_assignment

from engine.calcium import pipeline, synth
from engine.calcium.export import STAT_MIN_WEIGHT, SUITE2P_FILES, export_suite2p
from engine.cli import main
from engine.errors import InputError


def iou_matrix(result, footprints):
    est = np.stack([result.roi_mask(k) for k in range(result.n_components)]).reshape(result.n_components, -1).astype(float)
    true = (footprints >= 0.2 * footprints.max(axis=(1, 2), keepdims=True)).reshape(len(footprints), -1).astype(float)
    inter = est @ true.T
    return inter / (est.sum(1)[:, None] + true.sum(1)[None] - inter)


def f1(iou):
    rows, cols = linear_sum_assignment(-iou)
    tp = int((iou[rows, cols] >= 0.5).sum())
    return 2 * tp / sum(iou.shape), rows, cols


@pytest.fixture(scope="module")
def run():
    sim = synth.recording(900, 96, 96, 14, seed=5)
    # Small patches (3 × 3 of 32 px) so that cells sit across patch borders.
    result = pipeline.run_cnmf(sim["movie"], fs=30, neuron_diameter=10, patch_size=32)
    return sim, result


def test_finds_the_cells(run):
    sim, result = run
    accepted = np.flatnonzero(result.accepted)
    iou = iou_matrix(result, sim["footprints"])[accepted]
    score, rows, cols = f1(iou)
    assert score >= 0.8
    ok = iou[rows, cols] >= 0.5
    corr = [np.corrcoef(result.C[accepted[r]], sim["calcium"][c])[0, 1] for r, c in zip(rows[ok], cols[ok])]
    assert np.median(corr) > 0.9
    assert result.A.shape == (96 * 96, result.n_components) and sparse.issparse(result.A)
    for name in ("C", "S", "F", "Fneu"):
        assert getattr(result, name).shape == (result.n_components, 900)
    assert set(result.images) >= {"mean", "max", "std", "correlation", "pnr", "noise"}


def test_copies_across_patch_borders_are_merged(run):
    sim, result = run
    assert result.info["copies_merged"] > 0  # cells near borders were fitted in several patches
    iou = iou_matrix(result, sim["footprints"])
    # No true cell is claimed twice by accepted components.
    hits = (iou[result.accepted] >= 0.5).sum(axis=0)
    assert hits.max() <= 1


def test_merge_add_remove(run):
    sim, result = run
    K = result.n_components
    merged = pipeline.merge_components(result, 0, 1)
    assert merged.n_components == K - 1 and merged.A.shape[1] == K - 1 and merged.C.shape[0] == K - 1
    fewer = pipeline.remove_components(result, [2])
    assert fewer.n_components == K - 1
    # Add back a true cell that is removed: the new ROI lands on it.
    iou = iou_matrix(result, sim["footprints"])
    k = int(np.argmax(iou.max(axis=1)))
    j = int(np.argmax(iou[k]))
    without = pipeline.remove_components(result, [k])
    added = pipeline.add_component(without, sim["movie"], sim["centers"][j])
    assert added.n_components == K and added.accepted[-1]
    assert iou_matrix(added, sim["footprints"][j:j + 1])[-1, 0] >= 0.5
    with pytest.raises(InputError, match="outside"):
        pipeline.add_component(result, sim["movie"], (500, 3))


def test_suite2p_export(run, tmp_path):
    sim, result = run
    export_suite2p(result, tmp_path)
    for name in SUITE2P_FILES + ("footprints.npz", "traces.npz"):
        assert (tmp_path / name).exists()
    K, T = result.n_components, 900
    stat = np.load(tmp_path / "stat.npy", allow_pickle=True)
    assert stat.dtype == object and len(stat) == K
    for s in stat:
        for key in ("ypix", "xpix", "lam", "med", "npix", "npix_norm", "radius", "aspect_ratio", "compact", "overlap", "footprint", "skew", "std"):
            assert key in s
        assert s["ypix"].dtype == np.int32 and s["xpix"].dtype == np.int32 and s["lam"].dtype == np.float32
        assert len(s["ypix"]) == len(s["xpix"]) == len(s["lam"]) == s["npix"] == len(s["overlap"])
        assert abs(float(s["lam"].sum()) - 1) < 1e-4
    for name in ("F.npy", "Fneu.npy", "spks.npy"):
        a = np.load(tmp_path / name)
        assert a.shape == (K, T) and a.dtype == np.float32
    iscell = np.load(tmp_path / "iscell.npy")
    assert iscell.shape == (K, 2) and np.array_equal(iscell[:, 0].astype(bool), result.accepted)
    ops = np.load(tmp_path / "ops.npy", allow_pickle=True).item()
    assert (ops["Ly"], ops["Lx"], ops["nframes"], ops["fs"]) == (96, 96, T, 30.0)
    assert ops["meanImg"].shape == (96, 96)
    # Pixel index convention of footprints.npz: y * width + x; stat holds the same footprint without
    # its faint box tails (weights below STAT_MIN_WEIGHT of the peak).
    A = sparse.load_npz(tmp_path / "footprints.npz").tocsc()
    assert A.shape == (96 * 96, K)
    col = A[:, 0]
    pix = col.indices[col.data >= STAT_MIN_WEIGHT * col.data.max()]
    assert 0 < len(pix) < col.nnz
    np.testing.assert_array_equal(np.sort(pix), np.sort(stat[0]["ypix"] * 96 + stat[0]["xpix"]))
    img = np.asarray(A[:, 0].toarray()).reshape(96, 96)
    y, x = np.unravel_index(np.argmax(img), img.shape)
    assert np.hypot(y - result.centers[0, 0], x - result.centers[0, 1]) < 6
    traces = np.load(tmp_path / "traces.npz")
    for key in ("C", "S", "F", "b", "f"):
        assert key in traces
    assert traces["C"].shape == (K, T)


def test_cli_round_trip_and_bad_input(tmp_path, capsys):
    from engine.calcium.cli import register

    regs = [register]
    assert main(["simulate-calcium", "-o", str(tmp_path / "sim"), "--size", "48", "--frames", "300", "--cells", "4", "--seed", "1"], regs) == 0
    assert (tmp_path / "sim" / "movie.tif").exists() and (tmp_path / "sim" / "ground_truth.npz").exists()
    import json

    from lab_files import NWB_METADATA, nwbinspector_problems

    (tmp_path / "meta.json").write_text(json.dumps(NWB_METADATA))
    assert main(["cnmf", str(tmp_path / "sim" / "movie.tif"), "-o", str(tmp_path / "out"), "--neuron-diameter", "10",
                 "--nwb", str(tmp_path / "out.nwb"), "--nwb-metadata", str(tmp_path / "meta.json")], regs) == 0
    assert (tmp_path / "out" / "stat.npy").exists()
    import pynwb

    with pynwb.NWBHDF5IO(str(tmp_path / "out.nwb"), "r") as io:
        nwb = io.read()
        segmentation = nwb.processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        assert len(segmentation) == len(np.load(tmp_path / "out" / "iscell.npy"))
        assert nwb.subject.species == "Mus musculus" and list(nwb.keywords[:]) == ["V1", "mouse"]
    assert nwbinspector_problems(tmp_path / "out.nwb") == []
    F = np.load(tmp_path / "out" / "F.npy")
    np.save(tmp_path / "traces.npy", F)
    assert main(["deconvolve", str(tmp_path / "traces.npy"), "--fs", "30", "-o", str(tmp_path / "dec.npz")], regs) == 0
    dec = np.load(tmp_path / "dec.npz")
    assert dec["c"].shape == F.shape and "tau" in dec
    capsys.readouterr()
    # Bad input: one line, exit 2.
    assert main(["cnmf", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "x")], regs) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "bad_meta.yaml").write_text("subject: {sex: female}\n")
    assert main(["cnmf", str(tmp_path / "sim" / "movie.tif"), "-o", str(tmp_path / "x"), "--nwb", str(tmp_path / "x.nwb"),
                 "--nwb-metadata", str(tmp_path / "bad_meta.yaml")], regs) == 2
    assert "sex must be one of" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4)))
    assert main(["deconvolve", str(tmp_path / "bad.npy"), "-o", str(tmp_path / "d.npz")], regs) == 2
    err = capsys.readouterr().err.strip()
    assert "traces × frames" in err and "\n" not in err
    assert main(["cnmf", str(tmp_path / "sim" / "movie.tif"), "-o", str(tmp_path / "y"), "--patch-size", "5"], regs) == 2
    assert "patch_size" in capsys.readouterr().err


def test_bins_split_between_reader_chunks_are_whole():
    frames = np.random.default_rng(0).random((103, 3, 2)).astype(np.float32)
    for bin_ in (1, 4, 5):
        expected = frames[: 103 // bin_ * bin_].reshape(-1, bin_, 3, 2).mean(axis=1)
        for step in (1, 3, 7, 16, 200):
            binned = np.zeros_like(expected)
            for start in range(0, 103, step):
                pipeline.add_to_bins(binned, bin_, start, frames[start:start + step])
            np.testing.assert_allclose(binned, expected, atol=1e-6, err_msg=f"bin {bin_}, chunks of {step}")


def test_detection_does_not_depend_on_the_reader_chunk(run, monkeypatch):
    """The summary pass reads chunks capped by bytes (16 frames of 512² px), not multiples of the
    detection bin: bins split between chunks once lost frames, dipped in every pixel, inflated the
    PNR noise and lost half the cells of a 512² px movie. Chunks of 3 frames against bins of 4 here."""
    import engine.calcium.io as calcium_io

    sim, result = run
    assert result.params["detection_bin"] == 4
    monkeypatch.setattr(calcium_io, "_SUMMARY_CHUNK_BYTES", 96 * 96 * 8 * 3)
    small_chunks = pipeline.run_cnmf(sim["movie"], fs=30, neuron_diameter=10, patch_size=32)
    for name in ("pnr", "correlation"):
        np.testing.assert_allclose(small_chunks.images[name], result.images[name], atol=1e-3 * np.abs(result.images[name]).max())
    assert small_chunks.n_components == result.n_components


def test_cli_scheduler_address_runs_the_patches_and_deconvolution_there(tmp_path, monkeypatch):
    from distributed import LocalCluster

    from engine import parallel
    from engine.calcium.cli import register

    monkeypatch.setenv(parallel.SCHEDULER_ENV, "auto")  # restored after the test (main sets it)
    assert main(["simulate-calcium", "-o", str(tmp_path / "sim"), "--size", "48", "--frames", "300", "--cells", "4",
                 "--seed", "1"], [register]) == 0
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster:
        try:
            # A small movie held in memory: without an address it is demixed here, serially.
            assert main(["--scheduler", cluster.scheduler_address, "cnmf", str(tmp_path / "sim" / "movie.tif"),
                         "-o", str(tmp_path / "out"), "--neuron-diameter", "10", "--patch-size", "24"], [register]) == 0
            ran = set(cluster.scheduler.task_prefixes)
        finally:
            parallel.shutdown()
    assert {"patches", "deconvolving"} <= ran
    assert len(np.load(tmp_path / "out" / "iscell.npy")) > 0


def _touching_pair(T: int = 600, seed: int = 0):
    """Two soft disks (radius 3.5 px) 7 px apart on a flat background: cell 0 fires often, cell 1 rarely."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:40, 0:40]
    centers = np.array([[20.0, 16.5], [20.0, 23.5]])
    shapes = np.stack([1 / (1 + np.exp((np.hypot(yy - cy, xx - cx) - 3.5) / 0.6)) for cy, cx in centers])
    C = np.zeros((2, T))
    for k, rate in enumerate((0.08, 0.02)):
        s = (rng.random(T) < rate) * rng.uniform(10, 30, T)
        for t in range(T):
            C[k, t] = (0.8 * C[k, t - 1] if t else 0.0) + s[t]
    movie = 50 + np.einsum("kt,kij->tij", C, shapes) + rng.normal(0, 1.0, (T, 40, 40))
    return movie.astype(np.float32), centers, shapes, C


def test_residual_pass_finds_the_cell_a_footprint_over_two_took():
    """A footprint that took a touching pair (mostly the livelier cell, partly its neighbour) has its
    centroid between the two, 4.4 px from the missed cell: within the 1.2-radius leftover zone
    when that zone was measured from the centroid, so the missed cell was never looked for. Measured
    from where the footprint's light is (its blurred peak, on the livelier cell) the missed cell is found."""
    movie, centers, shapes, C = _touching_pair()
    footprint = (shapes[0] + 0.6 * shapes[1]).reshape(-1, 1).astype(np.float32)
    part = {"box": (0, 40, 0, 40), "core": (0, 40, 0, 40), "A": footprint, "C": C[:1].astype(np.float32),
            "b": np.full((1600, 1), 50.0, np.float32), "f": np.ones((1, len(movie)), np.float32)}
    found = pipeline._residual_centers(movie, [part], (40, 40), 5.0, 0.03, 5.0)
    assert len(found) == 1 and np.hypot(*(found[0] - centers[1])) <= 2.0, found


def test_traces_at_the_full_rate_from_a_binned_fit():
    """The patches are fitted on the movie averaged over bins of 4 frames; step 6 gets the activities
    at the movie's rate from one product with it: a spike's rise within a bin is back (a trace that
    held each bin's value correlates less), and the two overlapping cells stay demixed."""
    from engine.calcium.io import Movie

    movie, centers, shapes, C = _touching_pair()
    A = sparse.csc_matrix(shapes.reshape(2, -1).T.astype(np.float32))
    b = sparse.csc_matrix(np.ones((1600, 1), np.float32))
    T = len(movie)
    C_binned = C.reshape(2, T // 4, 4).mean(axis=2)
    held = np.repeat(C_binned, 4, axis=1)
    F, Fneu, f = pipeline._project(Movie.from_array(movie), movie, A, C_binned, b, np.full((1, T // 4), 50.0), 4,
                                   pipeline.as_progress(None))  # fmt: skip
    for k in range(2):
        exact = np.corrcoef(F[k], C[k])[0, 1]
        assert exact > 0.99 and exact > np.corrcoef(held[k], C[k])[0, 1] + 0.01
    under = 50.0 * shapes.reshape(2, -1).sum(1) / (shapes.reshape(2, -1) ** 2).sum(1)  # the background projected on each footprint
    np.testing.assert_allclose(Fneu, np.broadcast_to(under[:, None], Fneu.shape), rtol=0.01)
    np.testing.assert_allclose(f, 50.0, rtol=0.02)


def test_refit_starts_from_the_first_fit():
    """Patches that got cells from the residual pass are fitted again from the first fit (a fit from
    scratch let dim cells' footprints spread over bright neighbours: dense seed 1 scored 0.92 instead of
    0.99); a patch that got none keeps its fit as it was."""
    movie, centers, shapes, C = _touching_pair()
    task = {"box": (0, 40, 0, 40), "core": (0, 40, 0, 40), "radius": 5.0, "n_background": 1, "backend": "numpy",
            "temporal_factor": 8, "refit_iterations": 5, "r_values": True}
    first = pipeline._fit_patch({**task, "block": movie, "centers": centers[:1]})
    init = {key: first[key] for key in ("A", "C", "b", "f")}
    # No new cell: the earlier fit is kept as given (here one with its footprint scaled, so a fresh fit would differ).
    kept = {**init, "A": init["A"] * 0.5, "C": init["C"] * 2.0}
    same = pipeline._fit_patch({**task, "block": movie, "centers": centers[:1], "init": kept})
    for key in ("A", "C", "b", "f"):
        np.testing.assert_array_equal(same[key], kept[key])
    assert same["r_value"][0] > 0.5
    both = pipeline._fit_patch({**task, "block": movie, "centers": centers, "init": init})
    a0 = both["A"][:, 0]
    assert a0 @ first["A"][:, 0] / (np.linalg.norm(a0) * np.linalg.norm(first["A"][:, 0])) > 0.9
    truth = shapes.reshape(2, -1)
    cos = (both["A"].T @ truth.T) / np.outer(np.linalg.norm(both["A"], axis=0), np.linalg.norm(truth, axis=1))
    assert cos[0, 0] > 0.9 and cos[1, 1] > 0.9, cos


def test_first_fit_holds_each_footprint_to_its_seed():
    """Doughnut-dim movie (the issue's small, dim, slow doughnuts; 64 × 64 px, 20 cells, seed 15): in the
    first fit three components left their seeds for livelier neighbours inside their boxes, and three cells
    ended with no component (F1 0.85). Held to the blob around their seeds, every cell is found."""
    from benchmarks.cnmf import score
    from engine.calcium.simulators import doughnut_recording

    sim = doughnut_recording(1500, 64, 64, n_cells=20, radius=4.0, photons=25.0, rate=0.25, seed=15)
    result = pipeline.run_cnmf(sim["movie"], fs=30.0)
    s = score(result, sim)
    assert s["recall"] == 1.0 and s["f1"] >= 0.95, s


def _touching_pair_part(rng, traces_alike: bool) -> dict:
    """One patch fit in which component 0 took two touching cells (8 px apart, radius 4) and components 1-3 are
    single cells fitted right; the binned movie is exactly the cells plus noise."""
    n, T = 40, 400
    yy, xx = np.mgrid[0:n, 0:n]
    cells = [(12, 10), (12, 18), (30, 8), (30, 22), (8, 32)]
    shapes = np.stack([np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 2.0**2)) * ((yy - y) ** 2 + (xx - x) ** 2 <= 16)
                       for y, x in cells]).reshape(len(cells), -1)  # fmt: skip
    spikes = (rng.random((len(cells), T)) < 0.03) * rng.uniform(2, 6, (len(cells), T))
    traces = np.stack([np.convolve(s, np.exp(-np.arange(20) / 5.0))[:T] for s in spikes])
    if traces_alike:
        traces[1] = traces[0]
    binned = (traces.T @ shapes + rng.normal(0, 0.05, (T, n * n))).reshape(T, n, n).astype(np.float32)
    A = np.stack([shapes[0] + shapes[1], *shapes[2:]], axis=1).astype(np.float32)
    A /= A.max(axis=0)
    C = np.stack([traces[0] + traces[1], *traces[2:]]).astype(np.float32)
    return binned, {"box": (0, n, 0, n), "core": (0, n, 0, n), "A": A, "C": C, "b": np.zeros((n * n, 1), np.float32),
                    "f": np.zeros((1, T), np.float32), "centers": np.array([[12.0, 11.0], *cells[2:]], float)}  # fmt: skip


def test_footprint_over_two_touching_cells_is_split():
    binned, part = _touching_pair_part(np.random.default_rng(0), traces_alike=False)
    found = pipeline._split_pairs(binned, [part], radius=4.0)
    assert len(found) == 1 and np.hypot(*(found[0] - [12, 18])) <= 1.5  # the new center on the cell away from the seed
    kept = part["A"][:, 0].reshape(40, 40)
    assert np.hypot(*(np.array(np.unravel_index(kept.argmax(), kept.shape)) - [12, 10])) <= 1.5
    assert kept[12, 18] < 0.2  # the component kept only the cell at its seed
    (center, a, c), = part["fresh"]
    assert a.reshape(40, 40)[12, 18] > 0.8 and a.reshape(40, 40)[12, 10] < 0.2
    # Two cells with one activity are one component as far as the data can tell: not split.
    binned, part = _touching_pair_part(np.random.default_rng(0), traces_alike=True)
    assert pipeline._split_pairs(binned, [part], radius=4.0) == [] and "fresh" not in part
