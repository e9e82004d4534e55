"""Saving: only changed captions, atomically, with optional backups; interruptions never leave partial files."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tag_editor_helpers import make_folder

from lib_lora_train.fileio import exchange_files
from lib_lora_train.tag_editor import cleanup, saving
from lib_lora_train.tag_editor.dataset import Dataset
from lib_lora_train.tag_editor.operations import AddTags, RemoveTags
from lib_lora_train.tag_editor.saving import save_dataset

ROOT = Path(__file__).resolve().parents[1]
DURABILITIES = ["batch", "per_file", "none"]


def caption_texts(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.txt"))}


@pytest.mark.parametrize("durability", DURABILITIES)
def test_save_writes_only_changed_captions(tmp_path, durability):
    folder = make_folder(tmp_path / "ds", {"a.png": "x,y", "b.png": "y", "c.png": None, "d.png": None})
    ds = Dataset.load(folder)
    before_b = os.stat(folder / "b.txt").st_mtime_ns
    ds.apply(RemoveTags(("x",)))
    ds.set_caption(ds.find("c.png"), "new ,tag")
    report = save_dataset(ds, durability=durability)
    assert report.ok and sorted(Path(p).name for p in report.written) == ["a.txt", "c.txt"]
    assert caption_texts(folder) == {"a.txt": "y", "b.txt": "y", "c.txt": "new, tag"}
    assert os.stat(folder / "b.txt").st_mtime_ns == before_b
    assert not (folder / "d.txt").exists()  # an untouched image without caption gets no empty file
    assert not ds.dirty
    assert save_dataset(ds, durability=durability).written == []
    cleanup.wait_for_cleanup()  # the replaced versions are deleted in the background
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("durability", DURABILITIES)
def test_backup_keeps_the_previous_text(tmp_path, durability):
    folder = make_folder(tmp_path / "ds", {"a.png": "old,  text", "b.png": None})
    ds = Dataset.load(folder)
    ds.apply(AddTags(("mychar",)))
    report = save_dataset(ds, backup=True, durability=durability)
    assert (folder / "a.txt.bak").read_text(encoding="utf-8") == "old,  text"
    assert not (folder / "b.txt.bak").exists()
    assert [Path(p).name for p in report.backups] == ["a.txt.bak"]
    assert caption_texts(folder)["a.txt"] == "mychar, old, text"


@pytest.mark.parametrize("durability", DURABILITIES)
def test_non_utf8_caption_is_never_rewritten(tmp_path, durability):
    raw = b"caf\xe9, \xff\xfe junk"
    folder = make_folder(tmp_path / "ds", {"bad.png": raw, "ok.png": "a"})
    ds = Dataset.load(folder)
    ds.apply(AddTags(("mychar",)))
    ds.apply(RemoveTags(("a",)))
    report = save_dataset(ds, backup=True, durability=durability)
    assert (folder / "bad.txt").read_bytes() == raw
    assert not (folder / "bad.txt.bak").exists()
    assert report.locked == 1 and "untouched" in report.summary()


def test_saved_file_keeps_its_permissions(tmp_path):
    folder = make_folder(tmp_path / "ds", {"a.png": "x"})
    os.chmod(folder / "a.txt", 0o600)
    ds = Dataset.load(folder)
    ds.apply(AddTags(("y",)))
    save_dataset(ds)
    assert os.stat(folder / "a.txt").st_mode & 0o777 == 0o600


def test_a_failing_file_is_reported_and_stays_unsaved_while_others_save(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "ds", {"a.png": "x", "b.png": "x"})
    ds = Dataset.load(folder)
    ds.apply(AddTags(("y",)))
    real_replace = saving._put_in_place

    def refuse_a(src, dst):
        if str(dst).endswith("a.txt"):
            raise PermissionError(13, "Permission denied")
        return real_replace(src, dst)

    monkeypatch.setattr(saving, "_put_in_place", refuse_a)
    report = save_dataset(ds)
    assert not report.ok and "a.txt: not saved (Permission denied)" in report.failures[0]
    assert caption_texts(folder) == {"a.txt": "x", "b.txt": "y, x"}
    assert ds.dirty_ids() == [ds.find("a.png")]
    cleanup.wait_for_cleanup()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("k", [0, 3, 7])
def test_interrupted_save_leaves_every_caption_old_or_new(tmp_path, monkeypatch, k):
    old = {f"{i}.png": f"tag{i}, common" for i in range(10)}
    folder = make_folder(tmp_path / "ds", old)
    ds = Dataset.load(folder)
    ds.apply(AddTags(("mychar",)))
    real_replace = saving._put_in_place
    calls = []

    def interrupted(src, dst):
        if len(calls) == k:
            raise KeyboardInterrupt  # the user (or the host) stopping the process mid-save
        calls.append(dst)
        return real_replace(src, dst)

    monkeypatch.setattr(saving, "_put_in_place", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_dataset(ds)
    texts = caption_texts(folder)
    for i in range(10):
        assert texts[f"{i}.txt"] in (f"tag{i}, common", f"mychar, tag{i}, common")
    assert sum(t.startswith("mychar") for t in texts.values()) == k
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(ds.dirty_ids()) == 10 - k  # what did not reach the disk is still unsaved


@pytest.mark.parametrize(("count", "k"), [(8, 0), (8, 4), (40, 10)])  # 40: renames in the thread pool
def test_save_killed_by_sigkill_leaves_every_caption_old_or_new(tmp_path, count, k):
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("needs SIGKILL (POSIX)")
    folder = make_folder(tmp_path / "ds", {f"{i}.png": f"t{i}, shared tag" for i in range(count)})
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from lib_lora_train.tag_editor import cleanup, saving
        from lib_lora_train.tag_editor.dataset import Dataset
        from lib_lora_train.tag_editor.operations import AddTags
        ds = Dataset.load({str(folder)!r})
        ds.apply(AddTags(("mychar",)))
        import threading
        real, done, lock = saving._put_in_place, [], threading.Lock()
        def dying_replace(src, dst):
            with lock:
                if len(done) == {k}:
                    os.kill(os.getpid(), signal.SIGKILL)
                done.append(dst)
            return real(src, dst)
        saving._put_in_place = dying_replace
        saving.save_dataset(ds)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    texts = caption_texts(folder)
    assert len(texts) == count
    for i in range(count):
        assert texts[f"{i}.txt"] in (f"t{i}, shared tag", f"mychar, t{i}, shared tag")
    renamed = sum(t.startswith("mychar") for t in texts.values())
    # serial renames stop exactly at k; in the pool, renames that had started may or may not have finished
    assert renamed == k if count < 2 * saving.RENAME_THREADS else renamed <= k
    # temp files of the killed save are hidden: a reload ignores them and sees every image once
    reloaded = Dataset.load(folder)
    assert len(reloaded) == count and not reloaded.load_errors


def test_unknown_durability_is_rejected(tmp_path):
    ds = Dataset.load(make_folder(tmp_path / "ds", {"a.png": "x"}))
    with pytest.raises(ValueError, match="durability"):
        save_dataset(ds, durability="fast")


def test_interrupted_parallel_save_keeps_disk_and_unsaved_marks_consistent(tmp_path, monkeypatch):
    count = 4 * saving.RENAME_THREADS  # enough captions for the thread pool
    # the pool serves file systems that cannot exchange files (each replace waits on the disk)
    monkeypatch.setattr(saving, "exchange_files", lambda a, b: False)
    folder = make_folder(tmp_path / "ds", {f"{i:03d}.png": f"tag{i}" for i in range(count)})
    ds = Dataset.load(folder)
    ds.apply(AddTags(("mychar",)))
    real_replace = saving._put_in_place
    lock = __import__("threading").Lock()
    calls = []

    def interrupted(src, dst):
        with lock:
            calls.append(dst)
            if len(calls) == 10:
                raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(saving, "_put_in_place", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_dataset(ds)
    texts = caption_texts(folder)
    new = set()
    for i in range(count):
        assert texts[f"{i:03d}.txt"] in (f"tag{i}", f"mychar, tag{i}")
        if texts[f"{i:03d}.txt"].startswith("mychar"):
            new.add(ds.find(f"{i:03d}.png"))
    assert 9 <= len(new) < count  # the renames before the interrupt, and the few already running
    assert set(ds.dirty_ids()) == set(ds.ids()) - new  # exactly what is not on disk stays unsaved
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    # the next save completes the job
    monkeypatch.setattr(saving, "_put_in_place", real_replace)
    assert save_dataset(ds).ok and all(t.startswith("mychar") for t in caption_texts(folder).values())


@pytest.mark.parametrize("durability", DURABILITIES)
def test_a_caption_changed_by_another_program_is_not_overwritten(tmp_path, durability):
    folder = make_folder(tmp_path / "ds", {"a.png": "x", "b.png": "x", "c.png": None})
    ds = Dataset.load(folder)
    ds.apply(AddTags(("mine",)))
    (folder / "a.txt").write_text("edited elsewhere, longer", encoding="utf-8")
    (folder / "c.txt").write_text("created elsewhere", encoding="utf-8")
    report = save_dataset(ds, durability=durability)
    assert len(report.failures) == 2 and all("changed on disk since it was loaded" in f for f in report.failures)
    assert caption_texts(folder) == {
        "a.txt": "edited elsewhere, longer",
        "b.txt": "mine, x",
        "c.txt": "created elsewhere",
    }
    assert sorted(ds.relative(i) for i in ds.dirty_ids()) == ["a.png", "c.png"]
    # our own save updated b's stamp: saving b again later is not mistaken for an outside change
    ds.apply(RemoveTags(("x",)), [ds.find("b.png")])
    assert save_dataset(ds, durability=durability, overwrite_changed=True).ok
    assert caption_texts(folder) == {"a.txt": "mine, x", "b.txt": "mine", "c.txt": "mine"}


def test_exchange_swaps_two_files_or_says_it_cannot(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("new")
    b.write_text("old")
    if not exchange_files(a, b):
        pytest.skip("this platform or file system has no atomic exchange; saves use os.replace here")
    assert (a.read_text(), b.read_text()) == ("old", "new")
    assert exchange_files(a, tmp_path / "missing") is False  # nothing to swap with: the caller renames instead
    assert a.read_text() == "old" and not (tmp_path / "missing").exists()
    with pytest.raises(OSError):
        exchange_files(tmp_path / "absent", b)


@pytest.mark.parametrize("can_exchange", [True, False])
def test_save_leaves_no_previous_version_behind(tmp_path, monkeypatch, can_exchange):
    folder = make_folder(tmp_path / "ds", {f"{i}.png": f"t{i}" for i in range(40)} | {"new.png": None})
    if not can_exchange:  # a file system without renameat2 exchange (or another OS): plain os.replace
        monkeypatch.setattr(saving, "exchange_files", lambda a, b: False)
    ds = Dataset.load(folder)
    ds.apply(AddTags(("mychar",)))
    first = save_dataset(ds, backup=True)
    ds.apply(RemoveTags(("mychar",)))  # a second save at once: its temp names must not meet the first's cleanup
    second = save_dataset(ds, backup=True)
    cleanup.wait_for_cleanup()
    assert first.ok and second.ok and len(second.written) == 41
    texts = caption_texts(folder)
    assert texts["new.txt"] == "" and all(texts[f"{i}.txt"] == f"t{i}" for i in range(40))
    assert (folder / "3.txt.bak").read_text(encoding="utf-8") == "mychar, t3"
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_load_sweeps_temp_files_of_a_killed_save_only(tmp_path):
    folder = make_folder(tmp_path / "ds", {"a.png": "x"})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # that process has exited (its pid could be reused, then the file just stays)
    leftovers = {
        f".a.txt.{dead_pid}.7.tmp": True,  # a killed save of this version
        f".a.txt.{dead_pid}.tmp": True,  # a killed save of an older version (no save number)
        f".a.txt.{os.getpid()}.7.tmp": False,  # this process: a save may still use it
        f".a.txt.{os.getppid()}.7.tmp": False,  # a running process
        ".notes.tmp": False,  # not ours
    }
    for name in leftovers:
        (folder / name).write_text("old")
    ds = Dataset.load(folder)
    cleanup.wait_for_cleanup()
    assert len(ds) == 1 and not ds.load_errors
    kept = {p.name for p in folder.iterdir() if p.name.startswith(".")}
    assert kept == {name for name, swept in leftovers.items() if not swept}


def test_batch_save_flushes_the_data_before_any_caption_takes_its_place(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "ds", {"a.png": "x", "sub/b.png": "y"})
    ds = Dataset.load(folder)
    ds.apply(AddTags(("mychar",)))
    events = []
    real_put = saving._put_in_place
    monkeypatch.setattr(saving, "sync_filesystems", lambda folders: events.append(("sync", sorted(folders))))
    monkeypatch.setattr(saving, "_put_in_place", lambda a, b: events.append(("put", b)) or real_put(a, b))
    assert save_dataset(ds).ok
    assert events[0] == ("sync", sorted({str(folder), str(folder / "sub")}))
    assert sorted(e[1] for e in events[1:]) == sorted([str(folder / "a.txt"), str(folder / "sub" / "b.txt")])


def test_sync_flushes_each_file_system_once(tmp_path, monkeypatch):
    from lib_lora_train import fileio

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    calls = []
    monkeypatch.setattr(fileio, "_syncfs", lambda fd: calls.append(os.fstat(fd).st_dev) or 0)
    fileio.sync_filesystems([tmp_path / "a", tmp_path / "b", tmp_path / "gone"])
    assert calls == [os.stat(tmp_path).st_dev]  # one file system, flushed once; a missing folder is no error
    monkeypatch.setattr(fileio, "_syncfs", None)  # no syncfs (not Linux): the machine-wide flush
    monkeypatch.setattr(fileio.os, "sync", lambda: calls.append("sync"))
    fileio.sync_filesystems([tmp_path / "a"])
    assert calls[-1] == "sync"
