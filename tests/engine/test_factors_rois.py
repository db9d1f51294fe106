"""Hand-drawn regions: polygon and brush rasterization against hand-made maps, editing, atomic save/load."""

import json

import numpy as np
import pytest

from engine.errors import InputError
from engine.factors.rois import BASE_FILE, ROIS_FILE, RegionSet


def test_polygon_covers_its_outline_and_inside():
    rset = RegionSet((8, 10))
    a = rset.add_region("cortex")
    rset.add_polygon(a.label, [(2, 1), (6, 1), (6, 4), (2, 4)])  # (x, y): columns 2-6, rows 1-4
    expected = np.zeros((8, 10), np.int32)
    expected[1:5, 2:7] = a.label
    np.testing.assert_array_equal(rset.rasterize(), expected)


def test_triangle_is_half_of_its_box():
    rset = RegionSet((12, 12))
    a = rset.add_region()
    rset.add_polygon(a.label, [(0, 0), (10, 0), (0, 10)])
    out = rset.rasterize()
    ys, xs = np.nonzero(out)
    assert np.all(xs + ys <= 10) and out[0, 0] == a.label and out[0, 10] == a.label and out[10, 0] == a.label
    assert out[6, 6] == 0 and 60 <= len(xs) <= 70  # 66 lattice points in the closed triangle


def test_brush_later_shapes_win_and_erase():
    rset = RegionSet((9, 9))
    a, b = rset.add_region("a"), rset.add_region("b")
    rset.add_polygon(a.label, [(0, 0), (8, 0), (8, 8), (0, 8)])
    rset.add_stroke(b.label, [(4, 4)], radius=1.0)  # a plus-shaped disc of radius 1
    rset.add_stroke(a.label, [(0, 8), (8, 8)], radius=0.5, erase=True)  # wipe the bottom row
    out = rset.rasterize()
    assert out[4, 4] == b.label and out[3, 4] == b.label and out[4, 5] == b.label
    assert out[0, 0] == a.label and out[2, 2] == a.label
    assert not out[8].any()
    assert b.label == a.label + 1


def test_labels_stay_stable_when_a_region_is_deleted():
    rset = RegionSet((5, 5))
    a, b = rset.add_region(), rset.add_region()
    rset.add_polygon(b.label, [(0, 0), (2, 0), (2, 2)])
    rset.delete(a.label)
    assert rset.rasterize().max() == b.label == 2
    assert rset.add_region().label == 3
    with pytest.raises(InputError, match="at least 3"):
        rset.add_polygon(b.label, [(0, 0), (1, 1)])
    with pytest.raises(InputError, match="name"):
        rset.rename(b.label, "  ")


def test_save_load_round_trip_with_base_map(tmp_path):
    rset = RegionSet((6, 7))
    base = np.zeros((6, 7), np.int32)
    base[:, :3] = 1
    base[:, 5:] = 2
    rset.set_base(base, {1: "stripes", 2: "blobs"})
    c = rset.add_region("drawn")
    assert c.label == 3
    rset.add_stroke(c.label, [(1, 1), (1, 4)], radius=0.5)
    rset.rename(1, "grating")
    before = rset.rasterize()
    rset.save(tmp_path)
    assert json.loads((tmp_path / ROIS_FILE).read_text())["regions"][0]["name"] == "grating"
    base_file = json.loads((tmp_path / ROIS_FILE).read_text())["base_file"]
    assert (tmp_path / base_file).is_file() and base_file != BASE_FILE
    assert not list(tmp_path.glob(".*tmp"))  # atomic: no temp file left
    again = RegionSet.load(tmp_path, (6, 7))
    assert again.names == {1: "grating", 2: "blobs", 3: "drawn"}
    np.testing.assert_array_equal(again.rasterize(), before)
    assert before[1, 1] == 3 and before[0, 6] == 2
    with pytest.raises(InputError, match="another image"):
        RegionSet.load(tmp_path, (7, 7))
    (tmp_path / ROIS_FILE).write_text("{broken")
    with pytest.raises(InputError, match="damaged"):
        RegionSet.load(tmp_path)
    assert RegionSet.load(tmp_path / "nothing") is None


def test_base_map_of_another_shape_is_refused():
    with pytest.raises(InputError, match="label file of this image"):
        RegionSet((4, 4)).set_base(np.ones((4, 5), int))


def test_a_label_file_keeps_drawn_regions_on_top():
    rset = RegionSet((4, 6))
    a = rset.add_region("drawn")
    rset.add_polygon(a.label, [(0, 0), (1, 0), (1, 1), (0, 1)])
    base = np.zeros((4, 6), np.int32)
    base[:, 3:] = 1
    base[:, :3] = 2
    rset.set_base(base, {1: "left", 2: "right"})
    assert rset.names == {1: "left", 2: "right", 3: "drawn"}
    out = rset.rasterize()
    assert out[0, 0] == 3 and out[3, 0] == 2 and out[0, 5] == 1


def test_label_counts_equal_bincount_including_empty_and_erased_labels():
    from engine.factors.rois import label_counts

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, size=(301, 457)).astype(np.int32)
    labels[labels == 3] = 0  # a label with no pixel left
    counts = label_counts(labels, 7)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, np.bincount(labels.ravel(), minlength=7))
