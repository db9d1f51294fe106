"""The whole morphology loop in the GUI: open → HKS → click-label → undo → train → posterior → reopen."""

import threading

import numpy as np
import pytest
from PyQt6.QtCore import QPoint, Qt

from app.jobs import JobState
from app.screenshots import is_blank, save_screenshot
from engine.mesh import spines
from engine.mesh.labels import UNLABELLED
from engine.mesh.synth import write_demo_dendrite

from gui_helpers import open_in, wait_for_job


@pytest.fixture
def dendrite(tmp_path):
    return write_demo_dendrite(tmp_path / "dendrite.ply", n_spines=12, length=10.0)


def front_vertex_near_center(view):
    """The vertex closest to the camera among those drawn near the canvas center (independent of picking)."""
    width, height = view.canvas.size
    transform = view.view.scene.transform
    homogeneous = np.c_[view.vertices, np.ones(len(view.vertices))]
    mapped = transform.map(homogeneous)
    xy = mapped[:, :2] / mapped[:, 3:4]
    depth = mapped[:, 2] / mapped[:, 3]
    near = np.flatnonzero(np.hypot(xy[:, 0] - width / 2, xy[:, 1] - height / 2) < 4)
    assert len(near), "no vertex drawn at the canvas center"
    return int(near[np.argmin(depth[near])]), xy


def click_for_job(qtbot, window, button):
    """Click a button that starts a job, and return that job."""
    with qtbot.waitSignal(window.jobs.job_added, timeout=5000) as blocker:
        button.click()
    return blocker.args[0]


