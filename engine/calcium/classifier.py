"""A cell classifier for CNMF ROIs that learns from the user's accept / reject decisions, across movies.

Suite2p lets a user build a classifier offline from curated folders (``~/.suite2p/classifiers/
classifier_user.npy``: the stats and ``iscell`` of every ROI, a logistic regression on ``npix_norm``,
``compact`` and ``skew``). Here every accept or reject adds one labelled ROI to a store in the user's
data folder, the model is re-trained at once, and it scores the ROIs of every next CNMF result.

* **Features** (:data:`FEATURES`, :func:`roi_features`), all free of the movie's units so decisions
  on one movie carry to another: the pipeline's own metrics (SNR, spatial r, size), Suite2p's shape
  statistics computed as :mod:`engine.calcium.export` writes them (``npix_norm``, ``compact``,
  ``aspect_ratio``), footprint shape (solidity; ``center_fill``, low for doughnut-like footprints),
  trace statistics (skewness of F, transient rate, noise as a fraction of the raw fluorescence, decay
  time) and the largest activity correlation with an overlapping ROI (a cell found twice).
* **Store** (:class:`Decisions`): a plain ``.npz`` without pickles — ``features`` (N × F), ``labels``
  (1 accept / 0 reject), ``by_user``, ``feature_names``, the ``movie`` and ``center`` of each row,
  ``format`` and ``format_version`` — written atomically after each change to
  ``<user data>/classifiers/calcium_roi_decisions.npz`` (``NEUROWB_DATA_DIR`` moves it). A new decision
  on an ROI already decided (same movie, center within :data:`SAME_ROI_PX`) replaces the old one.
  A damaged store is set aside (:func:`engine.storage.read_hand_work`) and the work starts afresh.
* **Context** (as Suite2p, whose user classifier learns from every ROI of the curated sessions, not only
  the ones a person changed): the other ROIs of a movie the user decided on are kept too, labelled by the
  fixed metric thresholds (``by_user`` false) and weighted :data:`USER_WEIGHT` times less than decisions.
  Curating is mostly accepting the cells the thresholds missed: decisions alone are nearly all accepts,
  and the thresholds' verdicts are what the user left standing.
* **Model** (:func:`train`): extra trees (200, leaves of ≥ 2 ROIs, balanced classes; P(cell) the trees'
  vote), chosen by ``benchmarks/calcium_classifier.py`` over logistic regression on standardised
  features and random forests: as accurate as either when the decisions follow the N walk, clearly
  better from 20 decisions picked at random, best calibrated (Brier score). Until
  :data:`MIN_DECISIONS` decisions and :data:`MIN_PER_CLASS` ROIs of each kind exist, :func:`score` says so
  and falls back to the fixed metric thresholds of :func:`engine.calcium.pipeline.evaluate_components`,
  as a probability (:func:`threshold_probability`).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.storage import atomic_write_bytes, read_hand_work, user_data_dir

FORMAT = "neurowb-calcium-roi-decisions"
FORMAT_VERSION = 1
STORE_NAME = "calcium_roi_decisions.npz"
FEATURES = ("log_snr", "r_value", "size_vs_disk", "npix_norm", "compact", "aspect_ratio", "solidity", "center_fill",
            "skew", "event_rate", "noise", "decay_s", "neighbour_corr")
MIN_DECISIONS = 5  # the user's decisions before the classifier replaces the thresholds...
MIN_PER_CLASS = 5  # ...and labelled ROIs of each kind (decisions and context)
USER_WEIGHT = 5.0  # a decision weighs this many ROIs labelled by the thresholds
SAME_ROI_PX = 2.0  # a decision within this distance of an earlier one on the same movie replaces it
MODELS = ("logistic", "random_forest", "extra_trees")
DEFAULT_MODEL = "extra_trees"  # measured: benchmarks/calcium_classifier.py


def default_store_path() -> Path:
    """Where the user's decisions live: ``<user data>/classifiers/calcium_roi_decisions.npz``."""
    return user_data_dir() / "classifiers" / STORE_NAME


def movie_key(path) -> str:
    """A movie's name in the store: its file name and size (a re-run or a move keeps it)."""
    path = Path(path)
    return f"{path.name}:{path.stat().st_size}" if path.exists() else path.name


# -- features -------------------------------------------------------------------------------------

