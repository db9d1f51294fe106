"""The ROI classifier: features of a real CNMF result, a store that survives reloads and damage,
decisions from several movies, the fallback to the thresholds, and `neurowb cnmf --classifier`."""

import numpy as np
import pytest

from engine.calcium import classifier
from engine.calcium.classifier import FEATURES, MIN_PER_CLASS, Decisions
from engine.errors import InputError


@pytest.fixture(scope="module")
def result():
    from engine.calcium.pipeline import run_cnmf
    from engine.calcium.synth import recording

    sim = recording(n_frames=400, height=64, width=64, n_cells=8, seed=1)
    return run_cnmf(sim["movie"], fs=30.0, neuron_diameter=10)


def separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random features; a cell when its spatial r (column 1) is above 0.6."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURES)))
    X[:, 0] = rng.uniform(0.0, 2.0, n)
    X[:, 1] = rng.uniform(0.0, 1.0, n)
    return X, X[:, 1] > 0.6


def test_learns_a_separable_rule_from_decisions():
    X, y = separable(60, 0)
    decisions = Decisions().add("a.tif:1", np.c_[np.arange(60), np.zeros(60)] * 10, X, y)
    assert decisions.ready and decisions.counts() == (int(y.sum()), int((~y).sum()))
    Xt, yt = separable(400, 1)
    for kind in classifier.MODELS:
        p = classifier.train(decisions, kind).predict_proba(Xt)[:, 1]
        assert ((p >= 0.5) == yt).mean() > 0.9, kind
    # the rule, not the labels' base rate: flipping the labels flips the predictions
    flipped = Decisions().add("a.tif:1", decisions.centers, X, ~y)
    p = classifier.train(flipped).predict_proba(Xt)[:, 1]
    assert ((p >= 0.5) == ~yt).mean() > 0.9


def test_features_of_a_cnmf_result(result):
    X = classifier.roi_features(result)
    assert X.shape == (result.n_components, len(FEATURES)) and np.isfinite(X).all()
    column = dict(zip(FEATURES, X.T))
    np.testing.assert_allclose(column["r_value"], result.metrics["r_value"], rtol=1e-6)
    np.testing.assert_allclose(10 ** column["log_snr"], np.maximum(result.metrics["snr"], 1e-2), rtol=1e-5)
    assert np.median(column["npix_norm"]) == pytest.approx(1.0, abs=0.2)
    assert (column["solidity"] > 0).all() and (column["solidity"] <= 1).all()
    # a copy of an ROI overlaps it with the same activity: its neighbour correlation is 1
    from engine.calcium.pipeline import _append

    copy = _append(result, result.A[:, 0], result.F[0], result.Fneu[0], result.centers[0], float(result.metrics["r_value"][0]))
    Xc = classifier.roi_features(copy)
    assert Xc[-1, FEATURES.index("neighbour_corr")] > 0.95 and Xc[0, FEATURES.index("neighbour_corr")] > 0.95


def test_threshold_probability_agrees_with_the_metric_thresholds(result):
    p = classifier.threshold_probability(result)
    np.testing.assert_array_equal(p >= 0.5, result.accepted)


def test_too_few_decisions_fall_back_to_the_thresholds_and_say_so(result):
    X = classifier.roi_features(result)
    n = result.n_components
    few = Decisions().add("m.tif:1", result.centers, X, np.arange(n) < MIN_PER_CLASS)  # all accepts but a few: rejects short
    if min(few.counts()) >= MIN_PER_CLASS:
        pytest.skip("the movie has too many components for this check")
    scores = classifier.score(result, few, X)
    assert not scores.from_classifier
    assert "needs" in scores.message and "thresholds" in scores.message
    np.testing.assert_allclose(scores.probability, classifier.threshold_probability(result))
    rescored = classifier.rescore(result, few)
    np.testing.assert_array_equal(rescored.accepted, result.accepted)
    assert "p_cell" not in rescored.metrics and "thresholds" in rescored.info["classifier"]


def test_enough_decisions_rescore_a_new_result(result):
    X = classifier.roi_features(result)
    # taught that only the strongest half of the ROIs are cells (a stricter rule than the thresholds)
    snr = result.metrics["snr"]
    Xs, ys = separable(40, 3)
    teach = Decisions().add("other.tif:9", np.c_[np.arange(40), np.zeros(40)] * 10, Xs, ys)
    rescored = classifier.rescore(result, teach)
    assert "p_cell" in rescored.metrics and "learnt from" in rescored.info["classifier"]
    np.testing.assert_array_equal(rescored.accepted, rescored.metrics["p_cell"] >= 0.5)
    assert rescored.accepted.shape == (result.n_components,) and len(snr) == len(X)


