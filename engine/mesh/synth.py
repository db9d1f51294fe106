"""Procedural spiny dendrite with known spine labels (demo data and tests).

What it simulates
-----------------
A piece of dendrite in micrometres, like a confocal or EM reconstruction:

* the **shaft** is a closed tube along a gently curved centre line (two low-frequency
  bends, a few hundred nm), tapering from ~0.55 µm to ~0.40 µm radius over ``length`` µm,
  with a slight irregular bulging of the radius;
* ``n_spines`` **spines** leave the shaft at random positions along it (not within 1 µm of
  the ends) and at random angles around it. Each spine is a closed surface of revolution
  around a straight axis whose radius profile is a neck followed by a bulbous head. The
  types cycle through

  - *mushroom*: thin neck (r 0.08–0.12 µm, 0.5–0.9 µm long), big head (r 0.30–0.45 µm),
  - *thin*: thin long neck (r 0.06–0.09 µm, 0.8–1.4 µm long), small head (r 0.15–0.22 µm),
  - *stubby*: no distinct neck: a wide short bump (r 0.22–0.32 µm, 0.3–0.6 µm tall).

  Each spine's base starts inside the shaft (at 70 % of the local shaft radius) so it
  visibly emerges from the surface; the surfaces intersect and are not merged (the mesh is
  a concatenation of closed primitives, like many exported reconstructions).

Ground truth
------------
Per-vertex labels: 0 = shaft vertex, 1 = spine vertex (all vertices of a spine primitive,
including the few buried inside the shaft). The spine type of each spine is in
:func:`demo_dendrite_spines`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.mesh.io import Mesh

SPINE_TYPES = ("mushroom", "thin", "stubby")


@dataclass
class SpineInfo:
    """One simulated spine: type, point on the shaft axis it leaves from, unit direction,
    length from the shaft surface to the tip and head (or bump) radius, in µm."""

    kind: str
    base: np.ndarray
    direction: np.ndarray
    length: float
    head_radius: float


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
    binormals = np.cross(tangents, normals)
    return tangents, normals, binormals


def _tube(centers: np.ndarray, radii: np.ndarray, n_around: int, start_cap: np.ndarray, end_cap: np.ndarray):
    """Closed tube: rings of ``n_around`` vertices around ``centers`` plus two cap apex vertices.

    Faces are wound so normals point outwards.
    """
    _, normals, binormals = _frames(centers)
    angles = np.linspace(0.0, 2 * np.pi, n_around, endpoint=False)
    ring = np.cos(angles)[None, :, None] * normals[:, None, :] + np.sin(angles)[None, :, None] * binormals[:, None, :]
    rings = centers[:, None, :] + radii[:, None, None] * ring  # (n_rings, n_around, 3)
    n_rings = len(centers)
    vertices = np.concatenate([rings.reshape(-1, 3), start_cap[None], end_cap[None]])
    idx = np.arange(n_rings * n_around).reshape(n_rings, n_around)
    nxt = np.roll(idx, -1, axis=1)
    a, b, c, d = idx[:-1], nxt[:-1], idx[1:], nxt[1:]
    side = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    s, e = n_rings * n_around, n_rings * n_around + 1
    first, last = idx[0], idx[-1]
    cap0 = np.stack([np.full(n_around, s), np.roll(first, -1), first], -1)
    cap1 = np.stack([np.full(n_around, e), last, np.roll(last, -1)], -1)
    faces = np.concatenate([side, cap0, cap1]).astype(np.int64)
    return vertices, faces


def _shaft_centerline(length: float, n: int, rng: np.random.Generator) -> np.ndarray:
    x = np.linspace(0.0, length, n)
    phase = rng.uniform(0, 2 * np.pi, 2)
    y = 0.35 * np.sin(2 * np.pi * x / length * 0.8 + phase[0])
    z = 0.25 * np.sin(2 * np.pi * x / length * 1.3 + phase[1])
    return np.stack([x, y, z], axis=1)


def _spine_profile(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Axial positions (from the base, µm) and radii of a spine surface of revolution."""
    if kind == "stubby":
        r, h = rng.uniform(0.22, 0.32), rng.uniform(0.3, 0.6)
        s = np.linspace(0.0, 1.0, 12)
        radius = r * np.sqrt(np.clip(1.0 - s**2, 0.0, 1.0)) * (1.0 + 0.15 * (1 - s))
        return s * h, np.maximum(radius, 0.03), r
    if kind == "mushroom":
        neck_r, neck_l, head_r = rng.uniform(0.08, 0.12), rng.uniform(0.5, 0.9), rng.uniform(0.30, 0.45)
    else:  # thin
        neck_r, neck_l, head_r = rng.uniform(0.06, 0.09), rng.uniform(0.8, 1.4), rng.uniform(0.15, 0.22)
    neck_s = np.linspace(0.0, neck_l, 8)
    neck = np.full_like(neck_s, neck_r)
    neck[0] *= 1.6  # flared base
    neck[1] *= 1.2
    # head: a sphere of radius head_r centred so that it meets the neck smoothly
    theta = np.linspace(np.arcsin(min(neck_r / head_r, 0.95)), np.pi - 0.25, 14)
    centre = neck_l + head_r * np.cos(theta[0])
    head_s = centre - head_r * np.cos(theta)
    head = head_r * np.sin(theta)
    return np.concatenate([neck_s, head_s[1:]]), np.concatenate([neck, head[1:]]), head_r


