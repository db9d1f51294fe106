"""Reading a recording in chunks: our memmap reader vs SpikeInterface's extractor, on the same SpikeGLX file.

Why plain raw binaries keep engine.ephys.io.RawRecording while SpikeGLX, Open Ephys, Intan, … go through
SpikeInterface (engine.ephys.formats.ExtractorRecording): both read the same int16 samples from a memmap
and scale them to µV; the table says what the extractor's layers cost per chunk, as the sorter's
preprocessing reads them (2 s chunks, all 384 channels) and as the trace panel does (0.25 s tiles, 64 channels).

Run: ``python -m benchmarks.recording_read [--seconds 60]`` (writes a temporary Neuropixels 1.0 run).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import machine_header, markdown_table, ratio, time_call


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the simulated run (default 60 s)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from lab_files import write_spikeglx

    from engine.ephys.formats import open_recording
    from engine.ephys.io import RawRecording

    print(machine_header("Reading a SpikeGLX run: RawRecording (memmap) vs SpikeInterface extractor"))
    fs = 30000.0
    n = int(args.seconds * fs)
    with tempfile.TemporaryDirectory() as tmp:
        counts = np.random.default_rng(0).integers(-200, 200, (n, 384), dtype=np.int16)
        bin_path = write_spikeglx(tmp, counts)
        del counts
        extractor = open_recording(bin_path)
        binary, params = extractor.binary_file()
        raw = RawRecording(binary, params)
        channels = np.arange(384)
        rows = []
        for label, chunk, chans in (("2 s × 384 ch (sorter)", int(2 * fs), channels), ("0.25 s × 64 ch (traces)", int(0.25 * fs), channels[:64])):
            starts = range(0, n - chunk, chunk)

            def read_all(rec, starts=starts, chunk=chunk, chans=chans):
                for a in starts:
                    rec.read(a, a + chunk, chans)

            assert np.allclose(raw.read(0, chunk, chans), extractor.read(0, chunk, chans))
            ours, _ = time_call(lambda: read_all(raw), repeat=args.repeat)
            theirs, _ = time_call(lambda: read_all(extractor), repeat=args.repeat)
            rows.append([label, f"{args.seconds:g} s", ours, theirs, ratio(theirs, ours)])
        markdown_table(rows, ["chunks", "recording", "RawRecording s", "SpikeInterface s", "SpikeInterface / ours"])
        raw.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
