"""Dialogs of the shell: errors, About, keyboard shortcuts, preferences."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from PyQt6.QtCore import PYQT_VERSION_STR, QT_VERSION_STR, Qt
from PyQt6.QtGui import QAction
from PyQt6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine import __version__


def show_error(parent: QWidget | None, title: str, message: str, details: str | None = None) -> QMessageBox:
    """A non-blocking error box (window-modal); technical details sit behind "Show Details…"."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle(title)
    box.setText(message)
    if details:
        box.setDetailedText(details)
    box.setStandardButtons(QMessageBox.StandardButton.Ok)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
    box.open()
    return box


#: Set while nobody is there to answer (the screenshot demo): :func:`confirm` takes its action at once
#: instead of waiting forever. Its questions guard results that are kept aside, never deleted unasked.
unattended = False


def confirm(parent: QWidget | None, title: str, message: str, action: str) -> bool:
    """A modal question with the buttons ``action`` and Cancel (the default); True when ``action`` was chosen
    (at once while :data:`unattended`)."""
    if unattended:
        return True
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle(title)
    box.setText(message)
    go = box.addButton(action, QMessageBox.ButtonRole.AcceptRole)
    box.setDefaultButton(box.addButton(QMessageBox.StandardButton.Cancel))
    box.exec()
    return box.clickedButton() is go


