"""The bundled demo data: one small procedural dataset per workspace, in real file formats.

Generated on first use (a few seconds) into ``<user data dir>/demo/<version>/`` rather than
shipped as binaries in the repository; later calls find the files and return at once. Each
dataset is written, then marked complete, so an interrupted generation is simply redone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from engine import __version__
from engine.progress import as_progress
from engine.storage import atomic_write_text, user_data_dir


def _writers() -> dict[str, tuple[str, Callable[[Path], object]]]:
    from engine.calcium.synth import write_demo_movie
    from engine.ephys.synth import write_demo_recording
    from engine.factors.synth import write_demo_mosaic
    from engine.mesh.synth import write_demo_dendrite

    return {
        "morphology": ("demo_dendrite.ply", write_demo_dendrite),
        "ephys": ("demo_recording.raw", write_demo_recording),
        "calcium": ("demo_movie.tif", write_demo_movie),
        "factors": ("demo_mosaic.png", write_demo_mosaic),
    }


def demo_folder() -> Path:
    return user_data_dir() / "demo" / __version__


def ensure_demo_data(folder: str | Path | None = None, progress=None) -> dict[str, Path]:
    """Paths of the demo datasets by workspace key, generating any that are missing."""
    progress = as_progress(progress)
    folder = Path(folder) if folder is not None else demo_folder()
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    writers = _writers()
    for i, (key, (name, write)) in enumerate(writers.items()):
        progress.check()
        path = folder / name
        marker = folder / f".{name}.complete"
        if not marker.exists():
            progress.report(i / len(writers), f"generating {name}")
            write(path)
            atomic_write_text(marker, __version__)
        files[key] = path
    progress.report(1.0, "demo data ready")
    return files
