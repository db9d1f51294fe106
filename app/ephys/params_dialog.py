"""Asks for the layout of a raw binary recording that has no sidecar file."""

from __future__ import annotations

from PyQt6.QtWidgets import QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QLabel, QSpinBox

from engine.ephys.io import RecordingParams


class RecordingParamsDialog(QDialog):
    def __init__(self, file_name: str, file_size: int, parent=None, last: RecordingParams | None = None):
        """``last``: the layout given for the previous file of the same folder, offered again."""
        super().__init__(parent)
        self.setWindowTitle("Raw recording layout")
        form = QFormLayout(self)
        note = QLabel(f"“{file_name}” ({file_size:,} bytes) has no sidecar file.\n"
                      "Describe its layout (samples × channels, C order):")
        note.setWordWrap(True)
        form.addRow(note)
        if last is not None:
            form.addRow(QLabel("Filled in with the layout of the previous file in this folder.", objectName="Hint"))
        self.n_channels = QSpinBox(minimum=1, maximum=4096, value=32)
        self.sample_rate = QDoubleSpinBox(minimum=100.0, maximum=1_000_000.0, value=30_000.0, decimals=1, suffix=" Hz")
        self.dtype = QComboBox()
        self.dtype.addItems(["int16", "uint16", "int32", "float32"])
        self.gain = QDoubleSpinBox(minimum=1e-6, maximum=1e6, value=1.0, decimals=6, suffix=" µV/bit")
        self.offset = QDoubleSpinBox(minimum=-1e9, maximum=1e9, value=0.0, decimals=2)
        self.save_sidecar = QCheckBox("Remember (write a .json sidecar next to the file)")
        self.save_sidecar.setChecked(True)
        form.addRow("Channels:", self.n_channels)
        form.addRow("Sample rate:", self.sample_rate)
        form.addRow("Data type:", self.dtype)
        form.addRow("Gain:", self.gain)
        form.addRow("Offset (bits):", self.offset)
        form.addRow(self.save_sidecar)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        if last is not None:
            self.n_channels.setValue(last.n_channels)
            self.sample_rate.setValue(last.sample_rate)
            self.dtype.setCurrentText(str(last.dtype))
            self.gain.setValue(last.gain_uv)
            self.offset.setValue(last.offset)

    def params(self) -> RecordingParams:
        return RecordingParams(n_channels=self.n_channels.value(), sample_rate=self.sample_rate.value(),
                               dtype=self.dtype.currentText(), gain_uv=self.gain.value(), offset=self.offset.value())
