"""The one undo / redo history (engine.undo) and the hand-work models built on it."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from engine.undo import History


def _counter_history(depth=3):
    state = {"value": 0}
    changes = []
    history = History(lambda d: state.__setitem__("value", state["value"] - d),
                      lambda d: state.__setitem__("value", state["value"] + d), depth=depth,
                      on_change=lambda: changes.append((history.can_undo, history.can_redo)))

    def add(d):
        state["value"] += d
        history.record(d)

    return state, history, add, changes


def test_history_is_bounded_and_redo_is_forgotten_by_a_new_edit():
    state, history, add, changes = _counter_history(depth=3)
    for d in (1, 10, 100, 1000):
        add(d)
    assert len(history) == 3 and state["value"] == 1111
    assert [history.undo() for _ in range(4)] == [1000, 100, 10, None]  # the oldest edit fell off
    assert state["value"] == 1 and history.can_redo and not history.can_undo
    assert history.redo() == 10 and state["value"] == 11
    add(5)
    assert not history.can_redo and history.redo() is None and state["value"] == 16
    assert changes[-1] == (True, False)  # every change of undo/redo state was told
    history.clear()
    assert not history.can_undo and changes[-1] == (False, False)


def test_a_failed_revert_keeps_the_edit_to_retry():
    fail = {"now": True}

    def revert(edit):
        if fail["now"]:
            raise OSError("disk full")

    history = History(revert, lambda edit: None)
    history.record("stroke")
    with pytest.raises(OSError):
        history.undo()
    assert history.can_undo and not history.can_redo
    fail["now"] = False
    assert history.undo() == "stroke" and history.can_redo


def test_amend_grows_the_last_edit():
    state, history, add, _ = _counter_history()
    add(1)
    state["value"] += 2
    history.amend(3)
    assert history.undo() == 3 and state["value"] == 0
    with pytest.raises(IndexError):
        history.amend(1)


def test_mesh_labels_history_is_bounded(tmp_path):
    import trimesh

    from engine.mesh.labels import MAX_UNDO, UNLABELLED, LabelEditor

    mesh = trimesh.creation.icosphere(subdivisions=3)  # 642 vertices: one new vertex per stroke
    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    editor = LabelEditor.for_mesh(vertices, faces, tmp_path / "labels.npy")
    for k in range(MAX_UNDO + 5):
        editor.assign([k % len(vertices)], k % 2)
    undone = 0
    while editor.undo() is not None:
        undone += 1
    assert undone == MAX_UNDO
    assert (editor.labels[:5] != UNLABELLED).all()  # the first five strokes can no longer be taken back
    assert editor.redo() is not None and editor.can_redo
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), editor.labels)  # undo and redo are saved


def test_regions_undo_and_redo_every_edit_across_regions(tmp_path):
    from engine.factors.rois import ROIS_FILE, RegionSet

    rset = RegionSet((10, 10))
    a = rset.add_region("cortex")
    rset.add_polygon(a.label, [(0, 0), (4, 0), (4, 4)])
    b = rset.add_region("striatum")
    rset.add_stroke(b.label, [(8, 8)], radius=1.0)
    rset.rename(a.label, "motor cortex")
    base = np.zeros((10, 10), np.int32)
    base[9, 0] = 7
    rset.set_base(base, {7: "thalamus"})
    rset.delete(b.label)
    states = []
    while True:
        states.append((rset.names, rset.rasterize().copy()))
        if rset.undo() is None:
            break
    assert [s[0] for s in states] == [
        {1: "motor cortex", 7: "thalamus"}, {1: "motor cortex", 2: "striatum", 7: "thalamus"},
        {1: "motor cortex", 2: "striatum"}, {1: "cortex", 2: "striatum"}, {1: "cortex", 2: "striatum"},
        {1: "cortex"}, {1: "cortex"}, {}]
    assert not states[-2][1].any() and states[-3][1].max() == 1  # the polygon, not the region, went first
    for names, raster in reversed(states[:-1]):
        assert rset.redo() is not None
        assert rset.names == names
        np.testing.assert_array_equal(rset.rasterize(), raster)
    assert rset.redo() is None
    rset.undo()  # the deletion of striatum taken back, saved and reloaded as it is
    rset.save(tmp_path)
    again = RegionSet.load(tmp_path, (10, 10))
    assert again.names == rset.names and json.loads((tmp_path / ROIS_FILE).read_text())["has_base"]
    np.testing.assert_array_equal(again.rasterize(), rset.rasterize())


def test_regions_read_from_a_label_file_start_with_nothing_to_undo(tmp_path):
    from engine.factors.workflow import regions_from_label_file

    labels = np.zeros((6, 8), np.int32)
    labels[:3] = 1
    labels[3:] = 2
    np.save(tmp_path / "image_labels.npy", labels)
    rset = regions_from_label_file(tmp_path / "image_labels.npy", (6, 8))
    assert sorted(rset.names) == [1, 2] and not rset.history.can_undo
    rset.delete(1)
    assert rset.undo() == "deletion of “Region 1”" and sorted(rset.names) == [1, 2] and rset.undo() is None


@dataclass
class _Result:  # the fields of a CNMF result that accepting and rejecting touch
    accepted: np.ndarray
    centers: np.ndarray

    @property
    def n_components(self):
        return len(self.accepted)


def test_calcium_decisions_redo_after_undo(tmp_path):
    from engine.calcium.curation import Curation, load_decisions

    movie = tmp_path / "movie.npy"
    np.save(movie, np.zeros((3, 4, 4), np.float32))
    c = Curation(movie, _Result(np.ones(3, bool), np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])), None, [])
    c.set_accepted([0], False)
    c.set_accepted([2], False)
    assert c.undo()["op"] == "reject" and c.result.accepted.tolist() == [False, True, True]
    assert [d["centers"] for d in load_decisions(movie)[0]] == [[[1.0, 1.0]]]
    assert c.redo()["centers"] == [[3.0, 3.0]] and c.result.accepted.tolist() == [False, True, False]
    assert len(load_decisions(movie)[0]) == 2 and not c.can_redo
