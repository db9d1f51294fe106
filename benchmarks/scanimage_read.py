"""Reading one plane and channel of a ScanImage volume recording: our reader vs roiextractors', on the same file.

Why ScanImage TIFFs keep our reader (engine.calcium.io: the page offsets collected once by tifffile, then frames
copied from a memory map of the file) instead of roiextractors' ScanImageImagingExtractor (which decodes each page
through tifffile's TiffPage.asarray): the table times opening the file, reading the chosen plane in chunks of frames
(as the summary images and CNMF read it) and reading one cell's 9 × 9 px box over all frames (as the trace of a
clicked pixel does). The file: ScanImage 2020 layout, 3 planes + 1 flyback frame, 2 channels, int16.

Run: ``python -m benchmarks.scanimage_read [--size 256 --volumes 200]`` (writes a temporary file).
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
    parser.add_argument("--size", type=int, default=256, help="frame height and width in pixels (default 256)")
    parser.add_argument("--volumes", type=int, default=200, help="volumes (frames per plane; default 200)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from lab_files import scanimage_frame_data, write_scanimage
    from roiextractors import ScanImageImagingExtractor

    from engine.calcium.io import open_movie

    print(machine_header("Reading a ScanImage volume recording: our reader vs roiextractors"))
    n, s = args.volumes, args.size
    with tempfile.TemporaryDirectory() as tmp:
        pages = np.random.default_rng(0).integers(0, 3000, (n * 4 * 2, s, s), dtype=np.int16)
        path = write_scanimage(Path(tmp) / "file_00001.tif", pages,
                               scanimage_frame_data(channels=(1, 2), planes=3, flyback=1, volumes=n, height=s, width=s, column=False))
        del pages
        ours = open_movie(path, plane=1, channel=2)
        peer = ScanImageImagingExtractor(file_path=path, channel_name="Channel 2", plane_index=1)
        assert np.array_equal(ours.frames(0, n), peer.get_series(0, n))
        rows = []
        t_ours, _ = time_call(lambda: open_movie(path, plane=1, channel=2).close(), repeat=args.repeat)
        t_peer, _ = time_call(lambda: ScanImageImagingExtractor(file_path=path, channel_name="Channel 2", plane_index=1),
                              repeat=args.repeat)
        rows.append(["open (header, page offsets)", t_ours, t_peer, ratio(t_peer, t_ours)])
        chunk = 50
        t_ours, _ = time_call(lambda: [ours.frames(a, a + chunk) for a in range(0, n, chunk)], repeat=args.repeat)
        t_peer, _ = time_call(lambda: [peer.get_series(a, min(a + chunk, n)) for a in range(0, n, chunk)], repeat=args.repeat)
        rows.append([f"all {n} frames of the plane, {chunk} at a time", t_ours, t_peer, ratio(t_peer, t_ours)])
        box = (slice(s // 2 - 4, s // 2 + 5), slice(s // 3 - 4, s // 3 + 5))
        t_ours, _ = time_call(lambda: ours._block(0, n, *box), repeat=args.repeat)
        t_peer, _ = time_call(lambda: peer.get_series(0, n)[:, box[0], box[1]], repeat=args.repeat)
        rows.append(["a 9 × 9 px box over all frames", t_ours, t_peer, ratio(t_peer, t_ours)])
        markdown_table(rows, ["read", "ours s", "roiextractors s", "roiextractors / ours"])
        print(f"\n{n} volumes × 3 planes (+1 flyback) × 2 channels of {s}×{s} px int16; "
              f"{path.stat().st_size / 2**20:.0f} MiB")
        ours.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
