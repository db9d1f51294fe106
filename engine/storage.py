"""Where hand work lives, and writing it so that it is never lost.

Hand work (spine labels, unit curation, accepted ROIs, drawn regions) is saved after every
change with :func:`atomic_write_bytes` and friends: the new content goes to a temporary file
in the same folder, is flushed to disk, then renamed over the old file. A crash or power cut
leaves either the old or the new file, never half of one.

:func:`workdir_for` says where a dataset's hand work goes: a ``<name>.neurowb`` folder next to
the data file when that folder is writable (so it travels with the data, like Phy's
``cluster_group.tsv``), otherwise a folder under the user's data directory keyed by the data
file's absolute path (for read-only data such as a shared drive).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

APP_DIR_NAME = "NeuroWorkbench"


def user_data_dir() -> Path:
    """Per-user data folder: ``$NEUROWB_DATA_DIR``, else ``$XDG_DATA_HOME/NeuroWorkbench`` (~/.local/share/...)."""
    override = os.environ.get("NEUROWB_DATA_DIR")
    if override:
        return Path(override)
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / APP_DIR_NAME


def workdir_for(data_path: str | os.PathLike, create: bool = True) -> Path:
    """Folder that holds the hand work and results belonging to one data file."""
    data_path = Path(data_path).absolute()
    beside = data_path.parent / f"{data_path.name}.neurowb"
    if beside.is_dir() and os.access(beside, os.W_OK):
        return beside
    if not beside.exists() and os.access(data_path.parent, os.W_OK):
        if create:
            beside.mkdir(exist_ok=True)
        return beside
    key = hashlib.sha1(str(data_path).encode()).hexdigest()[:12]
    fallback = user_data_dir() / "autosave" / f"{data_path.name}-{key}"
    if create:
        fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would have,
        # or keep the mode of the file it replaces.
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if os.name == "posix":  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_npy(path: str | os.PathLike, array) -> Path:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buffer.getvalue())


def read_model_file(path: str | os.PathLike, load, model_format: str, max_version: int, what: str, train_hint: str) -> dict:
    """The payload of a saved model, or an InputError naming what is wrong and what to do.

    ``load(path)`` reads the file (joblib, torch...); the payload must be a dict whose
    ``format`` is ``model_format`` and whose ``format_version`` is at most ``max_version``.
    ``what`` names the kind of model ("spine model") and ``train_hint`` says how to make one.
    """
    from engine.errors import InputError

    path = Path(path)
    advice = train_hint[:1].upper() + train_hint[1:] + "."
    if not path.is_file():
        raise InputError(f"{what[:1].upper() + what[1:]} file not found: '{path}'. Check the path, or {train_hint}.")
    try:
        payload = load(path)
    except Exception as exc:
        raise InputError(f"'{path.name}' is not a readable {what} (corrupt, or made by another program). {advice}",
                         details=f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != model_format:
        raise InputError(f"'{path.name}' is not a NeuroWorkbench {what}. {advice}")
    version = int(payload.get("format_version", 0))
    if version > max_version:
        raise InputError(f"'{path.name}' was written by a newer NeuroWorkbench (model format {version}, this one reads "
                         f"up to {max_version}): update NeuroWorkbench or retrain the model.")
    return payload
