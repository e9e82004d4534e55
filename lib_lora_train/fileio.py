"""Writes that never leave a half-written file behind.

Captions are the user's work: a crash, a full disk or a killed process during a save must leave each file either
with its old text or its new text. Every writer in the product goes through ``atomic_write_*``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path


def atomic_write_bytes(
    path: str | os.PathLike, data: bytes, *, backup: bool = False, backup_suffix: str = ".bak"
) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    A new file gets the mode a plain ``open()`` would give it (0666 less the umask); a replaced file keeps the mode
    of the file it replaces. With ``backup`` an existing file is first copied to ``path + backup_suffix`` (the
    previous backup is replaced).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if backup and target.exists():
        shutil.copy2(target, target.with_name(target.name + backup_suffix))
    fd, tmp = _create_temp(target)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists():
            # keep the user's permissions on an overwritten caption
            shutil.copymode(target, tmp)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _create_temp(target: Path) -> tuple[int, str]:
    """A new, exclusive temporary file beside ``target``, created with mode 0666 so that the kernel applies the
    umask as for any ``open()``; ``tempfile.mkstemp`` would always give 0600, and files other programs (another
    user's ComfyUI, a file server) must read would be unreadable to them."""
    for _ in range(100):
        tmp = str(target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{target.parent}: no free temporary file name for {target.name}")


def atomic_write_text(
    path: str | os.PathLike, text: str, *, encoding: str = "utf-8", backup: bool = False, backup_suffix: str = ".bak"
) -> None:
    """Text flavour of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode(encoding), backup=backup, backup_suffix=backup_suffix)


def sync_filesystems(folders: Iterable[str | os.PathLike]) -> None:
    """Flush to disk every pending write of the file systems that hold ``folders`` (POSIX; see ``os.sync``).

    On Linux this is one ``syncfs`` per file system, so a save does not also wait for unrelated writes elsewhere on
    the machine (a checkpoint being downloaded to another disk, say); elsewhere it is ``os.sync()``.
    """
    if _syncfs is None:
        os.sync()
        return
    done: set[int] = set()
    for folder in folders:
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            continue  # the folder went away: nothing of ours left to flush there
        try:
            device = os.fstat(fd).st_dev
            if device not in done:
                done.add(device)
                if _syncfs(fd) != 0:
                    os.sync()  # syncfs refused (an odd file system): the machine-wide flush still gives the guarantee
                    return
        finally:
            os.close(fd)


def _libc_function(name: str, *argtypes):
    """A Linux libc function by name, or None (another OS, or a libc without it: renameat2 needs glibc 2.28)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (AttributeError, OSError):
        return None
    function.argtypes = argtypes
    return function


# renameat2(2) flag; Linux 3.15+, and only on file systems that implement it (ext4, xfs, btrfs, tmpfs...)
_RENAME_EXCHANGE = 2
_renameat2 = _libc_function("renameat2", ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
_syncfs = _libc_function("syncfs", ctypes.c_int)
_AT_FDCWD = -100
# the kernel or the file system cannot exchange: fall back to a plain rename
_NO_EXCHANGE = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM}


def exchange_files(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Atomically swap the files at ``a`` and ``b`` (both must exist); False when that is not possible here.

    Why not ``os.replace``: replacing a file frees the old one inside the rename, and on ext4 that rename also
    flushes the new file's data (the ``auto_da_alloc`` heuristic). Measured on this project's build machine, 10,000
    caption renames over existing files took 5.9 s, exchanges 0.2 s. After an exchange the old file sits at ``a``
    and can be deleted when nobody waits for it. False (nothing changed) when ``b`` does not exist, or the
    platform or file system has no exchange; other errors (permissions...) raise ``OSError``.
    """
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.ENOENT and os.path.lexists(a):
        return False  # no file at b yet: a plain rename is all it takes
    if code in _NO_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), os.fspath(a), None, os.fspath(b))
