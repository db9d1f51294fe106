"""A ScanImage recording of 2 planes × 2 channels opened in the calcium workspace: the chooser asks which plane and
channel, the movie shown is that one, CNMF runs on it, and its result is kept apart from the other planes'."""

import numpy as np
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QDialog

from app.calcium.chooser import PlaneChannelDialog
from app.jobs import JobState
from engine.calcium.curation import result_path
from engine.calcium.synth import demo_movie

from gui_helpers import open_in, wait_for_job
from lab_files import scanimage_frame_data, write_scanimage


def test_chooser_plane_channel_and_cnmf_on_it(window, qtbot, tmp_path, monkeypatch):
    frames, *_ = demo_movie(n_frames=240, height=48, width=48, n_neurons=5, seed=4)
    data = np.random.default_rng(5).normal(100, 5, (240, 2 + 1, 2, 48, 48))
    data[:, 1, 1] = frames * 20 + 100  # plane 1, channel 2 holds the cells
    path = write_scanimage(tmp_path / "file_00001.tif", np.round(data).astype(np.int16).reshape(-1, 48, 48),
                           scanimage_frame_data(channels=(1, 2), planes=2, flyback=1, volumes=240, height=48, width=48))
    asked = []

    def answer(dialog, accept=True):
        asked.append(dialog.findChildren(type(dialog.plane))[0].maximum())
        from app.screenshots import save_screenshot

        save_screenshot(dialog, tmp_path / "chooser.png")
        dialog.plane.setValue(1)
        dialog.channel.setCurrentIndex(1)
        return QDialog.DialogCode.Accepted if accept else QDialog.DialogCode.Rejected

    monkeypatch.setattr(PlaneChannelDialog, "exec", lambda self: answer(self, accept=False))
    assert window.open_files([path]) == []  # cancelled: nothing opened
    monkeypatch.setattr(PlaneChannelDialog, "exec", answer)
    ws = open_in(window, qtbot, path)
    assert asked == [1, 1] and ws.selection == {"plane": 1, "channel": 2}
    expected = np.round(data[:, 1, 1]).astype(np.int16)
    np.testing.assert_array_equal(ws.movie.frames(0, 240), expected)
    assert ws.info.values["file"].text() == "file_00001.tif, plane 1, channel 2"
    with qtbot.waitSignal(window.jobs.job_added, timeout=5000) as blocker:
        qtbot.mouseClick(ws.run_button, Qt.MouseButton.LeftButton)
    job = blocker.args[0]
    wait_for_job(qtbot, job, timeout=120000)
    assert job.state is JobState.FINISHED, job.error and job.error.details
    assert ws.curation.result.n_components >= 4
    assert result_path(path, ws.selection).name == "cnmf_result.channel2.plane1.npz" and result_path(path, ws.selection).is_file()
    assert not result_path(path).exists()
    # reopening the same plane and channel restores its result
    ws2 = open_in(window, qtbot, path)
    assert ws2.curation is not None and ws2.curation.result.n_components == ws.curation.result.n_components