def roi_features(result) -> np.ndarray:
    """The :data:`FEATURES` of every ROI of a :class:`~engine.calcium.pipeline.CNMFResult` (K × F float64)."""
    from scipy.stats import skew
    from skimage.measure import regionprops

    from engine.calcium.export import STAT_MIN_WEIGHT, _shape_stats
    from engine.calcium.pipeline import SIZE_THRESHOLD

    K = result.n_components
    out = np.zeros((K, len(FEATURES)))
    if K == 0:
        return out
    h, w = result.image_shape
    diameter = float(result.params.get("neuron_diameter", 10.0))
    disk = math.pi * (diameter / 2.0) ** 2
    A = result.A.tocsc()
    snr, r, size = (np.asarray(result.metrics[k], np.float64) for k in ("snr", "r_value", "size"))
    npix_soma = np.zeros(K)
    duration = result.F.shape[1] / float(result.fps)
    masks = []
    for k in range(K):
        col = A[:, k]
        if col.nnz == 0:
            masks.append(np.zeros(0, np.int64))
            continue
        peak = float(col.data.max())
        keep = col.data >= STAT_MIN_WEIGHT * peak
        ypix, xpix = np.divmod(col.indices[keep], w)
        lam = col.data[keep] / col.data[keep].sum()
        stats = _shape_stats(ypix, xpix, lam, diameter)  # Suite2p's compact and aspect ratio
        npix_soma[k] = stats["npix_soma"]
        strong = col.data >= SIZE_THRESHOLD * peak
        masks.append(col.indices[strong])
        y, x = np.divmod(col.indices[strong], w)
        box = np.zeros((y.max() - y.min() + 1, x.max() - x.min() + 1), np.uint8)
        box[y - y.min(), x - x.min()] = 1
        solidity = float(regionprops(box)[0].solidity)
        # Weight near the weighted centroid over the peak: ~1 for a filled soma, low for a doughnut.
        yy, xx = np.divmod(col.indices, w)
        cy, cx = np.average(yy, weights=col.data), np.average(xx, weights=col.data)
        inner = np.hypot(yy - cy, xx - cx) <= max(1.0, 0.3 * math.sqrt(strong.sum() / math.pi))
        center_fill = float(col.data[inner].mean() / peak) if inner.any() else 0.0
        out[k, [4, 5, 6, 7]] = stats["compact"], stats["aspect_ratio"], solidity, center_fill
    out[:, 0] = np.log10(np.maximum(snr, 1e-2))
    out[:, 1] = r
    out[:, 2] = size / disk
    out[:, 3] = npix_soma / (np.median(npix_soma) + 1e-10)  # Suite2p's npix_norm: relative to this movie's ROIs
    F = np.asarray(result.F, np.float64)
    sigma = np.maximum(np.asarray(result.sigma, np.float64), 1e-12)
    out[:, 8] = np.nan_to_num(skew(F, axis=1))
    C = np.asarray(result.C, np.float64)
    above = C > 2.0 * sigma[:, None]  # transients: rises of the calcium above twice the noise
    out[:, 9] = np.count_nonzero(above[:, 1:] & ~above[:, :-1], axis=1) / duration
    raw = np.median(F, axis=1) + np.median(np.asarray(result.Fneu, np.float64), axis=1) + np.asarray(result.baseline, np.float64)
    out[:, 10] = sigma / np.maximum(np.abs(raw), 1e-6)
    g = np.clip(np.asarray(result.g, np.float64), 1e-6, 1 - 1e-6)
    out[:, 11] = np.clip(-1.0 / (np.log(g) * float(result.fps)), 0.0, 10.0)
    out[:, 12] = _neighbour_correlation(masks, C, h * w)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _neighbour_correlation(masks: list, C: np.ndarray, n_pixels: int) -> np.ndarray:
    """For each ROI, the largest correlation of its calcium with an ROI whose mask it overlaps (0: none)."""
    from scipy import sparse

    K = len(masks)
    cols = np.concatenate([np.full(len(m), k) for k, m in enumerate(masks)]) if K else np.zeros(0, int)
    M = sparse.csc_matrix((np.ones(len(cols)), (np.concatenate(masks) if K else cols, cols)), shape=(n_pixels, K))
    overlap = (M.T @ M).tocoo()
    out = np.zeros(K)
    pairs = overlap.row < overlap.col
    if not pairs.any():
        return out
    Z = C - C.mean(axis=1, keepdims=True)
    Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    i, j = overlap.row[pairs], overlap.col[pairs]
    corr = np.einsum("kt,kt->k", Z[i], Z[j])
    np.maximum.at(out, i, corr)
    np.maximum.at(out, j, corr)
    return out


