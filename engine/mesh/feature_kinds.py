"""The names and defaults of the spine classifier's feature kinds (see :mod:`engine.mesh.spines`).

Kept apart so the command line can list them without importing scikit-learn and scipy, which
``neurowb ... --help`` should not pay for.
"""

#: The first part of a feature kind: log-HKS, or its scale-invariant transform (see the module docstring).
FEATURE_BASES = ("hks", "sihks")
#: Optional parts of a feature kind, in their canonical order after the base.
FEATURE_PARTS = ("smooth", "curv", "shape")
#: Every valid kind: a base plus any subset of FEATURE_PARTS, joined by "+".
FEATURE_KINDS = tuple("+".join([base] + [p for i, p in enumerate(FEATURE_PARTS) if mask >> i & 1])
                      for base in FEATURE_BASES for mask in range(2 ** len(FEATURE_PARTS)))
#: The default feature kind and HKS timescales (µm²) of `neurowb spines` and the Morphology window:
#: the best measured on the NEURD halves split (benchmarks/RESULTS.md). Timescales up to 2 µm²
#: (diffusion length ≤ 1.4 µm, a spine's size) beat the published range up to 20 µm², whose
#: long timescales mostly encode the position along a short dendrite piece.
DEFAULT_KIND = "hks+smooth+curv+shape"
DEFAULT_T_RANGE_UM = (0.05, 2.0)
DEFAULT_N_TIMESCALES = 20
#: Scale-invariant HKS: log-spaced timescales (ratio 1.21, as the published grid) over a wider
#: range (the transform needs the whole signal inside it; below 0.05 µm² the eigenvalue cut-off
#: flattens it) and how many Fourier magnitudes are kept (best zero-shot SpineTool → NEURD).
SIHKS_T_RANGE_UM = (0.005, 20.0)
SIHKS_N_TIMESCALES = 44
SIHKS_FREQUENCIES = 12
