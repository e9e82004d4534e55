"""Small on-disk datasets for the tag editor tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def make_folder(root: Path, captions: dict[str, str | bytes | None], *, size=(8, 8), mode="RGB") -> Path:
    """Create ``root`` with one tiny image per key; the value is the caption text (bytes: raw; None: no caption)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, caption in captions.items():
        image = root / name
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new(mode, size, (120, 30, 200) if mode == "RGB" else (120, 30, 200, 255)).save(image)
        if caption is None:
            continue
        target = image.with_suffix(".txt")
        if isinstance(caption, bytes):
            target.write_bytes(caption)
        else:
            target.write_text(caption, encoding="utf-8")
    return root


def tags_by_name(dataset) -> dict[str, list[str]]:
    """Relative image path -> tags, for readable assertions."""
    return {dataset.relative(i): list(dataset.entry(i).tags) for i in dataset.ids()}


def rebuilt_index(dataset) -> dict[str, set[int]]:
    """The index as a full rebuild would make it: what the incremental index must always equal."""
    index: dict[str, set[int]] = {}
    for entry_id, entry in dataset.entries.items():
        for tag in entry.tags:
            index.setdefault(tag, set()).add(entry_id)
    return index