# -- the fixed thresholds, as a probability ---------------------------------------------------------

def threshold_probability(result) -> np.ndarray:
    """The fixed metric thresholds as a probability: a logistic of the smallest scaled margin of SNR
    (log ratio to ``min_snr``), spatial r (to ``min_r``, per 0.1) and size (to the accepted range).
    ≥ 0.5 exactly where :func:`engine.calcium.pipeline.evaluate_components` accepts by the metrics."""
    m, p = result.metrics, result.params
    snr = np.maximum(np.asarray(m["snr"], np.float64), 1e-6)
    size = np.maximum(np.asarray(m["size"], np.float64), 1e-6)
    area = math.pi * (p.get("neuron_diameter", 10.0) / 2.0) ** 2
    margins = np.stack([np.log(snr / p.get("min_snr", 3.0)) / 0.3, (np.asarray(m["r_value"], np.float64) - p.get("min_r", 0.5)) / 0.1,
                        np.log(size / (0.25 * area)) / 0.3, np.log(2.5 * area / size) / 0.3])  # fmt: skip
    return 1.0 / (1.0 + np.exp(-np.clip(margins.min(axis=0), -50, 50)))


# -- the decisions store ------------------------------------------------------------------------

@dataclass
class Decisions:
    """Labelled ROIs from any number of movies: what the classifier learns from."""

    features: np.ndarray = field(default_factory=lambda: np.zeros((0, len(FEATURES))))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))  # 1 accept, 0 reject
    movies: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="<U1"))
    centers: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    by_user: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # False: context, labelled by the thresholds

    def __len__(self) -> int:
        """The user's decisions (the context rows not counted)."""
        return int(np.count_nonzero(self.by_user))

    def _rows(self, keep: np.ndarray) -> "Decisions":
        return Decisions(self.features[keep], self.labels[keep], self.movies[keep], self.centers[keep], self.by_user[keep])

    def _join(self, other: "Decisions") -> "Decisions":
        return Decisions(np.vstack([self.features, other.features]), np.concatenate([self.labels, other.labels]),
                         np.concatenate([self.movies, other.movies]), np.vstack([self.centers, other.centers]),
                         np.concatenate([self.by_user, other.by_user]))

    def counts(self) -> tuple[int, int]:
        """The user's (accepts, rejects)."""
        accepts = int(np.count_nonzero(self.labels[self.by_user] == 1))
        return accepts, len(self) - accepts

    @property
    def ready(self) -> bool:
        cells = int(np.count_nonzero(self.labels == 1))
        return len(self) >= MIN_DECISIONS and min(cells, len(self.labels) - cells) >= MIN_PER_CLASS

    def status(self) -> str:
        """One line for the window and the command line: what the classifier has learnt from."""
        accepts, rejects = self.counts()
        movies = len(set(self.movies[self.by_user].tolist()))
        if not self.ready:
            need = (f"{MIN_DECISIONS - len(self)} more decisions" if len(self) < MIN_DECISIONS else
                    f"ROIs of both kinds (at least {MIN_PER_CLASS} accepted and {MIN_PER_CLASS} rejected)")
            return (f"Classifier: {accepts} accepts and {rejects} rejects so far; it needs {need} — until then the fixed "
                    "metric thresholds decide.")
        return (f"Classifier: learnt from {accepts} accepts and {rejects} rejects on {movies} movie{'s' if movies != 1 else ''} "
                f"(and the thresholds' verdicts on their {len(self.labels) - len(self)} other ROIs).")

    def _same(self, movie: str, center) -> np.ndarray:
        return (self.movies == movie) & (np.hypot(*(self.centers - np.asarray(center, float)).T) <= SAME_ROI_PX)

    def add(self, movie: str, centers, features, accept) -> "Decisions":
        """These decisions added (``centers`` (n, 2), ``features`` (n, F), ``accept`` bool or (n,));
        earlier rows on the same ROIs (decisions or context) are replaced."""
        centers = np.asarray(centers, np.float64).reshape(-1, 2)
        features = np.asarray(features, np.float64).reshape(len(centers), len(FEATURES))
        accept = np.broadcast_to(np.asarray(accept, bool), (len(centers),))
        base = self._rows(~self._near(movie, centers))
        return base._join(Decisions(features, accept.astype(np.int8), np.full(len(centers), movie), centers, np.ones(len(centers), bool)))

    def with_context(self, movie: str, centers, features, threshold_accepted) -> "Decisions":
        """The other ROIs of ``movie`` (a result's ``centers``, ``features`` and the thresholds' verdicts),
        replacing the movie's earlier context; ROIs the user decided keep their decisions."""
        centers = np.asarray(centers, np.float64).reshape(-1, 2)
        base = self._rows(~((self.movies == movie) & ~self.by_user))
        fresh = ~base.decided(movie, centers)
        return base._join(Decisions(np.asarray(features, np.float64)[fresh], np.asarray(threshold_accepted, bool)[fresh].astype(np.int8),
                                    np.full(int(fresh.sum()), movie), centers[fresh], np.zeros(int(fresh.sum()), bool)))

    def _near(self, movie: str, centers) -> np.ndarray:
        drop = np.zeros(len(self.labels), bool)
        for c in np.asarray(centers, np.float64).reshape(-1, 2):
            drop |= self._same(movie, c)
        return drop

    def without(self, movie: str, centers) -> "Decisions":
        """The decisions on these ROIs removed (undo)."""
        return self._rows(~(self._near(movie, centers) & self.by_user))

    def merged(self, other: "Decisions") -> "Decisions":
        """Both sets of rows; where both have one ROI, this one's row is kept."""
        fresh = np.array([not self._same(m, c).any() for m, c in zip(other.movies, other.centers)], bool)
        return self._join(other._rows(fresh))

    def decided(self, movie: str, centers) -> np.ndarray:
        """For each center of a result (n, 2): whether the user's decision on that ROI of ``movie`` is stored."""
        mine = (self.movies == movie) & self.by_user
        if not mine.any() or len(centers) == 0:
            return np.zeros(len(centers), bool)
        d = np.hypot(*(np.asarray(centers, np.float64)[:, None, :] - self.centers[mine][None]).transpose(2, 0, 1))
        return d.min(axis=1) <= SAME_ROI_PX

    def weights(self) -> np.ndarray:
        return np.where(self.by_user, USER_WEIGHT, 1.0)

    def save(self, path) -> Path:
        """Write atomically as a plain .npz (no pickles)."""
        buffer = io.BytesIO()
        np.savez(buffer, format=np.array(FORMAT), format_version=np.int64(FORMAT_VERSION), feature_names=np.array(FEATURES),
                 features=self.features, labels=self.labels, by_user=self.by_user, movie=self.movies.astype(str), center=self.centers)
        return atomic_write_bytes(path, buffer.getvalue())


