"""The independent calcium simulators: their ground truth explains their movies, they have the
features they claim (doughnuts, touching cells, a decade of brightness, rigid motion), and the
default pipeline finds their cells on small movies of each kind (an F1 floor measured on seeds the
pipeline was not tuned on); the evaluation rules the simulators motivated (anti-correlated overlapping
components, the SNR threshold white noise rarely reaches)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.calcium import pipeline, simulators, synth
from test_calcium_pipeline import f1, iou_matrix  # noqa: E402  (tests/engine is on the path)


def expected_photons(sim):
    fp = sim["footprints"].reshape(len(sim["footprints"]), -1)
    cells = (sim["f0"][None] + sim["df"][None] * sim["calcium"].T) @ fp
    return cells.reshape(sim["movie"].shape) + sim["background"]


@pytest.mark.parametrize("make", [
    lambda: simulators.doughnut_recording(400, 48, 48, 8, seed=3, keep_background=True),
    lambda: simulators.dense_recording(400, 48, 48, 20, seed=3, keep_background=True),
], ids=["doughnut", "dense"])
def test_ground_truth_explains_the_movie(make):
    sim = make()
    mu = expected_photons(sim)
    residual = sim["movie"] - sim["offset"] - mu
    z = residual / np.sqrt(mu + sim["read_noise"] ** 2)  # Poisson + read noise: unit variance, zero mean
    assert abs(float(z.mean())) < 0.01
    assert 0.97 < float(z.std()) < 1.03
    # Pixels inside cells are no noisier in z than outside: the footprints and calcium are the truth there.
    inside = (sim["footprints"].max(axis=0) > 0.5)
    assert abs(float(z[:, inside].std()) - float(z[:, ~inside].std())) < 0.03
    # Calcium only rises at spikes (kernels are causal): no rise where no spike came in the last frames.
    spiking = np.zeros_like(sim["spikes"], bool)
    for lag in range(8):  # the doughnut kernel rises for ~0.2 s
        spiking[:, lag:] |= sim["spikes"][:, :sim["spikes"].shape[1] - lag] > 0
    rise = np.diff(sim["calcium"], axis=1, prepend=0.0) > 1e-6
    assert not (rise & ~spiking).any()
    assert np.allclose(sim["footprints"].max(axis=(1, 2)), 1.0)


def test_doughnuts_have_a_dimmer_nucleus():
    sim = simulators.doughnut_recording(50, 64, 64, 10, seed=1, nucleus=0.45)
    for fp, (cy, cx) in zip(sim["footprints"], sim["centers"]):
        centre = fp[int(round(cy)), int(round(cx))]
        assert 0.3 < centre < 0.65  # the nucleus at ~45 % of the ring, inside the 20 % mask
    assert len(sim["footprints"]) == 10


def test_dense_field_touches_and_spans_a_decade():
    sim = simulators.dense_recording(50, 96, 96, 60, seed=2)
    c = sim["centers"]
    d = np.hypot(c[:, None, 0] - c[None, :, 0], c[:, None, 1] - c[None, :, 1]) + np.eye(len(c)) * 1e9
    masks = sim["footprints"] >= 0.2
    sizes = masks.sum(axis=(1, 2))
    radii = np.sqrt(sizes / np.pi)
    touching = d < 1.1 * (radii[:, None] + radii[None, :])
    assert touching.sum() // 2 >= len(c) // 3  # many touching pairs
    assert sim["f0"].max() / sim["f0"].min() > 5
    assert radii.min() < 3.8 and radii.max() > 7.0


def test_dense_motion_is_the_rigid_integer_shift_of_the_field():
    sim = simulators.dense_recording(200, 48, 48, 15, seed=4, motion=1.5, keep_background=True)
    shifts = sim["shifts"]
    assert np.array_equal(shifts, np.round(shifts)) and np.abs(shifts).max() >= 1
    mu = expected_photons(sim)
    for t in np.flatnonzero(np.abs(shifts).sum(axis=1) > 0)[:5]:
        dy, dx = (int(v) for v in shifts[t])
        frame = sim["movie"][t] - sim["offset"]
        # The expected frame moved by the shift explains the frame better than the unmoved one.
        inner = (slice(4, -4), slice(4, -4))
        moved = np.roll(mu[t], (dy, dx), axis=(0, 1))
        assert np.mean((frame - moved)[inner] ** 2) < np.mean((frame - mu[t])[inner] ** 2)


# Small movies of each kind; seeds 11+ were never used while tuning the pipeline. Floors sit a bit
# under what the default pipeline reached on seeds 11-13 (synth ≥ 0.97, doughnut ≥ 0.82, dense ≥ 0.98;
# before the residual pass, duplicate merging and the noise-set SNR threshold, dense scored 0.86, 0.76,
# 0.75); full-size figures beside Suite2p are in benchmarks/RESULTS.md.
KINDS = {
    "synth": (lambda: synth.recording(1500, 64, 64, 14, seed=11), 0.85),
    "doughnut": (lambda: simulators.doughnut_recording(1500, 64, 64, 14, seed=11), 0.85),
    "dense": (lambda: simulators.dense_recording(1500, 64, 64, 25, seed=11), 0.9),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_default_pipeline_finds_the_cells_of_each_simulator(kind):
    make, floor = KINDS[kind]
    sim = make()
    result = pipeline.run_cnmf(sim["movie"], fs=30.0)
    accepted = np.flatnonzero(result.accepted)
    iou = iou_matrix(result, sim["footprints"])[accepted]
    score, rows, cols = f1(iou)
    assert score >= floor, f"{kind}: F1 {score:.2f}"
    ok = iou[rows, cols] >= 0.5
    corr = [np.corrcoef(result.C[accepted[r]], sim["calcium"][c])[0, 1] for r, c in zip(rows[ok], cols[ok])]
    assert np.median(corr) > 0.9


def test_cli_writes_each_simulator(tmp_path, capsys):
    from engine.calcium.cli import register
    from engine.cli import main

    for kind in ("doughnut", "dense"):
        out = tmp_path / kind
        assert main(["simulate-calcium", "-o", str(out), "--size", "40", "--frames", "60", "--cells", "5", "--kind", kind], [register]) == 0
        truth = np.load(out / "ground_truth.npz")
        assert truth["footprints"].shape[1:] == (40, 40) and truth["calcium"].shape[1] == 60
        assert {"f0", "df", "spikes", "centers", "shifts"} <= set(truth.files)
    assert main(["simulate-calcium", "-o", str(tmp_path / "bad"), "--kind", "doughnut", "--motion", "1"], [register]) == 2
    assert "doughnut simulator has no motion" in capsys.readouterr().err


def test_anti_correlated_overlapping_component_is_rejected_not_a_touching_cell():
    h = w = 20
    yy, xx = np.mgrid[0:h, 0:w]

    def disk(cy, cx, r=4.0):
        return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2)).ravel()

    from scipy import sparse

    A = sparse.csc_matrix(np.stack([disk(10, 10), disk(10, 11), disk(10, 18)], axis=1))  # 0, 1 overlap; 2 touches 0
    rng = np.random.default_rng(0)
    cell = rng.standard_normal(500)
    F = np.stack([cell, -cell + 0.3 * rng.standard_normal(500), rng.standard_normal(500)])
    snr = np.array([20.0, 6.0, 8.0])
    out = pipeline._compensating(A, F, snr, np.ones(3, bool), 0.5)
    assert out.tolist() == [False, True, False]  # the weaker of the anti-correlated overlapping pair only
    assert not pipeline._compensating(A, np.abs(F), snr, np.ones(3, bool), 0.5).any()  # positively correlated: kept


def test_anti_correlated_component_with_transients_of_its_own_is_kept():
    """A cell under a brighter neighbour whose footprint took too much of it anti-correlates with
    that neighbour, yet its trace has transients of its own; a compensator's is the neighbour's upside down."""
    h = w = 20
    yy, xx = np.mgrid[0:h, 0:w]

    def disk(cy, cx, r=4.0):
        return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2)).ravel()

    from scipy import sparse

    A = sparse.csc_matrix(np.stack([disk(10, 9), disk(10, 11)], axis=1))
    rng = np.random.default_rng(3)
    T = 3000

    def transients(rate):
        spikes = (rng.random(T) < rate) * rng.lognormal(0, 0.3, T)
        return np.convolve(spikes, np.exp(-np.arange(60) / 15.0))[:T]

    bright, own = 4 * transients(0.01), transients(0.003)
    cell = own - 0.1 * bright + 0.2 * rng.standard_normal(T)  # its own transients, less what the neighbour took
    compensator = -0.5 * bright + 0.2 * rng.standard_normal(T)
    snr = np.array([40.0, 8.0])
    assert np.corrcoef(bright, cell)[0, 1] < -0.3
    assert not pipeline._compensating(A, np.stack([bright, cell]), snr, np.ones(2, bool), 0.5).any()
    assert pipeline._compensating(A, np.stack([bright, compensator]), snr, np.ones(2, bool), 0.5).tolist() == [False, True]


def test_snr_threshold_is_what_white_noise_rarely_reaches():
    rng = np.random.default_rng(1)
    T = 3000
    threshold = pipeline.noise_snr_threshold(T)
    assert 4.0 < threshold < 4.3 and pipeline.noise_snr_threshold(20) == 3.0  # never below the old fixed 3
    peaks = rng.standard_normal((2000, T)).max(axis=1)
    assert 0.01 < np.mean(peaks >= threshold) < 0.1  # ~5 % of pure-noise traces
