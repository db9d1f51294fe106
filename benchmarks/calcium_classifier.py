"""The ROI classifier taught on one movie, judged on another: accept/reject accuracy against ground truth.

For each simulated movie, CNMF (:func:`engine.calcium.pipeline.run_cnmf`) runs once; each component's
true label is whether it matches a true cell at IoU ≥ 0.5 (masks at 20 % of the peak, Hungarian
matching, as ``benchmarks/cnmf.py`` scores F1). A person's 20 decisions on movie A are simulated by
those labels, picked two ways:

* **N walk**: what the window's “next uncertain ROI” key (N) visits — the undecided ROI nearest
  P(cell) 0.5, from the metric thresholds until the classifier is ready, then from the classifier
  re-trained after every decision;
* **random**: 20 ROIs drawn at random (5 draws).

The classifier trained on them scores every component of movie B (another seed, and for most pairs
another kind of movie: density, simulator, noise); its accept/reject accuracy against B's truth is
set beside that of the fixed metric thresholds (the pipeline's ``accepted``) on the same components.
Models: extra trees (the default), random forest, logistic regression on standardised features.

Learning from the decisions alone is set beside learning from them plus their **context** (the
thresholds' verdicts on the movie's other ROIs, weighted 5 times less: what the window stores). Two
detection settings: the default, and a permissive one (min PNR 3) that finds more candidates, false
ones among them.

Run: ``python -m benchmarks.calcium_classifier [--frames 1500] [--decisions 20]``
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

from benchmarks.common import machine_header, markdown_table


def truth_labels(result, footprints: np.ndarray) -> np.ndarray:
    """Per component: matched one-to-one to a true cell at IoU ≥ 0.5 (both binarized at 20 % of the peak)."""
    tm = (footprints >= 0.2 * footprints.max(axis=(1, 2), keepdims=True)).reshape(len(footprints), -1).astype(np.float32)
    K = result.n_components
    labels = np.zeros(K, bool)
    if K == 0 or len(tm) == 0:
        return labels
    em = np.stack([result.roi_mask(k) for k in range(K)]).reshape(K, -1).astype(np.float32)
    inter = em @ tm.T
    iou = inter / (em.sum(1)[:, None] + tm.sum(1)[None] - inter)
    rows, cols = linear_sum_assignment(-iou)
    labels[rows[iou[rows, cols] >= 0.5]] = True
    return labels


def movies(frames: int) -> list[dict]:
    """The movies: (name, kind, movie, footprints, fps, neuron diameter); kinds differ in density,
    length (a short recording: lower SNR), simulator, frame rate and read noise."""
    from engine.calcium import synth

    out = []
    for seed, cells, T in ((1, 50, frames), (2, 50, frames), (3, 110, frames), (5, 80, 600), (6, 80, 600)):
        sim = synth.recording(T, 128, 128, cells, seed=seed)
        out.append({"name": f"recording {cells} cells {T} fr s{seed}", "kind": f"recording-{cells}-{T}", "movie": sim["movie"],
                    "footprints": sim["footprints"], "fps": 30.0, "diameter": 10.0})
    for seed, noise in ((7, 4.0), (8, 10.0)):  # another simulator: nuclear GCaMP at 10 Hz, read noise σ
        sim = synth.nuclear_patch(128, 128, frames, n_neurons=70, fps=10.0, min_distance=6.0, noise=noise, seed=seed)
        out.append({"name": f"nuclear 70 noise {noise:g} s{seed}", "kind": "nuclear", "movie": np.ascontiguousarray(sim["Y"].transpose(2, 0, 1)),
                    "footprints": sim["footprints"], "fps": 10.0, "diameter": 8.0})
    movie, footprints, _, _ = synth.demo_movie(frames, 128, 128, 40, seed=9)  # the demo simulator
    out.append({"name": "demo 40 s9", "kind": "demo", "movie": movie, "footprints": footprints, "fps": 30.0, "diameter": 10.0})
    return out


def taught(result, features, labels, pick, context: bool):
    """The decisions on ``pick`` (labels from the truth), with the thresholds' verdicts on the others as context."""
    from engine.calcium.classifier import Decisions

    decisions = Decisions().add("A", result.centers[pick], features[pick], labels[pick])
    return decisions.with_context("A", result.centers, features, result.accepted) if context else decisions


def walk_decisions(result, features, labels, n: int, kind: str, context: bool) -> np.ndarray:
    """The ROIs the N key visits for ``n`` decisions (labels from the truth), re-training after each."""
    from engine.calcium.classifier import Decisions, next_uncertain, score

    decided = np.zeros(result.n_components, bool)
    decisions = Decisions()
    for _ in range(min(n, result.n_components)):
        p = score(result, decisions, features, kind).probability
        k = next_uncertain(p, decided)
        decided[k] = True
        decisions = taught(result, features, labels, np.flatnonzero(decided), context)
    return np.flatnonzero(decided)


