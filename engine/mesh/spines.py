"""Per-vertex spine classifier on heat-kernel-signature features, and its evaluation.

The method follows the published HKS spine model (Pedigo et al., Allen Institute): a random
forest on the log heat kernel signature of each mesh vertex, trained on a few labelled
meshes and refined by clicking where the posterior painted on the mesh looks wrong
(:mod:`engine.mesh.active`).

Classes and labels
------------------
Class codes are the indices of :data:`CLASSES`: 0 shaft, 1 spine, 2 soma (optional);
``UNLABELLED`` (-1) marks vertices to ignore (unlabelled, unmatched, erased). Label files of
other tools are translated by :func:`map_labels` with a *label map*, either a name in
:data:`LABEL_MAPS` or an explicit SPEC string::

    neurd      0:shaft,1:spine,2:spine,3:spine,-1:ignore   (shaft, head, neck, headless spine)
    spinetool  0:shaft,>0:spine,<0:ignore                  (spine instance ids)
    binary     0:shaft,1:spine,-1:ignore
    native     0:shaft,1:spine,2:soma,-1:ignore            (NeuroWorkbench's own label files)

    explicit:  comma-separated RULE:CLASS, RULE = an integer, >N, <N, >=N, <=N or * (any
               other value); CLASS = shaft, spine, soma or ignore. Exact integers win over
               comparisons, comparisons are tried in order, * last. A value that no rule
               covers is an error (add "*:ignore" to drop unknown values).

Features
--------
:class:`FeatureSpec` says how features were made: HKS timescales (in squared mesh units),
Laplacian, mesh units, the feature kind and its version. A trained model stores its spec and
refuses features made another way (:meth:`FeatureSpec.check`). Kinds:

``hks``         log-HKS per vertex (one column per timescale);
``hks+smooth``  plus log-HKS averaged over neighbourhoods of each radius in ``smoothing``
                (one implicit heat-diffusion step per radius, :func:`engine.mesh.features.diffuse`);
``hks+curv``    plus signed mean and Gaussian curvature, raw and averaged at each radius;
``hks+shape``    plus how far each vertex protrudes from its neighbourhood of each radius
                (distance from the neighbourhood's mean position, its normal component, and
                that distance relative to the neighbourhood's: :func:`engine.mesh.features.protrusion`);
and any combination, e.g. ``hks+smooth+curv+shape`` (parts in this order). The default,
:data:`DEFAULT_KIND` at 20 timescales in 0.05–2 µm², is the best measured on real dendrites.

``sihks`` in place of ``hks`` (e.g. ``sihks``, ``sihks+shape``) uses the scale-invariant HKS of
Bronstein & Kokkinos (2010) instead of log-HKS: at log-spaced timescales, the magnitude of the
Fourier transform of the derivative of log-HKS along log t
(:func:`engine.mesh.features.scale_invariant_hks`). ``sihks`` alone does not depend on the
mesh's scale or units (up to the sampling bounds); the other parts use radii in mesh units.

Units: a model trained on µm meshes is applied to a nm mesh by rescaling the mesh to µm first
(:func:`mesh_in_units`, done by :func:`mesh_features`): HKS depends on absolute size, so the
timescales only mean the same thing in the same units.

Model files are pickles (joblib): load only model files you trust.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from engine.errors import InputError
from engine.mesh.feature_kinds import (  # noqa: F401  (one definition, re-exported; the CLI reads it without scikit-learn)
    DEFAULT_KIND, DEFAULT_N_TIMESCALES, DEFAULT_T_RANGE_UM, FEATURE_BASES, FEATURE_KINDS, FEATURE_PARTS, SIHKS_FREQUENCIES,
    SIHKS_N_TIMESCALES, SIHKS_T_RANGE_UM)
from engine.mesh.io import Mesh, normalize_units
from engine.progress import Progress, as_progress

log = logging.getLogger(__name__)

CLASSES = ("shaft", "spine", "soma")
SHAFT, SPINE, SOMA = 0, 1, 2
UNLABELLED = -1
_CLASS_CODES = {"shaft": SHAFT, "spine": SPINE, "soma": SOMA, "ignore": UNLABELLED, "unlabelled": UNLABELLED,
                "unlabeled": UNLABELLED, "0": SHAFT, "1": SPINE, "2": SOMA, "-1": UNLABELLED}

#: Named label maps (see the module docstring for the SPEC grammar).
LABEL_MAPS: dict[str, str] = {
    "neurd": "0:shaft,1:spine,2:spine,3:spine,-1:ignore",
    "spinetool": "0:shaft,>0:spine,<0:ignore",
    "binary": "0:shaft,1:spine,-1:ignore",
    "native": "0:shaft,1:spine,2:soma,-1:ignore",
}

FEATURE_VERSION = 1
#: Neighbourhood radii (µm) for the "smooth"/"curv" kinds when none are given: a spine
#: neck-to-head scale, a spine length, and the scale of the shaft around a spine.
DEFAULT_SMOOTHING_UM = (0.5, 1.0, 2.0)
#: Model file format.
MODEL_FORMAT = "neurowb.spine_classifier"
MODEL_FORMAT_VERSION = 1

_UNIT_METRES = {"nm": 1e-9, "um": 1e-6}
_LOG_FLOOR = float(np.finfo(np.float32).tiny)


# ---------------------------------------------------------------------------------------------
# label maps

_RULE_RE = re.compile(r"^\s*(\*|[<>]=?\s*-?\d+|-?\d+)\s*:\s*([A-Za-z0-9_-]+)\s*$")


def _parse_label_map(spec: str | Mapping) -> tuple[dict[int, int], list[tuple[str, int, int]], int | None]:
    """(exact {raw: code}, [(op, n, code)], default code or None) from a SPEC or a dict."""
    exact: dict[int, int] = {}
    comparisons: list[tuple[str, int, int]] = []
    default: int | None = None
    if isinstance(spec, Mapping):
        items = [(str(k), str(v)) for k, v in spec.items()]
        text = ",".join(f"{k}:{v}" for k, v in items)
    else:
        text = str(spec).strip()
        if text.lower() in LABEL_MAPS:
            text = LABEL_MAPS[text.lower()]
        items = [tuple(part.split(":", 1)) if ":" in part else (part, "") for part in text.split(",") if part.strip()]
    if not items:
        raise InputError(f"Empty label map {spec!r}: name one of {', '.join(LABEL_MAPS)} or give rules like '0:shaft,1:spine,-1:ignore'.")
    for key, value in items:
        m = _RULE_RE.match(f"{key}:{value}")
        cls = _CLASS_CODES.get(str(value).strip().lower()) if m else None
        if m is None or cls is None:
            raise InputError(
                f"Cannot read label map {text!r}: rule '{key}:{value}' is not RULE:CLASS. Use a named map "
                f"({', '.join(LABEL_MAPS)}) or rules such as '0:shaft,1:spine,2:spine,3:spine,-1:ignore' "
                "(RULE: an integer, >N, <N, >=N, <=N or *; CLASS: shaft, spine, soma or ignore)."
            )
        rule = m.group(1).replace(" ", "")
        if rule == "*":
            default = cls
        elif rule[0] in "<>":
            op = rule[:2] if rule[1:2] == "=" else rule[:1]
            comparisons.append((op, int(rule[len(op):]), cls))
        else:
            exact[int(rule)] = cls
    return exact, comparisons, default


def label_map_text(spec: str | Mapping) -> str:
    """The explicit SPEC string of a named map, a SPEC or a dict (for messages and model files)."""
    if isinstance(spec, Mapping):
        return ",".join(f"{k}:{v}" for k, v in spec.items())
    return LABEL_MAPS.get(str(spec).strip().lower(), str(spec).strip())


def map_labels(raw: np.ndarray, spec: str | Mapping = "native") -> np.ndarray:
    """Translate raw per-vertex labels to class codes (int8: 0 shaft, 1 spine, 2 soma, -1 ignore).

    ``spec`` is a name in :data:`LABEL_MAPS`, an explicit SPEC string or a dict
    ``{raw value or rule: class name}``. Raises :class:`InputError` for a bad spec,
    non-integer labels, or values that no rule covers.
    """
    exact, comparisons, default = _parse_label_map(spec)
    raw = np.asarray(raw)
    if raw.ndim != 1:
        raise InputError(f"Labels must be one value per vertex (a 1-D array); got shape {raw.shape}.")
    if raw.dtype.kind not in "iub":
        if raw.dtype.kind != "f" or not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
            raise InputError(f"Labels must be integers (class or instance ids); got {raw.dtype} values that are not whole numbers.")
    values = raw.astype(np.int64)
    out = np.empty(len(values), dtype=np.int8)
    done = np.zeros(len(values), dtype=bool)
    for value, code in exact.items():
        hit = values == value
        out[hit] = code
        done |= hit
    ops = {">": np.greater, "<": np.less, ">=": np.greater_equal, "<=": np.less_equal}
    for op, n, code in comparisons:
        hit = ~done & ops[op](values, n)
        out[hit] = code
        done |= hit
    if not done.all():
        if default is None:
            missing = np.unique(values[~done])
            shown = ", ".join(str(v) for v in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise InputError(
                f"Label map '{label_map_text(spec)}' does not cover the label values {shown} "
                f"({int((~done).sum()):,} vertices). Add rules for them, or '*:ignore' to leave them out."
            )
        out[~done] = default
    return out


def guess_label_map(path: str | os.PathLike, raw: np.ndarray | None = None) -> str:
    """Label map for a label file by its name: SpineTool instance ids, the app's own labels, else NEURD."""
    name = Path(path).name.lower()
    if "spine_instance" in name:
        return "spinetool"
    if name.endswith("spine_labels.npy"):  # the app's label editor and the demo generator write class codes
        return "native"
    return "neurd"


