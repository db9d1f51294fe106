"""The main window: one workspace per modality, menus, and the job panel in the status bar."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from PyQt6.QtCore import QSize, Qt, pyqtSignal
from PyQt6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence
from PyQt6.QtWidgets import (
    QApplication,
    QButtonGroup,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.dialogs import AboutDialog, PreferencesDialog, ShortcutsDialog, show_error
from app.jobs import Job, JobError, JobManager, freeze_long_lived, preload_job_modules
from app.resources import icon, style_sheet
from app.settings import Settings
from app.widgets.job_panel import JobPanel
from app.workspace import Workspace
from engine import __version__
from engine.device import DEVICE_ENV
from engine.errors import InputError
from engine.mesh import laplacian
from engine.parallel import SCHEDULER_ENV


def workspace_classes() -> list[type[Workspace]]:
    """The workspaces, in sidebar order (imported here so each stays self-contained)."""
    from app.calcium.panel import CalciumWorkspace
    from app.ephys.panel import EphysWorkspace
    from app.factors.panel import FactorsWorkspace
    from app.morphology.panel import MorphologyWorkspace

    return [MorphologyWorkspace, EphysWorkspace, CalciumWorkspace, FactorsWorkspace]


class MainWindow(QMainWindow):
    workspace_changed = pyqtSignal(str)

    def __init__(self, settings: Settings | None = None):
        super().__init__()
        self.settings = settings or Settings()
        self.jobs = JobManager(self)
        self.setWindowTitle("NeuroWorkbench")
        self.setWindowIcon(icon("neuroworkbench"))
        self.resize(1500, 920)

        self.workspaces: list[Workspace] = [cls(self) for cls in workspace_classes()]
        self.stack = QStackedWidget()
        self.sidebar_buttons = QButtonGroup(self)
        self.sidebar_buttons.setExclusive(True)
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self._build_sidebar())
        layout.addWidget(self.stack, 1)
        for ws in self.workspaces:
            self.stack.addWidget(ws)
            ws.data_loaded.connect(self._on_data_loaded)
        self.setCentralWidget(central)

        self._user_env = {var: os.environ.get(var) for var in (DEVICE_ENV, SCHEDULER_ENV)}
        self.apply_compute_settings()
        self._build_status_bar()
        self._build_menus()
        self._restore_state()
        preload_job_modules()  # a job's first import would hold the GIL, and so stop this window
        freeze_long_lived()  # what start-up made lives until exit: full collections need not walk it
        laplacian.ISOLATE_FACES = 20_000  # its C++ would hold the GIL, and so stop this window, for 0.1 s and more

    # -- construction ------------------------------------------------------------------
    def _build_sidebar(self) -> QWidget:
        sidebar = QWidget(objectName="Sidebar")
        sidebar.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        sidebar.setFixedWidth(112)
        column = QVBoxLayout(sidebar)
        column.setContentsMargins(0, 0, 0, 8)
        column.setSpacing(0)
        logo = QLabel(objectName="SidebarTitle")
        logo.setPixmap(icon("neuroworkbench").pixmap(44, 44))
        logo.setAlignment(Qt.AlignmentFlag.AlignCenter)
        logo.setToolTip(f"NeuroWorkbench {__version__}")
        column.addWidget(logo)
        for index, ws in enumerate(self.workspaces):
            button = QToolButton()
            button.setText(ws.sidebar_label or ws.title)
            button.setIcon(icon(ws.icon_name))
            button.setIconSize(QSize(30, 30))
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextUnderIcon)
            button.setCheckable(True)
            button.setToolTip(f"{ws.title} workspace (Ctrl+{index + 1})")
            button.setSizePolicy(button.sizePolicy().horizontalPolicy().Expanding, button.sizePolicy().verticalPolicy())
            self.sidebar_buttons.addButton(button, index)
            column.addWidget(button)
        column.addStretch(1)
        self.sidebar_buttons.idClicked.connect(self.show_workspace_index)
        return sidebar

    def _build_status_bar(self) -> None:
        status = self.statusBar()
        self.device_label = QLabel("")
        self.job_panel = JobPanel(self.jobs)
        status.addPermanentWidget(self.job_panel)
        status.addPermanentWidget(self.device_label)
        self.jobs.job_added.connect(self._keep_status_bar_height)  # after the panel's own slot: its row is shown
        self.refresh_device_label()

    def _keep_status_bar_height(self, _job=None) -> None:
        """The status bar keeps the height of a job row once it has shown one: a job ending would otherwise
        shrink it and lay the workspace out again, which redraws a 3D view (50-150 ms on a software renderer)."""
        status = self.statusBar()
        status.setMinimumHeight(max(status.minimumHeight(), status.sizeHint().height()))

    def _action(self, text: str, slot: Callable, shortcut: Any = None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
        action.triggered.connect(lambda checked=False: slot())
        self.addAction(action)  # shortcuts work even when the menu bar is hidden
        return action

    def _build_menus(self) -> None:
        menu_bar = self.menuBar()
        file_menu = menu_bar.addMenu("&File")
        self.open_action = self._action("&Open…", self.open_dialog, QKeySequence.StandardKey.Open,
                                        "Open a mesh, recording, movie or image in the matching workspace")
        self.demo_action = self._action("Open &demo data", self.open_demo, "Ctrl+Shift+D",
                                        "Generate (once) and open the demo dataset of every workspace")
        file_menu.addAction(self.open_action)
        file_menu.addAction(self.demo_action)
        self.recent_menu = QMenu("Open &recent", self)
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addMenu(self.recent_menu)
        file_menu.addSeparator()
        file_menu.addAction(self._action("&Preferences…", self.edit_preferences, QKeySequence.StandardKey.Preferences))
        file_menu.addSeparator()
        self.quit_action = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit)
        file_menu.addAction(self.quit_action)

        view_menu = menu_bar.addMenu("&View")
        self.workspace_actions = QActionGroup(self)
        for index, ws in enumerate(self.workspaces):
            action = self._action(f"&{index + 1} {ws.title}", lambda i=index: self.show_workspace_index(i), f"Ctrl+{index + 1}")
            action.setCheckable(True)
            self.workspace_actions.addAction(action)
            view_menu.addAction(action)
        view_menu.addSeparator()
        self.fullscreen_action = self._action("&Full screen", self.toggle_full_screen, QKeySequence.StandardKey.FullScreen)
        view_menu.addAction(self.fullscreen_action)

        tools_menu = menu_bar.addMenu("&Tools")
        self.cancel_all_action = self._action("&Cancel all jobs", self.jobs.cancel_all, "Ctrl+Shift+Esc")
        self.speed_action = self._action("Check compute &speed", self.check_compute_speed, tip=(
            "Measure matrix-multiply throughput on the compute device (a job you can cancel)"))
        tools_menu.addAction(self.speed_action)
        tools_menu.addAction(self.cancel_all_action)

        help_menu = menu_bar.addMenu("&Help")
        self.shortcuts_action = self._action("&Keyboard shortcuts", self.show_shortcuts, "F1")
        help_menu.addAction(self.shortcuts_action)
        help_menu.addAction(self._action("&About NeuroWorkbench", self.show_about))

    def _restore_state(self) -> None:
        geometry = self.settings.window_geometry()
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = self.settings.window_state()
        if state is not None:
            self.restoreState(state)
        keys = [ws.key for ws in self.workspaces]
        last = self.settings.last_workspace()
        self.show_workspace_index(keys.index(last) if last in keys else 0)

    # -- workspaces ----------------------------------------------------------------------
    @property
    def current_workspace(self) -> Workspace:
        return self.workspaces[self.stack.currentIndex()]

    def workspace(self, key: str) -> Workspace:
        for ws in self.workspaces:
            if ws.key == key:
                return ws
        raise KeyError(key)

    def show_workspace_index(self, index: int) -> None:
        if index != self.stack.currentIndex():
            self.statusBar().clearMessage()  # a message about another workspace's data misleads here
        self.stack.setCurrentIndex(index)
        self.sidebar_buttons.button(index).setChecked(True)
        self.workspace_actions.actions()[index].setChecked(True)
        ws = self.workspaces[index]
        name = ws.current_path.name if ws.current_path else ""
        self.setWindowTitle(f"NeuroWorkbench — {ws.title}" + (f" — {name}" if name else ""))
        self.workspace_changed.emit(ws.key)

    def show_workspace(self, key: str) -> Workspace:
        ws = self.workspace(key)
        self.show_workspace_index(self.workspaces.index(ws))
        return ws

    # -- jobs and messages -----------------------------------------------------------------
    def run_job(self, name: str, func: Callable, *args: Any, on_result: Callable[[Any], None] | None = None,
                on_error: Callable[[JobError], None] | None = None, **kwargs: Any) -> Job:
        """Run ``func(*args, progress=..., **kwargs)`` in the background, listed in the job panel.

        Failures show an error dialog unless ``on_error`` is given; a cancel shows a status message.
        """
        job = self.jobs.submit(name, func, *args, on_result=on_result,
                               on_error=on_error or (lambda error: self.show_job_error(name, error)), **kwargs)
        job.cancelled.connect(lambda: self.show_status(f"{name}: cancelled"))
        return job

    def show_job_error(self, name: str, error: JobError):
        title = "Cannot use this input" if error.is_input_error else "Something went wrong"
        return show_error(self, title, f"{name} failed.\n\n{error.message}", error.details)

    def show_status(self, message: str, timeout_ms: int = 6000) -> None:
        self.statusBar().showMessage(message, timeout_ms)

    def apply_compute_settings(self) -> None:
        """Hand the device and scheduler settings to the engine, as `neurowb --device/--scheduler` do.

        The engine reads them from the environment (here and in worker processes); a variable
        the user set before starting the app wins over the settings.
        """
        for var, value in ((DEVICE_ENV, self.settings.device()), (SCHEDULER_ENV, self.settings.scheduler())):
            if self._user_env[var] is None:
                os.environ[var] = value

    def refresh_device_label(self) -> None:
        from engine.device import describe

        info = describe(self.settings.device())
        self.device_info = info
        self.device_label.setText(f"⚙ {info.device} · {info.threads} threads")
        self.device_label.setToolTip(info.summary())

    # -- files ---------------------------------------------------------------------------
    def workspace_for(self, path: Path) -> Workspace | None:
        # The current workspace gets the first chance: an .h5 opened from Calcium is a movie.
        for ws in [self.current_workspace] + [w for w in self.workspaces if w is not self.current_workspace]:
            if ws.can_open(path):
                return ws
        return None

    def open_files(self, paths: Sequence[str | Path]) -> list[Job]:
        jobs = []
        for raw in paths:
            path = Path(raw).expanduser()
            if not path.exists():
                show_error(self, "File not found", f"{path} does not exist.\n\nCheck the path, or pick the file with File ▸ Open….")
                self.settings.remove_recent_file(str(path))
                continue
            ws = self.workspace_for(path)
            if ws is None:
                supported = "\n".join(f"• {w.title}: {' '.join(w.extensions)}" for w in self.workspaces)
                show_error(self, "Unsupported file type",
                           f"NeuroWorkbench cannot open “{path.name}” (type “{path.suffix or 'none'}”).\n\n"
                           f"Supported types:\n{supported}")
                continue
            self.show_workspace(ws.key)
            self.settings.add_recent_file(path)
            self.settings.set_last_folder("open", path.parent)
            try:
                job = ws.open_file(path)
            except InputError as exc:  # found before any job started (a damaged sidecar, ...): say it, as a job would
                show_error(self, "Cannot use this input", f"Cannot open “{path.name}”.\n\n{exc.message}", exc.details)
                continue
            if job is not None:
                jobs.append(job)
        return jobs

    def open_dialog(self) -> None:
        current = self.current_workspace
        filters = [current.file_filter()] + [ws.file_filter() for ws in self.workspaces if ws is not current]
        every = " ".join(f"*{ext}" for ws in self.workspaces for ext in ws.extensions)
        filters.insert(0, f"All supported files ({every})")
        filters.append("All files (*)")
        paths, _ = QFileDialog.getOpenFileNames(self, "Open", self.settings.last_folder("open"), ";;".join(filters))
        if paths:
            self.open_files(paths)

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        files = self.settings.recent_files()
        for i, path in enumerate(files):
            action = self.recent_menu.addAction(f"&{i + 1} {recent_label(Path(path))}")
            action.setToolTip(path)
            action.setStatusTip(path)
            action.triggered.connect(lambda checked=False, p=path: self.open_files([p]))
        if not files:
            self.recent_menu.addAction("(no recent files)").setEnabled(False)
        self.recent_menu.addSeparator()
        clear = self.recent_menu.addAction("Clear list")
        clear.setEnabled(bool(files))
        clear.triggered.connect(self.settings.clear_recent_files)

    def _on_data_loaded(self, path: str) -> None:
        self.show_status(f"Loaded {path}")
        self.show_workspace_index(self.stack.currentIndex())  # refresh the title

    # -- demo ----------------------------------------------------------------------------
    def open_demo(self, on_opened: Callable[[list[Job]], None] | None = None) -> Job:
        """Generate the demo datasets (first time only) in a job, then open each in its workspace."""
        from engine.demo import ensure_demo_data

        def opened(files: dict[str, Path]) -> None:
            jobs = [job for ws in self.workspaces if (job := ws.open_demo(files)) is not None]
            if on_opened is not None:
                on_opened(jobs)

        return self.run_job("Preparing demo data", ensure_demo_data, on_result=opened)

    # -- tools and help --------------------------------------------------------------------
    def check_compute_speed(self) -> Job:
        from engine.device import measure_speed

        def report(result: dict) -> None:
            self.show_status(f"{result['name']}: {result['gflops']:.1f} GFLOP/s "
                             f"({result['matmuls']} float32 1024² multiplies in {result['seconds']:.1f} s)", 20000)

        return self.run_job("Compute speed check", measure_speed, self.settings.device(), 8.0, on_result=report)

    def edit_preferences(self) -> None:
        import torch

        devices = ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        dialog = PreferencesDialog(self.settings.device(), self.settings.scheduler(), devices, self)
        if dialog.exec():
            self.settings.set_device(dialog.device.currentText())
            self.settings.set_scheduler(dialog.scheduler.text().strip() or "auto")
            self.apply_compute_settings()
            self.refresh_device_label()

    def show_shortcuts(self) -> None:
        self.shortcuts_dialog = ShortcutsDialog(self.actions(), self, self.current_workspace.registry)
        self.shortcuts_dialog.open()

    def show_about(self) -> None:
        AboutDialog(self.device_info.summary(), self.settings.path, self).exec()

    def toggle_full_screen(self) -> None:
        self.showNormal() if self.isFullScreen() else self.showFullScreen()

    # -- closing -------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:
        self.settings.save_window(self.saveGeometry(), self.saveState(), self.current_workspace.key)
        for ws in self.workspaces:
            ws.closing()
        if not self.jobs.shutdown(timeout_ms=5000):
            self.show_status("Some jobs are still stopping…")
        gc.unfreeze()  # what this window froze can be collected again (a process may open another, e.g. tests)
        super().closeEvent(event)


def create_application(argv: Sequence[str] | None = None) -> QApplication:
    """The QApplication with the app's identity and style (reuses one if it exists, e.g. in tests)."""
    app = QApplication.instance() or QApplication(list(argv) if argv is not None else sys.argv[:1])
    app.setApplicationName("NeuroWorkbench")
    app.setOrganizationName("NeuroWorkbench")
    app.setApplicationVersion(__version__)
    app.setWindowIcon(icon("neuroworkbench"))
    app.setStyle("Fusion")
    app.setStyleSheet(style_sheet())
    import pyqtgraph as pg

    pg.setConfigOptions(antialias=False, background="w", foreground="#2d3748")  # every plot matches the light theme
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Open the workbench with optional files; returns the exit code of the event loop."""
    files = list(argv) if argv is not None else sys.argv[1:]
    app = create_application()
    window = MainWindow()
    window.show()
    if files:
        window.open_files(files)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())


def recent_label(path: Path) -> str:
    """How File ▸ Open recent names a file: a Phy folder (its params.py) by the folder's name."""
    if path.name == "params.py":
        return f"{path.parent.name} (Phy folder)"
    return path.name
