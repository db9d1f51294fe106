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


def test_sort_over_curated_work_survives_a_kill_at_any_write(tmp_path, monkeypatch, crash_every_write):
    """A re-sort killed at any instant (writing the staging folder, swapping it in, keeping the curated
    one aside): reopening finds the curated folder or the new one in place, and the curated work is
    always somewhere beside it, whole."""
    import shutil

    import engine.ephys.sorter as sorter
    from engine.ephys.curation import Curation, open_phy_job, sort_job
    from engine.ephys.sorter import SortParams
    from engine.ephys.synth import write_demo_recording

    raw = tmp_path / "data" / "r.raw"
    raw.parent.mkdir()
    params = write_demo_recording(raw, duration=4.0, n_channels=8, n_units=3, seed=1)
    out = sort_job(raw, params, None, SortParams(min_spikes=5))
    folder = out["folder"]
    Curation(folder).label(Curation(folder).cluster_ids[:2], "good")
    original = tmp_path / "curated"
    shutil.copytree(folder, original)
    saved = sorter.sort_recording(out["recording"], sorter_probe(out), SortParams(min_spikes=5))
    monkeypatch.setattr(sorter, "sort_recording", lambda *a, progress=None, **k: saved)  # the sorting itself, done

    def prepare():
        for p in raw.parent.iterdir():
            if folder.name in p.name:
                shutil.rmtree(p)
        shutil.copytree(original, folder)

    def reopen():
        open_phy_job(folder)  # as the window and qc open it
        assert [p.name for p in raw.parent.iterdir() if p.name.startswith(".")] == []
        kept = [folder_bytes(p) for p in raw.parent.iterdir() if p.is_dir() and p != folder and folder.name in p.name]
        return folder_bytes(folder), kept

    prepare()
    curated, _ = reopen()
    sort_job(raw, params, None, SortParams(min_spikes=5))
    new, kept = reopen()
    assert new != curated and kept == [curated]
    runs = 0
    for k in crash_every_write(lambda: sort_job(raw, params, None, SortParams(min_spikes=5)), prepare):
        now, kept = reopen()
        assert now in (curated, new), f"killed before write {k}: the folder is neither the curated one nor the new sort"
        assert now == curated or curated in kept, f"killed before write {k}: the curated work is gone"
        runs += 1
    assert now == new and runs > 5


def sorter_probe(out):
    from engine.ephys.probe import linear_probe

    return linear_probe(out["recording"].n_channels, warn=False)


# -- microarchitecture: train, extract, NMF ------------------------------------------------------------

@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from engine.factors import workflow
    from engine.factors.synth import demo_mosaic

    folder = workflow.project_folder(tmp_path_factory.mktemp("images") / "mosaic.png")
    image, labels = demo_mosaic(size=256, n_cells=9, seed=1)
    labels = labels.astype(np.int32)
    out = workflow.run_pipeline(image, labels, folder, patch_size=64, epochs=2, patches_per_epoch=64, batch_size=32,
                                stride=16, k=3, cluster_roi=1, n_clusters=2, device="cpu")
    assert {p.name for p in folder.iterdir()} >= {"model.pt", "latents.npy", "latents.grid.json", "factors.npz", "clusters.npz"}
    return image, labels, folder, out


@pytest.mark.parametrize("step, stages", [
    ("train", ("epoch 1/2: batch 1", "epoch 2/2: batch 1", "epoch 2/2: validation")),  # before and after a checkpoint
    ("extract", ("Dense latents",)),
    ("nmf", ("Initializing", "HALS")),
])
def test_factors_cancel_at_every_stage_keeps_every_result(project, step, stages):
    from engine.factors import workflow

    image, labels, folder, out = project
    before = folder_bytes(folder)
    run = {"train": lambda p: workflow.train_job(image, labels, folder, patch_size=64, epochs=2, patches_per_epoch=64,
                                                  batch_size=32, device="cpu", progress=p),
           "extract": lambda p: workflow.extract_job(out["train"].model, image, folder, stride=8, progress=p),
           "nmf": lambda p: workflow.nmf_job(out["latents"], folder, k=4, progress=p)}[step]
    for stage in stages:
        progress = cancelling_at(stage)
        with pytest.raises(Cancelled):
            run(progress)
        assert any(stage in m for m in progress.seen)
        assert folder_bytes(folder) == before, f"{step} cancelled at {stage!r}: the project folder changed"
    project_again = workflow.load_project(folder.parent / "mosaic.png", image.shape, device="cpu")
    assert project_again.clusters is not None and project_again.factors.k == 3 and not project_again.problems


