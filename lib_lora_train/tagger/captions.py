"""Caption files: where they go, how new tags meet an existing caption, and writing them without losing anything.

Every write is atomic (``fileio.atomic_write_text``): a crash leaves each caption with its old or its new text,
never half of it. With backups on, the previous text of a changed caption is kept beside it as ``<file>.bak``
(then ``.1.bak``, ``.2.bak`` ... so a second run never overwrites the first run's backup).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from lib_lora_train.fileio import atomic_write_text
from lib_lora_train.images import IMAGE_EXTENSIONS
from lib_lora_train.tagger.postprocess import normalize_tag

ExistingMode = Literal["skip", "overwrite", "append", "prepend"]
EXISTING_MODES = ("skip", "overwrite", "append", "prepend")
DEFAULT_PATTERN = "[name].txt"
_PLACEHOLDER = re.compile(r"\[(\w+)\]")
_KNOWN_PLACEHOLDERS = ("name", "extension")


class CaptionPatternError(ValueError):
    """An output file name pattern that would write somewhere it must not."""


def validate_pattern(pattern: str) -> None:
    """Reject patterns that name folders, hidden files, image files or unknown placeholders."""
    unknown = sorted(set(_PLACEHOLDER.findall(pattern)) - set(_KNOWN_PLACEHOLDERS))
    if unknown:
        raise CaptionPatternError(
            f"output name {pattern!r}: unknown placeholder [{unknown[0]}]; use [name] and [extension], e.g. [name].txt"
        )
    sample = render_pattern(pattern, Path("image.png"))
    if not sample or "/" in pattern or "\\" in pattern or sample.startswith(".") or ".." in pattern:
        raise CaptionPatternError(f"output name {pattern!r} must be a plain file name such as [name].txt")
    if Path(sample).suffix.lower() in IMAGE_EXTENSIONS:
        raise CaptionPatternError(f"output name {pattern!r} would overwrite images; end it with .txt or .caption")


def render_pattern(pattern: str, image: Path) -> str:
    values = {"name": image.stem, "extension": image.suffix.lstrip(".")}
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), pattern)


def caption_path(image: Path, input_root: Path, output_dir: str | os.PathLike | None, pattern: str) -> Path:
    """Beside the image, or in ``output_dir`` mirroring the image's sub-folder under ``input_root``."""
    name = render_pattern(pattern, image)
    if not output_dir:
        return image.with_name(name)
    relative = image.parent.relative_to(input_root) if image.parent != input_root else Path()
    return Path(output_dir) / relative / name


def split_caption(text: str) -> list[str]:
    """A caption's comma-separated tags, trimmed, empties dropped."""
    return [tag.strip() for tag in text.replace("\n", ",").split(",") if tag.strip()]


def _dedupe(tags: list[str]) -> list[str]:
    seen, out = set(), []
    for tag in tags:
        key = normalize_tag(tag)
        if key not in seen:
            seen.add(key)
            out.append(tag)
    return out


def merge_caption(existing: str | None, new_tags: list[str], mode: ExistingMode, always_first=()) -> str | None:
    """The caption to write, or None when the file should be left alone (``skip`` with an existing caption).

    ``append`` keeps the existing tags and adds new ones after them, ``prepend`` puts new ones before them;
    duplicates (compared ignoring case, underscores and bracket escapes) keep their first occurrence.
    ``always_first`` tags lead the caption in every mode.
    """
    if mode not in EXISTING_MODES:
        raise ValueError(f"existing-caption mode {mode!r} is not one of: {', '.join(EXISTING_MODES)}")
    old = split_caption(existing) if existing is not None else []
    if mode == "skip" and has_caption(existing):
        return None
    if mode == "append":
        tags = old + new_tags
    elif mode == "prepend":
        tags = new_tags + old
    else:
        tags = list(new_tags)
    return ", ".join(_dedupe(list(always_first) + tags))


def has_caption(text: str | None) -> bool:
    """An empty or blank caption file counts as no caption (``skip`` fills it)."""
    return bool(text and text.strip())


def read_caption(path: Path) -> str | None:
    """The caption's text, or None when there is no caption file."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        # a caption saved in another encoding: read it as Latin-1 rather than refusing or destroying it
        return path.read_text(encoding="latin-1")


def free_backup_suffix(path: Path) -> str:
    """``.bak`` if free, else the first free ``.N.bak``."""
    if not path.with_name(path.name + ".bak").exists():
        return ".bak"
    number = 1
    while path.with_name(f"{path.name}.{number}.bak").exists():
        number += 1
    return f".{number}.bak"


def write_caption(path: Path, text: str, *, existing: str | None, backup: bool) -> bool:
    """Write ``text`` atomically; returns False when the file already says exactly that (nothing written)."""
    if existing is not None and existing.strip() == text.strip():
        return False
    keep = backup and existing is not None
    atomic_write_text(path, text, backup=keep, backup_suffix=free_backup_suffix(path) if keep else ".bak")
    return True
