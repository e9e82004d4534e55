"""Make a version's checkpoints visible in a LoRA folder, so that ``<lora:project-version-000004:0.8>`` and the X/Y/Z
plot's Prompt S/R over ``-000001,-000002,…`` reach them.

Host-neutral: the caller passes the LoRA folder (the WebUI's ``--lora-dir``). The files are copied, hard-linked or
symlinked into ``<lora dir>/<subfolder>/`` under their own names (``<project>-<version>-000001.safetensors``), which is
the name the WebUI's LoRA list uses. A hard link falls back to a copy across file systems and a symlink falls back to
a copy where the OS refuses links (Windows without developer mode); the result says so.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PUBLISH_MODES = ("off", "copy", "hardlink", "symlink")


class PublishError(ValueError):
    """A publish setting that cannot be used; the message says how to fix it."""


@dataclass
class PublishResult:
    """Where each checkpoint is now visible, and notes about fallbacks taken."""

    published: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def publish_folder(lora_dir: Path, subfolder: str) -> Path:
    """``<lora_dir>/<subfolder>`` after checking that ``subfolder`` stays inside ``lora_dir``."""
    subfolder = (subfolder or "").strip().strip("/\\")
    parts = Path(subfolder).parts if subfolder else ()
    if any(p in ("..", ".") or p.startswith(".") for p in parts) or Path(subfolder).is_absolute():
        raise PublishError(
            f"LoRA sub-folder {subfolder!r} must be a plain folder name inside the LoRA folder, such as 'train_tools'"
        )
    return Path(lora_dir).joinpath(*parts)


def publish_checkpoints(checkpoints: Iterable[Path], lora_dir: Path, *, subfolder: str, mode: str) -> PublishResult:
    """Make each checkpoint file visible under ``<lora_dir>/<subfolder>/`` by ``mode``; replaces older published
    copies of the same name (a re-trained epoch must not leave the stale file behind)."""
    if mode not in PUBLISH_MODES:
        raise PublishError(f"publish mode {mode!r} is not one of {', '.join(PUBLISH_MODES)}")
    result = PublishResult()
    if mode == "off":
        return result
    target_dir = publish_folder(lora_dir, subfolder)
    target_dir.mkdir(parents=True, exist_ok=True)
    for source in checkpoints:
        source = Path(source).resolve()
        if not source.is_file():
            result.notes.append(f"{source}: not found, not published (was the version deleted?)")
            continue
        target = target_dir / source.name
        if target.resolve() == source:
            result.published.append(target)
            continue
        used = _place(source, target, mode)
        if used != mode:
            result.notes.append(f"{target.name}: {mode} was not possible here, made a {used} instead")
        result.published.append(target)
    return result


def unpublish(names: Iterable[str], lora_dir: Path, *, subfolder: str) -> list[Path]:
    """Remove published files with these file names (used when a version is moved to the trash)."""
    removed = []
    target_dir = publish_folder(lora_dir, subfolder)
    for name in names:
        path = target_dir / Path(name).name
        if path.is_symlink() or path.is_file():
            path.unlink()
            removed.append(path)
    return removed


def _place(source: Path, target: Path, mode: str) -> str:
    """Put ``source`` at ``target`` via a temporary name and an atomic replace; returns the method actually used."""
    temp = target.with_name(f".{target.name}.publishing")
    if temp.exists() or temp.is_symlink():
        temp.unlink()
    used = mode
    try:
        if mode == "hardlink":
            os.link(source, temp)
        elif mode == "symlink":
            os.symlink(source, temp)
        else:
            shutil.copy2(source, temp)
    except OSError:
        used = "copy"
        shutil.copy2(source, temp)
    os.replace(temp, target)
    return used
