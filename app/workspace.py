"""Base class of the four workspaces (one per modality).

A workspace is a QWidget with its own layout; it declares the file types it opens, opens them
through background jobs, and can load its demo dataset. It talks to the window around it only
through the :class:`app.shell.Shell` interface (``window.run_job(...)``, ``window.settings``,
``window.show_status(...)`` …), so no workspace imports the main window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QScrollArea, QSizePolicy, QStackedWidget, QVBoxLayout, QWidget

from app.actions import ActionRegistry
from app.jobs import Job
from app.shell import Shell
from app.widgets.empty_state import EmptyState


class Workspace(QWidget):
    key: str = ""  # settings key and demo key: "morphology", "ephys", "calcium", "factors"
    title: str = ""
    sidebar_label: str = ""  # when the title is too long for the sidebar
    icon_name: str = ""
    extensions: tuple[str, ...] = ()
    data_loaded = pyqtSignal(str)  # path of the dataset now shown

    def __init__(self, window: Shell):
        super().__init__()
        self.window = window
        self.current_path: Path | None = None
        self.registry = ActionRegistry(self, self.title, refused=lambda action: window.show_status(
            f"{action.name} is not available now" + (f": {action.help}" if action.help else ".")))  # keys, buttons, F1

    # -- file handling -------------------------------------------------------------------
    def can_open(self, path: Path) -> bool:
        """Whether this workspace opens ``path`` (by extension; override to peek inside)."""
        return path.suffix.lower() in self.extensions

    def file_filter(self) -> str:
        patterns = " ".join(f"*{ext}" for ext in self.extensions)
        return f"{self.title} files ({patterns})"

    def open_file(self, path: Path) -> Job | None:
        """Start loading ``path`` in the background; returns the job."""
        raise NotImplementedError

    def open_demo(self, demo_files: dict[str, Path]) -> Job | None:
        path = demo_files.get(self.key)
        return self.open_file(path) if path is not None else None

    def demo_steps(self) -> list[tuple[str, Callable[[], Job | None]]]:
        """(name, action) pairs the demo runs after opening its data, with a screenshot after each;
        an action may return a Job, which is waited for."""
        return []

    def closing(self) -> None:
        """The window is closing: save what is still pending (hand work is saved on every change already)."""

    def run_dataset_job(self, name: str, func, *args, on_result: Callable, **kwargs) -> Job:
        """``window.run_job`` for a job computed from the dataset shown now (``job.dataset``).

        The engine saves what the job makes with that dataset; ``on_result`` runs only while that
        dataset is still the one shown. When the user opened another meanwhile, the view stays on
        it and the status bar says where the result went. Use :meth:`shows` in the job's progress
        and ended handlers for the same test.
        """
        dataset = self.current_path

        def deliver(result) -> None:
            if self.current_path == dataset:
                on_result(result)
            else:
                self.window.show_status(f"{name} of {dataset.name} finished; its result is saved with {dataset.name}: "
                                        "open it again to see it.", 15000)

        job = self.window.run_job(name, func, *args, on_result=deliver, **kwargs)
        job.dataset = dataset
        return job

    def shows(self, job: Job) -> bool:
        """Whether the dataset ``job`` was computed from (:meth:`run_dataset_job`) is the one shown."""
        return getattr(job, "dataset", self.current_path) == self.current_path

    def loaded(self, path: Path) -> None:
        """Call when a dataset is shown: brings the content forward, remembers the path, tells the shell."""
        self.center.setCurrentWidget(self.content)
        self.current_path = path
        self.data_loaded.emit(str(path))

    def assemble(self, controls: list[QWidget], content: QWidget, empty_title: str, empty_hint: str, open_label: str) -> None:
        """Lay out the workspace: a control column, and the content behind an empty state until data is shown."""
        self.empty = EmptyState(empty_title, empty_hint, self.icon_name)
        self.empty.add_button(open_label, self.window.open_dialog, primary=True)
        self.empty.add_button("Open demo data", self.window.open_demo)
        self.content = content
        self.center = QStackedWidget()
        self.center.addWidget(self.empty)
        self.center.addWidget(content)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(control_column(*controls))
        layout.addWidget(self.center, 1)


def control_column(*groups: QWidget, width: int = 320) -> QScrollArea:
    """A fixed-width scrollable column of group boxes: the controls side of a workspace."""
    for group in groups:  # combo boxes must not widen the column past its width
        for combo in group.findChildren(QComboBox):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
    inner = QWidget()
    # the column's width is the viewport's, never the content's minimum: a wider content would be clipped at
    # the right and shift sideways when a focused control is scrolled into view
    inner.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    layout = QVBoxLayout(inner)
    layout.setContentsMargins(8, 4, 8, 8)
    for group in groups:
        layout.addWidget(group)
    layout.addStretch(1)
    scroll = QScrollArea()
    scroll.setWidget(inner)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QScrollArea.Shape.NoFrame)
    scroll.setFixedWidth(width)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)  # the same width scrolled or not
    return scroll


class InfoBox(QGroupBox):
    """A group box of read-only "name: value" rows, refreshed from a dict."""

    def __init__(self, title: str, fields: list[tuple[str, str]]):
        super().__init__(title)
        self.form = QFormLayout(self)
        self.values: dict[str, QLabel] = {}
        for key, label in fields:
            value = QLabel("—", objectName="InfoValue")
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setWordWrap(True)
            # Long values (file names) must not widen the fixed control column: clip, full text in the tooltip.
            value.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            self.values[key] = value
            self.form.addRow(f"{label}:", value)

    def update_values(self, values: dict[str, object]) -> None:
        for key, label in self.values.items():
            text = format_value(values.get(key, "—"))
            label.setText(text)
            label.setToolTip(text)


def format_value(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (tuple, list)):
        return " × ".join(format_value(v) for v in value)
    return str(value)
