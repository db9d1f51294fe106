"""A cancel at any stage of a long job leaves the previous result exactly where it was, on disk:
sort (Phy folder), CNMF (output folder), HKS, and the microarchitecture steps (train, extract, NMF)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.progress import Cancelled
from tests.conftest import cancelling_at, folder_bytes


def _siblings(folder):
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name and folder.name in p.name)


def test_sort_cancel_at_every_stage_keeps_the_curated_folder(tmp_path, monkeypatch):
    import engine.ephys.sorter as sorter
    from engine.ephys.curation import Curation, sort_job
    from engine.ephys.sorter import SortParams
    from engine.ephys.synth import write_demo_recording

    raw = tmp_path / "r.raw"
    params = write_demo_recording(raw, duration=6.0, n_channels=8, n_units=3, seed=1)
    out = sort_job(raw, params, None, SortParams(min_spikes=5))
    folder = out["folder"]
    curation = Curation(folder)
    curation.label(curation.cluster_ids[:2], "good")
    before = folder_bytes(folder)
    stages = ("Sorting", "Writing the Phy folder", "Computing unit metrics")
    with pytest.raises(Cancelled):  # the real sorter, cancelled early
        sort_job(raw, params, None, SortParams(min_spikes=5), progress=cancelling_at(stages[0]))
    assert folder_bytes(folder) == before and _siblings(folder) == []

    saved = sorter.sort_recording(out["recording"], sorter_probe(out), SortParams(min_spikes=5))
    monkeypatch.setattr(sorter, "sort_recording", lambda *a, progress=None, **k: saved)  # the later stages, fast
    for stage in stages[1:]:
        progress = cancelling_at(stage)
        with pytest.raises(Cancelled):
            sort_job(raw, params, None, SortParams(min_spikes=5), progress=progress)
        assert any(stage in m for m in progress.seen)
        assert folder_bytes(folder) == before, f"cancelled at {stage!r}: the curated folder changed"
        assert _siblings(folder) == [], f"cancelled at {stage!r}: left {_siblings(folder)}"
        assert Curation(folder).counts()["good"] == 2
    done = sort_job(raw, params, None, SortParams(min_spikes=5))  # not cancelled: swapped in, curation kept aside
    assert done["curation"].folder == folder and done["curation"].counts()["good"] == 0
    assert folder_bytes(done["backup"]) == before and _siblings(folder) == [done["backup"].name]


def sorter_probe(out):
    from engine.ephys.probe import linear_probe

    return linear_probe(out["recording"].n_channels, warn=False)
