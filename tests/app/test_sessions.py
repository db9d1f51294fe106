"""The workspaces' session models: one copy of the state, a signal for every change of it."""

from types import SimpleNamespace

import numpy as np
import pytest

from app.calcium.session import CalciumSession
from app.ephys.session import EphysSession
from app.jobs import Job
from engine.undo import History


def _curation(n_components=0):
    return SimpleNamespace(history=History(lambda e: None, lambda e: None),
                           result=SimpleNamespace(n_components=n_components))


class _Recording:
    closed = False

    def close(self):
        self.closed = True


@pytest.mark.parametrize("make", [EphysSession, CalciumSession])
def test_the_session_hears_the_history_of_the_curation_it_shows_only(qtbot, make):
    session = make()
    heard = []
    session.history_changed.connect(lambda: heard.append(1))
    first, second = _curation(3), _curation(3)
    session.set_curation(first)
    first.history.record("merge")
    assert heard == [1]
    session.set_curation(second)
    first.history.record("label")  # a curation no longer shown is not heard
    second.history.undo()
    assert heard == [1]
    second.history.record("label")
    assert heard == [1, 1]


def test_ephys_selection_recording_and_sort(qtbot):
    session = EphysSession()
    said, busy = [], []
    session.selection_changed.connect(said.append)
    session.busy_changed.connect(lambda: busy.append(session.busy))
    session.set_curation(_curation())
    session.select([np.int64(4), 2, 4])
    assert session.selected == [4, 2] and said == [[4, 2]] and type(session.selected[0]) is int
    session.set_curation(None)
    assert session.selected == []  # a new curation starts with nothing selected

    first, second = _Recording(), _Recording()
    session.set_recording("a.raw", first, "source a")
    session.set_recording("b.raw", second, "source b")
    assert first.closed and not second.closed and session.raw_path == "b.raw"

    job = Job("sort", lambda progress=None: 1)
    with qtbot.waitSignal(job.ended, timeout=5000):
        session.set_sort_job(job.start())  # started, as window.run_job hands it over
    assert busy == [True, False] and not session.busy


def test_calcium_selection_keeps_only_rois_of_the_result(qtbot):
    session = CalciumSession()
    said = []
    session.selection_changed.connect(said.append)
    session.set_curation(_curation(n_components=3))
    session.select([2, 5, -1, 0, 2])
    assert session.selected == [2, 0] and said == [[2, 0]]
    changes = []
    session.busy_changed.connect(lambda: changes.append(session.editing))
    job = Job("merge", lambda progress=None: 1)
    with qtbot.waitSignal(job.ended, timeout=5000):
        session.set_edit_job(job.start())  # started, as window.run_job hands it over
    assert changes == [True, False] and session.edit_job is job
