"""Saving captions: only the changed ones, each atomically, optionally keeping the previous text as a backup.

Every caption goes through a temporary file in its own folder and an atomic rename or exchange, so a crash, a full
disk or a killed process leaves each caption with either its old or its new text, never empty or half written.

Durability (what survives a power cut, not just a crash of the process) is a choice, ``durability``:

- ``"batch"`` (default): write every temporary file, flush them all to disk at once (``fileio.sync_filesystems``:
  a ``syncfs`` of the file system that holds them, ``os.sync`` where there is none), then swap them into place and
  fsync each folder once. The data is on disk before any swap, as with a per-file fsync, but the disk is flushed
  once instead of 10,000 times. The flush covers every pending write of that file system, which is why it is one
  call per save and not one per file.
- ``"per_file"``: ``lib_lora_train.fileio.atomic_write_text`` for each caption (fsync per file); slowest.
- ``"none"``: temporary file and rename without any flush: atomic against a crash of the WebUI, but after a
  power cut the file system may hold the new name with old or empty data (ext4 ``data=ordered`` usually
  prevents that). For throwaway work only.

A new caption goes into place with ``fileio.exchange_files`` where the file system can (Linux: ext4, xfs, btrfs,
tmpfs...), ``os.replace`` elsewhere. Both are atomic; the exchange leaves the previous version in the temporary
file, and ``cleanup.discard_later`` deletes those after the save returns, because freeing 10,000 files inside the
renames is what made a save take seconds (see ``exchange_files``).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from lib_lora_train.fileio import atomic_write_text, exchange_files, sync_filesystems
from lib_lora_train.tag_editor import cleanup
from lib_lora_train.tag_editor.captions import join_tags
from lib_lora_train.tag_editor.dataset import Dataset

Durability = Literal["batch", "per_file", "none"]


@dataclass
class SaveReport:
    """What a save did: files written, backups made, and one message per file that failed (it stays unsaved)."""

    written: list[str] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    locked: int = 0  # captions that were never touched because they are not valid UTF-8

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        parts = [f"saved {len(self.written)} caption(s)"]
        if self.backups:
            parts.append(f"{len(self.backups)} backup(s)")
        if self.locked:
            parts.append(f"{self.locked} unreadable caption(s) left untouched")
        if self.failures:
            parts.append(f"{len(self.failures)} failed: " + "; ".join(self.failures[:5]))
        return ", ".join(parts)


@dataclass
class _Pending:
    entry_id: int
    tags: tuple[str, ...]
    target: str
    temp: str | None
    backup_target: str | None = None
    backup_temp: str | None = None
    backup_done: bool = False
    error: BaseException | None = None
    stamp: tuple[int, int] | None = None  # (mtime_ns, size) of the new file
    replaces: bool = False  # a caption file existed when this one was staged
    displaced: list[str] = field(default_factory=list)  # temp names now holding the versions this save replaced


# A rename that replaces a file waits on the file system's journal, not on the CPU: where captions cannot be
# exchanged, a few threads overlap those waits (3-4x faster for 10,000 captions on a busy disk). An exchange costs
# ~20 us of CPU and no wait, so threads would only fight over the GIL (5x slower, measured): those run serially.
# Each caption's rename is atomic on its own, so their order does not matter.
RENAME_THREADS = 8


def _put_in_place(temp: str, target: str) -> bool:
    """Atomically make the file at ``temp`` the one at ``target``.

    True when the two were exchanged, so the previous ``target`` now sits at ``temp`` and must be deleted; False
    when ``target`` was simply replaced (or created).
    """
    if exchange_files(temp, target):
        return True
    os.replace(temp, target)
    return False


def _commit_all(pending: list[_Pending]) -> None:
    """Rename every staged file into place (the backup first); errors are stored on the items.

    After the first interrupt (KeyboardInterrupt, SystemExit...) no further rename starts; the ones already
    running finish, so each caption is old or new and its item says which.
    """
    stop = threading.Event()

    def commit(item: _Pending) -> None:
        if stop.is_set():
            return
        try:
            if item.backup_temp is not None:
                if _put_in_place(item.backup_temp, item.backup_target):
                    item.displaced.append(item.backup_temp)
                item.backup_temp = None
                item.backup_done = True
            if _put_in_place(item.temp, item.target):
                item.displaced.append(item.temp)
            item.temp = None
        except OSError as exc:
            item.error = exc
        except BaseException as exc:  # handed back to the caller's thread and re-raised there
            item.error = exc
            stop.set()

    # serially while captions are exchanged (or new); once RENAME_THREADS of them had to replace an existing file
    # (no exchange on this file system), the rest go to the thread pool
    replaced = 0
    for position, item in enumerate(pending):
        if stop.is_set():
            return
        commit(item)
        if item.replaces and item.error is None and not item.displaced:
            replaced += 1
            if replaced == RENAME_THREADS:
                rest = pending[position + 1 :]
                with ThreadPoolExecutor(max_workers=RENAME_THREADS) as pool:
                    list(pool.map(commit, rest))
                return


def save_dataset(
    dataset: Dataset,
    *,
    backup: bool = False,
    backup_suffix: str = ".bak",
    durability: Durability = "batch",
    overwrite_changed: bool = False,
) -> SaveReport:
    """Write the caption of every changed entry; see the module docstring for ``durability``.

    With ``backup`` the text a caption had on disk is kept beside it as ``<caption><backup_suffix>`` (replacing an
    older backup). A caption that another program changed (or created) since it was loaded is not overwritten
    unless ``overwrite_changed``: it is reported and stays unsaved. Entries that fail stay marked unsaved and are
    listed in the report; the others are saved.
    """
    if durability not in ("batch", "per_file", "none"):
        raise ValueError(f"durability must be 'batch', 'per_file' or 'none', got {durability!r}")
    if durability == "batch" and not hasattr(os, "sync"):
        durability = "per_file"  # Windows has no os.sync; a per-file flush gives the same guarantee
    report = SaveReport(locked=sum(1 for e in dataset.entries.values() if e.locked))
    ids = dataset.dirty_ids()
    if durability == "per_file":
        for entry_id in ids:
            entry = dataset.entries[entry_id]
            tags = tuple(entry.tags)
            target = entry.caption_file
            try:
                current = _stat(target)
                if current[1] != entry.disk_stamp and not overwrite_changed:
                    report.failures.append(_changed_on_disk(target))
                    continue
                atomic_write_text(target, join_tags(tags), backup=backup, backup_suffix=backup_suffix)
                stamp = _stat(target)[1]
            except OSError as exc:
                report.failures.append(_failure(target, exc))
                continue
            had_file = current[1] is not None
            dataset.mark_saved(entry_id, tags, stamp)
            report.written.append(target)
            if backup and had_file:
                report.backups.append(target + backup_suffix)
        return report

    pending: list[_Pending] = []
    save_tag = f"{os.getpid()}.{cleanup.next_save_number()}"  # in every temp name: see _temp_name
    finished = False
    try:
        for entry_id in ids:
            item = _stage(dataset, entry_id, save_tag, backup, backup_suffix, overwrite_changed, report)
            if item is not None:
                pending.append(item)
        if durability == "batch" and pending:
            sync_filesystems({item.target.rpartition(os.sep)[0] for item in pending})
        _commit_all(pending)
        folders: set[str] = set()
        interrupt: BaseException | None = None
        for item in pending:  # in caption order, on this thread: the dataset is not shared with the workers
            if item.backup_done:
                report.backups.append(item.backup_target)
            if item.error is not None:
                if isinstance(item.error, OSError):
                    report.failures.append(_failure(item.target, item.error))
                else:
                    interrupt = interrupt or item.error
                continue
            if item.temp is None:  # renamed
                dataset.mark_saved(item.entry_id, item.tags, item.stamp)
                report.written.append(item.target)
                folders.add(item.target.rpartition(os.sep)[0])
        if interrupt is not None:
            raise interrupt
        if durability == "batch":
            for folder in folders:
                _fsync_folder(folder)
        finished = True
    finally:
        # an error or an interrupt part-way: the captions not yet renamed keep their old text; drop their temps
        leftovers = [temp for item in pending for temp in (item.temp, item.backup_temp) if temp is not None]
        displaced = [path for item in pending for path in item.displaced]
        if finished:
            cleanup.discard_later(displaced)
        else:  # leave nothing behind when the save did not complete; nobody is waiting for speed now
            leftovers += displaced
        for temp in leftovers:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
    return report


def _stage(
    dataset: Dataset,
    entry_id: int,
    save_tag: str,
    backup: bool,
    suffix: str,
    overwrite_changed: bool,
    report: SaveReport,
) -> _Pending | None:
    """Write the new text (and the backup) of one entry to temporary files beside the caption."""
    entry = dataset.entries[entry_id]
    tags = tuple(entry.tags)
    target = entry.caption_file
    item = _Pending(entry_id, tags, target, _temp_name(target, save_tag))
    try:
        mode, current = _stat(target)
        if current != entry.disk_stamp and not overwrite_changed:
            report.failures.append(_changed_on_disk(target))
            return None
        item.replaces = current is not None
        if backup:
            try:
                with open(target, "rb") as handle:
                    old = handle.read()
            except FileNotFoundError:
                old = None
            if old is not None:  # no caption file yet: nothing to back up
                item.backup_target = target + suffix
                item.backup_temp = _temp_name(item.backup_target, save_tag)
                _write_new(item.backup_temp, old, mode)
        item.stamp = _write_new(item.temp, join_tags(tags).encode("utf-8"), mode)
    except OSError as exc:
        for temp in (item.temp, item.backup_temp):
            if temp is not None:
                try:
                    os.unlink(temp)
                except OSError:
                    pass
        report.failures.append(_failure(target, exc))
        return None
    return item


def _temp_name(target: str, save_tag: str) -> str:
    # hidden, so that the loader and the trainers ignore one left by a killed process; the pid and the save number
    # keep it apart from one that an earlier save's background cleanup has yet to delete (cleanup.stale_temp)
    folder, sep, name = target.rpartition(os.sep)  # caption paths are absolute, built with os.sep (dataset.py)
    return f"{folder}{sep}.{name}.{save_tag}.tmp"


def _stat(target: str) -> tuple[int, tuple[int, int] | None]:
    """(permission bits to give the new file, (mtime_ns, size) of the current one or None if there is none).

    One stat serves both: the caption keeps the user's permissions, and the stamp tells whether the file changed
    since it was loaded.
    """
    try:
        info = os.stat(target)
    except FileNotFoundError:
        return 0o644, None
    return info.st_mode & 0o777, (info.st_mtime_ns, info.st_size)


def _write_new(path: str, data: bytes, mode: int) -> tuple[int, int]:
    """Create ``path`` with ``data``; returns its (mtime_ns, size), which a rename keeps."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        written = os.write(fd, data)
        if written < len(data):  # a short write (a signal, a nearly full disk): write the rest
            view = memoryview(data)[written:]
            while view:
                view = view[os.write(fd, view) :]
        info = os.fstat(fd)
    finally:
        os.close(fd)
    return info.st_mtime_ns, info.st_size


def _changed_on_disk(path: str) -> str:
    return (
        f"{path}: changed on disk since it was loaded (by another program?), so it was not overwritten; reload the "
        "folder to see that version, or save with 'overwrite captions changed on disk' to keep yours"
    )


def _fsync_folder(folder: str) -> None:
    """Make the renames in ``folder`` durable; not possible on Windows, where a rename is durable enough."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _failure(path: str, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{path}: not saved ({reason}); check the folder's permissions and free space, then save again"
