"""`neurowb factors train → extract → nmf → select → cluster` on a small texture mosaic, and the
messages for bad input (exit code 2, one line).

Kept small for speed: a 256 × 208 px mosaic, 64-px patches, one short epoch, stride-4 latents (64 × 52 grid),
k = 6. Accuracy is not asserted here (test_factors_pipeline.py does that with a longer training).
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from engine.cli import build_parser, main
from engine.device import DEVICE_ENV
from engine.factors.cli import register
from engine.factors.files import Grid, grid_file, load_factors, load_latents
from engine.factors.cnn import PatchModel
from engine.factors.dense import grid_centers
from engine.factors.synth import demo_mosaic

K = 6
STRIDE = 4
WIDTH = 208  # image 256 × 208 px → latent grid 64 × 52
GRID = (64, 52)
NAMES = ["stripes", "blobs", "fine noise"]


def mosaic() -> tuple[np.ndarray, np.ndarray]:
    image, labels = demo_mosaic(size=256, n_cells=9, seed=1)
    return image[:, :WIDTH], labels[:, :WIDTH]


def grid_labels() -> np.ndarray:
    return mosaic()[1][::STRIDE, ::STRIDE]


def run(argv):
    """(exit code, stdout, stderr) of ``neurowb factors ...`` in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["factors", *argv], registrations=[register])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    d = tmp_path_factory.mktemp("factors_cli")
    pixels, labels = mosaic()  # not square, so that swapped rows and columns would show
    image = d / "mosaic.png"
    Image.fromarray(pixels).save(image)
    labels_npz = d / "mosaic_labels.npz"
    np.savez(labels_npz, labels=labels, classes=np.array(NAMES))  # with region names, as write_demo_mosaic writes
    Image.fromarray(labels).save(d / "labels.png")  # train from a PNG label image, select from the .npz
    paths = {"dir": d, "image": image, "labels": labels_npz, "labels_png": d / "labels.png", "model": d / "mosaic.pt",
             "latents": d / "latents.npy", "factors": d / "factors.npz"}
    outputs = {}
    with pytest.MonkeyPatch.context() as mp:  # main() exports --device to the environment; undo it afterwards
        mp.setenv(DEVICE_ENV, "cpu")
        outputs["train"] = run(["train", str(image), "--labels", str(paths["labels_png"]), "-o", str(paths["model"]),
                                "--patch-size", "64", "--epochs", "1", "--patches-per-epoch", "192", "--batch-size", "32",
                                "--block-size", "96", "--val-patches", "40", "--pixel-size", "1.17", "--device", "cpu"])
        outputs["extract"] = run(["extract", str(paths["model"]), str(image), "-o", str(paths["latents"]),
                                  "--stride", str(STRIDE), "--memory-mb", "64"])
        outputs["nmf"] = run(["nmf", str(paths["latents"]), "-k", str(K), "-o", str(paths["factors"]), "--max-iter", "60"])
    return paths, outputs


def test_train_prints_accuracy_and_confusion_and_saves_the_model(chain):
    paths, outputs = chain
    code, out, err = outputs["train"]
    assert code == 0, err
    assert "validation accuracy" in out and "chance 33%" in out
    lines = out.splitlines()
    start = lines.index("confusion matrix (rows: true region, columns: predicted):")
    header, rows = lines[start + 1], lines[start + 2:start + 5]
    assert header.split()[0] == "region"
    counts = np.array([[int(v) for v in row.split()[-3:]] for row in rows])
    assert counts.sum() == 3 * 40 and (counts.sum(1) == 40).all()  # 40 validation patches per region
    model = PatchModel.load(paths["model"], device="cpu")
    assert model.class_labels == [1, 2, 3] and model.patch_size == 64
    assert model.preprocessing.pixel_size_um == pytest.approx(1.17)
    assert model.metrics["split"]["block_size"] == 96
    assert "wrote" in err


