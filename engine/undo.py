"""One bounded undo / redo history for every kind of hand work (no Qt).

A hand-work model (ephys curation, calcium decisions, mesh labels, factor regions) makes a change,
saves it, and records one *edit* here: whatever the model needs to take the change back and to make
it again (the spikes a merge moved, a brush stroke's vertices, the state before and after). The
history calls the model's ``revert(edit)`` on undo and ``reapply(edit)`` on redo; each of those
changes the model and saves it as the change itself did, so every step on disk stays atomic.

The history is bounded (the oldest edits go first), a new edit clears the redo list, and
``on_change`` is called after every change of what can be undone or redone, so a view (a Qt
session model) can refresh its Undo / Redo buttons without the engine knowing about Qt.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

Edit = TypeVar("Edit")

DEFAULT_DEPTH = 200


class History(Generic[Edit]):
    """Undo and redo lists of ``Edit``s, at most ``depth`` deep."""

    def __init__(self, revert: Callable[[Edit], object], reapply: Callable[[Edit], object],
                 depth: int = DEFAULT_DEPTH, on_change: Callable[[], object] | None = None):
        if depth < 1:
            raise ValueError(f"an undo history needs a depth of at least 1, not {depth}")
        self.revert = revert
        self.reapply = reapply
        self.depth = int(depth)
        self.on_change = on_change
        self._undo: list[Edit] = []
        self._redo: list[Edit] = []

    # -- state -------------------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def last(self) -> Edit | None:
        """The edit Undo would take back (None when there is none)."""
        return self._undo[-1] if self._undo else None

    def __len__(self) -> int:
        return len(self._undo)

    # -- changes -----------------------------------------------------------------------------
    def record(self, edit: Edit) -> None:
        """Remember a change the model has just made (and saved); forgets what could be redone."""
        self._undo.append(edit)
        del self._undo[:-self.depth]
        self._redo.clear()
        self._changed()

    def amend(self, edit: Edit) -> None:
        """Replace the last edit by ``edit`` (a brush drag grows one stroke: one undo step)."""
        if not self._undo:
            raise IndexError("there is no edit to amend")
        self._undo[-1] = edit
        self._redo.clear()
        self._changed()

    def undo(self) -> Edit | None:
        """Take back the last edit; returns it (None when there is nothing to undo). The edit moves
        to the redo list only once ``revert`` succeeded, so a failed save can be retried."""
        if not self._undo:
            return None
        edit = self._undo[-1]
        self.revert(edit)
        self._redo.append(self._undo.pop())
        self._changed()
        return edit

    def redo(self) -> Edit | None:
        """Make the last undone edit again; returns it (None when there is nothing to redo)."""
        if not self._redo:
            return None
        edit = self._redo[-1]
        self.reapply(edit)
        self._undo.append(self._redo.pop())
        self._changed()
        return edit

    def clear(self) -> None:
        """Forget every edit (the model was replaced: a new file, a new run)."""
        if self._undo or self._redo:
            self._undo.clear()
            self._redo.clear()
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
