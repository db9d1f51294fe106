"""Generators of damaged and misleading input files, for the bad-input corpus (CLI and window tests).

Every ``BAD_*`` table maps a kind to ``(writer(tmp) → path, text the one-line message must contain)``;
``bad_mesh(tmp, kind)`` etc. write that kind into ``tmp``. Files are tiny (bytes to a few kB), written
when a test asks, so the repository holds no binary data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# -- small helpers ------------------------------------------------------------------------------


def text(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def garbage(tmp: Path, name: str, size: int = 777) -> Path:
    return text(tmp, name, np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())


def npy(tmp: Path, name: str, array) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(array), allow_pickle=True)
    return path


def folder(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def raw_bytes(tmp: Path, name: str, size: int) -> Path:
    return text(tmp, name, np.zeros(size, np.uint8).tobytes())


def h5(tmp: Path, name: str, datasets: dict, attrs: dict | None = None) -> Path:
    import h5py

    path = tmp / name
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f[key] = value
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return path


def obj(tmp: Path, name: str, vertices, faces) -> Path:
    lines = [f"v {x} {y} {z}" for x, y, z in vertices] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    return text(tmp, name, "\n".join(lines) + "\n")


def sphere_mesh(subdivisions: int = 2, radius: float = 2.0):
    import trimesh

    return trimesh.creation.icosphere(subdivisions, radius=radius)


def scaled_sphere(tmp: Path, scale: float, subdivisions: int = 2) -> Path:
    mesh = sphere_mesh(subdivisions)
    mesh.vertices *= scale
    path = tmp / f"sphere_x{scale:g}.ply"
    mesh.export(path)
    return path


# -- meshes -------------------------------------------------------------------------------------

_TRIANGLE = [(0, 0, 0), (1, 0, 0), (0, 1, 0)]

BAD_MESHES = {
    "collinear": (lambda tmp: obj(tmp, "collinear.obj", [(0, 0, 0), (1, 0, 0), (2, 0, 0), (3, 0, 0)], [(0, 1, 2), (1, 2, 3)]),
                  "no face of non-zero area"),
    "coincident": (lambda tmp: obj(tmp, "point.obj", [(1, 1, 1)] * 3, [(0, 1, 2)]), "no face of non-zero area"),
    "empty": (lambda tmp: text(tmp, "empty.ply", b""), "empty"),
    "garbage-ply": (lambda tmp: garbage(tmp, "garbage.ply"), "'garbage.ply'"),
    "text-obj": (lambda tmp: text(tmp, "words.obj", "this is not a mesh\n"), "'words.obj'"),
    "point-cloud": (lambda tmp: text(tmp, "cloud.ply", "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\n"
                                     "property float y\nproperty float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n"), "point cloud"),
    "index-out-of-range": (lambda tmp: text(tmp, "bad_index.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n"), "'bad_index.obj'"),
    "nan-vertex": (lambda tmp: obj(tmp, "nan.obj", [(0, 0, 0), (1, 0, 0), ("nan", 1, 0)], [(0, 1, 2)]), "NaN"),
    "unsupported": (lambda tmp: text(tmp, "mesh.xyz", "0 0 0\n"), "not supported"),
    "missing": (lambda tmp: tmp / "none.ply", "not found"),
    "h5-no-vertices": (lambda tmp: h5(tmp, "nov.h5", {"faces": np.zeros((1, 3), np.int64)}), "no 'vertices'"),
    "h5-flat-faces": (lambda tmp: h5(tmp, "flat.h5", {"vertices": np.array(_TRIANGLE, float), "faces": np.arange(4)}),
                      "not a multiple of 3"),
    "h5-float-faces": (lambda tmp: h5(tmp, "ff.h5", {"vertices": np.array(_TRIANGLE, float), "faces": np.array([[0, 1, 1.5]])}),
                       "non-integer"),
    "h5-garbage": (lambda tmp: garbage(tmp, "garbage.h5"), "not an HDF5"),
    "h5-movie": (lambda tmp: h5(tmp, "movie.h5", {"mov": np.zeros((5, 8, 8), np.float32)}), "no 'vertices'"),
}


def bad_mesh(tmp: Path, kind: str) -> Path:
    return BAD_MESHES[kind][0](tmp)


# -- recordings and probes ----------------------------------------------------------------------

def recording(tmp: Path, n_samples: int = 3000, n_channels: int = 4, sidecar: dict | None = None) -> Path:
    path = tmp / "rec.raw"
    (np.random.default_rng(1).normal(0, 20, (n_samples, n_channels))).astype(np.int16).tofile(path)
    if sidecar is not None:
        text(tmp, "rec.raw.json", json.dumps(sidecar))
    return path


def float_recording(tmp: Path, nan_at: tuple[int, int], value=np.nan, n_samples: int = 3000) -> Path:
    data = np.random.default_rng(2).normal(0, 20, (n_samples, 4)).astype(np.float32)
    data[nan_at] = value
    data[nan_at[0] + 7, 1] = value
    path = tmp / "float.raw"
    data.tofile(path)
    return path


BAD_PROBES = {
    "garbage-json": (lambda tmp: garbage(tmp, "probe.json"), "probe.json"),
    "wrong-count": (lambda tmp: _probe(tmp, 8), "8 channels"),
    "missing": (lambda tmp: tmp / "none.json", "not found"),
    "unsupported": (lambda tmp: text(tmp, "probe.txt", "0 0\n"), "probe.txt"),
    "json-list": (lambda tmp: text(tmp, "list.json", "[1, 2, 3]"), "list.json"),
    "nan-positions": (lambda tmp: _probe(tmp, 4, positions=[[0, float("nan")]] * 4), "NaN or infinite"),
    "no-probes": (lambda tmp: text(tmp, "empty.json", '{"specification": "probeinterface", "probes": []}'), "empty.json"),
}


def _probe(tmp: Path, n: int, positions=None) -> Path:
    from engine.ephys.probe import linear_probe, write_probe

    path = write_probe(tmp / f"probe{n}.json", linear_probe(n, warn=False))
    if positions is not None:  # written as the JSON a damaged export holds (the Probe class would refuse it)
        data = json.loads(path.read_text())
        data["probes"][0]["contact_positions"] = positions
        path.write_text(json.dumps(data))
    return path


def bad_probe(tmp: Path, kind: str) -> Path:
    return BAD_PROBES[kind][0](tmp)


#: Sidecars that the window must refuse with a dialog (kind → (sidecar text, expected text)).
BAD_SIDECARS = {
    "malformed": ('{"n_channels": 4, "sample_rate": ', "not valid JSON"),
    "rate-0": ('{"n_channels": 4, "sample_rate": 0}', "Sample rate"),
    "channels-0": ('{"n_channels": 0, "sample_rate": 30000}', "Channel count"),
    "no-rate": ('{"n_channels": 4}', "lacks sample_rate"),
    "wrong-count": ('{"n_channels": 7, "sample_rate": 30000}', "not a multiple"),
    "not-object": ("[4, 30000]", "JSON object"),
}


def sidecar_recording(tmp: Path, kind: str) -> Path:
    path = recording(tmp)
    text(tmp, "rec.raw.json", BAD_SIDECARS[kind][0])
    return path


# -- Phy folders --------------------------------------------------------------------------------

def phy_folder(tmp: Path, name: str = "phy") -> Path:
    """A small valid Phy folder: 2 templates, 200 spikes on 4 channels."""
    out = folder(tmp, name)
    rng = np.random.default_rng(3)
    n, k, d, c = 200, 2, 21, 4
    text(out, "params.py", "dat_path = 'rec.raw'\nn_channels_dat = 4\ndtype = 'int16'\noffset = 0\nsample_rate = 30000.0\n"
                           "hp_filtered = False\n")
    np.save(out / "spike_times.npy", np.sort(rng.choice(300_000, n, replace=False)).astype(np.uint64))
    units = rng.integers(0, k, n).astype(np.uint32)
    np.save(out / "spike_templates.npy", units)
    np.save(out / "spike_clusters.npy", units)
    np.save(out / "amplitudes.npy", rng.uniform(5, 10, n).astype(np.float32))
    np.save(out / "templates.npy", rng.normal(0, 1, (k, d, c)).astype(np.float32))
    np.save(out / "channel_map.npy", np.arange(c, dtype=np.int32))
    np.save(out / "channel_positions.npy", np.c_[np.zeros(c), 20 * np.arange(c)].astype(np.float32))
    text(out, "cluster_group.tsv", "cluster_id\tgroup\n0\tgood\n1\tmua\n")
    return out


def _damage_phy(kind: str):
    def make(tmp: Path) -> Path:
        out = phy_folder(tmp)
        if kind == "truncated-spike-clusters":
            data = (out / "spike_clusters.npy").read_bytes()
            (out / "spike_clusters.npy").write_bytes(data[: len(data) // 2])
        elif kind == "non-utf8-groups":
            (out / "cluster_group.tsv").write_bytes("cluster_id\tgroup\n0\tgood\n1\tbon\xe9\n".encode("latin-1"))
        elif kind == "nan-amplitudes":
            a = np.load(out / "amplitudes.npy")
            a[[3, 50]] = np.nan
            np.save(out / "amplitudes.npy", a)
        elif kind == "params-syntax":
            text(out, "params.py", "sample_rate = = 3\n")
        elif kind == "params-no-rate":
            text(out, "params.py", "n_channels_dat = 4\n")
        elif kind == "params-rate-0":
            text(out, "params.py", "sample_rate = 0\n")
        elif kind == "length-mismatch":
            np.save(out / "spike_clusters.npy", np.zeros(10, np.uint32))
        elif kind == "template-out-of-range":
            np.save(out / "spike_templates.npy", np.full(200, 7, np.uint32))
        elif kind == "float-spike-times":
            np.save(out / "spike_times.npy", np.linspace(0, 1, 200))
        elif kind == "sort-json-malformed":
            text(out, "neurowb_sort.json", "{not json")
        elif kind == "missing-templates":
            (out / "templates.npy").unlink()
        elif kind == "garbage-spike-times":
            garbage(out, "spike_times.npy")
        elif kind == "pickled-amplitudes":
            np.save(out / "amplitudes.npy", np.array([None] * 200, dtype=object), allow_pickle=True)
        return out
    return make


BAD_PHY = {kind: (_damage_phy(kind), expect) for kind, expect in {
    "truncated-spike-clusters": "spike_clusters.npy' is damaged", "non-utf8-groups": "not UTF-8",
    "nan-amplitudes": "NaN", "params-syntax": "not a valid params.py", "params-no-rate": "sample_rate",
    "params-rate-0": "sample_rate", "length-mismatch": "inconsistent", "template-out-of-range": "template 7",
    "float-spike-times": "non-negative integer", "sort-json-malformed": "neurowb_sort.json' is damaged",
    "missing-templates": "missing templates.npy", "garbage-spike-times": "spike_times.npy' is damaged",
    "pickled-amplitudes": "amplitudes.npy' is damaged",
}.items()}


def bad_phy(tmp: Path, kind: str | None) -> Path:
    return phy_folder(tmp) if kind is None else BAD_PHY[kind][0](tmp)


# -- movies -------------------------------------------------------------------------------------

def _truncated_imagej_tiff(tmp: Path) -> Path:
    import tifffile

    path = tmp / "stack.tif"
    tifffile.imwrite(path, np.zeros((40, 32, 32), np.uint16), imagej=True, metadata={"axes": "TYX", "fps": 10.0})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def _tiff(tmp: Path, name: str, array) -> Path:
    import tifffile

    tifffile.imwrite(tmp / name, array)
    return tmp / name


def _nan_movie(tmp: Path, fraction: float) -> Path:
    movie = np.random.default_rng(4).normal(100, 5, (60, 32, 32)).astype(np.float32)
    flat = movie.reshape(-1)
    flat[: int(fraction * flat.size) or 3] = np.nan
    return npy(tmp, "nan_movie.npy", movie)


BAD_MOVIES = {
    "truncated-imagej-tiff": (_truncated_imagej_tiff, "ImageJ stack of 40 images but only 1 could be read"),
    "single-image-tiff": (lambda tmp: _tiff(tmp, "one.tif", np.zeros((32, 32), np.uint16)), "single 2-D image"),
    "empty-npy": (lambda tmp: text(tmp, "empty.npy", b""), "empty"),
    "garbage-npy": (lambda tmp: garbage(tmp, "garbage.npy"), "Could not read"),
    "pickled-npy": (lambda tmp: npy(tmp, "obj.npy", np.array([None, 1], dtype=object)), "Could not read"),
    "colour-npy": (lambda tmp: npy(tmp, "rgb.npy", np.zeros((5, 16, 16, 3), np.uint8)), "colour"),
    "single-frame-npy": (lambda tmp: npy(tmp, "one.npy", np.zeros((1, 16, 16), np.float32)), "single frame"),
    "complex-npy": (lambda tmp: npy(tmp, "c.npy", np.zeros((5, 16, 16), np.complex64)), "not real numbers"),
    "h5-no-3d": (lambda tmp: h5(tmp, "flat.h5", {"x": np.zeros((4, 4))}), "no 3-D"),
    "h5-garbage": (lambda tmp: garbage(tmp, "garbage.h5"), "not an HDF5"),
    "h5-mesh": (lambda tmp: h5(tmp, "mesh.h5", {"vertices": np.array(_TRIANGLE, float), "faces": np.array([[0, 1, 2]])}), "no 3-D"),
    "nwb-garbage": (lambda tmp: garbage(tmp, "garbage.nwb"), "NWB"),
    "all-nan": (lambda tmp: _nan_movie(tmp, 1.0), "NaN"),
    "some-nan": (lambda tmp: _nan_movie(tmp, 0.0), "NaN"),
    "unsupported": (lambda tmp: text(tmp, "movie.mp4", "x"), "not supported"),
    "avi-not-miniscope": (lambda tmp: text(tmp, "clip.avi", "x"), "metaData.json"),
    "xml-not-bruker": (lambda tmp: text(tmp, "settings.xml", "<SETTINGS/>"), "Prairie View"),
    "isxd-garbage": (lambda tmp: garbage(tmp, "garbage.isxd"), "Inscopix"),
    "missing": (lambda tmp: tmp / "none.tif", "not found"),
}


def bad_movie(tmp: Path, kind: str) -> Path:
    return BAD_MOVIES[kind][0](tmp)


# -- images and label maps ----------------------------------------------------------------------

IMAGE_SHAPE = (128, 128)


def image(seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, IMAGE_SHAPE).astype(np.float32)


def _nan_image(tmp: Path, fraction: float, value=np.nan) -> Path:
    im = image()
    im.reshape(-1)[: max(1, int(fraction * im.size))] = value
    return npy(tmp, "nan_image.npy", im)


BAD_IMAGES = {
    "all-nan": (lambda tmp: _nan_image(tmp, 1.0), "NaN or infinite pixels"),
    "partly-nan": (lambda tmp: _nan_image(tmp, 0.1), "NaN or infinite pixels (the first at row 0, column 0)"),
    "inf": (lambda tmp: _nan_image(tmp, 0.0, np.inf), "NaN or infinite pixels"),
    "stack": (lambda tmp: npy(tmp, "stack.npy", np.zeros((3, 64, 64), np.float32)), "not a single 2-D image"),
    "corrupt-png": (lambda tmp: text(tmp, "bad.png", b"\x89PNG\r\n\x1a\n" + bytes(100)), "Could not read"),
    "empty-png": (lambda tmp: text(tmp, "empty.png", b""), "empty"),
    "strings": (lambda tmp: npy(tmp, "s.npy", np.array([["a", "b"], ["c", "d"]])), "not pixel intensities"),
    "truncated-tiff": (lambda tmp: _truncated(_tiff(tmp, "t.tif", image())), "'t.tif'"),
    "unsupported": (lambda tmp: text(tmp, "image.bmp", "x"), "not supported"),
}


def _truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def bad_image(tmp: Path, kind: str) -> Path:
    return BAD_IMAGES[kind][0](tmp)


def halves() -> np.ndarray:
    labels = np.ones(IMAGE_SHAPE, np.int32)
    labels[:, IMAGE_SHAPE[1] // 2:] = 2
    return labels


BAD_LABELS = {
    "shape": (lambda tmp: npy(tmp, "lab.npy", np.ones((10, 10), np.int32)), "but the image is"),
    "fractional": (lambda tmp: npy(tmp, "lab.npy", halves() + 0.5), "non-integer"),
    "negative": (lambda tmp: npy(tmp, "lab.npy", halves() - 2), "negative"),
    "unlabelled": (lambda tmp: npy(tmp, "lab.npy", np.zeros(IMAGE_SHAPE, np.int32)), "no labelled pixels"),
    "one-region": (lambda tmp: npy(tmp, "lab.npy", np.ones(IMAGE_SHAPE, np.int32)), "only one labelled region"),
    "colour": (lambda tmp: npy(tmp, "lab.npy", np.zeros((*IMAGE_SHAPE, 3), np.uint8)), "colour image"),
    "npz-several": (lambda tmp: _npz(tmp, a=halves(), b=halves()), "several arrays"),
    "garbage": (lambda tmp: garbage(tmp, "lab.npy"), "Could not read"),
}


def _npz(tmp: Path, **arrays) -> Path:
    np.savez(tmp / "lab.npz", **arrays)
    return tmp / "lab.npz"


def bad_labels(tmp: Path, kind: str) -> Path:
    return BAD_LABELS[kind][0](tmp)


# -- the valid files the bad cases need beside their bad one -------------------------------------

def good_files(tmp: Path) -> dict[str, Path]:
    from engine.ephys.probe import linear_probe, write_probe
    from engine.factors.cnn import PatchModel, Preprocessing, build_network
    from engine.factors.files import Factors, Grid, save_factors, writing_latents
    from engine.mesh.spines import FeatureSpec, SpineClassifier

    good: dict[str, Path] = {}
    mesh = sphere_mesh(2)
    good["sphere"] = tmp / "sphere.ply"
    mesh.export(good["sphere"])
    good["labels_4"] = npy(tmp, "labels_4.npy", np.zeros(4, np.int64))
    good["labels_sphere_one_class"] = npy(tmp, "sphere_labels.npy", np.zeros(len(mesh.vertices), np.int64))
    spec = FeatureSpec(timescales=tuple(np.geomspace(0.05, 20, 4)), units="um")
    X = np.random.default_rng(6).normal(size=(40, 4))
    y = np.r_[np.zeros(20, int), np.ones(20, int)]
    good["spine_model"] = tmp / "spines.nwbspine"
    SpineClassifier(n_estimators=2).fit(X, y, feature_spec=spec).save(good["spine_model"])

    good["recording"] = recording(tmp)
    good["probe"] = write_probe(tmp / "probe.json", linear_probe(4, warn=False))

    good["movie"] = npy(tmp, "movie.npy", np.random.default_rng(7).normal(100, 5, (60, 32, 32)).astype(np.float32))

    good["image"] = npy(tmp, "image.npy", image())
    good["labels_image"] = npy(tmp, "image_labels.npy", halves())
    prep = Preprocessing(patch_size=54, mean=0.5, std=0.3, intensity_dtype="float32")
    good["patch_model"] = tmp / "model.pt"
    PatchModel(build_network(2, 54), prep, [1, 2]).save(good["patch_model"])
    grid = Grid.for_image(IMAGE_SHAPE, 16, 54)
    good["latents"] = tmp / "latents.npy"
    with writing_latents(good["latents"], grid, 64) as out:
        out[:] = np.random.default_rng(8).uniform(0, 1, out.shape)
    good["factors"] = tmp / "factors.npz"
    save_factors(good["factors"], Factors(np.random.default_rng(9).uniform(0, 1, (*grid.shape, 3)).astype(np.float32),
                                          np.ones((3, 64), np.float32), grid))
    return good
