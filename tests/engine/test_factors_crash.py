"""The microarchitecture results survive a kill at any instant: every step (train, extract, NMF, the
command line's extract) is run in a child killed just before its k-th file-system change, for every k,
and the project reopened through the real loader holds what it held before the step or what it holds
after it — never a latents file paired with another extraction's grid, nor factors or clusters of
results that were replaced — and never a problem to report."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from test_handwork_crash import _assert_prefix_states  # noqa: E402  (tests/engine is on the path)


def _fingerprint(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def _no_leftovers(folder):
    left = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert not left, f"left beside the results: {left}"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A finished project (model, latents at stride 16, factors k=3, clusters), its saved bytes, and a
    second trained model."""
    from engine.factors import workflow
    from engine.factors.synth import demo_mosaic

    root = tmp_path_factory.mktemp("images")
    folder = workflow.project_folder(root / "mosaic.png")
    image, labels = demo_mosaic(size=256, n_cells=9, seed=1)
    labels = labels.astype(np.int32)
    settings = dict(patch_size=64, epochs=1, patches_per_epoch=32, batch_size=32, device="cpu")
    out = workflow.run_pipeline(image, labels, folder, stride=16, k=3, cluster_roi=1, n_clusters=2, **settings)
    original = root / "original"
    shutil.copytree(folder, original)
    retrained = workflow.train(image, labels, patch_size=64, epochs=1, patches_per_epoch=32, batch_size=32,
                               block_size=workflow.default_block_size(image.shape, 64), device="cpu", seed=5)
    return dict(image=image, labels=labels, folder=folder, original=original, out=out, retrained=retrained)


def _state(project):
    """What the workspace shows after opening the image: (model, latents, factors, clusters)."""
    from engine.factors import workflow

    folder = project["folder"]
    opened = workflow.load_project(folder.parent / "mosaic.png", project["image"].shape, device="cpu")
    assert not opened.problems and not opened.notices, opened.problems + opened.notices
    _no_leftovers(folder)
    latents, factors = opened.latents, opened.factors
    weights = opened.model.network.state_dict().values()  # (the file also holds timings: not the same bytes twice)
    return (_fingerprint(np.concatenate([w.detach().cpu().numpy().ravel().astype(np.float32) for w in weights])),
            None if latents is None else (latents.grid.to_dict(), _fingerprint(latents.values)),
            None if factors is None else (factors.k, _fingerprint(factors.codes)),
            None if opened.clusters is None else _fingerprint(opened.clusters.cluster_map))


def _check_every_kill(project, crash_every_write, step):
    folder = project["folder"]

    def prepare():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(project["original"], folder)

    prepare()
    before = _state(project)
    step()
    after = _state(project)
    assert before != after
    seen = _assert_prefix_states([before, after], lambda: _state(project), crash_every_write(step, prepare))
    return seen


def test_extract_is_one_transaction(project, crash_every_write):
    """New latents (another stride, so another grid shape) replace the old pair, and the factors and
    clusters made from the old latents go."""
    from engine.factors import workflow

    model = project["out"]["train"].model
    seen = _check_every_kill(project, crash_every_write,
                             lambda: workflow.extract_job(model, project["image"], project["folder"], stride=8))
    assert len(seen) >= 6  # the latents, their grid file, the latents in place, clusters and factors removed


def test_nmf_is_one_transaction(project, crash_every_write):
    from engine.factors import workflow

    latents = project["out"]["latents"]
    seen = _check_every_kill(project, crash_every_write, lambda: workflow.nmf_job(latents, project["folder"], k=4))
    assert len(seen) >= 3  # the factors, the clusters removed


def test_train_is_one_transaction(project, crash_every_write, monkeypatch):
    """The end of training: the new model replaces the old one and everything made with the old one goes."""
    from engine.factors import workflow

    monkeypatch.setattr(workflow, "train", lambda *args, **kwargs: project["retrained"])  # the training itself, done
    step = lambda: workflow.train_job(project["image"], project["labels"], project["folder"], patch_size=64,  # noqa: E731
                                      device="cpu")
    seen = _check_every_kill(project, crash_every_write, step)
    assert len(seen) >= 6


