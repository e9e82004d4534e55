"""Which files a dataset snapshot holds, copying them, and telling whether an existing snapshot is still current."""

from __future__ import annotations

import shutil
from pathlib import Path

from lib_lora_train.images import is_image_file, iter_image_files

# the text files that travel with an image into a snapshot: captions in either convention
CAPTION_EXTENSIONS = (".txt", ".caption")


def plan_snapshot(src: Path, caption_extensions: tuple[str, ...] = CAPTION_EXTENSIONS) -> dict[Path, Path]:
    """``{path inside the snapshot: source file}`` for every image under ``src`` and its same-stem captions.

    Images directly in ``src`` go under a folder named after ``src`` (``10_name/a.png``) so that a single repeat
    folder keeps its repeats and scans of the source and of the snapshot name the same folders.
    """
    plan: dict[Path, Path] = {}
    for image in iter_image_files(src, recursive=True):
        relative = image.relative_to(src)
        target = Path(src.name) / relative if len(relative.parts) == 1 else relative
        plan.setdefault(target, image)
        for extension in caption_extensions:
            # the upper-case variant only when the other is missing, as the scan reads it (and a case-insensitive
            # file system answers yes for both)
            for variant in (extension, extension.upper()):
                caption = image.with_suffix(variant)
                if caption.is_file() and not is_image_file(caption):
                    plan.setdefault(target.with_suffix(variant), caption)
                    break
    return plan


def count_images(plan: dict[Path, Path]) -> int:
    return sum(1 for target in plan if is_image_file(target))


def snapshot_is_current(plan: dict[Path, Path], dataset: Path) -> bool:
    """True when ``dataset`` holds exactly the planned files with the sources' sizes and modification times.

    ``copy_snapshot`` keeps modification times, so an untouched snapshot of an unchanged source matches; an edit on
    either side (or an added or removed file) does not.
    """
    if not dataset.is_dir():
        return False
    existing = {p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file()}
    if existing != set(plan):
        return False
    for target, source in plan.items():
        a, b = (dataset / target).stat(), source.stat()
        # whole seconds: some file systems keep coarser times than the source's
        if a.st_size != b.st_size or abs(a.st_mtime - b.st_mtime) >= 1.0:
            return False
    return True


def copy_snapshot(plan: dict[Path, Path], dst: Path) -> None:
    """Copy every planned file under ``dst``, keeping modification times."""
    for target, source in plan.items():
        path = dst / target
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, path)
