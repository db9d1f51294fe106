"""GUI test fixtures. Tests run on a real X display: pytest-xvfb starts Xvfb when there is none."""

from pathlib import Path

import pytest

from app.main import MainWindow, create_application
from app.settings import Settings


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    """Settings and the user data folder (the ROI classifier's decisions) fresh, so tests never read or write the user's."""
    monkeypatch.setenv("NEUROWB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("NEUROWB_DATA_DIR", str(tmp_path / "user-data"))
    return Settings()


@pytest.fixture
def window(qtbot, settings) -> MainWindow:
    create_application()
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()  # keyboard shortcuts need the active window
    qtbot.waitActive(win)
    yield win
    win.jobs.shutdown(3000)


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory) -> dict[str, Path]:
    from engine.demo import ensure_demo_data

    return ensure_demo_data(tmp_path_factory.mktemp("demo"))
