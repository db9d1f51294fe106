"""Check a NeuroWorkbench Suite2p export with Suite2p's own code (run in a separate Suite2p environment).

    /work/s2penv/bin/python benchmarks/suite2p_check.py OUT_DIR [--movie MOVIE.tif] [--no-gui] [--screenshot PNG]

Imports only suite2p (and numpy plus suite2p's own dependencies torch / tifffile), never our
engine, so it shows what Suite2p itself makes of the folder. Checked, for Suite2p 1.1:

1. ``suite2p.gui.io.load_files`` (the GUI's "load stat.npy"): returns the 10 outputs, not None.
2. Field by field: stat dicts (keys and dtypes that the loaders, ``roi_stats``, ``create_masks``,
   the classifier and the GUI index), F / Fneu / spks (n_rois × T float32), iscell (n_rois × 2),
   ops keys the GUI reads.
3. ``suite2p.detection.roi_stats`` recomputes med / soma_crop / npix_soma / compact / radius /
   aspect_ratio / npix_norm from our ypix/xpix/lam: they must equal ours (we follow its definitions).
4. ``suite2p.detection.assign_overlaps`` gives our ``overlap``.
5. ``suite2p.extraction.masks.create_masks`` builds cell and neuropil masks from our stat; with
   ``--movie``, ``extract_traces`` pulls Suite2p's F / Fneu out of the movie with them (shapes,
   and the correlation of Suite2p's dF with ours, reported).
6. The built-in classifier (``suite2p.classification.classify``) runs on our stat.
7. Unless ``--no-gui``: the real Suite2p GUI (Qt offscreen) opens stat.npy through
   ``gui.io.load_proc``: masks drawn, views built, traces plotted.

Exit status 0 when every check passed; each check prints PASS / FAIL with the reason.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

import numpy as np

# Fields and types, from Suite2p 1.1's source (the same list is in tests/engine/test_calcium_export.py).
STAT_ARRAYS = {"ypix": "i", "xpix": "i", "lam": "f", "overlap": "b", "soma_crop": "b"}  # per-pixel arrays, dtype kind
STAT_SCALARS = ("npix", "npix_soma", "npix_norm", "radius", "aspect_ratio", "compact", "footprint", "skew", "std", "snr")
OPS_KEYS = ("Ly", "Lx", "fs", "tau", "nframes", "diameter", "meanImg", "meanImgE", "Vcorr", "max_proj", "yrange", "xrange",
            "save_path", "reg_file", "batch_size", "extraction", "detection")  # fmt: skip

failures: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {name}{(': ' + detail) if detail else ''}")
    if not ok:
        failures.append(name)


def check_fields(stat, F, Fneu, spks, iscell, ops) -> None:
    n = len(stat)
    check("stat is an object array of dicts", stat.dtype == object and all(isinstance(s, dict) for s in stat), f"{n} ROIs")
    for key, kind in STAT_ARRAYS.items():
        ok = all(key in s and isinstance(s[key], np.ndarray) and s[key].dtype.kind == kind and s[key].shape == s["ypix"].shape
                 for s in stat)  # fmt: skip
        dtypes = sorted({str(s[key].dtype) for s in stat if key in s})
        check(f"stat[{key}] 1-D {kind!r} array, one entry per pixel", ok, ", ".join(dtypes))
    check("stat[npix] == len(ypix)", all(s["npix"] == len(s["ypix"]) for s in stat))
    check("stat[med] two ints, a pixel of the ROI",
          all(len(s["med"]) == 2 and any((s["ypix"] == s["med"][0]) & (s["xpix"] == s["med"][1])) for s in stat))
    for key in STAT_SCALARS:
        check(f"stat[{key}] finite scalar", all(key in s and np.ndim(s[key]) == 0 and np.isfinite(s[key]) for s in stat))
    check("stat pixels inside Ly × Lx", all(s["ypix"].min() >= 0 and s["ypix"].max() < ops["Ly"] and s["xpix"].min() >= 0
                                            and s["xpix"].max() < ops["Lx"] for s in stat if len(s["ypix"])))  # fmt: skip
    T = F.shape[1]
    for name, a in (("F", F), ("Fneu", Fneu), ("spks", spks)):
        check(f"{name}.npy n_rois × T float32", a.shape == (n, T) and a.dtype == np.float32, f"{a.shape} {a.dtype}")
    check("iscell.npy n_rois × 2, column 0 in {0, 1}, column 1 in [0, 1]",
          iscell.shape == (n, 2) and set(np.unique(iscell[:, 0])) <= {0, 1} and iscell[:, 1].min() >= 0 and iscell[:, 1].max() <= 1,
          f"{iscell.shape} {iscell.dtype}")  # fmt: skip
    missing = [k for k in OPS_KEYS if k not in ops]
    check("ops keys the GUI reads", not missing, f"missing {missing}" if missing else f"{len(OPS_KEYS)} keys")
    check("ops images Ly × Lx", all(np.shape(ops[k]) == (ops["Ly"], ops["Lx"]) for k in ("meanImg", "meanImgE", "Vcorr", "max_proj")))
    check("ops nframes == T", ops["nframes"] == T, f"{ops['nframes']} vs {T}")
    check("ops extraction.neuropil_coefficient, detection.soma_crop",
          "neuropil_coefficient" in ops.get("extraction", {}) and "soma_crop" in ops.get("detection", {}))


def check_recomputed(stat, ops) -> None:
    from suite2p.detection import assign_overlaps, roi_stats

    fresh = np.array([{k: copy.deepcopy(s[k]) for k in ("ypix", "xpix", "lam")} for s in stat])
    fresh = roi_stats(fresh, ops["Ly"], ops["Lx"], diameter=ops["diameter"], max_overlap=None, do_soma_crop=True)
    check("roi_stats keeps every ROI", len(fresh) == len(stat))
    for key in ("med", "npix", "npix_soma", "compact", "radius", "aspect_ratio", "npix_norm", "mrs", "mrs0"):
        if not all(key in s for s in stat):
            check(f"stat[{key}] equals Suite2p's roi_stats", False, "missing")
            continue
        ours = np.array([np.asarray(s[key], float) for s in stat])
        theirs = np.array([np.asarray(s[key], float) for s in fresh])
        err = float(np.max(np.abs(ours - theirs))) if len(ours) else 0.0
        check(f"stat[{key}] equals Suite2p's roi_stats", np.allclose(ours, theirs, rtol=1e-4, atol=1e-4), f"max |diff| {err:.2g}")
    check("stat[soma_crop] equals roi_stats'", all(np.array_equal(a.get("soma_crop"), b["soma_crop"]) for a, b in zip(stat, fresh)))
    over = assign_overlaps(np.array([{k: s[k] for k in ("ypix", "xpix")} for s in stat]), ops["Ly"], ops["Lx"])
    check("stat[overlap] equals assign_overlaps'", all(np.array_equal(a["overlap"], b["overlap"]) for a, b in zip(stat, over)))


def check_extraction(stat, ops, F, Fneu, movie_path: str | None) -> None:
    from suite2p.extraction.masks import create_masks

    cell_masks, neuropil_masks = create_masks(stat, ops["Ly"], ops["Lx"])
    check("create_masks: a cell and a neuropil mask per ROI", len(cell_masks) == len(neuropil_masks) == len(stat),
          f"median cell mask {np.median([len(c[0]) for c in cell_masks]):.0f} px, neuropil {np.median([len(m) for m in neuropil_masks]):.0f} px")
    if not movie_path:
        return
    import tifffile
    import torch
    from suite2p.extraction.extract import extract_traces

    movie = np.ascontiguousarray(tifffile.imread(movie_path), dtype=np.float32)
    F2, Fneu2 = extract_traces(movie, cell_masks, neuropil_masks, device=torch.device("cpu"))
    check("extract_traces on the movie with our masks", F2.shape == F.shape and Fneu2.shape == Fneu.shape, f"{F2.shape}")
    ours, theirs = F - 0.7 * Fneu, F2 - 0.7 * Fneu2
    r = [np.corrcoef(a, b)[0, 1] for a, b in zip(ours, theirs) if a.std() > 0 and b.std() > 0]
    print(f"      correlation of our dF with Suite2p's mask-extracted dF: median {np.median(r):.3f}, 10th pct {np.percentile(r, 10):.3f}")


def check_classifier(stat) -> None:
    from suite2p.classification import classify

    classfile = Path(__import__("suite2p").__file__).parent / "classifiers" / "classifier.npy"
    iscell = classify(stat=copy.deepcopy(stat), classfile=classfile)
    check("builtin classifier runs on stat (skew, npix_norm, compact)", iscell.shape == (len(stat), 2),
          f"{int(iscell[:, 0].sum())} of {len(stat)} called cells")


def check_gui(stat_path: Path, screenshot: str | None) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qtpy.QtWidgets import QApplication
    from suite2p.gui import gui2p
    from suite2p.gui import io as gui_io

    app = QApplication.instance() or QApplication([])
    window = gui2p.MainWindow()
    window.fname = str(stat_path)
    gui_io.load_proc(window)
    n_rois = len(np.load(stat_path, allow_pickle=True))
    check("Suite2p GUI load_proc opens the folder", bool(getattr(window, "loaded", False)) and len(window.stat) == n_rois,
          f"{len(window.stat)} ROIs, {int(window.iscell.sum())} cells, views {window.views.shape}")  # fmt: skip
    if screenshot:
        window.resize(1500, 800)
        app.processEvents()
        window.grab().save(screenshot)
        print(f"      GUI screenshot: {screenshot}")
    window.close()
    app.processEvents()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--movie", help="the movie the export came from (TIFF), to run Suite2p's trace extraction on it")
    parser.add_argument("--no-gui", action="store_true")
    parser.add_argument("--screenshot", help="save the Suite2p GUI with the folder loaded to this PNG")
    args = parser.parse_args()
    import suite2p

    print(f"suite2p {getattr(suite2p, 'version', '?')} from {Path(suite2p.__file__).parent}")
    out = Path(args.out_dir)
    stat_path = out / "stat.npy"
    from suite2p.gui.io import load_files

    loaded = load_files(str(stat_path))
    check("suite2p.gui.io.load_files reads the folder", loaded is not None)
    if loaded is None:
        return 1
    stat, ops, F, Fneu, spks, iscell_bool, probcell, *_ = loaded
    iscell = np.load(out / "iscell.npy")
    groups = [("fields", lambda: check_fields(stat, F, Fneu, spks, iscell, ops)),
              ("roi_stats / assign_overlaps", lambda: check_recomputed(stat, ops)),
              ("create_masks / extract_traces", lambda: check_extraction(stat, ops, F, Fneu, args.movie)),
              ("classifier", lambda: check_classifier(stat))]  # fmt: skip
    if not args.no_gui:
        groups.append(("GUI", lambda: check_gui(stat_path, args.screenshot)))
    for name, run in groups:
        try:
            run()
        except Exception as error:  # Suite2p's code failed on our files: that is the finding
            check(f"{name} ran", False, f"{type(error).__name__}: {error}")
    print(f"\n{'all checks passed' if not failures else str(len(failures)) + ' FAILED: ' + '; '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