def test_label_train_and_restore_loop(window, qtbot, dendrite, tmp_path):
    ws = open_in(window, qtbot, dendrite)
    assert ws.key == "morphology" and ws.entry is not None

    # HKS in a job, then color by it and move the timescale slider
    job = ws.compute_hks()
    wait_for_job(qtbot, job, timeout=120000)
    assert job.state is JobState.FINISHED, job.error and job.error.details
    assert ws.entry.hks.hks.shape == (ws.entry.mesh.n_vertices, len(ws.entry.hks.timescales))
    assert ws.color_by.currentText() == "HKS" and ws.colorbar.isVisible()
    before = ws.view.mesh.mesh_data.get_vertex_colors().copy()
    ws.timescale.setValue(0)
    assert "t = " in ws.timescale_label.text()
    assert not np.allclose(before, ws.view.mesh.mesh_data.get_vertex_colors())

    # a real click on the canvas with the Spine brush labels the vertex under the cursor and its neighbours
    qtbot.keyClick(ws.view.canvas.native, Qt.Key.Key_2)
    assert ws.tool_code == 1 and ws.view.paint_mode
    ws.view.canvas.native.setFocus()
    qtbot.wait(200)
    target, xy = front_vertex_near_center(ws.view)
    x, y = xy[target]
    qtbot.mouseClick(ws.view.canvas.native, Qt.MouseButton.LeftButton, pos=QPoint(int(round(x)), int(round(y))))
    labels = ws.entry.editor.labels
    assert labels[target] == 1
    painted = np.flatnonzero(labels == 1)
    assert len(painted) > 1  # the brush reached the neighbours
    assert "spine" in ws.counts.text()
    saved = ws.entry.editor.path
    np.testing.assert_array_equal(np.load(saved), labels)  # autosaved after the stroke
    qtbot.keyClick(ws.view.canvas.native, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert (ws.entry.editor.labels == UNLABELLED).all()
    ws.redo()
    assert (ws.entry.editor.labels[painted] == 1).all()

    # train from the file's labels (imported as hand labels), posterior painted on the mesh
    ws.import_file_labels()
    job = ws.train()
    wait_for_job(qtbot, job, timeout=120000)
    assert job.state is JobState.FINISHED, job.error and job.error.details
    assert ws.color_by.currentText() == "P(spine)" and ws.entry.proba is not None
    colors = ws.view.mesh.mesh_data.get_vertex_colors()
    p_spine = ws._spine_probability(ws.entry)
    truth = np.load(dendrite.with_name("dendrite_spine_labels.npy"))
    assert p_spine[truth == 1].mean() > 0.8 and p_spine[truth == 0].mean() < 0.2
    assert colors[truth == 1, 0].mean() > colors[truth == 0, 0].mean()  # spines red, shaft blue
    qtbot.wait(200)
    assert not is_blank(save_screenshot(ws, tmp_path / "posterior.png"))

    # uncertain regions: erase some labels, retrain, N moves the camera
    ws.entry.editor.assign(np.arange(ws.entry.mesh.n_vertices), UNLABELLED)
    ws.paint_at(int(np.flatnonzero(truth == 1)[0]), 1, radius=0.5)
    ws.paint_at(int(np.flatnonzero(truth == 0)[0]), 0, radius=2.0)
    wait_for_job(qtbot, ws.train(), timeout=120000)
    center_before = tuple(ws.view.view.camera.center)
    qtbot.keyClick(ws, Qt.Key.Key_N)
    assert ws.entry.regions and tuple(ws.view.view.camera.center) != center_before

    # reopening the mesh restores the hand labels
    expected = ws.entry.editor.labels.copy()
    ws2 = open_in(window, qtbot, dendrite)
    np.testing.assert_array_equal(ws2.entry.editor.labels, expected)


def test_painting_during_training_leaves_the_running_job_alone(window, qtbot, dendrite, monkeypatch):
    """A stroke while Train runs must not reach the job (it trains on the labels of the moment T was
    pressed), and Train stays disabled, for the button and the key, until the job ends."""
    ws = open_in(window, qtbot, dendrite)
    wait_for_job(qtbot, ws.compute_hks(), timeout=120000)
    truth = np.load(dendrite.with_name("dendrite_spine_labels.npy"))
    ws.paint_at(int(np.flatnonzero(truth == 1)[0]), 1, radius=0.5)
    ws.paint_at(int(np.flatnonzero(truth == 0)[0]), 0, radius=2.0)
    at_press = int((ws.entry.editor.labels >= 0).sum())

    # hold the job inside its feature step (before it builds X and y) until the stroke is done
    inside, release = threading.Event(), threading.Event()
    features = spines.vertex_features

    def held(*args, **kwargs):
        inside.set()
        release.wait(30)
        return features(*args, **kwargs)

    monkeypatch.setattr(spines, "vertex_features", held)
    started = []
    window.jobs.job_added.connect(started.append)
    qtbot.keyClick(ws, Qt.Key.Key_T)
    assert len(started) == 1 and inside.wait(10)
    job = started[0]
    ws.paint_at(int(np.flatnonzero(truth == 1)[-1]), 1, radius=1.0)  # a stroke during training
    assert int((ws.entry.editor.labels >= 0).sum()) > at_press
    assert not ws.train_button.isEnabled()
    qtbot.keyClick(ws, Qt.Key.Key_T)  # the key is refused too while the job runs
    assert len(started) == 1
    release.set()
    wait_for_job(qtbot, job, timeout=120000)
    assert job.state is JobState.FINISHED, job.error and job.error.details
    assert job.result["n_labelled"] == at_press
    assert f"Trained on {at_press:,} labelled" in ws.model_status.text()
    assert ws.train_button.isEnabled()


def test_apply_to_all_evaluate_and_model_files(window, qtbot, tmp_path, monkeypatch):
    from PyQt6.QtWidgets import QMessageBox

    from app.morphology.report import EvaluationDialog

    paths = [write_demo_dendrite(tmp_path / f"d{i}.ply", n_spines=8 + 4 * i, length=8.0, seed=i) for i in range(3)]
    for path in paths:
        ws = open_in(window, qtbot, path)
    assert ws.meshes.count() == 3 and not ws.apply_button.isEnabled()  # no model yet

    # leave-one-mesh-out on the file labels: HKS computed in the job for every mesh, report dialog
    job = click_for_job(qtbot, window, ws.evaluate_button)
    wait_for_job(qtbot, job, timeout=180000)
    assert job.state is JobState.FINISHED, job.error and job.error.details
    assert all(e.hks is not None for e in ws.entries)
    report = ws.report
    assert isinstance(report, EvaluationDialog) and report.isVisible()
    evaluation = report.evaluation
    assert evaluation.split == "leave-one-out" and len(evaluation.folds) == 3 and report.folds.rowCount() == 3
    labelled = sum(int((e.file_labels >= 0).sum()) for e in ws.entries)
    assert evaluation.confusion.sum() == labelled  # every labelled vertex tested exactly once
    spine_row = list(evaluation.class_names).index("spine")
    cell = report.confusion.item(spine_row, spine_row + 1).text()
    assert cell.startswith(f"{int(evaluation.confusion[spine_row, spine_row]):,}")
    assert evaluation.spine_f1 > 0.7, evaluation.table()  # procedural spines are easy
    qtbot.wait(200)
    assert not is_blank(save_screenshot(report, tmp_path / "report.png"))
    report.close()

    # train on the first mesh only, then apply to all: every mesh gets a posterior
    ws.meshes.setCurrentRow(0)
    ws.import_file_labels()
    wait_for_job(qtbot, ws.train(), timeout=120000)
    assert ws.entries[0].proba is not None and ws.entries[2].proba is not None  # train predicts on meshes with HKS
    for entry in ws.entries[1:]:
        entry.proba = None
    wait_for_job(qtbot, click_for_job(qtbot, window, ws.apply_button), timeout=120000)
    for entry in ws.entries:
        truth = np.load(entry.path.with_name(entry.path.stem + "_spine_labels.npy"))
        p = ws._spine_probability(entry)
        assert p[truth == 1].mean() > p[truth == 0].mean() + 0.4

    # save, reload, refuse a corrupt file with a message
    model_path = tmp_path / "model.nwbspine"
    monkeypatch.setattr("app.morphology.panel.QFileDialog.getSaveFileName", lambda *a, **k: (str(model_path), ""))
    ws.save_model_button.click()
    assert model_path.exists()
    ws.session.set_model(None)
    assert ws.use_model_file(model_path) and ws.model is not None and "Loaded model.nwbspine" in ws.model_status.text()
    bad = tmp_path / "bad.nwbspine"
    bad.write_bytes(b"not a model")
    assert not ws.use_model_file(bad)
    box = next(w for w in window.findChildren(QMessageBox) if w.isVisible())
    assert "not a readable spine model" in box.text()
    box.close()


def test_hks_color_range_controls(window, qtbot, dendrite):
    ws = open_in(window, qtbot, dendrite)
    wait_for_job(qtbot, ws.compute_hks(), timeout=120000)
    values = ws._log_hks[:, ws.timescale.value()]
    auto = (ws.colorbar.lo, ws.colorbar.hi)
    assert np.isclose(auto[0], np.percentile(values, 1), rtol=1e-4)
    ws.range_mode.setCurrentText("min–max")
    assert np.isclose(ws.colorbar.lo, values.min()) and np.isclose(ws.colorbar.hi, values.max())
    ws.range_mode.setCurrentText("manual")  # starts from the range on screen, then typed limits apply
    assert ws.range_limits.isVisibleTo(ws) and np.isclose(ws.range_max.value(), values.max(), atol=1e-3)
    ws.range_min.setValue(-20.0)
    ws.range_max.setValue(-10.0)
    assert (ws.colorbar.lo, ws.colorbar.hi) == (-20.0, -10.0)
    ws.timescale.setValue(0)  # a manual range holds across timescales
    assert (ws.colorbar.lo, ws.colorbar.hi) == (-20.0, -10.0)


def test_load_points_shows_them_coloured_by_class(window, qtbot, dendrite, tmp_path, monkeypatch):
    from PyQt6.QtWidgets import QFileDialog, QMessageBox

    from app.morphology.panel import LABEL_COLORS, UNCLASSIFIED_POINT

    ws = open_in(window, qtbot, dendrite)
    truth = np.load(dendrite.with_name("dendrite_spine_labels.npy"))
    rng = np.random.default_rng(0)
    idx = np.r_[rng.choice(np.flatnonzero(truth == 1), 7, replace=False), rng.choice(np.flatnonzero(truth == 0), 5, replace=False)]
    points = ws.entry.mesh.vertices[idx] + 1e-4
    table = tmp_path / "synapses.csv"
    table.write_text("id,x,y,z\n" + "".join(f"{i},{x},{y},{z}\n" for i, (x, y, z) in enumerate(points)))

    def load_through_button(path):
        monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), "")))
        job = click_for_job(qtbot, window, ws.load_points_button)
        return wait_for_job(qtbot, job)

    # before any model: the points are drawn, unclassified
    job = load_through_button(table)
    assert job.state is JobState.FINISHED, job.error and job.error.details
    assert ws.view.points.visible and ws.view.points_data.shape == (12, 3)
    np.testing.assert_allclose(ws.view.points_data + ws.view.center, points, atol=1e-4)
    assert np.allclose(ws.view.points_colors, UNCLASSIFIED_POINT) and "12 points" in ws.points_status.text()
    vertex = ws.entry.points["vertex"]
    np.testing.assert_allclose(ws.entry.points["distance"], np.linalg.norm(ws.entry.mesh.vertices[vertex] - points, axis=1))
    assert (ws.entry.points["distance"] < 1e-3).all() and (truth[vertex] == truth[idx]).all()

    # train: the points take the class of their nearest vertex, counted per class
    wait_for_job(qtbot, ws.compute_hks(), timeout=120000)
    ws.import_file_labels()
    wait_for_job(qtbot, ws.train(), timeout=120000)
    result = ws.point_predictions()
    np.testing.assert_array_equal(result.predicted, truth[idx])  # its own training labels
    expected = np.array([LABEL_COLORS[c] for c in truth[idx]], dtype=np.float32)
    np.testing.assert_allclose(ws.view.points_colors, expected)
    assert "shaft 5 · spine 7" in ws.points_status.text()
    qtbot.wait(200)
    assert not is_blank(save_screenshot(ws, tmp_path / "points.png"))

    # a bad table: one clear message, the shown points kept
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,z\n1,2,nan\n")
    job = load_through_button(bad)
    assert job.state is JobState.FAILED
    box = next(w for w in window.findChildren(QMessageBox) if w.isVisible())
    assert "NaN" in box.text()
    box.close()
    assert ws.view.points_data.shape == (12, 3)


