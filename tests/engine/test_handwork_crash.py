"""Hand work survives a kill at any instant: for every store, a child process makes a series of
changes and is killed just before its k-th file-system change, for every k; the reopened files
must equal the state after some prefix of those changes (a replay of them in memory), and later
kills never show an earlier state. Stale temporary files are removed when the data is opened."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.conftest import killed_at_every_write  # noqa: F401  (the harness; also the crash_every_write fixture)


def _assert_prefix_states(states, reopen, runs):
    """Each reopened state is one of ``states`` (after 0, 1, … changes), never going back."""
    seen = []
    for k in runs:
        state = reopen()
        matches = [i for i, s in enumerate(states) if s == state]
        assert matches, f"killed before write {k}: the files hold a state no prefix of the changes made: {state}"
        later = [i for i in matches if not seen or i >= seen[-1]]  # (an undo can repeat an earlier state)
        assert later, f"killed before write {k}: an earlier state than a kill before it"
        seen.append(later[0])
    assert seen[0] == 0 and seen[-1] == len(states) - 1
    return seen


def _no_temp_left(folder):
    """Opening the data removed what the killed writer left (engine.storage.remove_stale_temp)."""
    left = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert not left, left


# -- Phy curation ---------------------------------------------------------------------------------

def _phy_state(c):
    groups = {int(k): c.groups.get(int(k), "unsorted") for k in c.cluster_ids}
    return c.spike_clusters.tolist(), sorted(groups.items())


def test_phy_curation_is_one_transaction_per_change(tmp_path, crash_every_write):
    from test_ephys_curation import _folder

    from engine.ephys.curation import Curation, open_phy_job
    from engine.ephys.phy import read_cluster_groups

    (tmp_path / "orig").mkdir()
    original, _ = _folder(tmp_path / "orig", n_spikes=300)
    (tmp_path / "orig" / "rec.raw").unlink()  # the folder alone (its toy preprocessing cannot filter a recording)
    folder = tmp_path / "work"

    def changes(c):
        c.label([0, 1], "good")
        yield
        merged = c.merge([0, 1])  # two good clusters merged: the merged one is good
        yield
        c.split(merged, np.arange(len(c.spikes(merged))) % 3 == 0)
        yield
        c.label([2], "noise")
        yield
        c.undo()
        yield

    def prepare():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(original, folder)

    prepare()
    c = Curation(folder)
    states = [_phy_state(c)] + [_phy_state(c) for _ in changes(c)]
    assert states[2][1][-1] == (4, "good")  # the new id of the merge

    def reopen():
        c = open_phy_job(folder)["curation"]  # replays an interrupted change
        _no_temp_left(folder)
        state = _phy_state(c)
        if state != states[0]:  # the files as written by a change (the sort's folder has no metric columns)
            assert read_cluster_groups(folder) == dict(state[1])
            for name in ("SNR", "ISIViol", "PresenceRatio"):  # the columns Phy shows: the clusters of the files
                lines = (folder / f"cluster_{name}.tsv").read_text().splitlines()[1:]
                assert sorted(int(line.split("\t")[0]) for line in lines) == sorted(int(i) for i in c.cluster_ids)
        return state

    seen = _assert_prefix_states(states, reopen, crash_every_write(lambda: list(changes(Curation(folder))), prepare))
    assert len(seen) > 5 * 5  # journal, two files, three metric columns, journal removed: per change


# -- spine labels ---------------------------------------------------------------------------------

def _grid_mesh(n=12):
    rows, cols = np.mgrid[0:n, 0:n]
    vertices = np.c_[cols.ravel(), rows.ravel(), np.zeros(n * n)].astype(np.float64)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return vertices, np.r_[np.c_[a, b, c], np.c_[b, d, c]]


def test_spine_labels_survive_a_kill_at_any_write(tmp_path, crash_every_write):
    from engine.mesh.labels import LabelEditor

    vertices, faces = _grid_mesh()
    path = tmp_path / "labels.npy"

    def changes(editor):
        for center, label in ((5, 1), (70, 2), (100, 0)):
            editor.paint(center, 2.5, label)
            yield
        editor.undo()
        yield

    def prepare():
        path.unlink(missing_ok=True)

    editor = LabelEditor.for_mesh(vertices, faces, path)
    states = [editor.labels.tolist()] + [editor.labels.tolist() for _ in changes(editor)]
    assert len({tuple(s) for s in states}) == 4

    def reopen():
        labels = LabelEditor.for_mesh(vertices, faces, path).labels.tolist()
        _no_temp_left(tmp_path)
        return labels

    _assert_prefix_states(states, reopen, crash_every_write(lambda: list(changes(LabelEditor.for_mesh(vertices, faces, path))),
                                                            prepare))


# -- regions (microarchitecture) -------------------------------------------------------------------

def _regions_state(folder, reopen=False):
    from engine.factors.rois import RegionSet
    from engine.factors.workflow import load_project

    if reopen:  # as the workspace opens it (the project folder of an image)
        project = load_project(folder.parent / "image.png", (20, 30))
        assert not project.notices and not project.problems
        rset = project.regions
    else:
        rset = RegionSet.load(folder)
    if rset is None:
        return None
    d = rset.to_dict()
    return d["regions"], None if rset.base is None else rset.base.tolist()


def test_regions_survive_a_kill_at_any_write(tmp_path, crash_every_write):
    """Two files (the regions' JSON, the label map they are drawn over): a kill between them must not
    pair the new map with the old regions."""
    from engine.factors.rois import RegionSet

    folder = tmp_path / "image_factors"  # the project folder of image.png
    first, second = np.zeros((20, 30), np.int32), np.zeros((20, 30), np.int32)
    first[:, :10], second[5:, :], second[:, 20:] = 1, 2, 1

    def changes(rset):
        r = rset.add_region("cortex")
        rset.add_polygon(r.label, [(1, 1), (8, 1), (8, 8)])
        rset.save(folder)
        yield
        rset.set_base(first, {1: "left"})
        rset.save(folder)
        yield
        rset.rename(r.label, "white matter")
        rset.set_base(second, {1: "right", 2: "bottom"})
        rset.save(folder)
        yield
        rset.delete(r.label)
        rset.save(folder)
        yield

    def prepare():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()

    prepare()
    states = [None]
    for _ in changes(RegionSet((20, 30))):
        states.append(_regions_state(folder))
    assert len({str(s) for s in states}) == 5

    def reopen():
        state = _regions_state(folder, reopen=True)
        _no_temp_left(folder)
        return state

    _assert_prefix_states(states, reopen, crash_every_write(lambda: list(changes(RegionSet((20, 30)))), prepare))
    assert len(list(folder.glob("rois_base*"))) == 1  # the replaced label maps are removed


# -- calcium decisions --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cnmf_movie(tmp_path_factory):
    from engine.calcium.curation import run_cnmf_job
    from engine.calcium.synth import write_recording

    path, _ = write_recording(tmp_path_factory.mktemp("calcium") / "rec", n_frames=200, height=48, width=48, n_cells=5, seed=1)
    out = run_cnmf_job(path, None, 8.0, "none")
    assert out["curation"].result.n_components >= 4
    return path


def test_calcium_decisions_survive_a_kill_at_any_write(cnmf_movie, crash_every_write):
    from engine.calcium.curation import curation_path, load_decisions, open_movie_job

    path = cnmf_movie
    saved = curation_path(path)

    def changes(c):
        c.set_accepted([0], False)
        yield
        c.set_accepted([1, 2], False)
        yield
        c.delete([3])
        yield
        c.undo()
        yield

    def prepare():
        saved.unlink(missing_ok=True)

    prepare()
    c = open_movie_job(path)["curation"]
    states = [[]] + [list(c.decisions) for _ in changes(c)]

    def reopen():
        out = open_movie_job(path)
        _no_temp_left(saved.parent)
        assert out["notice"] == "" and load_decisions(path) == (out["curation"].decisions, "")
        return out["curation"].decisions

    _assert_prefix_states(states, reopen, crash_every_write(lambda: list(changes(open_movie_job(path)["curation"])), prepare))


# -- a damaged hand-work file is kept aside, said, and never overwritten --------------------------------

def test_damaged_calcium_decisions_are_kept_aside_and_said(cnmf_movie, caplog):
    from engine.calcium.curation import curation_path, open_movie_job

    saved = curation_path(cnmf_movie)
    damaged = b'{"version": 1, "decisions": [{"op": "reject", "centers": [[3.0, 4.'  # a truncated file
    saved.write_bytes(damaged)
    out = open_movie_job(cnmf_movie)
    asides = list(saved.parent.glob(saved.name + ".damaged-*"))
    assert len(asides) == 1 and asides[0].read_bytes() == damaged
    assert asides[0].name in out["notice"] and "could not be read" in out["notice"]
    assert any(asides[0].name in r.getMessage() for r in caplog.records)  # the CLI's warning line
    out["curation"].set_accepted([0], False)  # the next edit starts afresh, beside the kept copy
    assert asides[0].read_bytes() == damaged and "reject" in saved.read_text()
    saved.unlink()


def test_damaged_or_foreign_regions_are_kept_aside_and_said(tmp_path):
    from PIL import Image

    from engine.factors.rois import ROIS_FILE, RegionSet
    from engine.factors.workflow import open_project_job, project_folder

    image = tmp_path / "slice.png"
    Image.fromarray((np.arange(40 * 50).reshape(40, 50) % 251).astype(np.uint8)).save(image)
    folder = project_folder(image)
    (folder / ROIS_FILE).write_text("{garbage")
    out = open_project_job(image)
    (aside,) = folder.glob(ROIS_FILE + ".damaged-*")
    assert aside.read_text() == "{garbage" and aside.name in out["project"].notices[0]
    rset = out["project"].regions
    rset.add_polygon(rset.add_region("new").label, [(1, 1), (5, 1), (5, 5)])
    rset.save(folder)
    assert aside.read_text() == "{garbage"
    # regions of another image (same name, another size) are kept too, not overwritten by the next edit
    other = RegionSet((10, 10))
    other.add_region("elsewhere")
    other.save(folder)
    out = open_project_job(image)
    (foreign,) = folder.glob(ROIS_FILE + ".other-image-*")
    assert "10×10" in out["project"].notices[0] and RegionSet.load(tmp_path / "x") is None
    assert '"elsewhere"' in foreign.read_text() and out["project"].regions.regions == []
