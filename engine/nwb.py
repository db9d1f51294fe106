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
