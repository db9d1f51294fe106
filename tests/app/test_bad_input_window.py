"""The bad-input corpus through the window's open path (File ▸ Open, drag and drop and recent files all
call ``MainWindow.open_files``): every damaged file must end in one error dialog that says what is wrong,
never in silence, a crash, a dialog about something else, or "Something went wrong" (an unexpected
exception). The files come from tests/bad_files.py, as for the CLI corpus; the dialog function is
replaced by a recorder so nothing blocks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import bad_files as bf
from gui_helpers import wait_for_job

pytestmark = pytest.mark.gui


def _phy_params_only(tmp: Path) -> Path:
    return bf.text(tmp / "phy", "params.py", "dat_path = 'rec.raw'\nn_channels_dat = 4\nsample_rate = 30000.0\n")


#: id → (workspace shown when the file is opened, writer(tmp) → path, text the dialog must contain)
WINDOW_CASES = {
    **{f"morphology-{kind}": ("morphology", bf.BAD_MESHES[kind][0], bf.BAD_MESHES[kind][1])
       for kind in ("collinear", "coincident", "empty", "garbage-ply", "point-cloud", "nan-vertex", "index-out-of-range",
                    "h5-flat-faces", "h5-float-faces")},
    "morphology-h5-garbage": ("morphology", bf.BAD_MESHES["h5-garbage"][0], "not an HDF5"),
    **{f"ephys-sidecar-{kind}": ("ephys", lambda tmp, kind=kind: bf.sidecar_recording(tmp, kind), expect)
       for kind, (_, expect) in bf.BAD_SIDECARS.items()},
    "ephys-params-py-alone": ("ephys", _phy_params_only, "missing spike_times.npy"),
    **{f"ephys-phy-{kind}": ("ephys", lambda tmp, kind=kind: bf.bad_phy(tmp, kind) / "params.py", bf.BAD_PHY[kind][1])
       for kind in ("truncated-spike-clusters", "non-utf8-groups", "nan-amplitudes", "params-syntax", "sort-json-malformed",
                    "template-out-of-range")},
    **{f"calcium-{kind}": ("calcium", bf.BAD_MOVIES[kind][0], bf.BAD_MOVIES[kind][1])
       for kind in ("truncated-imagej-tiff", "single-image-tiff", "garbage-npy", "colour-npy", "single-frame-npy", "h5-no-3d",
                    "h5-garbage", "nwb-garbage", "all-nan", "empty-npy")},
    **{f"factors-{kind}": ("factors", bf.BAD_IMAGES[kind][0], bf.BAD_IMAGES[kind][1])
       for kind in ("all-nan", "partly-nan", "inf", "stack", "corrupt-png", "empty-png", "truncated-tiff", "strings")},
    "any-unsupported-type": ("morphology", lambda tmp: bf.text(tmp, "notes.docx", "x"), "cannot open “notes.docx”"),
}


@pytest.fixture(scope="module")
def window(qapp, tmp_path_factory):
    """One window for the whole corpus (a window per case took most of the time): a failed open leaves
    nothing behind that the next case could trip on."""
    from app.main import MainWindow, create_application
    from app.settings import Settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEUROWB_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))
        create_application()
        win = MainWindow(Settings())
        win.show()
        yield win
        win.jobs.shutdown(3000)
        win.close()


@pytest.fixture
def dialogs(monkeypatch) -> list[tuple[str, str, str | None]]:
    """Every error dialog shown, as (title, message, details); none is really shown."""
    shown: list = []

    def record(parent, title, message, details=None):
        shown.append((title, message, details))

    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "app" and hasattr(module, "show_error"):
            monkeypatch.setattr(module, "show_error", record)
    return shown


def open_and_wait(window, qtbot, path: Path, dialogs: list) -> list:
    for job in window.open_files([path]):
        wait_for_job(qtbot, job, timeout=60000)
    qtbot.waitUntil(lambda: bool(dialogs), timeout=10000)
    qtbot.wait(50)  # a second dialog would come now
    return dialogs


@pytest.mark.parametrize("name", sorted(WINDOW_CASES))
def test_bad_file_opens_one_error_dialog(name, window, qtbot, tmp_path, dialogs):
    workspace, write, expect = WINDOW_CASES[name]
    window.show_workspace(workspace)
    path = write(tmp_path)
    shown = open_and_wait(window, qtbot, path, dialogs)
    assert len(shown) == 1, shown
    title, message, details = shown[0]
    assert title != "Something went wrong", (message, details)
    assert "Traceback" not in message
    assert expect in message, f"{expect!r} not in {message!r}"


def test_window_corpus_covers_the_four_workspaces():
    assert {case[0] for case in WINDOW_CASES.values()} >= {"morphology", "ephys", "calcium", "factors"}
    assert len(WINDOW_CASES) >= 40


def test_hdf5_movie_opened_from_morphology_goes_to_calcium(window, qtbot, tmp_path, dialogs):
    """An .h5 is a MeshParty mesh or a movie: its content decides, not the workspace that happens to be shown."""
    window.show_workspace("morphology")
    path = bf.h5(tmp_path, "movie.h5", {"mov": np.random.default_rng(0).normal(100, 5, (30, 24, 24)).astype(np.float32)})
    jobs = window.open_files([path])
    assert len(jobs) == 1
    wait_for_job(qtbot, jobs[0], timeout=60000)
    assert window.current_workspace.key == "calcium" and not dialogs


def test_hdf5_mesh_opened_from_calcium_goes_to_morphology(window, qtbot, tmp_path, dialogs):
    window.show_workspace("calcium")
    mesh = bf.sphere_mesh(1)
    path = bf.h5(tmp_path, "mesh.h5", {"vertices": np.asarray(mesh.vertices), "faces": np.asarray(mesh.faces)})
    jobs = window.open_files([path])
    assert len(jobs) == 1
    wait_for_job(qtbot, jobs[0], timeout=60000)
    assert window.current_workspace.key == "morphology" and not dialogs


def test_sorting_a_recording_with_nan_samples_says_where(window, qtbot, tmp_path, dialogs):
    """A float32 recording opens (NaN samples cannot be known before reading them all), and Sort ends at once
    in a dialog naming the first bad sample, where it used to fail deep in the whitening (LinAlgError)."""
    window.show_workspace("ephys")
    raw = bf.float_recording(tmp_path, nan_at=(1234, 2))
    bf.text(tmp_path, "float.raw.json", '{"n_channels": 4, "sample_rate": 30000, "dtype": "float32"}')
    bf._probe(tmp_path, 4).rename(tmp_path / "float.probe.json")
    for job in window.open_files([raw]):
        wait_for_job(qtbot, job, timeout=60000)
    assert not dialogs
    wait_for_job(qtbot, window.current_workspace.run_sort(), timeout=60000)
    qtbot.waitUntil(lambda: bool(dialogs), timeout=10000)
    (title, message, details), = dialogs
    assert title == "Cannot use this input" and "first at sample 1,234" in message and "channel 2" in message