def test_extract_writes_latents_and_their_grid(chain):
    paths, outputs = chain
    code, out, err = outputs["extract"]
    assert code == 0, err
    loaded = load_latents(paths["latents"])
    latents, grid = loaded.values, loaded.grid
    assert latents.shape == (*GRID, 64) and latents.dtype == np.float32 and latents.min() >= 0
    assert grid_file(paths["latents"]).is_file()
    assert grid == Grid(stride=STRIDE, offset=(0, 0), shape=GRID, image_shape=(256, WIDTH), patch_size=64,
                        mode="same", pixel_size_um=1.17)
    rows, cols = grid.centers()
    expected_rows, expected_cols = grid_centers((256, WIDTH), STRIDE, 64)
    assert np.array_equal(rows, expected_rows) and np.array_equal(cols, expected_cols)
    assert "64×52 grid" in out


def test_nmf_writes_codes_on_the_grid(chain):
    paths, outputs = chain
    code, out, err = outputs["nmf"]
    assert code == 0, err
    factors = load_factors(paths["factors"])
    assert factors.codes.shape == (*GRID, K) and factors.H.shape == (K, 64) and factors.k == K
    assert factors.grid.stride == STRIDE and factors.grid.image_shape == (256, WIDTH)
    assert 0 < factors.relative_error < 0.5 and factors.codes.min() >= 0
    assert f"NMF k={K}: relative error" in out


def _score_matrix(out: str) -> tuple[list[str], np.ndarray]:
    lines = out.splitlines()
    assert lines[0].startswith(f"score matrix ({K} factors × 3 regions")
    header = lines[1]
    values = np.array([[float(v) for v in line.split()[1:]] for line in lines[2:2 + K]])
    assert [int(line.split()[0]) for line in lines[2:2 + K]] == list(range(K))
    return header.split(), values


def test_select_prints_scores_and_chosen_pairs(chain):
    paths, _ = chain
    json_path = paths["dir"] / "selection.json"
    code, out, err = run(["select", str(paths["factors"]), "--labels", str(paths["labels"]), "--lam", "0.5",
                          "--json", str(json_path)])
    assert code == 0, err
    header, scores = _score_matrix(out)
    assert scores.shape == (K, 3)
    assert all(name.split()[0] in header for name in NAMES)  # region names come from the label .npz
    pairs = [line for line in out.splitlines() if line.startswith("  factor ")]
    assert len(pairs) == 3 and "chosen pairs (3):" in out  # default p: one per region
    saved = json.loads(json_path.read_text())
    assert saved["regions"] == [1, 2, 3] and saved["region_names"] == NAMES and saved["lam"] == 0.5
    assert np.allclose(saved["scores"], scores, atol=0.06)
    chosen = saved["pairs"]
    assert len({p["factor"] for p in chosen}) == 3 and sorted(p["region"] for p in chosen) == [1, 2, 3]
    # the scores are coverage - λ × outside, counted on the grid positions
    codes = load_factors(paths["factors"]).codes
    labels = grid_labels()
    f, a = chosen[0]["factor"], chosen[0]["region"]
    positive = codes[..., f] > 0
    expected = np.sum(positive & (labels == a)) - 0.5 * np.sum(positive & (labels != a))
    assert chosen[0]["score"] == pytest.approx(expected)

    code, out, err = run(["select", str(paths["factors"]), "--labels", str(paths["labels_png"]), "--lam", "2", "-p", "2"])
    assert code == 0, err
    assert "chosen pairs (2):" in out and len([ln for ln in out.splitlines() if ln.startswith("  factor ")]) == 2
    assert "- 2 × leakage" in out


def test_cluster_fixed_number_with_composition_and_npy_map(chain):
    paths, _ = chain
    out_map = paths["dir"] / "clusters.npy"
    code, out, err = run(["cluster", str(paths["factors"]), "--mask", str(paths["labels"]), "-n", "3",
                          "--labels", str(paths["labels"]), "-o", str(out_map)])
    assert code == 0, err
    cluster_map = np.load(out_map)
    assert cluster_map.shape == GRID and set(np.unique(cluster_map)) == {0, 1, 2}  # whole mask: nothing eroded
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("composition over regions"))
    assert lines[start + 1].split()[0] == "cluster" and "stripes" in lines[start + 1]
    rows = lines[start + 2:start + 5]
    assert [int(r.split()[0]) for r in rows] == [0, 1, 2]
    assert sum(int(r.split()[-1]) for r in rows) == GRID[0] * GRID[1]
    assert "BIC n=3" in out