def read_decisions(path) -> Decisions:
    """A decisions file, or ValueError / OSError naming what is wrong (:func:`load_store`, :func:`import_decisions`)."""
    with np.load(path, allow_pickle=False) as z:
        if str(z["format"]) != FORMAT:
            raise ValueError(f"not a NeuroWorkbench ROI decisions file (format {str(z['format'])!r})")
        version = int(z["format_version"])
        if version > FORMAT_VERSION:
            raise ValueError(f"written by a newer NeuroWorkbench (format {version}; this one reads up to {FORMAT_VERSION})")
        names = [str(n) for n in z["feature_names"]]
        missing = [n for n in FEATURES if n not in names]
        if missing:
            raise ValueError(f"lacks the features {', '.join(missing)}")
        features = np.asarray(z["features"], np.float64)[:, [names.index(n) for n in FEATURES]]
        labels, movies, centers = np.asarray(z["labels"]).astype(np.int8), np.asarray(z["movie"]).astype(str), np.asarray(z["center"], np.float64)
        by_user = np.asarray(z["by_user"]).astype(bool)
    if not (len(features) == len(labels) == len(movies) == len(centers) == len(by_user)) or centers.shape[1:] != (2,) \
            or not np.isin(labels, (0, 1)).all():
        raise ValueError("its arrays do not agree (features, labels, by_user, movie, center)")
    if not np.isfinite(features).all():
        raise ValueError("it holds non-finite feature values")
    return Decisions(features, labels, movies, centers, by_user)