def test_store_persists_and_reloads_identically(tmp_path):
    X, y = separable(30, 4)
    d = Decisions().add("a.tif:10", np.c_[np.arange(30), np.arange(30)] * 5.0, X, y)
    d = d.with_context("b.tif:3", [[5.0, 7.0], [50.0, 70.0]], X[:2], [False, True])
    assert d.ready and len(d) == 30
    path = tmp_path / "store" / classifier.STORE_NAME
    d.save(path)
    with np.load(path, allow_pickle=False) as z:  # a plain .npz: no pickles
        assert list(z["feature_names"]) == list(FEATURES) and int(z["format_version"]) == classifier.FORMAT_VERSION
    back, notice = classifier.load_store(path)
    assert notice == ""
    for name in ("features", "labels", "movies", "centers", "by_user"):
        np.testing.assert_array_equal(getattr(back, name), getattr(d, name))
    np.testing.assert_allclose(classifier.train(back).predict_proba(X), classifier.train(d).predict_proba(X), atol=1e-12)
    empty, notice = classifier.load_store(tmp_path / "none.npz")
    assert len(empty) == 0 and notice == ""


def test_default_store_is_in_the_user_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROWB_DATA_DIR", str(tmp_path / "data"))
    assert classifier.default_store_path() == tmp_path / "data" / "classifiers" / classifier.STORE_NAME


def test_decisions_accumulate_across_movies():
    X, _ = separable(3, 5)
    centers = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    d = Decisions().add("a.tif:1", centers, X, [True, False, True])
    d = d.add("b.tif:2", centers, X, [False, False, True])  # same places, another movie: kept beside
    assert len(d) == 6 and d.counts() == (3, 3)
    d = d.add("a.tif:1", centers[1] + 0.5, X[1], True)  # the same ROI of movie a again: replaces
    assert len(d) == 6 and d.counts() == (4, 2)
    np.testing.assert_array_equal(d.decided("a.tif:1", np.array([[10.0, 11.0], [50.0, 50.0]])), [True, False])
    assert not d.decided("c.tif:3", centers).any()
    d = d.without("b.tif:2", centers[:2])
    assert len(d) == 4
    many = Decisions()
    for m in range(2):
        Xm, ym = separable(20, 10 + m)
        many = many.add(f"m{m}.tif:1", np.c_[np.arange(20), np.zeros(20)] * 10, Xm, ym)
    assert many.ready and "2 movies" in many.status()
    merged = many.merged(d)
    assert len(merged) == len(many) + len(d)
    assert len(merged.merged(d)) == len(merged)  # nothing twice


def test_context_rows_are_the_thresholds_verdicts_on_the_undecided_rois():
    X, _ = separable(6, 8)
    centers = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0], [40.0, 40.0], [50.0, 50.0], [60.0, 60.0]])
    d = Decisions().add("a:1", centers[:1], X[:1], True)
    d = d.with_context("a:1", centers, X, [False, True, False, True, False, True])
    assert len(d) == 1 and len(d.labels) == 6  # context is not counted as decisions
    assert d.labels[~d.by_user].tolist() == [1, 0, 1, 0, 1]
    np.testing.assert_array_equal(d.decided("a:1", centers), [True, False, False, False, False, False])
    d = d.add("a:1", centers[1], X[1], False)  # a decision replaces the context row of its ROI
    assert len(d) == 2 and len(d.labels) == 6
    d = d.with_context("a:1", centers[:3], X[:3], [True, True, True])  # a refresh replaces the movie's context
    assert len(d.labels) == 3 and d.labels[~d.by_user].tolist() == [1]
    # the model weighs a decision more than a context row
    weights = d.weights()
    assert (weights[d.by_user] == classifier.USER_WEIGHT).all() and (weights[~d.by_user] == 1).all()
    # enough decisions of one kind become ready with context of the other kind
    Xs, _ = separable(20, 9)
    many = Decisions().add("b:1", np.c_[np.arange(5), np.zeros(5)] * 10, Xs[:5], True)
    assert not many.ready and "thresholds decide" in many.status()
    many = many.with_context("b:1", np.c_[np.arange(20), np.ones(20)] * 10, Xs, np.arange(20) < 10)
    assert many.ready and "other ROIs" in many.status()


