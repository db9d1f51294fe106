"""Procedural spiny dendrites (and a neuron with a soma) with exact per-vertex labels.

What it simulates
-----------------
A piece of dendrite in micrometres, as one closed surface like a confocal or EM
reconstruction (one connected, watertight, manifold, genus-0 mesh: heat, geodesics and
diffusion flow from every spine into the shaft):

* the **shaft** is a tube around a smooth, gently bent centre line (two low-frequency bends
  of a few hundred nm) whose radius tapers by ~20 % along the dendrite and bulges slightly
  and irregularly; its ends are rounded;
* **spines** leave the shaft at random positions and angles (leaning a little), kept apart
  from each other. The types cycle through (µm):

  - *thin*: long thin neck (radius 0.07–0.10, 0.6–1.3 long), small round head (radius
    0.15–0.25);
  - *mushroom*: neck (radius 0.08–0.12, 0.35–0.8 long), big flattened head (radius
    0.30–0.48 across, ~0.7 of that along the spine);
  - *stubby*: no neck: a short wide bump (0.25–0.40 wide, 0.3–0.6 tall above the shaft);

* an optional **soma** (an ellipsoid, ~2.5 µm radius) at the start of the dendrite, which
  leaves it through a smooth, widening proximal segment; spines start ≥ 1.5 µm from it.

How it is built
---------------
Each piece is an implicit function (approximate signed distance, negative inside): the shaft
is the distance to the densely sampled centre line minus the local radius, a neck is a
capsule, a head or bump an ellipsoid. Neck and head, spine and shaft, soma and dendrite are
combined with the polynomial smooth minimum, so necks flare into the shaft and the dendrite
into the soma. The field is sampled on a regular grid (``voxel_size``, default 0.05 µm) only
near each piece (tube around the centre line, a box per spine, the soma box; everything else
is "far outside"), the 0-level surface is extracted with marching cubes
(``skimage.measure.marching_cubes``) and any tiny detached speck is dropped.

Ground truth
------------
Every vertex gets the piece whose own field is smallest there (shaft, spine k or soma): the
boundary between a spine and the shaft runs along the middle of the fillet at the neck base.
Each spine's region is then made one connected patch (the rare stray vertices are given to
their next-best piece), so the spine-labelled vertices form exactly one connected component
per spine. Labels: 0 shaft, 1 spine, 2 soma; spine instance ids: 0 not a spine, k spine k
(1-based, in the order of :attr:`SpinyDendrite.spines`).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.mesh.io import Mesh

SPINE_TYPES = ("mushroom", "thin", "stubby")
LABEL_SHAFT, LABEL_SPINE, LABEL_SOMA = 0, 1, 2
LABEL_NAMES = {LABEL_SHAFT: "shaft", LABEL_SPINE: "spine", LABEL_SOMA: "soma"}

#: Smooth-union widths (µm): neck–head, spine–shaft (the fillet at the neck base), soma–dendrite.
K_HEAD, K_BASE, K_SOMA = 0.05, 0.12, 0.6
_FAR = 1.0  # field value stored where no piece was evaluated ("far outside")
_SHAFT_BAND = 0.3  # the shaft field is evaluated out to this distance from its surface (> K_BASE)


@dataclass
class SpineInfo:
    """One simulated spine (µm).

    ``base`` is the point on the shaft centre line it leaves from, ``direction`` its unit
    axis, ``length`` from the shaft surface to the tip, ``head_radius`` the head (or bump)
    radius across the spine, ``neck_radius``/``neck_length`` 0 for stubby spines. ``id`` is
    its instance id in :attr:`SpinyDendrite.spine_ids` (1-based).
    """

    kind: str
    base: np.ndarray
    direction: np.ndarray
    length: float
    head_radius: float
    neck_radius: float = 0.0
    neck_length: float = 0.0
    id: int = 0


@dataclass
class SpinyDendrite:
    """A generated dendrite: mesh (µm), labels (0 shaft, 1 spine, 2 soma), spine instance ids
    (0 none, k = ``spines[k-1]``), the spines, and the arguments used."""

    mesh: Mesh
    labels: np.ndarray
    spine_ids: np.ndarray
    spines: list[SpineInfo]
    params: dict = field(default_factory=dict)

    @property
    def spine_types(self) -> list[str]:
        """Type of spine k at index k-1."""
        return [s.kind for s in self.spines]


# -- implicit pieces ----------------------------------------------------------------------------

def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (C1): min(a, b) rounded over a width k."""
    h = np.maximum(k - np.abs(a - b), 0.0)
    return np.minimum(a, b) - h * h / (4.0 * k)


