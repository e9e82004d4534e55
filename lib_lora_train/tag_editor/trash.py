"""Moving images (with their captions) out of a dataset without deleting anything.

The trash is a folder (by default ``<dataset>/.trash``, hidden so that the loader, the trainer and kohya's
scripts skip it) that mirrors the dataset's sub-folders. An existing file in the trash is never overwritten: a
second ``a.png`` becomes ``a (2).png``, and its caption ``a (2).txt`` so that the pair stays together.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

TRASH_FOLDER = ".trash"


@dataclass
class TrashResult:
    """Where each moved file went, as (source, destination) pairs."""

    moved: list[tuple[Path, Path]] = field(default_factory=list)


def default_trash_dir(dataset_root: str | os.PathLike) -> Path:
    return Path(dataset_root) / TRASH_FOLDER


def trash_destination(files: list[Path], dataset_root: Path, trash_dir: Path) -> list[Path]:
    """Free destinations in the trash for files that share a stem (an image, its caption, its backup).

    All get the same numbered stem, so that an image and its caption keep matching names.
    """
    root = Path(dataset_root).resolve()
    first = files[0].resolve()
    try:
        relative_dir = first.parent.relative_to(root)
    except ValueError:
        relative_dir = Path()  # a file outside the dataset lands at the top of the trash
    folder = trash_dir / relative_dir
    stem = first.stem
    suffixes = [f.name[len(f.stem) :] if f.name.startswith(stem) else f.suffix for f in files]
    number = 1
    while True:
        name = stem if number == 1 else f"{stem} ({number})"
        candidates = [folder / (name + suffix) for suffix in suffixes]
        if not any(c.exists() for c in candidates):
            return candidates
        number += 1


def move_to_trash(
    files: list[str | os.PathLike], dataset_root: str | os.PathLike, trash_dir: str | os.PathLike | None = None
) -> TrashResult:
    """Move ``files`` (the image first, then its caption and any backups; missing ones are skipped) to the trash.

    Raises ``OSError`` naming the file if a move fails; the files moved before it stay in the trash.
    """
    root = Path(dataset_root)
    trash = Path(trash_dir) if trash_dir is not None else default_trash_dir(root)
    present = [Path(f) for f in files if Path(f).exists()]
    result = TrashResult()
    if not present:
        return result
    for source, target in zip(present, trash_destination(present, root, trash), strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # shutil.move renames on one file system and copies then deletes across file systems
            shutil.move(os.fspath(source), os.fspath(target))
        except OSError as exc:
            raise OSError(f"{source}: could not be moved to the trash ({exc}); nothing was deleted") from exc
        result.moved.append((source, target))
    return result


def keep_original(path: str | os.PathLike, dataset_root: str | os.PathLike, originals_dir: str | os.PathLike) -> Path:
    """Copy an image into ``originals_dir`` (mirroring the dataset's folders) before an image fix rewrites it."""
    source = Path(path)
    (target,) = trash_destination([source], Path(dataset_root), Path(originals_dir))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    return target
