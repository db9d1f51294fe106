"""Persistent user settings (QSettings, INI format).

Where: ``~/.config/NeuroWorkbench/NeuroWorkbench.ini`` on Linux (the platform's config folder
elsewhere), or ``$NEUROWB_CONFIG_DIR/NeuroWorkbench/NeuroWorkbench.ini`` when that variable is
set (tests use it to stay out of the user's settings). Holds window geometry and state,
recent files, last folders per workspace, and the compute preferences (device, scheduler).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from PyQt6.QtCore import QByteArray, QSettings

ORGANIZATION = "NeuroWorkbench"
APPLICATION = "NeuroWorkbench"
CONFIG_DIR_ENV = "NEUROWB_CONFIG_DIR"
MAX_RECENT_FILES = 10
MAX_REMEMBERED = 50  # per group of remember(): the most recently used paths


def _qsettings() -> QSettings:
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, override)
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION)


class Settings:
    """Typed accessors over QSettings; every setter writes through immediately."""

    def __init__(self, qsettings: QSettings | None = None):
        self.q = qsettings if qsettings is not None else _qsettings()

    @property
    def path(self) -> str:
        return self.q.fileName()

    # -- recent files and folders ------------------------------------------------------
    def recent_files(self) -> list[str]:
        value = self.q.value("recent/files", [], type=list)
        return [str(v) for v in value if v]

    def add_recent_file(self, path: str | os.PathLike) -> list[str]:
        path = str(Path(path).absolute())
        files = [path] + [f for f in self.recent_files() if f != path]
        files = files[:MAX_RECENT_FILES]
        self.q.setValue("recent/files", files)
        self.q.sync()
        return files

    def remove_recent_file(self, path: str) -> None:
        self.q.setValue("recent/files", [f for f in self.recent_files() if f != path])

    def clear_recent_files(self) -> None:
        self.q.setValue("recent/files", [])

    def last_folder(self, key: str = "open") -> str:
        folder = self.q.value(f"folders/{key}", "", type=str)
        return folder if folder and Path(folder).is_dir() else str(Path.home())

    def set_last_folder(self, key: str, folder: str | os.PathLike) -> None:
        self.q.setValue(f"folders/{key}", str(folder))

    # -- window ------------------------------------------------------------------------
    def window_geometry(self) -> QByteArray | None:
        value = self.q.value("window/geometry")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def window_state(self) -> QByteArray | None:
        value = self.q.value("window/state")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def save_window(self, geometry: QByteArray, state: QByteArray, workspace: str) -> None:
        self.q.setValue("window/geometry", geometry)
        self.q.setValue("window/state", state)
        self.q.setValue("window/workspace", workspace)
        self.q.sync()

    def last_workspace(self) -> str:
        return self.q.value("window/workspace", "", type=str)

    # -- compute -----------------------------------------------------------------------
    def device(self) -> str:
        """'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' (NEUROWB_DEVICE still wins, see engine.device)."""
        return self.q.value("compute/device", "auto", type=str) or "auto"

    def set_device(self, device: str) -> None:
        self.q.setValue("compute/device", device)

    def scheduler(self) -> str:
        """'auto' (threads here, worker processes for big jobs), 'threads', 'local', 'serial', or a
        Dask scheduler address such as tcp://host:8786."""
        return self.q.value("compute/scheduler", "auto", type=str) or "auto"

    def set_scheduler(self, address: str) -> None:
        self.q.setValue("compute/scheduler", address)

    # -- choices remembered per file or folder (a raw layout per folder, mesh units per file) --
    def remembered(self, group: str, path: str | os.PathLike) -> dict | None:
        """What :meth:`remember` stored for ``path`` in ``group``, or None."""
        value = self._remembered(group).get(str(Path(path).absolute()))
        return value if isinstance(value, dict) else None

    def remember(self, group: str, path: str | os.PathLike, value: dict) -> None:
        """Keep ``value`` (JSON-able) for ``path``; a group keeps its :data:`MAX_REMEMBERED` latest paths."""
        key = str(Path(path).absolute())
        entries = {key: value, **{k: v for k, v in self._remembered(group).items() if k != key}}
        self.q.setValue(f"remembered/{group}", json.dumps(dict(list(entries.items())[:MAX_REMEMBERED])))
        self.q.sync()

    def _remembered(self, group: str) -> dict:
        try:
            entries = json.loads(self.q.value(f"remembered/{group}", "{}", type=str) or "{}")
        except ValueError:  # a hand-edited or damaged entry: forget it rather than fail
            return {}
        return entries if isinstance(entries, dict) else {}

    # -- anything else (per-workspace options) -------------------------------------------
    def value(self, key: str, default=None, type=None):
        return self.q.value(key, default) if type is None else self.q.value(key, default, type=type)

    def set_value(self, key: str, value) -> None:
        self.q.setValue(key, value)
