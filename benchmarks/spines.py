"""Spine classifier quality, retraining speed and simulated active learning on real meshes.

Data (../shared/data/meshes, see its README): the NEURD Harris-lab EM dendrite (µm, labels
0 shaft, 1/2/3 spine, -1 unmatched) and the 55 SpineTool confocal dendrites (µm, spine
instance ids). Both are in µm, so one feature spec serves both (a nm mesh would be rescaled
to µm first by :func:`engine.mesh.spines.mesh_in_units`).

For each feature kind (log-HKS alone, + neighbourhood smoothing, + curvature, + both):

* NEURD, spatial split: train on one half along the longest axis, test on the other, both
  ways, metrics pooled (goal: spine F1 ≥ 0.95);
* SpineTool, leave-one-dendrite-out over all 55 (goal: mean spine F1 ≥ 0.85);
* zero-shot: trained on all SpineTool dendrites, applied to the NEURD dendrite.

Then: :func:`engine.mesh.active.retrain` time at 100k labelled vertices (goal < 2 s), and
an oracle simulation of active learning on NEURD (label the most uncertain regions of one
half each round, F1 on the other half), against random patches of the same size.

HKS per mesh is cached (``--cache``, default ``$TMPDIR/neurowb-bench-cache/spines``), keyed by
the mesh file, the feature spec and the HKS engine's source, so reruns skip it.

Run: ``python -m benchmarks.spines`` (first run ~20-40 min on 2 shared cores, mostly HKS;
then ~10-20 min). ``--quick`` uses 12 SpineTool dendrites and fewer rounds.
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
T_SHORT = 2.0  # µm²: the short-timescale variant keeps t ≤ this
DEFAULT_KINDS = "hks,hks+smooth,hks+shape,hks+smooth+curv+shape"
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


def load_dataset(paths: list[Path], label_paths: list[Path], label_map: str, spec: FeatureSpec, cache: Path) -> list[dict]:
    """Meshes, labels and full (FULL_KIND) features, computing and caching the HKS as needed."""
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
        if fpath.exists():
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--quick", action="store_true", help="12 SpineTool dendrites, fewer rounds")
    parser.add_argument("--kinds", default=DEFAULT_KINDS, help="feature kinds to compare")
    parser.add_argument("--loo-kinds", default=None, help="kinds to run the 55-fold leave-one-out for (default: all)")
    parser.add_argument("--max-train-per-mesh", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--algorithm", choices=("random_forest", "extra_trees"), default="random_forest",
                        help="classifier of the per-kind comparison (extra trees: ~10x faster to fit)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not NEURD.exists() or not SPINETOOL.is_dir():
        raise SystemExit(f"real data not found under {DATA}")
    t_start = time.perf_counter()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    loo_kinds = kinds if args.loo_kinds is None else [k.strip() for k in args.loo_kinds.split(",")]
    print(machine_header("Spine classifier (benchmarks.spines)"))
    print("\nTimings are pessimistic: 2 cores shared with two other engineers' jobs.\n", flush=True)

    spec = FeatureSpec.default("um")
    full = FeatureSpec(timescales=spec.timescales, units="um", kind=FULL_KIND)
    st_paths = sorted(SPINETOOL.glob("spinetool_*_surface.ply"))
    if args.quick:
        st_paths = st_paths[:: max(1, len(st_paths) // 12)][:12]
    st_labels = [p.with_name(p.name.replace("_surface.ply", "_spine_instance_labels.npy")) for p in st_paths]
    neurd = load_dataset([NEURD], [NEURD.with_name(NEURD.stem + "_vertex_labels.npy")], "neurd", spec, args.cache)[0]
    st = load_dataset(st_paths, st_labels, "spinetool", spec, args.cache)
    print(f"data ready after {time.perf_counter() - t_start:.0f} s", flush=True)
    results: dict = {"spec": spec.to_dict(), "kinds": {}}

    print("\n### Data and HKS\n")
    st_hks = [d["hks_s"] for d in st]
    markdown_table([
        ["NEURD Harris-lab dendrite", 1, neurd["mesh"].n_vertices, float(np.mean(neurd["y"] == SPINE)),
         int(np.sum(neurd["y"] == UNLABELLED)), neurd["hks_s"], neurd["method"]],
        ["SpineTool dendrites", len(st), sum(d["mesh"].n_vertices for d in st),
         float(np.mean(np.concatenate([d["y"] for d in st]) == SPINE)), 0, float(np.sum(st_hks)), st[0]["method"]],
    ], ["data", "meshes", "vertices", "spine fraction", "ignored (-1)", "HKS s (first run, 1 thread/mesh)", "HKS method"])
    print(f"\nfeature spec: {spec.describe()}; smoothing radii {full.smoothing} µm", flush=True)

    # -- quality per feature kind (and, for the best kind, random forest vs extra trees) ------------
    from sklearn.metrics import f1_score

    def run_variant(kind: str, algorithm: str, with_loo: bool, t_max: float | None = None) -> dict:
        cols = columns_for(kind, full, t_max)
        halves_clf = SpineClassifier(algorithm=algorithm)
        loo_clf = clone(LOO_CLASSIFIER).set_params(algorithm=algorithm)
        t0 = time.perf_counter()
        halves = evaluate_halves(neurd["mesh"], neurd["X"][:, cols], neurd["y"], classifier=halves_clf)
        t_halves = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        idx = [_subsample(d["y"], args.max_train_per_mesh, rng) for d in st]
        t0 = time.perf_counter()
        zclf = clone(loo_clf).fit(np.concatenate([d["X"][i][:, cols] for d, i in zip(st, idx)]),
                                  np.concatenate([d["y"][i] for d, i in zip(st, idx)]))
        zero = zclf.predict(neurd["X"][:, cols])
        t_zero = time.perf_counter() - t0
        ok = neurd["y"] >= 0
        zero_f1 = float(f1_score(neurd["y"][ok] == SPINE, zero[ok] == SPINE))
        loo, t_loo = None, float("nan")
        if with_loo:
            t0 = time.perf_counter()
            loo = evaluate_leave_one_out([d["X"][:, cols] for d in st], [d["y"] for d in st], names=[d["name"] for d in st],
                                         classifier=loo_clf, max_train_per_mesh=args.max_train_per_mesh)
            t_loo = time.perf_counter() - t0
        loo_mean = loo.mean_fold_f1() if loo else float("nan")
        loo_nodup = float("nan")
        if loo:
            f1s = loo.fold_f1("spine")
            keep = np.array([f.name not in DUPLICATES for f in loo.folds])
            loo_nodup = float(np.nanmean(f1s[keep]))
        row = {"features": kind, "timescales µm²": f"{full.timescales[0]:.3g}–{t_max or full.timescales[-1]:.3g}",
               "classifier": algorithm.replace("_", " "), "n features": len(cols),
               "NEURD halves spine F1": halves.spine_f1, "NEURD halves weighted F1": halves.weighted_f1,
               "SpineTool LOO mean spine F1": loo_mean, "same, without the duplicated dendrite": loo_nodup,
               "SpineTool LOO pooled spine F1": loo.spine_f1 if loo else float("nan"),
               "zero-shot SpineTool→NEURD spine F1": zero_f1,
               "s (halves / LOO / zero-shot)": f"{t_halves:.0f} / {t_loo:.0f} / {t_zero:.0f}"}
        print(f"  {kind} {algorithm} t≤{t_max or full.timescales[-1]:.3g}: halves {halves.spine_f1:.3f}, LOO {loo_mean:.3f}, zero-shot {zero_f1:.3f} "
              f"({time.perf_counter() - t_start:.0f} s)", flush=True)
        results["variants"].append({"kind": kind, "algorithm": algorithm, "t_max": t_max, "halves": halves.to_dict(),
                                    "loo": loo.to_dict() if loo else None, "zero_shot_spine_f1": zero_f1,
                                    "seconds": {"halves": t_halves, "loo": t_loo, "zero_shot": t_zero}})
        return {"row": row, "halves": halves, "loo": loo, "zero": zero_f1, "loo_nodup": loo_nodup, "kind": kind,
                "algorithm": algorithm, "t_max": t_max, "cols": cols}

    results["variants"] = []
    first, other = args.algorithm, ({"random_forest", "extra_trees"} - {args.algorithm}).pop()
    variants = {(kind, first): run_variant(kind, first, kind in loo_kinds) for kind in kinds}

    def merit(v: dict) -> float:
        return (v["loo"].mean_fold_f1() if v["loo"] else 0.0) + v["halves"].spine_f1

    best = max(kinds, key=lambda k: merit(variants[(k, first)]))
    # The other classifier's leave-one-out only when it is the cheap one (a random-forest LOO takes ~15 min here).
    variants[(best, other)] = run_variant(best, other, best in loo_kinds and other == "extra_trees")
    algo = max(("random_forest", "extra_trees"), key=lambda a: merit(variants[(best, a)]))
    # Short timescales only (diffusion length ≤ 1.4 µm): a 9 µm dendrite piece is shorter than
    # the diffusion length at the largest default timescale (4.5 µm), so those columns mostly
    # encode the position along the piece.
    variants[(best, algo, T_SHORT)] = run_variant(best, algo, best in loo_kinds, t_max=T_SHORT)
    rows = [v["row"] for v in variants.values()]
    print("\n### Quality by feature kind\n")
    markdown_table(rows, list(rows[0].keys()))

    best_v = max(variants.values(), key=merit)
    halves, loo = best_v["halves"], best_v["loo"]
    best_algo = best_v["row"]["classifier"]
    best_desc = f"features '{best_v['kind']}', t ≤ {best_v['t_max'] or full.timescales[-1]:.3g} µm², {best_algo}"
    print(f"\n### NEURD halves, {best_desc}\n")
    print(halves.table(folds=True))
    if loo is not None:
        print(f"\n### SpineTool leave-one-out, {best_desc}\n")
        print(loo.table())
        f1s = loo.fold_f1("spine")
        order = np.argsort(f1s)
        print(f"\nper-dendrite spine F1: median {np.median(f1s):.3f}, min {f1s.min():.3f}, max {f1s.max():.3f}, "
              f"{int(np.sum(f1s >= 0.85))}/{len(f1s)} at ≥ 0.85; worst and best 3:\n")
        markdown_table([[loo.folds[i].name, loo.folds[i].n_test, f1s[i], float(np.mean(st[i]["y"] == SPINE))]
                        for i in list(order[:3]) + list(order[-3:])],
                       ["held-out dendrite", "vertices", "spine F1", "spine fraction"])

    # -- retrain speed ----------------------------------------------------------------------------
    print("\n### Retraining speed (engine.mesh.active.retrain)\n")
    retrain_rows = []
    Xall = np.concatenate([d["X"] for d in st])
    yall = np.concatenate([d["y"] for d in st])
    take = np.random.default_rng(1).choice(len(yall), size=100_000, replace=False)
    for kind in dict.fromkeys([kinds[0], best]):
        cols = columns_for(kind, full)
        X100, y100 = np.ascontiguousarray(Xall[take][:, cols]), yall[take]
        for algorithm in ("random_forest", "extra_trees"):
            b, m = time_call(lambda a=algorithm, X=X100, y=y100: retrain(SpineClassifier(algorithm=a), X, y), repeat=3)
            fb, fm = time_call(lambda a=algorithm, X=X100, y=y100: SpineClassifier(algorithm=a).fit(X, y), repeat=1)
            retrain_rows.append([kind, algorithm.replace("_", " "), len(cols), "100,000", b, m, fm])
            results.setdefault("retrain", {})[f"{kind} {algorithm}"] = {"best_s": b, "median_s": m, "default_fit_s": fm}
    del Xall
    markdown_table(retrain_rows, ["features", "classifier", "n features", "labelled vertices", "retrain best s", "retrain median s",
                                  "full fit s (100 trees, 50k/tree)"])
    print("\nretrain(): at most 40 trees, each on a bootstrap of at most 10,000 vertices, all cores.")

    # -- active learning simulation ---------------------------------------------------------------
    cols = best_v["cols"]
    X = neurd["X"][:, cols]
    rounds = 4 if args.quick else args.rounds
    algo = best_v["algorithm"]
    print(f"\n### Active learning on NEURD (oracle), {best_desc}\n")
    print("Each round labels the 5 most uncertain regions (≤ 300 vertices each) of the low half "
          "and retrains; spine F1 on the high half. 'random' labels random patches of the same size.\n", flush=True)
    cold_u = oracle_rounds(neurd["mesh"], X, neurd["y"], rounds=rounds, per_round=5, patch=300, algorithm=algo)
    cold_r = oracle_rounds(neurd["mesh"], X, neurd["y"], rounds=rounds, per_round=5, patch=300, strategy="random", algorithm=algo)
    rng = np.random.default_rng(2)
    idx = [_subsample(d["y"], 2000, rng) for d in st]
    base = (np.concatenate([d["X"][i][:, cols] for d, i in zip(st, idx)]), np.concatenate([d["y"][i] for d, i in zip(st, idx)]))
    warm_u = oracle_rounds(neurd["mesh"], X, neurd["y"], rounds=rounds, per_round=5, patch=300, base=base, weight=5.0, algorithm=algo)
    al_rows = [[r, cold_u[r][0], cold_u[r][1], cold_r[r][0], cold_r[r][1], warm_u[r][0], warm_u[r][1]] for r in range(rounds + 1)]
    markdown_table(al_rows, ["round", "cold: labelled", "cold uncertain: spine F1", "random: labelled", "random patches: spine F1",
                             "warm (SpineTool + clicks): NEURD labelled", "warm: spine F1"])
    results["active"] = {"cold_uncertain": cold_u, "cold_random": cold_r, "warm_uncertain": warm_u}

    # -- goals ---------------------------------------------------------------------------------------
    halves_best = max(v["halves"].spine_f1 for v in variants.values())
    loo_best = max((v["loo"].mean_fold_f1() for v in variants.values() if v["loo"]), default=float("nan"))
    zero_best = max(v["zero"] for v in variants.values())
    retrain_s = results["retrain"][f"{kinds[0]} random_forest"]["median_s"]
    retrain_et = results["retrain"][f"{kinds[0]} extra_trees"]["median_s"]
    print("\n### Goals\n")
    markdown_table([
        ["NEURD halves spine F1", "≥ 0.95", halves_best, "met" if halves_best >= 0.95 else "NOT met"],
        ["SpineTool leave-one-out mean spine F1", "≥ 0.85", loo_best, "met" if loo_best >= 0.85 else "NOT met"],
        ["zero-shot SpineTool → NEURD spine F1", "report", zero_best, "reported"],
        [f"retrain at 100k labelled vertices ({kinds[0]}, random forest)", "< 2 s", retrain_s, "met" if retrain_s < 2 else "NOT met"],
        [f"retrain at 100k labelled vertices ({kinds[0]}, extra trees)", "< 2 s", retrain_et, "met" if retrain_et < 2 else "NOT met"],
    ], ["goal", "target", "measured (best feature kind)", "status"])
    total = time.perf_counter() - t_start
    print(f"\ntotal {total:.0f} s, peak RSS {peak_rss_mb():.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