# ---------------------------------------------------------------------------------------------
# feature definition

def _unit_factor(from_units: str, to_units: str) -> float:
    """Multiply lengths in ``from_units`` by this to get ``to_units``."""
    if from_units == to_units:
        return 1.0
    if from_units not in _UNIT_METRES or to_units not in _UNIT_METRES:
        raise InputError(
            f"Cannot convert mesh units '{from_units}' to '{to_units}': the mesh units are unknown. "
            "Say which units the mesh is in (e.g. --units um or --units nm)."
        )
    return _UNIT_METRES[from_units] / _UNIT_METRES[to_units]


def default_timescales(units: str = "um", n: int = 32) -> np.ndarray:
    """HKS timescales (squared ``units``) from the HKS engine, or the reference 5e4–2e7 nm² if it is absent."""
    try:
        from engine.mesh.hks import default_timescales as hks_default

        return np.asarray(hks_default(units, n=n), dtype=np.float64)
    except ImportError:
        ts = np.geomspace(5e4, 2e7, n)  # nm², the published reference range
        return ts * _unit_factor("nm", normalize_units(units) if units != "unknown" else "um") ** 2


def default_smoothing(units: str = "um") -> tuple[float, ...]:
    """:data:`DEFAULT_SMOOTHING_UM` in ``units``."""
    f = _unit_factor("um", units if units in _UNIT_METRES else "um")
    return tuple(float(r * f) for r in DEFAULT_SMOOTHING_UM)


def _canonical_kind(kind: str) -> str:
    """``kind`` with its parts in canonical order ("hks+curv+smooth" → "hks+smooth+curv"); InputError if invalid."""
    tokens = [t.strip() for t in str(kind).strip().lower().split("+") if t.strip()]
    rest = tokens[1:]
    if not tokens or tokens[0] not in FEATURE_BASES or len(set(rest)) != len(rest) or not set(rest) <= set(FEATURE_PARTS):
        raise InputError(f"Unknown feature kind {kind!r}: use 'hks' or 'sihks' optionally followed by any of "
                         f"{', '.join('+' + p for p in FEATURE_PARTS)} (e.g. 'hks+smooth+curv', 'sihks').")
    return "+".join([tokens[0]] + [p for p in FEATURE_PARTS if p in rest])


def _is_log_spaced(ts: Sequence[float]) -> bool:
    return len(ts) >= 4 and bool(np.allclose(np.diff(np.log(ts)), math.log(ts[1] / ts[0]), rtol=1e-3, atol=0.0))


def _same(a: Sequence[float], b: Sequence[float], rtol: float = 1e-4) -> bool:
    return len(a) == len(b) and bool(np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=rtol, atol=0.0))


