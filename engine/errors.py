"""Errors that reach a person.

`InputError` carries a message a user can act on: what is wrong and what to do about it
("probe has 32 channels, file has 31: pick the matching probe file"). Loaders raise it for
unreadable, empty, truncated or inconsistent files; the CLI prints it as one line and the
app shows it in a dialog, with `details` (e.g. the underlying exception) expandable.
"""

from __future__ import annotations

from pathlib import Path


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


def check_input_file(path: str | Path, extensions: tuple[str, ...], what: str) -> Path:
    """The checks every loader starts with: a supported extension, an existing and non-empty file.

    ``what`` names the kind of file in messages ("a mesh", "a movie", "an image").
    """
    path = Path(path)
    if path.suffix.lower() not in extensions:
        raise InputError(
            f"Cannot open '{path.name}' as {what}: extension '{path.suffix or '(none)'}' is not supported. "
            f"Convert it to one of: {', '.join(extensions)}."
        )
    if not path.is_file():
        raise InputError(f"File not found: '{path}'. Check the path and that the file still exists.")
    if path.stat().st_size == 0:
        raise InputError(f"'{path.name}' is empty (0 bytes): the copy or the export failed; copy or export it again.")
    return path
