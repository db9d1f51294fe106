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


def _dead_pid():
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_remove_stale_temp_clears_what_killed_writers_left(tmp_path):
    import os
    import time

    dead = _dead_pid()
    (tmp_path / "labels.npy").write_bytes(b"saved")
    stale = [tmp_path / f".labels.npy.{dead}-abcd1234.tmp", tmp_path / ".labels.npy.k2j4h5g6.tmp"]
    alive = [tmp_path / f".labels.npy.{os.getpid()}-zzzz9999.tmp", tmp_path / ".labels.npy.young123.tmp",
             tmp_path / ".notes.tmp", tmp_path / "data.tmp"]  # a write in progress, a fresh one, not ours
    for p in stale + alive:
        p.write_bytes(b"partial")
    old = time.time() - 2 * storage.LEGACY_TEMP_AGE_S
    os.utime(stale[1], (old, old))
    (tmp_path / f".phy.staging-{dead}").mkdir()
    (tmp_path / f".phy.staging-{dead}" / "params.py").write_text("half")
    # a swap killed between its two renames: the previous folder is put back where it was
    (tmp_path / f".curated.replaced-{dead}").mkdir()
    (tmp_path / f".curated.replaced-{dead}" / "cluster_group.tsv").write_text("cluster_id\tgroup\n0\tgood\n")
    # ... or after both: the old one is kept in sight, never deleted (it may have been curated work to keep)
    (tmp_path / "done").mkdir()
    (tmp_path / f".done.replaced-{dead}").mkdir()
    (tmp_path / f".done.replaced-{dead}" / "old.txt").write_text("old")
    removed = storage.remove_stale_temp(tmp_path, tmp_path / "missing")
    (kept,) = tmp_path.glob("done_replaced-*")
    assert (kept / "old.txt").read_text() == "old"
    assert sorted(p.name for p in removed) == sorted([*(p.name for p in stale), f".phy.staging-{dead}"])
    assert all(p.exists() for p in alive) and (tmp_path / "labels.npy").read_bytes() == b"saved"
    assert "good" in (tmp_path / "curated" / "cluster_group.tsv").read_text()


def test_staged_folder_swaps_in_only_when_complete(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "a.txt").write_text("previous")
    with pytest.raises(KeyboardInterrupt):
        with storage.staged_folder(target) as staging:
            (staging / "a.txt").write_text("half")
            raise KeyboardInterrupt
    assert (target / "a.txt").read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with storage.staged_folder(target, keep_old=tmp_path / "kept") as staging:
        (staging / "b.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["b.txt"] and (tmp_path / "kept" / "a.txt").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "out"]
    with storage.staged_folder(target, keep_old=tmp_path / "kept") as staging:  # the name is taken: another one
        (staging / "c.txt").write_text("newer")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "kept-2", "out"] and (tmp_path / "kept-2" / "b.txt").is_file()


def test_read_hand_work_keeps_a_damaged_file_aside(tmp_path):
    path = tmp_path / "decisions.json"
    assert storage.read_hand_work(path, lambda p: json.loads(p.read_text()), "decisions") == (None, "")
    path.write_text('{"a": 1}')
    assert storage.read_hand_work(path, lambda p: json.loads(p.read_text()), "decisions") == ({"a": 1}, "")
    path.write_text('{"a": ')
    value, message = storage.read_hand_work(path, lambda p: json.loads(p.read_text()), "decisions")
    (aside,) = tmp_path.glob("decisions.json.damaged-*")
    assert value is None and not path.exists() and aside.read_text() == '{"a": '
    assert aside.name in message and "decisions" in message