@dataclass(frozen=True)
class FeatureSpec:
    """How per-vertex features are computed; stored in every trained model.

    ``timescales`` are HKS diffusion times in squared ``units``; ``smoothing`` radii (in
    ``units``) are used by the "smooth"/"curv" kinds; ``max_eigenvalue`` (1/units², None =
    the HKS engine's default) and ``scaled`` are passed to :func:`engine.mesh.hks.compute_hks`.
    """

    timescales: tuple[float, ...]
    laplacian: str = "robust"
    units: str = "um"
    kind: str = "hks"
    smoothing: tuple[float, ...] = ()
    max_eigenvalue: float | None = None
    scaled: bool = False
    version: int = FEATURE_VERSION

    def __post_init__(self) -> None:
        ts = tuple(float(t) for t in np.asarray(self.timescales, dtype=np.float64).ravel())
        if not ts or any(not (t > 0 and math.isfinite(t)) for t in ts):
            raise InputError("HKS timescales must be one or more positive numbers.")
        object.__setattr__(self, "timescales", ts)
        object.__setattr__(self, "units", normalize_units(self.units))
        kind = _canonical_kind(self.kind)
        object.__setattr__(self, "kind", kind)
        smoothing = tuple(float(r) for r in np.asarray(self.smoothing, dtype=np.float64).ravel())
        if kind != "hks" and not smoothing:
            smoothing = default_smoothing(self.units)
        if kind in FEATURE_BASES:
            smoothing = ()
        if kind.startswith("sihks") and not _is_log_spaced(ts):
            raise InputError("Scale-invariant HKS needs at least 4 log-spaced timescales (t_k = t_0·α^k), "
                             "e.g. --timescales 32 with the default range.")
        if any(not (r > 0 and math.isfinite(r)) for r in smoothing):
            raise InputError("Smoothing radii must be positive numbers (mesh units).")
        object.__setattr__(self, "smoothing", smoothing)
        if self.max_eigenvalue is not None:
            object.__setattr__(self, "max_eigenvalue", float(self.max_eigenvalue))
        object.__setattr__(self, "scaled", bool(self.scaled))
        object.__setattr__(self, "version", int(self.version))

    @classmethod
    def default(cls, units: str = "um", kind: str = DEFAULT_KIND, n_timescales: int | None = None,
                t_range: tuple[float, float] | None = None, **kwargs) -> "FeatureSpec":
        """The default spec for meshes in ``units``: :data:`DEFAULT_KIND` at :data:`DEFAULT_N_TIMESCALES`
        log-spaced timescales in :data:`DEFAULT_T_RANGE_UM` (for an "sihks" kind the SIHKS_* ones).

        ``t_range`` (t_min, t_max) is in squared ``units``; ``n_timescales`` overrides the count.
        """
        units = normalize_units(units)
        kind = _canonical_kind(kind)
        si = kind.startswith("sihks")
        if t_range is None:
            f = _unit_factor("um", units if units in _UNIT_METRES else "um") ** 2
            t_range = tuple(t * f for t in (SIHKS_T_RANGE_UM if si else DEFAULT_T_RANGE_UM))
        n = n_timescales or (SIHKS_N_TIMESCALES if si else DEFAULT_N_TIMESCALES)
        t_min, t_max = (float(t) for t in t_range)
        if not (0 < t_min <= t_max and math.isfinite(t_max)) or n < 1:
            raise InputError(f"Timescales need 0 < t-min <= t-max and at least one of them, got {t_min:g}, {t_max:g} and {n}.")
        return cls(timescales=tuple(np.geomspace(t_min, t_max, int(n))), units=units, kind=kind, **kwargs)

    @property
    def base(self) -> str:
        """"hks" or "sihks": the first part of the kind."""
        return self.kind.split("+")[0]

    @property
    def n_base(self) -> int:
        """Columns of the base part: one per timescale (log-HKS) or per Fourier magnitude (SI-HKS)."""
        n_t = len(self.timescales)
        return n_t if self.base == "hks" else min(SIHKS_FREQUENCIES, n_t // 2)

    @property
    def n_features(self) -> int:
        n_t = self.n_base
        n = n_t
        if "smooth" in self.kind:
            n += n_t * len(self.smoothing)
        if "curv" in self.kind:
            n += 2 * (1 + len(self.smoothing))
        if "shape" in self.kind:
            n += 3 * len(self.smoothing)
        return n

    @property
    def feature_names(self) -> list[str]:
        if self.base == "hks":
            base = [f"log_hks_t{t:.4g}" for t in self.timescales]
        else:
            base = [f"sihks_f{k}" for k in range(self.n_base)]
        names = list(base)
        if "smooth" in self.kind:
            names += [f"{b}_r{r:.4g}" for r in self.smoothing for b in base]
        if "curv" in self.kind:
            names += ["mean_curvature", "gaussian_curvature"]
            names += [f"{c}_r{r:.4g}" for r in self.smoothing for c in ("mean_curvature", "gaussian_curvature")]
        if "shape" in self.kind:
            names += [f"{c}_r{r:.4g}" for r in self.smoothing for c in ("protrusion", "protrusion_normal", "protrusion_relative")]
        return names

    def describe(self) -> str:
        u = {"um": "µm", "nm": "nm"}.get(self.units, self.units)
        text = (f"'{self.kind}' v{self.version}: {len(self.timescales)} HKS timescales "
                f"{self.timescales[0]:.3g}–{self.timescales[-1]:.3g} {u}², {self.laplacian} Laplacian, meshes in {u}")
        if self.smoothing:
            text += f", radii {', '.join(f'{r:.3g}' for r in self.smoothing)} {u}"
        if self.max_eigenvalue is not None:
            text += f", max eigenvalue {self.max_eigenvalue:.3g}"
        if self.scaled:
            text += ", scaled HKS"
        return text

    def to_dict(self) -> dict:
        return {"timescales": list(self.timescales), "laplacian": self.laplacian, "units": self.units, "kind": self.kind,
                "smoothing": list(self.smoothing), "max_eigenvalue": self.max_eigenvalue, "scaled": self.scaled,
                "version": self.version}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FeatureSpec":
        known = {"timescales", "laplacian", "units", "kind", "smoothing", "max_eigenvalue", "scaled", "version"}
        return cls(**{k: v for k, v in d.items() if k in known})

    def in_units(self, units: str) -> "FeatureSpec":
        """The same physical features for meshes in ``units`` (timescales × f², radii × f)."""
        units = normalize_units(units)
        f = _unit_factor(self.units, units)
        return replace(self, units=units, timescales=tuple(t * f * f for t in self.timescales),
                       smoothing=tuple(r * f for r in self.smoothing),
                       max_eigenvalue=None if self.max_eigenvalue is None else self.max_eigenvalue / (f * f))

    def differences(self, other: "FeatureSpec") -> list[str]:
        """What differs between this spec (the model's) and ``other`` (the features'), in words."""
        diffs = []
        if self.version != other.version:
            diffs.append(f"feature version (model v{self.version}, features v{other.version})")
        if self.kind != other.kind:
            diffs.append(f"feature kind (model '{self.kind}', features '{other.kind}')")
        if self.units != other.units:
            diffs.append(f"mesh units (model {self.units}, features {other.units})")
        if self.laplacian != other.laplacian:
            diffs.append(f"Laplacian (model {self.laplacian}, features {other.laplacian})")
        if not _same(self.timescales, other.timescales):
            diffs.append(f"HKS timescales (model {len(self.timescales)} from {self.timescales[0]:.3g} to {self.timescales[-1]:.3g}, "
                         f"features {len(other.timescales)} from {other.timescales[0]:.3g} to {other.timescales[-1]:.3g})")
        if not _same(self.smoothing, other.smoothing):
            diffs.append(f"smoothing radii (model {list(self.smoothing)}, features {list(other.smoothing)})")
        a, b = self.max_eigenvalue, other.max_eigenvalue
        if (a is None) != (b is None) or (a is not None and not _same([a], [b])):
            diffs.append(f"HKS max eigenvalue (model {a}, features {b})")
        if self.scaled != other.scaled:
            diffs.append(f"scaled HKS (model {self.scaled}, features {other.scaled})")
        return diffs

    def check(self, other: "FeatureSpec", what: str = "these features") -> None:
        """Raise :class:`InputError` saying what differs if ``other`` is not this spec."""
        diffs = self.differences(other)
        if diffs:
            raise InputError(
                f"The spine model was trained on different features than {what}: {'; '.join(diffs)}. "
                f"The model needs {self.describe()}. Recompute the features with the model's feature spec "
                "(neurowb spines predict does this) or train a new model on these features."
            )


# ---------------------------------------------------------------------------------------------
# features

def mesh_in_units(mesh: Mesh, units: str) -> Mesh:
    """``mesh`` rescaled to ``units`` (the same object when the units already match)."""
    units = normalize_units(units)
    if mesh.units == units:
        return mesh
    if mesh.units == "unknown":
        raise InputError(
            f"Mesh '{mesh.name or 'mesh'}' has unknown units, but the spine features are defined in {units}. "
            "Say which units the mesh is in (e.g. --units um or --units nm)."
        )
    f = _unit_factor(mesh.units, units)
    return Mesh(vertices=mesh.vertices * f, faces=mesh.faces, units=units, name=mesh.name)


def log_hks_features(hks: np.ndarray) -> np.ndarray:
    """Natural log of HKS values (n × T), float32, floored at the smallest float32 (HKS is > 0)."""
    hks = np.asarray(hks, dtype=np.float64)
    out = np.log(np.maximum(np.nan_to_num(hks, nan=_LOG_FLOOR, posinf=_LOG_FLOOR), _LOG_FLOOR))
    return out.astype(np.float32)


def vertex_features(mesh: Mesh, hks_result: Any, spec: FeatureSpec) -> np.ndarray:
    """Feature matrix (n_vertices × ``spec.n_features``, float32) of ``mesh`` for a model with ``spec``.

    ``hks_result`` is the :class:`engine.mesh.hks.HKSResult` of this mesh (or a plain
    n × T HKS array) computed with ``spec``'s timescales, Laplacian and units. Raises
    :class:`InputError` if the HKS does not fit the mesh or the spec.
    """
    hks = np.asarray(getattr(hks_result, "hks", hks_result))
    n = mesh.n_vertices
    if hks.ndim != 2 or hks.shape[0] != n:
        raise InputError(f"The HKS array has shape {hks.shape} but mesh '{mesh.name or 'mesh'}' has {n:,} vertices: "
                         "compute the HKS of this very mesh.")
    if hks.shape[1] != len(spec.timescales):
        raise InputError(f"The HKS has {hks.shape[1]} timescales but the feature spec has {len(spec.timescales)}: "
                         "compute the HKS with the spec's timescales.")
    ts = getattr(hks_result, "timescales", None)
    if ts is not None and not _same(np.asarray(ts, float).ravel(), spec.timescales):
        raise InputError("The HKS was computed at other timescales than the feature spec's "
                         f"({float(np.min(ts)):.3g}–{float(np.max(ts)):.3g} vs {spec.timescales[0]:.3g}–{spec.timescales[-1]:.3g}): "
                         "compute it with the spec's timescales.")
    info = getattr(hks_result, "info", None) or {}
    lap = info.get("laplacian") if isinstance(info, Mapping) else None
    if isinstance(lap, str) and lap != spec.laplacian:
        raise InputError(f"The HKS was computed with the {lap} Laplacian but the feature spec needs {spec.laplacian}.")
    if mesh.units not in ("unknown", spec.units):
        raise InputError(f"Mesh '{mesh.name or 'mesh'}' is in {mesh.units} but the feature spec is in {spec.units}: "
                         "rescale the mesh (mesh_in_units) and compute its HKS in the spec's units.")
    logh = log_hks_features(hks)
    if spec.base == "sihks":
        from engine.mesh.features import scale_invariant_hks

        logh = scale_invariant_hks(logh, spec.n_base)
    parts: list[np.ndarray] = [logh]
    if spec.kind not in FEATURE_BASES:
        from engine.mesh import features as F

        ops = F.laplacian(mesh, spec.laplacian)
        if "smooth" in spec.kind:
            for r in spec.smoothing:
                parts.append(F.diffuse(ops, logh, r).astype(np.float32))
        if "curv" in spec.kind:
            curv = np.column_stack([F.mean_curvature(mesh, ops), F.gaussian_curvature(mesh, ops)])
            # Curvature spans orders of magnitude near sharp creases: a signed log keeps the
            # sign and the scale without letting a few outliers dominate.
            parts.append(_signed_log(curv))
            for r in spec.smoothing:
                parts.append(_signed_log(F.diffuse(ops, curv, r)))
        if "shape" in spec.kind:
            normals = F.vertex_normals(mesh)
            for r in spec.smoothing:
                parts.append(_signed_log(F.protrusion(mesh, ops, r, normals)))
    X = np.hstack(parts).astype(np.float32, copy=False)
    return np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)


