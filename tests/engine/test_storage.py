import json

import numpy as np
import pytest

from engine import storage
from engine.errors import InputError


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "labels.json"
    storage.atomic_save_json(target, {"a": 1})
    storage.atomic_save_json(target, {"a": 2, "b": [1, 2]})
    assert json.loads(target.read_text()) == {"a": 2, "b": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["labels.json"]


def test_failed_write_keeps_old_content(tmp_path, monkeypatch):
    target = tmp_path / "curation.tsv"
    storage.atomic_write_text(target, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "replace", broken_replace)
    with pytest.raises(OSError):
        storage.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["curation.tsv"]


def test_atomic_save_npy_roundtrip(tmp_path):
    array = np.arange(12, dtype=np.int16).reshape(3, 4)
    path = storage.atomic_save_npy(tmp_path / "x.npy", array)
    np.testing.assert_array_equal(np.load(path), array)


def test_workdir_beside_writable_data(tmp_path):
    data = tmp_path / "rec.raw"
    data.write_bytes(b"\0" * 8)
    assert storage.workdir_for(data) == tmp_path / "rec.raw.neurowb"
    assert (tmp_path / "rec.raw.neurowb").is_dir()




def test_workdir_fallback_when_access_denied(tmp_path, monkeypatch):
    data = tmp_path / "mesh.ply"
    data.write_text("x")
    monkeypatch.setenv("NEUROWB_DATA_DIR", str(tmp_path / "user"))
    monkeypatch.setattr(storage.os, "access", lambda path, mode: False)
    work = storage.workdir_for(data)
    assert work.is_dir() and work.parent == tmp_path / "user" / "autosave"
    assert work.name.startswith("mesh.ply-")


def test_input_error_message_and_details():
    error = InputError("probe has 32 channels, file has 31: pick the matching probe", details="size 123")
    assert str(error) == error.message
    assert error.details == "size 123"
    assert isinstance(error, ValueError)


def test_atomic_write_gives_normal_permissions_and_keeps_existing_ones(tmp_path):
    new = storage.atomic_write_text(tmp_path / "new.txt", "x")
    assert new.stat().st_mode & 0o777 == 0o666 & ~storage._umask()
    existing = tmp_path / "old.txt"
    existing.write_text("a")
    existing.chmod(0o640)
    storage.atomic_write_text(existing, "b")
    assert existing.stat().st_mode & 0o777 == 0o640
