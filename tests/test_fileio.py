import os

import pytest

from lib_lora_train import fileio


def test_atomic_write_replaces_content_and_keeps_backup(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old", encoding="utf-8")
    os.chmod(target, 0o640)
    fileio.atomic_write_text(target, "new, tags", backup=True)
    assert target.read_text(encoding="utf-8") == "new, tags"
    assert (tmp_path / "a.txt.bak").read_text(encoding="utf-8") == "old"
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_failed_write_leaves_old_text_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    target.write_text("old", encoding="utf-8")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", crash)
    with pytest.raises(OSError):
        fileio.atomic_write_text(target, "new")
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