def _signed_log(x: np.ndarray) -> np.ndarray:
    return (np.sign(x) * np.log1p(np.abs(x))).astype(np.float32)


def _compute_hks(mesh: Mesh, spec: FeatureSpec, progress: Progress | None = None, **kwargs):
    """compute_hks with ``spec``'s settings (a seam tests can replace)."""
    from engine.mesh.hks import compute_hks

    return compute_hks(mesh, timescales=np.asarray(spec.timescales), max_eigenvalue=spec.max_eigenvalue,
                       laplacian=spec.laplacian, scaled=spec.scaled, progress=progress, **kwargs)


def mesh_features(mesh: Mesh, spec: FeatureSpec, *, hks_result: Any = None, progress: Progress | None = None,
                  **hks_kwargs) -> np.ndarray:
    """Features of ``mesh`` for ``spec``: rescale to the spec's units, compute the HKS, build features.

    ``hks_result`` skips the HKS computation (it must be of the rescaled mesh); extra keyword
    arguments (``method``, ``chunk_size`` ...) go to :func:`engine.mesh.hks.compute_hks`.
    """
    progress = as_progress(progress)
    hks_stage, feature_stage = progress.split([9, 1], ["HKS", "features"])
    mesh = mesh_in_units(mesh, spec.units)
    if hks_result is None:
        hks_result = _compute_hks(mesh, spec, progress=hks_stage, **hks_kwargs)
    feature_stage.check()
    X = vertex_features(mesh, hks_result, spec)
    feature_stage.report(1.0)
    return X


