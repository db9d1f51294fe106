"""Load neuron surface meshes into a plain :class:`Mesh` and summarise them.

Formats: PLY, OBJ, OFF, STL, GLB/glTF through trimesh (always ``process=False``, so vertex
order and count are exactly those of the file and per-vertex label files stay aligned; a
multi-object scene is concatenated into one mesh), and MeshParty HDF5 through h5py: datasets
``vertices`` (n, 3) and ``faces`` (m, 3) or flat (3m,), or a Draco-compressed ``draco`` buffer
(MeshParty's ``write_mesh_h5(..., draco=True)``, decoded with DracoPy, Google Draco's Python
binding); a ``node_mask`` (n booleans) keeps the masked vertices and the faces among them, as
MeshParty's ``Mesh`` does.

Units are not stored by most mesh formats. When the caller does not say, :func:`guess_units`
guesses from the size: electron-microscopy meshes (MICrONS, hemibrain, MeshParty) are in
nanometres and span thousands of units, light-microscopy and NEURD meshes are in micrometres
and span at most a few hundred. The guess is only a default: a mesh in voxels (e.g. hemibrain
8 nm voxels) is reported as "nm" and must be corrected by the caller.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import InputError, check_input_file

MESH_EXTENSIONS = (".ply", ".obj", ".off", ".stl", ".glb", ".gltf", ".h5", ".hdf5")
HDF5_EXTENSIONS = (".h5", ".hdf5")
UNITS = ("nm", "um", "unknown")

#: Bounding-box diagonal above which :func:`guess_units` says "nm" (a 1 mm-wide µm mesh is
#: implausible for a dendrite or neuron piece; a 1 µm-wide nm mesh is implausible too).
NM_DIAGONAL_THRESHOLD = 1e3

log = logging.getLogger(__name__)

#: Per-vertex label files looked for beside a mesh ``<stem>.<ext>`` (first match wins):
#: ``{stem}`` is the file stem, ``{base}`` the stem without a trailing ``_surface`` (SpineTool).
VERTEX_LABEL_PATTERNS = (
    "{stem}_spine_labels.npy",  # class codes 0 shaft, 1 spine, 2 soma (the demo generator writes these)
    "{stem}_vertex_labels.npy",
    "{base}_spine_instance_labels.npy",
    "{stem}_spine_instance_labels.npy",
    "{stem}_labels.npy",
    "{stem}_predicted_labels.npy",
)

_UNIT_ALIASES = {"nm": "nm", "nanometer": "nm", "nanometers": "nm", "um": "um", "µm": "um", "μm": "um",
                 "micron": "um", "microns": "um", "micrometer": "um", "micrometers": "um", "unknown": "unknown"}


@dataclass
class Mesh:
    """A triangle mesh: ``vertices`` (n, 3) float64, ``faces`` (m, 3) int64 vertex indices.

    ``units`` is "nm", "um" or "unknown"; ``name`` is a display name (file stem by default).
    """

    vertices: np.ndarray
    faces: np.ndarray
    units: str = "unknown"  # "nm", "um" or "unknown"
    name: str = ""

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float64).reshape(-1, 3)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int64).reshape(-1, 3)
        self.units = normalize_units(self.units)

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])


def normalize_units(units: str | None) -> str:
    """"nm", "um" or "unknown" from common spellings ("µm", "microns", ...); InputError otherwise."""
    if units is None:
        return "unknown"
    key = str(units).strip().lower()
    if key not in _UNIT_ALIASES:
        raise InputError(f"Unknown mesh units {units!r}: use 'nm', 'um' or 'unknown'.")
    return _UNIT_ALIASES[key]


def guess_units(vertices: np.ndarray) -> str:
    """Guess "nm" or "um" from the bounding-box diagonal (> 1e3 → "nm", else "um").

    Rationale: dendrite pieces and whole neurons are ~1–1000 µm across, i.e. ~1e3–1e6 nm, so
    the two ranges barely overlap. Empty input gives "unknown".
    """
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    if len(vertices) == 0:
        return "unknown"
    diagonal = float(np.linalg.norm(vertices.max(axis=0) - vertices.min(axis=0)))
    return "nm" if diagonal > NM_DIAGONAL_THRESHOLD else "um"


def load_mesh(path: str | os.PathLike, units: str | None = None) -> Mesh:
    """Read a mesh file; ``units`` ("nm"/"um") overrides the guess from the extent.

    Raises :class:`InputError` naming the file for: a missing file, an unsupported extension,
    an unreadable or corrupt file, a point cloud (no faces), an empty mesh, faces that index
    outside the vertex list, and NaN/inf vertex coordinates.
    """
    path = check_input_file(path, MESH_EXTENSIONS, "a mesh")
    ext = path.suffix.lower()
    explicit_units = normalize_units(units) if units is not None else None

    file_units = None
    if ext in HDF5_EXTENSIONS:
        vertices, faces, file_units = _read_hdf5(path)
    else:
        vertices, faces = _read_trimesh(path)

    vertices, faces = _validate(path, vertices, faces)
    if explicit_units is not None:
        final_units = explicit_units
    elif file_units is not None:
        final_units = file_units
    else:
        final_units = guess_units(vertices)
    return Mesh(vertices=vertices, faces=faces, units=final_units, name=path.stem)


def find_vertex_labels(path: str | os.PathLike, n_vertices: int) -> np.ndarray | None:
    """Per-vertex labels saved beside a mesh (see :data:`VERTEX_LABEL_PATTERNS`), or None."""
    found = find_vertex_label_file(path, n_vertices)
    return None if found is None else found[1]


def find_vertex_label_file(path: str | os.PathLike, n_vertices: int) -> tuple[Path, np.ndarray] | None:
    """The label file beside a mesh and its labels (the file name tells their convention), or None.

    Files that are not a 1-D numeric array of length ``n_vertices`` are skipped (logged), so a
    stale or foreign label file never stops the mesh from opening.
    """
    path = Path(path)
    stem = path.stem
    base = stem[: -len("_surface")] if stem.endswith("_surface") else stem
    seen = set()
    for pattern in VERTEX_LABEL_PATTERNS:
        candidate = path.with_name(pattern.format(stem=stem, base=base))
        if candidate in seen or not candidate.is_file():
            continue
        seen.add(candidate)
        try:
            labels = np.load(candidate, allow_pickle=False)
        except Exception as exc:
            log.warning("ignoring unreadable label file %s: %s", candidate, exc)
            continue
        if labels.ndim != 1 or len(labels) != n_vertices or not np.issubdtype(labels.dtype, np.number):
            log.warning("ignoring %s: %s %s labels for a mesh of %d vertices", candidate.name, labels.shape, labels.dtype, n_vertices)
            continue
        return candidate, labels
    return None


def _read_trimesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    try:
        loaded = trimesh.load(str(path), process=False)
    except Exception as exc:  # trimesh raises many kinds (ValueError, KeyError, struct.error, ...)
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, IndexError) or ("index" in reason.lower() and ("range" in reason.lower() or "bounds" in reason.lower())):
            raise InputError(
                f"Mesh '{path.name}' is corrupt: its faces refer to vertex indices outside its vertex list ({reason}). "
                "Re-export the mesh.",
                details=f"{type(exc).__name__}: {exc}",
            ) from exc
        raise InputError(
            f"Could not read mesh file '{path.name}': it is corrupt or not a valid {path.suffix.lower()} file ({reason}). "
            "Re-export it (e.g. from MeshLab or Blender) and try again.",
            details=f"{type(exc).__name__}: {exc}",
        ) from exc

    if isinstance(loaded, trimesh.Scene):
        parts = [g for g in loaded.dump(concatenate=False) if isinstance(g, trimesh.Trimesh)]
        others = [g for g in loaded.geometry.values() if not isinstance(g, trimesh.Trimesh)]
        if not parts:
            if others:
                raise _no_faces(path)
            raise InputError(
                f"Mesh file '{path.name}' contains no mesh (no vertices or faces could be read): it is empty or corrupt. "
                "Re-export it with the mesh included."
            )
        vertices, faces, offset = [], [], 0
        for part in parts:
            vertices.append(np.asarray(part.vertices, dtype=np.float64))
            faces.append(np.asarray(part.faces, dtype=np.int64) + offset)
            offset += len(part.vertices)
        return np.concatenate(vertices), np.concatenate(faces)
    if isinstance(loaded, trimesh.Trimesh):
        return np.asarray(loaded.vertices, dtype=np.float64), np.asarray(loaded.faces, dtype=np.int64)
    if isinstance(loaded, trimesh.PointCloud):
        if len(loaded.vertices) == 0:
            raise InputError(f"Mesh file '{path.name}' contains no vertices: re-export it with the mesh included.")
        raise _no_faces(path)
    raise InputError(
        f"'{path.name}' holds a {type(loaded).__name__}, not a triangle mesh: export the surface as a mesh.",
    )


def is_hdf5_mesh(path: str | os.PathLike) -> bool:
    """Whether an .h5/.hdf5 file is a MeshParty-style mesh (a top-level 'vertices' dataset) rather than, say, a
    movie: both workspaces take the extension, so the content decides. False when it cannot be read."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return isinstance(f.get("vertices"), h5py.Dataset)
    except Exception:
        return False


