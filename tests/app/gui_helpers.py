"""Helpers shared by the GUI tests."""


def wait_for_job(qtbot, job, timeout=30000):
    if job.is_running:
        with qtbot.waitSignal(job.ended, timeout=timeout):
            pass
    return job
