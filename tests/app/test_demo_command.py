"""`neurowb demo --screenshots DIR` end to end, in a subprocess, as a user would run it."""

import os
import subprocess
import sys

import pytest
from PyQt6.QtGui import QImage

from app.screenshots import is_blank


@pytest.mark.slow
def test_demo_writes_non_blank_screenshots_of_every_workspace_without_a_display(tmp_path):
    env = dict(os.environ, NEUROWB_CONFIG_DIR=str(tmp_path / "config"), NEUROWB_DATA_DIR=str(tmp_path / "data"))
    env.pop("DISPLAY", None)  # headless: the command must start its own virtual display
    env.pop("QT_QPA_PLATFORM", None)
    out = subprocess.run([sys.executable, "-m", "engine.cli", "demo", "--screenshots", str(tmp_path / "shots")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "virtual display" in out.stdout
    shots = sorted((tmp_path / "shots").glob("*.png"))
    names = {p.name for p in shots}
    assert {"1-morphology.png", "2-ephys.png", "3-calcium.png", "4-factors.png"} <= names
    # the morphology loop, one screenshot per step
    assert {"1-morphology-1-hks.png", "1-morphology-2-labels.png", "1-morphology-3-posterior.png",
            "1-morphology-4-uncertain.png"} <= names
    for path in shots:
        assert not is_blank(QImage(str(path))), path
    # `make run` again: the first run's results are there, and the questions they raise (replace the
    # trained model's latents and factors?) must not wait for a person who is not there
    again = subprocess.run([sys.executable, "-m", "engine.cli", "demo", "--screenshots", str(tmp_path / "shots2")],
                           env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert len(list((tmp_path / "shots2").glob("*.png"))) == len(shots)


def test_gui_without_display_says_what_to_do(tmp_path):
    env = dict(os.environ)
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        env.pop(var, None)
    out = subprocess.run([sys.executable, "-m", "engine.cli", "gui"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("error: No display found") and "neurowb demo --screenshots" in out.stderr
