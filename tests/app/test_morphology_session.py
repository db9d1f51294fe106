"""The morphology session without a window: meshes, hand labels, classifier, regions, each change a signal."""

import numpy as np
import pytest

from app.jobs import Job
from app.morphology.session import MorphologySession
from engine.mesh import spines
from engine.mesh.entries import hks_job, labels_snapshot, locate_points, open_mesh_entry, train_on_entries
from engine.mesh.hks import log_hks
from engine.mesh.labels import UNLABELLED, LabelEditor
from engine.mesh.synth import write_demo_dendrite
from engine.progress import Progress

SIGNALS = ("entries_changed", "entry_changed", "labels_changed", "history_changed", "hks_changed", "model_changed",
           "region_changed", "points_changed", "busy_changed")


def listen(session) -> list[str]:
    """The names of the session's signals, in the order they are said."""
    heard = []
    for name in SIGNALS:
        getattr(session, name).connect(lambda *_args, name=name: heard.append(name))
    return heard


@pytest.fixture(scope="module")
def meshes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("meshes")
    return [write_demo_dendrite(folder / f"{name}.ply", n_spines=6, length=6.0, seed=seed)
            for seed, name in enumerate(("first", "second"))]


def open_entry(path):
    LabelEditor.default_path(path).unlink(missing_ok=True)  # each test starts without saved labels
    return open_mesh_entry(path, progress=Progress())


def test_meshes_open_select_and_reopen(qtbot, meshes):
    session = MorphologySession()
    heard = listen(session)
    first, second = open_entry(meshes[0]), open_entry(meshes[1])
    session.add_entry(first)
    assert session.entry is first and heard == ["entries_changed", "entry_changed"]
    session.add_entry(second)
    assert session.entries == [first, second] and session.entry is second and session.row == 1
    heard.clear()
    session.select(0)
    session.select(0)  # already shown: nothing said
    session.select(5)  # no such row
    assert session.entry is first and heard == ["entry_changed"]

    heard.clear()
    again = open_entry(meshes[0])  # the same file read again (other units) replaces it, and is shown afresh
    session.add_entry(again)
    assert session.entries == [again, second] and session.entry is again and session.row == 0
    assert heard == ["entries_changed", "entry_changed"]


def test_labels_of_the_shown_mesh_are_heard_with_their_undo(qtbot, meshes):
    session = MorphologySession()
    first, second = open_entry(meshes[0]), open_entry(meshes[1])
    session.add_entry(first)
    heard = listen(session)
    assert not session.can_undo and not session.undo()

    painted = session.paint(0, 0.5, 1)
    assert len(painted) and (first.editor.labels[painted] == 1).all()
    assert heard == ["labels_changed", "history_changed"] and session.can_undo
    grown = session.extend_stroke(int(painted[-1]), 1.0, 1)  # the drag goes on: still one step
    assert len(first.editor.history) == 1 and (first.editor.labels[grown] == 1).all()
    assert session.undo() and (first.editor.labels == UNLABELLED).all() and session.can_redo
    assert session.redo() and (first.editor.labels[painted] == 1).all()
    assert np.load(LabelEditor.default_path(meshes[0]))[painted[0]] == 1  # saved with every change
    assert heard.count("labels_changed") == 4

    session.add_entry(second)
    heard.clear()
    first.editor.assign(np.arange(5), 0)  # a mesh not shown: its history is not heard
    assert heard == [] and not session.can_undo

    assert session.import_file_labels()
    truth = second.file_labels
    assert np.array_equal(second.editor.labels[truth >= 0], truth[truth >= 0])
    assert "labels_changed" in heard and session.can_undo


def test_hks_training_posterior_regions_and_points(qtbot, meshes, tmp_path):
    session = MorphologySession()
    first, second = open_entry(meshes[0]), open_entry(meshes[1])
    session.add_entry(first)
    session.add_entry(second)
    heard = listen(session)

    result, log = hks_job(first, "auto", progress=Progress())
    session.set_hks(first, result, log)  # not the shown mesh: stored, not said
    assert first.hks is result and heard == []
    session.take_hks({id(second): hks_job(second, "auto", progress=Progress())[0]})
    assert heard == ["hks_changed"] and second.log_hks is None
    np.testing.assert_allclose(session.log_hks(), log_hks(second.hks.hks), rtol=1e-5)
    assert session.log_hks() is second.log_hks  # computed once, kept with the mesh

    session.import_file_labels()
    heard.clear()
    assert session.next_uncertain_region() is None  # no posterior yet
    out = train_on_entries(session.entries, labels_snapshot(session.entries), second.spec, progress=Progress())
    session.take_training(out)
    assert session.model is out["model"] and heard == ["region_changed", "model_changed"]
    assert first.proba is not None and second.proba is not None
    p = session.spine_probability(first)  # first's labels were never painted: the model's view of them
    truth = first.file_labels
    assert p[truth == 1].mean() > p[truth == 0].mean() + 0.3

    session.select(0)
    heard.clear()
    region = session.next_uncertain_region()
    assert region is not None and session.region_index == 0 and heard == ["region_changed"]
    assert np.array_equal(session.region, region.vertices) and (first.editor.labels[region.vertices] < 0).all()
    if len(first.regions) > 1:
        assert session.next_uncertain_region() is first.regions[1] and session.region_index == 1
    session.select(1)
    assert session.region is None and session.region_index == -1  # another mesh: no region framed

    heard.clear()
    points_file = tmp_path / "points.npy"
    np.save(points_file, second.mesh.vertices[[3, 30, 300]] + 0.01)
    session.set_points(second, locate_points(second, points_file, progress=Progress()))
    predictions = session.point_predictions()
    assert heard == ["points_changed"] and np.array_equal(predictions.vertex, [3, 30, 300])

    other = next(k for k in spines.FEATURE_KINDS if k.startswith("sihks"))  # features at other timescales
    heard.clear()
    assert session.set_feature_kind(other) == 2 and second.spec.kind == other
    assert first.hks is None and second.hks is None and heard == ["hks_changed"] and session.log_hks() is None


def test_training_job_makes_the_session_busy(qtbot):
    session = MorphologySession()
    busy = []
    session.busy_changed.connect(lambda: busy.append(session.training))
    job = Job("train", lambda progress=None: 1)
    with qtbot.waitSignal(job.ended, timeout=5000):
        session.set_train_job(job.start())  # started, as window.run_job hands it over
    assert busy == [True, False] and session.train_job is job and not session.training
