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
