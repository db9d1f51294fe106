"""Flat binary extracellular recordings (``.raw``, ``.bin``, ``.dat``), memory-mapped.

Layout: samples × channels, C order (channel index varies fastest), little-endian, no header
— the layout of SpikeGLX/Open Ephys ``.dat``/``.bin`` files and of Kilosort's input. What the
file cannot say (channel count, sample rate, sample type, scaling to µV) lives in a JSON
sidecar beside it, ``<file>.json`` (e.g. ``rec.raw.json``) or ``<stem>.json`` (``rec.json``)::

    {"n_channels": 4, "sample_rate": 15000, "dtype": "int16", "gain_uv": 1.0, "offset": 2056}

Values in µV are ``(raw - offset) * gain_uv``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.errors import InputError

RAW_EXTENSIONS = (".raw", ".bin", ".dat")
DTYPES = ("int16", "uint16", "int32", "float32")

#: Channel counts of common probes/headstages, listed when a file does not fit the one given.
_COMMON_CHANNEL_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 385)


@dataclass
class RecordingParams:
    """How to read a flat binary recording. Invalid values raise :class:`InputError`.

    ``dtype`` is one of int16, uint16, int32, float32 (little-endian); ``gain_uv`` is µV per
    unit of the stored value after subtracting ``offset``.
    """

    n_channels: int
    sample_rate: float
    dtype: str = "int16"
    gain_uv: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        try:
            n = int(self.n_channels)
        except (TypeError, ValueError):
            n = -1
        if isinstance(self.n_channels, bool) or n != self.n_channels or n < 1:
            raise InputError(f"Channel count must be a positive whole number, got {self.n_channels!r}: enter the probe's channel count.")
        self.n_channels = n
        try:
            rate = float(self.sample_rate)
        except (TypeError, ValueError):
            rate = float("nan")
        if not math.isfinite(rate) or rate <= 0:
            raise InputError(f"Sample rate must be a positive number of Hz, got {self.sample_rate!r}: enter e.g. 30000.")
        self.sample_rate = rate
        try:
            name = np.dtype(self.dtype).name
        except TypeError:
            name = str(self.dtype)
        if name not in DTYPES:
            raise InputError(f"Sample type {self.dtype!r} is not supported: use one of {', '.join(DTYPES)}.")
        self.dtype = name
        for field in ("gain_uv", "offset"):
            try:
                value = float(getattr(self, field))
            except (TypeError, ValueError):
                value = float("nan")
            if not math.isfinite(value):
                raise InputError(f"{field} must be a finite number, got {getattr(self, field)!r}.")
            setattr(self, field, value)
        if self.gain_uv == 0:
            raise InputError("gain_uv must not be 0: give the µV per ADC unit (1.0 if unknown).")

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    def numpy_dtype(self) -> np.dtype:
        return np.dtype(self.dtype).newbyteorder("<")


def sidecar_candidates(path: str | os.PathLike) -> list[Path]:
    """Where a sidecar may be: ``<file>.json`` first, then ``<stem>.json``."""
    path = Path(path)
    return [path.with_name(path.name + ".json"), path.with_suffix(".json")]


def read_sidecar(path: str | os.PathLike) -> RecordingParams | None:
    """The :class:`RecordingParams` from the JSON sidecar of ``path``; None when there is none.

    Unknown keys are ignored (later versions may add probe or unit information).
    """
    for candidate in sidecar_candidates(path):
        if candidate.is_file():
            break
    else:
        return None
    try:
        meta = json.loads(candidate.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"Sidecar '{candidate.name}' is not valid JSON: fix or delete it and enter the recording parameters again.",
            details=str(exc),
        ) from exc
    if not isinstance(meta, dict):
        raise InputError(f"Sidecar '{candidate.name}' must hold a JSON object with n_channels and sample_rate.")
    missing = [k for k in ("n_channels", "sample_rate") if k not in meta]
    if missing:
        raise InputError(f"Sidecar '{candidate.name}' lacks {' and '.join(missing)}: add them (e.g. \"n_channels\": 32, \"sample_rate\": 30000).")
    kwargs = {k: meta[k] for k in ("n_channels", "sample_rate", "dtype", "gain_uv", "offset") if k in meta}
    try:
        return RecordingParams(**kwargs)
    except InputError as exc:
        raise InputError(f"Sidecar '{candidate.name}': {exc.message}", details=exc.details) from exc


def write_sidecar(path: str | os.PathLike, params: RecordingParams) -> Path:
    """Write ``<file>.json`` beside the recording atomically; returns the sidecar path."""
    from engine.storage import atomic_save_json

    params.validate()
    target = sidecar_candidates(path)[0]
    return atomic_save_json(target, asdict(params))


class RawRecording:
    """A memory-mapped flat binary recording; nothing is read until :meth:`read`.

    ``params`` defaults to the sidecar beside the file; InputError when there is none.
    """

    def __init__(self, path: str | os.PathLike, params: RecordingParams | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"Recording not found: '{self.path}'. Check the path and that the file still exists.")
        if params is None:
            params = read_sidecar(self.path)
            if params is None:
                raise InputError(
                    f"No parameters for '{self.path.name}': a raw file does not say its channel count, sample rate "
                    f"or sample type. Enter them, or put a sidecar '{self.path.name}.json' beside it."
                )
        elif not isinstance(params, RecordingParams):
            raise TypeError("params must be a RecordingParams")
        params.validate()
        self.params = params
        size = self.path.stat().st_size
        frame = params.n_channels * params.itemsize
        if size == 0:
            raise InputError(f"Recording '{self.path.name}' is empty (0 bytes): the copy or the acquisition failed.")
        if size % frame:
            fits = [n for n in _COMMON_CHANNEL_COUNTS if size % (n * params.itemsize) == 0]
            hint = f" Channel counts that fit this size with {params.dtype}: {', '.join(map(str, fits))}." if fits else ""
            raise InputError(
                f"Recording '{self.path.name}' is {size} bytes, not a multiple of n_channels × bytes per sample = "
                f"{params.n_channels} × {params.itemsize} = {frame} (remainder {size % frame}). Likely the channel "
                f"count or sample type is wrong, or the file is truncated or has a header.{hint}"
            )
        self._mm: np.memmap | None = np.memmap(self.path, dtype=params.numpy_dtype(), mode="r", shape=(size // frame, params.n_channels))

    # -- facts --------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return int(self.raw.shape[0])

    @property
    def n_channels(self) -> int:
        return self.params.n_channels

    @property
    def sample_rate(self) -> float:
        return self.params.sample_rate

    @property
    def dtype(self) -> np.dtype:
        """The stored sample type."""
        return self.params.numpy_dtype()

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.n_samples / self.sample_rate

    @property
    def raw(self) -> np.memmap:
        """The raw values, samples × channels (a read-only memmap; slice it, do not copy it)."""
        if self._mm is None:
            raise ValueError("recording is closed")
        return self._mm

    # -- data ---------------------------------------------------------------------
    def read(self, start: int, stop: int, channels: Sequence[int] | slice | None = None) -> np.ndarray:
        """Samples ``start:stop`` (clipped to the recording) in µV, float32, samples × channels."""
        start = int(np.clip(int(start), 0, self.n_samples))
        stop = int(np.clip(int(stop), start, self.n_samples))
        if channels is None:
            block = self.raw[start:stop]
        elif isinstance(channels, slice):
            block = self.raw[start:stop, channels]
        else:
            idx = np.asarray(channels, dtype=np.int64).reshape(-1)
            if idx.size and (idx.min() < -self.n_channels or idx.max() >= self.n_channels):
                raise InputError(
                    f"Channel {int(idx.max()) if idx.max() >= self.n_channels else int(idx.min())} does not exist: "
                    f"'{self.path.name}' has channels 0..{self.n_channels - 1}."
                )
            block = self.raw[start:stop][:, idx]
        out = np.array(block, dtype=np.float32)  # always a copy: the memmap is read-only
        if self.params.offset:
            out -= np.float32(self.params.offset)
        if self.params.gain_uv != 1.0:
            out *= np.float32(self.params.gain_uv)
        return out

    def close(self) -> None:
        """Drop the memory map (the file is released once no slice of :attr:`raw` is alive)."""
        self._mm = None

    def __enter__(self) -> "RawRecording":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RawRecording('{self.path.name}', {self.n_channels} ch, {self.sample_rate:g} Hz, {self.duration:.2f} s)"
