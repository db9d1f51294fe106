"""Bundled resources: the style sheet and icons, package data beside this file (``app/resources/``), so a
wheel install (``pip install .``) has them as the development install does."""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtGui import QIcon

RESOURCES = Path(__file__).resolve().parent


def resource_path(*parts: str) -> Path:
    return RESOURCES.joinpath(*parts)


def icon(name: str) -> QIcon:
    """Icon ``icons/<name>.svg`` (an empty icon if it is missing, never an error)."""
    path = resource_path("icons", f"{name}.svg")
    return QIcon(str(path)) if path.exists() else QIcon()


def style_sheet() -> str:
    path = resource_path("style.qss")
    return path.read_text(encoding="utf-8") if path.exists() else ""
