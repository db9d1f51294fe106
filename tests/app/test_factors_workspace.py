"""The factor browser in the GUI: open a small mosaic (its label file gives 3 regions) → draw a
polygon region by clicking → Train → Extract → NMF → click a factor → change λ and p → hover →
cluster → export → reopen and find everything restored; screenshots not blank."""

import json
import time

import numpy as np
import pytest
from PyQt6.QtCore import QPoint, Qt

from app.jobs import JobState
from app.screenshots import is_blank, save_screenshot
from engine.factors import workflow
from engine.factors.synth import write_demo_mosaic

from gui_helpers import open_in, wait_for_job


@pytest.fixture
def mosaic(tmp_path):
    return write_demo_mosaic(tmp_path / "mosaic.png", size=256, n_cells=9, seed=1)


def click(qtbot, ws, row, col, double=False):
    target, pos = ws.view.click_target(), ws.view.scene_position(row, col)
    qtbot.mouseClick(target, Qt.MouseButton.LeftButton, pos=pos)
    if double:  # what Qt delivers for the second press of a double click, then its release
        qtbot.mouseDClick(target, Qt.MouseButton.LeftButton, pos=pos)
        qtbot.mouseRelease(target, Qt.MouseButton.LeftButton, pos=pos)


def run_button(qtbot, ws, button, timeout=120000):
    assert button.isEnabled()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    job = ws.job
    assert ws.cancel_button.isEnabled()
    wait_for_job(qtbot, job, timeout=timeout)
    assert job.state is JobState.FINISHED, job.error and job.error.details
    return job


def draw_square(qtbot, ws, top, left, bottom, right, close_by_double_click=False):
    corners = [(top, left), (top, right), (bottom, right), (bottom, left)]
    for row, col in corners[:-1]:
        click(qtbot, ws, row, col)
    if close_by_double_click:
        click(qtbot, ws, *corners[-1], double=True)
    else:
        click(qtbot, ws, *corners[-1])
        qtbot.keyClick(ws.canvas, Qt.Key.Key_Return)


def move_onto(qtbot, target, near, spot) -> None:
    """Move the pointer to ``near``, then onto ``spot``, pausing after each move as a hand does: moves sent within one
    event-loop turn can be delivered out of order when the window holds a native child (the 3D view's canvas), so the
    last one read was the first sent."""
    for position in (near, spot):
        qtbot.mouseMove(target, position)
        qtbot.wait(30)


