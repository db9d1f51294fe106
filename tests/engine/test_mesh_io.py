"""Mesh loading (every format), errors, summaries and the real meshes (demo dendrite: test_mesh_synth.py)."""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import trimesh

from engine.errors import InputError
from engine.mesh.io import MESH_EXTENSIONS, Mesh, find_vertex_labels, guess_units, load_mesh, mesh_summary


def need(shared_data: Path, relative: str) -> Path:
    path = shared_data / relative
    if not path.exists():
        pytest.skip(f"{relative} not in {shared_data}")
    return path


@pytest.fixture(scope="module")
def sphere() -> trimesh.Trimesh:
    m = trimesh.creation.icosphere(subdivisions=2, radius=3.0)
    m.vertices += [1.0, 2.0, 3.0]
    return m


def triangles(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Face corner coordinates, sorted: independent of vertex numbering and duplication."""
    tri = np.sort(np.round(vertices[faces], 4).reshape(len(faces), -1), axis=1)
    return tri[np.lexsort(tri.T[::-1])]


# -- round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".ply", ".obj", ".off", ".stl", ".glb"])
def test_round_trip_trimesh_formats(tmp_path, sphere, ext):
    path = tmp_path / f"sphere{ext}"
    sphere.export(path)
    mesh = load_mesh(path)
    assert isinstance(mesh, Mesh)
    assert mesh.vertices.dtype == np.float64 and mesh.faces.dtype == np.int64
    assert mesh.vertices.shape[1] == 3 and mesh.faces.shape == (len(sphere.faces), 3)
    assert mesh.n_faces == len(sphere.faces)
    assert mesh.name == "sphere"
    np.testing.assert_allclose(triangles(mesh.vertices, mesh.faces), triangles(sphere.vertices, sphere.faces), atol=1e-3)
    if ext in (".ply", ".off", ".obj"):  # indexed formats keep vertex order exactly (process=False)
        assert mesh.n_vertices == len(sphere.vertices)
        np.testing.assert_allclose(mesh.vertices, sphere.vertices, atol=1e-6)
        np.testing.assert_array_equal(mesh.faces, sphere.faces)


def test_round_trip_gltf_with_external_buffer(tmp_path, sphere):
    files = sphere.export(file_type="gltf")
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    mesh = load_mesh(tmp_path / "model.gltf")
    assert mesh.n_vertices == len(sphere.vertices) and mesh.n_faces == len(sphere.faces)
    np.testing.assert_allclose(mesh.vertices, sphere.vertices, atol=1e-5)


def test_scene_with_several_meshes_is_concatenated(tmp_path, sphere):
    box = trimesh.creation.box(extents=(1, 1, 1))
    box.vertices += [20.0, 0.0, 0.0]
    trimesh.Scene([sphere, box]).export(tmp_path / "two.glb")
    mesh = load_mesh(tmp_path / "two.glb")
    assert mesh.n_vertices == len(sphere.vertices) + len(box.vertices)
    assert mesh.n_faces == len(sphere.faces) + len(box.faces)
    assert mesh.faces.max() == mesh.n_vertices - 1
    assert mesh_summary(mesh)["n_components"] == 2
    assert mesh.vertices[:, 0].max() == pytest.approx(20.5, abs=1e-5)


@pytest.mark.parametrize("flat_faces", [False, True])
def test_round_trip_meshparty_hdf5(tmp_path, sphere, flat_faces):
    path = tmp_path / "neuron.h5"
    vertices = sphere.vertices * 1000.0
    with h5py.File(path, "w") as f:
        f.create_dataset("vertices", data=vertices)
        f.create_dataset("faces", data=sphere.faces.ravel() if flat_faces else sphere.faces.astype(np.uint32))
    mesh = load_mesh(path)
    np.testing.assert_array_equal(mesh.vertices, vertices)
    np.testing.assert_array_equal(mesh.faces, sphere.faces)
    assert mesh.units == "nm"  # 6000-unit-wide sphere


def test_hdf5_units_attribute_wins_over_guess(tmp_path, sphere):
    path = tmp_path / "neuron.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("vertices", data=sphere.vertices * 1000)
        f.create_dataset("faces", data=sphere.faces)
        f.attrs["units"] = "µm"
    assert load_mesh(path).units == "um"


def test_units_guess_and_override(tmp_path, sphere):
    path = tmp_path / "small.ply"
    sphere.export(path)
    assert load_mesh(path).units == "um"
    assert load_mesh(path, units="nm").units == "nm"
    assert load_mesh(path, units="µm").units == "um"
    big = sphere.copy()
    big.vertices *= 1000.0
    big.export(tmp_path / "big.ply")
    assert load_mesh(tmp_path / "big.ply").units == "nm"
    assert guess_units(np.zeros((0, 3))) == "unknown"
    with pytest.raises(InputError, match="units"):
        load_mesh(path, units="furlongs")


# -- errors -----------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_mesh(tmp_path / "nope.ply")


def test_unsupported_extension_lists_supported(tmp_path):
    path = tmp_path / "cell.xyz"
    path.write_text("0 0 0\n")
    with pytest.raises(InputError) as info:
        load_mesh(path)
    assert "cell.xyz" in info.value.message and ".xyz" in info.value.message
    for ext in MESH_EXTENSIONS:
        assert ext in info.value.message


@pytest.mark.parametrize("name, content", [("broken.ply", b"\x00\x01garbage" * 20), ("broken.glb", b"glTF" + b"\xff" * 40),
                                           ("broken.h5", b"not an hdf5 file at all" * 4)])
def test_corrupt_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        load_mesh(path)
    assert name in info.value.message and "corrupt" in info.value.message


def test_empty_file_and_empty_mesh(tmp_path):
    (tmp_path / "zero.off").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_mesh(tmp_path / "zero.off")
    (tmp_path / "nothing.obj").write_text("# no geometry here\n")
    with pytest.raises(InputError, match="no mesh"):
        load_mesh(tmp_path / "nothing.obj")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_dataset("vertices", data=np.zeros((0, 3)))
        f.create_dataset("faces", data=np.zeros((0, 3), dtype=np.int64))
    with pytest.raises(InputError, match="no vertices"):
        load_mesh(tmp_path / "empty.h5")


def test_point_cloud_has_no_faces(tmp_path):
    trimesh.PointCloud(np.random.default_rng(0).random((20, 3))).export(tmp_path / "cloud.ply")
    with pytest.raises(InputError, match="point cloud"):
        load_mesh(tmp_path / "cloud.ply")
    with h5py.File(tmp_path / "cloud.h5", "w") as f:
        f.create_dataset("vertices", data=np.random.default_rng(0).random((20, 3)))
    with pytest.raises(InputError, match="no faces"):
        load_mesh(tmp_path / "cloud.h5")


def test_faces_outside_vertices(tmp_path):
    (tmp_path / "bad.off").write_text("OFF\n4 1 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 9\n")
    with pytest.raises(InputError, match="outside"):
        load_mesh(tmp_path / "bad.off")
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.create_dataset("vertices", data=np.eye(3))
        f.create_dataset("faces", data=np.array([[0, 1, 2], [0, 2, 7]]))
    with pytest.raises(InputError) as info:
        load_mesh(tmp_path / "bad.h5")
    assert "0..7" in info.value.message and "3 vertices" in info.value.message


def test_nan_vertices(tmp_path):
    (tmp_path / "nan.off").write_text("OFF\n4 1 0\n0 0 0\nnan 0 0\n0 1 0\n0 0 1\n3 0 1 2\n")
    with pytest.raises(InputError) as info:
        load_mesh(tmp_path / "nan.off")
    assert "NaN" in info.value.message and "vertex 1" in info.value.message
    with h5py.File(tmp_path / "inf.h5", "w") as f:
        f.create_dataset("vertices", data=np.array([[0, 0, 0], [1, 0, np.inf], [0, 1, 0]]))
        f.create_dataset("faces", data=np.array([[0, 1, 2]]))
    with pytest.raises(InputError, match="infinite"):
        load_mesh(tmp_path / "inf.h5")


# -- summary ----------------------------------------------------------------------------------

def test_mesh_summary_counts():
    # two separate unit right triangles pairs (squares), one zero-area face, one unused vertex
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0],
                  [5, 0, 0], [6, 0, 0], [6, 0, 1], [5, 0, 1],
                  [9, 9, 9]], dtype=float)
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7], [0, 1, 1]])
    s = mesh_summary(Mesh(v, f, units="um"))
    assert s["n_vertices"] == 9 and s["n_faces"] == 5
    assert s["n_components"] == 2
    assert s["n_isolated_vertices"] == 1
    assert s["n_degenerate_faces"] == 1
    assert s["surface_area"] == pytest.approx(2.0)
    assert s["bbox_min"] == [0.0, 0.0, 0.0] and s["bbox_max"] == [9.0, 9.0, 9.0]
    assert s["units"] == "um"


def test_summary_of_sphere_matches_trimesh(sphere):
    s = mesh_summary(Mesh(sphere.vertices, sphere.faces))
    assert s["surface_area"] == pytest.approx(sphere.area)
    assert s["n_components"] == 1 and s["n_isolated_vertices"] == 0 and s["n_degenerate_faces"] == 0
    np.testing.assert_allclose(s["bbox_min"], sphere.bounds[0])


# -- real data --------------------------------------------------------------------------------

REAL = {  # file: (vertices, faces, units)
    "neurd_spine_app_neuron_19321_decimated.off": (56510, 113092, "um"),
    "microns_dendrite_864691136371550856.ply": (32441, 64832, "nm"),
    "microns_neuron_7666_decimated_fragmented.off": (33683, 80883, "nm"),
    "hemibrain_DA1_1734350788.ply": (17369, 35106, "nm"),
}


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_meshes(shared_data, name):
    path = need(shared_data, f"meshes/{name}")
    t0 = time.perf_counter()
    mesh = load_mesh(path)
    elapsed = time.perf_counter() - t0
    n_v, n_f, units = REAL[name]
    assert (mesh.n_vertices, mesh.n_faces, mesh.units) == (n_v, n_f, units)
    assert elapsed < 10.0
    s = mesh_summary(mesh)
    assert s["n_isolated_vertices"] == 0 and s["surface_area"] > 0
    if name.startswith("neurd"):
        assert s["n_components"] == 2
        labels = find_vertex_labels(path, mesh.n_vertices)
        assert labels is not None and set(np.unique(labels)) <= {-1, 0, 1, 2, 3}
    if "fragmented" in name:
        assert s["n_components"] > 50  # badly fragmented, yet it loads


@pytest.mark.shared_data
def test_all_spinetool_meshes_load_quickly(shared_data):
    folder = need(shared_data, "meshes/spinetool")
    paths = sorted(folder.glob("*_surface.ply"))
    assert paths, "no SpineTool meshes found"
    t0 = time.perf_counter()
    for path in paths:
        mesh = load_mesh(path)
        assert mesh.units == "um" and mesh.n_faces > 0
        labels = find_vertex_labels(path, mesh.n_vertices)
        assert labels is not None and labels.shape == (mesh.n_vertices,)
    assert time.perf_counter() - t0 < 20.0


def test_meshparty_draco_and_node_mask(tmp_path, sphere):
    """MeshParty's write_mesh_h5(draco=True, node_mask=...): a Draco buffer (DracoPy, as MeshParty encodes it) and a
    vertex mask; the mesh is the masked vertices with the faces among them, as MeshParty's Mesh shows it."""
    import DracoPy

    vertices = (sphere.vertices * 1000.0).astype(np.float32)
    faces = sphere.faces.astype(np.uint32)
    mask = vertices[:, 2] > -300  # cut off the bottom cap
    path = tmp_path / "864691135.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("draco", data=np.void(DracoPy.encode_mesh_to_buffer(vertices.flatten("C"), faces.flatten("C"))))
        f.create_dataset("node_mask", data=mask, compression="gzip")
    mesh = load_mesh(path)
    decoded = DracoPy.decode(np.void(DracoPy.encode_mesh_to_buffer(vertices.flatten("C"), faces.flatten("C"))).tobytes())
    points = np.asarray(decoded.points).reshape(-1, 3)
    from scipy.spatial import cKDTree

    # Draco reorders vertices (MeshParty applies node_mask to the decoded order, as we do) and quantizes them (< 2 nm here)
    assert len(points) == len(vertices) and cKDTree(vertices).query(points)[0].max() < 2.0
    np.testing.assert_allclose(mesh.vertices, points[mask], atol=1e-3)
    assert mesh.n_vertices == mask.sum() and mesh.faces.max() == mesh.n_vertices - 1
    kept = mask[np.asarray(decoded.faces).reshape(-1, 3)].all(axis=1)
    assert mesh.n_faces == kept.sum() > 0
    with h5py.File(tmp_path / "bad_mask.h5", "w") as f:
        f.create_dataset("vertices", data=vertices)
        f.create_dataset("faces", data=faces)
        f.create_dataset("node_mask", data=mask[:10])
    with pytest.raises(InputError, match="node_mask"):
        load_mesh(tmp_path / "bad_mask.h5")
