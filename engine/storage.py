"""Where hand work lives, and writing it so that it is never lost.

Hand work (spine labels, unit curation, accepted ROIs, drawn regions) is saved after every
change with :func:`atomic_write_bytes` and friends: the new content goes to a temporary file
in the same folder, is flushed to disk, then renamed over the old file. A crash or power cut
leaves either the old or the new file, never half of one.

:func:`workdir_for` says where a dataset's hand work goes: a ``<name>.neurowb`` folder next to
the data file when that folder is writable (so it travels with the data, like Phy's
``cluster_group.tsv``), otherwise a folder under the user's data directory keyed by the data
file's absolute path (for read-only data such as a shared drive).

Results made of several files (a Phy folder, a CNMF output folder) are written into a staging
folder beside the target and swapped in only when complete (:func:`staged_folder`): a cancel or
a crash at any stage leaves the previous result where it was. A hand-work file that cannot be
read is never overwritten: :func:`set_aside_damaged` keeps it as ``<name>.damaged-<time>``
before anything starts afresh. :func:`remove_stale_temp` clears what killed writers left behind.
A data file with a small JSON sidecar describing it (the microarchitecture latents and their grid)
is replaced together with it in one transaction (:func:`commit_with_sidecar`, :func:`settle_sidecar`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

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


def temp_file_beside(path: Path) -> tuple[int, str]:
    """A new temporary file ``.<name>.<pid>-<random>.tmp`` in ``path``'s folder (mkstemp's (fd, name)):
    the pid says whether its writer is still alive (:func:`remove_stale_temp`)."""
    return tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(path)
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


# -- cleaning up after a kill ---------------------------------------------------------------------

# ours: .<name>.<pid>-<mkstemp's 8 characters>.tmp; older versions had no pid
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:(?P<pid>\d+)-)?[a-z0-9_]{8}\.tmp$")
_STAGING = re.compile(r"^\.(?P<name>.+)\.(?P<kind>staging|replaced)-(?P<pid>\d+)$")
LEGACY_TEMP_AGE_S = 600  # a temp name without a pid (older versions): stale after this long


def _writer_gone(pid: int | None, entry: Path) -> bool:
    """Whether the process that made ``entry`` is gone: its pid no longer runs (POSIX), or, without a
    pid or a way to ask (older names, Windows), the entry is older than :data:`LEGACY_TEMP_AGE_S`."""
    if pid == os.getpid():
        return False  # another thread of this process may be writing it
    if pid is None or os.name != "posix":
        return time.time() - entry.stat().st_mtime > LEGACY_TEMP_AGE_S
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_stale_temp(*folders: str | os.PathLike) -> list[Path]:
    """Remove what killed writers left in ``folders``: ``.<name>.*.tmp`` files and staging folders of
    processes no longer running. A folder swap interrupted between its two renames is finished or
    undone (:func:`staged_folder`), so the target holds a complete result. Returns what was removed."""
    removed = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            temp, staging = _TEMP.match(entry.name), _STAGING.match(entry.name)
            try:
                if temp and entry.is_file():
                    pid = temp.group("pid")
                    if _writer_gone(int(pid) if pid else None, entry):
                        entry.unlink()
                        removed.append(entry)
                elif staging and entry.is_dir() and _writer_gone(int(staging.group("pid")), entry):
                    target = folder / staging.group("name")
                    if staging.group("kind") == "replaced" and not target.exists():
                        os.replace(entry, target)  # killed between the swap's two renames: put the old one back
                    elif staging.group("kind") == "replaced":  # killed before the old one was kept or deleted:
                        os.replace(entry, free_name(target.with_name(f"{target.name}_replaced-{time.strftime('%Y%m%d-%H%M%S')}")))
                    else:
                        shutil.rmtree(entry)
                        removed.append(entry)
            except OSError:
                pass  # not ours to remove (permissions) or gone already
    return removed


# -- results made of several files: staged, then swapped in -----------------------------------------

def _fsync_dir(folder: Path) -> None:
    if os.name == "posix":
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def free_name(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``… the first that does not exist."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike, keep_old: str | os.PathLike | None = None) -> Iterator[Path]:
    """A new, empty folder ``.<name>.staging-<pid>`` beside ``target`` to write a result into.

    When the block ends normally the staging folder replaces ``target`` (the old one is moved to
    ``keep_old`` when given, else deleted); when it raises (a cancel, an error) the staging folder
    is removed and ``target`` is untouched. The swap is two renames; a crash between them leaves
    the old folder as ``.<name>.replaced-<pid>``, which :func:`remove_stale_temp` puts back (or, when
    the new one is already in place, keeps visibly as ``<name>_replaced-<time>``: never deleted).
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.staging-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    aside = target.with_name(f".{target.name}.replaced-{os.getpid()}")
    had_old = target.exists()
    if had_old:
        os.replace(target, aside)
    os.replace(staging, target)
    _fsync_dir(target.parent)
    if had_old:
        if keep_old is not None:
            os.replace(aside, free_name(Path(keep_old)))
        else:
            shutil.rmtree(aside, ignore_errors=True)


