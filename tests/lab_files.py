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


# -- ephys acquisition systems ------------------------------------------------------------------------

def _qstring(text: str | None) -> bytes:
    """A Qt QString as Intan's files store it: uint32 byte length (0xFFFFFFFF for null), then UTF-16LE."""
    import struct

    if text is None:
        return struct.pack("<I", 0xFFFFFFFF)
    data = text.encode("utf-16-le")
    return struct.pack("<I", len(data)) + data


def write_intan_rhd(path, amplifier: np.ndarray, adc: np.ndarray, sample_rate: float = 20000.0) -> Path:
    """An Intan RHD2000 ``.rhd`` file (header and data together, "traditional" format, version 3.0) as the RHD2000
    file-format application note lays it out: magic 0xC6912702, version, rate, filter settings, three notes, the
    temperature sensor count, board mode, reference channel, then signal groups (port A: the amplifier channels;
    board ADC inputs) with one record per channel; then data blocks of 128 samples (60 before version 2.0): int32 timestamps, uint16 amplifier
    samples per channel, uint16 ADC samples per channel. ``amplifier`` and ``adc`` are uint16 samples × channels,
    their length a multiple of 128; the amplifier's µV are 0.195 × (value − 32768)."""
    import struct

    n, n_amp = amplifier.shape
    n_adc = adc.shape[1]
    assert n % 128 == 0 and adc.shape[0] == n
    header = struct.pack("<Ihhf", 0xC6912702, 3, 0, sample_rate)
    header += struct.pack("<h", 1)  # DSP enabled
    header += struct.pack("<ffffff", 1.16, 0.094, 7603.8, 1.0, 0.1, 7500.0)  # actual / desired DSP cut-off, lower, upper bandwidth
    header += struct.pack("<h", 0)  # notch filter off
    header += struct.pack("<ff", 1000.0, 1000.0)  # desired / actual impedance test frequency
    header += _qstring("acute") + _qstring("") + _qstring("")  # notes 1-3
    header += struct.pack("<h", 0)  # temperature sensor channels (v1.1+)
    header += struct.pack("<h", 0)  # eval board mode (v1.3+)
    header += _qstring("hardware")  # reference channel (v2.0+)
    header += struct.pack("<h", 2)  # signal groups

    def channel(native: str, custom: str, order: int, signal_type: int, chip_channel: int) -> bytes:
        return (_qstring(native) + _qstring(custom) + struct.pack("<hhhhhhhhhh", order, order, signal_type, 1, chip_channel, 0, 0, 0, 0, 0)
                + struct.pack("<ff", 50000.0, -30.0))  # electrode impedance magnitude (Ω) and phase (°)

    header += _qstring("Port A") + _qstring("A") + struct.pack("<hhh", 1, n_amp, n_amp)
    header += b"".join(channel(f"A-{i:03d}", f"A-{i:03d}", i, 0, i) for i in range(n_amp))
    header += _qstring("Board ADC") + _qstring("ANALOG-IN") + struct.pack("<hhh", 1, n_adc, 0)
    header += b"".join(channel(f"ANALOG-IN-{i:02d}", f"ANALOG-IN-{i:02d}", i, 3, i) for i in range(n_adc))
    blocks = []
    for b in range(n // 128):
        rows = slice(128 * b, 128 * b + 128)
        blocks.append(np.arange(128 * b, 128 * b + 128, dtype="<i4").tobytes() + np.ascontiguousarray(amplifier[rows].T, "<u2").tobytes()
                      + np.ascontiguousarray(adc[rows].T, "<u2").tobytes())
    Path(path).write_bytes(header + b"".join(blocks))
    return Path(path)


def write_neuralynx(folder, counts: np.ndarray, sample_rate: float = 32000.0, bit_volts: float = 3.0517578125e-08) -> Path:
    """A Neuralynx Cheetah session folder: one ``CSC<i>.ncs`` per channel, each a 16 kB text header (``-Key value`` lines,
    NUL-padded) followed by 1044-byte records: uint64 timestamp (µs), uint32 channel, uint32 sample rate, uint32 valid
    samples, 512 int16 samples. ``counts`` int16 samples × channels (length a multiple of 512); µV = counts × ADBitVolts × 1e6."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n, n_ch = counts.shape
    assert n % 512 == 0
    record = np.dtype([("timestamp", "<u8"), ("channel", "<u4"), ("rate", "<u4"), ("valid", "<u4"), ("samples", "<i2", 512)])
    for ch in range(n_ch):
        header = "\r\n".join([
            "######## Neuralynx Data File Header",
            f"## File Name C:\\CheetahData\\2024-05-01_10-00-00\\CSC{ch + 1}.ncs",
            "## Time Opened (m/d/y): 5/1/2024  (h:m:s.ms) 10:00:00.000",
            "## Time Closed (m/d/y): 5/1/2024  (h:m:s.ms) 10:05:00.000",
            "", "-FileType CSC", "-FileVersion 3.4", "-RecordSize 1044", "-CheetahRev 5.6.3",
            "-HardwareSubSystemName AcqSystem1", "-HardwareSubSystemType DigitalLynxSX", f"-SamplingFrequency {sample_rate:g}",
            "-ADMaxValue 32767", f"-ADBitVolts {bit_volts:.24f}".rstrip("0"), f"-AcqEntName CSC{ch + 1}", "-NumADChannels 1",
            f"-ADChannel {ch}", "-InputRange 1000", "-InputInverted False", "-DSPLowCutFilterEnabled True",
            "-DspLowCutFrequency 0.1", "-DspLowCutNumTaps 0", "-DspLowCutFilterType DCO", "-DSPHighCutFilterEnabled True",
            "-DspHighCutFrequency 9000", "-DspHighCutNumTaps 64", "-DspHighCutFilterType FIR", "-DspDelayCompensation Enabled",
            "-DspFilterDelay_µs 984", ""]).encode("latin-1")
        records = np.zeros(n // 512, record)
        records["timestamp"] = 1_000_000 + np.round(np.arange(n // 512) * 512 / sample_rate * 1e6).astype(np.uint64)
        records["channel"], records["rate"], records["valid"] = ch, int(sample_rate), 512
        records["samples"] = counts[:, ch].reshape(-1, 512)
        (folder / f"CSC{ch + 1}.ncs").write_bytes(header.ljust(16384, b"\0") + records.tobytes())
    return folder


def write_blackrock_ns5(path, counts: np.ndarray, max_analog_uv: int = 8191, max_digital: int = 32764) -> Path:
    """A Blackrock NSx file, File Spec 2.3 (Central's ``.ns5``: 30 kS/s): the basic header (``NEURALCD``, version 2.3,
    header bytes, label, comment, period 1 of 30 000 Hz time resolution, time origin as a Windows SYSTEMTIME, channel
    count), one 66-byte ``CC`` extended header per channel (electrode id and label, connector, digital and analog
    ranges, units, filters), then one data packet (0x01, timestamp, number of points, int16 samples × channels).
    µV per count = (max analog − min analog) / (max digital − min digital)."""
    import struct

    n, n_ch = counts.shape
    basic = struct.pack("<8sBBI16s256sII8HI", b"NEURALCD", 2, 3, 314 + 66 * n_ch, b"30 kS/s", b"test recording".ljust(256, b"\0"),
                        1, 30000, 2024, 5, 3, 1, 10, 0, 0, 0, n_ch)
    assert len(basic) == 314
    extended = b"".join(struct.pack("<2sH16sBBhhhh16sIIHIIH", b"CC", ch + 1, f"elec{ch + 1}".encode(), 1, ch + 1, -max_digital,
                                    max_digital, -max_analog_uv, max_analog_uv, b"uV", 300, 1, 1, 7500000, 3, 1) for ch in range(n_ch))
    assert len(extended) == 66 * n_ch
    packet = struct.pack("<BII", 1, 0, n) + np.ascontiguousarray(counts, "<i2").tobytes()
    Path(path).write_bytes(basic + extended + packet)
    return Path(path)


def write_blackrock_nev(path, spike_times: np.ndarray, electrodes: np.ndarray, n_electrodes: int, width: int = 48) -> Path:
    """A Blackrock ``.nev`` (File Spec 2.3) holding threshold crossings, as Central writes it beside the ``.ns5``: the
    336-byte basic header (``NEURALEV``, version 2.3, flag bit 0 "all waveforms 16-bit", header and packet sizes,
    30 kHz time resolutions, time origin, application, comment, extended header count), one 32-byte ``NEUEVWAV`` extended header per electrode
    (digitization factor in nV per bit, thresholds, bytes per sample, spike width), then one packet per spike:
    uint32 timestamp, uint16 electrode id, uint8 unit (0 = unsorted), a reserved byte, the int16 waveform."""
    import struct

    packet = 8 + 2 * width
    basic = struct.pack("<8sBBHIIII8H32s256sI", b"NEURALEV", 2, 3, 1, 336 + 32 * n_electrodes, packet, 30000, 30000,
                        2024, 5, 3, 1, 10, 0, 0, 0, b"File Dialog v7.0.4", b"test recording", n_electrodes)
    assert len(basic) == 336
    extended = b"".join(struct.pack("<8sHBBHHhhBBH8s", b"NEUEVWAV", e + 1, 1, e + 1, 250, 0, 0, -1000, 0, 2, width, b"")
                        for e in range(n_electrodes))
    order = np.argsort(spike_times, kind="stable")
    wave = (np.sin(np.linspace(0, 2 * np.pi, width)) * -400).astype("<i2").tobytes()
    packets = b"".join(struct.pack("<IHBB", int(spike_times[i]), int(electrodes[i]), 0, 0) + wave for i in order)
    Path(path).write_bytes(basic + extended + packets)
    return Path(path)


def write_bruker(folder, movie: np.ndarray, frame_period: float = 0.0333, channel_names=("Ch2",), micron_per_pixel: float = 1.1,
                 planes: int = 1) -> Path:
    """A Bruker Prairie View 5.6 T-series folder ``<name>/`` (``movie`` frames × channels × height × width, uint16):
    one single-page OME-TIFF per frame and channel (``<name>_Cycle<volume>_Ch<c>_<frame>.ome.tif``) and the XML
    ``<name>/<name>.xml``: <PVScan> with the state (frame period, lines, pixels, µm per pixel) and a
    <Sequence type="TSeries Timed Element"> whose <Frame relativeTime> elements list each frame's <File> elements;
    with ``planes`` > 1 a "TSeries ZSeries Element": one <Sequence> per volume (cycle), its frames the planes."""
    import tifffile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n, n_ch, height, width = movie.shape
    channels = [int(c[2:]) for c in channel_names]
    frames = []
    for t in range(n):
        files = []
        cycle, index = (t // planes + 1, t % planes + 1) if planes > 1 else (1, t + 1)
        if planes > 1 and index == 1 and t:
            frames.append(f'  </Sequence>\n  <Sequence type="TSeries ZSeries Element" cycle="{cycle}" time="10:00:01.5000000" '
                          'bidirectionalZ="False" xYStageGridDefined="False">')
        for ci, (number, cname) in enumerate(zip(channels, channel_names)):
            name = f"{folder.name}_Cycle{cycle:05d}_Ch{number}_{index:06d}.ome.tif"
            tifffile.imwrite(folder / name, movie[t, ci], ome=True, metadata={"axes": "YX", "PhysicalSizeX": micron_per_pixel})
            files.append(f'      <File channel="{number}" channelName="{cname}" page="1" filename="{name}" />')
        frames.append(f'    <Frame relativeTime="{t * frame_period:.6f}" absoluteTime="{1.5 + t * frame_period:.6f}" index="{index}" '
                      f'parameterSet="CurrentSettings">\n' + "\n".join(files) + '\n      <ExtraParameters validData="True" />\n'
                      f'      <PVStateShard>\n        <PVStateValue key="framePeriod" value="{frame_period}" />\n'
                      '      </PVStateShard>\n    </Frame>')
    xml = f"""<?xml version="1.0" encoding="utf-8"?>
<PVScan version="5.6.64.400" date="5/1/2024 10:00:00 AM" notes="">
  <SystemIDs SystemID="4353" />
  <PVStateShard>
    <PVStateValue key="activeMode" value="ResonantGalvo" />
    <PVStateValue key="bitDepth" value="13" />
    <PVStateValue key="dwellTime" value="0.4" />
    <PVStateValue key="framePeriod" value="{frame_period}" />
    <PVStateValue key="linesPerFrame" value="{height}" />
    <PVStateValue key="pixelsPerLine" value="{width}" />
    <PVStateValue key="micronsPerPixel">
      <IndexedValue index="XAxis" value="{micron_per_pixel}" />
      <IndexedValue index="YAxis" value="{micron_per_pixel}" />
      <IndexedValue index="ZAxis" value="5" />
    </PVStateValue>
    <PVStateValue key="objectiveLens" value="Nikon 16X" />
    <PVStateValue key="opticalZoom" value="2" />
    <PVStateValue key="samplesPerPixel" value="1" />
  </PVStateShard>
  <Sequence type="{'TSeries ZSeries Element' if planes > 1 else 'TSeries Timed Element'}" cycle="1" time="10:00:01.5000000"
            bidirectionalZ="False" xYStageGridDefined="False">
{chr(10).join(frames)}
  </Sequence>
</PVScan>
"""
    (folder / f"{folder.name}.xml").write_text(xml)
    (folder / f"{folder.name}.env").write_text('<?xml version="1.0" encoding="utf-8"?>\n<Environment version="5.6.64.400" />\n')
    return folder / f"{folder.name}.xml"


def write_miniscope(folder, movie: np.ndarray, fps: float = 30.0, frames_per_file: int = 20) -> Path:
    """A UCLA Miniscope v4 device folder as the Miniscope DAQ software writes it: ``0.avi``, ``1.avi`` … (FFV1,
    lossless, grey frames stored as BGR, ``frames_per_file`` each), ``metaData.json`` (device settings) and
    ``timeStamps.csv`` (frame number, time stamp in ms, buffer index). ``movie`` uint8 frames × height × width."""
    import json

    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n, height, width = movie.shape
    for f, start in enumerate(range(0, n, frames_per_file)):
        writer = cv2.VideoWriter(str(folder / f"{f}.avi"), cv2.VideoWriter_fourcc(*"FFV1"), fps, (width, height), isColor=True)
        for frame in movie[start:start + frames_per_file]:
            writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_GRAY2BGR))
        writer.release()
    (folder / "metaData.json").write_text(json.dumps({
        "deviceType": "Miniscope_V4_BNO", "deviceName": folder.name, "deviceID": 0, "frameRate": f"{fps:g}FPS",
        "compression": "FFV1", "framesPerFile": frames_per_file, "gain": "Low", "ewl": 70, "led0": 24,
        "ROI": {"height": height, "width": width, "leftEdge": 0, "topEdge": 0}}, indent=4))
    stamps = "Frame Number,Time Stamp (ms),Buffer Index\n" + "".join(f"{i},{round(i * 1000 / fps)},0\n" for i in range(n))
    (folder / "timeStamps.csv").write_text(stamps)
    return folder / "0.avi"


def write_inscopix(path, movie: np.ndarray, period_ms: float = 50.0) -> Path:
    """An Inscopix ``.isxd`` movie written with Inscopix's own ``isx`` package (frames × height × width, uint16)."""
    import isx
    from isx.core import Duration, Spacing, Timing

    n, height, width = movie.shape
    out = isx.Movie.write(str(path), Timing(num_samples=n, period=Duration.from_msecs(period_ms)), Spacing(num_pixels=(height, width)),
                          np.uint16)
    for i, frame in enumerate(movie):
        out.set_frame_data(i, np.ascontiguousarray(frame, np.uint16))
    out.flush()
    return Path(path)
