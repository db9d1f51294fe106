"""The workflow's job bodies chained on a tiny mosaic, the project folder they fill, and reloading it."""

from pathlib import Path

import numpy as np
import pytest

from engine.factors import workflow
from engine.factors.rois import RegionSet
from engine.factors.synth import demo_mosaic
from engine.progress import Cancelled, Progress


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = workflow.project_folder(tmp_path_factory.mktemp("images") / "mosaic.png")
    image, labels = demo_mosaic(size=256, n_cells=9, seed=1)
    messages = []
    out = workflow.run_pipeline(image, labels.astype(np.int32), folder, names={1: "stripes", 2: "blobs", 3: "noise"},
                                patch_size=64, epochs=1, patches_per_epoch=96, batch_size=32, stride=8, k=5,
                                cluster_roi=1, n_clusters=2, device="cpu",
                                progress=Progress(lambda f, m: messages.append((f, m))))
    return image, labels, folder, out, messages


def test_stages_chain_on_the_latent_grid(run):
    image, labels, folder, out, messages = run
    latents, factors, sel = out["latents"], out["factors"], out["selection"]
    assert latents.values.shape == (32, 32, 64) and latents.stride == 8 and latents.patch_size == 64
    assert factors.codes.shape == (32, 32, 5) and factors.H.shape == (5, 64) and factors.codes.min() >= 0
    assert sel.scores.shape == (5, 3) and len(sel.pairs) == 3 and sel.roi_labels == [1, 2, 3]
    assert out["clusters"].cluster_map.shape == (32, 32) and out["clusters"].n_clusters == 2
    assert set(out["timings"]) == {"train", "extract", "nmf", "select", "cluster"}
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    # display helpers: heatmap scaled to 0..1, composite RGB, values at a pixel = the code of its grid cell
    assert 0 <= factors.heatmap(0).min() and factors.heatmap(0).max() <= 1
    assert factors.composite((0, 1, 2)).shape == (32, 32, 3)
    np.testing.assert_array_equal(factors.values_at(17, 30), factors.codes[2, 4])
    grid = factors.grid.sample(labels)
    assert grid.shape == (32, 32) and grid[1, 2] == labels[8, 16]


def test_selection_rescore_is_instant_and_changes_with_lambda(run):
    image, labels, _, out, _ = run
    sel = out["selection"]
    high = sel.rescore(lam=5.0)
    np.testing.assert_allclose(high.scores, sel.coverage - 5.0 * sel.outside)
    assert np.all(high.scores <= sel.scores)
    one = sel.rescore(p=1)
    assert len(one.pairs) == 1 and one.pairs[0] == sel.pairs[0]


def test_project_folder_restores_every_step(run, tmp_path):
    image, labels, folder, out, _ = run
    assert {p.name for p in folder.iterdir()} >= {"model.pt", "latents.npy", "latents.grid.json", "factors.npz", "clusters.npz"}
    rset = RegionSet(image.shape)
    rset.set_base(labels)
    rset.save(folder)
    # load_project looks in <stem>_factors beside the image
    image_path = folder.parent / "mosaic.png"
    assert folder.name == "mosaic_factors"
    project = workflow.load_project(image_path, image.shape, device="cpu")
    assert project.folder == folder and not project.problems
    assert project.regions.names.keys() == {1, 2, 3}
    assert project.model.patch_size == 64
    np.testing.assert_array_equal(project.latents.values, out["latents"].values)
    np.testing.assert_allclose(project.factors.codes, out["factors"].codes)
    np.testing.assert_array_equal(project.clusters.cluster_map, out["clusters"].cluster_map)
    # another image size: the saved results do not belong to it
    other = workflow.load_project(image_path, (100, 100), device="cpu")
    assert other.latents is None and other.factors is None and other.problems  # regions refused by shape


def test_new_latents_make_factors_stale_and_cancel_stops(run, tmp_path):
    image, labels, folder, out, _ = run
    model = out["train"].model
    lat = workflow.extract_job(model, image, tmp_path, stride=16)
    (tmp_path / workflow.FACTORS_FILE).write_bytes(b"old")
    workflow.extract_job(model, image, tmp_path, stride=16)
    assert not (tmp_path / workflow.FACTORS_FILE).exists()
    assert lat.values.shape == (16, 16, 64)
    progress = Progress()
    progress.cancel()
    with pytest.raises(Cancelled):
        workflow.nmf_job(lat, tmp_path, k=3, progress=progress)


def test_project_folder_falls_back_when_the_image_folder_is_read_only(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROWB_DATA_DIR", str(tmp_path / "data"))
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "slice.png").write_bytes(b"")
    real_access = workflow.os.access  # chmod does not stop root: say the folder is read-only instead
    monkeypatch.setattr(workflow.os, "access", lambda p, mode: False if Path(p) in (ro, ro / "slice.png.neurowb")
                        else real_access(p, mode))
    folder = workflow.project_folder(ro / "slice.png")
    assert folder.name == "slice_factors" and ro not in folder.parents and folder.is_dir()
    assert tmp_path / "data" in folder.parents
    assert workflow.estimate_extract_seconds((1420, 5805), 8) > workflow.estimate_extract_seconds((1420, 5805), 16) / 10


def test_cli_reads_the_gui_project_folder(run, tmp_path, monkeypatch):
    """`neurowb factors nmf|select|cluster` on the files the GUI keeps in its project folder."""
    import contextlib
    import io
    import json

    from engine.cli import main
    from engine.device import DEVICE_ENV
    from engine.factors.cli import register

    image, labels, folder, out, _ = run
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    labels_npz = tmp_path / "mosaic_labels.npz"
    np.savez(labels_npz, labels=labels, classes=np.array(["stripes", "blobs", "noise"]))

    def cli(*argv):
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(["factors", *map(str, argv)], registrations=[register])
        assert code == 0, stderr.getvalue()
        return stdout.getvalue()

    scores = tmp_path / "scores.json"
    text = cli("select", folder / workflow.FACTORS_FILE, "--labels", labels_npz, "--json", scores)
    assert "stripes" in text and "chosen pairs (3):" in text
    saved = json.loads(scores.read_text())
    expected = workflow.select(out["factors"], labels)
    np.testing.assert_allclose(saved["scores"], expected.scores)
    assert [(p["factor"], p["region"]) for p in saved["pairs"]] == [(f, a) for f, a, _ in expected.pairs]
    text = cli("cluster", folder / workflow.FACTORS_FILE, "--mask", labels_npz, "--roi", 1, "-n", 2)
    assert "2 clusters" in text
    text = cli("nmf", folder / workflow.LATENTS_FILE, "-k", 3, "-o", tmp_path / "again.npz", "--max-iter", 20)
    assert "NMF k=3" in text
