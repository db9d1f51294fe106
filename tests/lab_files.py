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


# -- calcium imaging ---------------------------------------------------------------------------------

def scanimage_frame_data(channels=(1,), planes: int = 1, flyback: int = 0, frames_per_slice: int = 1, frame_rate: float = 30.0,
                         height: int = 16, width: int = 20, volumes: int = 1, column: bool = True) -> dict:
    """The non-varying frame data ScanImage 2020+ writes (the keys readers use, with ScanImage's names and values):
    saved channels, FastZ volumes of ``planes`` slices plus ``flyback`` discarded frames, frame and volume rates.
    Channel lists are MATLAB column vectors (``[1;2]``) as ScanImage writes them, or rows (``[1 2]``) with ``column=False``."""
    volumetric = planes > 1
    per_volume = planes * frames_per_slice
    saved = ("[" + (";" if column else " ").join(str(c) for c in channels) + "]") if len(channels) > 1 else str(channels[0])
    return {
        "SI.VERSION_MAJOR": "'2020'", "SI.VERSION_MINOR": "'1'", "SI.TIFF_FORMAT_VERSION": "4", "SI.LINE_FORMAT_VERSION": "1",
        "SI.acqState": "'grab'", "SI.acqsPerLoop": "1", "SI.imagingSystem": "'ResScanner'",
        "SI.hChannels.channelName": "{'Channel 1' 'Channel 2' 'Channel 3' 'Channel 4'}",
        "SI.hChannels.channelSave": saved, "SI.hChannels.channelsActive": saved,
        "SI.hChannels.channelsDataType": "'int16'",
        "SI.hFastZ.enable": "true" if volumetric else "false", "SI.hFastZ.flybackTime": "0.015",
        "SI.hFastZ.numDiscardFlybackFrames": str(flyback), "SI.hFastZ.discardFlybackFrames": "true" if flyback else "false",
        "SI.hRoiManager.linesPerFrame": str(height), "SI.hRoiManager.pixelsPerLine": str(width),
        "SI.hRoiManager.scanFrameRate": f"{frame_rate}", "SI.hRoiManager.scanFramePeriod": f"{1 / frame_rate}",
        "SI.hRoiManager.scanVolumeRate": f"{frame_rate / (per_volume + flyback) if volumetric else frame_rate}",
        "SI.hScan2D.logFramesPerFile": "Inf", "SI.hScan2D.logAverageFactor": "1",
        "SI.hStackManager.enable": "true" if volumetric else "false", "SI.hStackManager.stackMode": "'fast'",
        "SI.hStackManager.numSlices": str(planes), "SI.hStackManager.actualNumSlices": str(planes),
        "SI.hStackManager.framesPerSlice": str(frames_per_slice), "SI.hStackManager.actualNumVolumes": str(volumes),
        "SI.hStackManager.numVolumes": str(volumes),
        "SI.hStackManager.numFramesPerVolume": str(per_volume), "SI.hStackManager.numFramesPerVolumeWithFlyback": str(per_volume + flyback),
        "SI.hStackManager.zs": "[" + " ".join(str(30 * z) for z in range(planes)) + "]",
    }


def write_scanimage(path, pages: np.ndarray, frame_data: dict, frame_rate: float = 30.0) -> Path:
    """A ScanImage 2016+ BigTIFF as ScanImage's own writer lays it out (ScanImage BigTiff Specification): the BigTIFF
    header; at byte 16 the magic 117637889, format version 3, the lengths of the non-varying frame data (MATLAB
    ``key = value`` lines, NUL-terminated) and of the ROI group JSON, then both; then per page its IFD (Software and
    Artist tags point at the two blocks), its frame-varying ImageDescription (frame numbers, timestamps) and the
    int16 pixels, uncompressed in one strip. ``pages`` (n_pages × height × width) in acquisition order: channels
    fastest, then slices, flyback frames, volumes."""
    import json
    import struct

    pages = np.asarray(pages, dtype="<i2")
    n, height, width = pages.shape
    static = ("\n".join(f"{k} = {v}" for k, v in frame_data.items()) + "\n").encode() + b"\0"
    rois = (json.dumps({"RoiGroups": {"imagingRoiGroup": {"ver": 1, "classname": "scanimage.mroi.RoiGroup", "name": "Default",
                                                          "rois": {"ver": 1, "name": "Default Imaging ROI", "enable": 1,
                                                                   "scanfields": {"pixelResolutionXY": [width, height]}}}}})
            .encode() + b"\0")
    out = bytearray(struct.pack("<2sHHHQ", b"II", 43, 8, 0, 0))  # first IFD offset filled in below
    out += struct.pack("<IIII", 117637889, 3, len(static), len(rois))
    static_at = len(out)
    out += static
    rois_at = len(out)
    out += rois
    ifd_offsets = []
    for i in range(n):
        if len(out) % 2:
            out += b"\0"
        t = (i / frame_rate)
        description = (f"frameNumbers = {i + 1}\nframeNumberAcquisition = {i + 1}\nframeTimestamps_sec = {t:.6f}\n"
                       f"acqTriggerTimestamps_sec = \nnextFileMarkerTimestamps_sec = \nendOfAcquisition = {int(i == n - 1)}\n"
                       f"endOfAcquisitionMode = 0\ndcOverVoltage = 0\nepoch = [2024 5 1 10 0 0.000]\nauxTrigger0 = []\n"
                       f"auxTrigger1 = []\nauxTrigger2 = []\nauxTrigger3 = []\nI2CData = {{}}\n").encode() + b"\0"
        tags = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 1, 16), (259, 3, 1, 1), (262, 3, 1, 1),
                (270, 2, len(description), None), (273, 16, 1, None), (274, 3, 1, 1), (277, 3, 1, 1), (278, 3, 1, height),
                (279, 16, 1, height * width * 2), (284, 3, 1, 1), (305, 2, len(static), static_at),
                (315, 2, len(rois), rois_at), (339, 3, 1, 2)]
        ifd_at = len(out)
        ifd_offsets.append(ifd_at)
        ifd_size = 8 + 20 * len(tags) + 8
        description_at = ifd_at + ifd_size
        pixels_at = description_at + len(description)
        ifd = bytearray(struct.pack("<Q", len(tags)))
        for code, kind, count, value in tags:
            value = {270: description_at, 273: pixels_at}.get(code, value)
            field = struct.pack("<H", value) + b"\0" * 6 if kind == 3 else struct.pack("<Q", value)
            ifd += struct.pack("<HHQ", code, kind, count) + field
        ifd += struct.pack("<Q", 0)  # next IFD: patched when the next page is written
        out += ifd + description + pages[i].tobytes()
    struct.pack_into("<Q", out, 8, ifd_offsets[0])
    for a, b in zip(ifd_offsets[:-1], ifd_offsets[1:]):
        struct.pack_into("<Q", out, a + 8 + 20 * 15, b)
    Path(path).write_bytes(bytes(out))
    return Path(path)
