"""Which vertex is under the cursor: a CPU ray–triangle intersection (as napari does).

The app turns a click into a ray (origin, direction) in mesh coordinates; :func:`pick` finds
the nearest triangle the ray hits (Möller–Trumbore) and returns its vertex closest to the hit
point. Testable without OpenGL, and fast on big meshes: faces are sorted into spatially compact
blocks, the ray first culls whole blocks by their bounding spheres, then single faces, and only
the survivors are tested exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pick:
    face: int
    vertex: int
    point: np.ndarray  # the hit point (xyz)
    distance: float  # along the ray, in units of ``direction``'s length


BLOCK = 256  # faces per culling block


def _near_ray(centers: np.ndarray, radii: np.ndarray, origin: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Mask of spheres the ray (a half-line) passes through."""
    rel = centers - origin
    along = rel @ unit
    perp2 = (rel * rel).sum(axis=1) - along * along
    return (perp2 <= radii**2 * (1 + 1e-9)) & (along >= -radii)


class Picker:
    """Precomputes face and block bounding spheres once per mesh, then answers picks in milliseconds."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        self.vertices = np.asarray(vertices, dtype=np.float64)
        faces = np.asarray(faces, dtype=np.int64)
        corners = self.vertices[faces]  # (m, 3, 3)
        centers = corners.mean(axis=1)
        radii = np.sqrt(((corners - centers[:, None, :]) ** 2).sum(axis=2).max(axis=1))
        # Sort faces along a Morton (Z-order) curve so consecutive faces are spatially close.
        self.order = np.argsort(_morton(centers), kind="stable")
        self.faces, self.centers, self.radii = faces[self.order], centers[self.order], radii[self.order]
        n_blocks = -(-len(faces) // BLOCK)
        pad = n_blocks * BLOCK - len(faces)
        c = np.concatenate([self.centers, np.repeat(self.centers[-1:], pad, axis=0)]).reshape(n_blocks, BLOCK, 3)
        r = np.concatenate([self.radii, np.repeat(self.radii[-1:], pad)]).reshape(n_blocks, BLOCK)
        lo, hi = (c - r[..., None]).min(axis=1), (c + r[..., None]).max(axis=1)
        self.block_centers = (lo + hi) / 2
        self.block_radii = np.linalg.norm(hi - lo, axis=1) / 2

    def pick(self, origin: np.ndarray, direction: np.ndarray) -> Pick | None:
        origin = np.asarray(origin, dtype=np.float64)
        direction = np.asarray(direction, dtype=np.float64)
        norm = np.linalg.norm(direction)
        if norm == 0 or len(self.faces) == 0:
            return None
        unit = direction / norm
        blocks = np.flatnonzero(_near_ray(self.block_centers, self.block_radii, origin, unit))
        if blocks.size == 0:
            return None
        in_blocks = (blocks[:, None] * BLOCK + np.arange(BLOCK)).ravel()
        in_blocks = in_blocks[in_blocks < len(self.faces)]
        candidates = in_blocks[_near_ray(self.centers[in_blocks], self.radii[in_blocks], origin, unit)]
        if candidates.size == 0:
            return None
        hit = _moller_trumbore(self.vertices, self.faces[candidates], origin, unit)
        if hit is None:
            return None
        index, t = hit
        sorted_face = int(candidates[index])
        point = origin + t * unit
        corners = self.faces[sorted_face]
        vertex = int(corners[np.argmin(((self.vertices[corners] - point) ** 2).sum(axis=1))])
        return Pick(face=int(self.order[sorted_face]), vertex=vertex, point=point, distance=float(t / norm))


def _morton(points: np.ndarray, bits: int = 10) -> np.ndarray:
    """Z-order curve key of each point on a 2**bits grid over the bounding box."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    cells = ((points - lo) / np.where(hi > lo, hi - lo, 1.0) * (2**bits - 1)).astype(np.uint64)
    key = np.zeros(len(points), dtype=np.uint64)
    for bit in range(bits):
        for axis in range(3):
            key |= ((cells[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + axis)
    return key


def _moller_trumbore(vertices: np.ndarray, faces: np.ndarray, origin: np.ndarray, direction: np.ndarray,
                     eps: float = 1e-12) -> tuple[int, float] | None:
    """Index (into ``faces``) and ray parameter of the nearest triangle hit in front of ``origin``."""
    v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
    e1, e2 = v1 - v0, v2 - v0
    p = np.cross(direction, e2)
    det = (e1 * p).sum(axis=1)
    ok = np.abs(det) > eps  # both sides: meshes' winding is not reliable
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = origin - v0
    u = (s * p).sum(axis=1) * inv
    q = np.cross(s, e1)
    v = (q @ direction) * inv
    t = (e2 * q).sum(axis=1) * inv
    tol = 1e-9  # a ray through an edge or corner must hit one of the triangles sharing it
    hit = ok & (u >= -tol) & (v >= -tol) & (u + v <= 1 + tol) & (t > 0)
    if not hit.any():
        return None
    t = np.where(hit, t, np.inf)
    index = int(np.argmin(t))
    return index, float(t[index])


def pick(vertices: np.ndarray, faces: np.ndarray, origin: np.ndarray, direction: np.ndarray) -> Pick | None:
    """One-off pick (builds a :class:`Picker`; keep one per mesh for repeated picks)."""
    return Picker(vertices, faces).pick(origin, direction)
