"""`neurowb demo --screenshots DIR` end to end, in a subprocess, as a user would run it."""

import os
import subprocess
import sys

import pytest
from PyQt6.QtGui import QImage

from app.screenshots import is_blank


@pytest.mark.slow
def test_demo_writes_one_non_blank_screenshot_per_workspace_without_a_display(tmp_path):
    env = dict(os.environ, NEUROWB_CONFIG_DIR=str(tmp_path / "config"), NEUROWB_DATA_DIR=str(tmp_path / "data"))
    env.pop("DISPLAY", None)  # headless: the command must start its own virtual display
    env.pop("QT_QPA_PLATFORM", None)
    out = subprocess.run([sys.executable, "-m", "engine.cli", "demo", "--screenshots", str(tmp_path / "shots")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "virtual display" in out.stdout
    shots = sorted((tmp_path / "shots").glob("*.png"))
    assert [p.name for p in shots] == ["1-morphology.png", "2-ephys.png", "3-calcium.png", "4-factors.png"]
    for path in shots:
        assert not is_blank(QImage(str(path))), path


def test_gui_without_display_says_what_to_do(tmp_path):
    env = dict(os.environ)
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        env.pop(var, None)
    out = subprocess.run([sys.executable, "-m", "engine.cli", "gui"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("error: No display found") and "neurowb demo --screenshots" in out.stderr
