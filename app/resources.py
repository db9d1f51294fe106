"""Paths to bundled resources (style sheet, icons) in the repository's ``resources/`` folder."""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtGui import QIcon

RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def resource_path(*parts: str) -> Path:
    return RESOURCES.joinpath(*parts)


def icon(name: str) -> QIcon:
    """Icon ``resources/icons/<name>.svg`` (an empty icon if it is missing, never an error)."""
    path = resource_path("icons", f"{name}.svg")
    return QIcon(str(path)) if path.exists() else QIcon()


def style_sheet() -> str:
    path = resource_path("style.qss")
    return path.read_text(encoding="utf-8") if path.exists() else ""