def _capsule(p: np.ndarray, a: np.ndarray, b: np.ndarray, r: float) -> np.ndarray:
    pa, ba = p - a, b - a
    t = np.clip(pa @ ba / float(ba @ ba), 0.0, 1.0)
    return np.linalg.norm(pa - t[:, None] * ba, axis=1) - r


def _ellipsoid(p: np.ndarray, centre: np.ndarray, frame: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Approximate signed distance to an ellipsoid (exact on the surface; Quilez's bound)."""
    q = (p - centre) @ frame  # local coordinates; frame columns are the axes
    k0 = np.linalg.norm(q / radii, axis=1)
    k1 = np.linalg.norm(q / radii**2, axis=1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def _perpendicular_frame(u: np.ndarray) -> np.ndarray:
    helper = np.array([0.0, 0.0, 1.0]) if abs(u[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(u, helper)
    e1 /= np.linalg.norm(e1)
    return np.stack([u, e1, np.cross(u, e1)], axis=1)


@dataclass
class _Spine:
    info: SpineInfo
    frame: np.ndarray  # columns: axis, two perpendiculars
    neck: tuple[np.ndarray, np.ndarray, float] | None  # capsule a, b, radius
    head_centre: np.ndarray
    head_radii: np.ndarray  # along the axis, across, across
    surface_point: np.ndarray
    tip: np.ndarray
    lo: np.ndarray  # bounding box of the piece, padded by the blend width
    hi: np.ndarray
    parts: list  # (segment start, end, radius) enclosing the spine above the shaft surface, for spacing

    def field(self, p: np.ndarray) -> np.ndarray:
        d = _ellipsoid(p, self.head_centre, self.frame, self.head_radii)
        if self.neck is not None:
            d = _smin(_capsule(p, *self.neck), d, K_HEAD)
        return d


class _Shaft:
    """Tube around a densely sampled centre line; distance to the nearest sample minus the radius there."""

    def __init__(self, centers: np.ndarray, radii: np.ndarray):
        from scipy.spatial import cKDTree

        self.centers, self.radii = centers, radii
        self.tree = cKDTree(centers)
        self.r_max = float(radii.max())

    def field(self, p: np.ndarray, upper: float = np.inf) -> np.ndarray:
        d, i = self.tree.query(p, distance_upper_bound=upper + self.r_max if np.isfinite(upper) else np.inf)
        out = np.full(len(p), np.inf)
        ok = np.isfinite(d)
        out[ok] = d[ok] - self.radii[i[ok]]
        return out


class _Soma:
    def __init__(self, centre: np.ndarray, radii: np.ndarray):
        self.centre, self.radii, self.frame = centre, radii, np.eye(3)

    def field(self, p: np.ndarray) -> np.ndarray:
        return _ellipsoid(p, self.centre, self.frame, self.radii)


# -- geometry -----------------------------------------------------------------------------------

def _frames(centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tangents and two normals along a polyline (parallel transport, no twisting)."""
    tangents = np.gradient(centers, axis=0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    normals = np.empty_like(tangents)
    t0 = tangents[0]
    helper = np.array([0.0, 0.0, 1.0]) if abs(t0[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    n = np.cross(t0, helper)
    n /= np.linalg.norm(n)
    for i, t in enumerate(tangents):
        n = n - np.dot(n, t) * t
        n /= np.linalg.norm(n)
        normals[i] = n
    return tangents, normals, np.cross(tangents, normals)


def _segment_distance(p0, p1, q0, q1, n: int = 9) -> float:
    """Smallest distance between two segments (sampled; plenty for spacing spines apart)."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    a = p0 + t * (p1 - p0)
    b = q0 + t * (q1 - q0)
    return float(np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).min())


def _make_spine(kind: str, c: np.ndarray, u: np.ndarray, r_shaft: float, rng: np.random.Generator) -> _Spine:
    frame = _perpendicular_frame(u)
    surface = c + u * r_shaft
    if kind == "stubby":
        across, tall = rng.uniform(0.25, 0.40), rng.uniform(0.30, 0.60)
        along = 0.5 * (tall + 0.15)  # ellipsoid centred 0.15 µm below the surface, `tall` above it
        head_centre = surface + u * (tall - along)
        radii = np.array([along, across, across * rng.uniform(0.85, 1.0)])
        neck = None
        neck_r = neck_l = 0.0
        tip = surface + u * tall
        head_r = across
    else:
        if kind == "mushroom":
            neck_r, neck_l, head_r = rng.uniform(0.08, 0.12), rng.uniform(0.35, 0.8), rng.uniform(0.30, 0.48)
            along = head_r * rng.uniform(0.65, 0.8)
        else:  # thin
            neck_r, neck_l, head_r = rng.uniform(0.07, 0.10), rng.uniform(0.6, 1.3), rng.uniform(0.15, 0.25)
            along = head_r * rng.uniform(0.9, 1.1)
        neck_end = surface + u * neck_l
        neck = (c + u * (0.5 * r_shaft), neck_end, neck_r)
        head_centre = neck_end + u * (0.8 * along)
        radii = np.array([along, head_r, head_r * rng.uniform(0.85, 1.0)])
        tip = head_centre + u * along
    pad = K_BASE + 0.1
    pts = np.stack([c + u * (0.5 * r_shaft), tip, head_centre])
    reach = float(radii.max())
    lo = pts.min(axis=0) - reach - pad
    hi = pts.max(axis=0) + reach + pad
    info = SpineInfo(kind, c.copy(), u.copy(), float(np.linalg.norm(tip - surface)), float(head_r), float(neck_r), float(neck_l))
    parts = [(head_centre, head_centre, reach)]
    if neck is not None:
        parts.append((surface, neck[1], neck_r + 0.05))
    return _Spine(info, frame, neck, head_centre, radii, surface, tip, lo, hi, parts)


def _layout(n_spines: int, length: float, radius: float, soma: bool, soma_radius: float, rng: np.random.Generator):
    """Centre line, radii, spines and soma of one dendrite (no sampling yet)."""
    ds = 0.02
    x_start = -soma_radius if soma else 0.0  # the dendrite starts in the soma centre; its surface is at x ≈ 0
    x = np.arange(x_start, length + ds / 2, ds)
    phase = rng.uniform(0, 2 * np.pi, 4)
    amp = rng.uniform(0.25, 0.45, 2)
    ramp = np.clip(x / 3.0, 0.0, 1.0) if soma else 1.0  # straight where it leaves the soma
    y = ramp * amp[0] * np.sin(2 * np.pi * x / length * 0.8 + phase[0])
    z = ramp * amp[1] * np.sin(2 * np.pi * x / length * 1.3 + phase[1])
    centers = np.stack([x, y, z], axis=1)
    t = np.clip(x / length, 0.0, 1.0)
    bumps = 1.0 + 0.06 * np.sin(2 * np.pi * t * rng.uniform(3, 6) + phase[2]) + 0.03 * np.sin(2 * np.pi * t * rng.uniform(9, 14) + phase[3])
    radii = radius * (1.1 - 0.2 * t) * bumps
    if soma:  # proximal dendrite widens into the soma
        radii = radii + radius * 0.9 * np.exp(-np.clip(x, 0.0, None) / 1.5)
    shaft = _Shaft(centers, radii)

    soma_obj = None
    if soma:
        soma_radii = soma_radius * np.array([1.0, rng.uniform(0.85, 0.95), rng.uniform(0.8, 0.9)])
        soma_obj = _Soma(centers[0].copy(), soma_radii)

    tangents, normals, binormals = _frames(centers)
    s_lo = 1.5 if soma else 1.0  # spines start 1.5 µm from the soma, 1 µm from a free end
    s_hi = length - 1.0
    if n_spines and s_hi <= s_lo:
        raise ValueError(f"a {length} µm dendrite is too short for spines")
    kinds = [SPINE_TYPES[i % len(SPINE_TYPES)] for i in rng.permutation(n_spines)]
    placed: list[_Spine] = []
    gap = 0.2  # between the surfaces of any two spines (> K_BASE: spines never blend together)
    for kind in kinds:
        for _attempt in range(400):
            pos = rng.uniform(s_lo, s_hi)
            i = int(np.clip(np.searchsorted(x, pos), 0, len(x) - 1))
            angle = rng.uniform(0, 2 * np.pi)
            radial = np.cos(angle) * normals[i] + np.sin(angle) * binormals[i]
            u = radial + 0.3 * rng.normal() * tangents[i] + 0.15 * rng.normal(size=3)
            u /= np.linalg.norm(u)
            if u @ radial < 0.8:
                continue
            spine = _make_spine(kind, centers[i], u, float(radii[i]), rng)
            ok = True
            for other in placed:
                if np.linalg.norm(other.surface_point - spine.surface_point) > 1.0 + spine.info.length + other.info.length:
                    continue
                if any(_segment_distance(a0, a1, b0, b1) < ra + rb + gap
                       for a0, a1, ra in spine.parts for b0, b1, rb in other.parts):
                    ok = False
                    break
            if ok and spine.neck is not None:
                # the head must stay clear of the shaft (a leaning spine on a bend could touch it)
                ok = shaft.field(spine.head_centre[None])[0] >= spine.head_radii[0] + 0.1
            if ok and soma_obj is not None:
                ok = soma_obj.field(spine.head_centre[None])[0] >= spine.head_radii.max() + K_SOMA
            if ok:
                placed.append(spine)
                break
        else:
            raise ValueError(
                f"could not fit {n_spines} spines on a {length} µm dendrite of radius {radius} µm: "
                "use fewer spines or a longer dendrite"
            )
    order = np.argsort([s.info.base[0] for s in placed], kind="stable")
    spines = [placed[j] for j in order]
    for k, s in enumerate(spines, start=1):
        s.info.id = k
    return shaft, spines, soma_obj


# -- sampling and surface extraction --------------------------------------------------------------

def _sample_field(shaft: _Shaft, spines: list[_Spine], soma: _Soma | None, h: float):
    lo = shaft.centers.min(axis=0) - shaft.r_max
    hi = shaft.centers.max(axis=0) + shaft.r_max
    for s in spines:
        lo, hi = np.minimum(lo, s.lo), np.maximum(hi, s.hi)
    if soma is not None:
        lo = np.minimum(lo, soma.centre - soma.radii.max() - K_SOMA)
        hi = np.maximum(hi, soma.centre + soma.radii.max() + K_SOMA)
    pad = 3 * h
    origin = lo - pad
    shape = tuple(int(v) for v in np.ceil((hi - lo + 2 * pad) / h) + 1)
    grid = np.full(shape, _FAR, dtype=np.float32)
    axes = [origin[d] + h * np.arange(shape[d]) for d in range(3)]

    def index_box(box_lo, box_hi):
        i0 = np.clip(np.floor((box_lo - origin) / h).astype(int), 0, np.array(shape) - 1)
        i1 = np.clip(np.ceil((box_hi - origin) / h).astype(int) + 1, 0, np.array(shape))
        return tuple(slice(a, b) for a, b in zip(i0, i1))

    def points(sl):
        g = np.meshgrid(axes[0][sl[0]], axes[1][sl[1]], axes[2][sl[2]], indexing="ij")
        return np.stack([a.ravel() for a in g], axis=1), g[0].shape

    # shaft: in slabs along x, a box around the centre line; wider near the soma (its blend is wider)
    chunk = 1.0
    x_lo, x_hi = shaft.centers[0, 0], shaft.centers[-1, 0]
    for xa in np.arange(x_lo - shaft.r_max - _SHAFT_BAND - h, x_hi + shaft.r_max + _SHAFT_BAND + h, chunk):
        xb = xa + chunk
        band = _SHAFT_BAND
        if soma is not None and xa < soma.centre[0] + soma.radii[0] + K_SOMA + 2.0:
            band = K_SOMA + 0.15
        sel = (shaft.centers[:, 0] >= xa - shaft.r_max - band) & (shaft.centers[:, 0] <= xb + shaft.r_max + band)
        if not sel.any():
            continue
        c = shaft.centers[sel]
        reach = float(shaft.radii[sel].max()) + band
        sl = index_box(np.array([xa, c[:, 1].min() - reach, c[:, 2].min() - reach]), np.array([xb, c[:, 1].max() + reach, c[:, 2].max() + reach]))
        # slabs must not overlap: take x indices in [xa, xb)
        i0 = int(np.ceil((xa - origin[0]) / h - 1e-9))
        i1 = int(np.ceil((xb - origin[0]) / h - 1e-9))
        sl = (slice(max(i0, 0), min(i1, shape[0])), sl[1], sl[2])
        if sl[0].start >= sl[0].stop:
            continue
        p, sh = points(sl)
        d = shaft.field(p, upper=band + 0.05)
        d = np.where(np.isfinite(d), d, _FAR).reshape(sh)
        grid[sl] = np.minimum(grid[sl], d)

    if soma is not None:
        sl = index_box(soma.centre - soma.radii - K_SOMA - 2 * h, soma.centre + soma.radii + K_SOMA + 2 * h)
        p, sh = points(sl)
        grid[sl] = _smin(grid[sl], soma.field(p).reshape(sh), K_SOMA)

    for s in spines:
        sl = index_box(s.lo, s.hi)
        p, sh = points(sl)
        grid[sl] = _smin(grid[sl], s.field(p).reshape(sh), K_BASE)
    return grid, origin


def _extract(grid: np.ndarray, origin: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    from skimage.measure import marching_cubes

    # Keep grid values away from exactly 0 so no vertex lands on a grid node (degenerate faces).
    eps = np.float32(0.02 * h)
    small = np.abs(grid) < eps
    grid[small] = np.where(grid[small] < 0, -eps, eps)
    verts, faces, _, _ = marching_cubes(grid, 0.0, spacing=(h, h, h), allow_degenerate=False, method="lewiner")
    verts = verts.astype(np.float64) + origin
    faces = faces.astype(np.int64)
    # Outward normals: the signed volume must be positive.
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    if np.einsum("ij,ij->i", v0, np.cross(v1, v2)).sum() < 0:
        faces = faces[:, ::-1].copy()
    return _largest_component(verts, faces)


def _largest_component(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from engine.mesh.io import vertex_components

    n, comp = vertex_components(Mesh(verts, faces))
    if n <= 1 and np.all(comp >= 0):
        return verts, faces
    biggest = np.argmax(np.bincount(comp[comp >= 0]))
    keep = comp == biggest
    new_index = np.full(len(verts), -1, dtype=np.int64)
    new_index[keep] = np.arange(int(keep.sum()))
    faces = new_index[faces]
    faces = faces[(faces >= 0).all(axis=1)]
    return verts[keep], faces


# -- labels -------------------------------------------------------------------------------------

def _vertex_graph(n: int, faces: np.ndarray):
    from scipy.sparse import coo_matrix

    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    g = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n)).tocsr()
    return (g + g.T).tocsr()


def _label_vertices(verts, faces, shaft: _Shaft, spines: list[_Spine], soma: _Soma | None):
    """Per-vertex piece: 0 shaft, k spine k, len(spines)+1 soma; each spine one connected patch."""
    from scipy.sparse.csgraph import connected_components

    n_pieces = len(spines) + 2
    d = np.full((len(verts), n_pieces), np.inf)
    d[:, 0] = shaft.field(verts)
    for k, s in enumerate(spines, start=1):
        inside = np.all((verts >= s.lo) & (verts <= s.hi), axis=1)
        d[inside, k] = s.field(verts[inside])
    if soma is not None:
        d[:, -1] = soma.field(verts)
    piece = np.argmin(d, axis=1)

    graph = _vertex_graph(len(verts), faces)
    for _ in range(3):  # stray vertices go to their next-best piece; repeat until stable
        changed = False
        for k in range(1, len(spines) + 1):
            members = np.flatnonzero(piece == k)
            if len(members) == 0:
                continue
            sub = graph[members][:, members]
            n_comp, comp = connected_components(sub, directed=False)
            if n_comp <= 1:
                continue
            # keep the component holding the vertex nearest the spine tip
            tip_vertex = np.argmin(np.linalg.norm(verts[members] - spines[k - 1].tip, axis=1))
            stray = members[comp != comp[tip_vertex]]
            d[stray, k] = np.inf
            piece[stray] = np.argmin(d[stray], axis=1)
            changed = True
        # shaft/soma islands enclosed by one spine's patch join that spine
        non_spine = np.flatnonzero((piece == 0) | (piece == n_pieces - 1))
        sub = graph[non_spine][:, non_spine]
        n_comp, comp = connected_components(sub, directed=False)
        if n_comp > 1 + (soma is not None):
            sizes = np.bincount(comp)
            main = set(np.argsort(sizes)[::-1][: 1 + (soma is not None)].tolist())
            for c in range(n_comp):
                if c in main:
                    continue
                island = non_spine[comp == c]
                nbrs = np.unique(graph[island].indices)
                around = piece[nbrs]
                around = around[(around != 0) & (around != n_pieces - 1)]
                if len(around):
                    piece[island] = np.bincount(around).argmax()
                    changed = True
        if not changed:
            break

    labels = np.where(piece == 0, LABEL_SHAFT, np.where(piece == n_pieces - 1, LABEL_SOMA, LABEL_SPINE)).astype(np.int64)
    spine_ids = np.where(labels == LABEL_SPINE, piece, 0).astype(np.int64)
    return labels, spine_ids


# -- public API ---------------------------------------------------------------------------------

def _check(n_spines, length, radius, spine_density, soma_radius, voxel_size) -> int:
    """Validate the arguments of :func:`spiny_dendrite`; the number of spines to place."""
    if spine_density is not None:
        if spine_density < 0:
            raise ValueError("spine_density must be >= 0")
        n_spines = int(round(spine_density * length))
    if n_spines < 0 or length <= 2.0:
        raise ValueError("a demo dendrite needs n_spines >= 0 and length > 2 µm")
    if not 0.1 <= radius <= 3.0:
        raise ValueError("radius must be between 0.1 and 3 µm")
    if not 0.5 <= soma_radius <= 20.0:
        raise ValueError("soma_radius must be between 0.5 and 20 µm")
    if not 0.01 <= voxel_size <= 0.2:
        raise ValueError("voxel_size must be between 0.01 and 0.2 µm")
    return int(n_spines)


def spiny_dendrite(
    n_spines: int = 24,
    length: float = 20.0,
    seed: int = 0,
    *,
    radius: float = 0.5,
    spine_density: float | None = None,
    soma: bool = False,
    soma_radius: float = 2.5,
    voxel_size: float = 0.05,
    name: str = "demo_dendrite",
) -> SpinyDendrite:
    """Generate one spiny dendrite (see the module docstring); deterministic for a seed.

    ``radius`` is the mean shaft radius (µm; it tapers from 1.1× to 0.9× along the dendrite).
    ``spine_density`` (spines per µm of dendrite), when given, overrides ``n_spines``.
    ``soma`` adds a soma of radius ~``soma_radius`` at x < 0; the dendrite runs along +x for
    ``length`` µm. ``voxel_size`` is the marching-cubes grid step (µm): the vertex count
    grows as 1/voxel_size²; keep it ≤ 0.06 so the thinnest necks stay resolved.
    """
    n_spines = _check(n_spines, length, radius, spine_density, soma_radius, voxel_size)
    rng = np.random.default_rng(seed)
    shaft, spines, soma_obj = _layout(n_spines, length, radius, soma, soma_radius, rng)
    grid, origin = _sample_field(shaft, spines, soma_obj, voxel_size)
    verts, faces = _extract(grid, origin, voxel_size)
    labels, spine_ids = _label_vertices(verts, faces, shaft, spines, soma_obj)
    params = dict(n_spines=n_spines, length=length, seed=seed, radius=radius, soma=soma,
                  soma_radius=soma_radius, voxel_size=voxel_size)
    return SpinyDendrite(Mesh(verts, faces, units="um", name=name), labels, spine_ids, [s.info for s in spines], params)


def demo_dendrite(n_spines: int = 24, length: float = 20.0, seed: int = 0, **kwargs) -> tuple[Mesh, np.ndarray]:
    """A spiny dendrite mesh in µm and its per-vertex labels (0 shaft, 1 spine, 2 soma).

    One connected watertight surface, ~52k vertices for the defaults (< 1 s); deterministic for a
    seed. Keyword arguments go to :func:`spiny_dendrite`.
    """
    d = spiny_dendrite(n_spines, length, seed, **kwargs)
    return d.mesh, d.labels


def demo_dendrite_spines(
    n_spines: int = 24,
    length: float = 20.0,
    seed: int = 0,
    *,
    radius: float = 0.5,
    spine_density: float | None = None,
    soma: bool = False,
    soma_radius: float = 2.5,
    **_ignored,
) -> list[SpineInfo]:
    """The spines that :func:`demo_dendrite` builds with the same arguments (fast: no meshing)."""
    n_spines = _check(n_spines, length, radius, spine_density, soma_radius, 0.05)
    _, spines, _ = _layout(n_spines, length, radius, soma, soma_radius, np.random.default_rng(seed))
    return [s.info for s in spines]


#: The demo neurons: name → arguments of :func:`spiny_dendrite` (seed offset added).
DEMO_NEURONS = {
    "thin_sparse_dendrite": dict(n_spines=10, length=16.0, radius=0.42),
    "medium_dendrite": dict(n_spines=22, length=18.0, radius=0.55),
    "thick_dense_dendrite": dict(n_spines=24, length=12.0, radius=0.85),
    "neuron_with_soma": dict(n_spines=12, length=12.0, radius=0.5, soma=True, soma_radius=2.2, voxel_size=0.06),
}


def demo_neurons(seed: int = 0) -> list[tuple[str, Mesh, np.ndarray]]:
    """Several spiny dendrites of different spine density and shaft thickness (one with a
    soma): ``(name, mesh, labels)`` each. See :data:`DEMO_NEURONS`."""
    out = []
    for i, (name, kw) in enumerate(DEMO_NEURONS.items()):
        d = spiny_dendrite(seed=seed * 100 + i, name=name, **kw)
        out.append((name, d.mesh, d.labels))
    return out


def _write(path: Path, d: SpinyDendrite) -> Path:
    import trimesh

    from engine.storage import atomic_save_npy, atomic_write_bytes, atomic_write_text

    tm = trimesh.Trimesh(d.mesh.vertices, d.mesh.faces, process=False)
    buffer = io.BytesIO()
    tm.export(buffer, file_type="ply", encoding="binary")
    atomic_write_bytes(path, buffer.getvalue())
    atomic_save_npy(path.with_name(f"{path.stem}_spine_labels.npy"), d.labels.astype(np.int64))
    atomic_save_npy(path.with_name(f"{path.stem}_spine_ids.npy"), d.spine_ids.astype(np.int64))
    info = {
        "units": "um",
        "labels": {str(k): v for k, v in LABEL_NAMES.items()},
        "params": d.params,
        "spines": [
            {"id": s.id, "kind": s.kind, "base": [round(float(v), 4) for v in s.base],
             "direction": [round(float(v), 4) for v in s.direction], "length": round(s.length, 4),
             "head_radius": round(s.head_radius, 4), "neck_radius": round(s.neck_radius, 4),
             "neck_length": round(s.neck_length, 4)}
            for s in d.spines
        ],
    }
    atomic_write_text(path.with_name(f"{path.stem}_spines.json"), json.dumps(info, indent=1))
    return path


def write_demo_dendrite(path: str | os.PathLike, **kwargs) -> Path:
    """Write a demo dendrite as binary PLY plus, beside it, ``<stem>_spine_labels.npy``
    (0 shaft, 1 spine, 2 soma), ``<stem>_spine_ids.npy`` (spine instance per vertex) and
    ``<stem>_spines.json`` (spine types and sizes). Keyword arguments go to
    :func:`spiny_dendrite`. Returns the PLY path."""
    path = Path(path)
    kwargs.setdefault("name", path.stem)
    return _write(path, spiny_dendrite(**kwargs))


def write_demo_neurons(folder: str | os.PathLike, seed: int = 0) -> list[Path]:
    """Write every :data:`DEMO_NEURONS` entry as ``<folder>/<name>.ply`` with its label files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (name, kw) in enumerate(DEMO_NEURONS.items()):
        paths.append(_write(folder / f"{name}.ply", spiny_dendrite(seed=seed * 100 + i, name=name, **kw)))
    return paths