# ---------------------------------------------------------------------------------------------
# classifier

try:  # sklearn is a dependency; the mixins give get_params/clone/score
    from sklearn.base import BaseEstimator, ClassifierMixin
except ImportError:  # pragma: no cover
    BaseEstimator, ClassifierMixin = object, object


class SpineClassifier(ClassifierMixin, BaseEstimator):
    """Extremely randomized trees (default) or a random forest on per-vertex features; scikit-learn-style.

    Parameters
    ----------
    n_estimators:
        Trees.
    max_depth, min_samples_leaf, max_features, class_weight:
        As in :class:`sklearn.ensemble.RandomForestClassifier`.
    max_samples:
        Bootstrap sample size per tree, capped at the number of labelled vertices (an int,
        a fraction in (0, 1], or None for all). Neighbouring vertices are nearly duplicates,
        so a cap costs little accuracy and bounds training time on large label sets.
    algorithm:
        "extra_trees" (extremely randomized trees, default: as accurate as the random forest on
        the real dendrites and ~3–10x faster to fit, so a retrain stays interactive) or "random_forest".
    n_jobs:
        Threads; None uses every available core.
    random_state:
        Seed; the same data and seed give the same model.

    After :meth:`fit`: ``classes_`` (class codes present in the labels, sorted),
    ``feature_spec_`` (a :class:`FeatureSpec` or None), ``n_features_in_``, ``counts_``.
    """

    def __init__(self, n_estimators: int = 100, *, max_depth: int | None = None, min_samples_leaf: int = 5,
                 max_features: str | float | int = "sqrt", max_samples: int | float | None = 50_000,
                 class_weight: str | dict | None = None, algorithm: str = "extra_trees",
                 n_jobs: int | None = None, random_state: int | None = 0):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.max_samples = max_samples
        self.class_weight = class_weight
        self.algorithm = algorithm
        self.n_jobs = n_jobs
        self.random_state = random_state

    # -- fitting ------------------------------------------------------------------------------
    def _estimator(self, n_samples: int):
        from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

        from engine.device import available_cores

        max_samples = self.max_samples
        if isinstance(max_samples, (int, np.integer)) and not isinstance(max_samples, bool):
            max_samples = int(max_samples) if max_samples < n_samples else None
        if self.algorithm == "random_forest":
            cls = RandomForestClassifier
        elif self.algorithm == "extra_trees":
            cls = ExtraTreesClassifier
        else:
            raise InputError(f"Unknown classifier algorithm {self.algorithm!r}: use 'random_forest' or 'extra_trees'.")
        return cls(n_estimators=int(self.n_estimators), max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
                   max_features=self.max_features, bootstrap=True, max_samples=max_samples, class_weight=self.class_weight,
                   n_jobs=self.n_jobs if self.n_jobs is not None else available_cores(), random_state=self.random_state)

    def fit(self, X: np.ndarray, y: np.ndarray, feature_spec: FeatureSpec | None = None, sample_weight=None) -> "SpineClassifier":
        """Fit on the vertices whose label ``y`` is a class code (≥ 0); -1 vertices are left out."""
        X = _as_features(X)
        y = np.asarray(y).ravel()
        if len(y) != len(X):
            raise InputError(f"{len(X):,} feature rows but {len(y):,} labels: give one label per vertex.")
        if feature_spec is not None and feature_spec.n_features != X.shape[1]:
            raise InputError(f"The features have {X.shape[1]} columns but the feature spec describes {feature_spec.n_features}.")
        keep = y >= 0
        if np.any(y[keep] >= len(CLASSES)):
            raise InputError(f"Labels must be class codes 0..{len(CLASSES) - 1} or -1; translate raw labels with map_labels().")
        codes = np.unique(y[keep]).astype(np.int64)
        if len(codes) < 2:
            have = ", ".join(CLASSES[c] for c in codes) or "nothing"
            raise InputError(f"The labels hold only {have}: label vertices of at least two classes (e.g. shaft and spine) to train.")
        self.estimator_ = self._estimator(int(keep.sum()))
        sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)[keep]
        self.estimator_.fit(X[keep], y[keep].astype(np.int64), sample_weight=sw)
        self.classes_ = np.asarray(self.estimator_.classes_, dtype=np.int64)
        self.n_features_in_ = int(X.shape[1])
        self.counts_ = {CLASSES[c]: int(np.sum(y[keep] == c)) for c in codes}
        if feature_spec is not None:
            self.feature_spec_ = feature_spec
        elif not hasattr(self, "feature_spec_"):
            self.feature_spec_ = None
        return self

    # -- prediction ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "estimator_"):
            raise InputError("The spine classifier is not trained yet: fit it on labelled vertices first.")

    @property
    def class_names_(self) -> tuple[str, ...]:
        self._check_fitted()
        return tuple(CLASSES[c] for c in self.classes_)

    def predict_proba(self, X: np.ndarray, progress: Progress | None = None, chunk: int = 200_000) -> np.ndarray:
        """Posterior per vertex (n × len(classes_), float32, columns in ``classes_`` order)."""
        self._check_fitted()
        X = _as_features(X)
        if X.shape[1] != self.n_features_in_:
            raise InputError(f"The model expects {self.n_features_in_} features per vertex but got {X.shape[1]}: "
                             "compute the features with the model's feature spec.")
        progress = as_progress(progress)
        out = np.empty((len(X), len(self.classes_)), dtype=np.float32)
        for start in range(0, len(X), chunk):
            progress.check()
            out[start:start + chunk] = self.estimator_.predict_proba(X[start:start + chunk])
            progress.report(min(1.0, (start + chunk) / max(len(X), 1)), "predicting")
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Most probable class code per vertex (int8)."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)].astype(np.int8)

    def check_spec(self, spec: FeatureSpec | None, what: str = "these features") -> None:
        """Raise :class:`InputError` if ``spec`` differs from the model's feature spec."""
        model_spec = getattr(self, "feature_spec_", None)
        if model_spec is not None and spec is not None:
            model_spec.check(spec, what)

    # -- files --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, info: Mapping[str, Any] | None = None) -> Path:
        """Write the trained model to ``path`` atomically, with its feature spec and a format version."""
        import joblib
        import sklearn

        from engine import __version__
        from engine.storage import atomic_write_bytes

        self._check_fitted()
        spec = getattr(self, "feature_spec_", None)
        payload = {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "feature_spec": None if spec is None else spec.to_dict(),
            "classes": [int(c) for c in self.classes_],
            "class_names": list(self.class_names_),
            "n_features": self.n_features_in_,
            "params": self.get_params(),
            "counts": dict(getattr(self, "counts_", {})),
            "info": dict(info or {}),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "versions": {"neuroworkbench": __version__, "sklearn": sklearn.__version__, "numpy": np.__version__},
            "estimator": self.estimator_,
        }
        buffer = io.BytesIO()
        joblib.dump(payload, buffer, compress=("zlib", 3))
        return atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike, expected_spec: FeatureSpec | None = None) -> "SpineClassifier":
        """Read a model saved by :meth:`save`; with ``expected_spec``, refuse a model made for other features."""
        import joblib

        from engine.storage import read_model_file

        path = Path(path)
        payload = read_model_file(path, joblib.load, MODEL_FORMAT, MODEL_FORMAT_VERSION, "spine model",
                                  "train one with 'neurowb spines train'")
        import sklearn

        saved_sklearn = payload.get("versions", {}).get("sklearn")
        if saved_sklearn and saved_sklearn != sklearn.__version__:
            log.warning("spine model %s was saved with scikit-learn %s, this is %s; retrain if predictions look wrong",
                        path.name, saved_sklearn, sklearn.__version__)
        params = {k: v for k, v in payload.get("params", {}).items() if k in cls().get_params()}
        clf = cls(**params)
        clf.estimator_ = payload["estimator"]
        clf.classes_ = np.asarray(payload["classes"], dtype=np.int64)
        clf.n_features_in_ = int(payload["n_features"])
        clf.counts_ = dict(payload.get("counts", {}))
        clf.info_ = dict(payload.get("info", {}))
        spec = payload.get("feature_spec")
        clf.feature_spec_ = FeatureSpec.from_dict(spec) if spec is not None else None
        if expected_spec is not None:
            if clf.feature_spec_ is None:
                raise InputError(f"Spine model '{path.name}' does not say which features it was trained on, so it cannot be "
                                 "checked against these features: retrain it with NeuroWorkbench.")
            clf.feature_spec_.check(expected_spec, "the requested features")
        return clf


