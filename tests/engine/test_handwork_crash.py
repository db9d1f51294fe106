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
    from engine.storage import remove_stale_temp

    remove_stale_temp(folder)
    left = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert not left, left


# -- Phy curation ---------------------------------------------------------------------------------

def _phy_state(c):
    groups = {int(k): c.groups.get(int(k), "unsorted") for k in c.cluster_ids}
    return c.spike_clusters.tolist(), sorted(groups.items())


def test_phy_curation_is_one_transaction_per_change(tmp_path, crash_every_write):
    from test_ephys_curation import _folder

    from engine.ephys.curation import Curation
    from engine.ephys.phy import read_cluster_groups

    (tmp_path / "orig").mkdir()
    original, _ = _folder(tmp_path / "orig", n_spikes=300)
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
        _no_temp_left(folder)
        c = Curation(folder)  # replays an interrupted change
        state = _phy_state(c)
        if state != states[0]:  # the files as written by a change (the sort's folder has no metric columns)
            assert read_cluster_groups(folder) == dict(state[1])
            for name in ("SNR", "ISIViol", "PresenceRatio"):  # the columns Phy shows: the clusters of the files
                lines = (folder / f"cluster_{name}.tsv").read_text().splitlines()[1:]
                assert sorted(int(line.split("\t")[0]) for line in lines) == sorted(int(i) for i in c.cluster_ids)
        return state

    seen = _assert_prefix_states(states, reopen, crash_every_write(lambda: list(changes(Curation(folder))), prepare))
    assert len(seen) > 5 * 5  # journal, two files, three metric columns, journal removed: per change