def test_damaged_store_is_set_aside_and_reported(tmp_path):
    path = tmp_path / classifier.STORE_NAME
    path.write_bytes(b"PK\x03\x04 not really a zip")
    decisions, notice = classifier.load_store(path)
    assert len(decisions) == 0
    assert "damaged" in notice and "classifier decisions" in notice
    assert not path.exists()
    kept = list(tmp_path.glob(f"{classifier.STORE_NAME}.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"PK\x03\x04 not really a zip"
    # an .npz that is not ours is damaged for the store too
    np.savez(path, features=np.zeros((2, 2)))
    assert classifier.load_store(path)[1] and len(list(tmp_path.glob("*.damaged-*"))) == 2


def test_a_picked_file_that_cannot_be_used_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        classifier.import_decisions(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_text("hello")
    with pytest.raises(InputError, match="not a usable ROI classifier file"):
        classifier.import_decisions(tmp_path / "bad.npz")
    X, y = separable(4, 6)
    Decisions().add("a:1", np.zeros((4, 2)) + np.arange(4)[:, None] * 9, X, y).save(tmp_path / "good.npz")
    z = dict(np.load(tmp_path / "good.npz"))
    np.savez(tmp_path / "newer.npz", **{**z, "format_version": np.int64(classifier.FORMAT_VERSION + 1)})
    with pytest.raises(InputError, match="newer"):
        classifier.import_decisions(tmp_path / "newer.npz")
    assert len(classifier.import_decisions(tmp_path / "good.npz")) == 4


def test_next_uncertain_skips_decided_rois_and_walks_on():
    p = np.array([0.9, 0.45, 0.1, 0.6, 0.52])
    decided = np.array([False, False, False, False, True])  # 0.52 is the least sure but decided
    assert classifier.next_uncertain(p, decided) == 1
    assert classifier.next_uncertain(p, decided, current=1) == 3  # pressed again: the next one
    assert classifier.next_uncertain(p, decided, current=2) == 1  # wraps round
    assert classifier.next_uncertain(p, np.ones(5, bool)) is None


def test_cli_cnmf_with_a_classifier(tmp_path, capsys, monkeypatch):
    from engine.calcium.cli import register
    from engine.cli import main

    regs = [register]
    assert main(["simulate-calcium", "-o", str(tmp_path / "sim"), "--size", "48", "--frames", "300", "--cells", "4", "--seed", "1"], regs) == 0
    X, y = separable(30, 7)
    Decisions().add("x.tif:1", np.c_[np.arange(30), np.zeros(30)] * 10, X, y).save(tmp_path / "mine.npz")
    capsys.readouterr()
    assert main(["cnmf", str(tmp_path / "sim" / "movie.tif"), "-o", str(tmp_path / "out"), "--classifier", str(tmp_path / "mine.npz")], regs) == 0
    assert "Classifier: learnt from" in capsys.readouterr().err
    iscell = np.load(tmp_path / "out" / "iscell.npy")
    np.testing.assert_array_equal(iscell[:, 0] == 1, iscell[:, 1] >= 0.5)
    # without FILE: the user's own store, which says it has too few decisions and lets the thresholds decide
    monkeypatch.setenv("NEUROWB_DATA_DIR", str(tmp_path / "data"))
    Decisions().add("x.tif:1", [[5.0, 5.0]], X[:1], True).save(classifier.default_store_path())
    assert main(["cnmf", str(tmp_path / "sim" / "movie.tif"), "-o", str(tmp_path / "own"), "--classifier"], regs) == 0
    assert "thresholds decide" in capsys.readouterr().err
    traces = np.load(tmp_path / "own" / "traces.npz")
    np.testing.assert_array_equal(np.load(tmp_path / "own" / "iscell.npy")[:, 0] == 1, traces["accepted"])
    # a file that cannot be used ends the command before the work, exit 2, one line
    (tmp_path / "bad.npz").write_text("x")
    assert main(["cnmf", str(tmp_path / "sim" / "movie.tif"), "-o", str(tmp_path / "out2"), "--classifier", str(tmp_path / "bad.npz")], regs) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a usable ROI classifier file" in err[0]
    assert not (tmp_path / "out2").exists()