def cross_movie(data: list[dict], strategy: str, kind: str, context: bool, n_decisions: int, draws: int, rng) -> tuple[dict, list[dict]]:
    """Teach on each movie, judge on every other: the summary row and the per-pair rows."""
    from engine.calcium.classifier import threshold_probability, train

    acc_clf, acc_thr, brier, fallback, same, other, pairs = [], [], [], 0, [], [], []
    for a in data:
        K = a["result"].n_components
        picks = ([walk_decisions(a["result"], a["features"], a["labels"], n_decisions, kind, context)] if strategy == "N walk" else
                 [rng.choice(K, min(n_decisions, K), replace=False) for _ in range(draws)])  # fmt: skip
        for pick in picks:
            model = train(taught(a["result"], a["features"], a["labels"], pick, context), kind)  # as score(), trained once
            for b in data:
                if b is a:
                    continue
                p = model.predict_proba(b["features"])[:, 1] if model is not None else threshold_probability(b["result"])
                fallback += model is None
                acc = float(((p >= 0.5) == b["labels"]).mean())
                thr = float((b["result"].accepted == b["labels"]).mean())
                acc_clf.append(acc)
                acc_thr.append(thr)
                brier.append(float(np.mean((p - b["labels"]) ** 2)))
                (same if a["kind"] == b["kind"] else other).append(acc - thr)
                pairs.append({"taught on (20 decisions)": a["name"], "rejects among them": int((~a["labels"][pick]).sum()),
                              "judged on": b["name"], "true cells / components": f"{b['labels'].sum()} / {len(b['labels'])}",
                              "classifier accuracy": acc, "threshold accuracy": thr, "classifier used": model is not None})
    d = np.array(acc_clf) - np.array(acc_thr)
    row = {"pairs": len(acc_clf), "classifier accuracy": f"{np.mean(acc_clf):.3f} ± {np.std(acc_clf):.3f}",
           "threshold accuracy": f"{np.mean(acc_thr):.3f} ± {np.std(acc_thr):.3f}", "gain (mean ± sd)": f"{d.mean():+.3f} ± {d.std():.3f}",
           "gain same kind / other kind": f"{np.mean(same) if same else float('nan'):+.3f} / {np.mean(other):+.3f}",
           "better / worse / equal": f"{(d > 1e-9).sum()} / {(d < -1e-9).sum()} / {(np.abs(d) <= 1e-9).sum()}",
           "Brier": f"{np.mean(brier):.3f}", "fell back to thresholds": fallback}  # fmt: skip
    return row, pairs


def fit_times(kinds) -> list[dict]:
    """Seconds to re-train each model on n decisions (the window re-trains after every decision)."""
    from engine.calcium.classifier import FEATURES, make_model

    rng = np.random.default_rng(0)
    rows = []
    for n in (20, 200, 2000):
        X = rng.normal(size=(n, len(FEATURES)))
        y = X[:, 1] + 0.3 * rng.normal(size=n) > 0
        row = {"decisions": n}
        for kind in kinds:
            start = time.perf_counter()
            make_model(kind).fit(X, y)
            row[f"{kind} fit ms"] = (time.perf_counter() - start) * 1000
        rows.append(row)
    return rows


def main() -> None:
    from engine.calcium import classifier
    from engine.calcium.classifier import MODELS, roi_features
    from engine.calcium.pipeline import run_cnmf
    from engine.device import configure_threads

    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--decisions", type=int, default=20)
    parser.add_argument("--draws", type=int, default=5, help="random draws of the decisions per pair")
    args = parser.parse_args()
    configure_threads(1)
    print(machine_header("ROI classifier across movies (benchmarks.calcium_classifier)"))
    print(f"- load average at start: {os.getloadavg()[0]:.1f} (the machine was shared with other jobs)\n")
    sims = movies(args.frames)
    detections = {"default detection": {}, "permissive detection (min PNR 3)": {"min_pnr": 3.0}}
    for setting, options in detections.items():
        data = []
        for m in sims:
            start = time.perf_counter()
            result = run_cnmf(m["movie"], fs=m["fps"], neuron_diameter=m["diameter"], **options)
            t_feat = time.perf_counter()
            features = roi_features(result)
            t_feat = time.perf_counter() - t_feat
            labels = truth_labels(result, m["footprints"])
            data.append({**m, "result": result, "features": features, "labels": labels})
            print(f"{setting}, {m['name']}: {result.n_components} components, {labels.sum()} true cells matched, "
                  f"{int(result.accepted.sum())} accepted by the thresholds (accuracy {(result.accepted == labels).mean():.3f}); "
                  f"CNMF {time.perf_counter() - start:.1f} s, features {t_feat * 1000:.0f} ms")
        rows, shown = [], []
        for context in (True, False):
            for strategy in ("N walk", "random"):
                for kind in MODELS:
                    row, pairs = cross_movie(data, strategy, kind, context, args.decisions, args.draws, np.random.default_rng(0))
                    rows.append({"learns from": "decisions + context" if context else "decisions only", "decisions picked by": strategy,
                                 "model": kind, **row})
                    if context and strategy == "N walk" and kind == classifier.DEFAULT_MODEL:
                        shown = pairs
        print(f"\n### {setting}: {args.decisions} decisions on one movie, accuracy on each other movie\n")
        markdown_table(rows, list(rows[0]))
        print(f"\nPer pair ({setting}, N walk, decisions + context, {classifier.DEFAULT_MODEL}):\n")
        markdown_table(shown, list(shown[0]))
    print("\n### Re-training time\n")
    markdown_table(fit_times(MODELS), ["decisions"] + [f"{k} fit ms" for k in MODELS])


if __name__ == "__main__":
    main()
