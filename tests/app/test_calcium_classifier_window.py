"""The ROI classifier in the Calcium workspace: P(cell) in the metrics table, accept / reject teach it
(saved at once, re-trained in the background), N walks to the undecided ROI it is least sure of."""

import numpy as np
import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QMessageBox

from engine.calcium import classifier
from engine.calcium.classifier import FEATURES, Decisions
from engine.calcium.synth import write_recording

from gui_helpers import open_in, wait_for_job


@pytest.fixture
def movie(tmp_path):
    path, _truth = write_recording(tmp_path / "rec", n_frames=400, height=64, width=64, n_cells=8, seed=1)
    return path


def taught_elsewhere(n: int = 40) -> Decisions:
    """Decisions from another movie: cells are the ROIs whose spatial r is above 0.6."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, len(FEATURES)))
    X[:, FEATURES.index("r_value")] = rng.uniform(0.0, 1.0, n)
    return Decisions().add("other.tif:123", np.c_[np.arange(n), np.zeros(n)] * 10, X, X[:, FEATURES.index("r_value")] > 0.6)


def scored(qtbot, ws):
    qtbot.waitUntil(lambda: ws.score_job is not None and not ws.score_job.is_running and not ws._score_again
                    and ws._scored_A is ws.curation.result.A, timeout=60000)


def run_cnmf(qtbot, ws):
    job = ws.run_cnmf()
    wait_for_job(qtbot, job, timeout=120000)
    assert job.error is None, job.error and job.error.details
    scored(qtbot, ws)


def table_p(ws) -> dict[int, float]:
    column = [ws.table.horizontalHeaderItem(c).text() for c in range(ws.table.columnCount())].index("P(cell)")
    return {ws._roi_at_row(row): ws.table.item(row, column).value for row in range(ws.table.rowCount())}


def test_decisions_retrain_the_classifier_and_n_walks_to_the_least_sure_roi(window, qtbot, movie, tmp_path):
    taught_elsewhere().save(classifier.default_store_path())
    ws = open_in(window, qtbot, movie)
    run_cnmf(qtbot, ws)
    r = ws.curation.result
    assert ws.scores.from_classifier and "learnt from" in ws.classifier_label.text()
    assert "by the classifier" in ws.stage_label.text()  # the new result was re-scored as it arrived
    before = table_p(ws)
    np.testing.assert_allclose([before[k] for k in range(r.n_components)], ws.scores.probability)

    # N: the undecided ROI nearest P 0.5 is selected and centred in the view
    qtbot.keyClick(ws, Qt.Key.Key_N)
    p = ws.scores.probability
    first = int(np.argmin(np.abs(p - 0.5)))
    assert ws.selected == [first]
    (x0, x1), (y0, y1) = ws.fov.view.viewbox.viewRange()
    assert (x0 + x1) / 2 == pytest.approx(r.centers[first][1] + 0.5, abs=0.5)
    assert (y0 + y1) / 2 == pytest.approx(r.centers[first][0] + 0.5, abs=0.5)
    assert min(x1 - x0, y1 - y0) <= 8 * 10 + 1  # zoomed in on the cell and its neighbours
    # N again without deciding: the next most uncertain one
    qtbot.keyClick(ws, Qt.Key.Key_N)
    second = classifier.next_uncertain(p, np.zeros(len(p), bool), first)
    assert ws.selected == [second] != [first]

    # reject it with the button: saved in the store at once, the classifier re-trained, P(cell) changes
    qtbot.mouseClick(ws.reject_button, Qt.MouseButton.LeftButton)
    ws.flush_store()  # saved by a background thread
    store, _ = classifier.load_store()
    here = classifier.movie_key(movie)
    assert len(store) == 41 and store.counts() == (taught_elsewhere().counts()[0], taught_elsewhere().counts()[1] + 1)
    assert store.decided(here, r.centers).tolist() == [k == second for k in range(r.n_components)]
    # the movie's other ROIs are kept as context, labelled by the metric thresholds
    context = (store.movies == here) & ~store.by_user
    assert context.sum() == r.n_components - 1
    assert sorted(store.labels[context].tolist()) == sorted(np.delete(classifier.threshold_probability(r) >= 0.5, second).tolist())
    scored(qtbot, ws)
    after = table_p(ws)
    assert max(abs(after[k] - before[k]) for k in after) > 1e-4
    np.testing.assert_allclose([after[k] for k in range(r.n_components)], ws.scores.probability)

    # N skips the decided ROI: the least sure of the others under the re-trained classifier
    ws.select([])
    qtbot.keyClick(ws, Qt.Key.Key_N)
    p = ws.scores.probability
    decided = np.arange(len(p)) == second
    expected = classifier.next_uncertain(p, decided)
    assert ws.selected == [expected] and expected != second
    # accepting an ROI that the thresholds accepted already is a decision for the classifier too
    qtbot.keyClick(ws, Qt.Key.Key_A)
    ws.flush_store()
    assert len(classifier.load_store()[0]) == 42
    scored(qtbot, ws)

    # undo of the reject takes it out of the classifier's decisions again
    ws.undo()
    ws.flush_store()
    store, _ = classifier.load_store()
    assert len(store) == 41 and not store.decided(classifier.movie_key(movie), r.centers[[second]]).any()
    scored(qtbot, ws)

    # save to a file of one's choice, and load it back into a fresh store: the same decisions
    saved = ws.save_classifier(tmp_path / "mine")
    assert saved == tmp_path / "mine.npz" and len(classifier.import_decisions(saved)) == 41
    classifier.default_store_path().unlink()
    ws.decisions = None
    ws.load_classifier(saved)
    ws.flush_store()
    assert len(classifier.load_store()[0]) == 41


def test_fallback_to_the_thresholds_and_a_damaged_store(window, qtbot, movie):
    store = classifier.default_store_path()
    store.parent.mkdir(parents=True)
    store.write_bytes(b"not an npz")
    ws = open_in(window, qtbot, movie)
    boxes = [w for w in window.findChildren(QMessageBox) if w.isVisible()]
    assert boxes and "could not be read" in boxes[-1].text()
    for box in boxes:
        box.close()
    window.activateWindow()  # keys go to the active window again
    qtbot.waitActive(window)
    assert list(store.parent.glob(classifier.STORE_NAME + ".damaged-*"))
    run_cnmf(qtbot, ws)
    r = ws.curation.result
    assert not ws.scores.from_classifier and "needs" in ws.classifier_label.text()
    assert "by the metrics" in ws.stage_label.text()
    p = classifier.threshold_probability(r)
    np.testing.assert_allclose([table_p(ws)[k] for k in range(r.n_components)], p)
    qtbot.keyClick(ws, Qt.Key.Key_N)
    assert ws.selected == [int(np.argmin(np.abs(p - 0.5)))]
    qtbot.keyClick(ws, Qt.Key.Key_R)
    ws.flush_store()
    assert classifier.load_store()[0].counts() == (0, 1)
