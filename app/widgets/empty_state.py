"""What a view shows before there is data: what will appear, and how to get there."""

from __future__ import annotations

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from app.resources import icon


class EmptyState(QWidget):
    def __init__(self, title: str, hint: str, icon_name: str | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("EmptyState")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        if icon_name:
            picture = QLabel()
            picture.setPixmap(icon(icon_name).pixmap(72, 72))
            picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
            layout.addWidget(picture)
        self.title = QLabel(title, objectName="EmptyStateTitle")
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint = QLabel(hint, objectName="EmptyStateHint")
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)
        layout.addWidget(self.title)
        layout.addWidget(self.hint)
        self.buttons = QVBoxLayout()
        self.buttons.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addLayout(self.buttons)
        layout.addStretch(2)

    def add_button(self, text: str, slot, primary: bool = False) -> QPushButton:
        button = QPushButton(text)
        if primary:
            button.setObjectName("Primary")
        button.setMinimumWidth(180)
        button.clicked.connect(slot)
        self.buttons.addWidget(button, alignment=Qt.AlignmentFlag.AlignCenter)
        return button
