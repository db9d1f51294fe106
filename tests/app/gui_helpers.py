"""Helpers shared by the GUI tests."""

from app.jobs import JobState


def wait_for_job(qtbot, job, timeout=30000):
    if job.is_running:
        with qtbot.waitSignal(job.ended, timeout=timeout):
            pass
    return job


def open_in(window, qtbot, path):
    """Open ``path`` through the window (as File ▸ Open does), wait for its job, return the workspace shown."""
    jobs = window.open_files([path])
    assert len(jobs) == 1
    wait_for_job(qtbot, jobs[0], timeout=60000)
    assert jobs[0].state is JobState.FINISHED, jobs[0].error and jobs[0].error.details
    return window.current_workspace


def save_through_button(window, qtbot, monkeypatch, button, answer, metadata=None):
    """Click a button that asks for a file name to save (the dialog answered with ``answer``; an NWB
    metadata form, if one is asked, with ``metadata``: {field: text}); wait for the job it starts and check it finished."""
    from PyQt6.QtCore import Qt
    from PyQt6.QtWidgets import QDialog, QFileDialog

    from app.dialogs import NwbMetadataDialog

    def fill(dialog):
        for key, text in (metadata or {}).items():
            if key == "sex":
                dialog.sex.setCurrentText(text)
            else:
                dialog.edits[key].setText(text)
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(answer), "")))
    monkeypatch.setattr(NwbMetadataDialog, "exec", fill)
    with qtbot.waitSignal(window.jobs.job_added, timeout=5000) as blocker:
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    job = wait_for_job(qtbot, blocker.args[0])
    assert job.state is JobState.FINISHED, job.error and job.error.details
    return job


def answer_next_question(button_text):
    """Click the button ``button_text`` of the next modal message box (it blocks in exec(), so the click
    is scheduled before the action that asks); returns a list that receives the box's text."""
    from PyQt6.QtCore import QTimer
    from PyQt6.QtWidgets import QApplication, QMessageBox

    asked = []

    def click():
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, click)
            return
        asked.append(box.text())
        next(b for b in box.buttons() if b.text().replace("&", "") == button_text).click()

    QTimer.singleShot(0, click)
    return asked