def load_store(path=None) -> tuple[Decisions, str]:
    """The user's decisions (none when there is no store yet) and "" — or, for a damaged store, none
    and the message saying where it was set aside."""
    decisions, notice = read_hand_work(Path(path) if path is not None else default_store_path(), read_decisions,
                                       "classifier decisions")
    return decisions if decisions is not None else Decisions(), notice


def import_decisions(path) -> Decisions:
    """A decisions file the user picked (a colleague's, a backup): InputError when it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Classifier file not found: '{path}'. Pick a .npz saved by the Calcium workspace's “Save classifier…”.")
    try:
        return read_decisions(path)
    except Exception as exc:
        raise InputError(f"'{path.name}' is not a usable ROI classifier file: {exc}. Pick a .npz saved by NeuroWorkbench.",
                         details=f"{type(exc).__name__}: {exc}") from exc


# -- model ----------------------------------------------------------------------------------------

def make_model(kind: str = DEFAULT_MODEL, seed: int = 0):
    """An untrained scikit-learn classifier of ``kind`` (:data:`MODELS`)."""
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000))
    if kind == "random_forest":
        return RandomForestClassifier(n_estimators=200, min_samples_leaf=2, class_weight="balanced", random_state=seed, n_jobs=1)
    if kind == "extra_trees":
        return ExtraTreesClassifier(n_estimators=200, min_samples_leaf=2, class_weight="balanced", random_state=seed, n_jobs=1)
    raise InputError(f"Unknown classifier model {kind!r}: use one of {', '.join(MODELS)}.")


def train(decisions: Decisions, kind: str = DEFAULT_MODEL):
    """The model fitted to ``decisions``; None until :attr:`Decisions.ready`."""
    if not decisions.ready:
        return None
    model = make_model(kind)
    weight = {f"{model.steps[-1][0]}__sample_weight" if hasattr(model, "steps") else "sample_weight": decisions.weights()}
    return model.fit(decisions.features, decisions.labels, **weight)


@dataclass(frozen=True)
class Scores:
    """P(cell) of each ROI, and whether it came from the classifier or the metric thresholds (and why)."""

    probability: np.ndarray
    from_classifier: bool
    message: str


def score(result, decisions: Decisions, features: np.ndarray | None = None, kind: str = DEFAULT_MODEL) -> Scores:
    """P(cell) of every ROI of ``result``: the classifier's once ``decisions`` suffice, else the thresholds'."""
    model = train(decisions, kind)
    if model is None or result.n_components == 0:
        return Scores(threshold_probability(result), False, decisions.status())
    features = roi_features(result) if features is None else features
    return Scores(model.predict_proba(features)[:, 1], True, decisions.status())


def rescore(result, decisions: Decisions, kind: str = DEFAULT_MODEL):
    """``result`` with ``accepted`` set by the classifier (P(cell) ≥ 0.5, kept as ``metrics["p_cell"]``) and
    the status in ``info["classifier"]``; unchanged but for that status while the decisions do not suffice."""
    scores = score(result, decisions, kind=kind)
    info = {**result.info, "classifier": scores.message}
    if not scores.from_classifier:
        return replace(result, info=info)
    return replace(result, accepted=scores.probability >= 0.5, info=info,
                   metrics={**result.metrics, "p_cell": scores.probability.astype(np.float32)})


def next_uncertain(probability: np.ndarray, decided: np.ndarray, current: int | None = None) -> int | None:
    """The undecided ROI where P(cell) is closest to 0.5; pressed again on it, the next most uncertain."""
    order = [int(k) for k in np.argsort(np.abs(np.asarray(probability) - 0.5), kind="stable") if not decided[k]]
    if not order:
        return None
    if current in order:
        return order[(order.index(current) + 1) % len(order)]
    return order[0]


def score_job(result, decisions: Decisions, features: np.ndarray | None = None, progress=None) -> dict:
    """The window's background job: the ROI features (reused when given), the classifier re-trained on
    ``decisions`` and P(cell) of every ROI — {"A" (the footprints scored), "features", "scores"}."""
    from engine.progress import as_progress

    progress = as_progress(progress)
    if features is None:
        features = roi_features(result)
    progress.check()
    return {"A": result.A, "features": features, "scores": score(result, decisions, features)}