def test_cluster_one_region_picks_the_number_by_bic_and_writes_a_png(chain):
    paths, _ = chain
    png = paths["dir"] / "clusters.png"
    code, out, err = run(["cluster", str(paths["factors"]), "--mask", str(paths["labels"]), "--roi", "1", "-n", "2-4",
                          "-o", str(png)])
    assert code == 0, err
    for n in (2, 3, 4):
        assert f"  n={n}: " in out
    assert sum("← chosen" in ln for ln in out.splitlines()) == 1
    chosen = next(int(ln.split("n=")[1].split(":")[0]) for ln in out.splitlines() if "← chosen" in ln)
    with Image.open(png) as im:
        assert im.mode == "P" and im.size == (GRID[1], GRID[0])
        values = np.asarray(im)
    assert set(np.unique(values)) == set(range(chosen + 1))  # 0 outside, clusters 1..n
    labels = grid_labels()
    assert np.all(labels[values > 0] == 1)  # every clustered position lies in region 1
    assert "composition" not in out  # only with --labels


def test_bad_inputs_exit_2_with_one_line(chain, tmp_path):
    paths, _ = chain

    def fails(argv, *fragments):
        code, _, err = run(argv)
        assert code == 2, err
        assert err.count("\n") == 1 and err.startswith("error: "), err
        for fragment in fragments:
            assert fragment in err, err

    image, labels, model, latents, factors = (str(paths[k]) for k in ("image", "labels", "model", "latents", "factors"))
    small = tmp_path / "small.npy"
    np.save(small, np.ones((128, 128), np.uint8))
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((256, WIDTH), np.uint8))
    speck = tmp_path / "speck.npy"  # one labelled pixel, between grid positions
    speck_labels = np.zeros((256, WIDTH), np.uint8)
    speck_labels[1, 1] = 2
    np.save(speck, speck_labels)
    loose = tmp_path / "loose.npy"  # latents without their grid file
    np.save(loose, np.ones((4, 4, 64), np.float32))
    not_model = tmp_path / "not_a_model.pt"
    not_model.write_bytes(b"definitely not a torch file")

    fails(["train", str(tmp_path / "missing.png"), "--labels", labels, "-o", str(tmp_path / "m.pt")], "File not found")
    fails(["train", image, "--labels", str(small), "-o", str(tmp_path / "m.pt")], "128×128", f"256×{WIDTH}")
    fails(["train", image, "--labels", str(empty), "-o", str(tmp_path / "m.pt")], "no labelled pixels")
    fails(["train", image, "--labels", labels, "-o", str(tmp_path / "m.pt"), "--patch-size", "32"], "--patch-size")
    fails(["extract", str(not_model), image, "-o", str(tmp_path / "l.npy")], "not a readable")
    fails(["extract", model, image, "-o", str(tmp_path / "l.txt")], "must end in .npy")
    fails(["nmf", factors, "-o", str(tmp_path / "f.npz")], "not a latents file", "factors file")
    fails(["nmf", str(loose), "-o", str(tmp_path / "f.npz")], "no grid file")
    fails(["nmf", latents, "-k", "100", "-o", str(tmp_path / "f.npz")], "number of factors")
    fails(["select", latents, "--labels", labels], "not a factors file", "latents file")
    fails(["select", factors, "--labels", str(small)], "128×128", f"256×{WIDTH}")
    fails(["select", factors, "--labels", str(speck)], "falls on the latent grid", "--stride")
    fails(["select", factors, "--labels", labels, "-p", "5"], "min(factors, regions) = 3")
    fails(["select", factors, "--labels", labels, "--lam", "-1"], "--lam: must be ≥ 0")
    fails(["cluster", factors, "--mask", labels, "--roi", "7"], "No grid position lies in region 7", "[1, 2, 3]")
    fails(["cluster", factors, "--mask", labels, "-n", "many"], "-n takes a number")
    fails(["cluster", factors, "--mask", labels, "-n", "5-3"], "upwards")
    fails(["cluster", factors, "--mask", labels, "-o", str(tmp_path / "c.txt")], ".npy or .png")
    assert not any(tmp_path.glob("*.tmp")) and not (tmp_path / "f.npz").exists()  # nothing half-written


