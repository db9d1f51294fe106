"""The plane / channel chooser shown when a multi-plane or multi-channel recording (ScanImage, Bruker) is opened."""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QSpinBox, QWidget

from engine.calcium.io import RecordingLayout


class PlaneChannelDialog(QDialog):
    """One plane (0 = the first, as Suite2p's plane0) and one channel (by its acquisition name) of ``layout``."""

    def __init__(self, path: Path, layout: RecordingLayout, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Choose plane and channel")
        self.layout_ = layout
        form = QFormLayout(self)
        form.addRow(QLabel(f"“{path.name}” is a {layout.system} recording of {layout.describe()}.\n"
                           "CNMF runs on one plane of one channel; each has its own results."))
        self.plane = QSpinBox()
        self.plane.setRange(0, layout.planes - 1)
        self.plane.setEnabled(layout.planes > 1)
        self.plane.setToolTip("0 = the first plane of each volume (Suite2p's plane0)")
        form.addRow("Plane", self.plane)
        self.channel = QComboBox()
        for number, name in zip(layout.channels, layout.channel_names):
            self.channel.addItem(f"{number}: {name}", number)
        self.channel.setEnabled(len(layout.channels) > 1)
        form.addRow("Channel", self.channel)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def selection(self) -> dict:
        return {"plane": self.plane.value(), "channel": int(self.channel.currentData())}


def ask_plane_channel(parent: QWidget | None, path: Path, layout: RecordingLayout) -> dict | None:
    """The chosen ``{"plane", "channel"}``, or None when cancelled."""
    dialog = PlaneChannelDialog(path, layout, parent)
    return dialog.selection() if dialog.exec() == QDialog.DialogCode.Accepted else None
