"""Errors that reach a person.

`InputError` carries a message a user can act on: what is wrong and what to do about it
("probe has 32 channels, file has 31: pick the matching probe file"). Loaders raise it for
unreadable, empty, truncated or inconsistent files; the CLI prints it as one line and the
app shows it in a dialog, with `details` (e.g. the underlying exception) expandable.
"""

from __future__ import annotations


class NeuroWorkbenchError(Exception):
    """Base class for errors raised on purpose by the engine."""


class InputError(NeuroWorkbenchError, ValueError):
    """Bad input (file, parameter, selection) described for the person who gave it.

    Parameters
    ----------
    message:
        One or two sentences: what is wrong, and what to do.
    details:
        Optional technical detail (parser message, offending values) shown on request.
    """

    def __init__(self, message: str, details: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message