# -- a data file and the small sidecar that describes it, replaced together ---------------------------

_INCOMING = re.compile(r"^\.(?P<name>.+)\.incoming-(?P<pid>\d+)-(?P<id>[0-9a-f]+)$")
INCOMING_KEY = "incoming"  # the sidecar's field naming the data file it commits to (until that is in place)


def commit_with_sidecar(data_tmp: str | os.PathLike, path: str | os.PathLike, sidecar: str | os.PathLike,
                        meta: dict) -> None:
    """Make the finished, flushed file ``data_tmp`` become ``path`` and ``meta`` (JSON, with a unique
    ``meta["id"]``) become ``sidecar``, as one transaction.

    Three steps, each one rename: the data file goes to ``.<name>.incoming-<pid>-<id>`` beside ``path``;
    the sidecar, naming that file, replaces the old one (the commit point); the data file replaces
    ``path``. A kill before the commit leaves the old pair (and an orphan that :func:`settle_sidecar`
    removes); a kill after it leaves a sidecar whose named file :func:`settle_sidecar` moves into place.
    Readers call :func:`settle_sidecar` first and so always see one pair, the old or the new.
    """
    path, sidecar = Path(path).absolute(), Path(sidecar).absolute()
    incoming = path.with_name(f".{path.name}.incoming-{os.getpid()}-{meta['id']}")
    os.replace(data_tmp, incoming)
    try:
        _fsync_dir(path.parent)
        atomic_save_json(sidecar, {**meta, INCOMING_KEY: incoming.name})
    except BaseException:  # not committed (a full disk...): the old pair stays, nothing of the new one
        with contextlib.suppress(OSError):
            os.unlink(incoming)
        raise
    with contextlib.suppress(FileNotFoundError):  # (a reader may have finished it: settle_sidecar)
        os.replace(incoming, path)
    _fsync_dir(path.parent)


def settle_sidecar(path: str | os.PathLike, sidecar: str | os.PathLike, meta: dict) -> Path:
    """The data file that belongs to ``meta``, the content just read from ``sidecar`` (:func:`commit_with_sidecar`).

    A commit cut after its sidecar was written is finished here (the named file replaces ``path``; in a
    folder that cannot be written, that file itself is returned). Files of commits cut before their
    sidecar was written belong to no sidecar, and temporary files of the pair (:func:`remove_stale_temp`)
    to no one: they are removed once their writer is gone."""
    path, sidecar = Path(path), Path(sidecar)
    named = meta.get(INCOMING_KEY) if isinstance(meta, dict) else None
    result = path
    if isinstance(named, str) and (path.parent / named).is_file():
        try:
            os.replace(path.parent / named, path)
            _fsync_dir(path.parent)
        except OSError:  # read-only: read it where it is
            result = path.parent / named
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            incoming, temp = _INCOMING.match(entry.name), _TEMP.match(entry.name)
            if incoming and incoming.group("name") == path.name and entry.name != named:
                pid = int(incoming.group("pid"))
            elif temp and temp.group("name") in (path.name, sidecar.name):
                pid = int(temp.group("pid")) if temp.group("pid") else None
            else:
                continue
            if entry.is_file() and _writer_gone(pid, entry):
                with contextlib.suppress(OSError):
                    entry.unlink()
    return result


# -- damaged hand work ----------------------------------------------------------------------------

def set_aside_damaged(path: str | os.PathLike, tag: str = "damaged") -> Path:
    """Rename an unreadable hand-work file to ``<name>.damaged-<YYYYmmdd-HHMMSS>`` beside it (``tag``
    for another reason; never overwritten: a person can still open or restore it); returns the new path."""
    path = Path(path)
    aside = free_name(path.with_name(f"{path.name}.{tag}-{time.strftime('%Y%m%d-%H%M%S')}"))
    os.replace(path, aside)
    return aside


def damaged_message(what: str, path: Path, aside: Path) -> str:
    """The one line the window's dialog and the CLI show after :func:`set_aside_damaged`."""
    return (f"The saved {what} in '{path.name}' could not be read (damaged file). It was kept as '{aside.name}' "
            f"in {aside.parent}, and new work starts afresh beside it. Restore it from a backup if you need it.")


def read_hand_work(path: str | os.PathLike, parse, what: str) -> tuple[object | None, str]:
    """``(parse(path), "")``, ``(None, "")`` when there is no file, or — when ``parse`` raises — the
    file set aside (:func:`set_aside_damaged`) and ``(None, message)`` to show before starting fresh."""
    path = Path(path)
    if not path.is_file():
        return None, ""
    try:
        return parse(path), ""
    except Exception as exc:
        aside = set_aside_damaged(path)
        message = damaged_message(what, path, aside)
        import logging

        cause = getattr(exc, "details", None) or f"{type(exc).__name__}: {exc}"
        logging.getLogger(__name__).warning("%s (%s)", message, cause)  # the CLI's line
        return None, message
