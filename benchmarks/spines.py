"""Spine classifier quality, retraining speed and simulated active learning on real meshes.

Data (../shared/data/meshes, see its README): the NEURD Harris-lab EM dendrite (µm, labels
0 shaft, 1/2/3 spine, -1 unmatched) and the 55 SpineTool confocal dendrites (µm, spine
instance ids). Both are in µm, so one feature spec serves both (a nm mesh would be rescaled
to µm first by :func:`engine.mesh.spines.mesh_in_units`).

First the whole command as a user runs it: ``python -m engine.cli spines evaluate`` on the
NEURD dendrite (halves split) in a subprocess, with the defaults, beside the same command with
the previous defaults (log-HKS at the published 32 timescales 0.05–20 µm², random forest).

Then, for each feature variant (kind @ largest timescale in µm²; columns of one cached
feature matrix, or SI-HKS built from the cached HKS):

* NEURD, spatial split: train on one half along the longest axis, test on the other, both
  ways, metrics pooled (goal: spine F1 ≥ 0.95);
* SpineTool, leave-one-dendrite-out over all 55 (for the ``--loo`` variants);
* zero-shot both ways: trained on all SpineTool dendrites, applied to the NEURD dendrite, and
  trained on NEURD, applied to every SpineTool dendrite (pooled spine F1).

Then: :func:`engine.mesh.active.retrain` time at 100k labelled vertices (goal < 2 s), and
(``--rounds`` > 0) an oracle simulation of active learning on NEURD (label the most uncertain
regions of one half each round, F1 on the other half), against random patches of the same size.

HKS per mesh is cached (``--cache``, default ``$TMPDIR/neurowb-bench-cache/spines``), keyed by
the mesh file, the feature spec and the HKS engine's source, so reruns skip it.

Run: ``python -m benchmarks.spines`` (first run ~20-40 min on 2 shared cores, mostly HKS;
then ~15-30 min). ``--quick`` uses 12 SpineTool dendrites and fewer rounds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.base import clone

from benchmarks.common import machine_header, markdown_table, peak_rss_mb, time_call
from engine.mesh.active import merge_labels, retrain, uncertain_regions
from engine.mesh.io import load_mesh
from engine.mesh.spines import (
    SPINE,
    UNLABELLED,
    FeatureSpec,
    SpineClassifier,
    evaluate_halves,
    evaluate_leave_one_out,
    log_hks_features,
    map_labels,
    split_halves,
    vertex_features,
)
from engine.mesh.spines import _subsample  # stratified sample of labelled vertices

#: Classifier for the 55-fold leave-one-out and the zero-shot model (~270k training rows):
#: fewer trees and a smaller bootstrap than the default, so 55 folds fit in minutes on 2 cores.
LOO_CLASSIFIER = SpineClassifier(n_estimators=60, max_samples=20_000)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "meshes"
NEURD = DATA / "neurd_spine_app_neuron_19321_decimated.off"
SPINETOOL = DATA / "spinetool"
FULL_KIND = "hks+smooth+curv+shape"
DEFAULT_VARIANTS = "hks@20,hks+shape@20,hks+smooth+curv+shape@20,hks+smooth+curv+shape@2,sihks@20,sihks+shape@20"
LOO_VARIANTS = "hks+smooth+curv+shape@2,sihks@20"
#: The same dendrite twice in the SpineTool set (median nearest-vertex distance 46 nm): leave-one-out
#: with one of them in the training set flatters the other, so means are also given without them.
DUPLICATES = ("spinetool_1", "spinetool_example_dendrite")


def default_cache() -> Path:
    return Path(os.environ.get("NEUROWB_BENCH_CACHE", Path(tempfile.gettempdir()) / "neurowb-bench-cache")) / "spines"


def _hks_source_hash() -> str:
    """Hash of the code that computes the HKS values (not of file readers beside it)."""
    import inspect

    import engine.mesh.hks as hks
    import engine.mesh.laplacian as lap
    import engine.mesh.spectrum as spectrum

    h = hashlib.sha1()
    for func in (hks.compute_hks, hks.hks_from_laplacian, hks._exact):
        h.update(inspect.getsource(func).encode())
    for mod in (lap, spectrum):
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()[:10]


def _cache_key(path: Path, spec: FeatureSpec, engine_hash: str) -> str:
    st = path.stat()
    text = json.dumps([path.name, st.st_size, st.st_mtime_ns, spec.timescales, spec.laplacian, spec.max_eigenvalue,
                       spec.scaled, spec.units, engine_hash])
    return f"{path.stem}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def hks_job(item: tuple[str, dict, str]) -> tuple[str, float, dict]:
    """Worker: compute and cache the HKS of one mesh (top-level so parallel_map can pickle it)."""
    path, spec_dict, out = item
    from engine.mesh.spines import _compute_hks
    from engine.storage import atomic_save_json, atomic_save_npy

    spec = FeatureSpec.from_dict(spec_dict)
    mesh = load_mesh(path, units=spec.units)
    start = time.perf_counter()
    try:
        result = _compute_hks(mesh, spec, method="exact")
    except RuntimeError:  # float32 Lanczos stalled: redo in float64
        result = _compute_hks(mesh, spec, method="exact", dtype="float64")
    seconds = time.perf_counter() - start
    atomic_save_npy(out + ".npy", np.asarray(result.hks, dtype=np.float32))
    info = {k: v for k, v in (result.info or {}).items() if isinstance(v, (int, float, str, bool))}
    atomic_save_json(out + ".json", {"seconds": seconds, "method": result.method, "n_vertices": mesh.n_vertices, "info": info})
    return path, seconds, info


def load_dataset(paths: list[Path], label_paths: list[Path], label_map: str, spec: FeatureSpec, cache: Path,
                 full_features: bool = True) -> list[dict]:
    """Meshes, labels and full (FULL_KIND) features, computing and caching the HKS as needed.

    Without ``full_features`` the features are the log-HKS alone (the first columns of the full ones)."""
    from engine.parallel import parallel_map

    cache.mkdir(parents=True, exist_ok=True)
    engine_hash = _hks_source_hash()
    keys = [cache / _cache_key(p, spec, engine_hash) for p in paths]
    todo = [(str(p), spec.to_dict(), str(k)) for p, k in zip(paths, keys) if not Path(str(k) + ".npy").exists()]
    if todo:
        print(f"computing HKS of {len(todo)} meshes (cached in {cache}) ...", flush=True)
        start = time.perf_counter()
        # Largest first so the two workers finish together; one BLAS thread each.
        todo.sort(key=lambda item: -Path(item[0]).stat().st_size)
        parallel_map(hks_job, todo, threads_per_worker=1, label="HKS")
        print(f"  HKS done in {time.perf_counter() - start:.0f} s", flush=True)
    full = FeatureSpec(timescales=spec.timescales, laplacian=spec.laplacian, units=spec.units, kind=FULL_KIND,
                       max_eigenvalue=spec.max_eigenvalue, scaled=spec.scaled)
    items = []
    for path, lpath, key in zip(paths, label_paths, keys):
        mesh = load_mesh(path, units=spec.units)
        hks = np.load(str(key) + ".npy")
        meta = json.loads(Path(str(key) + ".json").read_text())
        fpath = Path(str(key) + f"-{FULL_KIND.replace('+', '_')}-{len(full.smoothing)}.npy")
        if not full_features:
            X = log_hks_features(hks)
        elif fpath.exists():
            X = np.load(fpath)
        else:
            X = vertex_features(mesh, hks, full)
            np.save(fpath, X)
        y = map_labels(np.load(lpath), label_map)
        items.append({"name": path.stem.replace("_surface", ""), "mesh": mesh, "X": X, "y": y, "hks_s": meta["seconds"],
                      "method": meta.get("method", "?")})
    return items


def columns_for(kind: str, full: FeatureSpec, t_max: float | None = None) -> np.ndarray:
    """Columns of the FULL_KIND feature matrix that make up ``kind``'s features (timescales ≤ ``t_max``).

    HKS values at a timescale do not depend on the other timescales computed, so a spec with
    fewer timescales is a subset of the columns.
    """
    ts = tuple(t for t in full.timescales if t_max is None or t <= t_max * (1 + 1e-9))
    sub = FeatureSpec(timescales=ts, laplacian=full.laplacian, units=full.units, kind=kind,
                      smoothing=full.smoothing, max_eigenvalue=full.max_eigenvalue, scaled=full.scaled)
    index = {name: i for i, name in enumerate(full.feature_names)}
    return np.array([index[name] for name in sub.feature_names])


def oracle_rounds(mesh, X, y, *, rounds: int, per_round: int, patch: int, base=None, strategy="uncertain", seed=0,
                  weight: float = 1.0, algorithm: str = "random_forest") -> list[tuple[int, float]]:
    """Simulated clicking on one half of ``mesh``; spine F1 on the other half after each round.

    ``base`` = (X_base, y_base) labelled vertices from other meshes trained on alongside
    the clicks (warm start); without it the first model is trained on a small random seed.
    """
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(seed)
    first, _, _ = split_halves(mesh)
    pool, test = first, ~first
    test_idx = np.flatnonzero(test & (y >= 0))
    labels = np.full(len(y), UNLABELLED, dtype=np.int8)
    if base is None:  # a person starts by painting a few vertices of each class
        for c in (0, SPINE):
            idx = np.flatnonzero(pool & (y == c))
            labels[rng.choice(idx, size=min(50, len(idx)), replace=False)] = c
    clf = SpineClassifier(algorithm=algorithm)  # retrain() caps it to 40 trees x 10k vertices
    out = []
    for r in range(rounds + 1):
        mask = labels >= 0
        if base is None:
            retrain(clf, X, labels)
        else:
            Xt = np.concatenate([base[0], X[mask]])
            yt = np.concatenate([base[1], labels[mask]])
            sw = np.concatenate([np.ones(len(base[1])), np.full(int(mask.sum()), weight)])
            retrain(clf, Xt, yt, sample_weight=sw)
        pred = clf.predict(X[test_idx])
        out.append((int(mask.sum()), float(f1_score(y[test_idx] == SPINE, pred == SPINE))))
        if r == rounds:
            break
        proba = clf.predict_proba(X)
        exclude = mask | test  # never click in the test half
        if strategy == "uncertain":
            regions = uncertain_regions(mesh, proba, exclude, top=per_round, max_size=patch, min_size=5, threshold=0.3)
        else:  # random patches of the same size: random scores, no threshold
            regions = uncertain_regions(mesh, proba, exclude, top=per_round, max_size=patch, min_size=5, threshold=0.0,
                                        score=rng.uniform(size=len(y)).astype(np.float32))
        for region in regions:
            labels = merge_labels(labels, y, region.vertices)  # the oracle paints the true labels (-1 stays unlabelled)
    return out


def variant_features(d: dict, kind: str, full: FeatureSpec, t_max: float) -> np.ndarray:
    """Features of one cached mesh for ``kind`` at timescales ≤ ``t_max``: columns of the full matrix, and
    for an "sihks" kind the scale-invariant HKS built from the cached log-HKS columns."""
    if not kind.startswith("sihks"):
        return d["X"][:, columns_for(kind, full, t_max)]
    from engine.mesh.features import scale_invariant_hks

    ts = np.asarray(full.timescales)
    keep = np.flatnonzero(ts <= t_max * (1 + 1e-9))
    spec = FeatureSpec(timescales=tuple(ts[keep]), units=full.units, kind=kind, smoothing=full.smoothing)
    si = scale_invariant_hks(d["X"][:, keep], spec.n_base)  # the first columns of the full matrix are log-HKS
    rest = kind.replace("sihks", "hks")
    if rest == "hks":
        return si
    if "smooth" in rest:
        raise SystemExit("sihks+smooth is not built from the cache; pick sihks, sihks+curv or sihks+shape")
    return np.hstack([si, d["X"][:, columns_for(rest, full, t_max)[len(keep):]]])


def whole_command(extra: list[str], label: str) -> dict:
    """``python -m engine.cli spines evaluate`` on NEURD in a subprocess: wall seconds and its JSON."""
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        cmd = [sys.executable, "-m", "engine.cli", "spines", "evaluate", "--mesh", str(NEURD),
               "--labels", str(NEURD.with_name(NEURD.stem + "_vertex_labels.npy")), "--json", str(out), *extra]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{label} failed:\n{proc.stderr[-2000:]}")
        report = json.loads(out.read_text())
    result = report["results"][0]
    spine = result["classes"].index("spine")
    shown = " ".join(["neurowb spines evaluate --mesh NEURD.off --labels NEURD_vertex_labels.npy", *extra])
    return {"what": label, "command": shown, "seconds": seconds, "spine_f1": result["f1"][spine],
            "weighted_f1": result["weighted_f1"], "fold_f1": [f["f1"][spine] for f in result["folds"]],
            "features": report["features"]["kind"], "n_timescales": len(report["features"]["timescales"]),
            "classifier": report.get("classifier", "?")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--quick", action="store_true", help="12 SpineTool dendrites, fewer rounds")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="KIND@T_MAX (µm²), comma-separated")
    parser.add_argument("--loo", default=LOO_VARIANTS, help="variants that also get the 55-fold leave-one-out")
    parser.add_argument("--max-train-per-mesh", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=10, help="active-learning rounds (0: skip the simulation)")
    parser.add_argument("--algorithm", choices=("random_forest", "extra_trees"), default="extra_trees",
                        help="classifier of the per-variant comparison (default extra trees, as the command)")
    parser.add_argument("--skip-command", action="store_true", help="skip timing the whole command")
    parser.add_argument("--timescales", default="0.05,20,32", metavar="T_MIN,T_MAX,N",
                        help="the cached HKS: N log-spaced timescales in T_MIN–T_MAX µm² (default the published 0.05,20,32)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not NEURD.exists() or not SPINETOOL.is_dir():
        raise SystemExit(f"real data not found under {DATA}")
    t_start = time.perf_counter()
    print(machine_header("Spine classifier (benchmarks.spines)"))
    print("\nTimings are pessimistic: 2 cores shared with other engineers' jobs.\n", flush=True)
    results: dict = {"variants": []}

    # -- the whole command, as a user runs it -----------------------------------------------------
    if not args.skip_command:
        print("### The whole command: `spines evaluate` on NEURD, halves split\n", flush=True)
        runs = [whole_command([], "defaults"),
                whole_command(["--features", "hks", "--timescales", "32", "--t-max", "20", "--algorithm", "random_forest"],
                              "previous defaults")]
        results["command"] = runs
        markdown_table([[r["what"], f"`{r['command']}`", r["features"], r["n_timescales"], r["classifier"].replace("_", " "),
                         r["spine_f1"], " / ".join(f"{v:.3f}" for v in r["fold_f1"]), r["weighted_f1"], r["seconds"]]
                        for r in runs],
                       ["", "command", "features", "timescales", "classifier", "spine F1", "per fold", "weighted F1",
                        "wall s (whole process)"])
        print(flush=True)

    t_min, t_max, n_t = (float(v) for v in args.timescales.split(","))
    timescales = tuple(np.geomspace(t_min, t_max, int(n_t)))
    spec = FeatureSpec(timescales=timescales, units="um", kind="hks")
    full = FeatureSpec(timescales=timescales, units="um", kind=FULL_KIND)
    st_paths = sorted(SPINETOOL.glob("spinetool_*_surface.ply"))
    if args.quick:
        st_paths = st_paths[:: max(1, len(st_paths) // 12)][:12]
    st_labels = [p.with_name(p.name.replace("_surface.ply", "_spine_instance_labels.npy")) for p in st_paths]
    loo_names = [v.strip() for v in args.loo.split(",") if v.strip()]
    names = list(dict.fromkeys([v.strip() for v in args.variants.split(",") if v.strip()] + loo_names))
    need_full = any(name.split("@")[0] not in ("hks", "sihks") for name in names)
    neurd = load_dataset([NEURD], [NEURD.with_name(NEURD.stem + "_vertex_labels.npy")], "neurd", spec, args.cache, need_full)[0]
    st = load_dataset(st_paths, st_labels, "spinetool", spec, args.cache, need_full)
    print(f"data ready after {time.perf_counter() - t_start:.0f} s", flush=True)

    print("\n### Data and HKS\n")
    st_hks = [d["hks_s"] for d in st]
    markdown_table([
        ["NEURD Harris-lab dendrite", 1, neurd["mesh"].n_vertices, float(np.mean(neurd["y"] == SPINE)),
         int(np.sum(neurd["y"] == UNLABELLED)), neurd["hks_s"], neurd["method"]],
        ["SpineTool dendrites", len(st), sum(d["mesh"].n_vertices for d in st),
         float(np.mean(np.concatenate([d["y"] for d in st]) == SPINE)), 0, float(np.sum(st_hks)), st[0]["method"]],
    ], ["data", "meshes", "vertices", "spine fraction", "ignored (-1)", "HKS s (first run, 1 thread/mesh)", "HKS method"])
    print(f"\ncached HKS: {spec.describe()}; smoothing radii {full.smoothing} µm", flush=True)

    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    st_idx = [_subsample(d["y"], args.max_train_per_mesh, rng) for d in st]
    st_y = np.concatenate([d["y"] for d in st])

    def run_variant(name: str, with_loo: bool) -> dict:
        kind, t_max = name.split("@")
        t_max = float(t_max)
        Xn = variant_features(neurd, kind, full, t_max)
        Xs = [variant_features(d, kind, full, t_max) for d in st]
        loo_clf = clone(LOO_CLASSIFIER).set_params(algorithm=args.algorithm)
        t0 = time.perf_counter()
        halves = evaluate_halves(neurd["mesh"], Xn, neurd["y"], classifier=SpineClassifier(algorithm=args.algorithm))
        t_halves = time.perf_counter() - t0
        t0 = time.perf_counter()
        zclf = clone(loo_clf).fit(np.concatenate([X[i] for X, i in zip(Xs, st_idx)]),
                                  np.concatenate([d["y"][i] for d, i in zip(st, st_idx)]))
        ok = neurd["y"] >= 0
        to_neurd = float(f1_score(neurd["y"][ok] == SPINE, zclf.predict(Xn[ok]) == SPINE))
        nclf = clone(loo_clf).fit(Xn, neurd["y"])
        pred = np.concatenate([nclf.predict(X) for X in Xs])
        to_st = float(f1_score(st_y[st_y >= 0] == SPINE, pred[st_y >= 0] == SPINE))
        t_zero = time.perf_counter() - t0
        loo, t_loo, loo_nodup = None, float("nan"), float("nan")
        if with_loo:
            t0 = time.perf_counter()
            loo = evaluate_leave_one_out(Xs, [d["y"] for d in st], names=[d["name"] for d in st], classifier=loo_clf,
                                         max_train_per_mesh=args.max_train_per_mesh)
            t_loo = time.perf_counter() - t0
            keep = np.array([f.name not in DUPLICATES for f in loo.folds])
            loo_nodup = float(np.nanmean(loo.fold_f1("spine")[keep]))
        loo_mean = loo.mean_fold_f1() if loo else float("nan")
        row = {"features": kind, "t µm²": f"{full.timescales[0]:.3g}–{t_max:.3g}", "n features": Xn.shape[1],
               "NEURD halves spine F1": halves.spine_f1, "NEURD halves weighted F1": halves.weighted_f1,
               "SpineTool LOO mean spine F1": loo_mean, "same, without the duplicated dendrite": loo_nodup,
               "SpineTool LOO pooled spine F1": loo.spine_f1 if loo else float("nan"),
               "zero-shot SpineTool→NEURD": to_neurd, "zero-shot NEURD→SpineTool": to_st,
               "s (halves / LOO / zero-shot)": f"{t_halves:.0f} / {t_loo:.0f} / {t_zero:.0f}"}
        print(f"  {name}: halves {halves.spine_f1:.3f}, LOO {loo_mean:.3f}, zero-shot ST→NEURD {to_neurd:.3f}, "
              f"NEURD→ST {to_st:.3f} ({time.perf_counter() - t_start:.0f} s)", flush=True)
        results["variants"].append({"variant": name, "halves": halves.to_dict(), "loo": loo.to_dict() if loo else None,
                                    "zero_shot_to_neurd": to_neurd, "zero_shot_to_spinetool": to_st})
        return {"row": row, "halves": halves, "loo": loo, "name": name, "X": Xn}

    print(f"\n### Quality by feature variant ({args.algorithm.replace('_', ' ')}; leave-one-out and zero-shot: "
          f"{LOO_CLASSIFIER.n_estimators} trees on ≤ {args.max_train_per_mesh:,} vertices per dendrite)\n", flush=True)
    variants = [run_variant(name, name in loo_names) for name in names]
    print()
    markdown_table([v["row"] for v in variants], list(variants[0]["row"].keys()))

    for v in variants:
        if v["loo"] is None:
            continue
        loo = v["loo"]
        f1s = loo.fold_f1("spine")
        order = np.argsort(f1s)
        print(f"\n### SpineTool leave-one-out, {v['name']}\n")
        print(loo.table())
        print(f"\nper-dendrite spine F1: median {np.median(f1s):.3f}, min {f1s.min():.3f}, max {f1s.max():.3f}, "
              f"{int(np.sum(f1s >= 0.6))}/{len(f1s)} at ≥ 0.6; worst and best 3:\n")
        markdown_table([[loo.folds[i].name, loo.folds[i].n_test, f1s[i], float(np.mean(st[i]["y"] == SPINE))]
                        for i in list(order[:3]) + list(order[-3:])],
                       ["held-out dendrite", "vertices", "spine F1", "spine fraction"])

    # -- retrain speed ----------------------------------------------------------------------------
    default_kind = FeatureSpec.default("um").kind
    print(f"\n### Retraining speed (engine.mesh.active.retrain), features {default_kind}, t ≤ 2 µm²\n")
    if t_min != 0.05:
        print("(skipped: the cached timescales are not the published ones)")
        return
    retrain_rows = []
    cols = columns_for(default_kind, full, 2.0)
    Xall = np.concatenate([d["X"][:, cols] for d in st])
    take = np.random.default_rng(1).choice(len(st_y), size=100_000, replace=False)
    X100, y100 = np.ascontiguousarray(Xall[take]), st_y[take]
    del Xall
    for algorithm in ("extra_trees", "random_forest"):
        b, m = time_call(lambda a=algorithm: retrain(SpineClassifier(algorithm=a), X100, y100), repeat=3)
        retrain_rows.append([algorithm.replace("_", " "), len(cols), "100,000", b, m])
        results.setdefault("retrain", {})[algorithm] = {"best_s": b, "median_s": m}
    markdown_table(retrain_rows, ["classifier", "n features", "labelled vertices", "retrain best s", "retrain median s"])
    print("\nretrain(): at most 40 trees, each on a bootstrap of at most 10,000 vertices, all cores.")

    # -- active learning simulation ---------------------------------------------------------------
    if args.rounds > 0:
        best = max((v for v in variants if v["name"].startswith("hks")), key=lambda v: v["halves"].spine_f1)
        X = best["X"]
        rounds = min(args.rounds, 4) if args.quick else args.rounds
        print(f"\n### Active learning on NEURD (oracle), {best['name']}\n")
        print("Each round labels the 5 most uncertain regions (≤ 300 vertices each) of the low half "
              "and retrains; spine F1 on the high half. 'random' labels random patches of the same size.\n", flush=True)
        cold_u = oracle_rounds(neurd["mesh"], X, neurd["y"], rounds=rounds, per_round=5, patch=300, algorithm=args.algorithm)
        cold_r = oracle_rounds(neurd["mesh"], X, neurd["y"], rounds=rounds, per_round=5, patch=300, strategy="random",
                               algorithm=args.algorithm)
        al_rows = [[r, cold_u[r][0], cold_u[r][1], cold_r[r][0], cold_r[r][1]] for r in range(rounds + 1)]
        markdown_table(al_rows, ["round", "labelled", "uncertain regions: spine F1", "random: labelled", "random patches: spine F1"])
        results["active"] = {"cold_uncertain": cold_u, "cold_random": cold_r}

    total = time.perf_counter() - t_start
    print(f"\ntotal {total:.0f} s, peak RSS {peak_rss_mb():.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
