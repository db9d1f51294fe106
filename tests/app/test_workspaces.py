"""Each workspace opens its demo data through a real job and shows it."""

import numpy as np
import pytest
from PyQt6.QtCore import QTimer
from PyQt6.QtWidgets import QApplication

from app.ephys.params_dialog import RecordingParamsDialog
from app.screenshots import is_blank, save_screenshot

from gui_helpers import open_in, wait_for_job


def test_morphology_shows_mesh_and_labels(window, qtbot, demo_files, tmp_path):
    ws = open_in(window, qtbot, demo_files["morphology"])
    assert ws.key == "morphology" and ws.center.currentWidget() is ws.view
    assert len(ws.view.vertices) == int(ws.info.values["n_vertices"].text().replace(",", ""))
    assert ws.entry.file_labels is not None and ws.color_by.currentText() == "File labels"
    assert set(np.unique(ws.entry.file_labels)) == {0, 1}
    qtbot.wait(300)
    assert not is_blank(save_screenshot(ws.view, tmp_path / "mesh.png"))


def test_ephys_scrolls_through_recording(window, qtbot, demo_files):
    ws = open_in(window, qtbot, demo_files["ephys"])
    assert ws.key == "ephys" and ws.recording is not None
    # the demo recording's probe lies beside it and is picked up for sorting
    assert ws.probe_label.text() == ws.info.values["probe"].text() == f"{demo_files['ephys'].stem}.probe.json"
    ws.data_kind.setCurrentText("Raw")
    x0 = ws.traces.curves["data"].getData()[0][0]
    ws.scroll.setValue(ws.scroll.maximum())
    n = ws.n_shown.value()
    assert n == ws.recording.n_channels
    x, y = (v.reshape(n, -1) for v in ws.traces.curves["data"].getData())
    assert x[0, 0] > x0
    assert x[0, -1] < ws.recording.duration
    assert x[0, 0] == pytest.approx(ws.recording.duration - ws.window_seconds.value(), abs=2 / ws.recording.sample_rate)
    # the plotted samples are the recording's (min/max-decimated to the screen), offset-free, at each channel's baseline
    start = int(round(x[0, 0] * ws.recording.sample_rate))
    stop = start + int(round(ws.window_seconds.value() * ws.recording.sample_rate))
    expected = ws.recording.read(start, stop)[:, 1]
    shown = y[1] + ws.spacing.value()
    assert np.ptp(shown) == pytest.approx(float(np.ptp(expected)), abs=1e-3)
    assert shown.max() == pytest.approx(float((expected - np.median(expected)).max()), abs=3.0)  # offset removed (±3 µV)
    assert ws.traces.curves["data"].isVisible()


def test_ephys_asks_for_layout_of_raw_file_without_sidecar(window, qtbot, tmp_path):
    raw = tmp_path / "bare.dat"
    np.arange(4 * 3000, dtype=np.int16).tofile(raw)

    def fill_dialog():
        dialog = next(w for w in QApplication.topLevelWidgets() if isinstance(w, RecordingParamsDialog) and w.isVisible())
        dialog.n_channels.setValue(4)
        dialog.sample_rate.setValue(15000)
        dialog.accept()

    QTimer.singleShot(300, fill_dialog)
    ws = open_in(window, qtbot, raw)
    assert ws.recording.n_channels == 4 and ws.recording.n_samples == 3000
    assert (tmp_path / "bare.json").exists() or (tmp_path / "bare.dat.json").exists()


def test_calcium_click_shows_pixel_trace(window, qtbot, demo_files):
    ws = open_in(window, qtbot, demo_files["calcium"])
    assert ws.key == "calcium"
    assert ws.view.image.image.shape == (ws.movie.height, ws.movie.width)
    ws.image_kind.setCurrentText("Frame")
    ws.frame_slider.setValue(10)
    np.testing.assert_allclose(ws.view.image.image, ws.movie.frame(10))
    job = ws.show_trace_at(20, 30)
    wait_for_job(qtbot, job)
    x, y = ws.trace_curve.getData()
    assert len(y) == ws.movie.n_frames and np.ptp(y) > 0


def test_factors_overlay_toggles(window, qtbot, demo_files):
    ws = open_in(window, qtbot, demo_files["factors"])
    assert ws.key == "factors" and ws.labels is not None
    assert ws.view.overlay.image is not None
    ws.show_labels.setChecked(False)
    assert ws.view.overlay.image is None
    ws.show_labels.setChecked(True)
    assert ws.view.overlay.image.shape[:2] == ws.labels.shape


def test_bin_files_go_to_the_workspace_that_reads_them(window, tmp_path):
    """A .bin with Suite2p's ops.npy beside it is a calcium movie; any other .bin an ephys recording."""
    import numpy as np

    plane = tmp_path / "plane0"
    plane.mkdir()
    np.zeros((4, 8, 8), np.int16).tofile(plane / "data.bin")
    np.save(plane / "ops.npy", np.array({"Ly": 8, "Lx": 8}, dtype=object), allow_pickle=True)
    np.zeros((100, 4), np.int16).tofile(tmp_path / "rec.bin")
    for start in ("ephys", "calcium"):
        window.show_workspace(start)
        assert window.workspace_for(plane / "data.bin").key == "calcium"
        assert window.workspace_for(tmp_path / "rec.bin").key == "ephys"
