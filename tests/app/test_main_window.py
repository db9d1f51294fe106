
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QApplication, QMessageBox

from app.dialogs import AboutDialog, ShortcutsDialog
from app.jobs import JobState
from app.main import MainWindow
from app.screenshots import is_blank, save_screenshot
from engine.errors import InputError

from gui_helpers import wait_for_job


def message_boxes():
    return [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]


def close_boxes():
    for box in message_boxes():
        box.close()


def test_four_workspaces_switch_by_sidebar_click_and_shortcut(window, qtbot):
    titles = [ws.title for ws in window.workspaces]
    assert titles == ["Morphology", "Ephys", "Calcium", "Microarchitecture"]
    qtbot.mouseClick(window.sidebar_buttons.button(2), Qt.MouseButton.LeftButton)
    assert window.current_workspace.key == "calcium"
    assert "Calcium" in window.windowTitle()
    window.show_status("12 ROIs accepted")
    qtbot.keyClick(window, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    assert window.current_workspace.key == "ephys"
    assert window.sidebar_buttons.button(1).isChecked()
    assert window.statusBar().currentMessage() == ""  # calcium's message does not follow into ephys


def test_menus_have_the_promised_actions(window):
    menus = {a.text().replace("&", ""): a.menu() for a in window.menuBar().actions()}
    assert list(menus) == ["File", "View", "Tools", "Help"]
    file_items = [a.text().replace("&", "") for a in menus["File"].actions() if a.text()]
    assert {"Open…", "Open demo data", "Open recent", "Quit"} <= set(file_items)
    help_items = [a.text().replace("&", "") for a in menus["Help"].actions()]
    assert "About NeuroWorkbench" in help_items and "Keyboard shortcuts" in help_items


def test_unsupported_and_missing_files_show_clear_errors(window, qtbot, tmp_path):
    odd = tmp_path / "notes.xyz"
    odd.write_text("hello")
    assert window.open_files([odd]) == []
    qtbot.waitUntil(lambda: bool(message_boxes()), timeout=2000)
    box = message_boxes()[0]
    assert "cannot open “notes.xyz”" in box.text() and ".ply" in box.text() and ".raw" in box.text()
    close_boxes()
    assert window.open_files([tmp_path / "gone.ply"]) == []
    qtbot.waitUntil(lambda: bool(message_boxes()), timeout=2000)
    assert "does not exist" in message_boxes()[0].text()
    close_boxes()


def test_failed_job_shows_dialog_with_message_and_details(window, qtbot):
    def bad(progress=None):
        raise InputError("The file is truncated: 1,001 bytes is not a multiple of 4 channels × 2 bytes.", details="size=1001")

    job = window.run_job("Open broken.raw", bad)
    wait_for_job(qtbot, job)
    qtbot.waitUntil(lambda: bool(message_boxes()), timeout=2000)
    box = message_boxes()[0]
    assert box.windowTitle() == "Cannot use this input"
    assert "truncated" in box.text() and "size=1001" in box.detailedText()
    close_boxes()


def test_job_started_and_cancelled_from_the_gui(window, qtbot):
    window.speed_action.trigger()
    qtbot.waitUntil(lambda: len(window.job_panel.rows) == 1, timeout=3000)
    job, row = next(iter(window.job_panel.rows.items()))
    assert window.job_panel.isVisible() and row.isVisible()
    qtbot.waitUntil(lambda: row.bar.value() > 0, timeout=5000)
    assert "ETA" in row.time.text()
    qtbot.mouseClick(row.cancel_button, Qt.MouseButton.LeftButton)
    wait_for_job(qtbot, job, timeout=5000)
    assert job.state is JobState.CANCELLED
    assert row.time.text().startswith("cancelled")
    qtbot.waitUntil(lambda: not window.job_panel.rows, timeout=8000)
    assert not window.job_panel.isVisible()


def test_compute_speed_job_reports_in_status_bar(window, qtbot, monkeypatch):
    import engine.device

    real = engine.device.measure_speed
    monkeypatch.setattr(engine.device, "measure_speed", lambda pref, seconds, progress=None: real(pref, 0.2, 128, progress))
    job = window.check_compute_speed()
    wait_for_job(qtbot, job)
    assert job.state is JobState.FINISHED
    assert "GFLOP/s" in window.statusBar().currentMessage()


def test_window_state_and_recent_files_persist(qtbot, settings, demo_files):
    first = MainWindow(settings)
    qtbot.addWidget(first)
    first.show()
    first.resize(1100, 700)
    first.show_workspace("factors")
    wait_for_job(qtbot, first.open_files([demo_files["factors"]])[0])
    first.close()

    second = MainWindow(settings)
    qtbot.addWidget(second)
    second.show()
    assert (second.width(), second.height()) == (1100, 700)
    assert second.current_workspace.key == "factors"
    assert settings.recent_files()[0] == str(demo_files["factors"].absolute())
    second.recent_menu.aboutToShow.emit()
    entries = [a.text() for a in second.recent_menu.actions()]
    assert any(demo_files["factors"].name in e for e in entries)
    second.close()


def test_about_and_shortcut_dialogs(window):
    about = AboutDialog(window.device_info.summary(), window.settings.path, window)
    labels = " ".join(w.text() for w in about.findChildren(type(window.device_label)))
    assert "PyTorch" in labels and "Qt / PyQt6" in labels and window.device_info.name in labels
    shortcuts = ShortcutsDialog(window.actions(), window)
    rows = {(shortcuts.table.item(r, 0).text(), shortcuts.table.item(r, 1).text()) for r in range(shortcuts.table.rowCount())}
    assert ("Ctrl+O", "Open") in rows and ("Ctrl+1", "1 Morphology") in rows


def test_screenshot_helper_detects_blank_images(window, tmp_path):
    from PyQt6.QtGui import QColor, QImage

    image = save_screenshot(window, tmp_path / "window.png")
    assert (tmp_path / "window.png").stat().st_size > 1000
    assert not is_blank(image)
    flat = QImage(200, 100, QImage.Format.Format_RGB32)
    flat.fill(QColor("white"))
    assert is_blank(flat)


def test_compute_settings_reach_the_engine_unless_the_environment_says_otherwise(qtbot, settings, monkeypatch):
    import os

    from engine.device import DEVICE_ENV
    from engine.parallel import SCHEDULER_ENV

    monkeypatch.delenv(DEVICE_ENV, raising=False)
    monkeypatch.setenv(SCHEDULER_ENV, "tcp://cluster:8786")  # set by the user before starting
    settings.set_device("cpu")
    settings.set_scheduler("serial")
    win = MainWindow(settings)
    qtbot.addWidget(win)
    assert os.environ[DEVICE_ENV] == "cpu"
    assert os.environ[SCHEDULER_ENV] == "tcp://cluster:8786"
    assert win.device_info.device == "cpu"


def test_open_recent_names_a_phy_folder_by_its_folder(window, settings, tmp_path):
    phy = tmp_path / "locust_sorted"
    phy.mkdir()
    (phy / "params.py").write_text("dat_path = 'x.dat'\n")
    settings.add_recent_file(phy / "params.py")
    window.recent_menu.aboutToShow.emit()
    entries = [a.text() for a in window.recent_menu.actions()]
    assert "&1 locust_sorted (Phy folder)" in entries


def test_the_window_freezes_long_lived_objects_and_releases_them_when_closed(window):
    """Full garbage collections hold the GIL: while the window lives they walk only what start-up did not make;
    once it closes, its objects are the collector's again (another window in the same process starts fresh)."""
    import gc

    assert gc.get_freeze_count() > 10_000
    window.close()
    assert gc.get_freeze_count() == 0


def test_jobs_starting_and_ending_leave_the_workspace_size_alone(window, qtbot):
    """Job rows sit side by side in a status bar that keeps a row's height: a resize of the workspace would lay
    it out again and redraw its 3D view (50-150 ms on a software renderer) at every job start and end."""
    import threading

    release = threading.Event()
    first = window.run_job("First", lambda progress: release.wait(10), on_result=lambda r: None)
    qtbot.waitUntil(lambda: len(window.job_panel.rows) == 1, timeout=3000)
    qtbot.wait(50)
    height = window.centralWidget().height()
    second = window.run_job("A second job with a very long name, " * 4, lambda progress: release.wait(10),
                            on_result=lambda r: None)
    qtbot.waitUntil(lambda: len(window.job_panel.rows) == 2, timeout=3000)
    qtbot.wait(50)
    assert window.centralWidget().height() == height
    name = window.job_panel.rows[second].name  # a long name is elided, whole in its tooltip
    assert "…" in name.text() and len(name.text()) < len(name.toolTip())
    assert name.toolTip().startswith("A second job")
    release.set()
    wait_for_job(qtbot, first)
    wait_for_job(qtbot, second)
    qtbot.waitUntil(lambda: not window.job_panel.rows, timeout=8000)
    qtbot.wait(50)
    assert window.centralWidget().height() == height


def test_the_window_imports_the_jobs_packages_before_it_shows(qtbot, monkeypatch, tmp_path):
    """A job's first import of a C extension holds the GIL and stops the window (sklearn in the first sort,
    trimesh in the first mesh open): the window imports them while it is built."""
    import subprocess
    import sys

    code = ("import sys; import app.jobs as jobs; assert 'sklearn.cluster' not in sys.modules, 'imported already'; "
            "jobs.preload_job_modules(); print(sorted(m for m in ('sklearn.cluster', 'trimesh', 'scipy.signal', "
            "'skimage.measure._find_contours', 'skimage.measure._regionprops') if m not in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"  # scikit-image's lazily loaded functions too

    import app.main

    called = []
    monkeypatch.setattr(app.main, "preload_job_modules", lambda: called.append(1))
    monkeypatch.setenv("NEUROWB_CONFIG_DIR", str(tmp_path / "config"))
    window = app.main.MainWindow(app.main.Settings())
    qtbot.addWidget(window)
    assert called == [1]
