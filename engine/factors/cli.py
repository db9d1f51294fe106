"""`neurowb factors train|extract|nmf|select|cluster` (registered through the ``neurowb.commands``
entry point ``factors``): the microarchitecture path from an image and its region labels to factor
heatmaps, the chosen factor per region, and clusters inside one region.

``neurowb factors train IMAGE --labels LABELS -o MODEL [--patch-size 128 --epochs 20 --pixel-size UM ...]``
    trains the patch classifier (:func:`engine.factors.cnn.train`), prints the validation accuracy
    and confusion matrix of the spatial-block split, and saves the model with its preprocessing.
``neurowb factors extract MODEL IMAGE -o LATENTS.npy [--stride 4 --memory-mb MB]``
    writes the dense latents (grid rows × grid cols × 64, float32, memory-mapped while written)
    and ``LATENTS.grid.json`` beside it: the grid geometry (:class:`~engine.factors.files.Grid`) that maps grid
    position (i, j) to image pixel (offset_row + i·stride, offset_col + j·stride).
``neurowb factors nmf LATENTS.npy -k 15 -o FACTORS.npz``
    factorizes the latents (:func:`engine.factors.nmf.nmf`) and writes ``W`` (grid rows × grid
    cols × k codes), ``H`` (k × 64 factors), the errors, and the grid geometry (:func:`save_factors`).
``neurowb factors select FACTORS.npz --labels LABELS [--lam 0.5 -p P --json OUT]``
    samples the labels at the grid positions, prints the coverage–leakage score matrix (factors ×
    regions) and the greedily chosen (factor, region, score) pairs.
``neurowb factors cluster FACTORS.npz --mask MASK [--roi ID] -n 4|2-8 [--labels LABELS] [-o MAP.npy|MAP.png]``
    Gaussian-mixture clusters of the codes inside one region (BIC per number of clusters printed),
    with the per-cluster composition over the regions of ``--labels``.

The files are those of :mod:`engine.factors.files`, the same the GUI keeps in an image's project
folder (``<stem>_factors/latents.npy``, ``factors.npz``): either reads what the other wrote. Label
maps are read as the GUI reads them (:func:`engine.factors.files.read_labels`: region names from
an .npz's ``classes``; 0-based classes shifted up by one).

Results go to stdout, "wrote ..." lines and progress bars to stderr. Every file is written
atomically (temporary file, then rename), so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.factors.files import Factors, Grid, grid_file, load_factors, load_latents, read_labels, save_factors

MAX_BIC_RANGE = 20  # "-n 2-200" would fit for hours: refuse it with a message instead
#: Colours of clusters 0, 1, ... in a PNG cluster map (matplotlib's tab10).
CLUSTER_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                   (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def _load_grid_labels(path: str, grid: Grid) -> tuple[np.ndarray, dict[int, str]]:
    """A label map of the grid's image read at the grid positions, and its region names; InputError when no
    label survives the sampling."""
    labels, names = read_labels(path, shape=grid.image_shape)
    sampled = grid.sample(labels)
    if not np.any(sampled):
        raise InputError(f"No labelled pixel of '{Path(path).name}' falls on the latent grid (every {grid.stride}th "
                         f"pixel): label larger regions, or extract the latents with a smaller --stride.")
    return sampled, names


# ---------------------------------------------------------------------------------------------
# the commands

def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``neurowb factors`` with its sub-commands."""
    from engine.cli import nonnegative_float, nonnegative_int, number, positive_float, positive_int
    from engine.factors.cnn import MIN_PATCH

    factors = subparsers.add_parser(
        "factors", help="microarchitecture: CNN patch features, NMF factors, factor selection, clusters",
        description="Train the patch classifier on labelled regions, extract dense latents, factorize them (NMF), "
                    "pick one factor per region (coverage - λ·leakage) and cluster the codes inside a region.")
    commands = factors.add_subparsers(dest="factors_command", metavar="{train,extract,nmf,select,cluster}", required=True)
    # --device here sets the same option as `neurowb --device`; SUPPRESS keeps the global one when absent.
    device_help = "compute device: auto (default), cpu, cuda, cuda:N, mps"

    p = commands.add_parser("train", help="train the patch classifier on an image and its region labels",
                            description="Train the paper's CNN on patches around labelled pixels; validation on "
                            "held-out spatial blocks (a half-patch gap on each side). MODEL is rewritten after every epoch "
                            "that improves the validation accuracy, so an interrupted run keeps the best model so far.")
    p.add_argument("image", metavar="IMAGE", help="2-D grayscale image: PNG, JPEG, TIFF or NPY")
    p.add_argument("--labels", required=True, metavar="LABELS",
                   help="label image of the same size (0 = unlabelled, 1, 2, ... regions): NPY, NPZ, PNG or TIFF")
    p.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file to write (e.g. slice.pt)")
    p.add_argument("--patch-size", type=number(int, MIN_PATCH), default=128, metavar="PX", help="patch side in pixels (default 128, ≥ 54)")
    p.add_argument("--epochs", type=positive_int, default=20, help="training epochs (default 20)")
    p.add_argument("--pixel-size", type=positive_float, metavar="UM", help="pixel size in µm (default: what the TIFF states; saved with "
                   "the model and checked on use)")
    p.add_argument("--patches-per-epoch", type=positive_int, default=4096, metavar="N", help="training patches per epoch (default 4096)")
    p.add_argument("--batch-size", type=positive_int, default=64, metavar="N", help="patches per batch (default 64)")
    p.add_argument("--block-size", type=positive_int, metavar="PX", help="side of the spatial split blocks (default 4 patches)")
    p.add_argument("--val-patches", type=positive_int, default=256, metavar="N", help="validation patches per region (default 256)")
    p.add_argument("--device", default=argparse.SUPPRESS, help=device_help)
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    p.set_defaults(run=_run_train)

    p = commands.add_parser("extract", help="dense 64-d latents on a grid over a whole image",
                            description="The latent of the patch centred at every --stride-th pixel, computed fully "
                            "convolutionally (exactly as per patch) in memory-bounded tiles.")
    p.add_argument("model", metavar="MODEL", help="model file from `neurowb factors train`")
    p.add_argument("image", metavar="IMAGE", help="2-D grayscale image (same pixel size and intensity type as in training)")
    p.add_argument("-o", "--output", required=True, metavar="LATENTS.npy",
                   help="latents to write (.npy, grid rows × cols × 64); the grid goes to LATENTS.grid.json beside it")
    p.add_argument("--stride", type=positive_int, default=4, metavar="PX", help="pixels between grid positions (default 4)")
    p.add_argument("--memory-mb", type=number(float, 16), metavar="MB", help="memory for one tile (default 512 on CPU, 2048 on GPU)")
    p.add_argument("--pixel-size", type=positive_float, metavar="UM", help="pixel size in µm, checked against the model's (default: what "
                   "the TIFF states)")
    p.add_argument("--mode", choices=("same", "valid"), default="same",
                   help="same: a latent at every stride-th pixel, mirrored borders (default); valid: only whole patches")
    p.add_argument("--device", default=argparse.SUPPRESS, help=device_help)
    p.set_defaults(run=_run_extract)

    p = commands.add_parser("nmf", help="non-negative matrix factorization of the latents (HALS)",
                            description="Latents ≈ W·H with k factors: H (k × 64) the factors, W the codes whose "
                            "maps are the factor heatmaps.")
    p.add_argument("latents", metavar="LATENTS.npy", help="latents from `neurowb factors extract`")
    p.add_argument("-k", type=positive_int, default=15, help="number of factors (default 15)")
    p.add_argument("-o", "--output", required=True, metavar="FACTORS.npz", help="factors file to write")
    p.add_argument("--max-iter", type=positive_int, default=200, metavar="N", help="most iterations (default 200)")
    p.add_argument("--tol", type=nonnegative_float, default=1e-4,
                   help="stop when the relative error falls by less than TOL × its starting value per iteration, on "
                        "average over the last 10 iterations (default 1e-4; 0 runs all --max-iter iterations)")
    p.add_argument("--image", metavar="IMAGE", help="the image the latents come from: its dark background outside the tissue "
                   "is left out of the fit (codes zero there), as the window does by default")
    p.add_argument("--device", default=argparse.SUPPRESS, help=device_help)
    p.set_defaults(run=_run_nmf)

    p = commands.add_parser("select", help="pick one factor per region by coverage minus λ × leakage",
                            description="Score every (factor, region) pair: positions of the region where the factor "
                            "is positive, minus λ × positions outside it where it is; take the best unused pairs.")
    p.add_argument("factors", metavar="FACTORS.npz", help="factors from `neurowb factors nmf`")
    p.add_argument("--labels", required=True, metavar="LABELS", help="region label image of the original image (0 = unlabelled)")
    p.add_argument("--lam", type=nonnegative_float, default=0.5, metavar="λ", help="leakage weight λ (default 0.5, as in the paper)")
    p.add_argument("-p", type=positive_int, metavar="P", help="number of factors to pick (default: one per region, at most k)")
    p.add_argument("--json", metavar="OUT.json", help="also save the scores and chosen pairs as JSON")
    p.set_defaults(run=_run_select)

    p = commands.add_parser("cluster", help="Gaussian-mixture clusters of the codes inside one region",
                            description="Cluster the factor codes inside a region (eroded by half a patch) with a "
                            "Gaussian mixture; with a range of cluster numbers the lowest BIC wins.")
    p.add_argument("factors", metavar="FACTORS.npz", help="factors from `neurowb factors nmf`")
    p.add_argument("--mask", required=True, metavar="MASK",
                   help="label image or binary mask of the original image; the region is --roi, or all non-zero pixels")
    p.add_argument("--roi", type=positive_int, metavar="ID", help="label of the region in MASK (default: every non-zero pixel as one region)")
    p.add_argument("-n", "--clusters", default="4", metavar="N|A-B", help="clusters (default 4), or a range such as 2-8 to pick by BIC")
    p.add_argument("--labels", metavar="LABELS", help="label image (e.g. layers) to report each cluster's composition over")
    p.add_argument("-o", "--output", metavar="MAP.npy|MAP.png",
                   help="cluster map on the grid: .npy (int32, -1 outside) or .png (palette, 0 outside, cluster c as c+1)")
    p.add_argument("--erode", type=nonnegative_int, metavar="PX", help="border removed from the region in pixels (default half a patch)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    p.set_defaults(run=_run_cluster)


def _require_suffix(path: str, suffixes: tuple[str, ...], what: str) -> None:
    """Checked before any work: the extension, and that the file can be written (engine.cli.check_output)."""
    from engine.cli import check_output

    if Path(path).suffix.lower() not in suffixes:
        raise InputError(f"The {what} must end in {' or '.join(suffixes)}, got '{path}'.")
    check_output(path)


def _positive(value, name: str, minimum: float = 1) -> None:
    if value is not None and not value >= minimum:
        raise InputError(f"{name} must be at least {minimum:g}, got {value:g}.")


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Right-aligned text table (first column left-aligned)."""
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    lines = []
    for r in [header, *rows]:
        lines.append("  ".join(r[0].ljust(widths[0]) if c == 0 else r[c].rjust(widths[c]) for c in range(len(r))))
    return "\n".join(lines)


def _region_title(label: int, names: dict[int, str]) -> str:
    return f"{label} {names[label]}" if label in names else str(label)


def _pixel_size_from_file(args: argparse.Namespace) -> None:
    """--pixel-size, when not given, from the image's own metadata (OME PhysicalSizeX, TIFF resolution)."""
    from engine.factors.io import pixel_size_um

    if args.pixel_size is None:
        args.pixel_size = pixel_size_um(args.image)
        if args.pixel_size is not None:
            print(f"pixel size {args.pixel_size:g} µm (from '{Path(args.image).name}')", file=sys.stderr)


def _run_train(args: argparse.Namespace) -> int:
    from engine.cli import progress_bar
    from engine.factors.cnn import MIN_PATCH, train
    from engine.factors.io import load_image

    from engine.cli import check_output

    check_output(args.output)
    _positive(args.epochs, "--epochs")
    _positive(args.patches_per_epoch, "--patches-per-epoch")
    _positive(args.batch_size, "--batch-size")
    _positive(args.val_patches, "--val-patches")
    _positive(args.block_size, "--block-size")
    _positive(args.patch_size, "--patch-size", MIN_PATCH)
    if args.pixel_size is not None and not args.pixel_size > 0:
        raise InputError(f"--pixel-size must be a positive size in µm, got {args.pixel_size:g}.")
    image = load_image(args.image)
    _pixel_size_from_file(args)
    labels, names = read_labels(args.labels, shape=image.shape)
    from engine.factors.workflow import checkpoint_for

    checkpoint = checkpoint_for(args.output)  # never over a previous model until this one is done
    try:
        with progress_bar("Training") as progress:
            result = train(image, labels, pixel_size_um=args.pixel_size, patch_size=args.patch_size, epochs=args.epochs,
                           patches_per_epoch=args.patches_per_epoch, batch_size=args.batch_size,
                           val_patches_per_class=args.val_patches, block_size=args.block_size, class_names=names or None,
                           checkpoint=checkpoint, device=getattr(args, "device", None), seed=args.seed, progress=progress)
        model = result.model
        model.save(args.output)  # the final save adds the split to the metrics the checkpoints lack
    finally:
        checkpoint.unlink(missing_ok=True)

    for h in result.history:
        print(f"epoch {int(h['epoch'])}: loss {h['loss']:.3f}, training accuracy {h['train_accuracy']:.1%}, "
              f"validation accuracy {h['val_accuracy']:.1%}")
    split = model.metrics["split"]
    print(f"validation accuracy {result.val_accuracy:.1%} (epoch {result.best_epoch} of {len(result.history)}; "
          f"{int(result.confusion.sum())} patches from held-out {split['block_size']}-px blocks, "
          f"{split['gap_px']}-px gap; chance {1 / model.n_classes:.0%})")
    titles = [_region_title(c, names) for c in model.class_labels]
    rows = [[titles[i], *[str(int(v)) for v in result.confusion[i]]] for i in range(model.n_classes)]
    print("confusion matrix (rows: true region, columns: predicted):")
    print(_table(["region", *titles], rows))
    print(f"wrote {args.output}: {model.n_classes} regions, {model.patch_size}-px patches"
          + (f" at {args.pixel_size:g} µm/px" if args.pixel_size else ""), file=sys.stderr)
    return 0


def _run_extract(args: argparse.Namespace) -> int:
    from engine.cli import progress_bar
    from engine.factors.cnn import LATENT_DIM, PatchModel
    from engine.factors.dense import dense_latents
    from engine.factors.files import writing_latents
    from engine.factors.io import load_image

    _require_suffix(args.output, (".npy",), "latents file (-o)")
    _positive(args.stride, "--stride")
    _positive(args.memory_mb, "--memory-mb", 16)
    model = PatchModel.load(args.model, device=getattr(args, "device", None))
    image = load_image(args.image)
    _pixel_size_from_file(args)
    prep = model.preprocessing
    pixel_size = args.pixel_size if args.pixel_size is not None else prep.pixel_size_um
    prep.check_image(image, args.pixel_size, what=f"'{Path(args.image).name}'")
    grid = Grid.for_image(image.shape, args.stride, prep.patch_size, args.mode, pixel_size,
                          what=f"'{Path(args.image).name}'")
    with writing_latents(args.output, grid, LATENT_DIM, model=str(Path(args.model).resolve()),
                         image=str(Path(args.image).resolve())) as out:
        with progress_bar("Dense latents") as progress:
            dense_latents(model, image, stride=args.stride, mode=args.mode, pixel_size_um=args.pixel_size,
                          memory_mb=args.memory_mb, out=out, progress=progress)
        silent = int(np.count_nonzero(np.asarray(out).reshape(-1, LATENT_DIM).max(0) <= 0))
    print(f"latents: {grid.shape[0]}×{grid.shape[1]} grid (every {grid.stride} px from pixel {grid.offset}) × "
          f"{LATENT_DIM} units, {silent} units zero everywhere")
    print(f"wrote {args.output} and {grid_file(args.output).name}", file=sys.stderr)
    return 0


def _run_nmf(args: argparse.Namespace) -> int:
    from engine.cli import progress_bar
    from engine.factors.io import load_image
    from engine.factors.tissue import masked_nmf, tissue_mask

    _require_suffix(args.output, (".npz",), "factors file (-o)")
    latents = load_latents(args.latents)
    keep = None
    if args.image:
        image = np.asarray(load_image(args.image))
        if tuple(image.shape[:2]) != tuple(latents.grid.image_shape):
            raise InputError(f"--image is {image.shape[0]}×{image.shape[1]}, the latents come from a "
                             f"{latents.grid.image_shape[0]}×{latents.grid.image_shape[1]} image: give that one.")
        keep = latents.grid.sample(tissue_mask(image)).astype(bool)
        print(f"background: {int((~keep).sum()):,} of {keep.size:,} positions outside the tissue, left out", file=sys.stderr)
    with progress_bar("NMF") as progress:
        result = masked_nmf(latents.values, args.k, keep, max_iter=args.max_iter, tol=args.tol,
                            device=getattr(args, "device", None), progress=progress)
    save_factors(args.output, Factors.from_nmf(result, latents.grid, latents_id=latents.id))
    state = "converged" if result.converged else "stopped at --max-iter"
    print(f"NMF k={args.k}: relative error {result.final_error:.4f} after {result.n_iter} iterations ({state}), "
          f"{result.seconds:.1f} s on {result.device}")
    active = (np.asarray(result.W) > 0).mean(0)
    print("positions where each factor is active: " + ", ".join(f"{i}: {a:.0%}" for i, a in enumerate(active)))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _run_select(args: argparse.Namespace) -> int:
    from engine.factors.selection import select_factors
    from engine.storage import atomic_save_json

    if args.json:
        _require_suffix(args.json, (".json",), "--json file")
    factors = load_factors(args.factors)
    grid_labels, names = _load_grid_labels(args.labels, factors.grid)
    sel = select_factors(factors.codes, grid_labels, p=args.p, lam=args.lam)

    k, r = sel.scores.shape
    print(f"score matrix ({k} factors × {r} regions; coverage - {sel.lam:g} × leakage, in grid positions):")
    header = ["factor", *[_region_title(a, names) for a in sel.roi_labels]]
    print(_table(header, [[str(i), *[f"{v:.1f}" for v in sel.scores[i]]] for i in range(k)]))
    print(f"chosen pairs ({len(sel.pairs)}):")
    for factor, region, score in sel.pairs:
        a = sel.roi_labels.index(region)
        print(f"  factor {factor} → region {_region_title(region, names)}: score {score:.1f} "
              f"(coverage {int(sel.coverage[factor, a])}, outside {int(sel.outside[factor, a])})")
    if args.json:
        atomic_save_json(args.json, {
            "lam": sel.lam, "factors": str(Path(args.factors).resolve()), "labels": str(Path(args.labels).resolve()),
            "regions": sel.roi_labels, "region_names": [names.get(a, "") for a in sel.roi_labels],
            "scores": sel.scores.tolist(), "coverage": sel.coverage.tolist(), "outside": sel.outside.tolist(),
            "pairs": [{"factor": f, "region": a, "score": s} for f, a, s in sel.pairs]})
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def parse_cluster_numbers(text: str) -> list[int]:
    """'4' → [4]; '2-8' → [2, ..., 8]."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(text))
    if not m:
        raise InputError(f"-n takes a number of clusters (e.g. 4) or a range (e.g. 2-8); got '{text}'.")
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    if lo < 1 or hi < lo:
        raise InputError(f"-n must be at least 1 and a range must go upwards (e.g. 2-8); got '{text}'.")
    if hi - lo + 1 > MAX_BIC_RANGE:
        raise InputError(f"-n {text} would fit {hi - lo + 1} mixtures: give at most {MAX_BIC_RANGE} (e.g. 2-8).")
    return list(range(lo, hi + 1))


def _run_cluster(args: argparse.Namespace) -> int:
    from engine.cli import progress_bar
    from engine.factors.clusters import cluster_roi

    if args.output:
        _require_suffix(args.output, (".npy", ".png"), "cluster map (-o)")
    candidates = parse_cluster_numbers(args.clusters)
    if args.erode is not None and args.erode < 0:
        raise InputError(f"--erode must be ≥ 0 pixels, got {args.erode}.")
    factors = load_factors(args.factors)
    grid = factors.grid
    mask = grid.sample(read_labels(args.mask, shape=grid.image_shape)[0])
    if args.roi is None:
        region, roi, where = (mask > 0).astype(np.int64), 1, "the non-zero pixels of the mask"
    else:
        if args.roi < 1:
            raise InputError(f"--roi must be a region label ≥ 1 (0 means unlabelled), got {args.roi}.")
        region, roi, where = mask, args.roi, f"region {args.roi}"
    if not np.any(region == roi):
        present = [int(v) for v in np.unique(mask) if v > 0]
        raise InputError(f"No grid position lies in {where} of '{Path(args.mask).name}' (regions on the grid: "
                         f"{present or 'none'}): pick one of those, or extract with a smaller --stride.")
    composition, names = _load_grid_labels(args.labels, grid) if args.labels else (None, {})
    with progress_bar("Clustering") as progress:
        result = cluster_roi(factors.codes, region, roi, candidates, patch_size=grid.patch_size, stride=grid.stride,
                             erode_px=args.erode, composition_labels=composition, seed=args.seed, progress=progress)

    inside = int(result.mask.sum())
    print(f"{inside} grid positions in {where} after removing a "
          f"{grid.patch_size // 2 if args.erode is None else args.erode}-px border")
    if len(result.bic) > 1:
        print("BIC per number of clusters (lower is better):")
        for n, b in result.bic.items():
            print(f"  n={n}: {b:.1f}" + ("  ← chosen" if n == result.n_clusters else ""))
    else:
        print(f"BIC n={result.n_clusters}: {next(iter(result.bic.values())):.1f}")
    print(f"{result.n_clusters} clusters (0 = largest), positions: "
          + ", ".join(f"{c}: {int(s)}" for c, s in enumerate(result.sizes)))
    if composition is not None:
        print("composition over regions (fraction of each cluster's positions; 0 = unlabelled):")
        header = ["cluster", *[_region_title(a, names) for a in result.region_labels], "positions"]
        rows = [[str(c), *[f"{v:.0%}" for v in result.fractions[c]], str(int(result.composition[c].sum()))]
                for c in range(result.n_clusters)]
        print(_table(header, rows))
    if args.output:
        _write_cluster_map(args.output, result.cluster_map)
        print(f"wrote {args.output} ({grid.shape[0]}×{grid.shape[1]} grid, every {grid.stride} px)", file=sys.stderr)
    return 0


def _write_cluster_map(path: str, cluster_map: np.ndarray) -> None:
    from engine.storage import atomic_save_npy

    if Path(path).suffix.lower() == ".npy":
        atomic_save_npy(path, cluster_map.astype(np.int32))
        return
    import io

    from PIL import Image

    from engine.storage import atomic_write_bytes

    n = int(cluster_map.max()) + 1
    if n > 255:
        raise InputError(f"{n} clusters do not fit in a palette PNG: save the map as .npy.")
    palette = np.zeros((256, 3), dtype=np.uint8)  # index 0 (outside the region) stays black
    palette[1:n + 1] = np.asarray(CLUSTER_COLOURS, dtype=np.uint8)[np.arange(n) % len(CLUSTER_COLOURS)]
    image = Image.fromarray((cluster_map + 1).astype(np.uint8))  # putpalette turns this "L" image into "P"
    image.putpalette(palette.ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