def test_hand_labels_over_every_coloring_status_and_framed_region(window, qtbot, dendrite, tmp_path):
    """A correction painted while coloring by P(spine), uncertainty or HKS shows at once; training says what it
    learned; N tints the uncertain region and frames it; showing another mesh clears ring and tint; Train is in
    view at the default window size."""
    from app.morphology.panel import LABEL_COLORS, REGION_TINT
    from engine.mesh.hks import log_hks

    ws = open_in(window, qtbot, dendrite)
    scroll = ws.layout().itemAt(0).widget()
    assert window.size().width() == 1500 and window.size().height() == 920  # the default window
    top = ws.train_button.mapTo(scroll.widget(), QPoint(0, 0)).y()
    assert top + ws.train_button.height() <= scroll.viewport().height()  # Train seen without scrolling

    wait_for_job(qtbot, ws.compute_hks(), timeout=120000)
    assert ws._log_hks is ws.entry.log_hks  # the log-HKS came with the job (not computed on the GUI thread)
    np.testing.assert_allclose(ws._log_hks, log_hks(ws.entry.hks.hks), rtol=1e-6)
    truth = np.load(dendrite.with_name("dendrite_spine_labels.npy"))
    ws.paint_at(int(np.flatnonzero(truth == 1)[0]), 1, radius=0.5)
    ws.paint_at(int(np.flatnonzero(truth == 0)[0]), 0, radius=2.0)
    qtbot.mouseClick(ws.train_button, Qt.MouseButton.LeftButton)
    job = ws.session.train_job
    wait_for_job(qtbot, job, timeout=120000)
    message = window.statusBar().currentMessage()
    n = int((ws.entry.editor.labels >= 0).sum())
    assert f"Trained on {n:,} labelled vertices" in message and "spine" in message and "shaft" in message
    assert "agree with the file labels" in message  # accuracy on the vertices the model never saw
    assert message.split(" Press")[0] in ws.model_status.text()

    # a correction: spine painted on a shaft vertex the model calls shaft, while coloring by P(spine)
    assert ws.color_by.currentText() == "P(spine)"
    p = ws._spine_probability(ws.entry)
    shaft = np.flatnonzero((truth == 0) & (p < 0.3) & (ws.entry.editor.labels < 0))
    changed = ws.paint_at(int(shaft[len(shaft) // 2]), 1, radius=0.3)
    spine_color = np.array(LABEL_COLORS[1][:3])
    for mode in ("P(spine)", "Uncertainty", "HKS", "Surface"):
        ws.color_by.setCurrentText(mode)
        colors = ws.view.mesh.vertex_colors()
        np.testing.assert_allclose(colors[changed, :3], np.tile(spine_color, (len(changed), 1)), atol=1e-6, err_msg=mode)
    qtbot.mouseClick(ws.labels_on_top, Qt.MouseButton.LeftButton, pos=QPoint(8, ws.labels_on_top.height() // 2))
    assert not ws.labels_on_top.isChecked()
    assert not np.allclose(ws.view.mesh.vertex_colors()[changed, :3], spine_color)  # the coloring alone again
    qtbot.mouseClick(ws.labels_on_top, Qt.MouseButton.LeftButton, pos=QPoint(8, ws.labels_on_top.height() // 2))

    # N: the region tinted, the camera framed on it (not the whole dendrite)
    ws.color_by.setCurrentText("P(spine)")
    under = ws.view.mesh.vertex_colors().copy()
    qtbot.keyClick(ws, Qt.Key.Key_N)
    region = ws.entry.regions[0]
    extent = np.ptp(ws.entry.mesh.vertices[region.vertices], axis=0).max()
    diagonal = np.linalg.norm(np.ptp(ws.entry.mesh.vertices, axis=0))
    assert ws.view.view.camera.scale_factor == pytest.approx(max(3 * extent, 4 * ws.brush.value()))
    assert ws.view.view.camera.scale_factor < diagonal / 3
    tinted = ws.view.mesh.vertex_colors()[region.vertices, :3]
    expected = under[region.vertices, :3] * (1 - REGION_TINT[3]) + np.array(REGION_TINT[:3]) * REGION_TINT[3]
    np.testing.assert_allclose(tinted, expected, atol=1e-5)
    assert ws.view.cursor.visible

    # features of another kind, at more timescales: the HKS is dropped (it crashed on lists of other lengths)
    ws.feature_kind.setCurrentText(next(k for k in spines.FEATURE_KINDS if k.startswith("sihks")))
    assert ws.entry.hks is None and not ws.timescale.isEnabled() and ws.timescale_label.text() == "t = —"
    assert "compute the HKS again (1 mesh need other timescales)" in window.statusBar().currentMessage()
    assert not ws.train_button.isEnabled()

    # another mesh: no ring, no tint
    other = write_demo_dendrite(tmp_path / "other.ply", n_spines=5, length=6.0)
    open_in(window, qtbot, other)
    assert ws.entry.path == other and not ws.view.cursor.visible and ws.view.overlay is None


def test_mesh_units_set_in_the_window_and_remembered(window, qtbot, shared_data):
    """The hemibrain mesh is in 8 nm voxels: choosing so scales it ×8 (as the CLI's --scale 8), and the choice
    is remembered for the file."""
    path = shared_data / "meshes" / "hemibrain_DA1_1734350788.ply"
    ws = open_in(window, qtbot, path)
    raw = ws.entry.mesh.vertices.copy()
    assert ws.entry.scale == 1.0 and ws.units.currentText() == "Guess from extent"
    with qtbot.waitSignal(window.jobs.job_added, timeout=5000) as blocker:
        ws.units.setCurrentText("8 nm voxels")
        ws.units.activated.emit(ws.units.currentIndex())  # as a person's pick does
    wait_for_job(qtbot, blocker.args[0], timeout=60000)
    assert ws.entry.scale == 8.0 and ws.entry.mesh.units == "nm"
    np.testing.assert_allclose(ws.entry.mesh.vertices, raw * 8)
    assert ws.info.values["units"].text() == "nm (×8)"
    assert ws.entry.spec.timescales == spines.FeatureSpec.default("nm").timescales

    # a custom factor, then reopening the file: the choice stays with it
    ws.units.setCurrentText("Scale ×")
    ws.units.activated.emit(ws.units.currentIndex())
    assert ws.scale.isVisible()
    ws.scale.setValue(2.5)
    with qtbot.waitSignal(window.jobs.job_added, timeout=5000) as blocker:
        ws.scale.editingFinished.emit()
    wait_for_job(qtbot, blocker.args[0], timeout=60000)
    np.testing.assert_allclose(ws.entry.mesh.vertices, raw * 2.5)
    ws = open_in(window, qtbot, path)
    assert ws.entry.scale == 2.5 and ws.units.currentText() == "Scale ×" and ws.scale.value() == 2.5


def test_the_3d_view_keeps_the_window_raster_and_draws_after_switching_workspaces(window, qtbot, dendrite):
    """The canvas is a native child: the rest of the window is not composited through OpenGL (a QOpenGLWidget
    otherwise turns every repaint of the whole window into an OpenGL frame), and the mesh still reaches the
    screen after the workspace was hidden and shown again (read back from the X server, not grabbed)."""
    from PyQt6.QtGui import QSurface

    ws = open_in(window, qtbot, dendrite)

    def on_screen():
        native = ws.view.canvas.native
        corner = native.mapToGlobal(QPoint(0, 0))
        return native.screen().grabWindow(0, corner.x(), corner.y(), native.width(), native.height()).toImage()

    qtbot.waitUntil(lambda: not is_blank(on_screen()), timeout=10000)
    for key in ("ephys", "calcium", "morphology", "factors", "morphology"):
        window.show_workspace(key)
        qtbot.wait(100)
        assert window.windowHandle().surfaceType() == QSurface.SurfaceType.RasterSurface, key
    qtbot.waitUntil(lambda: not is_blank(on_screen()), timeout=10000)
    assert not is_blank(save_screenshot(window, dendrite.parent / "window.png"))