def ask_nwb_path(parent: QWidget | None, title: str, start: Path) -> Path | None:
    """A save dialog for an .nwb file (the extension added when the name lacks it); None when cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, title, str(start), "NWB files (*.nwb)")
    if not path:
        return None
    path = Path(path)
    return path if path.suffix.lower() == ".nwb" else path.with_name(path.name + ".nwb")


class NwbMetadataDialog(QDialog):
    """The session's description, experimenter, subject… for an NWB export, in NWB's own field names."""

    FIELDS = (("session_description", "Session description"), ("experiment_description", "Experiment description"),
              ("experimenter", "Experimenter(s)"), ("institution", "Institution"), ("lab", "Lab"), ("keywords", "Keywords"),
              ("location", "Brain area"), ("subject_id", "Subject ID"), ("species", "Species"), ("age", "Age"))
    LISTS = ("experimenter", "keywords")  # comma-separated in the form… but "Last, First" names are kept whole: ";" separates
    SUBJECT = ("subject_id", "species", "sex", "age")

    def __init__(self, metadata: dict, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("NWB session metadata")
        form = QFormLayout(self)
        note = QLabel("Stored in the NWB file as DANDI asks for it; remembered for every export from this folder.")
        note.setWordWrap(True)
        form.addRow(note)
        subject = metadata.get("subject", {})
        self.edits: dict[str, QLineEdit] = {}
        hints = {"experimenter": "Last, First; Last, First", "keywords": "V1; mouse", "species": "Mus musculus",
                 "age": "P90D (ISO 8601: 90 days)", "location": "VISp (Allen CCF term for a mouse)"}
        for key, label in self.FIELDS:
            value = subject.get(key) if key in self.SUBJECT else metadata.get(key)
            edit = QLineEdit("; ".join(value) if isinstance(value, list) else (value or ""))
            edit.setPlaceholderText(hints.get(key, ""))
            self.edits[key] = edit
            form.addRow(f"{label}:", edit)
        self.sex = QComboBox()
        self.sex.addItems(["", "F", "M", "U", "O"])
        self.sex.setCurrentText(subject.get("sex", ""))
        form.addRow("Sex:", self.sex)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def metadata(self) -> dict:
        values = {key: edit.text().strip() for key, edit in self.edits.items()}
        for key in self.LISTS:
            values[key] = [v.strip() for v in values[key].split(";") if v.strip()]
        values["sex"] = self.sex.currentText()
        out = {k: v for k, v in values.items() if k not in self.SUBJECT and v}
        subject = {k: values[k] for k in self.SUBJECT if values[k]}
        if subject:
            out["subject"] = subject
        return out


def ask_nwb_metadata(parent: QWidget | None, settings, folder: Path) -> dict | None:
    """The NWB session metadata for exports from ``folder``: asked once (pre-filled with the last answers
    given anywhere) and remembered per folder in the settings; None when cancelled."""
    import json

    from engine.errors import InputError
    from engine.nwb import check_metadata

    from urllib.parse import quote

    key = f"nwb_metadata/folders/{quote(Path(folder).resolve().as_posix(), safe='')}"  # one settings key, no "/" groups
    try:
        stored = json.loads(settings.value(key, "", type=str) or "null")
        if stored is not None:
            return check_metadata(stored)
    except (ValueError, InputError):
        pass  # unreadable: ask again
    last = json.loads(settings.value("nwb_metadata/last", "{}", type=str) or "{}")
    while True:
        dialog = NwbMetadataDialog(last if isinstance(last, dict) else {}, parent)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        try:
            meta = check_metadata(dialog.metadata(), "NWB metadata")
            break
        except InputError as exc:
            QMessageBox.warning(parent, "NWB session metadata", exc.message)
            last = dialog.metadata()
    settings.set_value(key, json.dumps(meta))
    settings.set_value("nwb_metadata/last", json.dumps(meta))
    return meta


def versions() -> list[tuple[str, str]]:
    """Versions of what the app runs on (imported lazily: torch is slow to import)."""
    import numpy
    import pyqtgraph
    import scipy
    import sklearn
    import torch
    import vispy

    return [
        ("NeuroWorkbench", __version__),
        ("Python", f"{platform.python_version()} ({sys.platform})"),
        ("Qt / PyQt6", f"{QT_VERSION_STR} / {PYQT_VERSION_STR}"),
        ("NumPy", numpy.__version__),
        ("SciPy", scipy.__version__),
        ("PyTorch", torch.__version__),
        ("scikit-learn", sklearn.__version__),
        ("pyqtgraph", pyqtgraph.__version__),
        ("vispy", vispy.__version__),
    ]


class AboutDialog(QDialog):
    def __init__(self, device_summary: str, settings_path: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("About NeuroWorkbench")
        layout = QVBoxLayout(self)
        title = QLabel(f"<h2>NeuroWorkbench {__version__}</h2>"
                       "<p>Neuron morphology, spike sorting, calcium imaging and brain microarchitecture "
                       "in one desktop workbench.<br>License: GPL-3.0-or-later.</p>")
        title.setWordWrap(True)
        layout.addWidget(title)
        form = QFormLayout()
        form.addRow("Compute device:", QLabel(device_summary, objectName="InfoValue"))
        for name, version in versions():
            form.addRow(f"{name}:", QLabel(version, objectName="InfoValue"))
        form.addRow("Settings file:", QLabel(settings_path, objectName="InfoValue"))
        for i in range(form.rowCount()):
            item = form.itemAt(i, QFormLayout.ItemRole.FieldRole)
            if item and item.widget():
                item.widget().setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addLayout(form)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)


class ShortcutsDialog(QDialog):
    """The current workspace's keys (from its :class:`app.actions.ActionRegistry`), then the window's own
    (from its live QActions): read from what is registered, so the list cannot go stale."""

    def __init__(self, actions: list[QAction], parent: QWidget | None = None, registry=None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.resize(640, 620)
        sections: dict[str, list[tuple[str, str, str]]] = {}
        if registry is not None:
            for group, keys, name, help in registry.rows():
                title = group if group == registry.title else f"{registry.title} — {group}"
                sections.setdefault(title, []).append((keys, name, help))
        window_rows = set()
        for action in actions:
            for shortcut in action.shortcuts():
                text = shortcut.toString(shortcut.SequenceFormat.NativeText)
                if text:
                    window_rows.add((text, action.text().replace("&", "").rstrip(".…"), action.statusTip()))
        sections["Window"] = sorted(window_rows, key=lambda r: r[1].lower())
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Shortcut", "Action", "Details"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(True)
        for title, rows in sections.items():
            row = self.table.rowCount()
            self.table.insertRow(row)
            heading = QTableWidgetItem(title)
            font = heading.font()
            font.setBold(True)
            heading.setFont(font)
            self.table.setItem(row, 0, heading)
            self.table.setItem(row, 1, QTableWidgetItem(""))
            self.table.setSpan(row, 0, 1, 3)
            for key, name, help in rows:
                row = self.table.rowCount()
                self.table.insertRow(row)
                for column, text in enumerate((key, name, help)):
                    item = QTableWidgetItem(text)
                    item.setToolTip(text)
                    self.table.setItem(row, column, item)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.resizeRowsToContents()
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def text(self) -> str:
        """The table as plain text, one row a line (cells tab-separated)."""
        lines = []
        for row in range(self.table.rowCount()):
            cells = [self.table.item(row, c) for c in range(3)]
            lines.append("\t".join(c.text() for c in cells if c is not None and c.text()))
        return "\n".join(lines)


class PreferencesDialog(QDialog):
    """Compute device and where batch work runs (auto, threads, local Dask cluster, serial, or a scheduler address)."""

    def __init__(self, device: str, scheduler: str, devices: list[str], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        form = QFormLayout(self)
        self.device = QComboBox()
        self.device.addItems(devices)
        if device not in devices:
            self.device.addItem(device)
        self.device.setCurrentText(device)
        self.device.setToolTip("The NEUROWB_DEVICE environment variable overrides this.")
        self.scheduler = QLineEdit(scheduler)
        self.scheduler.setPlaceholderText("auto, threads, local, serial, or tcp://host:8786")
        self.scheduler.setToolTip("Batch work (chunks, patches, files) runs in threads of this process ('auto' "
                                  "starts worker processes only for big jobs; 'threads'), on a local Dask cluster "
                                  "('local'), in one thread ('serial'), or on the Dask scheduler at this address "
                                  "(its workers need the data on a shared filesystem).")
        form.addRow("Compute device:", self.device)
        form.addRow("Batch scheduler:", self.scheduler)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
