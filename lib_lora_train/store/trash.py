"""Deleting by moving into ``<store root>/.trash/``: nothing the user made disappears, nothing there is overwritten."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

TRASH_DIR = ".trash"


def timestamp() -> str:
    """UTC time as ``YYYYmmdd-HHMMSS``, sortable and safe in a folder name."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def move_to_trash(store_root: Path, path: Path, *parts: str) -> Path:
    """Move ``path`` to ``store_root/.trash/<parts...>-<timestamp>`` (with ``-2``, ``-3``... if that exists).

    Returns the new location.
    """
    target_dir = store_root / TRASH_DIR
    for part in parts[:-1]:
        target_dir = target_dir / part
    target_dir.mkdir(parents=True, exist_ok=True)
    base = f"{parts[-1]}-{timestamp()}"
    target = target_dir / base
    counter = 2
    while target.exists():
        target = target_dir / f"{base}-{counter}"
        counter += 1
    shutil.move(str(path), str(target))
    return target