def test_draw_train_browse_select_cluster_export_restore(window, qtbot, mosaic, tmp_path):
    ws = open_in(window, qtbot, mosaic)
    assert [r.name for r in ws.regions.regions] == ["stripes", "blobs", "fine noise"]
    assert ws.patch_size.value() == 64  # a small image gets small patches
    overlay_before = ws.view.overlay.image.copy()

    # a new region drawn by clicking four vertices and Enter (P = polygon tool)
    qtbot.mouseClick(ws.add_region_button, Qt.MouseButton.LeftButton)
    drawn = ws.current_region()
    assert drawn == 4
    qtbot.keyClick(ws, Qt.Key.Key_P)
    assert ws.canvas.mode == "polygon"
    draw_square(qtbot, ws, 20, 30, 60, 90)
    assert ws.labels[40, 60] == drawn and ws.labels[20, 30] == drawn and ws.labels[19, 60] != drawn
    assert int((ws.labels == drawn).sum()) == 41 * 61
    assert not np.array_equal(ws.view.overlay.image, overlay_before)
    saved = json.loads((ws.folder / "rois.json").read_text())
    assert [s["kind"] for s in saved["regions"][-1]["shapes"]] == ["polygon"]
    ws.rename_region("drawn square")
    assert "drawn square" in ws.region_list.currentItem().text()
    # Ctrl+Z takes back the renaming, then the polygon: the pipeline below learns the three textures only
    qtbot.keyClick(ws, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert ws.regions.region(drawn).name != "drawn square" and (ws.labels == drawn).any()
    qtbot.keyClick(ws, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not (ws.labels == drawn).any()
    ws.rename_region("drawn square")

    # the pipeline through its buttons, each a background job
    ws.epochs.setValue(1)
    ws.patches.setValue(96)
    ws.stride.setValue(8)
    ws.k.setValue(5)
    assert "32 × 32 positions" in ws.estimate.text()
    assert not ws.extract_button.isEnabled()
    run_button(qtbot, ws, ws.train_button)
    assert ws.model is not None and "validation accuracy" in ws.stage_label.text()
    run_button(qtbot, ws, ws.extract_button)
    assert ws.latents.values.shape == (32, 32, 64)
    layers = []  # what the NMF result draws as the layer over the image
    set_layer = ws.canvas.set_layer
    ws.canvas.set_layer = lambda rgba, *args, **kw: (layers.append(rgba is not None), set_layer(rgba, *args, **kw))[1]
    run_button(qtbot, ws, ws.nmf_button)
    del ws.canvas.set_layer
    f = ws.factors
    assert f.codes.shape == (32, 32, 5) and ws.factor_list.count() == 5
    assert ws.view.heatmap.image is not None  # the best factor is shown at once
    assert layers == [True]  # once: the heatmap of the factor chosen first
    sel = ws.selection
    assert ws.current_factor == sel.pairs[0][0]
    assert sel.scores.shape == (5, 3) and len(sel.pairs) == 3 and ws.p.value() == 3
    assert len(ws.scores.marks.data) == 3

    # clicking a factor in the list overlays its heatmap
    shown = ws.view.heatmap.image.copy()
    other = next(i for i in range(5) if i != ws.current_factor and np.ptp(f.codes[..., i]) > 0)
    item = ws.factor_list.item(other)
    qtbot.mouseClick(ws.factor_list.viewport(), Qt.MouseButton.LeftButton, pos=ws.factor_list.visualItemRect(item).center())
    assert ws.current_factor == other and ws.overlay_kind.currentText() == "Factor heatmap"
    assert not np.array_equal(ws.view.heatmap.image, shown)
    assert ws.view.heatmap.image.shape == (32, 32, 4)
    visible = (ws.view.heatmap.image[..., 3] > 0).sum()
    ws.threshold.setValue(60)  # codes at or below 60 % of the display scale become transparent
    alpha = ws.view.heatmap.image[..., 3]
    assert not alpha[f.heatmap(other) <= 0.6].any() and (alpha > 0).sum() <= visible

    # λ and p rescore at once (no job): the matrix shown is coverage − λ·outside
    jobs_before = len(window.jobs.jobs) if hasattr(window.jobs, "jobs") else None
    ws.lam.setValue(3.0)
    np.testing.assert_allclose(ws.scores.image.image, sel.coverage - 3.0 * sel.outside)
    assert ws.selection.lam == 3.0
    ws.p.setValue(1)
    assert len(ws.selection.pairs) == 1 and len(ws.scores.marks.data) == 1
    assert ws.selection.pairs[0][0] == int(np.unravel_index(np.argmax(ws.selection.scores), sel.scores.shape)[0])
    if jobs_before is not None:
        assert len(window.jobs.jobs) == jobs_before
    ws.p.setValue(3)

    # hovering shows every factor's value there and the region
    def hovered():  # moving onto the spot again until Qt delivers a move event there
        move_onto(qtbot, ws.view.click_target(), ws.view.scene_position(90, 140), ws.view.scene_position(100, 150))
        return "row 100, col 150" in ws.bars.plotItem.titleLabel.text

    qtbot.waitUntil(hovered, timeout=5000)
    region = ws._region_name(int(ws.labels[100, 150]))
    assert region in ws.bars.plotItem.titleLabel.text
    np.testing.assert_allclose(ws.bars.bars.opts["height"], f.values_at(100, 150) / f.scales, rtol=1e-6)

    # RGB composite of three factors
    ws.rgb[2].setValue(4)
    assert ws.overlay_kind.currentText() == "RGB composite"
    np.testing.assert_array_equal(ws.view.heatmap.image[..., 2],
                                  np.clip(f.heatmap(4) * 255, 0, 255).astype(np.uint8))

    # clusters inside the first region, with BIC and a legend
    ws.cluster_region.setCurrentIndex(0)
    ws.n_clusters.setValue(2)
    run_button(qtbot, ws, ws.cluster_button)
    assert ws.clusters.n_clusters == 2 and "BIC" in ws.cluster_label.text()
    assert ws.overlay_kind.currentText() == "Clusters" and "cluster 1" in ws.legend.text()
    shot = save_screenshot(window, tmp_path / "factors.png")
    assert not is_blank(shot)

    # a polygon closed by double-click adds a region: the score matrix gains a column at once
    ws._select_region(drawn)
    qtbot.keyClick(ws, Qt.Key.Key_P)
    draw_square(qtbot, ws, 150, 150, 230, 230, close_by_double_click=True)
    assert (ws.labels == drawn).sum() == 81 * 81
    assert ws.selection.scores.shape == (5, 4) and drawn in ws.selection.roi_labels

    # export the view
    png = ws.export_view(tmp_path / "view.png")
    svg = ws.export_view(tmp_path / "view.svg")
    assert png.stat().st_size > 1000 and "<svg" in svg.read_text()[:2000]

    # reopen: regions, model, latents, factors and clusters come back from the project folder
    codes = f.codes.copy()
    ws2 = open_in(window, qtbot, mosaic)
    assert ws2.factors is not None and np.allclose(ws2.factors.codes, codes)
    assert ws2.model is not None and ws2.latents is not None and ws2.clusters is not None
    assert ws2.regions.names[drawn] == "drawn square" and (ws2.labels == drawn).sum() == 81 * 81
    assert "Restored" in ws2.stage_label.text()
    assert workflow.project_folder(mosaic) == ws2.folder == mosaic.parent / "mosaic_factors"


def test_cancel_training_keeps_the_window_usable(window, qtbot, mosaic):
    ws = open_in(window, qtbot, mosaic)
    ws.epochs.setValue(200)
    qtbot.mouseClick(ws.train_button, Qt.MouseButton.LeftButton)
    job = ws.job
    qtbot.waitUntil(lambda: job.fraction > 0, timeout=30000)
    qtbot.mouseClick(ws.cancel_button, Qt.MouseButton.LeftButton)
    wait_for_job(qtbot, job, timeout=30000)
    assert job.state is JobState.CANCELLED and ws.model is None
    assert "cancelled" in ws.stage_label.text() and ws.train_button.isEnabled()


def test_brush_eraser_and_labels_from_a_file(window, qtbot, tmp_path):
    from PIL import Image
    from PyQt6.QtWidgets import QMessageBox

    from engine.factors.synth import demo_mosaic

    image, labels = demo_mosaic(size=128, n_cells=4, seed=3)
    path = tmp_path / "plain.png"
    Image.fromarray(image).save(path)  # no label file beside it
    ws = open_in(window, qtbot, path)
    assert ws.regions.regions == [] and ws.labels is None and not ws.train_button.isEnabled()

    # brush: a click paints a disc of the brush radius into a new region; a drag paints a stroke
    qtbot.keyClick(ws, Qt.Key.Key_B)
    assert ws.canvas.mode == "brush"
    ws.brush_radius.setValue(5)
    click(qtbot, ws, 30, 30)
    painted = ws.labels == 1
    assert painted[30, 30] and painted[30, 35] and not painted[30, 37] and 60 < painted.sum() < 130
    target = ws.view.click_target()
    qtbot.mousePress(target, Qt.MouseButton.LeftButton, pos=ws.view.scene_position(80, 20))
    for col in range(24, 100, 4):
        qtbot.mouseMove(target, ws.view.scene_position(80, col))
    qtbot.mouseRelease(target, Qt.MouseButton.LeftButton, pos=ws.view.scene_position(80, 100))
    assert (ws.labels[80, 25:95] == 1).all()
    # the eraser takes pixels back out of every region
    qtbot.keyClick(ws, Qt.Key.Key_E)
    click(qtbot, ws, 80, 60)
    assert ws.labels[80, 60] == 0 and ws.labels[80, 40] == 1
    shapes = json.loads((ws.folder / "rois.json").read_text())["regions"][0]["shapes"]
    assert [(s["kind"], s["erase"]) for s in shapes] == [("brush", False), ("brush", False), ("brush", True)]

    # a label file of another size is refused with a message; the right one adds its regions
    wrong = tmp_path / "wrong_labels.npy"
    np.save(wrong, np.ones((50, 50), np.uint8))
    ws.load_labels(wrong)
    boxes = [w for w in window.findChildren(QMessageBox) if w.isVisible()]
    assert boxes and "50×50" in boxes[-1].text()
    boxes[-1].close()
    good = tmp_path / "good_labels.npy"
    np.save(good, labels)
    ws.load_labels(good)
    # the drawn region moves to a free label and stays painted over the file's regions
    assert ws.regions.names == {1: "Region 1", 2: "Region 2", 3: "Region 3", 4: "Region 4"} and ws.train_button.isEnabled()
    assert ws.labels[80, 40] == 4 and ws.labels[80, 60] == 0 and ws.labels[120, 5] == labels[120, 5] > 0


def test_rotated_view_keeps_image_pixels(window, qtbot, tmp_path):
    """With "Rotate 90°" a wide image stands upright, yet clicks, polygons, brush strokes and hover
    still land on the image pixel under the mouse."""
    from PIL import Image

    from engine.factors.synth import demo_mosaic

    image, _ = demo_mosaic(size=256, n_cells=4, seed=2)
    wide = image[:120]  # 120 rows × 256 columns
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)
    ws = open_in(window, qtbot, path)
    upright = ws.canvas.scene_position(10, 250)
    box = QPoint(8, ws.rotate.height() // 2)  # on the check box's square
    qtbot.mouseClick(ws.rotate, Qt.MouseButton.LeftButton, pos=box)
    assert ws.rotate.isChecked() and ws.canvas.rotated
    # counter-clockwise: the right end of the image is on top now, its first row on the left
    right, left = ws.canvas.scene_position(60, 250), ws.canvas.scene_position(60, 5)
    assert right.y() < left.y() - 100 and abs(right.x() - left.x()) < 2
    assert ws.canvas.scene_position(110, 128).x() > ws.canvas.scene_position(5, 128).x() + 50
    assert ws.canvas.scene_position(10, 250) != upright

    # a brush click paints around the pixel clicked
    qtbot.keyClick(ws, Qt.Key.Key_B)
    ws.brush_radius.setValue(3)
    target = ws.view.click_target()
    qtbot.mouseClick(target, Qt.MouseButton.LeftButton, pos=ws.canvas.scene_position(20, 200))
    painted = np.argwhere(ws.labels == 1)
    assert ws.labels[20, 200] == 1 and painted.min(0).tolist() == [17, 197] and painted.max(0).tolist() == [23, 203]

    # a polygon clicked vertex by vertex covers the same pixels as upright
    qtbot.mouseClick(ws.add_region_button, Qt.MouseButton.LeftButton)
    qtbot.keyClick(ws, Qt.Key.Key_P)
    for row, col in ((40, 30), (40, 90), (100, 90), (100, 30)):
        qtbot.mouseClick(target, Qt.MouseButton.LeftButton, pos=ws.canvas.scene_position(row, col))
    qtbot.keyClick(ws.canvas, Qt.Key.Key_Return)
    drawn = np.argwhere(ws.labels == 2)
    assert drawn.min(0).tolist() == [40, 30] and drawn.max(0).tolist() == [100, 90] and len(drawn) == 61 * 61

    # hover names the pixel under the mouse
    def hovered():
        move_onto(qtbot, target, ws.canvas.scene_position(65, 170), ws.canvas.scene_position(70, 180))
        return "row 70, col 180" in ws.bars.plotItem.titleLabel.text

    qtbot.waitUntil(hovered, timeout=5000)
    save_screenshot(window, tmp_path / "rotated.png")

    # turned back, the same pixel is where it was
    qtbot.mouseClick(ws.rotate, Qt.MouseButton.LeftButton, pos=box)
    assert not ws.canvas.rotated
    assert ws.canvas.scene_position(10, 250) == ws.view.scene_position(10, 250)


def test_training_belongs_to_the_image_it_started_on(window, qtbot, tmp_path):
    """Opening image B while the CNN trains on A: A's model goes to A's folder, B stays B's."""
    a = write_demo_mosaic(tmp_path / "a" / "a.png", size=256, n_cells=9, seed=1)
    b = write_demo_mosaic(tmp_path / "b" / "b.png", size=256, n_cells=9, seed=2)
    ws = open_in(window, qtbot, a)
    ws.epochs.setValue(3)
    qtbot.mouseClick(ws.train_button, Qt.MouseButton.LeftButton)
    job = ws.job
    assert open_in(window, qtbot, b) is ws and job.is_running
    wait_for_job(qtbot, job, timeout=120000)
    assert job.state is JobState.FINISHED, job.error and job.error.details
    assert "a.png" in window.statusBar().currentMessage()  # where the result went
    assert ws.current_path == b and ws.model is None and ws.extract() is None  # no model of A's on B
    assert (workflow.project_folder(a) / "model.pt").is_file() and not (workflow.project_folder(b) / "model.pt").exists()
    assert open_in(window, qtbot, a).model is not None  # it is A's, found when A is opened


def _open_finished_project(window, qtbot, mosaic):
    """The mosaic with a whole pipeline run (model, latents, factors, clusters) saved, opened in the window."""
    opened = workflow.open_project_job(mosaic)
    folder = workflow.project_folder(mosaic)
    workflow.run_pipeline(opened["image"], opened["project"].regions.rasterize(), folder, patch_size=64, epochs=1,
                          patches_per_epoch=64, stride=16, k=3, cluster_roi=1, n_clusters=2, device="cpu")
    ws = open_in(window, qtbot, mosaic)
    ws.regions.save(folder)  # (the regions, as the window keeps them)
    return ws, folder


def test_train_asks_before_discarding_results_and_clears_them(window, qtbot, mosaic):
    from gui_helpers import answer_next_question
    from tests.conftest import folder_bytes

    ws, folder = _open_finished_project(window, qtbot, mosaic)
    assert ws.clusters is not None and "Clusters" in ws.legend.text()
    ws.epochs.setValue(1)
    before = folder_bytes(folder)
    asked = answer_next_question("Cancel")
    qtbot.mouseClick(ws.train_button, Qt.MouseButton.LeftButton)
    assert asked and "latents, factors, clusters" in asked[0] and "regions are kept" in asked[0]
    assert ws.job is None and folder_bytes(folder) == before and ws.clusters is not None  # nothing happened
    asked = answer_next_question("Train")
    qtbot.mouseClick(ws.train_button, Qt.MouseButton.LeftButton)
    assert asked
    wait_for_job(qtbot, ws.job, timeout=120000)
    assert ws.job.state is JobState.FINISHED
    assert ws.latents is None and ws.factors is None and ws.clusters is None and ws.legend.text() == ""
    after = folder_bytes(folder)
    assert {"latents.npy", "latents.grid.json", "factors.npz", "clusters.npz"}.isdisjoint(after)
    assert after["model.pt"] != before["model.pt"] and after["rois.json"] == before["rois.json"]


def test_a_damaged_regions_file_is_kept_aside_and_said(window, qtbot, mosaic):
    from PyQt6.QtWidgets import QMessageBox

    folder = workflow.project_folder(mosaic)
    (folder / "rois.json").write_text('{"format": "neurowb.factors_rois", "regions": [')
    ws = open_in(window, qtbot, mosaic)
    (aside,) = folder.glob("rois.json.damaged-*")
    boxes = [w for w in window.findChildren(QMessageBox) if w.isVisible()]
    assert boxes and aside.name in boxes[-1].text() and "could not be read" in boxes[-1].text()
    assert [r.name for r in ws.regions.regions] == ["stripes", "blobs", "fine noise"]  # afresh: the label file's
    qtbot.mouseClick(ws.add_region_button, Qt.MouseButton.LeftButton)
    draw_square(qtbot, ws, 150, 150, 230, 230)  # the next edit saves beside the kept copy, never over it
    assert aside.read_text() == '{"format": "neurowb.factors_rois", "regions": ['
    assert '"Region' in (folder / "rois.json").read_text() or "region" in (folder / "rois.json").read_text().lower()


def test_cancelled_extract_and_nmf_keep_the_results_on_disk_and_shown(window, qtbot, mosaic, monkeypatch):
    import engine.factors.nmf as nmf_module
    from tests.conftest import folder_bytes

    ws, folder = _open_finished_project(window, qtbot, mosaic)
    shown = (ws.latents, ws.factors, ws.clusters, ws.legend.text(), ws.factor_list.count())
    assert ws.clusters is not None and shown[4] == 3
    before = folder_bytes(folder)

    def running_until_cancelled(*args, progress=None, **kwargs):  # an NMF long enough to cancel in the middle
        while True:
            progress.report(0.5, "HALS")
            progress.check()
            time.sleep(0.01)

    monkeypatch.setattr(nmf_module, "nmf", running_until_cancelled)
    ws.stride.setValue(1)  # some seconds of dense latents
    for button in (ws.extract_button, ws.nmf_button):
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
        job = ws.job
        qtbot.waitUntil(lambda job=job: job.fraction > 0, timeout=30000)
        qtbot.mouseClick(ws.cancel_button, Qt.MouseButton.LeftButton)
        wait_for_job(qtbot, job, timeout=30000)
        assert job.state is JobState.CANCELLED and "earlier results are kept" in ws.stage_label.text()
        assert (ws.latents, ws.factors, ws.clusters, ws.legend.text(), ws.factor_list.count()) == shown
        assert folder_bytes(folder) == before


def test_reopened_project_keeps_its_settings_uses_the_space_and_masks_the_background(window, qtbot, tmp_path):
    """A slice on a dark field, its pipeline run and saved: reopening restores pixel size and stride; the image
    has no histogram strip beside it; the control column fits its width scrolled or not; the score matrix's
    region names never run together; all-negative scores are explained; NMF leaves the dark field out."""
    from PyQt6.QtGui import QFontMetrics
    from PIL import Image

    from engine.factors.synth import demo_mosaic

    mosaic, labels = demo_mosaic(size=256, n_cells=9, seed=1)
    margin = 48  # the black field around the tissue
    image = np.pad(mosaic, margin)
    path = tmp_path / "slice.png"
    Image.fromarray(image).save(path)
    np.save(tmp_path / "slice_labels.npy", np.pad(labels, margin))
    opened = workflow.open_project_job(path)
    folder = workflow.project_folder(path)
    workflow.run_pipeline(opened["image"], opened["project"].regions.rasterize(), folder, patch_size=64, epochs=1,
                          patches_per_epoch=64, stride=16, k=4, pixel_size_um=1.17, device="cpu")

    ws = open_in(window, qtbot, path)
    assert ws.stride.value() == 16 and ws.pixel_size.value() == pytest.approx(1.17)  # as the saved results were made
    assert ws.view.histogram is None and ws.view.graphics.width() >= ws.canvas.width() - 2

    scroll = ws.layout().itemAt(0).widget()
    for value in (0, scroll.verticalScrollBar().maximum()):
        scroll.verticalScrollBar().setValue(value)
        qtbot.wait(50)
        assert scroll.horizontalScrollBar().maximum() == 0 and scroll.widget().x() == 0  # nothing to shift sideways
        assert scroll.widget().width() <= scroll.viewport().width()
        for box in (ws.info, ws.region_box, ws.pipeline_box, ws.select_box, ws.cluster_box, ws.display_box):
            assert box.geometry().right() < scroll.viewport().width(), box.title()  # not clipped at the right
    ws.nmf_button.setFocus()  # a focused control scrolled into view moves the column up and down only
    scroll.ensureWidgetVisible(ws.nmf_button)
    assert scroll.widget().x() == 0

    # region names as long as a brain's, in a narrow score matrix: each label fits its column
    for row, name in enumerate(("striatum", "thalamus", "white matter")):
        ws.region_list.setCurrentRow(row)
        ws.rename_region(name)
    ws.splitter.setSizes([1000, 200])
    qtbot.wait(100)
    axis = ws.scores.plot.getAxis("bottom")
    metrics = QFontMetrics(axis.font())
    shown = ws.scores.column_labels()
    assert len(shown) == 3 and len(set(shown)) == 3
    for label in shown:
        assert metrics.horizontalAdvance(label) <= ws.scores.column_width() - 8, (label, ws.scores.column_width())

    # what the score means; why every score may be negative
    ws.lam.setValue(100.0)
    assert (ws.selection.scores < 0).all() and "Every score is negative" in ws.score_note.text()
    ws.lam.setValue(0.0)
    assert "Score = " in ws.score_note.text() and "Every score is negative" not in ws.score_note.text()

    # NMF through its button: the dark field is left out (zero codes there), and the window says so
    assert ws.mask_background.isChecked()
    run_button(qtbot, ws, ws.nmf_button)
    rows, cols = ws.factors.grid.centers()
    inside = (rows[:, None] >= margin + 8) & (rows[:, None] < margin + 248) & (cols[None] >= margin + 8) & (cols[None] < margin + 248)
    outside = (rows[:, None] < margin - 8) | (rows[:, None] >= margin + 264) | (cols[None] < margin - 8) | (cols[None] >= margin + 264)
    assert not ws.factors.codes[outside].any()
    assert ws.factors.codes[inside].any(axis=-1).mean() > 0.9
    assert "background outside the tissue, left out" in ws.stage_label.text()


def test_a_large_slice_is_drawn_at_the_detail_of_the_zoom(qtbot):
    """An 8-Mpixel image is never averaged whole on the GUI thread: zoomed out it is drawn from every n-th
    pixel, zoomed in at full detail; the region overlay is drawn at ≤ 2048 px per side over the full extent."""
    from app.widgets.image_view import LABELS_MAX_SIDE, ImageView

    view = ImageView(histogram=False)
    qtbot.addWidget(view)
    view.resize(900, 400)
    view.show()
    qtbot.waitExposed(view)
    image = (np.arange(1420 * 5805, dtype=np.uint32) % 251).astype(np.uint8).reshape(1420, 5805)
    view.set_image(image)
    qtbot.wait(50)
    step = view._step
    assert step >= 4 and not view.image.autoDownsample
    np.testing.assert_array_equal(view.image.image, image[::step, ::step])
    assert view.image.mapRectToParent(view.image.boundingRect()).width() == pytest.approx(-(-5805 // step) * step)
    view.viewbox.setRange(xRange=(1000, 1300), yRange=(500, 700), padding=0)  # zoomed in: every pixel
    qtbot.wait(50)
    assert view._step == 1 and view.image.image.shape == image.shape
    labels = np.zeros(image.shape, np.int32)
    labels[400:1000, 4600:5500] = 1
    view.set_labels(labels)
    shown = view.overlay.image
    assert max(shown.shape[:2]) <= LABELS_MAX_SIDE
    assert view.overlay.mapRectToParent(view.overlay.boundingRect()).width() == pytest.approx(5805, abs=3)
    small = np.zeros((256, 256), np.uint8)
    view.set_image(small)  # a small image: pyqtgraph's own downsampling, the array itself
    assert view.image.autoDownsample and view.image.image is small or np.array_equal(view.image.image, small)


def test_the_same_label_map_is_coloured_once(qtbot, monkeypatch):
    """A result handler asks for the region overlay several times: the same (read-only) map in the same
    colours is coloured and handed to pyqtgraph once; new colours, a new map or None change it."""
    from app.widgets.image_view import LABEL_COLORS, ImageView

    view = ImageView(histogram=False)
    qtbot.addWidget(view)
    labels = np.zeros((300, 400), np.int32)
    labels[50:150, 100:300] = 1
    labels[200:250, 20:60] = 13  # beyond the table: colours wrap around
    calls = []
    set_image = view.overlay.setImage
    monkeypatch.setattr(view.overlay, "setImage", lambda image, **kw: (calls.append(image), set_image(image, **kw)))
    for _ in range(3):
        view.set_labels(labels, opacity=0.5)
    assert len(calls) == 1 and view.overlay.opacity() == 0.5
    np.testing.assert_array_equal(view.overlay.image, LABEL_COLORS[labels % len(LABEL_COLORS)])
    view.set_labels(labels, opacity=0.8)  # an opacity change only
    assert len(calls) == 1 and view.overlay.opacity() == 0.8
    colors = LABEL_COLORS.copy()
    colors[1] = [1, 2, 3, 255]
    view.set_labels(labels, colors=colors)
    assert len(calls) == 2 and tuple(view.overlay.image[100, 200]) == (1, 2, 3, 255)
    view.set_labels(None)
    view.set_labels(labels, colors=colors)  # shown again after being cleared
    assert len(calls) == 3
