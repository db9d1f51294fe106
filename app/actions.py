"""One registry of a workspace's actions: what each does, its keys, when it may run, and its help.

Every workspace fills an :class:`ActionRegistry`. From that one list come the keyboard shortcuts,
the rows of Help ▸ Keyboard shortcuts (F1), the hint line under the controls, and the enabled
state (and key in the tooltip) of the buttons bound to an action, so a key, its button and its
help cannot drift apart. An action without a callback documents a key or gesture that a view
handles itself (Enter closes a polygon, Ctrl-click adds to a selection).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from PyQt6.QtGui import QKeySequence, QShortcut
from PyQt6.QtWidgets import QAbstractButton, QWidget

Key = str | QKeySequence.StandardKey


def key_text(key: Key) -> str:
    """A key as the person reads it (the platform's names: Ctrl+Z, Del, Right)."""
    if isinstance(key, str) and not QKeySequence(key).toString():  # a gesture: "double-click", "wheel"
        return key
    return QKeySequence(key).toString(QKeySequence.SequenceFormat.NativeText)


@dataclass
class Action:
    name: str  # what it does, short: shown in F1 and the hint line
    keys: tuple[Key, ...]
    callback: Callable[[], object] | None  # None: handled by a view, listed for help only
    enabled: Callable[[], bool] | None = None  # None: always
    help: str = ""  # a longer word for F1 (what to do first, what else triggers it)
    group: str = ""
    hint: bool = True  # shown in the hint line under the controls
    buttons: list[QAbstractButton] = field(default_factory=list)

    @property
    def key_texts(self) -> list[str]:
        return [key_text(key) for key in self.keys]

    def is_enabled(self) -> bool:
        return self.callback is not None and (self.enabled is None or bool(self.enabled()))

    def trigger(self) -> object:
        """Run the action if it may run now (a disabled action does nothing, as its button)."""
        return self.callback() if self.is_enabled() else None


class ActionRegistry:
    """The actions of one workspace (``owner``): shortcuts live while ``owner`` is shown."""

    def __init__(self, owner: QWidget, title: str, refused: Callable[[Action], None] | None = None):
        self.owner = owner
        self.title = title
        self.refused = refused  # told when a key hits a disabled action (the status bar says why)
        self.actions: dict[str, Action] = {}
        self.shortcuts: list[QShortcut] = []

    def add(self, name: str, callback: Callable[[], object] | None, keys: Key | tuple[Key, ...] = (), *,
            enabled: Callable[[], bool] | None = None, help: str = "", group: str = "", hint: bool = True) -> Action:
        keys = keys if isinstance(keys, tuple) else (keys,)
        if name in self.actions:
            raise ValueError(f"action {name!r} is registered twice in {self.title}")
        action = self.actions[name] = Action(name, keys, callback, enabled, help, group or self.title, hint)
        if callback is not None:
            for key in keys:
                shortcut = QShortcut(QKeySequence(key), self.owner)
                shortcut.activated.connect(lambda action=action: self._key_pressed(action))
                self.shortcuts.append(shortcut)
        return action

    def bind(self, name: str, button: QAbstractButton) -> QAbstractButton:
        """Let ``button`` run action ``name``: same callback, same enabled state, its keys in the tooltip."""
        action = self.actions[name]
        action.buttons.append(button)
        button.clicked.connect(lambda _checked=False: action.trigger())
        if action.keys:
            tip = button.toolTip()
            button.setToolTip(f"{tip} ({' or '.join(action.key_texts)})" if tip else " or ".join(action.key_texts))
        button.setEnabled(action.is_enabled())
        return button

    def trigger(self, name: str) -> object:
        return self.actions[name].trigger()

    def _key_pressed(self, action: Action) -> None:
        if action.is_enabled():
            action.callback()
        elif self.refused is not None:
            self.refused(action)

    def refresh(self) -> None:
        """Re-read every action's when-enabled test into its buttons (call after the state changed)."""
        for action in self.actions.values():
            if action.buttons:
                enabled = action.is_enabled()
                for button in action.buttons:
                    button.setEnabled(enabled)

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(group, keys, name, help) of every action with a key, in the order they were added."""
        return [(a.group, " or ".join(a.key_texts), a.name, a.help) for a in self.actions.values() if a.keys]

    def hint(self) -> str:
        """The one-line reminder under the controls: "G merge · K split · …"."""
        return " · ".join(f"{'/'.join(a.key_texts)} {a.name.lower()}" for a in self.actions.values() if a.keys and a.hint)