# -- HKS (command line) --------------------------------------------------------------------------------

def test_hks_cancel_at_every_stage_keeps_the_previous_output(tmp_path, monkeypatch):
    import trimesh

    import engine.mesh.hks as hks
    from engine.cli import main
    from engine.progress import Progress

    mesh = tmp_path / "blob.ply"
    trimesh.creation.icosphere(subdivisions=3, radius=2.0).export(mesh)
    out = tmp_path / "blob_hks.npz"
    assert main(["hks", str(mesh), "-o", str(out), "--units", "um"]) == 0
    before = out.read_bytes()
    real = hks.compute_hks
    for k in range(1, 100):  # cancel at the k-th progress report, for every k until a run completes
        def cancelled_at_report(*args, progress=None, at=k, **kwargs):
            count = [0]

            def callback(fraction, message):
                count[0] += 1
                if count[0] == at:
                    inner.cancel()

            inner = Progress(callback, min_interval=0.0)
            return real(*args, progress=inner, **kwargs)

        monkeypatch.setattr(hks, "compute_hks", cancelled_at_report)
        code = main(["hks", str(mesh), "-o", str(out), "--units", "um", "--t-min", "0.5"])
        if code == 0:
            break
        assert out.read_bytes() == before, f"cancelled at report {k}: the output changed"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.ply", "blob_hks.npz"]
    assert k > 2 and out.read_bytes() != before  # several stages were cancelled; the finished run replaced it


# -- CNMF: the job (workdir) and the command line's output folder ---------------------------------------

def test_cnmf_cancel_at_every_stage_keeps_the_previous_result(tmp_path):
    from engine.calcium.curation import open_movie_job, run_cnmf_job
    from engine.calcium.export import export_suite2p
    from engine.calcium.synth import write_recording
    from engine.storage import workdir_for

    path, _ = write_recording(tmp_path / "rec", n_frames=200, height=48, width=48, n_cells=5, seed=1)
    listing = cancelling_at("\0")  # never cancels: lists the stages of a run
    done = run_cnmf_job(path, None, 8.0, "none", progress=listing)
    done["curation"].set_accepted([0], False)
    output = export_suite2p(done["curation"].result, tmp_path / "suite2p", data_path=str(path))
    work, exported = folder_bytes(workdir_for(path)), folder_bytes(output)
    stages = []
    for message in listing.seen:
        stage = (message or "").split(":")[0]
        if stage and stage not in stages:
            stages.append(stage)
    assert len(stages) >= 3, stages
    for stage in stages:
        with pytest.raises(Cancelled):
            run_cnmf_job(path, None, 8.0, "none", progress=cancelling_at(stage))
        assert folder_bytes(workdir_for(path)) == work, f"cancelled at {stage!r}: the saved result or decisions changed"
    assert open_movie_job(path)["curation"].decisions == done["curation"].decisions
    assert folder_bytes(output) == exported


def test_cnmf_output_folder_is_swapped_in_whole(tmp_path, crash_every_write):
    """The command line's output folder: a kill at any write leaves the previous export or the new one."""
    import shutil

    from engine.calcium import synth
    from engine.calcium.export import SUITE2P_FILES, export_suite2p
    from engine.calcium.pipeline import run_cnmf, remove_components
    from engine.errors import InputError
    from engine.storage import remove_stale_temp

    sim = synth.recording(200, 48, 48, 5, seed=2)
    first = run_cnmf(sim["movie"], fs=30, neuron_diameter=8)
    second = remove_components(first, [0])
    original = export_suite2p(first, tmp_path / "orig")
    folder = tmp_path / "out"
    states = [folder_bytes(original), folder_bytes(export_suite2p(second, tmp_path / "new"))]
    for files in states:  # ops.npy names its own folder: compare the rest
        files.pop("ops.npy")

    def prepare():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(original, folder)

    for k in crash_every_write(lambda: export_suite2p(second, folder), prepare):
        remove_stale_temp(tmp_path)  # as opening does: a swap cut between its renames is undone
        now = folder_bytes(folder)
        now.pop("ops.npy")
        assert now in states, f"killed before write {k}: a mix of two exports"
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert now == states[1] and k > len(SUITE2P_FILES)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="notes.txt"):  # never replace what is not ours
        export_suite2p(first, folder)