def _as_features(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise InputError(f"Features must be a 2-D array (vertices × features); got shape {X.shape}.")
    if X.dtype != np.float32:
        X = X.astype(np.float32)
    if not np.all(np.isfinite(X)):
        raise InputError("The features contain NaN or infinite values: recompute them (vertex_features replaces them).")
    return X


def spine_probability(clf: SpineClassifier, X: np.ndarray | None = None, proba: np.ndarray | None = None) -> np.ndarray:
    """P(spine) per vertex (float32); zeros if the model has no spine class. Pass ``proba`` to reuse a posterior."""
    if proba is None:
        proba = clf.predict_proba(X)
    hit = np.flatnonzero(np.asarray(clf.classes_) == SPINE)
    if not len(hit):
        return np.zeros(len(proba), dtype=np.float32)
    return np.asarray(proba[:, hit[0]], dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# points (synapses)

@dataclass
class PointPredictions:
    """The class of the mesh vertex nearest to each query point (e.g. a synapse centre).

    ``points`` (k × 3, mesh units), ``vertex`` (nearest vertex index), ``distance`` (to it, mesh
    units), ``proba`` (k × len(classes), the vertex's posterior) and ``classes`` (codes, in the
    columns' order).
    """

    points: np.ndarray
    vertex: np.ndarray
    distance: np.ndarray
    proba: np.ndarray
    classes: tuple[int, ...]

    @property
    def predicted(self) -> np.ndarray:
        """Most probable class code per point."""
        return np.asarray(self.classes, dtype=np.int64)[np.argmax(self.proba, axis=1)]

    def counts(self) -> dict[str, int]:
        """Points per predicted class name, in class order."""
        pred = self.predicted
        return {CLASSES[c]: int(np.sum(pred == c)) for c in self.classes}

    def csv_text(self) -> str:
        """CSV with a header: x, y, z, vertex, distance, class, p_class, then P of every class."""
        names = [CLASSES[c] for c in self.classes]
        best = np.argmax(self.proba, axis=1)
        lines = [",".join(["x", "y", "z", "vertex", "distance", "class", "p_class"] + [f"p_{n}" for n in names])]
        for p, v, d, row, b in zip(self.points, self.vertex, self.distance, self.proba, best):
            lines.append(",".join([f"{c:.9g}" for c in p] + [str(int(v)), f"{d:.6g}", names[b], f"{row[b]:.6f}"]
                                  + [f"{q:.6f}" for q in row]))
        return "\n".join(lines) + "\n"


def nearest_vertices(mesh: Mesh, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the vertex nearest to each point (k × 3, mesh units) and the distance to it."""
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or not len(pts):
        raise InputError(f"Points must be k × 3 (x, y, z) with k ≥ 1; got shape {pts.shape}.")
    if not np.all(np.isfinite(pts)):
        raise InputError("Some points have NaN or infinite coordinates: fix or remove them.")
    distance, vertex = cKDTree(mesh.vertices).query(pts)
    return vertex.astype(np.int64), distance


def predict_points(clf: "SpineClassifier", mesh: Mesh, points: np.ndarray, *, X: np.ndarray | None = None,
                   proba: np.ndarray | None = None) -> PointPredictions:
    """Class of the vertex nearest to each point, as the published model labels synapses.

    Give the mesh's features ``X`` (only the nearest vertices are classified) or a posterior
    ``proba`` already computed for every vertex. ``points`` are in the mesh's units.
    """
    vertex, distance = nearest_vertices(mesh, points)
    if proba is None:
        if X is None:
            raise InputError("predict_points needs the mesh's features or its posterior.")
        proba = clf.predict_proba(np.asarray(X)[vertex])
    else:
        proba = np.asarray(proba)[vertex]
    return PointPredictions(np.asarray(points, dtype=np.float64), vertex, distance, np.asarray(proba, dtype=np.float32),
                            tuple(int(c) for c in clf.classes_))


# ---------------------------------------------------------------------------------------------
# evaluation

def _metrics(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """precision, recall, F1, support per class from a (true × predicted) confusion matrix (NaN where undefined)."""
    c = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(c)
    predicted = c.sum(axis=0)
    support = c.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, np.where(support > 0, 0.0, np.nan))
        recall = np.where(support > 0, tp / support, np.nan)
        f1 = np.where(np.isfinite(precision) & np.isfinite(recall) & (precision + recall > 0),
                      2 * precision * recall / (precision + recall), np.where(support > 0, 0.0, np.nan))
    return precision, recall, f1, support.astype(np.int64)


@dataclass
class Fold:
    """One train/test split: what was held out and its confusion matrix (rows true, columns predicted)."""

    name: str
    n_train: int
    n_test: int
    confusion: np.ndarray
    seconds: float = 0.0

    def f1(self, class_index: int) -> float:
        return float(_metrics(self.confusion)[2][class_index])


@dataclass
class Evaluation:
    """Per-class precision/recall/F1 and the confusion matrix, pooled over folds, plus each fold."""

    split: str
    classes: tuple[int, ...]
    confusion: np.ndarray
    folds: list[Fold] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(CLASSES[c] for c in self.classes)

    @property
    def precision(self) -> np.ndarray:
        return _metrics(self.confusion)[0]

    @property
    def recall(self) -> np.ndarray:
        return _metrics(self.confusion)[1]

    @property
    def f1(self) -> np.ndarray:
        return _metrics(self.confusion)[2]

    @property
    def support(self) -> np.ndarray:
        return _metrics(self.confusion)[3]

    def _index(self, name: str | int) -> int:
        code = _CLASS_CODES[name] if isinstance(name, str) else int(name)
        if code not in self.classes:
            raise KeyError(f"class {name!r} is not in this evaluation ({', '.join(self.class_names)})")
        return self.classes.index(code)

    def f1_of(self, name: str | int = "spine") -> float:
        """Pooled F1 of one class."""
        return float(self.f1[self._index(name)])

    @property
    def spine_f1(self) -> float:
        return self.f1_of("spine")

    @property
    def accuracy(self) -> float:
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else float("nan")

    @property
    def weighted_f1(self) -> float:
        """Support-weighted mean F1 over classes (sklearn's ``average='weighted'``)."""
        f1, support = self.f1, self.support
        ok = support > 0
        return float(np.sum(np.nan_to_num(f1[ok]) * support[ok]) / support[ok].sum()) if ok.any() else float("nan")

    def fold_f1(self, name: str | int = "spine") -> np.ndarray:
        """F1 of one class in each fold (NaN where the test set has none of it and none was predicted)."""
        i = self._index(name)
        return np.array([f.f1(i) for f in self.folds])

    def mean_fold_f1(self, name: str | int = "spine") -> float:
        values = self.fold_f1(name)
        values = values[np.isfinite(values)]
        return float(values.mean()) if len(values) else float("nan")

    def table(self, folds: bool = False) -> str:
        """Markdown: per-class metrics, summary line, confusion matrix, and optionally one row per fold."""
        lines = [f"split: {self.split}, {len(self.folds)} fold(s), metrics pooled over folds", "",
                 "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for name, p, r, f, s in zip(self.class_names, self.precision, self.recall, self.f1, self.support):
            lines.append(f"| {name} | {_fmt(p)} | {_fmt(r)} | {_fmt(f)} | {s:,} |")
        lines += ["", f"accuracy {_fmt(self.accuracy)}, weighted F1 {_fmt(self.weighted_f1)}"
                  + (f", mean spine F1 over folds {_fmt(self.mean_fold_f1())}" if SPINE in self.classes and len(self.folds) > 1 else ""),
                  "", "confusion (rows true, columns predicted):", "",
                  "| true \\ predicted | " + " | ".join(self.class_names) + " |",
                  "|---|" + "---|" * len(self.classes)]
        for name, row in zip(self.class_names, self.confusion):
            lines.append(f"| {name} | " + " | ".join(f"{int(v):,}" for v in row) + " |")
        if folds and self.folds:
            lines += ["", "| held out | train vertices | test vertices | " + " | ".join(f"{n} F1" for n in self.class_names) + " |",
                      "|---|---|---|" + "---|" * len(self.classes)]
            for fold in self.folds:
                f1 = _metrics(fold.confusion)[2]
                lines.append(f"| {fold.name} | {fold.n_train:,} | {fold.n_test:,} | " + " | ".join(_fmt(v) for v in f1) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        def clean(a):
            return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, dtype=float)]

        return {
            "split": self.split, "classes": list(self.class_names),
            "precision": clean(self.precision), "recall": clean(self.recall), "f1": clean(self.f1),
            "support": [int(s) for s in self.support], "confusion": self.confusion.astype(int).tolist(),
            "accuracy": self.accuracy, "weighted_f1": self.weighted_f1,
            "mean_fold_spine_f1": self.mean_fold_f1() if SPINE in self.classes else None,
            "folds": [{"name": f.name, "n_train": f.n_train, "n_test": f.n_test, "confusion": f.confusion.astype(int).tolist(),
                       "f1": clean(_metrics(f.confusion)[2]), "seconds": round(f.seconds, 3)} for f in self.folds],
            "info": self.info,
        }


def _fmt(v: float) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    index = np.full(len(CLASSES), -1)
    index[list(classes)] = np.arange(len(classes))
    k = len(classes)
    t, p = index[y_true], index[y_pred]
    ok = (t >= 0) & (p >= 0)
    return np.bincount(t[ok] * k + p[ok], minlength=k * k).reshape(k, k)


def split_halves(points: Mesh | np.ndarray, axis: int | None = None) -> tuple[np.ndarray, int, float]:
    """Split vertices into two halves along the longest bounding-box axis (or ``axis``).

    Returns ``(first, axis, threshold)``: ``first`` is True for vertices whose coordinate
    along ``axis`` is at most ``threshold`` (the median), so both halves hold about half
    the vertices and every first-half vertex lies below every second-half vertex.
    """
    v = points.vertices if isinstance(points, Mesh) else np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if axis is None:
        axis = int(np.argmax(v.max(axis=0) - v.min(axis=0)))
    coord = v[:, axis]
    threshold = float(np.median(coord))
    first = coord <= threshold
    if first.all():  # many vertices exactly at the median: put the ties in the second half
        first = coord < threshold
    return first, axis, threshold


def _fit_predict(template: SpineClassifier, X_train, y_train, X_test) -> tuple[np.ndarray, int]:
    from sklearn.base import clone

    clf = clone(template)
    clf.fit(X_train, y_train)
    return clf.predict(X_test), int(np.sum(y_train >= 0))


def evaluate_halves(mesh: Mesh | np.ndarray, X: np.ndarray, y: np.ndarray, *, classifier: SpineClassifier | None = None,
                    axis: int | None = None, both: bool = True, progress: Progress | None = None) -> Evaluation:
    """Spatial split of one mesh: train on one half along the longest axis, test on the other.

    With ``both`` (default) the halves swap roles in a second fold and the metrics pool both.
    ``y`` holds class codes (-1 ignored); ``classifier`` is an unfitted template (cloned per
    fold; default :class:`SpineClassifier`).
    """
    progress = as_progress(progress)
    X = _as_features(X)
    y = np.asarray(y).astype(np.int64).ravel()
    if len(y) != len(X):
        raise InputError(f"{len(X):,} feature rows but {len(y):,} labels.")
    template = classifier if classifier is not None else SpineClassifier()
    first, axis, threshold = split_halves(mesh, axis)
    classes = tuple(int(c) for c in np.unique(y[y >= 0]))
    ax = "xyz"[axis]
    pairs = [(first, ~first, f"test {ax} > {threshold:.4g}")]
    if both:
        pairs.append((~first, first, f"test {ax} <= {threshold:.4g}"))
    folds = []
    for i, (train, test, name) in enumerate(pairs):
        progress.check()
        start = time.perf_counter()
        y_train = np.where(train, y, UNLABELLED)
        if len(np.unique(y_train[y_train >= 0])) < 2:
            raise InputError(f"One half of the mesh (along {'xyz'[axis]}) has labels of fewer than two classes, so it "
                             "cannot train a classifier: label both halves or use several meshes with leave-one-out.")
        test_idx = np.flatnonzero(test & (y >= 0))
        pred, n_train = _fit_predict(template, X, y_train, X[test_idx])
        folds.append(Fold(name, n_train, len(test_idx), _confusion(y[test_idx], pred, classes), time.perf_counter() - start))
        progress.report((i + 1) / len(pairs), f"fold {i + 1}/{len(pairs)}")
    total = sum(f.confusion for f in folds)
    return Evaluation("halves", classes, total, folds, {"axis": int(axis), "threshold": threshold})


def _subsample(y: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``n`` labelled vertices, stratified by class."""
    labelled = np.flatnonzero(y >= 0)
    if n is None or len(labelled) <= n:
        return labelled
    picks = []
    for c in np.unique(y[labelled]):
        idx = labelled[y[labelled] == c]
        k = max(1, int(round(n * len(idx) / len(labelled))))
        picks.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(picks))


def evaluate_leave_one_out(Xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], *, names: Sequence[str] | None = None,
                           classifier: SpineClassifier | None = None, max_train_per_mesh: int | None = None,
                           random_state: int = 0, progress: Progress | None = None,
                           on_fold: Callable[[Fold], None] | None = None) -> Evaluation:
    """Leave-one-mesh-out: each mesh is the test set once, the model trained on all the others.

    ``max_train_per_mesh`` caps the labelled vertices taken from each training mesh (a
    stratified random sample), which bounds training time with many meshes.
    """
    progress = as_progress(progress)
    if len(Xs) != len(ys) or len(Xs) < 2:
        raise InputError("Leave-one-out needs at least two meshes, each with its features and labels.")
    names = list(names) if names is not None else [f"mesh {i + 1}" for i in range(len(Xs))]
    Xs = [_as_features(X) for X in Xs]
    ys = [np.asarray(y).astype(np.int64).ravel() for y in ys]
    for X, y, name in zip(Xs, ys, names):
        if len(X) != len(y):
            raise InputError(f"{name}: {len(X):,} feature rows but {len(y):,} labels.")
        if X.shape[1] != Xs[0].shape[1]:
            raise InputError(f"{name} has {X.shape[1]} features per vertex, {names[0]} has {Xs[0].shape[1]}: use one feature spec.")
    template = classifier if classifier is not None else SpineClassifier()
    rng = np.random.default_rng(random_state)
    train_idx = [_subsample(y, max_train_per_mesh, rng) for y in ys]
    classes = tuple(int(c) for c in np.unique(np.concatenate([y[y >= 0] for y in ys])))
    folds = []
    for i in range(len(Xs)):
        progress.check()
        start = time.perf_counter()
        others = [j for j in range(len(Xs)) if j != i]
        X_train = np.concatenate([Xs[j][train_idx[j]] for j in others])
        y_train = np.concatenate([ys[j][train_idx[j]] for j in others])
        test_idx = np.flatnonzero(ys[i] >= 0)
        pred, n_train = _fit_predict(template, X_train, y_train, Xs[i][test_idx])
        fold = Fold(names[i], n_train, len(test_idx), _confusion(ys[i][test_idx], pred, classes), time.perf_counter() - start)
        folds.append(fold)
        if on_fold is not None:
            on_fold(fold)
        progress.report((i + 1) / len(Xs), f"held out {names[i]} ({i + 1}/{len(Xs)})")
    total = sum(f.confusion for f in folds)
    return Evaluation("leave-one-out", classes, total, folds, {"max_train_per_mesh": max_train_per_mesh})
