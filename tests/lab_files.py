"""Small files in the layouts labs' acquisition systems write, made by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_spikeglx(folder, data: np.ndarray, sample_rate: float = 30000.0, run: str = "run", ap_gain: int = 500) -> Path:
    """A SpikeGLX Neuropixels 1.0 run ``folder/<run>_g0/<run>_g0_imec0/<run>_g0_t0.imec0.ap.bin`` and its
    ``.meta``; ``data`` is int16 samples × 384, written with a 385th sync channel (a square wave).

    The .meta holds what SpikeGLX writes for an NP1.0 probe: IMRO table (bank 0, AP gain ``ap_gain``),
    channel and shank maps, saved channels, rate, ±0.6 V range over 512 levels. µV per unit is then
    0.6 / 512 / ap_gain × 1e6 (2.34375 at gain 500).
    """
    n_samples, n_probe = data.shape
    assert n_probe == 384, "a Neuropixels 1.0 probe records 384 channels"
    run_dir = Path(folder) / f"{run}_g0" / f"{run}_g0_imec0"
    run_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{run}_g0_t0.imec0.ap"
    full = np.empty((n_samples, 385), dtype="<i2")
    full[:, :384] = data
    full[:, 384] = (np.arange(n_samples) // 1000 % 2) * 64
    full.tofile(run_dir / f"{stem}.bin")
    imro = "(0,384)" + "".join(f"({c} 0 0 {ap_gain} 250 1)" for c in range(384))
    chan_map = "(384,384,1)" + "".join(f"(AP{c};{c}:{c})" for c in range(384)) + "(SY0;768:768)"
    shank_map = "(1,2,480)" + "".join(f"(0:{c % 2}:{c // 2}:1)" for c in range(384))
    meta = {
        "acqApLfSy": "384,384,1", "appVersion": "20201103", "fileCreateTime": "2024-05-01T10:00:00",
        "fileName": str(run_dir / f"{stem}.bin"), "fileSizeBytes": str(full.nbytes), "fileTimeSecs": f"{n_samples / sample_rate}",
        "firstSample": "0", "imAiRangeMax": "0.6", "imAiRangeMin": "-0.6", "imMaxInt": "512", "imDatPrb_pn": "NP1000",
        "imDatPrb_type": "0", "imDatPrb_sn": "18005117", "imSampRate": f"{sample_rate}", "nSavedChans": "385",
        "snsApLfSy": "384,0,1", "snsSaveChanSubset": "all", "typeThis": "imec",
        "~imroTbl": imro, "~snsChanMap": chan_map, "~snsShankMap": shank_map,
    }
    (run_dir / f"{stem}.meta").write_text("".join(f"{k}={v}\n" for k, v in meta.items()))
    return run_dir / f"{stem}.bin"


#: Session metadata as a lab gives it (NWB's own field names), for the NWB exports.
NWB_METADATA = {
    "session_description": "Acute recording in mouse V1, drifting gratings",
    "experimenter": ["Doe, Jane"],
    "institution": "University of Examples",
    "lab": "Systems Neuroscience Lab",
    "keywords": ["V1", "mouse"],
    "experiment_description": "Orientation tuning under anaesthesia",
    "subject": {"subject_id": "M42", "species": "Mus musculus", "sex": "F", "age": "P90D"},
    "location": "VISp",
}


def nwbinspector_problems(path) -> list[str]:
    """nwbinspector's messages on an NWB file at CRITICAL or BEST_PRACTICE_VIOLATION importance (or worse)."""
    from nwbinspector import Importance, inspect_nwbfile

    bad = Importance.BEST_PRACTICE_VIOLATION.value
    return [f"{m.importance.name} {m.check_function_name} {m.location}: {m.message}"
            for m in inspect_nwbfile(nwbfile_path=str(path)) if m.importance.value >= bad]
