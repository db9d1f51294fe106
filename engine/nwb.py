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


#: What the user says about a session, with NWB's own field names (the keys of a --nwb-metadata file).
SESSION_FIELDS = ("session_description", "experimenter", "institution", "lab", "keywords", "experiment_description")
SUBJECT_FIELDS = ("subject_id", "species", "sex", "age", "description", "strain", "genotype", "date_of_birth", "weight")
SEXES = ("M", "F", "U", "O")
#: Besides those: ``location``, the brain area recorded (the ``location`` of NWB's ElectrodeGroup, electrodes and
#: ImagingPlane; an Allen CCF term such as "VISp" for a mouse, as nwbinspector asks).
LOCATION_FIELD = "location"


def check_metadata(meta, source: str = "NWB metadata") -> dict:
    """``meta`` checked against NWB's rules (what nwbinspector checks), as a clean dict; InputError naming
    the field otherwise. ``experimenter`` and ``keywords`` may be one string or a list; ``subject`` is a dict."""
    from engine.errors import InputError

    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise InputError(f"{source} must be a mapping of NWB field names to values (session_description, experimenter, "
                         "institution, lab, keywords, experiment_description, subject).")
    unknown = sorted(set(meta) - set(SESSION_FIELDS) - {"subject", LOCATION_FIELD})
    if unknown:
        raise InputError(f"{source}: unknown field(s) {', '.join(map(str, unknown))}; use NWB's names: "
                         f"{', '.join(SESSION_FIELDS)}, subject, location.")
    out: dict = {}
    for key in (*SESSION_FIELDS, LOCATION_FIELD):
        value = meta.get(key)
        if value in (None, "", []):
            continue
        if key in ("experimenter", "keywords"):
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in values):
                raise InputError(f"{source}: {key} must be a name or a list of names (text).")
            out[key] = [v.strip() for v in values]
        elif isinstance(value, str):
            out[key] = value.strip()
        else:
            raise InputError(f"{source}: {key} must be text, got {value!r}.")
    subject = meta.get("subject")
    if subject not in (None, {}):
        if not isinstance(subject, dict):
            raise InputError(f"{source}: subject must be a mapping (subject_id, species, sex, age).")
        unknown = sorted(set(subject) - set(SUBJECT_FIELDS))
        if unknown:
            raise InputError(f"{source}: unknown subject field(s) {', '.join(map(str, unknown))}; use {', '.join(SUBJECT_FIELDS)}.")
        clean = {k: str(v).strip() for k, v in subject.items() if v not in (None, "")}
        if "sex" in clean and clean["sex"] not in SEXES:
            raise InputError(f"{source}: subject sex must be one of M, F, U (unknown), O (other), got {clean['sex']!r}.")
        if "age" in clean and not clean["age"].startswith("P"):
            raise InputError(f"{source}: subject age is an ISO 8601 duration such as P90D (90 days) or P12W, got {clean['age']!r}.")
        out["subject"] = clean
    return out


def read_metadata(path: os.PathLike) -> dict:
    """The session metadata in a JSON or YAML file (NWB's field names), checked by :func:`check_metadata`."""
    from pathlib import Path

    import yaml

    from engine.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"NWB metadata file not found: '{path}'. Check the path.")
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML is a superset of JSON: one reader for both
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"'{path.name}' is neither valid JSON nor YAML: fix the line it reports.", details=str(exc)) from exc
    return check_metadata(meta, f"'{path.name}'")


def new_nwbfile(metadata: dict | None, description: str, session_start, notes: str):
    """A pynwb ``NWBFile`` with the user's session metadata (:func:`check_metadata`) where given;
    ``description`` is the session description when the user gave none."""
    import uuid

    from pynwb import NWBFile
    from pynwb.file import Subject

    meta = check_metadata(metadata)
    subject = meta.pop("subject", None)
    meta.pop(LOCATION_FIELD, None)
    meta.setdefault("session_description", description)
    nwb = NWBFile(identifier=str(uuid.uuid4()), session_start_time=session_start, notes=notes, **meta)
    if subject:
        nwb.subject = Subject(**subject)
    return nwb



def recorded_location(metadata: dict | None) -> str:
    """The brain area the user named (``location``), else "unknown"."""
    return check_metadata(metadata).get(LOCATION_FIELD, "unknown")


def command_metadata(nwb_path: str | None, metadata_path: str | None) -> dict | None:
    """A command's ``--nwb`` / ``--nwb-metadata``, checked before any long work: the metadata read, or None."""
    from engine.errors import InputError

    if metadata_path and not nwb_path:
        raise InputError("--nwb-metadata describes the NWB file: give --nwb FILE.nwb too.")
    if nwb_path:
        nwb_target(nwb_path)
    return read_metadata(metadata_path) if metadata_path else None