def demo_dendrite_spines(n_spines: int = 24, length: float = 20.0, seed: int = 0) -> list[SpineInfo]:
    """The spines that :func:`demo_dendrite` builds with the same arguments."""
    return _build(n_spines, length, seed)[2]


def demo_dendrite(n_spines: int = 24, length: float = 20.0, seed: int = 0) -> tuple[Mesh, np.ndarray]:
    """A spiny dendrite mesh in µm and its per-vertex labels (0 shaft, 1 spine).

    ~10–30k vertices for the defaults; deterministic for a given seed.
    """
    mesh, labels, _ = _build(n_spines, length, seed)
    return mesh, labels


def _build(n_spines: int, length: float, seed: int):
    if n_spines < 0 or length <= 2.0:
        raise ValueError("demo_dendrite needs n_spines >= 0 and length > 2 µm")
    rng = np.random.default_rng(seed)
    n_rings = max(int(length * 12), 24)
    centers = _shaft_centerline(length, n_rings, rng)
    t = np.linspace(0.0, 1.0, n_rings)
    bumps = 1.0 + 0.06 * np.sin(2 * np.pi * t * rng.uniform(3, 6) + rng.uniform(0, 6))
    radii = (0.55 - 0.15 * t) * bumps
    tangents, normals, binormals = _frames(centers)
    start_cap = centers[0] - tangents[0] * radii[0] * 0.3
    end_cap = centers[-1] + tangents[-1] * radii[-1] * 0.3
    shaft_v, shaft_f = _tube(centers, radii, 48, start_cap, end_cap)

    vertices, faces, labels = [shaft_v], [shaft_f], [np.zeros(len(shaft_v), dtype=np.int64)]
    offset = len(shaft_v)
    spines: list[SpineInfo] = []
    positions = np.sort(rng.uniform(1.0, length - 1.0, n_spines))
    kinds = [SPINE_TYPES[i % 3] for i in rng.permutation(n_spines)]
    for pos, kind in zip(positions, kinds):
        i = int(np.clip(np.searchsorted(centers[:, 0], pos), 0, n_rings - 1))
        angle = rng.uniform(0, 2 * np.pi)
        direction = np.cos(angle) * normals[i] + np.sin(angle) * binormals[i]
        direction += 0.25 * rng.normal(size=3) * np.array([1.0, 0.3, 0.3])  # lean a little
        direction -= 0.5 * np.dot(direction, tangents[i]) * tangents[i]
        direction /= np.linalg.norm(direction)
        s, r, head_r = _spine_profile(kind, rng)
        base = centers[i] + direction * radii[i] * 0.7
        axis_points = base[None, :] + s[:, None] * direction[None, :]
        tip = base + direction * (s[-1] + 0.5 * r[-1])
        sv, sf = _tube(axis_points, r, 14, base - direction * 0.02, tip)
        vertices.append(sv)
        faces.append(sf + offset)
        labels.append(np.ones(len(sv), dtype=np.int64))
        offset += len(sv)
        length_from_surface = float(s[-1] + 0.5 * r[-1] - 0.3 * radii[i])  # base sits at 0.7 × shaft radius
        spines.append(SpineInfo(kind, centers[i].copy(), direction, length_from_surface, float(head_r)))
    mesh = Mesh(np.concatenate(vertices), np.concatenate(faces), units="um", name="demo_dendrite")
    return mesh, np.concatenate(labels), spines


def write_demo_dendrite(path: str | os.PathLike, **kwargs) -> Path:
    """Write the demo dendrite as binary PLY and its labels as ``<stem>_vertex_labels.npy`` beside it.

    Keyword arguments go to :func:`demo_dendrite`. Returns the PLY path.
    """
    import trimesh

    from engine.storage import atomic_save_npy, atomic_write_bytes

    path = Path(path)
    mesh, labels = demo_dendrite(**kwargs)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    buffer = io.BytesIO()
    tm.export(buffer, file_type="ply", encoding="binary")
    atomic_write_bytes(path, buffer.getvalue())
    atomic_save_npy(path.with_name(f"{path.stem}_vertex_labels.npy"), labels.astype(np.int64))
    return path