def test_command_line_latents_pair_is_one_transaction(tmp_path, crash_every_write):
    """``neurowb factors extract -o LATENTS.npy`` writes through the same transaction: the pair read back
    (as ``neurowb factors nmf`` reads it) is the old one or the new one."""
    from engine.factors.files import Grid, grid_file, load_latents, writing_latents

    path = tmp_path / "out" / "slice_latents.npy"
    old_grid, new_grid = Grid.for_image((100, 120), 16, 32), Grid.for_image((100, 120), 8, 32)

    def write(grid, seed):
        with writing_latents(path, grid, 64, image="slice.png") as out:
            out[:] = np.random.default_rng(seed).uniform(0, 1, out.shape)

    def prepare():
        shutil.rmtree(path.parent, ignore_errors=True)
        write(old_grid, 1)

    def state():
        latents = load_latents(path)
        _no_leftovers(path.parent)
        assert latents.provenance == {"image": "slice.png"}
        return latents.grid, _fingerprint(latents.values)

    prepare()
    before = state()
    write(new_grid, 2)
    states = [before, state()]
    seen = _assert_prefix_states(states, state, crash_every_write(lambda: write(new_grid, 2), prepare))
    assert len(seen) == 4  # the data aside, its grid file, the data in place, done
    assert json.loads(grid_file(path).read_text())["id"] == load_latents(path).id


def test_results_of_older_versions_still_open(project):
    """Files written before the ids existed (no id, no model digest) are read as they are, never dropped."""
    from engine.factors import workflow
    from engine.factors.files import FACTORS_FORMAT, grid_file

    folder = project["folder"]
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(project["original"], folder)
    meta = json.loads((folder / workflow.LATENTS_META).read_text())
    for key in ("id", "model_sha256", "incoming"):
        meta.pop(key)
    grid_file(folder / workflow.LATENTS_FILE).write_text(json.dumps(meta))
    with np.load(folder / workflow.FACTORS_FILE) as z:
        arrays = {k: z[k] for k in z.files if k not in ("id", "latents_id")}
    assert str(arrays["format"]) == FACTORS_FORMAT
    np.savez(folder / workflow.FACTORS_FILE, **arrays)
    with np.load(folder / workflow.CLUSTERS_FILE) as z:
        arrays = {k: z[k] for k in z.files if k != "factors_id"}
    np.savez(folder / workflow.CLUSTERS_FILE, **arrays)
    (folder / workflow.MODEL_FILE).write_bytes((folder / workflow.MODEL_FILE).read_bytes())  # same model
    opened = workflow.load_project(folder.parent / "mosaic.png", project["image"].shape, device="cpu")
    assert not opened.problems
    assert opened.latents.id is None and opened.factors.id is None and opened.factors.latents_id is None
    assert opened.clusters is not None and opened.factors.k == 3


def test_a_file_left_by_a_cut_write_is_finished_or_removed(tmp_path):
    """The two halves the loader repairs: a grid file naming new latents not yet in place (the write is
    finished), and new latents never named by a grid file (removed once their writer is gone)."""
    from engine.factors.files import Grid, grid_file, load_latents, writing_latents

    path = tmp_path / "l.npy"
    grid = Grid.for_image((64, 64), 16, 32)
    with writing_latents(path, grid, 64) as out:
        out[:] = 1.0
    meta = json.loads(grid_file(path).read_text())
    dead = 2 ** 22 + 12345  # no process has this id (above the default pid_max)
    orphan = tmp_path / f".l.npy.incoming-{dead}-{'0' * 32}"
    orphan.write_bytes(b"never committed")
    named = tmp_path / f".l.npy.incoming-{dead}-{'1' * 32}"
    np.save(named, np.full((*grid.shape, 64), 2.0, np.float32))
    named.with_name(named.name + ".npy").rename(named)
    grid_file(path).write_text(json.dumps({**meta, "id": "1" * 32, "incoming": named.name}))
    latents = load_latents(path)
    assert float(latents.values[0, 0, 0]) == 2.0 and latents.id == "1" * 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.grid.json", "l.npy"]


def test_a_write_that_fails_before_its_commit_leaves_the_old_pair_and_nothing_else(tmp_path, monkeypatch):
    import engine.storage as storage
    from engine.factors.files import Grid, load_latents, writing_latents

    path = tmp_path / "l.npy"
    with writing_latents(path, Grid.for_image((64, 64), 16, 32), 64) as out:
        out[:] = 1.0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage, "atomic_save_json", disk_full)
    with pytest.raises(OSError, match="No space"):
        with writing_latents(path, Grid.for_image((64, 64), 8, 32), 64) as out:
            out[:] = 2.0
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert float(load_latents(path).values[0, 0, 0]) == 1.0