def test_device_option_works_before_and_after_the_command():
    parser = build_parser([register])
    assert parser.parse_args(["--device", "cpu", "factors", "nmf", "l.npy", "-o", "f.npz"]).device == "cpu"
    assert parser.parse_args(["factors", "nmf", "l.npy", "-o", "f.npz", "--device", "cuda"]).device == "cuda"
    assert parser.parse_args(["factors", "nmf", "l.npy", "-o", "f.npz"]).device is None


def test_installed_console_command_reports_bad_input_with_exit_code_2(tmp_path):
    # through the installed entry point (pyproject.toml), as a user runs it
    done = subprocess.run([sys.executable, "-m", "engine.cli", "factors", "select", str(tmp_path / "missing.npz"),
                           "--labels", str(tmp_path / "labels.npy")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: File not found: '{tmp_path / 'missing.npz'}'. Check the path "
                                                "and that the file still exists."]


def test_gui_opens_cli_outputs_placed_in_its_project_folder(chain, tmp_path):
    """CLI latents and factors on a 'valid' grid (offset half a patch) copied into an image's project folder
    are what the GUI's loader restores, placed on the right pixels."""
    import shutil

    from engine.factors import workflow

    paths, _ = chain
    latents, factors = tmp_path / "valid.npy", tmp_path / "valid.npz"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DEVICE_ENV, "cpu")
        assert run(["extract", str(paths["model"]), str(paths["image"]), "-o", str(latents), "--stride", "8",
                    "--mode", "valid"])[0] == 0
        assert run(["nmf", str(latents), "-k", "3", "-o", str(factors), "--max-iter", "30"])[0] == 0
    image = tmp_path / "mosaic.png"
    shutil.copy(paths["image"], image)
    folder = workflow.project_folder(image)
    shutil.copy(paths["model"], folder / workflow.MODEL_FILE)
    shutil.copy(latents, folder / workflow.LATENTS_FILE)
    shutil.copy(grid_file(latents), folder / workflow.LATENTS_META)
    shutil.copy(factors, folder / workflow.FACTORS_FILE)

    project = workflow.load_project(image, (256, WIDTH), device="cpu")
    assert not project.problems and project.model is not None
    grid = project.factors.grid
    assert grid.offset == (32, 32) and grid.shape == ((256 - 64) // 8 + 1, (WIDTH - 64) // 8 + 1)
    assert project.latents.grid == grid
    np.testing.assert_array_equal(project.factors.codes, load_factors(factors).codes)
    # the codes at a pixel are those of the grid position centred nearest to it, counted from the offset
    np.testing.assert_array_equal(project.factors.values_at(32 + 8 * 3 + 2, 32 + 8 * 5 - 3), project.factors.codes[3, 5])
    np.testing.assert_array_equal(project.factors.values_at(0, 0), project.factors.codes[0, 0])
    labels = mosaic()[1]
    on_grid = labels[32::8, 32::8][:grid.shape[0], :grid.shape[1]]
    sel = workflow.select(project.factors, labels)
    positive_inside = [int(((project.factors.codes[..., f] > 0) & (on_grid > 0)).sum()) for f in range(3)]
    np.testing.assert_array_equal(sel.coverage.sum(1), positive_inside)
    # a project folder made for another image size refuses them, saying why
    other = workflow.load_project(image, (200, 200), device="cpu")
    assert other.factors is None and other.latents is None and any("256×208" in p for p in other.problems)
