"""Finding data series in NWB files (Neurodata Without Borders; HDF5 underneath), read with h5py.

Only the file's structure is read here (group names and their ``neurodata_type``), so sorting an
.nwb file to the workspace that can open it costs milliseconds even for a large recording.
"""

from __future__ import annotations

import os

IMAGING_TYPES = ("TwoPhotonSeries", "OnePhotonSeries")
ELECTRICAL_TYPES = ("ElectricalSeries",)


def _type_of(obj) -> str:
    value = obj.attrs.get("neurodata_type", "")
    return value.decode() if isinstance(value, bytes) else str(value)


def find_series(f, types: tuple[str, ...], name: str | None = None) -> list[str]:
    """Paths of the groups of ``types`` in the open h5py file ``f``: raw ``acquisition`` first, then the
    rest in name order; with ``name``, only the one whose path or last part is ``name``."""
    import h5py

    found: list[str] = []
    f.visititems(lambda key, obj: found.append(key) if isinstance(obj, h5py.Group) and _type_of(obj) in types else None)
    found.sort(key=lambda key: (not key.startswith("acquisition/"), key))
    if name is not None:
        found = [key for key in found if key == name or key.rsplit("/", 1)[-1] == name]
    return found


def has_series(path: str | os.PathLike, types: tuple[str, ...]) -> bool:
    """Whether the NWB file at ``path`` holds a series of ``types`` (False when it cannot be read)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return bool(find_series(f, types))
    except Exception:  # not HDF5, unreadable: the opening workspace says what is wrong
        return False


def open_nwb(path: os.PathLike):
    """The NWB file at ``path`` opened read-only with h5py; InputError when it is not readable HDF5."""
    import h5py

    from engine.errors import InputError

    try:
        return h5py.File(path, "r")
    except Exception as exc:
        raise InputError(f"Could not read '{os.path.basename(path)}' as an NWB (HDF5) file: it is corrupt or not NWB.",
                         details=f"{type(exc).__name__}: {exc}") from exc


def series_rate(group) -> float | None:
    """Samples per second of an NWB time series group: its ``rate``, else from its timestamps; None if neither."""
    import numpy as np

    if "starting_time" in group and "rate" in group["starting_time"].attrs:
        return float(group["starting_time"].attrs["rate"])
    if "timestamps" in group and len(group["timestamps"]) > 1:
        step = float(np.median(np.diff(group["timestamps"][:10_000])))
        return 1.0 / step if step > 0 else None
    return None


def nwb_target(path: os.PathLike):
    """``path`` as a Path, checked to be an .nwb file name (InputError otherwise)."""
    from pathlib import Path

    from engine.errors import InputError

    path = Path(path)
    if path.suffix.lower() != ".nwb":
        raise InputError(f"'{path.name}': an NWB file name ends in .nwb.")
    return path


def write_nwb(nwb, path: os.PathLike):
    """Write the pynwb ``NWBFile`` to ``path`` atomically (a crash never leaves half a file under the name)."""
    from pynwb import NWBHDF5IO

    path = nwb_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial.nwb")  # pynwb wants the .nwb extension
    with NWBHDF5IO(str(partial), "w") as io:
        io.write(nwb)
    os.replace(partial, path)
    return path
