"""Writes that never leave a half-written file behind.

Captions are the user's work: a crash, a full disk or a killed process during a save must leave each file either
with its old text or its new text. Every writer in the product goes through ``atomic_write_*``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def atomic_write_bytes(
    path: str | os.PathLike, data: bytes, *, backup: bool = False, backup_suffix: str = ".bak"
) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    With ``backup`` an existing file is first copied to ``path + backup_suffix`` (the previous backup is replaced).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if backup and target.exists():
        shutil.copy2(target, target.with_name(target.name + backup_suffix))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
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


def atomic_write_text(
    path: str | os.PathLike, text: str, *, encoding: str = "utf-8", backup: bool = False, backup_suffix: str = ".bak"
) -> None:
    """Text flavour of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode(encoding), backup=backup, backup_suffix=backup_suffix)
