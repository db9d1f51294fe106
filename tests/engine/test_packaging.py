"""A wheel install looks like the development install: the style sheet and icons are in the wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]  # (not 'from conftest': tests/app has a conftest of its own)


@pytest.mark.slow
def test_wheel_has_the_style_sheet_and_icons(tmp_path):
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    # build from a copy of the sources (a build writes build/ beside them); no network, no build isolation
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    for name in ("engine", "app"):
        shutil.copytree(REPO_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    wheel = next((tmp_path / "dist").glob("neuroworkbench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    icons = {p.name for p in (REPO_ROOT / "app" / "resources" / "icons").glob("*.svg")}
    assert "app/resources/style.qss" in names and "app/resources/__init__.py" in names
    assert icons and {f"app/resources/icons/{n}" for n in icons} <= names
    assert not any(n.startswith("resources/") for n in names)  # README screenshots stay out