def _no_faces(path: Path) -> InputError:
    return InputError(
        f"'{path.name}' is a point cloud (vertices but no faces): a surface mesh is needed. "
        "Reconstruct a surface first (e.g. screened Poisson in MeshLab) or export the mesh with its faces."
    )


def _decode_draco(path: Path, buffer) -> tuple[np.ndarray, np.ndarray]:
    try:
        import DracoPy
    except ImportError as exc:  # a runtime dependency; missing only in a broken install
        raise InputError(f"'{path.name}' is Draco-compressed and DracoPy is not installed: pip install DracoPy.") from exc
    try:
        decoded = DracoPy.decode(np.asarray(buffer).tobytes())
    except Exception as exc:
        raise InputError(f"HDF5 mesh '{path.name}': its 'draco' buffer could not be decoded (corrupt or not Draco).",
                         details=f"{type(exc).__name__}: {exc}") from exc
    return np.asarray(decoded.points, dtype=np.float64).reshape(-1, 3), np.asarray(decoded.faces, dtype=np.int64).reshape(-1, 3)


def _apply_node_mask(path: Path, vertices: np.ndarray, faces: np.ndarray, node_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The masked vertices (in order) and the faces whose three vertices are all kept, re-indexed."""
    if node_mask.shape != (len(vertices),):
        raise InputError(f"HDF5 mesh '{path.name}': 'node_mask' has shape {node_mask.shape}, not one value per vertex ({len(vertices)}).")
    keep = node_mask.astype(bool)
    if not keep.any():
        raise InputError(f"HDF5 mesh '{path.name}': its 'node_mask' masks out every vertex: nothing to show.")
    new_index = np.cumsum(keep) - 1
    kept_faces = faces[keep[faces].all(axis=1)] if faces.size else faces
    return vertices[keep], new_index[kept_faces]


def _read_hdf5(path: Path) -> tuple[np.ndarray, np.ndarray, str | None]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("vertices", "faces") if k not in f]
            if "draco" in f:
                vertices, faces = _decode_draco(path, f["draco"][()])
            elif "vertices" in missing:
                raise InputError(
                    f"HDF5 file '{path.name}' has no 'vertices' dataset (found: {', '.join(f.keys()) or 'nothing'}). "
                    "A MeshParty mesh file needs 'vertices' (n×3) and 'faces' (m×3) datasets, or a 'draco' buffer."
                )
            elif "faces" in missing:
                raise _no_faces(path)
            else:
                vertices = np.asarray(f["vertices"][()], dtype=np.float64)
                faces = np.asarray(f["faces"][()])
            node_mask = np.asarray(f["node_mask"][()]) if "node_mask" in f else None
            units = f.attrs.get("units", None)
            if isinstance(units, bytes):
                units = units.decode("utf-8", "replace")
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"Could not read HDF5 mesh file '{path.name}': it is corrupt or not an HDF5 file. Re-export it and try again.",
            details=f"{type(exc).__name__}: {exc}",
        ) from exc
    if faces.ndim == 1:  # older MeshParty files store faces flattened
        if faces.size % 3:
            raise InputError(
                f"HDF5 mesh '{path.name}': the flat 'faces' dataset has {faces.size} entries, not a multiple of 3. "
                "Only triangle meshes are supported; re-export with triangulated faces."
            )
        faces = faces.reshape(-1, 3)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or (faces.size and (faces.ndim != 2 or faces.shape[1] != 3)):
        raise InputError(
            f"HDF5 mesh '{path.name}': expected 'vertices' n×3 and 'faces' m×3, found {vertices.shape} and {faces.shape}. "
            "Re-export the mesh as triangles."
        )
    if faces.size and not np.issubdtype(faces.dtype, np.integer):
        if not np.all(np.isfinite(faces)) or np.any(faces != np.round(faces)):
            raise InputError(f"HDF5 mesh '{path.name}': 'faces' holds non-integer values; it must hold vertex indices.")
    if node_mask is not None:
        vertices, faces = _apply_node_mask(path, vertices, faces.astype(np.int64), node_mask)
    file_units = None
    if units is not None:
        try:
            file_units = normalize_units(str(units))
        except InputError:
            file_units = None  # unknown unit string in the file: fall back to the guess
        if file_units == "unknown":
            file_units = None
    return vertices, faces.astype(np.int64, copy=False), file_units


def _validate(path: Path, vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(vertices) == 0:
        raise InputError(f"Mesh file '{path.name}' is empty (no vertices): re-export it with the mesh included.")
    if len(faces) == 0:
        raise _no_faces(path)
    bad_vertices = ~np.isfinite(vertices).all(axis=1)
    if bad_vertices.any():
        first = int(np.flatnonzero(bad_vertices)[0])
        raise InputError(
            f"Mesh '{path.name}' has {int(bad_vertices.sum())} vertices with NaN or infinite coordinates "
            f"(first: vertex {first}). Repair or re-export the mesh.",
        )
    lo, hi = int(faces.min()), int(faces.max())
    if lo < 0 or hi >= len(vertices):
        raise InputError(
            f"Mesh '{path.name}' is corrupt: faces refer to vertex indices {lo}..{hi} but it has only "
            f"{len(vertices)} vertices (valid: 0..{len(vertices) - 1}). Re-export the mesh.",
        )
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    extent = float(np.ptp(vertices[faces.ravel()], axis=0).max())
    if not np.any(np.linalg.norm(np.cross(b - a, c - a), axis=1) > 2e-12 * extent**2):
        raise InputError(
            f"Mesh '{path.name}' has no face of non-zero area: its {len(faces):,} faces are degenerate (collinear "
            "or coinciding vertices), so it has no surface. Repair or re-export the mesh.",
        )
    return vertices, faces


def face_areas(mesh: Mesh) -> np.ndarray:
    """Area of every face, in squared mesh units."""
    v = mesh.vertices
    a, b, c = v[mesh.faces[:, 0]], v[mesh.faces[:, 1]], v[mesh.faces[:, 2]]
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def vertex_areas(mesh: Mesh) -> np.ndarray:
    """Lumped vertex areas: one third of the area of every face around each vertex."""
    return np.bincount(mesh.faces.ravel(), weights=np.repeat(face_areas(mesh) / 3.0, 3), minlength=mesh.n_vertices)


def vertex_components(mesh: Mesh) -> tuple[int, np.ndarray]:
    """Connected components of the vertex graph (edges of the faces).

    Returns ``(n, labels)``: ``labels`` gives each vertex a component id; vertices used by no
    face get -1 and are not counted in ``n``.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = mesh.n_vertices
    f = mesh.faces
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    used = np.zeros(n, dtype=bool)
    used[f.ravel()] = True
    labels = labels.astype(np.int64)
    labels[~used] = -1
    # Renumber the components of used vertices 0..k-1 (isolated vertices were components too).
    uniq, labels_used = np.unique(labels[used], return_inverse=True)
    labels[used] = labels_used
    return int(len(uniq)), labels


def mesh_summary(mesh: Mesh) -> dict:
    """Plain-Python facts about a mesh, for display and reports.

    Keys: n_vertices, n_faces, n_components (connected components of the vertices used by
    faces), n_isolated_vertices (used by no face), n_degenerate_faces (zero area: repeated or
    collinear vertices, relative tolerance 1e-12 of the squared bounding-box diagonal),
    bbox_min, bbox_max (lists of 3 floats), surface_area (squared mesh units), units.
    """
    v = mesh.vertices
    if mesh.n_vertices:
        bbox_min = v.min(axis=0)
        bbox_max = v.max(axis=0)
    else:
        bbox_min = bbox_max = np.full(3, np.nan)
    areas = face_areas(mesh) if mesh.n_faces else np.zeros(0)
    diagonal2 = float(np.sum((bbox_max - bbox_min) ** 2)) if mesh.n_vertices else 0.0
    f = mesh.faces
    repeated = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2]) if mesh.n_faces else np.zeros(0, bool)
    degenerate = repeated | (areas <= 1e-12 * diagonal2)
    n_components, labels = vertex_components(mesh) if mesh.n_faces else (0, np.full(mesh.n_vertices, -1))
    return {
        "n_vertices": mesh.n_vertices,
        "n_faces": mesh.n_faces,
        "n_components": int(n_components),
        "n_isolated_vertices": int(np.count_nonzero(labels < 0)),
        "n_degenerate_faces": int(np.count_nonzero(degenerate)),
        "bbox_min": [float(x) for x in bbox_min],
        "bbox_max": [float(x) for x in bbox_max],
        "surface_area": float(areas.sum()),
        "units": mesh.units,
    }
